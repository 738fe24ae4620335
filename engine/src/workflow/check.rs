//! Whole-graph checks of a compiled workflow: every node reachable from `start`, every node
//! able to reach an `end`, and no cycle that could spin without bound.

use std::collections::HashSet;
use std::path::Path;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef, Reversed};

use super::{Code, Diagnostic, Edge, Node};

/// Reachability, dead ends and unbounded cycles, on the edges that resolved.
pub(super) fn graph(graph: &DiGraph<Node, Edge>, start: NodeIndex, file: &Path) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut diag = |code: Code, line: usize, msg: String, node: &str| {
        diags.push(Diagnostic::new(code, file, line, msg).node(node));
    };
    reachability(graph, start, &mut diag);
    unbounded_cycles(graph, &mut diag);
    diags
}

/// Every node is reachable from `start` and can reach an `end`.
fn reachability(
    graph: &DiGraph<Node, Edge>,
    start: NodeIndex,
    diag: &mut impl FnMut(Code, usize, String, &str),
) {
    let mut reachable = HashSet::new();
    let mut dfs = Dfs::new(graph, start);
    while let Some(ix) = dfs.next(graph) {
        reachable.insert(ix);
    }
    let mut reaches_end = HashSet::new();
    let reversed = Reversed(graph);
    for end in graph
        .node_indices()
        .filter(|&ix| graph[ix].step.kind_of().ends)
    {
        let mut dfs = Dfs::new(reversed, end);
        while let Some(ix) = dfs.next(reversed) {
            reaches_end.insert(ix);
        }
    }
    for ix in graph.node_indices() {
        let node = &graph[ix];
        if !reachable.contains(&ix) {
            let msg = "no path from `start` reaches this node";
            diag(Code::Unreachable, node.line, msg.to_string(), &node.id);
        } else if !reaches_end.contains(&ix) {
            let msg = "no path leads from this node to an `end` node";
            diag(Code::DeadEnd, node.line, msg.to_string(), &node.id);
        }
    }
}

/// No cycle can spin without bound. A cycle is bounded when it passes a node that waits
/// (human, wait) or carries a visit bound: removing those nodes leaves exactly the
/// unbounded cycles.
fn unbounded_cycles(graph: &DiGraph<Node, Edge>, diag: &mut impl FnMut(Code, usize, String, &str)) {
    let bounded = |ix: NodeIndex| {
        let n = &graph[ix];
        n.max_visits.is_some() || n.step.kind_of().waits
    };
    let free = graph.filter_map(
        |ix, n| (!bounded(ix)).then_some(n.id.as_str()),
        |_, _| Some(()),
    );
    for scc in petgraph::algo::tarjan_scc(&free) {
        let is_cycle = scc.len() > 1
            || free
                .edges_directed(scc[0], Direction::Outgoing)
                .any(|e| e.target() == scc[0]);
        if !is_cycle {
            continue;
        }
        let mut ids: Vec<&str> = scc.iter().map(|&ix| free[ix]).collect();
        ids.sort_by_key(|id| graph.node_weights().position(|n| n.id == *id));
        let first = graph
            .node_weights()
            .find(|n| n.id == ids[0])
            .map(|n| n.line)
            .unwrap_or(0);
        let msg = format!(
            "cycle through {} passes no `wait` or `human` node and no node has `max_visits`",
            ids.iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        diag(Code::UnboundedCycle, first, msg, ids[0]);
    }
}
