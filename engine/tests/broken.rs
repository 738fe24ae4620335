//! Broken workflows, one defect class each: every class is rejected, and the problem names
//! the file, the line and (where the defect belongs to a node) the node to fix.
//!
//! Each test writes a small workflow directory into a temporary directory. Expected lines
//! are found by searching the text written, so editing a fixture does not shift them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Catalog, Diagnostic, compile_dir};

/// A valid workflow every test breaks in one place. `nodes` comes last so tests can append.
const BASE: &str = r#"id: demo
version: 1
intents: [request_refund]
start: extract
replies:
  done: {en: "Done.", de: "Erledigt."}
nodes:
  extract: {kind: rule, script: extract.rhai, next: route}
  route:
    kind: decision
    branches:
      - when: "case.amount > 100"
        to: approval
    otherwise: reply
  approval:
    kind: human
    queue: refunds
    decisions: {approve: reply, reject: rejected}
  reply: {kind: reply, template: done, next: done}
  done: {kind: end, outcome: done}
  rejected: {kind: end, outcome: rejected}
"#;

const SCRIPT: &str = "case.amount = 10;\n";
const SCHEMA: &str = r#"{"type": "object"}"#;

/// Writes `<tmp>/demo/` with `workflow.yaml` and the given files; the rule script and the
/// input schema default to valid ones.
fn write_dir(root: &Path, id: &str, yaml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("workflow.yaml"), yaml).unwrap();
    let defaults = [("extract.rhai", SCRIPT), ("input.schema.json", SCHEMA)];
    for (name, text) in defaults {
        if !files.iter().any(|(n, _)| *n == name) {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    for (name, text) in files {
        if !text.is_empty() {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    dir
}

/// Compiles a broken workflow; returns its directory and every problem found.
fn broken(yaml: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Vec<Diagnostic>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_dir(tmp.path(), "demo", yaml, files);
    let diags = match compile_dir(&dir, &Rules::default()) {
        Ok(_) => panic!("the broken workflow compiled:\n{yaml}"),
        Err(d) => d,
    };
    (tmp, dir, diags)
}

fn compiles(yaml: &str, files: &[(&str, &str)]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_dir(tmp.path(), "demo", yaml, files);
    if let Err(d) = compile_dir(&dir, &Rules::default()) {
        let list: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!("expected to compile, got:\n{}", list.join("\n"));
    }
}

/// 1-based line of the first line of `text` containing `needle`.
fn line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"))
}

/// The one problem of class `code`, checked to name `file`, `line` and `node` — both in its
/// fields and in the message a process owner reads.
fn expect<'d>(
    diags: &'d [Diagnostic],
    code: &str,
    file: &Path,
    line: usize,
    node: Option<&str>,
) -> &'d Diagnostic {
    let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    let d = diags
        .iter()
        .find(|d| d.code.as_str() == code && d.node.as_deref() == node)
        .unwrap_or_else(|| panic!("no `{code}` for node {node:?} among:\n{all}"));
    let text = d.to_string();
    assert_eq!(d.file, file, "{text}");
    assert_eq!(d.line, line, "{text}");
    assert!(
        text.contains(&format!("{}:{line}", file.display())),
        "message lacks file and line: {text}"
    );
    assert!(text.contains(code), "message lacks the code: {text}");
    if let Some(node) = node {
        assert!(
            text.contains(&format!("node `{node}`")),
            "message lacks the node: {text}"
        );
    }
    d
}

fn codes(diags: &[Diagnostic]) -> Vec<&'static str> {
    diags.iter().map(|d| d.code.as_str()).collect()
}

#[test]
fn the_base_workflow_compiles() {
    compiles(BASE, &[]);
}

#[test]
fn unknown_top_level_field() {
    let yaml = format!("{BASE}owner: payments team\n");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "unknown_field",
        &dir.join("workflow.yaml"),
        line(&yaml, "owner:"),
        None,
    );
    assert!(d.message.contains("`owner`"), "{d}");
}

#[test]
fn unknown_field_inside_a_node() {
    let yaml = BASE.replace(
        "  reply: {kind: reply, template: done, next: done}\n",
        "  reply:\n    kind: reply\n    template: done\n    colour: red\n    next: done\n",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "unknown_field",
        &dir.join("workflow.yaml"),
        line(&yaml, "colour: red"),
        Some("reply"),
    );
    assert!(d.message.contains("`colour`"), "{d}");
}

#[test]
fn field_of_another_node_kind() {
    let yaml = BASE.replace(
        "  extract: {kind: rule, script: extract.rhai, next: route}\n",
        "  extract:\n    kind: rule\n    script: extract.rhai\n    queue: refunds\n    next: route\n",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "unknown_field",
        &dir.join("workflow.yaml"),
        line(&yaml, "queue: refunds"),
        Some("extract"),
    );
    assert!(
        d.message.contains("`queue`") && d.message.contains("`rule`"),
        "{d}"
    );
}

#[test]
fn dangling_edge() {
    let yaml = BASE.replace(
        "{kind: reply, template: done, next: done}",
        "{kind: reply, template: done, next: finish}",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "dangling_edge",
        &dir.join("workflow.yaml"),
        line(&yaml, "next: finish"),
        Some("reply"),
    );
    assert!(d.message.contains("`finish`"), "{d}");
}

#[test]
fn dangling_start() {
    let yaml = BASE.replace("start: extract", "start: begin");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "dangling_edge",
        &dir.join("workflow.yaml"),
        line(&yaml, "start: begin"),
        None,
    );
    assert!(d.message.contains("`begin`"), "{d}");
}

#[test]
fn unreachable_node() {
    let yaml = format!("{BASE}  orphan: {{kind: end, outcome: lost}}\n");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    expect(
        &diags,
        "unreachable_node",
        &dir.join("workflow.yaml"),
        line(&yaml, "orphan:"),
        Some("orphan"),
    );
    assert_eq!(codes(&diags), ["unreachable_node"]);
}

#[test]
fn dead_end() {
    // `hold` leads into a loop that waits (so it is bounded) but never reaches an end.
    let yaml = BASE.replace(
        "decisions: {approve: reply, reject: rejected}",
        "decisions: {approve: reply, reject: rejected, hold: hold}",
    ) + "  hold: {kind: wait, duration: 1d, next: recheck}\n  recheck: {kind: rule, script: extract.rhai, next: hold}\n";
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let file = dir.join("workflow.yaml");
    expect(
        &diags,
        "dead_end",
        &file,
        line(&yaml, "  hold:"),
        Some("hold"),
    );
    expect(
        &diags,
        "dead_end",
        &file,
        line(&yaml, "  recheck:"),
        Some("recheck"),
    );
    assert_eq!(codes(&diags), ["dead_end", "dead_end"]);
}

#[test]
fn decision_without_otherwise() {
    let yaml = BASE.replace("    otherwise: reply\n", "");
    // Without the fallback `reply` is still reached through `approval`.
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "missing_otherwise",
        &dir.join("workflow.yaml"),
        line(&yaml, "  route:"),
        Some("route"),
    );
    assert!(d.message.contains("otherwise"), "{d}");
    assert_eq!(codes(&diags), ["missing_otherwise"]);
}

/// `route` → `again` → `route`: a loop of a decision and a rule; `approval` is the way out.
fn cycle(again: &str) -> String {
    BASE.replace("    otherwise: reply\n", "    otherwise: again\n") + again
}

#[test]
fn unbounded_cycle() {
    let yaml = cycle("  again: {kind: rule, script: extract.rhai, next: route}\n");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "unbounded_cycle",
        &dir.join("workflow.yaml"),
        line(&yaml, "  route:"),
        Some("route"),
    );
    assert!(
        d.message.contains("`route`") && d.message.contains("`again`"),
        "{d}"
    );
    assert_eq!(codes(&diags), ["unbounded_cycle"]);
}

#[test]
fn self_loop_is_an_unbounded_cycle() {
    let yaml = BASE.replace(
        "{kind: rule, script: extract.rhai, next: route}",
        "{kind: rule, script: extract.rhai, next: extract}",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    expect(
        &diags,
        "unbounded_cycle",
        &dir.join("workflow.yaml"),
        line(&yaml, "  extract:"),
        Some("extract"),
    );
}

#[test]
fn the_same_cycle_with_a_visit_bound_compiles() {
    compiles(
        &cycle("  again: {kind: rule, script: extract.rhai, next: route, max_visits: 3}\n"),
        &[],
    );
}

#[test]
fn the_same_cycle_through_a_wait_compiles() {
    compiles(
        &cycle("  again: {kind: wait, duration: 1h, next: route}\n"),
        &[],
    );
}

#[test]
fn the_same_cycle_through_a_human_compiles() {
    compiles(
        &cycle(
            "  again:\n    kind: human\n    queue: refunds\n    decisions: {retry: route, give_up: rejected}\n",
        ),
        &[],
    );
}

#[test]
fn the_same_cycle_through_a_question_compiles() {
    compiles(
        &cycle(
            "  again: {kind: ask, template: done, answer: route, timeout: 14d, on_timeout: rejected}\n",
        ),
        &[],
    );
}

#[test]
fn a_question_without_its_answer_edge_timeout_or_template_names_each() {
    let yaml = cycle("  again: {kind: ask, template: nothing_like_it, timeout: soon}\n");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let file = dir.join("workflow.yaml");
    let at = line(&yaml, "  again:");
    let missing: Vec<String> = diags
        .iter()
        .filter(|d| d.code.as_str() == "missing_field" && d.node.as_deref() == Some("again"))
        .map(|d| d.message.clone())
        .collect();
    assert!(
        missing.iter().any(|m| m.contains("`answer`")),
        "{missing:?}"
    );
    assert!(
        missing.iter().any(|m| m.contains("`on_timeout`")),
        "{missing:?}"
    );
    assert!(diags.iter().all(|d| d.file == file), "{diags:?}");
    assert!(diags.iter().any(|d| d.line == at), "{diags:?}");
    let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(
        all.contains("`soon`") || all.contains("soon"),
        "the bad timeout is named: {all}"
    );
}

#[test]
fn rhai_script_file_that_does_not_compile() {
    let script = "let amount = 10;\ncase.amount = amount +;\n";
    let (_tmp, dir, diags) = broken(BASE, &[("extract.rhai", script)]);
    expect(
        &diags,
        "script_error",
        &dir.join("extract.rhai"),
        2,
        Some("extract"),
    );
    assert_eq!(codes(&diags), ["script_error"]);
}

#[test]
fn inline_condition_that_does_not_compile() {
    let yaml = BASE.replace("case.amount > 100", "case.amount >");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    expect(
        &diags,
        "script_error",
        &dir.join("workflow.yaml"),
        line(&yaml, "case.amount >"),
        Some("route"),
    );
    assert_eq!(codes(&diags), ["script_error"]);
}

#[test]
fn input_schema_that_is_not_json() {
    let schema = "{\n  \"type\": \"object\",\n  \"required\": [\"amount\"\n}\n";
    let (_tmp, dir, diags) = broken(BASE, &[("input.schema.json", schema)]);
    let d = expect(
        &diags,
        "invalid_input_schema",
        &dir.join("input.schema.json"),
        4,
        None,
    );
    assert!(d.message.contains("not valid JSON"), "{d}");
}

#[test]
fn input_schema_that_is_not_a_schema() {
    let schema = "{\n  \"type\": \"object\",\n  \"properties\": {\n    \"amount\": {\"type\": \"amount\"}\n  }\n}\n";
    let (_tmp, dir, diags) = broken(BASE, &[("input.schema.json", schema)]);
    let d = expect(
        &diags,
        "invalid_input_schema",
        &dir.join("input.schema.json"),
        4,
        None,
    );
    assert!(d.message.contains("not a valid JSON Schema"), "{d}");
}

#[test]
fn intent_served_by_two_workflows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_dir(root, "demo", BASE, &[]);
    let other = BASE.replace("id: demo", "id: refund_again");
    let other_dir = write_dir(root, "refund_again", &other, &[]);
    let routing = root.join("routing");
    std::fs::create_dir_all(&routing).unwrap();
    std::fs::write(
        routing.join("routing.yaml"),
        "version: 1\nscript: routing.rhai\n",
    )
    .unwrap();
    std::fs::write(
        routing.join("routing.rhai"),
        "#{ queue: \"triage\", rule: \"everything\" }\n",
    )
    .unwrap();

    let diags = Catalog::load(root, &Rules::default())
        .expect_err("two workflows serving one intent loaded")
        .0;
    // The second workflow (in directory order) is the one reported; the first keeps the intent.
    let d = expect(
        &diags,
        "duplicate_intent",
        &other_dir.join("workflow.yaml"),
        line(&other, "intents:"),
        Some("refund_again"),
    );
    assert!(
        d.message.contains("`request_refund`") && d.message.contains("`demo`"),
        "{d}"
    );
    assert_eq!(codes(&diags), ["duplicate_intent"]);
}

#[test]
fn missing_script_file() {
    let yaml = BASE.replace("script: extract.rhai", "script: extrakt.rhai");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    // The problem points at the reference to fix, and names the file that is missing.
    let d = expect(
        &diags,
        "io",
        &dir.join("workflow.yaml"),
        line(&yaml, "extrakt.rhai"),
        Some("extract"),
    );
    assert!(d.message.contains("extrakt.rhai"), "{d}");
}

#[test]
fn yaml_syntax_error() {
    let yaml = BASE.replace("    queue: refunds\n", "    queue: refunds: all\n");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    // The parser stops at the first syntax error; the node is found by indentation.
    expect(
        &diags,
        "syntax",
        &dir.join("workflow.yaml"),
        line(&yaml, "queue: refunds: all"),
        Some("approval"),
    );
    assert_eq!(codes(&diags), ["syntax"]);
}

#[test]
fn yaml_syntax_error_outside_the_nodes() {
    let yaml = BASE.replace("intents: [request_refund]", "intents: [request_refund");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = diags.iter().find(|d| d.code.as_str() == "syntax").unwrap();
    assert_eq!(d.file, dir.join("workflow.yaml"), "{d}");
    assert!(d.line >= line(&yaml, "intents:"), "{d}");
    assert!(
        d.line > 0 && d.to_string().contains("workflow.yaml:"),
        "{d}"
    );
}

#[test]
fn unknown_node_kind() {
    let yaml = BASE.replace(
        "{kind: reply, template: done",
        "{kind: answer, template: done",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "invalid_value",
        &dir.join("workflow.yaml"),
        line(&yaml, "kind: answer"),
        Some("reply"),
    );
    assert!(d.message.contains("unknown node kind `answer`"), "{d}");
    // The graph checks are skipped: with a node unread, they would report phantom dead ends.
    assert_eq!(codes(&diags), ["invalid_value"]);
}

#[test]
fn several_defects_are_reported_at_once() {
    let yaml = BASE
        .replace("version: 1\n", "version: 1\nowner: payments team\n")
        .replace("    otherwise: reply\n", "")
        .replace(
            "{kind: reply, template: done, next: done}",
            "{kind: reply, template: done, next: finish}",
        )
        + "  orphan: {kind: end, outcome: lost}\n";
    let script = "case.amount = ;\n";
    let schema = "{\"type\": 12}";
    let (_tmp, dir, diags) = broken(
        &yaml,
        &[("extract.rhai", script), ("input.schema.json", schema)],
    );
    let file = dir.join("workflow.yaml");
    expect(&diags, "unknown_field", &file, line(&yaml, "owner:"), None);
    expect(
        &diags,
        "missing_otherwise",
        &file,
        line(&yaml, "  route:"),
        Some("route"),
    );
    expect(
        &diags,
        "dangling_edge",
        &file,
        line(&yaml, "next: finish"),
        Some("reply"),
    );
    expect(
        &diags,
        "unreachable_node",
        &file,
        line(&yaml, "  orphan:"),
        Some("orphan"),
    );
    expect(
        &diags,
        "script_error",
        &dir.join("extract.rhai"),
        1,
        Some("extract"),
    );
    expect(
        &diags,
        "invalid_input_schema",
        &dir.join("input.schema.json"),
        1,
        None,
    );
}

/// A workflow that answers two intents from its knowledge base.
const ANSWERS: &str = r#"id: demo
version: 1
risk: informational
knowledge: knowledge.yaml
intents: [exchange_rate, card_acceptance]
start: answer
nodes:
  answer: {kind: reply, template: knowledge, next: done}
  done: {kind: end, outcome: answered}
"#;

const KNOWLEDGE: &str = r#"version: 1
answers:
  exchange_rate:
    en: "We use the interbank rate."
    de: "Wir verwenden den Interbankenkurs."
  card_acceptance:
    en: "Wherever you see the Mastercard sign."
    de: "Überall mit Mastercard-Zeichen."
"#;

#[test]
fn a_knowledge_workflow_compiles() {
    compiles(ANSWERS, &[("knowledge.yaml", KNOWLEDGE)]);
}

#[test]
fn an_intent_without_an_answer_is_named_where_it_is_listed() {
    let knowledge = KNOWLEDGE.replace(
        "  card_acceptance:\n    en: \"Wherever you see the Mastercard sign.\"\n    de: \"Überall mit Mastercard-Zeichen.\"\n",
        "",
    );
    let (_tmp, dir, diags) = broken(ANSWERS, &[("knowledge.yaml", &knowledge)]);
    let d = expect(
        &diags,
        "template_error",
        &dir.join("workflow.yaml"),
        line(ANSWERS, "intents:"),
        None,
    );
    assert!(
        d.message
            .contains("`card_acceptance` has no answer in the knowledge base `knowledge.yaml`"),
        "{d}"
    );
}

#[test]
fn an_answer_for_an_intent_not_served_or_without_a_language_is_named_in_the_knowledge_file() {
    let knowledge = format!(
        "{KNOWLEDGE}  atm_support:\n    en: \"Any machine.\"\n    de: \"Jeder Automat.\"\n"
    )
    .replace("    de: \"Wir verwenden den Interbankenkurs.\"\n", "");
    let (_tmp, dir, diags) = broken(ANSWERS, &[("knowledge.yaml", &knowledge)]);
    let file = dir.join("knowledge.yaml");
    let d = diags
        .iter()
        .find(|d| d.message.contains("`atm_support`"))
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(
        (d.file.as_path(), d.line),
        (file.as_path(), line(&knowledge, "atm_support:"))
    );
    assert!(d.message.contains("does not serve"), "{d}");
    let d = diags
        .iter()
        .find(|d| d.message.contains("`exchange_rate` has no `de` text"))
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(
        (d.file.as_path(), d.line),
        (file.as_path(), line(&knowledge, "exchange_rate:"))
    );
}

#[test]
fn an_answer_is_a_sandboxed_template_like_any_reply() {
    let knowledge = KNOWLEDGE.replace(
        "We use the interbank rate.",
        "{% set x = 1 %}We use the interbank rate.",
    );
    let (_tmp, dir, diags) = broken(ANSWERS, &[("knowledge.yaml", &knowledge)]);
    let d = diags
        .iter()
        .find(|d| d.message.contains("answer for `exchange_rate` (en)"))
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.file, dir.join("knowledge.yaml"));
}

#[test]
fn a_knowledge_file_outside_the_workflow_or_missing_is_refused_where_it_is_named() {
    let yaml = ANSWERS.replace("knowledge: knowledge.yaml", "knowledge: ../secrets.yaml");
    let (_tmp, dir, diags) = broken(&yaml, &[("knowledge.yaml", KNOWLEDGE)]);
    expect(
        &diags,
        "path_outside_workflow",
        &dir.join("workflow.yaml"),
        line(&yaml, "knowledge:"),
        None,
    );
    let (_tmp, dir, diags) = broken(ANSWERS, &[]);
    let d = expect(
        &diags,
        "io",
        &dir.join("workflow.yaml"),
        line(ANSWERS, "knowledge:"),
        None,
    );
    assert!(d.message.contains("`knowledge`"), "{d}");
}

#[test]
fn the_knowledge_template_needs_a_knowledge_base_and_is_reserved_when_there_is_one() {
    let yaml = ANSWERS.replace("knowledge: knowledge.yaml\n", "");
    let (_tmp, _dir, diags) = broken(&yaml, &[]);
    assert!(
        diags.iter().any(|d| d
            .message
            .contains("reply template `knowledge` is not defined")),
        "{diags:?}"
    );
    let yaml = ANSWERS.replace(
        "start: answer\n",
        "start: answer\nreplies:\n  knowledge: {en: \"x\", de: \"y\"}\n",
    );
    let (_tmp, _dir, diags) = broken(&yaml, &[("knowledge.yaml", KNOWLEDGE)]);
    assert!(
        diags.iter().any(|d| d.message.contains("is reserved")),
        "{diags:?}"
    );
}

#[test]
fn an_unknown_risk_class_is_refused_and_a_missing_one_is_the_strictest() {
    let yaml = BASE.replace("intents:", "risk: harmless\nintents:");
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "invalid_value",
        &dir.join("workflow.yaml"),
        line(&yaml, "risk:"),
        None,
    );
    assert!(
        d.message
            .contains("informational, reversible, irreversible"),
        "{d}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_dir(tmp.path(), "demo", BASE, &[]);
    let wf = compile_dir(&dir, &Rules::default()).unwrap();
    assert_eq!(wf.risk, casegraph_engine::workflow::Risk::Irreversible);
}

/// An irreversible workflow that books a refund: the reviewer's approval is one way to the
/// call; `route` adds a second one that passes no confirmation unless `confirming` says so.
fn refund_workflow(risk: &str, small: &str, confirming: &str) -> String {
    format!(
        r#"id: demo
version: 1
risk: {risk}
intents: [request_refund]
start: extract
replies:
  done: {{en: "Done.", de: "Erledigt."}}
  confirm: {{en: "Shall we book it?", de: "Sollen wir buchen?"}}
nodes:
  extract: {{kind: rule, script: extract.rhai, next: route}}
  route:
    kind: decision
    branches:
      - when: "case.amount > 100"
        to: approval
    otherwise: {small}
  approval:
    kind: human
    queue: refunds
    decisions: {{approve: book, reject: rejected}}
  ask_confirm:
    kind: ask
    template: confirm
    answer: confirmation
    timeout: 7d
    on_timeout: rejected
  confirmation:
    kind: decision
    branches:
      - when: "{confirming}"
        to: book
    otherwise: rejected
  book:
    kind: call
    connector: payments
    operation: refund
    next: reply
  reply: {{kind: reply, template: done, next: done}}
  done: {{kind: end, outcome: done}}
  rejected: {{kind: end, outcome: rejected}}
"#
    )
}

#[test]
fn an_irreversible_call_without_confirmation_or_reviewer_is_refused_naming_the_path() {
    // The small refund goes straight to the booking: refused, naming the path and the call.
    let yaml = refund_workflow(
        "irreversible",
        "book",
        "confirmed(case.answers?.ask_confirm)",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "no_confirmation",
        &dir.join("workflow.yaml"),
        line(&yaml, "  book:"),
        Some("book"),
    );
    assert!(
        d.message.contains("`extract` → `route` → `book`"),
        "the path is named: {d}"
    );
    assert!(
        d.message.contains("payments.refund"),
        "the call is named: {d}"
    );

    // A negated confirmation is no confirmation.
    let yaml = refund_workflow(
        "irreversible",
        "ask_confirm",
        "!confirmed(case.answers?.ask_confirm)",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "no_confirmation",
        &dir.join("workflow.yaml"),
        line(&yaml, "  book:"),
        Some("book"),
    );
    assert!(
        d.message
            .contains("`extract` → `route` → `ask_confirm` → `confirmation` → `book`"),
        "{d}"
    );

    // The customer's yes, or a reviewer's decision, on every path: it publishes.
    compiles(
        &refund_workflow(
            "irreversible",
            "ask_confirm",
            "confirmed(case.answers?.ask_confirm)",
        ),
        &[],
    );
    // A reversible workflow, or a call marked as a look-up, is not bound by the rule (the
    // question nobody reaches is this workflow's only problem).
    let reversible = refund_workflow("reversible", "book", "true");
    let read = refund_workflow("irreversible", "book", "true").replace(
        "    operation: refund\n",
        "    operation: refund\n    effect: read\n",
    );
    for yaml in [reversible, read] {
        let (_tmp, _dir, diags) = broken(&yaml, &[]);
        assert_eq!(
            codes(&diags),
            ["unreachable_node", "unreachable_node"],
            "{diags:?}"
        );
    }
}

#[test]
fn an_unknown_call_effect_is_refused_where_it_is_written() {
    let yaml = refund_workflow("reversible", "book", "true").replace(
        "    operation: refund\n",
        "    operation: refund\n    effect: maybe\n",
    );
    let (_tmp, dir, diags) = broken(&yaml, &[]);
    let d = expect(
        &diags,
        "invalid_value",
        &dir.join("workflow.yaml"),
        line(&yaml, "effect: maybe"),
        Some("book"),
    );
    assert!(d.message.contains("`read`"), "{d}");
}
