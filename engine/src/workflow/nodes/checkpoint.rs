//! `checkpoint`: a named audit checkpoint. It asserts a condition over the case and records
//! the digests of the evidence it names; a failed assertion fails the case.

use std::sync::Arc;

use serde_json::{Value, json};

use serde::Serialize;

use super::{Build, Edge, Kind, Outcome, Run, Step, StepDetails};
use crate::case::{Failure, digest, lookup};
use crate::rules::Script;

pub(super) const KIND: Kind = Kind {
    name: "checkpoint",
    fields: &["name", "assert", "evidence", "next"],
    compile,
    waits: false,
    ends: false,
    mermaid: ("{{", "}}"),
    dot: "hexagon",
};

fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    b.next();
    let name = b.required("name", &def.name);
    let assert_source = b.required("assert", &def.assert)?;
    let assert = b.expression(assert_source)?;
    Some(Step::Checkpoint {
        name: name?.to_string(),
        assert,
        evidence: def
            .evidence
            .iter()
            .flatten()
            .map(|e| e.to_string())
            .collect(),
    })
}

/// The evidence is recorded as digests whether the assertion holds or not.
pub(super) fn run(
    run: &mut Run<'_>,
    name: &str,
    assert: &Arc<Script>,
    evidence: &[String],
) -> (Outcome, Option<String>) {
    let digest_of = Some(assert.digest.clone());
    let evidence: serde_json::Map<String, Value> = evidence
        .iter()
        .map(|path| {
            let d = lookup(&run.case.data, path).map(digest);
            (path.clone(), d.map(Value::String).unwrap_or(Value::Null))
        })
        .collect();
    let rules = run.rules;
    let (ctx, data) = run.sandbox();
    match rules.eval_bool(assert, &ctx, data) {
        Ok(true) => {
            let detail = json!({ "checkpoint": name, "passed": true, "evidence": evidence });
            (run.next(Edge::Next, detail), digest_of)
        }
        Ok(false) => {
            let detail = json!({ "checkpoint": name, "passed": false, "evidence": evidence });
            let message = format!("checkpoint `{name}` failed at node `{}`", run.node.id);
            let failure = Failure::public(message);
            (Outcome::Fail { failure, detail }, digest_of)
        }
        Err(e) => (Outcome::script_failed(e), digest_of),
    }
}

pub(super) fn label(name: &str) -> String {
    format!("checkpoint: {name}")
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckpointDetails {
    pub checkpoint: String,
    pub evidence: Vec<String>,
}

/// The assertion is shown on its own (see `Step::script`).
pub(super) fn details(name: &str, evidence: &[String]) -> StepDetails {
    StepDetails::Checkpoint(CheckpointDetails {
        checkpoint: name.to_owned(),
        evidence: evidence.to_vec(),
    })
}
