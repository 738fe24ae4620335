//! From a workflow directory to a [`Workflow`], collecting every problem on the way.
//!
//! Loading never stops at the first problem: each top-level field and each node is read on
//! its own, every script and template is compiled, and the graph checks run on whatever
//! part of the graph is sound, so one `casegraph validate` shows the whole list.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use marked_yaml::{Node as YamlNode, Spanned};
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::Digest as _;

use super::compiler::Compiler;
use super::def::{self, LimitsDef, NodeDef, Replies, TriggersDef};
use super::{
    Code, Diagnostic, Edge, Node, Risk, Step, Workflow, check, knowledge, nodes, template_key,
};
use crate::rules::Rules;
use crate::yaml::{self, line_of, pos};

/// Default bound on node executions per case.
const DEFAULT_MAX_STEPS: u32 = 500;

/// Compiles the workflow in `dir` (which holds `workflow.yaml`).
pub fn compile_dir(dir: &Path, rules: &Rules) -> Result<Workflow, Vec<Diagnostic>> {
    let mut c = Compiler::new(dir, rules);
    let workflow = c.compile();
    match workflow {
        Some(w) if c.diags.is_empty() => Ok(w),
        _ => {
            c.diags
                .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(c.diags)
        }
    }
}

/// The top-level fields, each read on its own.
#[derive(Default)]
struct Top {
    id: Option<Spanned<String>>,
    version: Option<Spanned<u32>>,
    title: Option<String>,
    intents: Vec<Spanned<String>>,
    /// `triggers:` and the line it starts on.
    triggers: Option<(TriggersDef, usize)>,
    languages: Vec<Spanned<String>>,
    input_schema: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    limits: Option<LimitsDef>,
    risk: Option<Spanned<String>>,
    knowledge: Option<Spanned<String>>,
    replies: Replies,
    nodes: Vec<(Spanned<String>, Option<NodeDef>)>,
}

impl Compiler<'_> {
    fn compile(&mut self) -> Option<Workflow> {
        let file = self.file.clone();
        let (_, text) = self.read("workflow.yaml")?;
        let root = match yaml::parse(&file, &text) {
            Ok(root) => root,
            Err(mut d) => {
                d.node = enclosing_node(&text, d.line);
                self.diags.push(d);
                return None;
            }
        };
        let top = self.read_top(&root);
        self.check_identity(&top);
        let languages: Vec<String> = if top.languages.is_empty() {
            vec!["de".into(), "en".into()]
        } else {
            top.languages.iter().map(|l| l.to_string()).collect()
        };

        let input_schema = self.input_schema(top.input_schema.as_ref());
        let mut templates = self.templates(&top.replies, &languages);
        let knowledge = top.knowledge.as_ref().and_then(|name| {
            let mut spare;
            let env = match templates.as_mut() {
                Some(env) => env,
                None => {
                    spare = crate::rules::template::environment(self.rules.limits());
                    &mut spare
                }
            };
            self.knowledge(name, &top.intents, &languages, env)
        });
        let mut names = templates_names(&top.replies);
        if let Some(name) = &top.knowledge {
            if let Some((defined, _)) = top
                .replies
                .iter()
                .find(|(n, _)| n.as_str() == knowledge::TEMPLATE)
            {
                let msg = format!(
                    "reply template `{}` is reserved for answers from the knowledge base `{}`; rename it",
                    knowledge::TEMPLATE,
                    name.as_str()
                );
                self.diag(Code::Template, line_of(defined), msg);
            }
            names.insert(knowledge::TEMPLATE);
        }
        let risk = self.risk(top.risk.as_ref());
        let (graph, index) = self.build_graph(&top, &names);
        let start = self.start(&top, &index);
        if let Some(start) = start
            && !self.edges_incomplete
        {
            let problems = check::graph(&graph, start, &self.file);
            self.diags.extend(problems);
            if let Some((_, line)) = &top.triggers {
                self.check_consent(&graph, start, *line);
            }
            if risk == Risk::Irreversible {
                self.check_confirmation(&graph, start);
            }
        }
        let triggers = self.triggers(top.triggers.as_ref().map(|(t, _)| t));
        let max_steps = self.max_steps(&top);

        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Some(Workflow {
            id: top.id?.to_string(),
            version: *top.version?,
            title: top.title,
            digest,
            intents: top.intents.iter().map(|i| i.to_string()).collect(),
            triggers,
            languages,
            risk,
            knowledge,
            max_steps,
            dir: self.dir.clone(),
            graph,
            index,
            start: start?,
            input_schema: input_schema?,
            templates: templates?,
            reply_limits: self.rules.limits().clone(),
        })
    }

    /// The workflow's id matches its directory and is an identifier; its intents are
    /// named, each once.
    fn check_identity(&mut self, top: &Top) {
        if let Some(id) = &top.id {
            let dir_name = self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            if dir_name.as_deref() != Some(id.as_str()) {
                let msg = format!(
                    "workflow id `{}` must match its directory name `{}`",
                    id.as_str(),
                    dir_name.unwrap_or_default()
                );
                self.diag(Code::InvalidValue, line_of(id), msg);
            }
            if !is_identifier(id) {
                let msg = format!("workflow id `{}` must be lower_snake_case", id.as_str());
                self.diag(Code::InvalidValue, line_of(id), msg);
            }
        }
        if top.intents.is_empty() && top.triggers.is_none() && top.id.is_some() {
            self.diag(
                Code::MissingField,
                1,
                "`intents` must name at least one intent (or `triggers` what starts the workflow)",
            );
        }
        let mut seen_intents = HashSet::new();
        for intent in &top.intents {
            if !seen_intents.insert(intent.as_str()) {
                let msg = format!("intent `{}` is listed twice", intent.as_str());
                self.diag(Code::InvalidValue, line_of(intent), msg);
            }
        }
    }

    /// The node `start` names, if it names one that compiled; one that does not exist at
    /// all is reported (one that failed to read was reported already).
    fn start(&mut self, top: &Top, index: &HashMap<String, NodeIndex>) -> Option<NodeIndex> {
        let s = top.start.as_ref()?;
        if let Some(&ix) = index.get(s.as_str()) {
            return Some(ix);
        }
        if !top.nodes.iter().any(|(id, _)| id.as_str() == s.as_str()) {
            let msg = format!("`start` names node `{}`, which does not exist", s.as_str());
            self.diag(Code::DanglingEdge, line_of(s), msg);
        }
        None
    }

    /// The declared risk class; a workflow that declares none is treated as the strictest,
    /// `irreversible`, so forgetting it never loosens routing.
    fn risk(&mut self, risk: Option<&Spanned<String>>) -> Risk {
        let Some(risk) = risk else {
            return Risk::Irreversible;
        };
        match Risk::parse(risk.as_str()) {
            Some(r) => r,
            None => {
                let msg = format!(
                    "`risk` is `{}`; expected one of: informational, reversible, irreversible",
                    risk.as_str()
                );
                self.diag(Code::InvalidValue, line_of(risk), msg);
                Risk::Irreversible
            }
        }
    }

    /// `limits.max_steps`, or the default; at least 1.
    fn max_steps(&mut self, top: &Top) -> u32 {
        let max_steps = top
            .limits
            .as_ref()
            .and_then(|l| l.max_steps.as_ref())
            .map(|m| **m)
            .unwrap_or(DEFAULT_MAX_STEPS);
        if max_steps == 0 {
            self.diag(
                Code::InvalidValue,
                1,
                "`limits.max_steps` must be at least 1",
            );
        }
        max_steps
    }

    fn read_top(&mut self, root: &YamlNode) -> Top {
        let mut top = Top::default();
        let Some(map) = root.as_mapping() else {
            self.diag(Code::Syntax, 1, "workflow.yaml must be a mapping");
            return top;
        };
        for (key, value) in map.iter() {
            let name = key.as_str();
            let line = pos(key.span()).0;
            let file = self.file.clone();
            macro_rules! read {
                ($what:expr) => {
                    match yaml::from_node(value, &file, $what) {
                        Ok(v) => Some(v),
                        Err(d) => {
                            self.diags.push(d);
                            None
                        }
                    }
                };
            }
            match name {
                "id" => top.id = read!("`id`"),
                "version" => top.version = read!("`version`"),
                "title" => top.title = read!("`title`"),
                "description" => {
                    let _: Option<String> = read!("`description`");
                }
                "intents" => top.intents = read!("`intents`").unwrap_or_default(),
                "triggers" => top.triggers = read!("`triggers`").map(|t| (t, line)),
                "languages" => top.languages = read!("`languages`").unwrap_or_default(),
                "input_schema" => top.input_schema = read!("`input_schema`"),
                "start" => top.start = read!("`start`"),
                "limits" => top.limits = read!("`limits`"),
                "risk" => top.risk = read!("`risk`"),
                "knowledge" => top.knowledge = read!("`knowledge`"),
                "replies" => top.replies = read!("`replies`").unwrap_or_default(),
                "nodes" => match value.as_mapping() {
                    Some(nodes) => {
                        for (id, node) in nodes.iter() {
                            let span = *id.span();
                            let id_s = Spanned::new(span, id.as_str().to_string());
                            let what = format!("node `{}`", id.as_str());
                            match yaml::from_node::<NodeDef>(node, &file, &what) {
                                Ok(def) => top.nodes.push((id_s, Some(def))),
                                Err(d) => {
                                    self.diags.push(d.node(id.as_str()));
                                    self.edges_incomplete = true;
                                    top.nodes.push((id_s, None));
                                }
                            }
                        }
                    }
                    None => {
                        self.diag(
                            Code::InvalidValue,
                            line,
                            "`nodes` must be a mapping of node id to node",
                        );
                    }
                },
                other => {
                    let msg = format!(
                        "unknown field `{other}`, expected one of: {}",
                        def::TOP_LEVEL_FIELDS.join(", ")
                    );
                    self.diag(Code::UnknownField, line, msg).column = pos(key.span()).1;
                }
            }
        }
        for required in ["id", "version", "start", "nodes"] {
            if map.get_node(required).is_none() {
                self.diag(Code::MissingField, 1, format!("missing field `{required}`"));
            }
        }
        top
    }

    fn input_schema(&mut self, name: Option<&Spanned<String>>) -> Option<jsonschema::Validator> {
        let (path, text) = match name {
            Some(name) => self.read_named("input_schema", name, None)?,
            None => self.read("input.schema.json")?,
        };
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::InputSchema,
                        &path,
                        e.line(),
                        format!("not valid JSON: {e}"),
                    )
                    .at(e.line(), e.column()),
                );
                return None;
            }
        };
        if let Some(depth) = yaml::json_too_deep(&value) {
            self.diags.push(Diagnostic::new(
                Code::Limit,
                &path,
                0,
                format!("the schema is nested deeper than {depth} levels"),
            ));
            return None;
        }
        // External `$ref`s are never fetched (no file, no network), and patterns use the
        // linear-time regex engine with a bounded program: the schema runs on every request.
        let options = jsonschema::options()
            .with_retriever(NoRetrieval)
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(SCHEMA_REGEX_BYTES)
                    .dfa_size_limit(SCHEMA_REGEX_BYTES),
            );
        match options.build(&value) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.instance_path().to_string();
                let line = json_pointer_line(&text, &at);
                self.diags.push(Diagnostic::new(
                    Code::InputSchema,
                    &path,
                    line,
                    format!("not a valid JSON Schema at `{at}`: {e}"),
                ));
                None
            }
        }
    }

    fn templates(
        &mut self,
        replies: &Replies,
        languages: &[String],
    ) -> Option<minijinja::Environment<'static>> {
        // The reply sandbox: fuel, refused filters, bounded `join`/`replace`.
        let limits = self.rules.limits();
        let mut env = crate::rules::template::environment(limits);
        let mut ok = true;
        let mut replies: Vec<_> = replies.iter().collect();
        replies.sort_by_key(|(name, _)| line_of(name));
        for (name, by_lang) in replies {
            for lang in languages {
                if !by_lang.keys().any(|l| l.as_str() == lang) {
                    let msg = format!("reply template `{}` has no `{lang}` text", name.as_str());
                    self.diag(Code::Template, line_of(name), msg);
                    ok = false;
                }
            }
            for (lang, text) in by_lang {
                if !languages.iter().any(|l| l == lang.as_str()) {
                    let msg = format!(
                        "reply template `{}` has text for `{}`, which is not in `languages`",
                        name.as_str(),
                        lang.as_str()
                    );
                    self.diag(Code::Template, line_of(lang), msg);
                    ok = false;
                    continue;
                }
                if let Err(refusal) = crate::rules::template::check(text, limits) {
                    let line = line_of(text) + refusal.line.saturating_sub(1);
                    let msg = format!(
                        "reply template `{}` ({}) {}",
                        name.as_str(),
                        lang.as_str(),
                        refusal.message
                    );
                    self.diag(Code::Template, line, msg);
                    ok = false;
                    continue;
                }
                let key = template_key(name, lang);
                if let Err(e) = env.add_template_owned(key, text.to_string()) {
                    let line = line_of(text) + e.line().unwrap_or(1).saturating_sub(1);
                    let msg = format!(
                        "reply template `{}` ({}) does not parse: {}",
                        name.as_str(),
                        lang.as_str(),
                        e.detail().unwrap_or("syntax error")
                    );
                    self.diag(Code::Template, line, msg);
                    ok = false;
                }
            }
        }
        ok.then_some(env)
    }

    fn build_graph(
        &mut self,
        top: &Top,
        templates: &HashSet<&str>,
    ) -> (DiGraph<Node, Edge>, HashMap<String, NodeIndex>) {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let mut pending: Vec<(NodeIndex, Spanned<String>, Edge)> = Vec::new();
        for (id, def) in &top.nodes {
            let Some(def) = def else { continue };
            if !is_identifier(id) {
                let msg = format!("node id `{}` must be lower_snake_case", id.as_str());
                self.diag(Code::InvalidValue, line_of(id), msg).node = Some(id.to_string());
            }
            let mut edges = Vec::new();
            let step = nodes::compile(self, id, def, templates, &mut edges);
            let node = Node {
                id: id.to_string(),
                line: line_of(id),
                description: def.description.as_ref().map(|d| d.to_string()),
                max_visits: def.max_visits.as_ref().map(|m| **m),
                step: step.unwrap_or_else(|| Step::stand_in(def.kind.as_str())),
            };
            if node.max_visits == Some(0) {
                self.diag(
                    Code::InvalidValue,
                    line_of(id),
                    "`max_visits` must be at least 1",
                )
                .node = Some(id.to_string());
            }
            let ix = graph.add_node(node);
            index.insert(id.to_string(), ix);
            pending.extend(edges.into_iter().map(|(target, edge)| (ix, target, edge)));
        }
        let known: HashSet<&str> = top.nodes.iter().map(|(id, _)| id.as_str()).collect();
        for (from, target, edge) in pending {
            match index.get(target.as_str()) {
                Some(&to) => {
                    graph.add_edge(from, to, edge);
                }
                // A node that failed to parse was reported already; don't report edges to it.
                None if known.contains(target.as_str()) => {}
                None => {
                    let from_id = graph[from].id.clone();
                    let msg = format!(
                        "edge `{}` points at node `{}`, which does not exist",
                        edge.label(),
                        target.as_str()
                    );
                    self.diag(Code::DanglingEdge, line_of(&target), msg).node = Some(from_id);
                }
            }
        }
        (graph, index)
    }
}

/// Largest compiled program of one `pattern` in an input schema, in bytes.
const SCHEMA_REGEX_BYTES: usize = 1024 * 1024;

/// A `$ref` resolver that resolves nothing: a schema is self-contained.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("`{uri}` is outside the schema; external references are not fetched").into())
    }
}

fn templates_names(replies: &Replies) -> HashSet<&str> {
    replies.keys().map(|k| k.as_str()).collect()
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Best-effort line of a JSON pointer in a JSON text: each key of the pointer is looked for
/// at or after the line of the key before it, so `/properties/amount/type` finds the `type`
/// of `amount`, not the first `type` in the file. Array indexes are skipped; 1 when the
/// first key is not found.
fn json_pointer_line(text: &str, pointer: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for key in pointer.split('/').filter(|k| !k.is_empty()) {
        if key.parse::<usize>().is_ok() {
            continue;
        }
        let key = key.replace("~1", "/").replace("~0", "~");
        let needle = format!("\"{key}\"");
        match lines[at..].iter().position(|l| l.contains(&needle)) {
            Some(i) => at += i,
            None => break,
        }
    }
    at + 1
}

/// The node whose block holds `line` (1-based) in a `workflow.yaml` text, found by
/// indentation alone: for a syntax error there is no parsed structure to ask.
fn enclosing_node(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let nodes = lines.iter().position(|l| {
        l.strip_prefix("nodes:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    })?;
    let body = lines.get(nodes + 1..line.min(lines.len()))?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &&&str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    // Node ids sit at the indentation of the first line under `nodes:`.
    let key_indent = body.iter().find(content).map(|l| indent(l))?;
    if key_indent == 0 {
        return None;
    }
    for l in body.iter().rev().filter(content) {
        match indent(l) {
            0 => return None,
            i if i == key_indent => {
                let (key, _) = l.trim_start().split_once(':')?;
                return is_identifier(key.trim()).then(|| key.trim().to_string());
            }
            _ => {}
        }
    }
    None
}
