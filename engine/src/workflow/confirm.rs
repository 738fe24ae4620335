//! The confirmation rule of an `irreversible` workflow, checked at publish.
//!
//! A workflow that blocks a card, closes an account or moves money acts only once the
//! customer said yes or a person decided: every path from `start` to an acting `call` node
//! (any `call` not marked `effect: read` or `effect: reversible`) passes either
//! - a decision branch whose `when` calls `confirmed(...)` without negating it — the
//!   customer's clear yes to an `ask` node's question (`confirmed(case.answers.<ask>)`), or
//! - a reviewer's decision on a `human` node (an escalation edge is not a decision).
//!
//! A path around both is an error naming the path, like the consent rule of triggered
//! workflows. The rule reads the graph, not the scripts' meaning: `!confirmed(...)` is no
//! confirmation, and a rule script that sets `case.confirmed = true` is not one either.

use std::sync::LazyLock;

use petgraph::graph::{DiGraph, NodeIndex};

use super::compiler::Compiler;
use super::guard::{Call, unguarded_path};
use super::nodes::Effect;
use super::{Code, Edge, Node, Step};

/// A decision condition that reads a confirmation: it calls `confirmed(` and never negates it.
fn is_confirmation(condition: &str) -> bool {
    static CALL: LazyLock<Call> = LazyLock::new(|| Call::new("confirmed"));
    CALL.unnegated_in(condition)
}

/// Whether following `edge` means the customer confirmed or a reviewer decided.
fn confirms(edge: &Edge) -> bool {
    match edge {
        Edge::When { source, .. } => is_confirmation(source),
        Edge::Decision(_) => true,
        _ => false,
    }
}

/// The shortest path from `start` to an irreversibly acting `call` that passes no
/// confirmation, as node ids, if there is one.
pub(super) fn unconfirmed_path(
    graph: &DiGraph<Node, Edge>,
    start: NodeIndex,
) -> Option<Vec<String>> {
    unguarded_path(
        graph,
        start,
        |node| {
            matches!(
                node.step,
                Step::Call {
                    effect: Effect::Irreversible,
                    ..
                }
            )
        },
        confirms,
    )
}

impl Compiler<'_> {
    /// The confirmation rule of an irreversible workflow, reported at the acting node.
    pub(super) fn check_confirmation(&mut self, graph: &DiGraph<Node, Edge>, start: NodeIndex) {
        let Some(path) = unconfirmed_path(graph, start) else {
            return;
        };
        let last = path.last().cloned().unwrap_or_default();
        let (line, what) = graph
            .node_indices()
            .find(|&ix| graph[ix].id == last)
            .map(|ix| {
                let what = match &graph[ix].step {
                    Step::Call {
                        connector,
                        operation,
                        ..
                    } => format!("{connector}.{operation}"),
                    _ => String::new(),
                };
                (graph[ix].line, what)
            })
            .unwrap_or((1, String::new()));
        let msg = format!(
            "an irreversible workflow may call `{what}` only after the customer confirmed or a reviewer decided, but the path {} reaches `{last}` without either; ask the customer (an `ask` node) and branch on `when: confirmed(case.answers.<ask node>)`, hand the decision to a `human` node, or mark a call that only looks up `effect: read` (one that can be undone `effect: reversible`)",
            path.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" → ")
        );
        self.diag(Code::NoConfirmation, line, msg).node = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_calls_confirmed_and_does_not_negate_it() {
        assert!(is_confirmation("confirmed(case.answers.confirm_block)"));
        assert!(is_confirmation(
            "confirmed(case.answers?.confirm) && case.amount < 100"
        ));
        assert!(!is_confirmation("!confirmed(case.answers.confirm)"));
        assert!(!is_confirmation("not confirmed(case.answers.confirm)"));
        assert!(!is_confirmation("declined(case.answers.confirm)"));
        assert!(!is_confirmation("case.confirmed == true"));
    }
}
