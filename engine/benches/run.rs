//! One full in-memory run of the shipped `request_refund` workflow: no disk, no network.
//!
//! The workflow is loaded and compiled once, outside the timed loop. The timed part starts a
//! case (input-schema check included) and runs it to its end or its suspension, with a
//! clock that does not move and a connector that answers from memory.
//!
//! `small_refund`: extract → check_amount → within_limit → book → reply_refunded → refunded.
//! `large_refund_approved`: runs to the approval task, then resumes with a reviewer's
//! approval and runs to the end (two executor calls).
//! `digest_of_case_data`: not a run; one audit digest of the finished case's data, of which
//! a run takes two per step.
//! `rule_on_case_data`: not a run; one `rule` script that sets a field, on the finished
//! case's data: what taking case data into rhai and back costs a rule step.
//! Target (docs/benchmarks.md): ≤ 50 µs for `small_refund`.

use std::hint::black_box;
use std::path::PathBuf;

use casegraph_engine::exec::{
    CallError, CallRequest, Connector, Event, Executor, ManualClock, Status, TaskCompletion,
    Waiting,
};
use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::compile_dir;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// The payment system, in memory: every booking succeeds.
struct Payments;

impl Connector for Payments {
    fn call(&self, request: &CallRequest) -> Result<Value, CallError> {
        Ok(json!({ "refund_id": format!("R-{}", request.attempt), "status": "booked" }))
    }
}

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workflows/request_refund");
    let rules = Rules::default();
    let workflow = compile_dir(&dir, &rules).unwrap_or_else(|d| panic!("{d:?}"));
    let clock = ManualClock::new("2026-03-02T09:00:00Z".parse().expect("timestamp"));
    let exec = Executor::new(&rules, &clock, &Payments);
    let classification =
        json!({"intent": "request_refund", "confidence": 0.96, "out_of_scope": false});
    let small = json!({"channel": "form", "language": "en", "customer_id": "C-1002345", "text": "Charged twice for my subscription", "fields": {"amount": "35.20"}});
    let large = json!({"channel": "chat", "language": "de", "customer_id": "C-1002345", "text": "Bitte erstatten Sie 1.249,90 € auf DE89 3704 0044 0532 0130 00.", "fields": {}});

    let (case, _) = exec
        .start(&workflow, "c-1", small.clone(), classification.clone())
        .expect("starts");
    assert_eq!(case.status, Status::Completed, "{:?}", case.error);
    assert_eq!(case.outcome.as_deref(), Some("refunded"));

    let mut group = c.benchmark_group("run/request_refund");
    group.bench_function("small_refund", |b| {
        b.iter(|| {
            exec.start(
                &workflow,
                "c-1",
                black_box(small.clone()),
                classification.clone(),
            )
        })
    });
    group.bench_function("large_refund_approved", |b| {
        b.iter(|| {
            let (mut case, mut records) = exec
                .start(
                    &workflow,
                    "c-2",
                    black_box(large.clone()),
                    classification.clone(),
                )
                .expect("starts");
            let Some(Waiting::Task { task_id, .. }) = case.waiting.clone() else {
                panic!("expected the approval task, got {:?}", case.status)
            };
            let done = TaskCompletion {
                task_id,
                decision: "approve".into(),
                data: Value::Null,
                comment: Some("receipt checked".into()),
                by: "reviewer-7".into(),
            };
            records.extend(
                exec.resume(&workflow, &mut case, Event::TaskCompleted(done))
                    .expect("resumes"),
            );
            debug_assert_eq!(case.status, Status::Completed);
            (case, records)
        })
    });
    // Not a run: one audit digest (canonical JSON + sha256) of the finished case's data.
    // Every step takes two (before and after), so this shows what digests cost a run.
    group.bench_function("digest_of_case_data", |b| {
        b.iter(|| casegraph_engine::exec::digest(black_box(&case.data)))
    });
    let script = rules
        .compile(
            "case.seen = true;",
            casegraph_engine::rules::Origin::default(),
        )
        .expect("compiles");
    let ctx = casegraph_engine::rules::Context {
        case_id: "c-1",
        node: "bench",
        now: "2026-03-02T09:00:00Z".parse().expect("timestamp"),
    };
    group.bench_function("rule_on_case_data", |b| {
        b.iter(|| {
            let mut data = case.data.clone();
            rules.run(&script, &ctx, &mut data).expect("runs");
            data
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
