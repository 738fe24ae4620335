//! `rule`: a rhai script that reads and updates the case data, then goes on to `next`.

use std::sync::Arc;

use serde_json::Value;

use super::{Build, Edge, Kind, NoDetails, Outcome, Run, Step, StepDetails};
use crate::rules::{Origin, Script};

pub(super) const KIND: Kind = Kind {
    name: "rule",
    fields: &["script", "next"],
    compile,
    waits: false,
    ends: false,
    mermaid: ("[", "]"),
    dot: "box",
};

/// `script` names a file of the bundle; it is read into the version's digest and compiled.
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    let node = b.id.as_str();
    b.next();
    let script = b.required("script", &def.script)?;
    let (file, source) = b.c.read_named("script", script, Some(node))?;
    let origin = Origin {
        file,
        line: 1,
        node: Some(node.into()),
    };
    let compiled = b.c.rules.compile(&source, origin);
    let script = b.c.script(compiled)?;
    Some(Step::Rule { script })
}

pub(super) fn run(run: &mut Run<'_>, script: &Arc<Script>) -> (Outcome, Option<String>) {
    let digest = Some(script.digest.clone());
    let rules = run.rules;
    let (ctx, data) = run.sandbox_mut();
    match rules.run(script, &ctx, data) {
        Ok(_) => (run.next(Edge::Next, Value::Null), digest),
        Err(e) => (Outcome::script_failed(e), digest),
    }
}

pub(super) fn label(script: &Script) -> String {
    let file = script
        .origin
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("rule {file}")
}

/// The script is shown on its own (see `Step::script`).
pub(super) fn details() -> StepDetails {
    StepDetails::None(NoDetails {})
}
