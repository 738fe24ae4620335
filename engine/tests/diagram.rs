//! Edge cases of compilation and drawing: node ids that are Mermaid keywords or collide with
//! the start marker; an `end` node with a bad field is reported once, not as a dead end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Format, compile_dir};

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
