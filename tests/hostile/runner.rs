//! Hostile input: the durable runner under races, crashes and panics.
//!
//! - Reviewers race each other on one task: exactly one completion wins, the other gets
//!   `409 task_already_completed` and nothing about the case changes.
//! - A box restarted on a backlog is ready while it works the backlog off through its
//!   worker pool, with a gauge of the cases still to recover.
//! - A tampered data directory (a case without its state, a case waiting at a node its
//!   workflow does not have) fails those cases with a reason and never costs a worker.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use casegraph_engine::classify::{self, Classification};
use casegraph_engine::exec::{SystemClock, TaskCompletion};
use casegraph_engine::intake::Received;
use casegraph_engine::rules::Rules;
use casegraph_engine::runner::{NewRequest, Parts, Runner};
use casegraph_engine::store::{Batch, CaseStatus, Pending, Store, Table, Trigger};
use casegraph_engine::workflow::Catalog;
use serde_json::{Value, json};

use crate::support::{self, Server};

fn refund_letter(amount: &str) -> Value {
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": "C-1002314",
        "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über {amount} €. Bitte überweisen Sie das Geld zurück auf DE89 3704 0044 0532 0130 00.\nMit freundlichen Grüßen\nErika Mustermann"),
    })
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

/// How many audit records of `case` say that `task` was completed.
fn completions(server: &Server, case: &str, task: &str) -> usize {
    let audit = server.call(
        "GET",
        &format!("/v1/cases/{case}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.text);
    audit.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            (r["kind"] == "task_completed" && r["body"]["task_id"] == task)
                || (r["kind"] == "step"
                    && r["body"]["detail"]["event"] == "task_completed"
                    && r["body"]["detail"]["task_id"] == task)
        })
        .count()
}

#[test]
fn two_reviewers_completing_one_task_at_once_get_one_200_and_one_409() {
    const PAIRS: usize = 12;
    let s = Server::start();
    let cases: Vec<String> = (0..PAIRS)
        .map(|_| s.submit(&refund_letter("1.249,90")))
        .collect();
    let mut tasks = Vec::new();
    for id in &cases {
        let case = s.wait_case(id, |c| c["status"] == "waiting" || is_final(c));
        assert_eq!(case["waiting"]["queue"], "refunds", "{case}");
        tasks.push(case["waiting"]["task_id"].as_str().unwrap().to_string());
    }
    // Every pair fires at once, all pairs together: one approves, the other rejects, so
    // the case's end tells whose completion ran.
    let barrier = Barrier::new(2 * PAIRS);
    let answers: Vec<(usize, &str, support::Response)> = std::thread::scope(|scope| {
        let handles: Vec<_> = tasks
            .iter()
            .enumerate()
            .flat_map(|(i, task)| {
                ["approve", "reject"].map(|decision| {
                    let (s, barrier) = (&s, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        let r = s.call(
                            "POST",
                            &format!("/v1/tasks/{task}/complete"),
                            Some(Role::Reviewer),
                            Some(&json!({ "decision": decision })),
                        );
                        (i, decision, r)
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (case_id, task)) in cases.iter().zip(&tasks).enumerate() {
        let pair: Vec<_> = answers.iter().filter(|(j, ..)| *j == i).collect();
        let winners: Vec<_> = pair.iter().filter(|(_, _, r)| r.status == 200).collect();
        assert_eq!(winners.len(), 1, "exactly one completion wins: {pair:?}");
        let loser = pair.iter().find(|(_, _, r)| r.status != 200).unwrap();
        loser.2.assert_error(409, "task_already_completed");
        assert_eq!(loser.2.json["error"]["details"]["case_id"], *case_id);
        let winner = winners[0].1;
        let case = s.wait_case(case_id, is_final);
        let outcome = if winner == "approve" {
            "refunded"
        } else {
            "rejected"
        };
        assert_eq!(case["status"], "completed", "{case}");
        assert_eq!(
            case["outcome"], outcome,
            "the winner's decision ran: {case}"
        );
        assert_eq!(completions(&s, case_id, task), 1, "one completion recorded");
    }
}

#[test]
fn a_stale_or_unknown_task_id_is_refused_and_changes_nothing() {
    let s = Server::start();
    let id = s.submit(&refund_letter("1.249,90"));
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    let task = case["waiting"]["task_id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{task}/complete");
    let done = s.call(
        "POST",
        &path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "reject"})),
    );
    assert_eq!(done.status, 200, "{}", done.text);
    let before = s.wait_case(&id, is_final);
    // The same task again, with the other decision: refused, the case stays as it ended.
    let again = s.call(
        "POST",
        &path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "approve"})),
    );
    again.assert_error(409, "task_already_completed");
    assert_eq!(again.json["error"]["details"]["status"], "completed");
    // A made-up task of the same case, or of no case, was never open.
    for made_up in [
        format!("{id}-approve-7"),
        format!("{id}.triage"),
        "t-none".into(),
    ] {
        let r = s.call(
            "POST",
            &format!("/v1/tasks/{made_up}/complete"),
            Some(Role::Reviewer),
            Some(&json!({"decision": "approve"})),
        );
        r.assert_error(404, "not_found");
    }
    let after = s.wait_case(&id, is_final);
    assert_eq!(before["outcome"], after["outcome"]);
    assert_eq!(before["updated_at"], after["updated_at"]);
    assert_eq!(completions(&s, &id, &task), 1);
}

#[test]
fn sixteen_reviewers_hammering_one_task_change_the_case_once() {
    const REVIEWERS: usize = 16;
    let s = Server::start();
    let id = s.submit(&refund_letter("1.249,90"));
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    let task = case["waiting"]["task_id"].as_str().unwrap().to_string();
    let barrier = Barrier::new(REVIEWERS);
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..REVIEWERS)
            .map(|i| {
                let (s, barrier, task) = (&s, &barrier, &task);
                scope.spawn(move || {
                    barrier.wait();
                    let decision = if i % 2 == 0 { "approve" } else { "reject" };
                    let r = s.call(
                        "POST",
                        &format!("/v1/tasks/{task}/complete"),
                        Some(Role::Reviewer),
                        Some(&json!({ "decision": decision })),
                    );
                    let code = r.json["error"]["code"].as_str().unwrap_or("").to_string();
                    (r.status, code)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|(st, _)| *st == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|(st, code)| *st == 200 || (*st == 409 && code == "task_already_completed")),
        "{statuses:?}"
    );
    assert_eq!(s.wait_case(&id, is_final)["status"], "completed");
    assert_eq!(completions(&s, &id, &task), 1);
}

#[test]
fn an_oversized_or_deeply_nested_completion_is_refused_and_the_task_stays_open() {
    let s = Server::start();
    let id = s.submit(&refund_letter("1.249,90"));
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    let task = case["waiting"]["task_id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{task}/complete");
    let post = |body: String| {
        s.raw(
            "POST",
            &path,
            Some(s.token(Role::Reviewer)),
            Some(("application/json", body.into_bytes())),
            &[],
        )
    };
    // Deeper than the JSON parser's recursion limit: refused while parsing, no stack spent.
    let deep = format!(
        r#"{{"decision":"approve","data":{{"x":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    post(deep).assert_error(400, "malformed_json");
    // Larger than limits.body_limit_bytes (256 KiB by default).
    let big = json!({"decision": "approve", "data": {"note": "x".repeat(300 * 1024)}});
    post(big.to_string()).assert_error(413, "body_too_large");
    // `data` that is not an object.
    post(r#"{"decision":"approve","data":[1,2]}"#.into()).assert_error(422, "invalid_request");
    let after = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(after["waiting"]["task_id"], task.as_str(), "{after}");
    let ok = post(r#"{"decision":"approve"}"#.into());
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// Reads the intent from nothing: every left-over case is a refund (the model is not needed
/// to make a backlog, only to work it off).
struct Refund;

impl classify::Service for Refund {
    fn classify(&self, _: &Received) -> Result<Classification, classify::Error> {
        Ok(Classification {
            model: Some("test".into()),
            ..Classification::new(Some("request_refund".into()), 0.97)
        })
    }
}

/// A runner on the data directory `dir`, without the service: what a box that died left.
fn offline(dir: &Path) -> Runner {
    let rules = Arc::new(Rules::default());
    let catalog = Arc::new(Catalog::load(&support::workflows(), &rules).unwrap());
    let config = support::config(dir);
    Runner::new(Parts {
        store: Store::open(dir, &config.store).unwrap(),
        catalog,
        rules,
        connector: Arc::new(casegraph::backoffice::SimulatedBackOffice),
        classifier: Arc::new(Refund),
        clock: Arc::new(SystemClock),
        versions_dir: dir.join("versions"),
        priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        quiet_hours: None,
    })
}

fn small_refund(i: usize) -> NewRequest {
    NewRequest {
        request: serde_json::from_value(json!({
            "channel": "form", "language": "en", "customer_id": format!("C-{:06}", 100_000 + i),
            "text": "Please refund the cancelled order.", "fields": { "amount": "25.00" },
        }))
        .unwrap(),
        idempotency_key: None,
        submitted_by: Some("submitter".into()),
    }
}

/// Cases accepted (durable, `202` sent) but not run when the box died.
fn backlog(dir: &Path, n: usize) -> Vec<String> {
    let runner = offline(dir);
    (0..n)
        .map(|i| runner.accept(small_refund(i)).unwrap().case_id)
        .collect()
}

/// Stops the server gracefully and keeps its data directory (a dropped server deletes it).
fn stop_keeping_data(mut s: Server) -> tempfile::TempDir {
    let data = std::mem::replace(&mut s.data, tempfile::tempdir().unwrap());
    s.stop().unwrap();
    data
}

fn readyz(s: &Server) -> support::Response {
    s.call("GET", "/readyz", None, None)
}

#[test]
fn a_box_restarted_on_a_backlog_is_ready_while_its_workers_work_it_off() {
    const LEFT_OVER: usize = 3_000;
    let mut left = Vec::new();
    let s = Server::start_with(|c| left = backlog(&c.data_dir, LEFT_OVER));
    // `start_with` returned on the first `200` from /readyz; the backlog is far from done.
    let ready = readyz(&s);
    assert_eq!(ready.status, 200, "{}", ready.text);
    let still = ready.json["checks"]["recovery_pending"].as_u64().unwrap();
    assert!(
        still > 0,
        "ready before the backlog is done: {}",
        ready.text
    );
    assert!(s.metric("casegraph_recovery_pending") > 0.0);
    // Ready means accepting *and* processing: a new request is taken and runs.
    let new = s.submit(&refund_letter("42,50"));
    // The gauge falls to 0 (bounded wait: a hang fails the test, a slow box does not).
    let deadline = Instant::now() + Duration::from_secs(600);
    while s.metric("casegraph_recovery_pending") > 0.0 {
        assert!(Instant::now() < deadline, "recovery did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(readyz(&s).json["checks"]["recovery_pending"], 0);
    s.wait_case(&new, is_final);
    let data = stop_keeping_data(s);
    // Every left-over case ran exactly once: final, one outcome record, no stored work.
    let runner = offline(data.path());
    assert!(runner.pending().unwrap().is_empty());
    for id in &left {
        let (rec, _) = runner.case(id).unwrap().unwrap();
        assert_eq!(rec.status, CaseStatus::Completed, "{rec:?}");
        let outcomes = runner
            .case_audit(id)
            .unwrap()
            .iter()
            .filter(|r| r.kind == casegraph_engine::audit::Kind::Outcome)
            .count();
        assert_eq!(outcomes, 1, "case {id} ran once");
    }
}

/// Rewrites a stored case.
fn tamper(runner: &Runner, id: &str, f: impl FnOnce(&mut casegraph_engine::store::CaseRecord)) {
    let (mut rec, _) = runner.case(id).unwrap().unwrap();
    f(&mut rec);
    let mut batch = Batch::new();
    batch
        .put(Table::Cases, id.as_bytes(), &rec)
        .put_raw(Table::Pending, id.as_bytes(), Vec::new());
    runner.store().commit(batch).unwrap();
}

#[test]
fn a_tampered_stored_case_fails_with_a_reason_and_the_single_worker_survives() {
    let mut ids = HashSet::new();
    let (mut stateless, mut lost_node, mut fine) = (String::new(), String::new(), String::new());
    let s = Server::start_with(|c| {
        c.limits.workers = 1;
        let runner = offline(&c.data_dir);
        // A case whose timer came due but whose state is gone.
        stateless = runner.accept(small_refund(1)).unwrap().case_id;
        tamper(&runner, &stateless, |rec| {
            rec.status = CaseStatus::Running;
            rec.pending = Some(Pending {
                trigger: Trigger::Timer,
                at: rec.accepted_at,
            });
        });
        // A case waiting for a reviewer at a node its workflow does not have, with the
        // reviewer's completion stored: resuming it panics inside the executor.
        let mut big = small_refund(2);
        big.request.fields.insert("amount".into(), json!("900.00"));
        lost_node = runner.accept(big).unwrap().case_id;
        assert_eq!(runner.process(&lost_node).unwrap(), CaseStatus::Waiting);
        tamper(&runner, &lost_node, |rec| {
            let state = rec.state.as_mut().unwrap();
            let Some(casegraph_engine::exec::Waiting::Task { node, task_id, .. }) =
                state.waiting.as_mut()
            else {
                panic!("the refund waits for a reviewer: {rec:?}");
            };
            *node = "no_such_node".into();
            let task_id = task_id.clone();
            rec.pending = Some(Pending {
                trigger: Trigger::Task {
                    completion: TaskCompletion {
                        task_id,
                        decision: "approve".into(),
                        data: Value::Null,
                        comment: None,
                        by: "reviewer".into(),
                    },
                },
                at: rec.updated_at,
            });
        });
        fine = runner.accept(small_refund(3)).unwrap().case_id;
        ids.extend([stateless.clone(), lost_node.clone(), fine.clone()]);
    });
    let case = s.wait_case(&stateless, is_final);
    assert_eq!(case["status"], "failed", "{case}");
    let error = case["error"].as_str().unwrap_or_default();
    assert!(error.contains("stored case"), "a clear reason: {case}");
    let case = s.wait_case(&lost_node, is_final);
    assert_eq!(case["status"], "failed", "{case}");
    assert!(
        case["error"]
            .as_str()
            .is_some_and(|e| e.contains("internal error")),
        "{case}"
    );
    assert_eq!(s.wait_case(&fine, is_final)["status"], "completed");
    // The one worker is still there: new work runs.
    let new = s.submit(&refund_letter("42,50"));
    assert_eq!(s.wait_case(&new, is_final)["status"], "completed");
    assert_eq!(readyz(&s).json["checks"]["recovery_pending"], 0);
    // Nothing is left to run again at the next start.
    let data = stop_keeping_data(s);
    assert!(offline(data.path()).pending().unwrap().is_empty());
    assert_eq!(ids.len(), 3);
}

#[test]
fn a_tampered_case_whose_timer_panics_fails_instead_of_hanging_in_running() {
    let mut broken = String::new();
    let s = Server::start_with(|c| {
        let runner = offline(&c.data_dir);
        let mut big = small_refund(4);
        big.request.fields.insert("amount".into(), json!("900.00"));
        broken = runner.accept(big).unwrap().case_id;
        assert_eq!(runner.process(&broken).unwrap(), CaseStatus::Waiting);
        // Its SLA is long past, and it waits at a node its workflow does not have: the
        // timer loop's escalation of it panics inside the executor.
        let (mut rec, _) = runner.case(&broken).unwrap().unwrap();
        let due = rec.accepted_at;
        if let Some(casegraph_engine::exec::Waiting::Task { node, sla_due, .. }) =
            rec.state.as_mut().unwrap().waiting.as_mut()
        {
            *node = "no_such_node".into();
            *sla_due = Some(due);
        }
        let mut batch = Batch::new();
        batch.put(Table::Cases, broken.as_bytes(), &rec).put_raw(
            Table::Timers,
            casegraph_engine::store::timer_key(due, &broken),
            Vec::new(),
        );
        runner.store().commit(batch).unwrap();
    });
    let case = s.wait_case(&broken, is_final);
    assert_eq!(case["status"], "failed", "{case}");
    assert!(
        case["error"]
            .as_str()
            .is_some_and(|e| e.contains("internal error")),
        "{case}"
    );
    // Nothing is left to run (and panic) again at the next start.
    let data = stop_keeping_data(s);
    assert!(offline(data.path()).pending().unwrap().is_empty());
}
