//! The set of workflows (and the routing policy) a box serves, loaded from one directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Code, Diagnostic, Diagnostics, Risk, Workflow, compile_dir};
use crate::routing::Routing;
use crate::rules::Rules;

/// Workflows by id, the intent each serves, and the routing policy.
#[derive(Debug)]
pub struct Catalog {
    pub dir: PathBuf,
    workflows: BTreeMap<String, Arc<Workflow>>,
    by_intent: BTreeMap<String, String>,
    /// Intent → the risk class of the workflow serving it, as routing sees it.
    risks: BTreeMap<String, Risk>,
    pub routing: Routing,
}

impl Catalog {
    /// Loads every `<dir>/<id>/workflow.yaml` and `<dir>/routing/`; all problems at once.
    pub fn load(dir: &Path, rules: &Rules) -> Result<Catalog, Diagnostics> {
        let mut diags = Vec::new();
        let mut workflows = BTreeMap::new();
        let mut by_intent: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for sub in workflow_dirs(dir).map_err(|d| Diagnostics(vec![d]))? {
            match compile_dir(&sub, rules) {
                Ok(w) => {
                    for intent in &w.intents {
                        if let Some((other, _)) = by_intent.get(intent) {
                            diags.push(
                                Diagnostic::new(
                                    Code::DuplicateIntent,
                                    &sub.join("workflow.yaml"),
                                    intent_line(&sub, intent),
                                    format!(
                                        "intent `{intent}` is already served by workflow `{other}`; an intent routes to one workflow"
                                    ),
                                )
                                .node(w.id.clone()),
                            );
                        } else {
                            by_intent.insert(intent.clone(), (w.id.clone(), 0));
                        }
                    }
                    workflows.insert(w.id.clone(), Arc::new(w));
                }
                Err(mut d) => diags.append(&mut d),
            }
        }
        let routing = Routing::load(&dir.join("routing"), rules);
        let routing = match routing {
            Ok(r) => Some(r),
            Err(mut d) => {
                diags.append(&mut d);
                None
            }
        };
        match routing {
            Some(routing) if diags.is_empty() => {
                let by_intent: BTreeMap<String, String> =
                    by_intent.into_iter().map(|(k, (v, _))| (k, v)).collect();
                let risks = by_intent
                    .iter()
                    .filter_map(|(intent, id)| {
                        workflows
                            .get(id)
                            .map(|w: &Arc<Workflow>| (intent.clone(), w.risk))
                    })
                    .collect();
                Ok(Catalog {
                    dir: dir.to_path_buf(),
                    workflows,
                    by_intent,
                    risks,
                    routing,
                })
            }
            _ => Err(Diagnostics(diags)),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Workflow>> {
        self.workflows.get(id)
    }

    pub fn workflows(&self) -> impl Iterator<Item = &Arc<Workflow>> {
        self.workflows.values()
    }

    /// The workflow serving an intent, if any.
    pub fn for_intent(&self, intent: &str) -> Option<&Arc<Workflow>> {
        self.by_intent
            .get(intent)
            .and_then(|id| self.workflows.get(id))
    }

    /// Intent → risk class of its workflow, as the routing policy sees it.
    pub fn risk_map(&self) -> &BTreeMap<String, Risk> {
        &self.risks
    }

    /// Intent → workflow id, as the routing policy sees it.
    pub fn intent_map(&self) -> &BTreeMap<String, String> {
        &self.by_intent
    }
}

/// Subdirectories holding a `workflow.yaml`, sorted.
pub(crate) fn workflow_dirs(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostic::new(
            Code::Io,
            dir,
            0,
            format!("cannot read workflow directory: {e}"),
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("workflow.yaml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn intent_line(dir: &Path, intent: &str) -> usize {
    std::fs::read_to_string(dir.join("workflow.yaml"))
        .ok()
        .and_then(|t| {
            let mut in_intents = false;
            t.lines().position(|l| {
                if l.starts_with("intents") {
                    in_intents = true;
                }
                in_intents && l.contains(intent)
            })
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}
