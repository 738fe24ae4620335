//! The published JSON Schemas of the file formats (`workflows/workflow.schema.json`,
//! `workflows/fixture.schema.json`) are valid draft 2020-12 schemas, accept every shipped
//! file, name exactly the fields `workflow::def` knows, and agree with the compiler on a
//! table of documents it accepts and rejects.
//!
//! The schema checks shape only; graph checks (dangling edges, reachability, cycles) and
//! compiling scripts stay with `casegraph validate`, so the agreement table only holds
//! documents whose graph is sound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{compile_dir, def, nodes};
use marked_yaml::Node;
use serde_json::{Value, json};

const MODELINE: &str = "# yaml-language-server: $schema=../workflow.schema.json";

fn workflows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workflows")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema(name: &str) -> (Value, jsonschema::Validator) {
    let path = workflows_dir().join(name);
    let value = read_json(&path);
    if let Err(e) = jsonschema::meta::validate(&value) {
        panic!(
            "{} is not a valid JSON Schema at `{}`: {e}",
            path.display(),
            e.instance_path()
        );
    }
    let validator = jsonschema::validator_for(&value)
        .unwrap_or_else(|e| panic!("{}: cannot build a validator: {e}", path.display()));
    (value, validator)
}

/// Every violation, with where it is, for assertion messages.
fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("`{}`: {e}", e.instance_path()))
        .collect()
}

/// YAML to JSON the way an editor's YAML language server types it (YAML 1.2 core schema):
/// plain `null`/`~`, `true`/`false`, integers and decimals become JSON values; quoted
/// scalars stay strings.
fn yaml_to_json(text: &str) -> Value {
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options).expect("YAML parses");
    to_json(&root)
}

fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            match text {
                "null" | "Null" | "NULL" | "~" | "" => Value::Null,
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => match (text.parse::<i64>(), text.parse::<f64>()) {
                    (Ok(i), _) => Value::from(i),
                    (_, Ok(f)) if f.is_finite() && text.chars().any(|c| c.is_ascii_digit()) => {
                        serde_json::Number::from_f64(f)
                            .map(Value::Number)
                            .unwrap_or_else(|| Value::String(text.to_string()))
                    }
                    _ => Value::String(text.to_string()),
                },
            }
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

fn shipped_workflow_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .expect("workflows directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("workflow.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn shipped_workflow(id: &str) -> Value {
    let text = std::fs::read_to_string(workflows_dir().join(id).join("workflow.yaml"))
        .expect("shipped workflow");
    yaml_to_json(&text)
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn the_schemas_are_valid_draft_2020_12_schemas() {
    for name in ["workflow.schema.json", "fixture.schema.json"] {
        let (value, _) = schema(name);
        assert_eq!(
            value["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name} declares draft 2020-12"
        );
    }
}

#[test]
fn the_schema_names_exactly_the_fields_of_the_format() {
    let (s, _) = schema("workflow.schema.json");
    assert_eq!(
        keys(&s["properties"]),
        sorted(def::TOP_LEVEL_FIELDS),
        "top-level fields"
    );
    assert_eq!(s["additionalProperties"], json!(false));
    let kinds: Vec<&str> = s["$defs"]["node"]["properties"]["kind"]["enum"]
        .as_array()
        .expect("kind enum")
        .iter()
        .map(|k| k.as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, nodes::NODE_KINDS, "node kinds, in order");
    for kind in nodes::NODE_KINDS {
        let node = &s["$defs"][kind];
        let mut expected: Vec<&str> = vec!["kind", "description", "max_visits"];
        expected.extend(nodes::allowed_fields(kind).expect("known kind"));
        assert_eq!(
            keys(&node["properties"]),
            sorted(&expected),
            "fields of a `{kind}` node"
        );
        assert_eq!(
            node["additionalProperties"],
            json!(false),
            "a `{kind}` node denies other fields"
        );
        assert_eq!(node["properties"]["kind"]["const"], json!(kind));
    }
}

/// Walks a schema and collects every `properties` entry without a description (its own or
/// that of the definition it refers to), so an editor has help for every field. The `if`
/// of a conditional only tests a value and is skipped.
fn undescribed(schema: &Value, here: &Value, at: &str, out: &mut Vec<String>) {
    match here {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    let referred = prop
                        .get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| r.strip_prefix('#'))
                        .and_then(|p| schema.pointer(p));
                    let described = prop.get("description").is_some()
                        || referred.is_some_and(|r| r.get("description").is_some());
                    if !described {
                        out.push(format!("{at}/properties/{name}"));
                    }
                }
            }
            for (k, v) in map.iter().filter(|(k, _)| *k != "if") {
                undescribed(schema, v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                undescribed(schema, v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_property_is_described() {
    for name in ["workflow.schema.json", "fixture.schema.json"] {
        let (s, _) = schema(name);
        let mut missing = Vec::new();
        undescribed(&s, &s, "#", &mut missing);
        assert!(
            missing.is_empty(),
            "{name}: properties without a description: {missing:?}"
        );
    }
}

#[test]
fn shipped_workflows_match_the_schema_and_point_editors_at_it() {
    let (_, validator) = schema("workflow.schema.json");
    let dirs = shipped_workflow_dirs();
    assert!(dirs.len() >= 6, "the shipped workflows are found");
    for dir in dirs {
        let file = dir.join("workflow.yaml");
        let text = std::fs::read_to_string(&file).expect("workflow.yaml");
        assert_eq!(
            text.lines().next(),
            Some(MODELINE),
            "{}: the first line points the YAML language server at the schema",
            file.display()
        );
        let problems = violations(&validator, &yaml_to_json(&text));
        assert!(
            problems.is_empty(),
            "{} does not match workflow.schema.json:\n{}",
            file.display(),
            problems.join("\n")
        );
    }
}

#[test]
fn shipped_fixtures_match_the_fixture_schema() {
    let (_, validator) = schema("fixture.schema.json");
    let mut dirs = shipped_workflow_dirs();
    dirs.push(workflows_dir().join("routing"));
    let mut checked = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("tests")) else {
            continue;
        };
        for entry in entries {
            let file = entry.expect("entry").path();
            if file.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("fixture");
            let problems = violations(&validator, &yaml_to_json(&text));
            assert!(
                problems.is_empty(),
                "{} does not match fixture.schema.json:\n{}",
                file.display(),
                problems.join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fixtures found");
}

/// A change to a shipped workflow and whether the format accepts the result.
struct Case {
    what: &'static str,
    workflow: &'static str,
    change: fn(&mut Value),
    accepted: bool,
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent exists")
        .remove(key)
        .unwrap_or_else(|| panic!("{pointer} exists"));
}

fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent exists")
        .insert(key.to_string(), value);
}

fn cases() -> Vec<Case> {
    macro_rules! case {
        ($what:expr, $wf:expr, $accepted:expr, |$v:ident| $body:expr) => {
            Case {
                what: $what,
                workflow: $wf,
                change: |$v: &mut Value| $body,
                accepted: $accepted,
            }
        };
    }
    const RR: &str = "request_refund";
    const CA: &str = "card_arrival";
    vec![
        // Accepted.
        case!("as shipped", RR, true, |_v| ()),
        case!("as shipped", CA, true, |_v| ()),
        case!("optional top-level fields spelled out", RR, true, |v| {
            set(v, "/languages", json!(["de", "en"]));
            set(v, "/input_schema", json!("input.schema.json"));
        }),
        case!("no title, description or limits", RR, true, |v| {
            remove(v, "/title");
            remove(v, "/description");
            remove(v, "/limits");
        }),
        case!("a visit bound and a description on a node", RR, true, |v| {
            set(v, "/nodes/book/max_visits", json!(2));
            set(v, "/nodes/book/description", json!("Books the refund."));
        }),
        case!("retry without backoff", RR, true, |v| {
            remove(v, "/nodes/book/retry/backoff")
        }),
        case!("an SLA in two units", RR, true, |v| {
            set(v, "/nodes/approval/sla", json!("1h 30m"))
        }),
        case!("an end with status completed", RR, true, |v| {
            set(v, "/nodes/refunded/status", json!("completed"))
        }),
        case!("a wait for a fixed duration", CA, true, |v| {
            remove(v, "/nodes/grace/until");
            set(v, "/nodes/grace/duration", json!("2d"));
        }),
        // Rejected.
        case!("an unknown top-level field", RR, false, |v| {
            set(v, "/owner", json!("payments team"))
        }),
        case!("an unknown node kind", RR, false, |v| {
            set(v, "/nodes/extract/kind", json!("script"))
        }),
        case!("no start", RR, false, |v| remove(v, "/start")),
        case!("no version", RR, false, |v| remove(v, "/version")),
        case!("a quoted version", RR, false, |v| {
            set(v, "/version", json!("1"))
        }),
        case!("no intents", RR, false, |v| set(v, "/intents", json!([]))),
        case!("an intent listed twice", RR, false, |v| {
            set(v, "/intents", json!(["request_refund", "request_refund"]))
        }),
        case!("a field no node knows", RR, false, |v| {
            set(v, "/nodes/book/retries", json!(3))
        }),
        case!("a field of another kind", RR, false, |v| {
            set(v, "/nodes/extract/queue", json!("refunds"))
        }),
        case!("an end with next", RR, false, |v| {
            set(v, "/nodes/refunded/next", json!("rejected"))
        }),
        case!("a rule without script", RR, false, |v| {
            remove(v, "/nodes/extract/script")
        }),
        case!("a decision without otherwise", RR, false, |v| {
            remove(v, "/nodes/check_amount/otherwise")
        }),
        case!("a branch with an unknown field", RR, false, |v| {
            set(v, "/nodes/check_amount/branches/0/if", json!("true"))
        }),
        case!("an empty condition", RR, false, |v| {
            set(v, "/nodes/check_amount/branches/0/when", json!(""))
        }),
        case!("a call without operation", RR, false, |v| {
            remove(v, "/nodes/book/operation")
        }),
        case!("no attempts at all", RR, false, |v| {
            set(v, "/nodes/book/retry/max_attempts", json!(0))
        }),
        case!("a retry field that does not exist", RR, false, |v| {
            set(v, "/nodes/book/retry/jitter", json!(true))
        }),
        case!("a human task without decisions", RR, false, |v| {
            set(v, "/nodes/manual_booking/decisions", json!({}))
        }),
        case!("an SLA without escalation", RR, false, |v| {
            set(v, "/nodes/manual_booking/sla", json!("4h"))
        }),
        case!("a duration without unit", RR, false, |v| {
            set(v, "/nodes/approval/sla", json!("8"))
        }),
        case!("a duration in words", RR, false, |v| {
            set(v, "/nodes/approval/sla", json!("soon"))
        }),
        case!("a wait with both duration and until", CA, false, |v| {
            set(v, "/nodes/grace/duration", json!("2d"))
        }),
        case!("a wait with neither duration nor until", CA, false, |v| {
            remove(v, "/nodes/grace/until")
        }),
        case!("a checkpoint without assert", RR, false, |v| {
            remove(v, "/nodes/within_limit/assert")
        }),
        case!("a reply without template", RR, false, |v| {
            remove(v, "/nodes/reply_refunded/template")
        }),
        case!("an unknown end status", RR, false, |v| {
            set(v, "/nodes/refunded/status", json!("closed"))
        }),
        case!("a visit bound of zero", RR, false, |v| {
            set(v, "/nodes/book/max_visits", json!(0))
        }),
        case!("a step bound of zero", RR, false, |v| {
            set(v, "/limits/max_steps", json!(0))
        }),
        case!("an unknown limit", RR, false, |v| {
            set(v, "/limits/max_seconds", json!(10))
        }),
        case!("an id that is not lower_snake_case", RR, false, |v| {
            set(v, "/id", json!("Request-Refund"))
        }),
    ]
}

/// Copies a shipped workflow's files (not its tests) into `<tmp>/<id>/` with `document` as
/// its `workflow.yaml`. JSON is YAML, so the document is written as JSON.
fn write_copy(tmp: &Path, id: &str, document: &Value) -> PathBuf {
    let dir = tmp.join(id);
    std::fs::create_dir_all(&dir).expect("create dir");
    for entry in std::fs::read_dir(workflows_dir().join(id)).expect("workflow dir") {
        let path = entry.expect("entry").path();
        if path.is_file() && path.file_name().is_some_and(|n| n != "workflow.yaml") {
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let text = serde_json::to_string_pretty(document).expect("serialize");
    std::fs::write(dir.join("workflow.yaml"), text).expect("write");
    dir
}

#[test]
fn the_schema_and_the_compiler_agree_on_what_is_a_workflow() {
    let (_, validator) = schema("workflow.schema.json");
    let rules = Rules::default();
    let mut disagreements = Vec::new();
    for case in cases() {
        let mut document = shipped_workflow(case.workflow);
        (case.change)(&mut document);
        let schema_problems = violations(&validator, &document);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = write_copy(tmp.path(), case.workflow, &document);
        let compiled = compile_dir(&dir, &rules);
        let schema_ok = schema_problems.is_empty();
        let compiler_ok = compiled.is_ok();
        if schema_ok != case.accepted || compiler_ok != case.accepted {
            let compiler = match &compiled {
                Ok(_) => "accepts".to_string(),
                Err(d) => format!(
                    "rejects: {}",
                    d.iter()
                        .map(|d| format!("{}: {}", d.code, d.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            let schema = if schema_ok {
                "accepts".to_string()
            } else {
                format!("rejects: {}", schema_problems.join("; "))
            };
            disagreements.push(format!(
                "{} ({}), expected {}:\n  schema {schema}\n  compiler {compiler}",
                case.what,
                case.workflow,
                if case.accepted {
                    "accepted"
                } else {
                    "rejected"
                }
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} case(s) went the wrong way:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

#[test]
fn broken_documents_are_rejected_where_they_are_broken() {
    let (_, validator) = schema("workflow.schema.json");
    let mut doc = shipped_workflow("request_refund");
    set(&mut doc, "/nodes/extract/kind", json!("script"));
    let problems = violations(&validator, &doc);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("`/nodes/extract/kind`")),
        "an unknown kind is reported at the kind: {problems:?}"
    );

    let mut doc = shipped_workflow("request_refund");
    set(&mut doc, "/nodes/book/retries", json!(3));
    let problems = violations(&validator, &doc);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("`/nodes/book`") && p.contains("retries")),
        "an unknown field is reported on its node: {problems:?}"
    );

    let mut doc = shipped_workflow("request_refund");
    remove(&mut doc, "/start");
    let problems = violations(&validator, &doc);
    assert!(
        problems.iter().any(|p| p.contains("\"start\"")),
        "a missing start is named: {problems:?}"
    );
}
