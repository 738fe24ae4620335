//! The reviewers' inbox with a backlog: the first page of open tasks (`GET /v1/tasks?limit=50`,
//! all queues and one small queue) and the open tasks per queue (`/metrics`, the console),
//! with 10,000 tasks open.
//!
//!     cargo bench -p casegraph-engine --bench inbox
#![allow(clippy::unwrap_used, clippy::expect_used)]

use casegraph_engine::store::{self, Batch, Table, TaskEntry};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

mod support;

/// Open tasks in the benchmark's inbox.
const OPEN: usize = 10_000;

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
    let runner = support::runner(dir.path(), store::Kind::Redb);
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
