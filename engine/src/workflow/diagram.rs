//! Diagrams of a compiled workflow: Mermaid for docs and the console, Graphviz dot.

use std::fmt::Write as _;

use super::{Edge, Workflow};

/// Diagram output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mermaid" => Ok(Format::Mermaid),
            "dot" => Ok(Format::Dot),
            other => Err(format!(
                "unknown diagram format `{other}`, expected mermaid or dot"
            )),
        }
    }
}

/// The start marker's id in Mermaid output; node ids never begin with `_`.
const START: &str = "__start__";

/// A node id as Mermaid can take it: ids that are Mermaid keywords get a prefix.
fn mermaid_id(id: &str) -> String {
    const RESERVED: [&str; 8] = [
        "end",
        "graph",
        "subgraph",
        "flowchart",
        "style",
        "class",
        "classDef",
        "click",
    ];
    if RESERVED.contains(&id) || id == START {
        format!("node_{id}")
    } else {
        id.to_string()
    }
}

impl Workflow {
    /// The workflow graph as a diagram; node kinds have distinct shapes, edges their conditions.
    pub fn diagram(&self, format: Format) -> String {
        match format {
            Format::Mermaid => self.mermaid(),
            Format::Dot => self.dot(),
        }
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for n in self.nodes() {
            let label = format!("{}<br/><i>{}</i>", n.id, n.step.label());
            let label = label.replace('"', "#quot;");
            let (open, close) = n.step.kind_of().mermaid;
            let _ = writeln!(out, "    {}{open}\"{label}\"{close}", mermaid_id(&n.id));
        }
        let _ = writeln!(out, "    {START}(( )) --> {}", mermaid_id(&self.start().id));
        for n in self.nodes() {
            for (edge, to) in self.edges_from(&n.id) {
                let label = edge_label(edge).replace('"', "#quot;");
                let arrow = if matches!(edge, Edge::Failure | Edge::Escalation | Edge::Timeout) {
                    "-.->"
                } else {
                    "-->"
                };
                let (from, to) = (mermaid_id(&n.id), mermaid_id(&to.id));
                if label.is_empty() {
                    let _ = writeln!(out, "    {from} {arrow} {to}");
                } else {
                    let _ = writeln!(out, "    {from} {arrow}|\"{label}\"| {to}");
                }
            }
        }
        out
    }

    fn dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=TB;\n    node [fontname=\"sans-serif\"];\n",
            self.id
        );
        for n in self.nodes() {
            let shape = n.step.kind_of().dot;
            let label = format!("{}\\n{}", n.id, n.step.label()).replace('"', "\\\"");
            let _ = writeln!(out, "    \"{}\" [shape={shape}, label=\"{label}\"];", n.id);
        }
        for n in self.nodes() {
            for (edge, to) in self.edges_from(&n.id) {
                let style = if matches!(edge, Edge::Failure | Edge::Escalation | Edge::Timeout) {
                    ", style=dashed"
                } else {
                    ""
                };
                let label = edge_label(edge).replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\" [label=\"{label}\"{style}];",
                    n.id, to.id
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

fn edge_label(edge: &Edge) -> String {
    match edge {
        Edge::Next => String::new(),
        Edge::When { source, .. } => source.clone(),
        Edge::Otherwise => "otherwise".into(),
        Edge::Failure => "failure".into(),
        Edge::Decision(d) => d.clone(),
        Edge::Escalation => "SLA passed".into(),
        Edge::Answer => "answered".into(),
        Edge::Timeout => "no answer".into(),
    }
}
