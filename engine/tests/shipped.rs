//! Golden tests: the shipped workflows compile and every fixture they carry passes.
//! Adding a workflow or a fixture adds coverage here without new Rust.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use casegraph_engine::fixture;
use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::Catalog;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

#[test]
fn shipped_workflows_validate() {
    let rules = Rules::default();
    if let Err(diags) = Catalog::load(&shipped(), &rules) {
        panic!("shipped workflows do not validate:\n{diags}");
    }
}

#[test]
fn shipped_fixtures_pass() {
    let rules = Rules::default();
    let catalog = Catalog::load(&shipped(), &rules).unwrap_or_else(|d| panic!("{d}"));
    let outcomes = fixture::run_all(&catalog, &rules);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| {
            format!(
                "{} ({}):\n  {}",
                o.name,
                o.file.display(),
                o.failures.join("\n  ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} fixture(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    // Every shipped workflow carries at least three fixtures, the routing policy some too.
    for wf in catalog.workflows() {
        let n = outcomes.iter().filter(|o| o.suite == wf.id).count();
        assert!(
            n >= 3,
            "workflow `{}` has {n} fixtures; at least 3 are required",
            wf.id
        );
    }
    assert!(
        outcomes.iter().any(|o| o.suite == "routing"),
        "the routing policy has no fixtures"
    );
}

#[test]
fn shipped_workflows_cover_every_node_kind() {
    let rules = Rules::default();
    let catalog = Catalog::load(&shipped(), &rules).unwrap_or_else(|d| panic!("{d}"));
    let kinds: std::collections::BTreeSet<&str> = catalog
        .workflows()
        .flat_map(|w| w.nodes().map(|n| n.step.kind()))
        .collect();
    for kind in [
        "rule",
        "decision",
        "call",
        "human",
        "wait",
        "checkpoint",
        "reply",
        "end",
    ] {
        assert!(
            kinds.contains(kind),
            "no shipped workflow uses a `{kind}` node"
        );
    }
}
