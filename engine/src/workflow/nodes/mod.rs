//! The node kinds, one file each. A kind's file holds all there is to know about it: the
//! fields it accepts in `workflow.yaml` and the checks it makes when it compiles
//! (`compile`), what it does when a case reaches it (`run`), how a diagram draws it (its
//! [`Kind`] and `label`) and what the console shows of it (`details`, `script`).
//!
//! This file is the registry, and the one other place a new kind touches: a `mod` line, the
//! kind's [`Step`] variant (its compiled data), its entry in [`KINDS`], and one arm in each
//! match of `impl Step` below; the compiler names every arm that is missing. A kind that
//! brings YAML fields no kind had before also declares them on [`super::def::NodeDef`] (the
//! format is read in one piece, so one run reports every problem) and in
//! `workflow.schema.json`.
//!
//! A kind's file uses the workflow's graph and the compiler's tools (`super::super`) and
//! the case (`crate::case`); it never reaches into the executor (`crate::exec`), which sits
//! above and calls [`Step::run`] once per node execution.

mod ask;
mod call;
mod checkpoint;
mod decision;
mod end;
mod human;
mod reply;
mod rule;
mod wait;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use marked_yaml::Spanned;
use serde::Serialize;
use serde_json::Value;

use super::compiler::Compiler;
use super::def::NodeDef;
use super::{Code, Diagnostic, Edge, Node, Workflow};
use crate::case::{Case, Failure, Waiting};
use crate::rules::{Context, Rules, Script};
use crate::yaml::line_of;

pub use ask::AskDetails;
pub use call::{CallDetails, CallError, CallRequest, Connector, Effect};
pub use checkpoint::CheckpointDetails;
pub use end::EndDetails;
pub use human::HumanDetails;
pub use reply::ReplyDetails;
pub use wait::{WaitDetails, WaitFor, WaitUntilDetails};

/// What a node does when the executor reaches it: each kind's compiled data.
#[derive(Debug)]
pub enum Step {
    Rule {
        script: Arc<Script>,
    },
    /// Conditions live on the outgoing [`Edge::When`] edges.
    Decision,
    Call {
        connector: String,
        operation: String,
        payload: Option<Arc<Script>>,
        result: Option<String>,
        max_attempts: u32,
        backoff: Duration,
        /// What the call does to the back office (`effect`; irreversible unless said).
        effect: Effect,
    },
    Human {
        queue: String,
        task: Option<String>,
        sla: Option<Duration>,
        /// Decisions a reviewer may take, in declaration order.
        decisions: Vec<String>,
    },
    Wait(WaitFor),
    Checkpoint {
        name: String,
        assert: Arc<Script>,
        evidence: Vec<String>,
    },
    Reply {
        template: String,
    },
    /// A question to the customer; the answer and the timeout are edges.
    Ask {
        template: String,
        timeout: Duration,
    },
    End {
        outcome: String,
        escalated: bool,
    },
}

/// A node's settings, by kind; `{}` for rules and decisions. Each shape has its own fields
/// and no others, so exactly one matches.
// The shapes live in their kind's file. A doc comment on one becomes its description in
// `openapi.json`, so what they leave out (scripts, see `Step::script`) is said on the
// kind's `details` function instead.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum StepDetails {
    Call(CallDetails),
    Human(HumanDetails),
    Wait(WaitDetails),
    WaitUntil(WaitUntilDetails),
    Checkpoint(CheckpointDetails),
    Reply(ReplyDetails),
    Ask(AskDetails),
    End(EndDetails),
    None(NoDetails),
}

// The details of a kind that shows none (a rule's script is its `script`, a decision's
// conditions are on its edges).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoDetails {}

/// What is known of a kind by its name alone: how a node of it is read, drawn and checked.
#[derive(Debug)]
pub struct Kind {
    /// As written in `workflow.yaml`.
    pub name: &'static str,
    /// The fields a node of this kind may carry besides `kind`, `description`, `max_visits`.
    pub fields: &'static [&'static str],
    /// Checks a node's fields and compiles its scripts; `None` once it reported a problem.
    compile: fn(&mut Build<'_, '_>) -> Option<Step>,
    /// The case stops here until something happens (a reviewer, a timer), so a cycle
    /// through the node is bounded.
    pub waits: bool,
    /// The case ends here; every node must be able to reach one.
    pub ends: bool,
    /// Mermaid's brackets around the node's label.
    pub(super) mermaid: (&'static str, &'static str),
    /// Graphviz's shape of the node.
    pub(super) dot: &'static str,
}

/// Every kind, in the order error messages and the JSON Schema list them.
pub const KINDS: &[&Kind] = &[
    &rule::KIND,
    &decision::KIND,
    &call::KIND,
    &human::KIND,
    &wait::KIND,
    &checkpoint::KIND,
    &reply::KIND,
    &ask::KIND,
    &end::KIND,
];

/// Every kind's name, in the order of [`KINDS`].
pub const NODE_KINDS: &[&str] = &NAMES;

const NAMES: [&str; KINDS.len()] = {
    let mut names = [""; KINDS.len()];
    let mut i = 0;
    while i < KINDS.len() {
        names[i] = KINDS[i].name;
        i += 1;
    }
    names
};

/// The kind of that name.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// The fields a node of the kind may carry besides `kind`, `description`, `max_visits`.
pub fn allowed_fields(kind_name: &str) -> Option<&'static [&'static str]> {
    kind(kind_name).map(|k| k.fields)
}

impl Step {
    /// The kind's entry in the registry.
    pub fn kind_of(&self) -> &'static Kind {
        match self {
            Step::Rule { .. } => &rule::KIND,
            Step::Decision => &decision::KIND,
            Step::Call { .. } => &call::KIND,
            Step::Human { .. } => &human::KIND,
            Step::Wait(_) => &wait::KIND,
            Step::Checkpoint { .. } => &checkpoint::KIND,
            Step::Reply { .. } => &reply::KIND,
            Step::Ask { .. } => &ask::KIND,
            Step::End { .. } => &end::KIND,
        }
    }

    /// The node kind as written in `workflow.yaml`.
    pub fn kind(&self) -> &'static str {
        self.kind_of().name
    }

    /// Executes the node for the case in `run`; returns what it decided and the digest of
    /// the script or expression that ran, if one did.
    pub(crate) fn run(&self, run: &mut Run<'_>) -> (Outcome, Option<String>) {
        match self {
            Step::Rule { script } => rule::run(run, script),
            Step::Decision => decision::run(run),
            Step::Call {
                connector,
                operation,
                payload,
                result,
                max_attempts,
                backoff,
                effect,
            } => {
                let call = call::Call {
                    connector,
                    operation,
                    payload: payload.as_ref(),
                    result: result.as_ref(),
                    max_attempts: *max_attempts,
                    backoff: *backoff,
                    effect: *effect,
                };
                call.run(run)
            }
            Step::Human {
                queue,
                task,
                sla,
                decisions,
            } => human::run(run, queue, task, *sla, decisions),
            Step::Wait(wait_for) => wait::run(run, wait_for),
            Step::Checkpoint {
                name,
                assert,
                evidence,
            } => checkpoint::run(run, name, assert, evidence),
            Step::Reply { template } => reply::run(run, template),
            Step::Ask { template, timeout } => ask::run(run, template, *timeout),
            Step::End { outcome, escalated } => end::run(outcome, *escalated),
        }
    }

    /// Whether running a node of this kind may change the case data. A decision only reads
    /// it (its conditions get `&Value`) and an end does not see it, so their steps keep
    /// their input digest as their output digest instead of serializing the data again.
    pub(crate) fn may_change_data(&self) -> bool {
        !matches!(self, Step::Decision | Step::End { .. })
    }

    /// The second line of the node's box in a diagram.
    pub(super) fn label(&self) -> String {
        match self {
            Step::Rule { script } => rule::label(script),
            Step::Decision => decision::label(),
            Step::Call {
                connector,
                operation,
                ..
            } => call::label(connector, operation),
            Step::Human { queue, .. } => human::label(queue),
            Step::Wait(_) => wait::label(),
            Step::Checkpoint { name, .. } => checkpoint::label(name),
            Step::Reply { template } => reply::label(template),
            Step::Ask { template, .. } => ask::label(template),
            Step::End { outcome, .. } => end::label(outcome),
        }
    }

    /// The node's settings as the console shows them: what it calls, asks, waits for or
    /// ends with; never a script's source (see [`Step::script`]).
    pub fn details(&self) -> StepDetails {
        match self {
            Step::Rule { .. } => rule::details(),
            Step::Decision => decision::details(),
            Step::Call {
                connector,
                operation,
                result,
                max_attempts,
                backoff,
                ..
            } => call::details(connector, operation, result, *max_attempts, *backoff),
            Step::Human {
                queue,
                task,
                sla,
                decisions,
            } => human::details(queue, task, *sla, decisions),
            Step::Wait(wait_for) => wait::details(wait_for),
            Step::Checkpoint { name, evidence, .. } => checkpoint::details(name, evidence),
            Step::Reply { template } => reply::details(template),
            Step::Ask { template, timeout } => ask::details(template, *timeout),
            Step::End { outcome, escalated } => end::details(outcome, *escalated),
        }
    }

    /// The script or expression the node itself runs, if any; a decision's conditions are
    /// on its edges.
    pub fn script(&self) -> Option<&Script> {
        match self {
            Step::Rule { script } => Some(script),
            Step::Call { payload, .. } => payload.as_deref(),
            Step::Wait(WaitFor::Until(script)) => Some(script),
            Step::Checkpoint { assert, .. } => Some(assert),
            Step::Decision
            | Step::Human { .. }
            | Step::Wait(WaitFor::Duration(_))
            | Step::Reply { .. }
            | Step::Ask { .. }
            | Step::End { .. } => None,
        }
    }

    /// What a node whose fields did not check stands in as, so it keeps its place in the
    /// graph: an `end` stays terminal (else its predecessors would be reported as dead
    /// ends), any other kind becomes a decision with the edges that were read.
    pub(super) fn stand_in(kind: &str) -> Step {
        if kind == end::KIND.name {
            Step::End {
                outcome: String::new(),
                escalated: false,
            }
        } else {
            Step::Decision
        }
    }
}

/// Checks one node's fields for its kind and compiles it; its edges go to `edges` as
/// (target, edge), for the compiler to resolve once every node is read.
pub(super) fn compile(
    c: &mut Compiler<'_>,
    id: &Spanned<String>,
    def: &NodeDef,
    templates: &HashSet<&str>,
    edges: &mut Vec<(Spanned<String>, Edge)>,
) -> Option<Step> {
    let node = id.as_str();
    let name = def.kind.as_str();
    let Some(kind) = kind(name) else {
        let msg = format!(
            "unknown node kind `{name}`, expected one of: {}",
            NODE_KINDS.join(", ")
        );
        c.diag(Code::InvalidValue, line_of(&def.kind), msg).node = Some(node.into());
        c.edges_incomplete = true;
        return None;
    };
    for (field, (line, column)) in def.present_fields() {
        if !kind.fields.contains(&field) {
            let msg = format!(
                "field `{field}` does not belong on a `{name}` node (allowed: {})",
                kind.fields.join(", ")
            );
            let d = c.diag(Code::UnknownField, line, msg);
            d.column = column;
            d.node = Some(node.into());
        }
    }
    (kind.compile)(&mut Build {
        c,
        id,
        def,
        templates,
        edges,
    })
}

/// One node's compilation: the compiler it reports to, the node as written, and the edges
/// it declares.
struct Build<'a, 'r> {
    c: &'a mut Compiler<'r>,
    id: &'a Spanned<String>,
    def: &'a NodeDef,
    /// The names of the reply templates under `replies`.
    templates: &'a HashSet<&'a str>,
    edges: &'a mut Vec<(Spanned<String>, Edge)>,
}

impl Build<'_, '_> {
    /// Reports a problem of this node.
    fn problem(&mut self, code: Code, line: usize, msg: impl Into<String>) -> &mut Diagnostic {
        let d = self.c.diag(code, line, msg);
        d.node = Some(self.id.to_string());
        d
    }

    /// Reports that a field the kind needs is missing.
    fn missing(&mut self, field: &str) {
        let msg = format!("a `{}` node needs `{field}`", self.def.kind.as_str());
        self.problem(Code::MissingField, line_of(self.id), msg);
    }

    /// The field's value, or a report that it is missing.
    fn required<'v, T>(&mut self, field: &str, value: &'v Option<T>) -> Option<&'v T> {
        if value.is_none() {
            self.missing(field);
        }
        value.as_ref()
    }

    /// Declares `edge` to the node `target` names, if it names one.
    fn edge(&mut self, target: &Option<Spanned<String>>, edge: Edge) {
        if let Some(target) = target {
            self.edges.push((target.clone(), edge));
        }
    }

    /// The `next` edge of a kind that goes on to one node: required, then declared.
    fn next(&mut self) {
        let def = self.def;
        self.required("next", &def.next);
        self.edge(&def.next, Edge::Next);
    }

    fn expression(&mut self, source: &Spanned<String>) -> Option<Arc<Script>> {
        self.c.expression(source, self.id.as_str())
    }

    fn duration(&mut self, text: &Spanned<String>) -> Option<Duration> {
        self.c.duration(text, self.id.as_str())
    }
}

/// What one node execution decided.
pub(crate) enum Outcome {
    /// Take this edge to this node.
    Go {
        edge: String,
        to: String,
        detail: Value,
    },
    /// Suspend; the case waits.
    Wait { waiting: Waiting, detail: Value },
    /// The case reached an end.
    End { outcome: String, escalated: bool },
    /// The case fails; `detail` goes to the audit trail, so it holds no personal data.
    Fail { failure: Failure, detail: Value },
}

impl Outcome {
    /// A script or condition failed.
    fn script_failed(e: crate::rules::Error) -> Outcome {
        Outcome::Fail {
            failure: Failure::script(&e),
            detail: Value::Null,
        }
    }
}

/// One node execution: the case at the node, and what a kind may use to move it on.
pub(crate) struct Run<'a> {
    pub wf: &'a Workflow,
    pub node: &'a Node,
    pub case: &'a mut Case,
    pub rules: &'a Rules,
    pub connector: &'a dyn Connector,
    /// The clock's reading for this step.
    pub now: Timestamp,
    /// Which attempt of a call this is: 1, or the one a backoff timer brought back.
    pub attempt: u32,
}

impl Run<'_> {
    /// Where a script runs (for its errors and `now()`), and the case data it reads.
    fn sandbox(&self) -> (Context<'_>, &Value) {
        let ctx = Context {
            case_id: &self.case.id,
            node: &self.node.id,
            now: self.now,
        };
        (ctx, &self.case.data)
    }

    /// [`Run::sandbox`] for a script that may change the case data (a rule's).
    fn sandbox_mut(&mut self) -> (Context<'_>, &mut Value) {
        let ctx = Context {
            case_id: &self.case.id,
            node: &self.node.id,
            now: self.now,
        };
        (ctx, &mut self.case.data)
    }

    /// Takes the node's `edge` on, or fails the case when the node has none.
    fn next(&self, edge: Edge, detail: Value) -> Outcome {
        match self.wf.follow(&self.node.id, &edge) {
            Some(to) => Outcome::Go {
                edge: edge.label(),
                to,
                detail,
            },
            None => Outcome::Fail {
                failure: Failure::public(format!(
                    "node `{}` has no `{}` edge",
                    self.node.id,
                    edge.label()
                )),
                detail: Value::Null,
            },
        }
    }

    /// How often the case has entered this node, 1 the first time: it keeps task ids and
    /// idempotency keys apart across a cycle.
    fn visit(&self) -> u32 {
        self.case.visits.get(&self.node.id).copied().unwrap_or(1)
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_and_carries_the_fields_it_checks() {
        for k in KINDS {
            assert_eq!(kind(k.name).map(|found| found.name), Some(k.name));
            assert!(!k.fields.is_empty(), "`{}` lists its fields", k.name);
        }
        assert!(kind("zebra").is_none());
    }

    #[test]
    fn a_diagram_tells_every_kind_apart() {
        let mermaid: HashSet<_> = KINDS.iter().map(|k| k.mermaid).collect();
        let dot: HashSet<_> = KINDS.iter().map(|k| k.dot).collect();
        assert_eq!(mermaid.len(), KINDS.len(), "Mermaid brackets");
        assert_eq!(dot.len(), KINDS.len(), "Graphviz shapes");
    }

    #[test]
    fn only_the_kinds_that_suspend_bound_a_cycle_and_only_end_ends() {
        let names = |f: fn(&Kind) -> bool| -> Vec<&str> {
            KINDS.iter().filter(|k| f(k)).map(|k| k.name).collect()
        };
        assert_eq!(names(|k| k.waits), ["human", "wait", "ask"]);
        assert_eq!(names(|k| k.ends), ["end"]);
    }
}
