//! Edge cases of compilation and drawing: node ids that are Mermaid keywords or collide with
//! the start marker; an `end` node with a bad field is reported once, not as a dead end; and
//! what each node kind gives the console to show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Format, compile_dir};
use serde_json::json;

#[test]
fn nodes_named_like_mermaid_keywords_get_their_own_ids() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("demo");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(
        wf.join("workflow.yaml"),
        "id: demo\nversion: 1\nintents: [x]\nstart: start\nnodes:\n  start: {kind: rule, script: s.rhai, next: end}\n  end: {kind: end, outcome: done}\n",
    )
    .unwrap();
    std::fs::write(wf.join("s.rhai"), "case.x = 1;").unwrap();
    std::fs::write(wf.join("input.schema.json"), "{}").unwrap();
    let w = compile_dir(&wf, &Rules::default()).unwrap_or_else(|d| panic!("{d:?}"));
    let m = w.diagram(Format::Mermaid);
    assert!(m.contains("    __start__(( )) --> start\n"), "{m}");
    assert!(m.contains("    start --> node_end\n"), "{m}");
    assert!(m.contains("    node_end((\"end"), "{m}");
    assert!(
        !m.lines().any(|l| l.trim_start().starts_with("end ")),
        "{m}"
    );
}

#[test]
fn an_end_node_with_a_bad_field_is_reported_once_not_as_a_dead_end() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("demo");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(
        wf.join("workflow.yaml"),
        "id: demo\nversion: 1\nintents: [x]\nstart: a\nnodes:\n  a: {kind: rule, script: s.rhai, next: done}\n  done: {kind: end, outcome: ok, status: closed}\n",
    )
    .unwrap();
    std::fs::write(wf.join("s.rhai"), "case.x = 1;").unwrap();
    std::fs::write(wf.join("input.schema.json"), "{}").unwrap();
    let diags = compile_dir(&wf, &Rules::default()).unwrap_err();
    let codes: Vec<String> = diags.iter().map(|d| d.code.to_string()).collect();
    assert!(!codes.iter().any(|c| c == "dead_end"), "{diags:?}");
    assert_eq!(diags.len(), 1, "{diags:?}");
}

/// What the console shows of a node: its settings without any script source, and the
/// script or expression it runs itself, by file and line (a decision's conditions are on
/// its edges).
#[test]
fn each_kind_says_what_the_console_shows_of_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/request_refund");
    let w = compile_dir(&dir, &Rules::default()).unwrap_or_else(|d| panic!("{d:?}"));
    let shown = |id: &str| {
        let step = &w.node(id).expect(id).step;
        let script = step.script().map(|s| {
            let file = s.origin.file.file_name().unwrap().to_string_lossy();
            format!("{file}:{}", s.origin.line)
        });
        (serde_json::to_value(step.details()).unwrap(), script)
    };
    assert_eq!(shown("extract"), (json!({}), Some("extract.rhai:1".into())));
    assert_eq!(shown("check_amount"), (json!({}), None));
    let (details, script) = shown("within_limit");
    assert_eq!(
        details,
        json!({ "checkpoint": "refund within the automatic limit",
            "evidence": ["amount", "request.customer_id"] })
    );
    assert!(script.unwrap().starts_with("workflow.yaml:"));
    assert_eq!(
        shown("approval").0,
        json!({ "queue": "refunds", "sla_secs": 8 * 3600,
            "task": "Approve a refund above the automatic limit of 50.00 EUR",
            "decisions": ["approve", "reject"] })
    );
    let (details, script) = shown("book");
    assert_eq!(
        details,
        json!({ "connector": "payments", "operation": "refund", "result": "refund",
            "max_attempts": 3, "backoff_secs": 60 })
    );
    assert!(script.unwrap().starts_with("workflow.yaml:"));
    assert_eq!(
        shown("reply_refunded"),
        (json!({ "template": "refunded" }), None)
    );
    assert_eq!(
        shown("escalated"),
        (
            json!({ "outcome": "approval_overdue", "escalated": true }),
            None
        )
    );
}
