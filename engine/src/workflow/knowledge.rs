//! The knowledge base of a workflow: per-intent, per-language answers kept as data beside
//! `workflow.yaml` (its `knowledge` field), so one templated workflow can answer many
//! informational intents without one copy of the graph per intent.
//!
//! The file is read like every other file of the bundle, so it is part of the workflow's
//! digest: a case records exactly which answers it was given. Every answer is a reply
//! template (same sandbox, same checks); nothing is written at run time.
//!
//! ```yaml
//! version: 3
//! answers:
//!   card_acceptance:
//!     en: "Your card is accepted wherever you see the Mastercard sign ..."
//!     de: "Ihre Karte wird überall akzeptiert, wo Sie das Mastercard-Zeichen sehen ..."
//! ```

use std::collections::HashMap;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::compiler::Compiler;
use super::{Code, template_key};
use crate::yaml::{self, line_of};

/// The reserved reply-template name a `reply` node uses to answer from the knowledge base
/// for the case's intent.
pub const TEMPLATE: &str = "knowledge";

/// `knowledge.yaml` as an author writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnowledgeDef {
    version: Spanned<u32>,
    answers: HashMap<Spanned<String>, HashMap<Spanned<String>, Spanned<String>>>,
}

/// A compiled knowledge base: which version, which file digest, which intents it answers.
#[derive(Debug, Clone)]
pub struct Knowledge {
    pub version: u32,
    /// sha256 of the file; recorded with every answer given from it.
    pub digest: String,
    pub intents: Vec<String>,
}

/// The template key of the answer for `intent` in `language`.
pub(crate) fn answer_key(intent: &str, language: &str) -> String {
    template_key(&format!("{TEMPLATE}:{intent}"), language)
}

impl Compiler<'_> {
    /// Reads the knowledge base the workflow names and adds its answers to the reply
    /// templates. Every intent the workflow serves needs an answer in every language, and
    /// every answer must belong to an intent the workflow serves.
    pub(super) fn knowledge(
        &mut self,
        name: &Spanned<String>,
        intents: &[Spanned<String>],
        languages: &[String],
        env: &mut minijinja::Environment<'static>,
    ) -> Option<Knowledge> {
        let (path, text) = self.read_named("knowledge", name, None)?;
        let digest = crate::case::digest(&serde_json::Value::String(text.clone()));
        let root = match yaml::parse(&path, &text) {
            Ok(r) => r,
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        let def: KnowledgeDef = match yaml::from_node(&root, &path, "knowledge base") {
            Ok(d) => d,
            Err(d) => {
                self.diags.push(d);
                return None;
            }
        };
        let problems = self.diags.len();
        let limits = self.rules.limits().clone();
        let mut answers: Vec<_> = def.answers.iter().collect();
        answers.sort_by_key(|(intent, _)| line_of(intent));
        let problem = |c: &mut Compiler<'_>, line: usize, msg: String| {
            c.diags.push(crate::diagnostic::Diagnostic::new(
                Code::Template,
                &path,
                line,
                msg,
            ));
        };
        for (intent, by_lang) in &answers {
            if !intents.iter().any(|i| i.as_str() == intent.as_str()) {
                let msg = format!(
                    "answer for intent `{}`, which the workflow does not serve (add it to `intents` or remove the answer)",
                    intent.as_str()
                );
                problem(self, line_of(intent), msg);
                continue;
            }
            for lang in languages {
                if !by_lang.keys().any(|l| l.as_str() == lang) {
                    let msg = format!("answer for `{}` has no `{lang}` text", intent.as_str());
                    problem(self, line_of(intent), msg);
                }
            }
            for (lang, text) in by_lang.iter() {
                if !languages.iter().any(|l| l == lang.as_str()) {
                    let msg = format!(
                        "answer for `{}` has text for `{}`, which is not in the workflow's `languages`",
                        intent.as_str(),
                        lang.as_str()
                    );
                    problem(self, line_of(lang), msg);
                    continue;
                }
                if let Err(refusal) = crate::rules::template::check(text, &limits) {
                    let line = line_of(text) + refusal.line.saturating_sub(1);
                    let msg = format!(
                        "answer for `{}` ({}) {}",
                        intent.as_str(),
                        lang.as_str(),
                        refusal.message
                    );
                    problem(self, line, msg);
                    continue;
                }
                let key = answer_key(intent, lang);
                if let Err(e) = env.add_template_owned(key, text.to_string()) {
                    let line = line_of(text) + e.line().unwrap_or(1).saturating_sub(1);
                    let msg = format!(
                        "answer for `{}` ({}) does not parse: {}",
                        intent.as_str(),
                        lang.as_str(),
                        e.detail().unwrap_or("syntax error")
                    );
                    problem(self, line, msg);
                }
            }
        }
        for intent in intents {
            if !def.answers.keys().any(|a| a.as_str() == intent.as_str()) {
                let msg = format!(
                    "intent `{}` has no answer in the knowledge base `{}`",
                    intent.as_str(),
                    name.as_str()
                );
                self.diag(Code::Template, line_of(intent), msg);
            }
        }
        (self.diags.len() == problems).then(|| Knowledge {
            version: *def.version,
            digest,
            intents: intents.iter().map(|i| i.to_string()).collect(),
        })
    }
}
