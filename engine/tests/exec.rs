//! Executor behaviour on a small workflow that uses every node kind: suspension on human
//! tasks and timers, retries with backoff, SLA escalation, checkpoints, bounds, records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Mutex;

use casegraph_engine::exec::{
    CallError, CallRequest, Clock, Connector, Event, Executor, ManualClock, Status, TaskCompletion,
    Waiting,
};
use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Workflow, compile_dir};
use serde_json::{Value, json};

const WORKFLOW: &str = r##"
id: demo
version: 3
intents: [request_refund]
start: extract
limits: {max_steps: 40}
replies:
  ok:
    en: "Refund of {{ case.amount }} booked as {{ case.refund.id }}."
    de: "Erstattung von {{ case.amount }} gebucht als {{ case.refund.id }}."
nodes:
  extract: {kind: rule, script: extract.rhai, next: route}
  route:
    kind: decision
    branches:
      - when: "case.amount > 100"
        to: approval
    otherwise: settle
  approval:
    kind: human
    queue: refunds
    sla: 4h
    decisions: {approve: settle, reject: rejected}
    escalate: escalated
  settle: {kind: wait, duration: 1d, next: check}
  check:
    kind: checkpoint
    name: refund within limit
    assert: "case.amount <= 1000"
    evidence: [amount, request.customer_id]
    next: book
  book:
    kind: call
    connector: payments
    operation: refund
    effect: reversible
    payload: "#{ amount: case.amount }"
    result: refund
    retry: {max_attempts: 3, backoff: 30s}
    next: reply
    on_failure: rejected
  reply: {kind: reply, template: ok, next: done}
  done: {kind: end, outcome: refunded}
  rejected: {kind: end, outcome: rejected}
  escalated: {kind: end, outcome: sla_passed, status: escalated}
"##;

fn workflow(dir: &Path) -> Workflow {
    let wf = dir.join("demo");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(wf.join("workflow.yaml"), WORKFLOW).unwrap();
    std::fs::write(wf.join("extract.rhai"), "case.amount = case.request.fields.amount;\nif case.amount < 0 { throw \"negative amount\"; }\n").unwrap();
    std::fs::write(
        wf.join("input.schema.json"),
        r#"{"type":"object","required":["fields"]}"#,
    )
    .unwrap();
    compile_dir(&wf, &Rules::default()).unwrap_or_else(|d| panic!("{d:?}"))
}

/// Answers calls from a queue of results; records every request.
#[derive(Default)]
struct Answers {
    results: Mutex<Vec<Result<Value, CallError>>>,
    seen: Mutex<Vec<CallRequest>>,
}

impl Connector for Answers {
    fn call(&self, request: &CallRequest) -> Result<Value, CallError> {
        self.seen.lock().unwrap().push(request.clone());
        self.results.lock().unwrap().remove(0)
    }
}

fn request(amount: i64) -> Value {
    json!({ "channel": "form", "language": "de", "customer_id": "C-1", "fields": { "amount": amount } })
}

fn start_at() -> jiff::Timestamp {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

#[test]
fn small_refund_waits_a_day_retries_the_call_and_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    *answers.results.lock().unwrap() = vec![
        Err(CallError {
            retryable: true,
            message: "timeout".into(),
        }),
        Ok(json!({ "id": "R-9" })),
    ];
    let exec = Executor::new(&rules, &clock, &answers);
    let (mut case, records) = exec.start(&wf, "c1", request(40), json!({})).unwrap();
    assert_eq!(case.status, Status::Waiting);
    let due = case.waiting.as_ref().and_then(Waiting::due).unwrap();
    assert_eq!(due.to_string(), "2026-03-03T09:00:00Z");
    assert_eq!(
        records.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
        ["extract", "route", "settle"]
    );
    assert!(records[0].script_digest.is_some());
    assert_ne!(
        records[0].input_digest, records[0].output_digest,
        "the rule changed the data"
    );
    // A decision only reads the data: its step keeps the digest the rule's step ended with.
    assert_eq!(records[1].input_digest, records[0].output_digest);
    assert_eq!(records[1].output_digest, records[1].input_digest);

    // A timer that is not due yet is refused and leaves the case alone.
    let before = case.clone();
    assert!(exec.resume(&wf, &mut case, Event::TimerFired).is_err());
    assert_eq!(case, before);

    clock.advance_to(due);
    exec.resume(&wf, &mut case, Event::TimerFired).unwrap();
    // The first call attempt timed out: the case waits for the backoff, 30 s.
    let Some(Waiting::Timer {
        due,
        retry_attempt: Some(2),
        ..
    }) = case.waiting.clone()
    else {
        panic!("expected a retry timer, got {:?}", case.waiting)
    };
    assert_eq!(due.to_string(), "2026-03-03T09:00:30Z");
    clock.advance_to(due);
    let records = exec.resume(&wf, &mut case, Event::TimerFired).unwrap();
    assert_eq!(case.status, Status::Completed, "{:?}", case.error);
    assert_eq!(case.outcome.as_deref(), Some("refunded"));
    assert_eq!(
        case.path,
        [
            "extract", "route", "settle", "check", "book", "reply", "done"
        ]
    );
    let reply = case.reply.as_ref().unwrap();
    assert_eq!(reply.language, "de");
    // The printed case reference follows the template's text, in the reply's language.
    assert_eq!(
        reply.text,
        format!(
            "Erstattung von 40 gebucht als R-9.\nVorgangsnummer: {} (bitte bei Antworten angeben)\n",
            casegraph_engine::reference::of(&case.id)
        )
    );
    let seen = answers.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].idempotency_key, seen[1].idempotency_key,
        "a retry keeps the idempotency key"
    );
    assert_eq!((seen[0].attempt, seen[1].attempt), (1, 2));
    assert_eq!(records.first().unwrap().node, "book");
    let seqs: Vec<u32> = records.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn large_refund_waits_for_a_reviewer_and_records_the_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let (mut case, _) = exec.start(&wf, "c2", request(500), json!({})).unwrap();
    let Some(Waiting::Task {
        task_id,
        queue,
        decisions,
        ..
    }) = case.waiting.clone()
    else {
        panic!("expected a task")
    };
    assert_eq!(queue, "refunds");
    assert_eq!(decisions, ["approve", "reject"]);

    let wrong = TaskCompletion {
        task_id: task_id.clone(),
        decision: "maybe".into(),
        data: json!(null),
        comment: None,
        by: "r1".into(),
    };
    let err = exec
        .resume(&wf, &mut case, Event::TaskCompleted(wrong))
        .unwrap_err();
    assert!(
        err.to_string().contains("allowed: approve, reject"),
        "{err}"
    );
    assert_eq!(case.status, Status::Waiting);

    let reject = TaskCompletion {
        task_id,
        decision: "reject".into(),
        data: json!({"reason": "duplicate"}),
        comment: Some("seen before".into()),
        by: "r1".into(),
    };
    let records = exec
        .resume(&wf, &mut case, Event::TaskCompleted(reject))
        .unwrap();
    assert_eq!(case.status, Status::Completed);
    assert_eq!(case.outcome.as_deref(), Some("rejected"));
    assert_eq!(
        case.data["tasks"]["approval"]["data"]["reason"],
        "duplicate"
    );
    assert_eq!(records[0].detail["by"], "r1");
    assert_eq!(records[0].edge.as_deref(), Some("decision reject"));
    assert!(
        records[0].detail.get("comment").is_none(),
        "comments are recorded as digests only"
    );
}

#[test]
fn an_unanswered_task_escalates_when_its_sla_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let (mut case, _) = exec.start(&wf, "c3", request(500), json!({})).unwrap();
    let due = case.waiting.as_ref().and_then(Waiting::due).unwrap();
    assert_eq!(due.to_string(), "2026-03-02T13:00:00Z");
    clock.advance_to(due);
    exec.resume(&wf, &mut case, Event::TimerFired).unwrap();
    assert_eq!(case.status, Status::Escalated);
    assert_eq!(case.path.last().map(String::as_str), Some("escalated"));
}

#[test]
fn a_failed_checkpoint_fails_the_case_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let (mut case, _) = exec.start(&wf, "c4", request(5000), json!({})).unwrap();
    let Some(Waiting::Task { task_id, .. }) = case.waiting.clone() else {
        panic!()
    };
    let approve = TaskCompletion {
        task_id,
        decision: "approve".into(),
        data: json!({}),
        comment: None,
        by: "r".into(),
    };
    exec.resume(&wf, &mut case, Event::TaskCompleted(approve))
        .unwrap();
    clock.advance_to(case.waiting.as_ref().and_then(Waiting::due).unwrap());
    let records = exec.resume(&wf, &mut case, Event::TimerFired).unwrap();
    assert_eq!(case.status, Status::Failed);
    assert!(
        case.error
            .as_deref()
            .unwrap()
            .contains("checkpoint `refund within limit` failed")
    );
    let check = records.iter().find(|r| r.node == "check").unwrap();
    assert_eq!(check.detail["passed"], false);
    assert!(
        check.detail["evidence"]["amount"].is_string(),
        "evidence is a digest"
    );
}

#[test]
fn input_that_breaks_the_schema_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let err = exec
        .start(&wf, "c5", json!({"channel": "chat"}), json!({}))
        .unwrap_err();
    assert!(err.to_string().contains("fields"), "{err}");
}

#[test]
fn a_script_error_fails_the_case_naming_file_line_node_and_case() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = workflow(tmp.path());
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let req = json!({ "channel": "form", "fields": { "amount": -5 } });
    let (case, _) = exec.start(&wf, "c6", req, json!({})).unwrap();
    assert_eq!(case.status, Status::Failed);
    let error = case.error.unwrap();
    assert!(error.contains("extract.rhai:2"), "{error}");
    assert!(error.contains("negative amount"), "{error}");
    assert!(error.contains("node `extract`"), "{error}");
    assert!(error.contains("case `c6`"), "{error}");
    let _ = clock.now();
}

const LOOP: &str = r#"
id: retry_loop
version: 1
intents: [x]
start: ask
limits: {max_steps: 100}
replies: {}
nodes:
  ask: {kind: rule, script: ask.rhai, next: enough, max_visits: 3}
  enough:
    kind: decision
    branches:
      - {when: "case.tries >= 10", to: done}
    otherwise: ask
  done: {kind: end, outcome: done}
"#;

fn loop_workflow(dir: &Path, max_steps: u32) -> Workflow {
    let wf = dir.join("retry_loop");
    std::fs::create_dir_all(&wf).unwrap();
    let text = LOOP.replace("max_steps: 100", &format!("max_steps: {max_steps}"));
    std::fs::write(wf.join("workflow.yaml"), text).unwrap();
    std::fs::write(wf.join("ask.rhai"), "case.tries = (case.tries ?? 0) + 1;").unwrap();
    std::fs::write(wf.join("input.schema.json"), "{}").unwrap();
    compile_dir(&wf, &Rules::default()).unwrap_or_else(|d| panic!("{d:?}"))
}

#[test]
fn a_bounded_cycle_fails_the_case_when_a_node_passes_its_visit_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = loop_workflow(tmp.path(), 100);
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let (case, records) = exec.start(&wf, "c7", json!({}), json!({})).unwrap();
    assert_eq!(case.status, Status::Failed);
    assert!(
        case.error.as_deref().unwrap().contains("max_visits: 3"),
        "{:?}",
        case.error
    );
    assert_eq!(
        case.path,
        ["ask", "enough", "ask", "enough", "ask", "enough"]
    );
    assert_eq!(records.len(), 6);
}

#[test]
fn the_per_case_step_bound_stops_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = loop_workflow(tmp.path(), 4);
    let rules = Rules::default();
    let clock = ManualClock::new(start_at());
    let answers = Answers::default();
    let exec = Executor::new(&rules, &clock, &answers);
    let (case, _) = exec.start(&wf, "c8", json!({}), json!({})).unwrap();
    assert_eq!(case.status, Status::Failed);
    assert!(
        case.error.as_deref().unwrap().contains("bound of 4 steps"),
        "{:?}",
        case.error
    );
    assert_eq!(case.steps, 4);
}
