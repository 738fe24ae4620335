//! Workflow bundles as a hostile author sends them (`POST /v1/workflows`, the console's
//! check): paths that leave the workflow's folder, YAML nested deep enough to overflow a
//! stack, hostile JSON Schemas; and who may read a workflow's scripts.
//!
//! An attack that could abort the process runs against the spawned `casegraph` binary, so
//! an abort shows as a dead server rather than a dead test runner.

use std::collections::BTreeMap;

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::Server;
use crate::support::process::Process;

/// What the test server keeps in its data directory and an author must never read.
const CANARY: &str = "cg_canary0123456789abcdef";

/// A small, valid workflow whose one rule runs `script`; its fixture runs the rule, so a
/// script read from elsewhere would be executed (and its text quoted in the error).
fn probe(script: &str) -> BTreeMap<String, String> {
    let yaml = format!(
        "id: probe\nversion: 1\nintents: [probe_intent]\nstart: r\nnodes:\n  r:\n    kind: rule\n    script: {script}\n    next: done\n  done:\n    kind: end\n    outcome: ok\n"
    );
    BTreeMap::from([
        ("workflow.yaml".to_string(), yaml),
        ("input.schema.json".to_string(), "{}".to_string()),
        ("rule.rhai".to_string(), "let x = 1;".to_string()),
        (
            "tests/runs.yaml".to_string(),
            "name: runs\nrequest: {channel: chat, language: en, text: hi, fields: {}}\nclassification: {intent: probe_intent, confidence: 0.9, out_of_scope: false}\nexpect: {status: completed, outcome: ok}\n".to_string(),
        ),
    ])
}

fn publish(server: &Server, files: &BTreeMap<String, String>) -> crate::support::Response {
    server.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&json!({ "id": "probe", "files": files })),
    )
}

fn diagnostics(r: &crate::support::Response) -> Vec<Value> {
    r.json["error"]["details"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn bundle_paths_that_leave_the_workflow_folder_are_refused() {
    let server = Server::start();
    std::fs::write(server.data.path().join("admin.token"), CANARY).unwrap();
    for script in [
        "../../../admin.token",
        "/etc/hostname",
        "../card_arrival/extract.rhai",
        "./tests/../../../../admin.token",
        "tests/../../request_refund/extract.rhai",
    ] {
        let r = publish(&server, &probe(script));
        r.assert_error(422, "workflow_invalid");
        assert!(!r.text.contains(CANARY), "{script}: {}", r.text);
        let d = diagnostics(&r);
        assert_eq!(d.len(), 1, "{script}: {}", r.text);
        assert_eq!(
            d[0]["code"], "path_outside_workflow",
            "{script}: {}",
            r.text
        );
        assert_eq!(d[0]["file"], "probe/workflow.yaml", "{}", r.text);
        assert_eq!(d[0]["line"], 8, "the line of `script:`: {}", r.text);
        assert_eq!(d[0]["node"], "r", "{}", r.text);
        assert!(
            d[0]["message"].as_str().unwrap().contains("`script`"),
            "names the field: {}",
            r.text
        );
    }
    // The same through the input schema's path.
    let mut files = probe("rule.rhai");
    let yaml = files["workflow.yaml"].replace(
        "start: r\n",
        "start: r\ninput_schema: ../../../admin.token\n",
    );
    files.insert("workflow.yaml".into(), yaml);
    let r = publish(&server, &files);
    r.assert_error(422, "workflow_invalid");
    assert!(!r.text.contains(CANARY), "{}", r.text);
    assert_eq!(
        diagnostics(&r)[0]["code"],
        "path_outside_workflow",
        "{}",
        r.text
    );
    assert!(r.text.contains("`input_schema`"), "{}", r.text);

    // The console's check says the same, and quotes nothing either.
    let r = server.call(
        "POST",
        "/v1/console/workflows/check",
        Some(Role::Author),
        Some(&json!({ "id": "probe", "files": probe("../../../admin.token") })),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], false, "{}", r.text);
    assert_eq!(
        r.json["diagnostics"][0]["code"], "path_outside_workflow",
        "{}",
        r.text
    );
    assert!(!r.text.contains(CANARY), "{}", r.text);

    // The bundle itself still publishes once its path is its own.
    let r = publish(&server, &probe("rule.rhai"));
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn a_refused_path_does_not_tell_whether_a_file_exists_outside() {
    let server = Server::start();
    std::fs::write(server.data.path().join("admin.token"), CANARY).unwrap();
    let exists = publish(&server, &probe("../../../admin.token"));
    let missing = publish(&server, &probe("../../../no-such-file"));
    let message = |r: &crate::support::Response| {
        diagnostics(r)[0]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-file", "admin.token")
    };
    assert_eq!(message(&exists), message(&missing));
    for r in [&exists, &missing] {
        for leak in ["No such file", "os error", "not found", "does not exist"] {
            assert!(!r.text.contains(leak), "{leak}: {}", r.text);
        }
    }
    // A file missing inside the bundle may say so.
    let r = publish(&server, &probe("gone.rhai"));
    r.assert_error(422, "workflow_invalid");
    assert!(
        diagnostics(&r)[0]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("os error"), "{}", r.text);
}

#[test]
fn a_hostile_input_schema_is_refused_or_harmless() {
    let server = Server::start();
    let cases = [
        // External references are never fetched, from disk or the network.
        json!({"$ref": "file:///etc/passwd"}),
        json!({"$ref": "http://127.0.0.1:9/schema.json"}),
        // A pattern whose compiled program is enormous.
        json!({"type": "string", "pattern": "(\\w{1000}){1000}"}),
    ];
    for schema in cases {
        let mut files = probe("rule.rhai");
        files.insert("input.schema.json".into(), schema.to_string());
        let r = publish(&server, &files);
        r.assert_error(422, "workflow_invalid");
        assert_eq!(
            diagnostics(&r)[0]["code"],
            "invalid_input_schema",
            "{}",
            r.text
        );
        assert!(!r.text.contains("root:"), "{}", r.text);
    }
}

#[test]
fn only_authors_and_admins_read_workflow_scripts() {
    let server = Server::start();
    let rhai =
        std::fs::read_to_string(crate::support::workflows().join("request_refund/extract.rhai"))
            .unwrap();
    let needle = rhai.lines().find(|l| l.trim().len() > 20).unwrap().trim();
    for role in Role::ALL {
        let may = matches!(role, Role::Author | Role::Admin);
        for path in [
            "/v1/console/workflows/request_refund/definition",
            "/v1/console/workflows/request_refund/versions",
        ] {
            let r = server.call("GET", path, Some(role), None);
            assert_eq!(r.status, 200, "{role:?} {path}: {}", r.text);
            assert_eq!(
                r.text.contains(needle),
                may,
                "{role:?} {path} sees the rule source: {may}"
            );
        }
        // Everyone still gets the graph and the summary.
        let r = server.call(
            "GET",
            "/v1/console/workflows/request_refund/definition",
            Some(role),
            None,
        );
        assert!(
            !r.json["nodes"].as_array().unwrap().is_empty(),
            "{}",
            r.text
        );
        let r = server.call(
            "GET",
            "/v1/workflows/request_refund/graph",
            Some(role),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

/// The spawned `casegraph serve` with the shipped workflows and a bootstrap admin token.
/// The real binary with a data directory of its own.
struct Spawned {
    process: Process,
    admin: String,
    _data: tempfile::TempDir,
}

impl Spawned {
    fn start() -> Spawned {
        let data = tempfile::tempdir().unwrap();
        let process = Process::start(data.path());
        Spawned {
            admin: process.admin.clone(),
            process,
            _data: data,
        }
    }

    /// POST with a JSON body; (status, body). `None` when the server did not answer.
    fn post(&mut self, path: &str, token: &str, body: &Value) -> Option<(u16, Value)> {
        self.process.call(path, token, Some(body))
    }

    fn alive(&mut self) -> bool {
        self.process.alive()
    }

    fn author(&mut self) -> String {
        let admin = self.admin.clone();
        let (status, body) = self
            .post(
                "/v1/tokens",
                &admin,
                &json!({"role": "author", "name": "author"}),
            )
            .expect("answers");
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

/// ~24 KB of nesting, in each shape YAML has for it.
fn deep_yaml() -> Vec<(&'static str, String)> {
    let n = 12_000;
    vec![
        ("block sequences", format!("x:\n{}1\n", "- ".repeat(n))),
        (
            "flow sequences",
            format!("x: {}{}\n", "[".repeat(n), "]".repeat(n)),
        ),
        (
            "flow mappings",
            format!("x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
        ),
        (
            "block mappings",
            (0..500).fold(String::new(), |mut s, i| {
                s.push_str(&" ".repeat(i));
                s.push_str("a:\n");
                s
            }),
        ),
    ]
}

#[test]
fn deeply_nested_yaml_does_not_take_the_process_down() {
    let mut server = Spawned::start();
    let author = server.author();
    for (shape, text) in deep_yaml() {
        for (name, path) in [
            ("workflow.yaml", "/v1/workflows"),
            ("workflow.yaml", "/v1/console/workflows/check"),
            ("tests/deep.yaml", "/v1/workflows"),
        ] {
            let mut files = probe("rule.rhai");
            files.insert(name.to_string(), text.clone());
            let answer = server.post(path, &author, &json!({ "id": "probe", "files": files }));
            assert!(
                server.alive(),
                "{shape} in {name} on {path} killed the server"
            );
            let (status, body) = answer.expect("the server answers");
            let shown = body.to_string();
            match path {
                "/v1/workflows" => assert_eq!(status, 422, "{shape} {name}: {shown}"),
                _ => {
                    assert_eq!(status, 200, "{shape}: {shown}");
                    assert_eq!(body["valid"], false, "{shape}: {shown}");
                }
            }
            assert!(shown.contains(name), "names the file: {shown}");
            assert!(shown.contains("nest"), "says why: {shown}");
        }
    }
    // Deep expressions in the other languages a bundle carries: a rule script and a reply
    // template (their parsers have depth limits of their own; the box must survive both).
    let deep = format!("{}1{}", "(".repeat(20_000), ")".repeat(20_000));
    let mut files = probe("rule.rhai");
    files.insert("rule.rhai".into(), format!("let x = {deep};"));
    let answer = server.post(
        "/v1/workflows",
        &author,
        &json!({ "id": "probe", "files": files }),
    );
    assert!(server.alive(), "a deep rule script killed the server");
    assert_eq!(answer.expect("answers").0, 422);
    let mut files = probe("rule.rhai");
    let yaml = files["workflow.yaml"].replace(
        "start: r\n",
        &format!("start: r\nreplies:\n  t:\n    en: \"{{{{ {deep} }}}}\"\n    de: \"x\"\n"),
    );
    files.insert("workflow.yaml".into(), yaml);
    let answer = server.post(
        "/v1/workflows",
        &author,
        &json!({ "id": "probe", "files": files }),
    );
    assert!(server.alive(), "a deep reply template killed the server");
    assert_eq!(answer.expect("answers").0, 422);

    // A deep JSON Schema is refused too.
    let mut files = probe("rule.rhai");
    let schema = format!("{}{{}}{}", "{\"not\":".repeat(5_000), "}".repeat(5_000));
    files.insert("input.schema.json".into(), schema);
    let (status, body) = server
        .post(
            "/v1/workflows",
            &author,
            &json!({ "id": "probe", "files": files }),
        )
        .expect("answers");
    assert!(server.alive(), "a deep schema killed the server");
    assert_eq!(status, 422, "{body}");

    // The escape of row 1, against the real bootstrap token of the real process.
    let admin = server.admin.clone();
    let (status, body) = server
        .post(
            "/v1/workflows",
            &author,
            &json!({ "id": "probe", "files": probe("../../../admin.token") }),
        )
        .expect("answers");
    assert_eq!(status, 422, "{body}");
    assert!(!body.to_string().contains(&admin), "{body}");

    // And the box still works: a normal publish goes through.
    let (status, body) = server
        .post(
            "/v1/workflows",
            &author,
            &json!({ "id": "probe", "files": probe("rule.rhai") }),
        )
        .expect("answers");
    assert_eq!(status, 201, "{body}");
    assert!(server.alive());
}
