//! The reviewers' inbox with a backlog: the first page of open tasks (`GET /v1/tasks?limit=50`,
//! all queues and one small queue) and the open tasks per queue (`/metrics`, the console),
//! with 10,000 tasks open.
//!
//!     cargo bench -p casegraph-engine --bench inbox
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use casegraph_engine::classify::{self, Classification};
use casegraph_engine::exec::{CallError, CallRequest, Connector, SystemClock};
use casegraph_engine::intake::Received;
use casegraph_engine::rules::Rules;
use casegraph_engine::runner::{Parts, Runner};
use casegraph_engine::store::{self, Batch, Store, Table, TaskEntry};
use casegraph_engine::workflow::Catalog;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// Open tasks in the benchmark's inbox.
const OPEN: usize = 10_000;

struct NoCalls;
impl Connector for NoCalls {
    fn call(&self, _: &CallRequest) -> Result<Value, CallError> {
        Err(CallError {
            retryable: false,
            message: "no calls in this benchmark".into(),
        })
    }
}

struct NoModel;
impl classify::Service for NoModel {
    fn classify(&self, _: &Received) -> Result<Classification, classify::Error> {
        Err(classify::Error::Inference("not used".into()))
    }
}

fn runner(dir: &Path) -> Runner {
    let rules = Arc::new(Rules::default());
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows");
    let catalog = Arc::new(Catalog::load(&workflows, &rules).expect("shipped workflows"));
    let store = Store::open(dir, &store::Options::default()).unwrap();
    Runner::new(Parts {
        store,
        catalog,
        rules,
        connector: Arc::new(NoCalls),
        classifier: Arc::new(NoModel),
        clock: Arc::new(SystemClock),
        versions_dir: dir.join("versions"),
        priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        quiet_hours: None,
    })
}

/// A triage task as routing leaves it: nine in ten in `triage`, one in a hundred in `rare`,
/// one in five of high priority (and so due).
fn task(n: usize) -> TaskEntry {
    let queue = match n % 100 {
        0 => "rare",
        1..=9 => "refunds",
        _ => "triage",
    };
    let high = n.is_multiple_of(5);
    let created = 1_780_000_000 + n as i64;
    serde_json::from_value(json!({
        "task_id": format!("task-{n:08}"),
        "case_id": format!("case-{n:08}"),
        "queue": queue,
        "node": "triage",
        "title": "Route this request: choose a workflow or close it",
        "decisions": ["card_arrival", "refund_request", "close"],
        "created_at": jiff::Timestamp::from_second(created).unwrap(),
        "sla_due": high.then(|| jiff::Timestamp::from_second(created + 3600).unwrap()),
        "reason": {"code": "routed", "rule": "low_confidence"},
        "priority": if high { "high" } else { "normal" },
        "why": {"policy_version": 3, "rule": "low_confidence", "priority": if high { "high" } else { "normal" },
            "scores": {"card_arrival": 0.41, "refund_request": 0.33},
            "signals": {"intent": "card_arrival", "confidence": 0.41, "out_of_scope": false,
                "customer": {"known": true, "contacts_30d": 1, "open_cases": 0, "escalations": 0,
                    "complaints": 0, "frustrated_contacts": 0, "days_since_last_contact": 12}}}
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(dir.path());
    for chunk in (0..OPEN).collect::<Vec<_>>().chunks(500) {
        let mut batch = Batch::new();
        for &n in chunk {
            let t = task(n);
            batch.put(Table::Tasks, t.task_id.clone(), &t);
        }
        runner.store().commit(batch).unwrap();
    }
    assert_eq!(runner.tasks_page(None, 50).unwrap().len(), 50);
    let mut g = c.benchmark_group("inbox");
    g.bench_function("first_page_of_10000", |b| {
        b.iter(|| runner.tasks_page(None, 50).unwrap())
    });
    g.bench_function("first_page_of_a_small_queue", |b| {
        b.iter(|| runner.tasks_page(Some("rare"), 50).unwrap())
    });
    g.bench_function("open_per_queue", |b| {
        b.iter(|| runner.open_tasks_by_queue().unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
