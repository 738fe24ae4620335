//! Hostile input: the rule and template sandbox.
//!
//! An author publishes workflows whose rules block or burn and whose reply templates run
//! away; the box must refuse what it can see at publish, fail the rest fast with an error
//! naming the limit, and keep serving ordinary cases meanwhile (`workers = 2`, so two held
//! workers would stall all processing). An attack that could take the process down (a
//! template writing gigabytes) runs against the real `casegraph serve` binary, so an abort
//! is observed rather than killing the test runner.

use std::path::Path;
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::process::Process;
use crate::support::{Response, Server};

/// Far beyond the 1 s deadline, far below what the attacks took before it (30 s for
/// `sleep(30)`, minutes for the burning loop, forever for the template).
const BOUND: Duration = Duration::from_secs(20);

const REPLY_OK: &str = "Hello {{ case_id }}";

/// A one-rule workflow `id` (intent `id`): `rule` runs, then reply `hello` renders.
fn bundle(id: &str, rule: &str, template: &str) -> Value {
    let yaml = format!(
        "id: {id}\nversion: 1\nintents: [{id}]\nlanguages: [en]\nstart: burn\n\
         replies:\n  hello:\n    en: {template}\n\
         nodes:\n  burn: {{kind: rule, script: burn.rhai, next: answer}}\n  \
         answer: {{kind: reply, template: hello, next: done}}\n  done: {{kind: end, outcome: done}}\n",
        template = serde_json::to_string(template).unwrap(),
    );
    json!({
        "id": id,
        "files": {
            "workflow.yaml": yaml,
            "burn.rhai": rule,
            "input.schema.json": "{\"type\": \"object\"}",
        }
    })
}

/// A request the box routes to workflow `intent` without asking the model.
fn stated(intent: &str) -> Value {
    json!({
        "channel": "form", "language": "en", "customer_id": "C-100001",
        "text": "hostile", "fields": {},
        "metadata": { "intent": intent, "confidence": 1.0 }
    })
}

/// An ordinary small refund: completes in well under a second when a worker is free.
fn ordinary() -> Value {
    json!({
        "channel": "form", "language": "en", "customer_id": "C-100002",
        "text": "Please refund the cancelled order.", "fields": { "amount": "25.00" },
        "metadata": { "intent": "request_refund", "confidence": 0.97 }
    })
}

/// Submits a request whose intent is stated; only a token that may state a classification
/// (an admin here) has it decide the route, so the hostile workflow is the one that runs.
fn submit_stated(s: &Server, intent: &str) -> String {
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Admin),
        Some(&stated(intent)),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    r.json["case_id"].as_str().unwrap().to_string()
}

fn publish(s: &Server, body: &Value) -> Response {
    s.call("POST", "/v1/workflows", Some(Role::Author), Some(body))
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

/// Polls a case until it is final, at most [`BOUND`] after `since`.
fn final_within(s: &Server, id: &str, since: Instant) -> Value {
    loop {
        let r = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
        assert_eq!(r.status, 200, "{}", r.text);
        if is_final(&r.json) {
            return r.json;
        }
        assert!(
            since.elapsed() < BOUND,
            "case {id} was still running after {BOUND:?}: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Submits two hostile cases (one per worker) and an ordinary one; returns the hostile
/// cases, final, after checking that the ordinary one completed within the bound.
fn two_hostile_and_one_ordinary(s: &Server, intent: &str) -> Vec<Value> {
    let start = Instant::now();
    let hostile: Vec<String> = (0..2).map(|_| submit_stated(s, intent)).collect();
    let plain = s.submit(&ordinary());
    let done = final_within(s, &plain, start);
    assert_eq!(done["status"], "completed", "{done}");
    hostile
        .iter()
        .map(|id| final_within(s, id, start))
        .collect()
}

fn diagnostics(r: &Response) -> String {
    r.json["error"]["details"]["diagnostics"].to_string()
}

#[test]
fn sandbox_a_rule_calling_sleep_is_refused_at_publish() {
    let s = Server::start();
    let r = publish(&s, &bundle("hostile_sleep", "sleep(30);\n", REPLY_OK));
    r.assert_error(422, "workflow_invalid");
    let d = diagnostics(&r);
    assert!(d.contains("function not found: `sleep`"), "{}", r.text);
    assert!(d.contains("burn.rhai"), "names the file: {}", r.text);
    // Inline expressions are checked the same way.
    let mut body = bundle("hostile_sleep", "case.x = 1;\n", REPLY_OK);
    let yaml = body["files"]["workflow.yaml"].as_str().unwrap().replace(
        "burn: {kind: rule, script: burn.rhai, next: answer}",
        "burn: {kind: checkpoint, name: nap, assert: \"sleep(30) == ()\", next: answer}",
    );
    body["files"]["workflow.yaml"] = json!(yaml);
    let r = publish(&s, &body);
    r.assert_error(422, "workflow_invalid");
    assert!(diagnostics(&r).contains("`sleep`"), "{}", r.text);
}

#[test]
fn sandbox_sleep_reached_through_a_function_pointer_fails_the_case_at_once() {
    let s = Server::start();
    let rule = "let f = Fn(\"sle\" + \"ep\");\nf.call(30);\n";
    let r = publish(&s, &bundle("hostile_nap", rule, REPLY_OK));
    assert_eq!(r.status, 201, "{}", r.text);
    for case in two_hostile_and_one_ordinary(&s, "hostile_nap") {
        assert_eq!(case["status"], "failed", "{case}");
        let error = case["error"].as_str().unwrap_or_default();
        assert!(error.contains("function not found"), "{case}");
        assert!(error.contains("node `burn`"), "{case}");
    }
}

#[test]
fn sandbox_a_rule_burning_past_the_deadline_fails_its_case_and_frees_the_worker() {
    let s = Server::start();
    // Each `pad` is one operation of some milliseconds: under the operations limit alone
    // this loop holds a worker for minutes.
    let rule = "loop {\n  let s = \"\";\n  s.pad(60000, 'y');\n}\n";
    let r = publish(&s, &bundle("hostile_burn", rule, REPLY_OK));
    assert_eq!(r.status, 201, "{}", r.text);
    for case in two_hostile_and_one_ordinary(&s, "hostile_burn") {
        assert_eq!(case["status"], "failed", "{case}");
        let error = case["error"].as_str().unwrap_or_default();
        assert!(error.contains("1000 ms (limit max_run_ms)"), "{case}");
        assert!(error.contains("node `burn`"), "{case}");
    }
}

#[test]
fn sandbox_the_deadline_is_configurable() {
    let s = Server::start_with(|c| c.rules.max_run_ms = 200);
    let rule = "loop {\n  let s = \"\";\n  s.pad(60000, 'y');\n}\n";
    assert_eq!(
        publish(&s, &bundle("hostile_burn", rule, REPLY_OK)).status,
        201
    );
    let id = submit_stated(&s, "hostile_burn");
    let case = final_within(&s, &id, Instant::now());
    assert!(
        case["error"]
            .as_str()
            .unwrap_or_default()
            .contains("200 ms (limit max_run_ms)"),
        "{case}"
    );
}

#[test]
fn sandbox_templates_that_repeat_assign_or_grow_are_refused_at_publish() {
    let s = Server::start();
    for (template, needle) in [
        ("{{ \"x\" * 100000000 }}", "`*`"),
        (
            "{% set s = case_id %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s }}",
            "`{% set %}`",
        ),
        (
            "{% for a in [case_id ~ case_id] %}{% for b in [a ~ a] %}{{ b }}{% endfor %}{% endfor %}",
            "a `for` loop",
        ),
        ("{{ [1] | batch(100000000000, 0) }}", "`batch`"),
        ("{{ case_id | indent(2000000000) }}", "`indent`"),
    ] {
        let r = publish(&s, &bundle("hostile_reply", "case.x = 1;", template));
        r.assert_error(422, "workflow_invalid");
        let d = diagnostics(&r);
        assert!(
            d.contains("reply template `hello` (en)"),
            "{template}: {}",
            r.text
        );
        assert!(d.contains(needle), "{template}: {}", r.text);
    }
    let big = "x".repeat(20_000);
    let r = publish(&s, &bundle("hostile_reply", "case.x = 1;", &big));
    r.assert_error(422, "workflow_invalid");
    assert!(
        diagnostics(&r).contains("rules.max_template_bytes"),
        "{}",
        r.text
    );
}

/// The real `casegraph serve` on a free port with a fresh data directory.
/// The real binary, called as its bootstrap admin.
struct Binary(Process);

impl Binary {
    fn start(data: &Path) -> Binary {
        Binary(Process::start(data))
    }

    /// A request as admin; `None` when the process gave no answer.
    fn call(&self, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        self.0.call(path, &self.0.admin, body)
    }

    fn alive(&mut self) -> bool {
        self.0.alive()
    }

    /// Polls a case until final; fails if the process died or the bound passed.
    fn final_within(&mut self, id: &str, since: Instant) -> Value {
        loop {
            assert!(self.alive(), "the server process died while case {id} ran");
            if let Some((200, case)) = self.call(&format!("/v1/cases/{id}"), None)
                && is_final(&case)
            {
                return case;
            }
            assert!(
                since.elapsed() < BOUND,
                "case {id} was still running after {BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn submit(&self, body: &Value) -> String {
        let (status, answer) = self
            .call("/v1/requests", Some(body))
            .expect("intake answers");
        assert_eq!(status, 202, "{answer}");
        answer["case_id"].as_str().unwrap().to_string()
    }
}

#[test]
fn sandbox_a_runaway_template_fails_its_case_fast_and_the_process_lives() {
    let data = tempfile::tempdir().unwrap();
    let mut box_ = Binary::start(data.path());
    // 150 bytes of template, 10^10 lines of output when unbounded.
    let template = "{% for i in range(100000) %}{% for j in range(100000) %}{{ case_id }} {{ i }} {{ j }}\n{% endfor %}{% endfor %}";
    let (status, answer) = box_
        .call(
            "/v1/workflows",
            Some(&bundle("hostile_reply", "case.x = 1;", template)),
        )
        .expect("publish answers");
    assert_eq!(status, 201, "{answer}");
    let start = Instant::now();
    let hostile: Vec<String> = (0..2)
        .map(|_| box_.submit(&stated("hostile_reply")))
        .collect();
    let plain = box_.submit(&ordinary());
    let done = box_.final_within(&plain, start);
    assert_eq!(done["status"], "completed", "{done}");
    for id in hostile {
        let case = box_.final_within(&id, start);
        assert_eq!(case["status"], "failed", "{case}");
        let error = case["error"].as_str().unwrap_or_default();
        assert!(error.contains("reply template `hello` failed"), "{case}");
        assert!(error.contains("(limit max_reply_bytes)"), "{case}");
    }
    // A loop that writes nothing ends by fuel.
    let quiet = "{% for i in range(100000) %}{% for j in range(100000) %}{% if i < 0 %}x{% endif %}{% endfor %}{% endfor %}done";
    let mut body = bundle("hostile_reply", "case.x = 1;", quiet);
    body["files"]["workflow.yaml"] = json!(
        body["files"]["workflow.yaml"]
            .as_str()
            .unwrap()
            .replace("version: 1", "version: 2")
    );
    let (status, answer) = box_
        .call("/v1/workflows", Some(&body))
        .expect("publish answers");
    assert_eq!(status, 201, "{answer}");
    let id = box_.submit(&stated("hostile_reply"));
    let case = box_.final_within(&id, Instant::now());
    assert_eq!(case["status"], "failed", "{case}");
    assert!(
        case["error"]
            .as_str()
            .unwrap_or_default()
            .contains("(limit template_fuel)"),
        "{case}"
    );
    assert!(box_.alive());
}
