//! The routing policy: from a classified request to a workflow or a human queue.
//!
//! Routing is a rhai script (`<workflows>/routing/routing.rhai`), versioned and tested like a
//! workflow. It sees the request and its classification as `request` and the intent →
//! workflow map as `workflows`, and returns `#{workflow: "..", rule: ".."}` or
//! `#{queue: "..", rule: ".."}`; `rule` names what fired, for the audit trail. It may add
//! `priority: "high"` (the case's tasks go first in the inbox) and `scores: #{name: number}`
//! (what the rule computed, e.g. a churn risk), both recorded with the decision.
//!
//! Every decision is explainable: [`Why`] is what the case and its audit record keep, the
//! rule that fired and the signals the policy was given (intent, confidence, sentiment,
//! frustration, the customer's history), never the text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic};
use crate::files;
use crate::rules::{Context, Origin, Rules, Script};
use crate::yaml;

/// `routing.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingDef {
    version: Spanned<u32>,
    script: Spanned<String>,
    description: Option<String>,
}

/// A compiled routing policy.
#[derive(Debug)]
pub struct Routing {
    pub version: u32,
    pub dir: PathBuf,
    pub description: Option<String>,
    script: Arc<Script>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Route {
    Workflow { workflow: String, rule: String },
    Queue { queue: String, rule: String },
}

/// How urgent a case's human tasks are. The inbox lists `high` first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// What the policy answered: the route, and what it adds to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub route: Route,
    #[serde(default)]
    pub priority: Priority,
    /// Numbers the rule computed on its way (a churn risk), by name.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
}

/// Why a case went where it went: kept on the case and in its `routed` audit record, and
/// shown as "why this route" in the console. Holds labels and numbers only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Why {
    pub policy_version: u32,
    /// The rule that fired.
    pub rule: String,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, f64>,
    /// The signals the policy decided on.
    pub signals: Signals,
}

/// The signals routing is given beside the request, as [`Why`] records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub intent: Option<String>,
    pub confidence: Option<f64>,
    pub out_of_scope: bool,
    /// `{label, confidence}`; absent when the model gave none (older models, stored cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<Value>,
    /// `{score, flagged}`; absent when the model gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frustration: Option<Value>,
    pub customer: crate::customer::History,
}

impl Route {
    /// The rule of the policy that fired.
    pub fn rule(&self) -> &str {
        match self {
            Route::Workflow { rule, .. } | Route::Queue { rule, .. } => rule,
        }
    }
}

/// The policy failed or answered something that is not a route.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Script(#[from] crate::rules::Error),
    #[error(
        "{file}: routing returned {value}, expected #{{workflow: \"..\", rule: \"..\"}} or #{{queue: \"..\", rule: \"..\"}} (with `priority: \"high\"` or `\"normal\"` and `scores: #{{name: number}}` optional)"
    )]
    NotARoute { file: String, value: String },
    #[error("{file}: routing chose workflow `{workflow}`, which does not exist")]
    UnknownWorkflow { file: String, workflow: String },
}

impl Routing {
    /// Loads `dir/routing.yaml` and compiles its script.
    pub fn load(dir: &Path, rules: &Rules) -> Result<Routing, Vec<Diagnostic>> {
        let file = dir.join("routing.yaml");
        let (_, text) = files::read(dir, "routing.yaml").map_err(|e| {
            vec![Diagnostic::new(
                e.code(),
                &file,
                0,
                format!("cannot read the routing policy: {e}"),
            )]
        })?;
        let root = yaml::parse(&file, &text).map_err(|d| vec![d])?;
        let def: RoutingDef =
            yaml::from_node(&root, &file, "routing policy").map_err(|d| vec![d])?;
        // The script is named by the policy: a problem is reported where it is named.
        let (script_path, source) = files::read(dir, def.script.as_str()).map_err(|e| {
            let (line, column) = yaml::pos(def.script.span());
            vec![Diagnostic::new(e.code(), &file, line, format!("`script`: {e}")).at(line, column)]
        })?;
        let origin = Origin {
            file: script_path,
            line: 1,
            node: None,
        };
        let script = rules.compile(&source, origin).map_err(|e| match e {
            crate::rules::Error::Compile {
                file,
                line,
                column,
                message,
                ..
            } => vec![
                Diagnostic::new(
                    Code::Script,
                    &file,
                    line,
                    format!("does not compile: {message}"),
                )
                .at(line, column),
            ],
            other => vec![Diagnostic::new(Code::Script, &file, 0, other.to_string())],
        })?;
        Ok(Routing {
            version: *def.version,
            dir: dir.to_path_buf(),
            description: def.description,
            script,
        })
    }

    /// Version and script digest, as recorded with every routing decision.
    pub fn digest(&self) -> &str {
        &self.script.digest
    }

    /// Routes one request. `request` is the request merged with its classification
    /// ([`crate::pipeline::input`]).
    pub fn route(
        &self,
        rules: &Rules,
        ctx: &Context<'_>,
        request: &Value,
        workflows: &BTreeMap<String, String>,
    ) -> Result<Decision, Error> {
        let map = serde_json::to_value(workflows).unwrap_or_default();
        let out = rules.eval(
            &self.script,
            ctx,
            &[("request", request), ("workflows", &map)],
        )?;
        let file = self.script.origin.file.display().to_string();
        let decision: Decision =
            serde_json::from_value(out.clone()).map_err(|_| Error::NotARoute {
                file: file.clone(),
                value: out.to_string(),
            })?;
        if let Route::Workflow { workflow, .. } = &decision.route
            && !workflows.values().any(|w| w == workflow)
        {
            return Err(Error::UnknownWorkflow {
                file,
                workflow: workflow.clone(),
            });
        }
        Ok(decision)
    }
}
