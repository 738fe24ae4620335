//! The durable runner on the shipped workflows: acceptance, checkpoints, human tasks,
//! timers, recovery after a crash inside a segment, the outbox, erasure and the audit chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use casegraph_engine::classify::{self, Classification};
use casegraph_engine::exec::{
    CallError, CallRequest, Clock, Connector, ManualClock, TaskCompletion,
};
use casegraph_engine::intake::Received;
use casegraph_engine::rules::Rules;
use casegraph_engine::runner::{self, NewRequest, Parts, Runner};
use casegraph_engine::store::{self, CaseStatus, OutboxState, Store, Table};
use casegraph_engine::workflow::Catalog;
use jiff::SignedDuration;
use serde_json::{Value, json};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

/// Copies the directory tree `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Sets `metadata.<key>` of a request.
fn set_metadata(r: &mut NewRequest, key: &str, value: Value) {
    r.request
        .metadata
        .get_or_insert_default()
        .insert(key.into(), value);
}

/// A back office that applies each idempotency key once and counts what it saw.
#[derive(Default)]
struct Receiver {
    applied: Mutex<HashMap<String, Value>>,
    seen: AtomicUsize,
    /// Panic (a crash of the box) after applying the call with this operation, once.
    crash_after: Mutex<Option<String>>,
}

impl Connector for Receiver {
    fn call(&self, r: &CallRequest) -> Result<Value, CallError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let answer = {
            let mut applied = self.applied.lock().unwrap();
            applied
                .entry(r.idempotency_key.clone())
                .or_insert_with(|| {
                    json!({ "refund_id": format!("R-{}", r.case_id), "status": "booked",
                            "blocked": true, "card_ref": "CARD-1", "order_id": "O-1",
                            "delivery_business_days": 5 })
                })
                .clone()
        };
        let mut crash = self.crash_after.lock().unwrap();
        if crash.as_deref() == Some(r.operation.as_str()) {
            crash.take();
            drop(crash);
            panic!("the box lost power right after the back office applied the call");
        }
        Ok(answer)
    }
}

/// Reads the intent from `metadata` (the model is not part of these tests).
struct Given;

impl classify::Service for Given {
    fn classify(&self, r: &Received) -> Result<Classification, classify::Error> {
        let intent = r.request.metadata("intent").and_then(Value::as_str);
        let confidence = r.request.metadata("confidence").and_then(Value::as_f64);
        Ok(Classification {
            model: Some("test".into()),
            ..Classification::new(intent.map(String::from), confidence.unwrap_or(0.95))
        })
    }
}

struct Box_ {
    runner: Runner,
    clock: Arc<ManualClock>,
    receiver: Arc<Receiver>,
    _dir: Option<tempfile::TempDir>,
}

fn open(dir: &Path, receiver: Arc<Receiver>, clock: Arc<ManualClock>, kind: store::Kind) -> Runner {
    open_with(dir, &shipped(), receiver, clock, kind)
}

/// A box serving the workflows of `workflows`.
fn open_with(
    dir: &Path,
    workflows: &Path,
    receiver: Arc<Receiver>,
    clock: Arc<ManualClock>,
    kind: store::Kind,
) -> Runner {
    let rules = Arc::new(Rules::default());
    let catalog = Arc::new(Catalog::load(workflows, &rules).expect("the workflows load"));
    let store = Store::open(
        dir,
        &store::Options {
            backend: kind,
            ..store::Options::default()
        },
    )
    .unwrap();
    Runner::new(Parts {
        store,
        catalog,
        rules,
        connector: receiver,
        classifier: Arc::new(Given),
        clock,
        versions_dir: dir.join("versions"),
        priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        quiet_hours: None,
    })
}

fn new_box(kind: store::Kind) -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap()));
    let receiver = Arc::new(Receiver::default());
    let runner = open(dir.path(), receiver.clone(), clock.clone(), kind);
    Box_ {
        runner,
        clock,
        receiver,
        _dir: Some(dir),
    }
}

fn refund(amount: &str, customer: &str) -> NewRequest {
    NewRequest {
        request: serde_json::from_value(json!({
            "channel": "form", "language": "en", "customer_id": customer,
            "text": format!("Please refund {amount} EUR for the cancelled order."),
            "fields": { "amount": amount },
            "metadata": { "intent": "request_refund", "confidence": 0.97 }
        }))
        .unwrap(),
        idempotency_key: None,
        submitted_by: Some("crm".into()),
    }
}

#[test]
fn an_accepted_request_is_durable_before_it_runs_and_runs_to_its_end() {
    let b = new_box(store::Kind::Redb);
    let accepted = b.runner.accept(refund("20.00", "C-100100")).unwrap();
    let (rec, personal) = b.runner.case(&accepted.case_id).unwrap().unwrap();
    assert_eq!(rec.status, CaseStatus::Accepted);
    assert!(personal.unwrap().request["text"].as_str().is_some());
    assert_eq!(b.runner.pending().unwrap(), vec![accepted.case_id.clone()]);

    let status = b.runner.process(&accepted.case_id).unwrap();
    let (rec, personal) = b.runner.case(&accepted.case_id).unwrap().unwrap();
    assert_eq!(status, CaseStatus::Completed, "{rec:?}");
    assert!(b.runner.pending().unwrap().is_empty());
    assert!(
        rec.state.as_ref().unwrap().data.is_null(),
        "personal data is kept apart"
    );
    assert_eq!(
        rec.state.as_ref().unwrap().outcome.as_deref(),
        Some("refunded")
    );
    let personal = personal.unwrap();
    assert_eq!(personal.data["amount"], json!(20.0));
    assert!(personal.reply_text.unwrap().contains("refunded"));
    let trail = b.runner.case_audit(&accepted.case_id).unwrap();
    let kinds: Vec<String> = trail
        .iter()
        .map(|r| {
            serde_json::to_value(r.kind)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("accepted"));
    assert!(kinds.contains(&"classified".to_string()));
    assert!(kinds.contains(&"routed".to_string()));
    assert!(kinds.contains(&"call".to_string()));
    assert_eq!(kinds.last().map(String::as_str), Some("outcome"));
    let text = serde_json::to_string(&trail).unwrap();
    assert!(
        !text.contains("C-100100"),
        "audit records carry pseudonyms only"
    );
    assert!(!text.contains("cancelled order"), "nor request text");
    assert!(b.runner.store().audit_verify().unwrap().is_ok());
}

#[test]
fn idempotency_keys_return_the_same_case_and_refuse_a_different_body() {
    let b = new_box(store::Kind::Sled);
    let mut r = refund("20.00", "C-100001");
    r.idempotency_key = Some("order-77".into());
    let first = b.runner.accept(r.clone()).unwrap();
    let again = b.runner.accept(r.clone()).unwrap();
    assert_eq!(first.case_id, again.case_id);
    assert!(again.duplicate);
    let mut other = refund("21.00", "C-100001");
    other.idempotency_key = Some("order-77".into());
    assert!(matches!(
        b.runner.accept(other),
        Err(runner::Error::KeyReused { .. })
    ));
}

#[test]
fn a_reviewer_completes_a_task_and_the_case_moves_on() {
    let b = new_box(store::Kind::Redb);
    let id = b
        .runner
        .accept(refund("900.00", "C-100002"))
        .unwrap()
        .case_id;
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
    let tasks = b.runner.tasks(Some("refunds")).unwrap();
    assert_eq!(tasks.len(), 1);
    let bad = TaskCompletion {
        task_id: tasks[0].task_id.clone(),
        decision: "maybe".into(),
        data: Value::Null,
        comment: None,
        by: "rev-1".into(),
    };
    assert!(matches!(
        b.runner.complete_task(bad),
        Err(runner::Error::UnknownDecision { .. })
    ));
    let ok = TaskCompletion {
        decision: "reject".into(),
        comment: Some("duplicate request".into()),
        ..TaskCompletion {
            task_id: tasks[0].task_id.clone(),
            decision: String::new(),
            data: Value::Null,
            comment: None,
            by: "rev-1".into(),
        }
    };
    let status = b.runner.complete_task(ok.clone()).unwrap();
    assert_eq!(status, CaseStatus::Completed);
    assert!(b.runner.tasks(None).unwrap().is_empty());
    assert!(matches!(
        b.runner.complete_task(ok),
        Err(runner::Error::TaskAlreadyCompleted {
            status: CaseStatus::Completed,
            ..
        })
    ));
    let trail = serde_json::to_string(&b.runner.case_audit(&id).unwrap()).unwrap();
    assert!(trail.contains("rev-1") && trail.contains("\"decision\":\"reject\""));
}

#[test]
fn a_page_of_the_inbox_is_the_head_of_the_whole_inbox_in_its_order() {
    let b = new_box(store::Kind::Redb);
    // Refund tasks (with a due time) and triage tasks (unsure requests), created a minute
    // apart in an interleaved order, so the page must sort rather than follow the table.
    for i in 0..12 {
        let mut r = refund("900.00", &format!("C-1002{i:02}"));
        if i % 3 == 0 {
            set_metadata(&mut r, "confidence", json!(0.2));
        }
        let id = b.runner.accept(r).unwrap().case_id;
        assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
        b.clock.advance(SignedDuration::from_secs(60));
    }
    let all = b.runner.tasks(None).unwrap();
    assert_eq!(all.len(), 12);
    let ids = |ts: &[store::TaskEntry]| ts.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>();
    for limit in [1, 2, 5, 11, 12, 50] {
        let page = b.runner.tasks_page(None, limit).unwrap();
        assert_eq!(ids(&page), ids(&all[..limit.min(12)]), "limit {limit}");
    }
    let refunds = b.runner.tasks(Some("refunds")).unwrap();
    assert_eq!(refunds.len(), 8);
    assert!(
        refunds
            .windows(2)
            .all(|w| (w[0].sla_due, w[0].created_at) <= (w[1].sla_due, w[1].created_at))
    );
    assert_eq!(
        ids(&b.runner.tasks_page(Some("refunds"), 3).unwrap()),
        ids(&refunds[..3])
    );
    assert!(b.runner.tasks_page(Some("nobody's"), 3).unwrap().is_empty());
    // the counts per queue agree with the list
    let queues = b.runner.open_tasks_by_queue().unwrap();
    assert_eq!(queues["refunds"].open, 8);
    assert_eq!(queues.values().map(|q| q.open).sum::<usize>(), 12);
    assert_eq!(
        queues["refunds"].oldest,
        refunds.iter().map(|t| t.created_at).min().unwrap()
    );
}

#[test]
fn an_unsure_request_waits_in_triage_until_a_reviewer_routes_it() {
    let b = new_box(store::Kind::Redb);
    let mut r = refund("20.00", "C-100003");
    set_metadata(&mut r, "confidence", json!(0.2));
    let id = b.runner.accept(r).unwrap().case_id;
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
    let task = b.runner.tasks(None).unwrap().pop().unwrap();
    assert!(task.decisions.contains(&"request_refund".to_string()));
    // A correction that is not a label is refused and changes nothing.
    let refused = b.runner.complete_task(TaskCompletion {
        task_id: task.task_id.clone(),
        decision: "request_refund".into(),
        data: json!({"intent": "refund, customer is angry"}),
        comment: None,
        by: "rev-2".into(),
    });
    assert!(
        matches!(refused, Err(runner::Error::InvalidIntent { .. })),
        "{refused:?}"
    );
    assert_eq!(
        b.runner.tasks(None).unwrap().len(),
        1,
        "the task stays open"
    );
    b.runner
        .complete_task(TaskCompletion {
            task_id: task.task_id,
            decision: "request_refund".into(),
            data: Value::Null,
            comment: None,
            by: "rev-2".into(),
        })
        .unwrap();
    let (rec, _) = b.runner.case(&id).unwrap().unwrap();
    assert_eq!(rec.workflow.as_ref().unwrap().id, "request_refund");
    assert_eq!(
        rec.status,
        CaseStatus::Completed,
        "the reviewer's choice ran: {rec:?}"
    );
}

#[test]
fn an_overdue_task_escalates_when_its_sla_timer_fires() {
    let b = new_box(store::Kind::Sled);
    let id = b
        .runner
        .accept(refund("900.00", "C-100005"))
        .unwrap()
        .case_id;
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
    assert!(
        b.runner.fire_due(b.clock.now()).unwrap().is_empty(),
        "not due yet"
    );
    b.clock.advance(SignedDuration::from_hours(9));
    assert_eq!(b.runner.fire_due(b.clock.now()).unwrap(), vec![id.clone()]);
    let (rec, _) = b.runner.case(&id).unwrap().unwrap();
    assert_eq!(rec.status, CaseStatus::Escalated, "{rec:?}");
    assert!(
        b.runner.tasks(None).unwrap().is_empty(),
        "the task is closed"
    );
    assert!(
        b.runner.fire_due(b.clock.now()).unwrap().is_empty(),
        "timers fire once"
    );
}

#[test]
fn a_crash_after_a_call_was_applied_replays_without_applying_it_again() {
    for kind in [store::Kind::Redb, store::Kind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap()));
        let receiver = Arc::new(Receiver::default());
        let id = {
            let runner = open(dir.path(), receiver.clone(), clock.clone(), kind);
            let id = runner.accept(refund("20.00", "C-100004")).unwrap().case_id;
            *receiver.crash_after.lock().unwrap() = Some("refund".into());
            let crashed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.process(&id)));
            assert!(crashed.is_err(), "the box crashed inside the segment");
            id
        };
        // The box restarts: the case is still at its checkpoint, with the call recorded
        // as sent but unanswered.
        let runner = open(dir.path(), receiver.clone(), clock.clone(), kind);
        assert_eq!(runner.pending().unwrap(), vec![id.clone()]);
        let outbox = outbox(&runner);
        assert_eq!(outbox[0].state, OutboxState::Pending);
        assert_eq!(runner.recover().unwrap(), 1);
        let (rec, _) = runner.case(&id).unwrap().unwrap();
        assert_eq!(rec.status, CaseStatus::Completed, "{kind:?}: {rec:?}");
        let applied = receiver.applied.lock().unwrap();
        assert_eq!(applied.len(), 1, "one refund applied");
        assert_eq!(
            receiver.seen.load(Ordering::SeqCst),
            2,
            "sent twice, same key"
        );
        assert!(runner.store().audit_verify().unwrap().is_ok());
    }
}

/// The box's outbox entries, in key order.
fn outbox(runner: &Runner) -> Vec<store::OutboxEntry> {
    let rows = runner
        .store()
        .backend()
        .range(Table::Outbox, b"", None, 100)
        .unwrap();
    rows.iter()
        .map(|(_, v)| serde_json::from_slice(v).unwrap())
        .collect()
}

/// The durable benchmark's order: its only call is a customer look-up (`effect: read`).
fn order(customer: &str) -> NewRequest {
    NewRequest {
        request: serde_json::from_value(json!({
            "channel": "form", "language": "en", "customer_id": customer, "text": "",
            "fields": { "amount_cents": "4990", "items": "2" },
            "metadata": { "intent": "durable_order", "confidence": 1.0 }
        }))
        .unwrap(),
        idempotency_key: None,
        submitted_by: Some("crm".into()),
    }
}

#[test]
fn a_look_up_is_stored_with_the_checkpoint_and_asked_again_after_a_crash() {
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadgen/durable/workflows");
    for kind in [store::Kind::Redb, store::Kind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap()));
        let receiver = Arc::new(Receiver::default());
        let crashed_id = {
            let runner = open_with(
                dir.path(),
                &workflows,
                receiver.clone(),
                clock.clone(),
                kind,
            );
            // A case that never waits: accepted, then finished, two commits in all.
            let before = runner.store().stats().commits;
            let id = runner.accept(order("C-1002345")).unwrap().case_id;
            assert_eq!(runner.process(&id).unwrap(), CaseStatus::Completed);
            assert_eq!(
                runner.store().stats().commits - before,
                2,
                "{kind:?}: the look-up has no commit of its own"
            );
            let outbox = outbox(&runner);
            assert_eq!(outbox.len(), 1, "its answer is stored with the checkpoint");
            assert!(
                matches!(outbox[0].state, OutboxState::Done { .. }),
                "{outbox:?}"
            );

            let id = runner.accept(order("C-1002346")).unwrap().case_id;
            *receiver.crash_after.lock().unwrap() = Some("get_customer".into());
            let crashed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.process(&id)));
            assert!(crashed.is_err(), "the box crashed inside the segment");
            id
        };
        // Nothing of the crashed segment was stored: the look-up is asked again.
        let runner = open_with(
            dir.path(),
            &workflows,
            receiver.clone(),
            clock.clone(),
            kind,
        );
        assert_eq!(runner.pending().unwrap(), vec![crashed_id.clone()]);
        assert_eq!(
            outbox(&runner).len(),
            1,
            "{kind:?}: no record before a look-up"
        );
        assert_eq!(runner.recover().unwrap(), 1);
        let (rec, _) = runner.case(&crashed_id).unwrap().unwrap();
        assert_eq!(rec.status, CaseStatus::Completed, "{kind:?}: {rec:?}");
        assert_eq!(
            receiver.seen.load(Ordering::SeqCst),
            3,
            "asked again, same key"
        );
        assert!(runner.store().audit_verify().unwrap().is_ok());
    }
}

#[test]
fn erasure_removes_personal_data_and_the_chain_still_verifies() {
    let b = new_box(store::Kind::Redb);
    let done = b
        .runner
        .accept(refund("5000.00", "C-100009"))
        .unwrap()
        .case_id;
    b.runner.process(&done).unwrap();
    let task = b.runner.tasks(None).unwrap().pop().unwrap();
    b.runner
        .complete_task(TaskCompletion {
            task_id: task.task_id,
            decision: "reject".into(),
            data: Value::Null,
            comment: None,
            by: "rev".into(),
        })
        .unwrap();
    let open_case = b
        .runner
        .accept(refund("900.00", "C-100009"))
        .unwrap()
        .case_id;
    b.runner.process(&open_case).unwrap();
    let other = b
        .runner
        .accept(refund("900.00", "C-100010"))
        .unwrap()
        .case_id;

    let erasure = b.runner.erase_customer("C-100009", "dpo").unwrap();
    assert_eq!(erasure.erased, vec![done.clone()]);
    assert_eq!(erasure.unfinished, vec![open_case.clone()]);
    let (rec, personal) = b.runner.case(&done).unwrap().unwrap();
    assert!(rec.erased && personal.is_none());
    assert!(b.runner.case(&open_case).unwrap().unwrap().1.is_some());
    assert!(b.runner.case(&other).unwrap().unwrap().1.is_some());
    let trail = b.runner.case_audit(&done).unwrap();
    assert_eq!(
        serde_json::to_value(trail.last().unwrap().kind).unwrap(),
        json!("erased")
    );
    assert!(b.runner.store().audit_verify().unwrap().is_ok());
    let _ = b.receiver.seen.load(Ordering::SeqCst);
}

#[test]
fn routing_and_the_workflow_see_the_customers_history_and_erasure_forgets_it() {
    let b = new_box(store::Kind::Redb);
    let run = |customer: &str| {
        let id = b.runner.accept(refund("20.00", customer)).unwrap().case_id;
        assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Completed);
        let (rec, personal) = b.runner.case(&id).unwrap().unwrap();
        let why = rec.why.expect("the decision says why");
        (why, personal.unwrap().data)
    };
    let (first, _) = run("C-100300");
    assert!(first.signals.customer.known);
    assert_eq!(first.signals.customer.contacts_30d, 0);
    assert_eq!(first.signals.customer.days_since_last_contact, None);
    b.clock.advance_to(
        b.clock
            .now()
            .checked_add(SignedDuration::from_hours(50))
            .unwrap(),
    );
    let (second, data) = run("C-100300");
    assert_eq!(second.rule, "intent_has_workflow");
    assert_eq!(second.signals.customer.contacts_30d, 1);
    assert_eq!(second.signals.customer.days_since_last_contact, Some(2));
    assert_eq!(data["customer"]["contacts_30d"], 1, "case.customer: {data}");
    let (anonymous, _) = run("C-100301");
    assert_eq!(
        anonymous.signals.customer.contacts_30d, 0,
        "another customer's cases"
    );

    let erasure = b.runner.erase_customer("C-100300", "dpo").unwrap();
    assert_eq!(erasure.erased.len(), 2);
    let (after, _) = run("C-100300");
    assert_eq!(
        after.signals.customer.contacts_30d, 0,
        "erased cases no longer count"
    );
    assert_eq!(after.signals.customer.days_since_last_contact, None);
}

/// Waits at the refund's approval task; returns the case and task ids.
fn waiting_refund(b: &Box_, customer: &str) -> (String, String) {
    let id = b.runner.accept(refund("900.00", customer)).unwrap().case_id;
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
    let task = b
        .runner
        .tasks(None)
        .unwrap()
        .into_iter()
        .find(|t| t.case_id == id)
        .unwrap();
    (id, task.task_id)
}

fn decide(task_id: &str, decision: &str) -> TaskCompletion {
    TaskCompletion {
        task_id: task_id.into(),
        decision: decision.into(),
        data: Value::Null,
        comment: None,
        by: format!("rev-{decision}"),
    }
}

/// Two reviewers complete `task` with these decisions at the same moment; each decision
/// with what the runner answered it.
fn race<'d>(
    b: &Box_,
    task: &str,
    decisions: [&'d str; 2],
) -> Vec<(&'d str, Result<CaseStatus, runner::Error>)> {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let racers: Vec<_> = decisions
            .map(|d| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    (d, b.runner.complete_task(decide(task, d)))
                })
            })
            .into_iter()
            .collect();
        racers.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn of_two_racing_completions_of_one_task_exactly_one_runs() {
    let b = new_box(store::Kind::Redb);
    for round in 0..20 {
        let (id, task) = waiting_refund(&b, &format!("C-2{round:05}"));
        let results = race(&b, &task, ["approve", "reject"]);
        let won: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let lost = results.iter().find(|(_, r)| r.is_err()).unwrap();
        assert!(
            matches!(&lost.1, Err(runner::Error::TaskAlreadyCompleted { case_id, .. }) if *case_id == id),
            "round {round}: {results:?}"
        );
        let (rec, _) = b.runner.case(&id).unwrap().unwrap();
        let outcome = if won[0].0 == "approve" {
            "refunded"
        } else {
            "rejected"
        };
        assert_eq!(rec.status, CaseStatus::Completed, "{rec:?}");
        assert_eq!(rec.state.unwrap().outcome.as_deref(), Some(outcome));
    }
    assert!(b.runner.store().audit_verify().unwrap().is_ok());
}

#[test]
fn a_task_id_that_was_never_open_is_no_task() {
    let b = new_box(store::Kind::Redb);
    let (id, task) = waiting_refund(&b, "C-300001");
    for never in [
        format!("{id}.triage"),
        format!("{id}-approval-9"),
        "t-1".into(),
    ] {
        assert!(
            matches!(
                b.runner.complete_task(decide(&never, "approve")),
                Err(runner::Error::NoTask(_))
            ),
            "{never}"
        );
    }
    assert!(b.runner.task(&task).is_ok(), "the real task is still open");
}

#[test]
fn a_task_that_passed_its_sla_is_closed_not_unknown() {
    let b = new_box(store::Kind::Redb);
    let (_, task) = waiting_refund(&b, "C-300002");
    b.clock.advance(SignedDuration::from_hours(9));
    assert_eq!(b.runner.fire_due(b.clock.now()).unwrap().len(), 1);
    let late = b.runner.complete_task(decide(&task, "approve"));
    assert!(
        matches!(
            late,
            Err(runner::Error::TaskAlreadyCompleted {
                status: CaseStatus::Escalated,
                ..
            })
        ),
        "{late:?}"
    );
}

/// Rewrites a stored case and stores work for it, as a damaged data directory might hold.
fn tamper(runner: &Runner, id: &str, f: impl FnOnce(&mut store::CaseRecord)) {
    let (mut rec, _) = runner.case(id).unwrap().unwrap();
    f(&mut rec);
    let mut batch = store::Batch::new();
    batch
        .put(Table::Cases, id.as_bytes(), &rec)
        .put_raw(Table::Pending, id.as_bytes(), Vec::new());
    runner.store().commit(batch).unwrap();
}

#[test]
fn a_stored_case_without_its_state_fails_with_a_reason_instead_of_panicking() {
    let b = new_box(store::Kind::Redb);
    let (id, _) = waiting_refund(&b, "C-300003");
    let at = b.clock.now();
    tamper(&b.runner, &id, |rec| {
        rec.state = None;
        rec.pending = Some(store::Pending {
            trigger: store::Trigger::Timer,
            at,
        });
    });
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Failed);
    let (rec, _) = b.runner.case(&id).unwrap().unwrap();
    let error = rec.error.unwrap();
    assert!(error.contains("stored case is inconsistent"), "{error}");
    assert!(b.runner.pending().unwrap().is_empty());

    let (id, task) = waiting_refund(&b, "C-300004");
    tamper(&b.runner, &id, |rec| {
        rec.workflow = None;
        rec.pending = Some(store::Pending {
            trigger: store::Trigger::Task {
                completion: decide(&task, "approve"),
            },
            at,
        });
    });
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Failed);
    let (rec, _) = b.runner.case(&id).unwrap().unwrap();
    assert!(
        rec.state
            .unwrap()
            .error
            .unwrap()
            .contains("no workflow version")
    );
}

#[test]
fn a_case_whose_segment_panics_can_be_failed_and_nothing_runs_it_again() {
    let b = new_box(store::Kind::Redb);
    let (id, task) = waiting_refund(&b, "C-300005");
    let at = b.clock.now();
    // Waiting at a node its workflow does not have: resuming it panics in the executor.
    tamper(&b.runner, &id, |rec| {
        if let Some(casegraph_engine::exec::Waiting::Task { node, .. }) =
            rec.state.as_mut().unwrap().waiting.as_mut()
        {
            *node = "no_such_node".into();
        }
        rec.pending = Some(store::Pending {
            trigger: store::Trigger::Task {
                completion: decide(&task, "approve"),
            },
            at,
        });
    });
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.runner.process(&id)));
    assert!(panicked.is_err());
    let reason = "internal error while running the case (incident 1234abcd)";
    assert_eq!(b.runner.fail(&id, reason).unwrap(), CaseStatus::Failed);
    let (rec, _) = b.runner.case(&id).unwrap().unwrap();
    assert_eq!(rec.error.as_deref(), Some(reason));
    assert_eq!(rec.state.as_ref().unwrap().error.as_deref(), Some(reason));
    // Like any failed case, its state says why (what the console shows as the reason).
    assert_eq!(rec.state.as_ref().unwrap().reason.as_deref(), Some(reason));
    assert!(b.runner.pending().unwrap().is_empty(), "nothing to recover");
    assert!(
        b.runner.tasks(None).unwrap().is_empty(),
        "no task left open"
    );
    assert_eq!(b.runner.recover().unwrap(), 0);
    // Failing again changes nothing; the runner (and its case lock) still works.
    assert_eq!(b.runner.fail(&id, "again").unwrap(), CaseStatus::Failed);
    assert_eq!(
        b.runner.case(&id).unwrap().unwrap().0.error.as_deref(),
        Some(reason)
    );
    let (other, _) = waiting_refund(&b, "C-300006");
    assert_eq!(
        b.runner.case(&other).unwrap().unwrap().0.status,
        CaseStatus::Waiting
    );
    let outcomes = b
        .runner
        .case_audit(&id)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == casegraph_engine::audit::Kind::Outcome)
        .count();
    assert_eq!(outcomes, 1);
    assert!(b.runner.store().audit_verify().unwrap().is_ok());
}

#[test]
fn of_two_racing_triage_decisions_exactly_one_routes_the_case() {
    let b = new_box(store::Kind::Sled);
    for round in 0..10 {
        let mut r = refund("20.00", &format!("C-4{round:05}"));
        set_metadata(&mut r, "confidence", json!(0.2));
        let id = b.runner.accept(r).unwrap().case_id;
        assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Waiting);
        let task = format!("{id}.triage");
        let results = race(&b, &task, ["close", "request_refund"]);
        let won: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        let (rec, _) = b.runner.case(&id).unwrap().unwrap();
        assert_eq!(rec.status, CaseStatus::Completed, "{rec:?}");
        // Closed by the reviewer: no workflow ran; routed: the refund workflow ran once.
        assert_eq!(
            rec.workflow.is_some(),
            won[0].0 == "request_refund",
            "{rec:?}"
        );
        let outcomes = b
            .runner
            .case_audit(&id)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == casegraph_engine::audit::Kind::Outcome)
            .count();
        assert_eq!(outcomes, 1, "round {round}");
    }
}

/// A case that fails before any workflow runs (here: routing, whose policy throws) still
/// says why, in the case record and the audit trail.
#[test]
fn a_case_that_fails_in_routing_says_why() {
    let b = new_box(store::Kind::Redb);
    let served = tempfile::tempdir().unwrap();
    copy_dir(&shipped(), served.path());
    std::fs::write(
        served.path().join("routing/routing.rhai"),
        "throw \"no rule decides this request\";",
    )
    .unwrap();
    let catalog = Catalog::load(served.path(), &Rules::default()).unwrap();
    b.runner.set_catalog(Arc::new(catalog));
    let id = b
        .runner
        .accept(refund("20.00", "C-100100"))
        .unwrap()
        .case_id;
    assert_eq!(b.runner.process(&id).unwrap(), CaseStatus::Failed);
    let (rec, personal) = b.runner.case(&id).unwrap().unwrap();
    let reason = rec.error.expect("a failed case says why");
    assert!(reason.starts_with("routing failed: "), "{reason}");
    assert!(personal.unwrap().error.is_some());
    let trail = b.runner.case_audit(&id).unwrap();
    let outcome = &trail.last().unwrap().body;
    assert_eq!(outcome["error"], json!(reason), "{outcome}");
}

/// A redb store whose writes of certain records (`holds`) wait at a gate the test opens,
/// and whose writes fail while told to: a disk that is slow to sync, or refuses to. Other
/// writes (the outbox's record before a back-office call) pass.
struct Gated {
    inner: Arc<dyn store::Backend>,
    holds: fn(&store::Op) -> bool,
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    fail: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated").finish_non_exhaustive()
    }
}

impl Gated {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

impl store::Backend for Gated {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.inner.get(table, key)
    }
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        n: usize,
    ) -> Result<Vec<store::Entry>, store::Error> {
        self.inner.range(t, from, to, n)
    }
    fn range_back(
        &self,
        t: Table,
        from: &[u8],
        to: Option<&[u8]>,
        n: usize,
    ) -> Result<Vec<store::Entry>, store::Error> {
        self.inner.range_back(t, from, to, n)
    }
    fn last(&self, table: Table) -> Result<Option<store::Entry>, store::Error> {
        self.inner.last(table)
    }
    fn write(&self, groups: &[Vec<store::Op>]) -> Result<(), store::Error> {
        if groups.iter().flatten().any(self.holds) {
            let open = self.open.lock().unwrap();
            drop(self.opened.wait_while(open, |open| !*open).unwrap());
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(store::Error::Io {
                backend: "test",
                message: "the disk refused the write".into(),
            });
        }
        self.inner.write(groups)
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn name(&self) -> &'static str {
        "gated"
    }
}

/// Checks that `other` still waits (for a commit held at the gate) 200 ms on, opens the
/// gate and returns what the held commit's continuation was told.
fn open_once_waiting<T, R>(
    disk: &Gated,
    other: &std::thread::JoinHandle<T>,
    told: &std::sync::mpsc::Receiver<R>,
    what: &str,
) -> R {
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!other.is_finished(), "{what}");
    disk.set(true);
    told.recv_timeout(std::time::Duration::from_secs(10))
        .expect("told once the commit landed")
}

/// A write that ends a segment: it clears the case's stored trigger.
fn ends_a_segment(op: &store::Op) -> bool {
    op.table == Table::Pending && op.value.is_none()
}

/// A box on the shipped workflows whose disk is [`Gated`] (open at first).
fn gated_box(
    dir: &Path,
    holds: fn(&store::Op) -> bool,
) -> (Arc<Runner>, Arc<Gated>, Arc<Receiver>) {
    let gated = Arc::new(Gated {
        inner: store::open_backend(dir, &store::Options::default()).unwrap(),
        holds,
        open: Mutex::new(true),
        opened: std::sync::Condvar::new(),
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    let rules = Arc::new(Rules::default());
    let catalog = Arc::new(Catalog::load(&shipped(), &rules).expect("the workflows load"));
    let receiver = Arc::new(Receiver::default());
    let runner = Runner::new(Parts {
        store: Store::with_backend(gated.clone(), 64).unwrap(),
        catalog,
        rules,
        connector: receiver.clone(),
        classifier: Arc::new(Given),
        clock: Arc::new(ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap())),
        versions_dir: dir.join("versions"),
        priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        quiet_hours: None,
    });
    (Arc::new(runner), gated, receiver)
}

#[test]
fn a_segment_handed_to_its_commit_is_neither_seen_nor_run_again_until_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, disk, back_office) = gated_box(dir.path(), ends_a_segment);
    let id = runner.accept(refund("20.00", "C-100100")).unwrap().case_id;
    disk.set(false);
    let (tx, done) = std::sync::mpsc::channel();
    runner.process_then(&id, move |r| tx.send(r).unwrap());
    // The worker is free again, the segment's commit waits for the disk.
    assert!(done.try_recv().is_err(), "told before the commit landed");
    let (rec, _) = runner.case(&id).unwrap().unwrap();
    assert_eq!(
        rec.status,
        CaseStatus::Accepted,
        "a reader sees only what is durable"
    );
    // Whoever takes the case next waits for the commit, then finds the segment's result.
    let (r, case) = (runner.clone(), id.clone());
    let next = std::thread::spawn(move || r.process(&case));
    let processed = open_once_waiting(
        &disk,
        &next,
        &done,
        "the case was taken while its commit was syncing",
    )
    .unwrap();
    assert_eq!(processed.status, CaseStatus::Completed);
    assert!(!processed.notify, "the request named no reply_to");
    assert_eq!(
        next.join().unwrap().unwrap(),
        CaseStatus::Completed,
        "the next taker found the case finished, with nothing left to run"
    );
    assert!(runner.pending().unwrap().is_empty());
    // The segment ran once: one refund sent, one outcome in the case's trail.
    assert_eq!(back_office.seen.load(Ordering::SeqCst), 1);
    let outcomes = runner
        .case_audit(&id)
        .unwrap()
        .iter()
        .filter(|r| serde_json::to_value(r.kind).unwrap() == json!("outcome"))
        .count();
    assert_eq!(outcomes, 1, "the case was run twice");
    assert_eq!(
        runner.store().audit_verify().unwrap().unwrap().records,
        runner.store().stats().audit_records,
        "the chain holds every record, each once"
    );
}

#[test]
fn a_segment_whose_commit_fails_keeps_its_stored_work_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, disk, _) = gated_box(dir.path(), ends_a_segment);
    let id = runner.accept(refund("20.00", "C-100100")).unwrap().case_id;
    disk.fail.store(true, Ordering::SeqCst);
    let (tx, done) = std::sync::mpsc::channel();
    runner.process_then(&id, move |r| tx.send(r).unwrap());
    let failed = done
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(failed.is_err(), "a refused write is reported: {failed:?}");
    assert_eq!(
        runner.pending().unwrap(),
        vec![id.clone()],
        "the trigger stays"
    );
    let (rec, _) = runner.case(&id).unwrap().unwrap();
    assert_eq!(rec.status, CaseStatus::Accepted);
    disk.fail.store(false, Ordering::SeqCst);
    assert_eq!(runner.process(&id).unwrap(), CaseStatus::Completed);
    assert!(runner.pending().unwrap().is_empty());
}

#[test]
fn an_acceptance_handed_to_its_commit_keeps_its_idempotency_key_until_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, disk, _) = gated_box(dir.path(), |op| op.table == Table::Idempotency);
    let keyed = || NewRequest {
        idempotency_key: Some("crm:order-17".into()),
        ..refund("20.00", "C-100100")
    };
    disk.set(false);
    let (tx, done) = std::sync::mpsc::channel();
    runner.accept_then(keyed(), move |r| tx.send(r).unwrap());
    assert!(
        done.try_recv().is_err(),
        "answered before the request was durable"
    );
    // The same request again (a client that timed out and retries) waits for the first.
    let r = runner.clone();
    let again = std::thread::spawn(move || r.accept(keyed()));
    let first = open_once_waiting(
        &disk,
        &again,
        &done,
        "the key was free while its first request was syncing",
    )
    .unwrap();
    assert!(!first.duplicate && first.run);
    let second = again.join().unwrap().unwrap();
    assert!(second.duplicate, "the retry made a second case");
    assert_eq!(second.case_id, first.case_id);
    assert_eq!(runner.pending().unwrap(), vec![first.case_id]);
}
