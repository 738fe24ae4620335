//! One business rule with five conditions, its AST compiled once and taken from the cache.
//!
//! `condition`: a five-clause boolean expression, as on a decision edge (`eval_bool`).
//! `rule`: a rule-node script with five `if` conditions that writes a risk score (`run`).
//! `condition_via_cache`: looks the expression up in the compile cache on every run (hash of
//! the source, cache hit), then evaluates it: what a caller pays that does not keep the
//! `Script`. Target (docs/benchmarks.md): ≤ 5 µs per evaluation.

use std::hint::black_box;

use casegraph_engine::rules::{Context, Origin, Rules};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const CONDITION: &str = r#"case.amount > 0 && case.amount <= 50.00 && case.request.channel == "form" && case.risk < 3 && case.request.language in ["de", "en"]"#;

const RULE: &str = r#"
let score = 0;
if case.amount > 500.00 { score += 2; }
if case.request.channel == "chat" { score += 1; }
if case.previous_refunds > 2 { score += 2; }
if !case.identity_verified { score += 3; }
if case.request.language in ["de", "en"] { score -= 1; }
case.risk = score;
"#;

fn data() -> serde_json::Value {
    json!({
        "request": {"channel": "form", "language": "de", "customer_id": "C-1002345", "text": "", "fields": {"amount": "35.20"}},
        "classification": {"intent": "request_refund", "confidence": 0.96, "out_of_scope": false},
        "amount": 35.2,
        "risk": 1,
        "previous_refunds": 1,
        "identity_verified": true,
        "tasks": {},
    })
}

fn bench(c: &mut Criterion) {
    let rules = Rules::default();
    let origin = || Origin {
        file: "bench.yaml".into(),
        line: 1,
        node: Some("check".into()),
    };
    let ctx = Context {
        case_id: "c-1",
        node: "check",
        now: "2026-03-02T09:00:00Z".parse().expect("timestamp"),
    };
    let data = data();
    let condition = rules
        .compile_expression(CONDITION, origin())
        .expect("condition compiles");
    let rule = rules.compile(RULE, origin()).expect("rule compiles");
    assert!(rules.eval_bool(&condition, &ctx, &data).expect("runs"));

    let mut group = c.benchmark_group("rules/five_conditions");
    group.bench_function("condition", |b| {
        b.iter(|| rules.eval_bool(black_box(&condition), &ctx, black_box(&data)))
    });
    group.bench_function("condition_via_cache", |b| {
        b.iter(|| {
            let script = rules
                .compile_expression(black_box(CONDITION), origin())
                .expect("cached");
            rules.eval_bool(&script, &ctx, black_box(&data))
        })
    });
    group.bench_function("rule", |b| {
        b.iter_batched_ref(
            || data.clone(),
            |d| rules.run(black_box(&rule), &ctx, d),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
