//! Property tests of the graph checks: random valid workflows compile; the same workflows
//! with a dead end or an unbounded cycle injected never do, and the problem names it.
//!
//! A random workflow is a chain of `rule` and `decision` nodes (the "spine", so every node
//! is reachable and reaches an `end`), decision branches that skip forward or jump to an
//! `end`, and branches that jump back. Every backward jump is bounded the ways the format
//! allows: the decision carries `max_visits`, or the jump passes a `wait` or a `human` node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::LazyLock;

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Diagnostic, compile_dir};
use proptest::collection::vec;
use proptest::prelude::*;

/// One engine for every case: its AST cache makes the shared scripts compile once.
static RULES: LazyLock<Rules> = LazyLock::new(Rules::default);

const CASES: u32 = 128;

#[derive(Debug, Clone)]
enum Kind {
    Rule {
        next: String,
    },
    Decision {
        branches: Vec<String>,
        otherwise: String,
    },
    Wait {
        next: String,
    },
    Human {
        decisions: Vec<(String, String)>,
    },
    End,
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    kind: Kind,
    max_visits: Option<u32>,
}

impl Node {
    fn new(id: impl Into<String>, kind: Kind) -> Self {
        Node {
            id: id.into(),
            kind,
            max_visits: None,
        }
    }

    /// The edge along the spine: a rule's `next`, a decision's `otherwise`.
    fn spine_mut(&mut self) -> Option<&mut String> {
        match &mut self.kind {
            Kind::Rule { next } | Kind::Wait { next } => Some(next),
            Kind::Decision { otherwise, .. } => Some(otherwise),
            Kind::Human { .. } | Kind::End => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Graph {
    start: String,
    nodes: Vec<Node>,
}

impl Graph {
    fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn yaml(&self) -> String {
        let mut y = format!(
            "id: random\nversion: 1\nintents: [request_refund]\nstart: {}\nnodes:\n",
            self.start
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let bound = n
                .max_visits
                .map(|m| format!(", max_visits: {m}"))
                .unwrap_or_default();
            let body = match &n.kind {
                Kind::Rule { next } => format!("{{kind: rule, script: step.rhai, next: {next}"),
                Kind::Wait { next } => format!("{{kind: wait, duration: 1h, next: {next}"),
                Kind::End => "{kind: end, outcome: done".to_string(),
                Kind::Human { decisions } => {
                    let d: Vec<String> =
                        decisions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!(
                        "{{kind: human, queue: review, decisions: {{{}}}",
                        d.join(", ")
                    )
                }
                Kind::Decision {
                    branches,
                    otherwise,
                } => {
                    let b: Vec<String> = branches
                        .iter()
                        .enumerate()
                        .map(|(k, to)| {
                            format!("{{when: \"case.amount > {}\", to: {to}}}", i * 10 + k)
                        })
                        .collect();
                    format!(
                        "{{kind: decision, branches: [{}], otherwise: {otherwise}",
                        b.join(", ")
                    )
                }
            };
            writeln!(y, "  {}: {body}{bound}}}", n.id).unwrap();
        }
        y
    }

    fn compile(&self) -> Result<(), (String, Vec<Diagnostic>)> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("random");
        std::fs::create_dir(&dir).unwrap();
        let yaml = self.yaml();
        std::fs::write(dir.join("workflow.yaml"), &yaml).unwrap();
        std::fs::write(
            dir.join("step.rhai"),
            "case.steps = (case.steps ?? 0) + 1;\n",
        )
        .unwrap();
        std::fs::write(dir.join("input.schema.json"), r#"{"type": "object"}"#).unwrap();
        compile_dir(&dir, &RULES).map(drop).map_err(|d| (yaml, d))
    }
}

/// A decision branch as drawn: where it goes (forward, an end, back) and, for a backward
/// jump, what bounds the cycle it closes.
#[derive(Debug, Clone)]
struct RawBranch {
    target: u8,
    index: usize,
    bound: u8,
}

#[derive(Debug, Clone)]
struct RawNode {
    decision: bool,
    branches: Vec<RawBranch>,
    /// A visit bound on a node that needs none (harmless, and mixes things up).
    spare_bound: bool,
}

#[derive(Debug, Clone)]
struct Raw {
    nodes: Vec<RawNode>,
    ends: usize,
    /// Rotation of the declaration order: order in the file must not matter.
    rotate: usize,
}

fn raw() -> impl Strategy<Value = Raw> {
    let branch = (0u8..3, any::<usize>(), 0u8..3).prop_map(|(target, index, bound)| RawBranch {
        target,
        index,
        bound,
    });
    let node = (
        any::<bool>(),
        vec(branch, 1..4),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(decision, branches, spare_bound)| RawNode {
            decision,
            branches,
            spare_bound,
        });
    (vec(node, 1..10), 1usize..4, any::<usize>()).prop_map(|(nodes, ends, rotate)| Raw {
        nodes,
        ends,
        rotate,
    })
}

fn inner(i: usize) -> String {
    format!("n{i}")
}

fn end(e: usize) -> String {
    format!("end{e}")
}

/// Builds a valid graph from a draw.
fn build(raw: &Raw) -> Graph {
    let n = raw.nodes.len();
    let spine = |i: usize| if i + 1 < n { inner(i + 1) } else { end(0) };
    let mut nodes = Vec::new();
    let mut extra = Vec::new();
    let mut ends_used = vec![false; raw.ends];
    ends_used[0] = true;
    for (i, r) in raw.nodes.iter().enumerate() {
        let mut max_visits = r.spare_bound.then_some(5);
        let kind = if r.decision {
            let mut branches = Vec::new();
            for (b, br) in r.branches.iter().enumerate() {
                let to = match br.target {
                    0 if i + 1 < n => inner(i + 1 + br.index % (n - i - 1)),
                    0 | 1 => {
                        let e = br.index % raw.ends;
                        ends_used[e] = true;
                        end(e)
                    }
                    _ => {
                        let back = inner(br.index % (i + 1));
                        match br.bound {
                            0 => {
                                max_visits = Some(3);
                                back
                            }
                            1 => {
                                let id = format!("w{i}_{b}");
                                extra.push(Node::new(&id, Kind::Wait { next: back }));
                                id
                            }
                            _ => {
                                let id = format!("h{i}_{b}");
                                let decisions =
                                    vec![("again".into(), back), ("stop".into(), end(0))];
                                extra.push(Node::new(&id, Kind::Human { decisions }));
                                id
                            }
                        }
                    }
                };
                branches.push(to);
            }
            Kind::Decision {
                branches,
                otherwise: spine(i),
            }
        } else {
            Kind::Rule { next: spine(i) }
        };
        nodes.push(Node {
            id: inner(i),
            kind,
            max_visits,
        });
    }
    nodes.extend(extra);
    for (e, used) in ends_used.iter().enumerate() {
        if *used {
            nodes.push(Node::new(end(e), Kind::End));
        }
    }
    let len = nodes.len();
    nodes.rotate_left(raw.rotate % len);
    Graph {
        start: inner(0),
        nodes,
    }
}

/// Sends node `at` into a loop of fresh nodes that never leaves: a dead end. The loop
/// passes a `wait` or carries a visit bound, so the dead end is the only defect there.
fn with_dead_end(mut g: Graph, at: usize, size: usize, waits: bool) -> Graph {
    let at = inner(at);
    let ids: Vec<String> = (0..size).map(|k| format!("trap{k}")).collect();
    let node = g.node_mut(&at);
    match &mut node.kind {
        // A decision keeps its way out and gains a branch into the trap.
        Kind::Decision { branches, .. } => branches.push(ids[0].clone()),
        _ => *node.spine_mut().unwrap() = ids[0].clone(),
    }
    for (k, id) in ids.iter().enumerate() {
        let next = ids[(k + 1) % size].clone();
        let last = k + 1 == size;
        let mut n = if last && waits {
            Node::new(id, Kind::Wait { next })
        } else if k % 2 == 1 {
            Node::new(
                id,
                Kind::Decision {
                    // Into the loop's last node, so every cycle in the trap passes it.
                    branches: vec![ids[size - 1].clone()],
                    otherwise: next,
                },
            )
        } else {
            Node::new(id, Kind::Rule { next })
        };
        if last && !waits {
            n.max_visits = Some(2);
        }
        g.nodes.push(n);
    }
    g
}

/// Puts a decision `spin` after node `at` whose branch jumps back to node `back` (at or
/// before `at`), or, when `back` is `None`, to itself. Every visit bound on the way is
/// removed, so the cycle passes no wait, no human and no bound.
fn with_unbounded_cycle(mut g: Graph, at: usize, back: Option<usize>) -> Graph {
    let target = match back {
        Some(b) => {
            let b = b % (at + 1);
            for k in b..=at {
                g.node_mut(&inner(k)).max_visits = None;
            }
            inner(b)
        }
        None => "spin".to_string(),
    };
    let spine = g.node_mut(&inner(at)).spine_mut().unwrap();
    let after = std::mem::replace(spine, "spin".to_string());
    g.nodes.push(Node::new(
        "spin",
        Kind::Decision {
            branches: vec![target],
            otherwise: after,
        },
    ));
    g
}

fn show(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_valid_graphs_compile(raw in raw()) {
        let g = build(&raw);
        if let Err((yaml, diags)) = g.compile() {
            prop_assert!(false, "valid graph rejected:\n{yaml}\n{}", show(&diags));
        }
    }

    #[test]
    fn a_dead_end_never_compiles(
        raw in raw(),
        at in any::<usize>(),
        size in 1usize..4,
        waits in any::<bool>(),
    ) {
        let g = build(&raw);
        let at = at % raw.nodes.len();
        let g = with_dead_end(g, at, size, waits);
        match g.compile() {
            Ok(()) => prop_assert!(false, "dead end accepted:\n{}", g.yaml()),
            Err((yaml, diags)) => {
                for k in 0..size {
                    let id = format!("trap{k}");
                    prop_assert!(
                        diags.iter().any(|d| d.code.as_str() == "dead_end" && d.node.as_deref() == Some(&id)),
                        "no dead end reported for `{id}`:\n{yaml}\n{}", show(&diags)
                    );
                }
                prop_assert!(
                    !diags.iter().any(|d| d.code.as_str() == "unbounded_cycle"),
                    "the trap is bounded:\n{yaml}\n{}", show(&diags)
                );
            }
        }
    }

    #[test]
    fn an_unbounded_cycle_never_compiles(
        raw in raw(),
        at in any::<usize>(),
        back in proptest::option::of(any::<usize>()),
    ) {
        let g = build(&raw);
        let at = at % raw.nodes.len();
        let g = with_unbounded_cycle(g, at, back);
        match g.compile() {
            Ok(()) => prop_assert!(false, "unbounded cycle accepted:\n{}", g.yaml()),
            Err((yaml, diags)) => prop_assert!(
                diags.iter().any(|d| d.code.as_str() == "unbounded_cycle" && d.message.contains("`spin`")),
                "no unbounded cycle through `spin` reported:\n{yaml}\n{}", show(&diags)
            ),
        }
    }
}
