//! Publish rules of one shape: every path from `start` to a node of some kind must pass a
//! guard edge. The consent rule of triggered workflows (`triggers.rs`: a `reply` or `ask`
//! only after a `consent(...)` branch) and the confirmation rule of irreversible workflows
//! (`confirm.rs`: an acting `call` only after a `confirmed(...)` branch or a reviewer's
//! decision) both ask for the shortest path around their guard, to name it in the error.
//! The rules read the graph and the conditions' text, not their meaning.

use std::collections::{HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use regex::Regex;

use super::{Edge, Node};

/// The shortest path from `start` to a node `target` accepts that follows no edge `guard`
/// accepts, as node ids, if there is one.
pub(super) fn unguarded_path(
    graph: &DiGraph<Node, Edge>,
    start: NodeIndex,
    target: impl Fn(&Node) -> bool,
    guard: impl Fn(&Edge) -> bool,
) -> Option<Vec<String>> {
    let mut parent: HashMap<NodeIndex, Option<NodeIndex>> = HashMap::from([(start, None)]);
    let mut queue = VecDeque::from([start]);
    while let Some(ix) = queue.pop_front() {
        if target(&graph[ix]) {
            let mut path = vec![graph[ix].id.clone()];
            let mut at = parent[&ix];
            while let Some(p) = at {
                path.push(graph[p].id.clone());
                at = parent[&p];
            }
            path.reverse();
            return Some(path);
        }
        for e in graph.edges(ix) {
            if guard(e.weight()) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = parent.entry(e.target()) {
                v.insert(Some(ix));
                queue.push_back(e.target());
            }
        }
    }
    None
}

/// The two patterns of a condition that calls `function(` without negating it (`!f(`,
/// `not f(`, `!(f(` do not count).
pub(super) struct Call {
    call: Regex,
    negated: Regex,
}

impl Call {
    pub(super) fn new(function: &str) -> Call {
        Call {
            call: Regex::new(&format!(r"\b{function}\s*\(")).expect("pattern compiles"),
            negated: Regex::new(&format!(r"(!|\bnot\b)\s*\(?\s*{function}\s*\("))
                .expect("pattern compiles"),
        }
    }

    /// Whether `condition` calls the function and never negates it.
    pub(super) fn unnegated_in(&self, condition: &str) -> bool {
        self.call.is_match(condition) && !self.negated.is_match(condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negated_call_is_no_guard() {
        let c = Call::new("consent");
        assert!(c.unnegated_in(r#"consent("marketing") && contacts("marketing", 30) < 3"#));
        assert!(!c.unnegated_in(r#"!consent("marketing")"#));
        assert!(!c.unnegated_in(r#"not (consent("marketing"))"#));
        assert!(!c.unnegated_in(r#"contacts("marketing", 30) < 3"#));
    }
}
