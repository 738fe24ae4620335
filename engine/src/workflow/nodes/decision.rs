//! `decision`: outgoing edges carry rhai conditions, tried in order; `otherwise` is taken
//! when none holds. The conditions live on the edges ([`Edge::When`]), so the step has no
//! data of its own.

use serde_json::{Value, json};

use super::{Build, Code, Edge, Kind, NoDetails, Outcome, Run, Step, StepDetails};
use crate::workflow::def::BranchDef;
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "decision",
    fields: &["branches", "otherwise"],
    compile,
    waits: false,
    ends: false,
    mermaid: ("{", "}"),
    dot: "diamond",
};

/// Every branch condition compiles, and there is an `otherwise`.
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    if def.otherwise.is_none() {
        let msg = "a `decision` node needs `otherwise`, the edge taken when no branch matches";
        b.problem(Code::MissingOtherwise, line_of(b.id), msg);
    }
    let branches: &[BranchDef] = def.branches.as_deref().unwrap_or_default();
    if branches.is_empty() {
        b.missing("branches");
    }
    let mut ok = true;
    for (order, branch) in branches.iter().enumerate() {
        match b.expression(&branch.when) {
            Some(condition) => b.edges.push((
                branch.to.clone(),
                Edge::When {
                    order,
                    condition,
                    source: branch.when.to_string(),
                },
            )),
            None => {
                ok = false;
                b.c.edges_incomplete = true;
            }
        }
    }
    b.edges.push((def.otherwise.clone()?, Edge::Otherwise));
    ok.then_some(Step::Decision)
}

/// The first branch whose condition holds, else `otherwise`.
pub(super) fn run(run: &mut Run<'_>) -> (Outcome, Option<String>) {
    let (wf, node, rules) = (run.wf, run.node, run.rules);
    // Read-only: `Step::may_change_data` counts on it.
    let (ctx, data) = run.sandbox();
    let branches: Vec<_> = wf
        .edges_from(&node.id)
        .into_iter()
        .filter_map(|(edge, to)| match edge {
            Edge::When {
                order, condition, ..
            } => Some((edge, to, *order, condition)),
            _ => None,
        })
        .collect();
    let conditions: Vec<_> = branches.iter().map(|b| &**b.3).collect();
    match rules.first_holding(&conditions, &ctx, data) {
        Ok(Some(i)) => {
            let (edge, to, order, condition) = &branches[i];
            let outcome = Outcome::Go {
                edge: edge.label(),
                to: to.id.clone(),
                detail: json!({ "branch": order }),
            };
            (outcome, Some(condition.digest.clone()))
        }
        Ok(None) => (run.next(Edge::Otherwise, Value::Null), None),
        Err((i, e)) => (
            Outcome::script_failed(e),
            Some(branches[i].3.digest.clone()),
        ),
    }
}

pub(super) fn label() -> String {
    "decision".into()
}

/// The conditions are shown on the edges.
pub(super) fn details() -> StepDetails {
    StepDetails::None(NoDetails {})
}
