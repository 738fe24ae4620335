//! Workflows: the definition format (`def`), its compiler to a petgraph graph (`compile`),
//! the node kinds, one module each (`nodes`), diagrams (`diagram`) and the set of workflows
//! a box serves (`Catalog`). The problems it
//! reports ([`crate::diagnostic`]) and the bundle's confined file reads ([`crate::files`])
//! sit below it, so `yaml` and `routing` can use them; both are re-exported here.
//!
//! A [`Workflow`] only exists once it compiled without a single problem, so the executor
//! trusts it: every edge points at a node, every script compiled, every template parses.

mod catalog;
mod check;
mod compile;
mod compiler;
mod confirm;
pub mod def;
mod diagram;
mod guard;
pub mod knowledge;
pub mod nodes;
mod triggers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::rules::Script;

pub use crate::diagnostic::{Code, Diagnostic, Diagnostics};
pub use crate::files;
/// The compiler's limits on a bundle's YAML, for documentation and tests.
pub use crate::yaml::{MAX_BYTES as MAX_YAML_BYTES, MAX_DEPTH};
pub use catalog::Catalog;
pub use compile::compile_dir;
pub use diagram::Format;
pub use knowledge::Knowledge;
pub use nodes::{Step, StepDetails, WaitFor};
pub use triggers::{CONTACTING_KINDS, Due, Schedule, Triggers, is_event_type};

/// A compiled, runnable workflow version.
#[derive(Debug)]
pub struct Workflow {
    pub id: String,
    pub version: u32,
    pub title: Option<String>,
    /// sha256 over every file the workflow consists of; identifies the exact version.
    pub digest: String,
    pub intents: Vec<String>,
    /// Events and the schedule that start the workflow besides its intents.
    pub triggers: Triggers,
    pub languages: Vec<String>,
    /// What a wrong start could do to a customer; routing asks for more confidence the
    /// higher it is.
    pub risk: Risk,
    /// The answers the workflow gives from data, if it declares a knowledge base.
    pub knowledge: Option<Knowledge>,
    /// Upper bound on node executions per case.
    pub max_steps: u32,
    /// The directory the workflow was loaded from.
    pub dir: PathBuf,
    pub(crate) graph: DiGraph<Node, Edge>,
    pub(crate) index: HashMap<String, NodeIndex>,
    pub(crate) start: NodeIndex,
    pub(crate) input_schema: jsonschema::Validator,
    pub(crate) templates: minijinja::Environment<'static>,
    /// The sandbox limits the templates were compiled under; renderings are bound by them.
    pub(crate) reply_limits: crate::rules::Limits,
}

/// A workflow's risk class: what starting it on a misread request could do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Answers a question; changes nothing.
    Informational,
    /// Changes something that can be undone (an order, a status, a setting).
    Reversible,
    /// Blocks a card, closes an account or moves money.
    Irreversible,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Informational => "informational",
            Risk::Reversible => "reversible",
            Risk::Irreversible => "irreversible",
        }
    }

    pub fn parse(s: &str) -> Option<Risk> {
        [Risk::Informational, Risk::Reversible, Risk::Irreversible]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A node of the compiled graph.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    /// Line of the node in `workflow.yaml`.
    pub line: usize,
    pub description: Option<String>,
    pub max_visits: Option<u32>,
    pub step: Step,
}

/// An edge of the compiled graph: why the executor may take it.
#[derive(Debug)]
pub enum Edge {
    /// The single successor of a rule, call (success), wait, checkpoint or reply node.
    Next,
    /// A decision branch: taken when its condition holds and no earlier branch did.
    When {
        order: usize,
        condition: Arc<Script>,
        /// The condition as written, for diagrams and step records.
        source: String,
    },
    /// The decision's fallback.
    Otherwise,
    /// A call that failed for good.
    Failure,
    /// A reviewer's decision on a human task.
    Decision(String),
    /// A human task whose SLA passed.
    Escalation,
    /// The customer answered an `ask` node's question.
    Answer,
    /// Nobody answered an `ask` node's question in time.
    Timeout,
}

impl Edge {
    /// Short label for diagrams and step records.
    pub fn label(&self) -> String {
        match self {
            Edge::Next => "next".into(),
            Edge::When { source, .. } => format!("when {source}"),
            Edge::Otherwise => "otherwise".into(),
            Edge::Failure => "on_failure".into(),
            Edge::Decision(d) => format!("decision {d}"),
            Edge::Escalation => "escalate".into(),
            Edge::Answer => "answer".into(),
            Edge::Timeout => "on_timeout".into(),
        }
    }
}

impl Workflow {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.graph[i])
    }

    pub fn start(&self) -> &Node {
        &self.graph[self.start]
    }

    /// All nodes, in declaration order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.graph.node_weights()
    }

    /// Outgoing edges of a node with their targets, in a stable order (decision branches
    /// by `order`, then the rest by declaration).
    pub fn edges_from(&self, id: &str) -> Vec<(&Edge, &Node)> {
        let Some(&ix) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .graph
            .edges(ix)
            .map(|e| (e.id(), e.weight(), &self.graph[e.target()]))
            .collect();
        out.sort_by_key(|(eid, edge, _)| match edge {
            Edge::When { order, .. } => (0, *order),
            Edge::Otherwise => (1, 0),
            _ => (2, eid.index()),
        });
        out.into_iter().map(|(_, e, n)| (e, n)).collect()
    }

    /// The target of the node's edge of the given kind (a reviewer's decision by name).
    pub(crate) fn follow(&self, node: &str, edge: &Edge) -> Option<String> {
        self.edges_from(node)
            .into_iter()
            .find(|(e, _)| match (e, edge) {
                (Edge::Decision(a), Edge::Decision(b)) => a == b,
                (a, b) => std::mem::discriminant(*a) == std::mem::discriminant(b),
            })
            .map(|(_, to)| to.id.clone())
    }

    /// Checks a request against the workflow's input schema; every violation, with its path.
    pub fn validate_input(&self, request: &serde_json::Value) -> Result<(), Vec<InputError>> {
        let errors: Vec<InputError> = self
            .input_schema
            .iter_errors(request)
            .map(|e| {
                let mut path = e.instance_path().to_string();
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                    && let Some(name) = property.as_str()
                {
                    // The missing property's name comes from the schema, not the request.
                    path = format!("{path}/{name}");
                }
                InputError {
                    path: public_path(&path),
                    keyword: e.kind().keyword().to_string(),
                    message: e.to_string(),
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Renders a reply template in `language`, falling back to the first declared language.
    /// The rendering is bounded by the sandbox limits (fuel, output size, deadline).
    pub fn render_reply(
        &self,
        template: &str,
        language: &str,
        context: &serde_json::Value,
    ) -> Result<(String, String), crate::rules::template::Error> {
        let lang = if self.languages.iter().any(|l| l == language) {
            language
        } else {
            self.languages.first().map(String::as_str).unwrap_or("en")
        };
        let tmpl = self
            .templates
            .get_template(&template_key(template, lang))
            .map_err(|e| crate::rules::template::Error::Render(e.to_string()))?;
        let text = crate::rules::template::render(&tmpl, context, &self.reply_limits)?;
        Ok((lang.to_string(), text))
    }
}

/// One violation of a workflow's input schema.
///
/// `path` and `keyword` name the field and the rule without the value: they may go to the
/// audit trail, task listings and the case record, which outlive erasure. `message` is the
/// validator's own text and quotes the offending value, so it is personal data and is kept
/// only where erasure reaches (the case's personal record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// JSON pointer to the field (`/customer_id`; empty for the request as a whole).
    pub path: String,
    /// The schema keyword that failed (`pattern`, `required`, `type`, …).
    pub keyword: String,
    /// The full message, offending value included.
    pub message: String,
}

impl InputError {
    /// `/customer_id: pattern` — the violation without the value.
    pub fn reason(&self) -> String {
        let path = if self.path.is_empty() {
            "(request)"
        } else {
            &self.path
        };
        format!("{path}: {}", self.keyword)
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// An instance path fit for records that outlive erasure. Schema-named segments look like
/// identifiers; a segment that does not (an object key a submitter chose, under
/// `additionalProperties` or `patternProperties`) could be a personal datum and becomes `*`.
fn public_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let plain = seg.len() <= 40
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && crate::intake::pii::find(seg).is_empty();
            if plain { seg } else { "*" }
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub(crate) fn template_key(template: &str, language: &str) -> String {
    format!("{template}.{language}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_keeps_schema_names_and_hides_keys_a_submitter_chose() {
        assert_eq!(public_path(""), "");
        assert_eq!(public_path("/customer_id"), "/customer_id");
        assert_eq!(public_path("/fields/amount/0"), "/fields/amount/0");
        assert_eq!(public_path("/fields/DE44500105175407324931"), "/fields/*");
        assert_eq!(public_path("/fields/erika@example.de"), "/fields/*");
        assert_eq!(public_path("/fields/Frau Zaunkoenig"), "/fields/*");
    }
}
