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

struct NoCalls;
impl casegraph_engine::exec::Connector for NoCalls {
    fn call(
        &self,
        _: &casegraph_engine::exec::CallRequest,
    ) -> Result<serde_json::Value, casegraph_engine::exec::CallError> {
        Err(casegraph_engine::exec::CallError {
            retryable: false,
            message: "an answer from the knowledge base calls nothing".into(),
        })
    }
}

/// The request a customer who wants to activate a card wrote, classified as `intent`.
fn activate(
    catalog: &Catalog,
    rules: &Rules,
    intent: &str,
    confidence: f64,
) -> (
    casegraph_engine::pipeline::Route,
    casegraph_engine::pipeline::Start,
) {
    use casegraph_engine::customer::History;
    use casegraph_engine::exec::{Executor, ManualClock};
    use casegraph_engine::pipeline::{Channel, Classification, Pipeline, Request, Subject};
    let clock = ManualClock::new("2026-12-06T12:00:00Z".parse().unwrap());
    let exec = Executor::new(rules, &clock, &NoCalls);
    let mut request = Request::text(Channel::Chat, "How do I activate my new card?");
    request.language = Some("en".into());
    let classification = Classification::new(Some(intent.into()), confidence);
    let subject = Subject {
        request: &request,
        classification: &classification,
        customer: &History::default(),
    };
    let (decision, start) = Pipeline { catalog, rules }
        .start(&exec, "case-1", subject)
        .unwrap();
    (decision.route, start)
}

#[test]
fn an_answer_from_the_knowledge_base_records_which_answer_and_which_version() {
    use casegraph_engine::pipeline::{Route, Start};
    use casegraph_engine::workflow::Risk;
    let rules = Rules::default();
    let catalog = Catalog::load(&shipped(), &rules).unwrap_or_else(|d| panic!("{d}"));
    let (route, start) = activate(&catalog, &rules, "activate_my_card", 0.99);
    let Route::Workflow {
        workflow,
        risk,
        threshold,
        ..
    } = &route
    else {
        panic!("{route:?}");
    };
    assert_eq!(workflow, "answer_question");
    assert_eq!(*risk, Some(Risk::Informational), "{route:?}");
    assert_eq!(*threshold, Some(0.95), "{route:?}");
    let Start::Started {
        case,
        steps,
        workflow,
    } = start
    else {
        panic!("not started");
    };
    let text = &case.reply.as_ref().unwrap().text;
    assert!(text.contains("six-digit code"), "{text}");
    let reply = steps.iter().find(|s| s.kind == "reply").unwrap();
    let knowledge = workflow.knowledge.as_ref().unwrap();
    assert_eq!(reply.detail["template"], "knowledge:activate_my_card");
    assert_eq!(reply.detail["knowledge_version"], knowledge.version);
    assert_eq!(reply.detail["knowledge_digest"], knowledge.digest.as_str());
}

#[test]
fn a_misread_activation_is_not_blocked_below_the_irreversible_threshold() {
    use casegraph_engine::pipeline::{Route, Start};
    let rules = Rules::default();
    let catalog = Catalog::load(&shipped(), &rules).unwrap_or_else(|d| panic!("{d}"));
    // Read as lost or stolen below the irreversible threshold: a person looks first.
    let (route, start) = activate(&catalog, &rules, "lost_or_stolen_card", 0.89);
    assert!(
        matches!(&route, Route::Queue { queue, .. } if queue == "triage"),
        "{route:?}"
    );
    assert!(matches!(start, Start::Queued { .. }));
    // Sure enough for an irreversible workflow, the decision says so.
    let (route, _) = activate(&catalog, &rules, "lost_or_stolen_card", 0.99);
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["risk"], "irreversible", "{json}");
    assert_eq!(json["threshold"], 0.9, "{json}");
}

#[test]
fn every_banking77_intent_is_served_or_goes_to_a_person_by_choice() {
    let rules = Rules::default();
    let catalog = Catalog::load(&shipped(), &rules).unwrap_or_else(|d| panic!("{d}"));
    // The intents that need a person: disputes and a compromised card; `oos` is the
    // model's out-of-scope label, which routing sends to triage.
    let by_person = [
        "oos",
        "cash_withdrawal_not_recognised",
        "compromised_card",
        "direct_debit_payment_not_recognised",
        "transaction_charged_twice",
        "wrong_amount_of_cash_received",
    ];
    // The shipped intent model's labels are the BANKING77 intents.
    let labels = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en/labels.json"),
    )
    .unwrap();
    let labels: Vec<String> = serde_json::from_str(&labels).unwrap();
    let unserved: Vec<&String> = labels
        .iter()
        .filter(|l| catalog.for_intent(l).is_none() && !by_person.contains(&l.as_str()))
        .collect();
    assert!(
        unserved.is_empty(),
        "intents with neither workflow nor reason: {unserved:?}"
    );
}

#[test]
fn the_durable_benchmark_workflows_validate_and_their_fixtures_pass() {
    let rules = Rules::default();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../loadgen/durable/workflows");
    let catalog = Catalog::load(&dir, &rules).unwrap_or_else(|d| panic!("{d}"));
    let outcomes = fixture::run_all(&catalog, &rules);
    let failed: Vec<&fixture::Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        outcomes.len(),
        5,
        "three workflow fixtures and two routing ones"
    );
}
