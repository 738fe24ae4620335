//! The web console's routes end to end: its files are served from the binary, and the API
//! routes it adds (`/v1/console/…`) answer without writing anything: a dry run creates no
//! case, a check publishes nothing. The screens themselves are tested in a browser
//! (`tests/browser/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use casegraph::auth::Role;
use serde_json::{Value, json};
use support::Server;

fn case_count(s: &Server) -> u64 {
    let r = s.call("GET", "/v1/console/cases", Some(Role::Admin), None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["total"].as_u64().unwrap()
}

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let s = Server::start();
    let page = s.call("GET", "/console/", None, None);
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.headers["content-security-policy"].contains("default-src 'self'"));
    assert!(page.text.contains("/console/app.js"));
    let js = s.call("GET", "/console/graph.js", None, None);
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"].starts_with("text/javascript"));
    s.call("GET", "/console/nope.js", None, None)
        .assert_error(404, "not_found");
    // The API behind it still wants a token.
    s.call("GET", "/v1/console/me", None, None)
        .assert_error(401, "unauthorized");
    let me = s.call("GET", "/v1/console/me", Some(Role::Auditor), None);
    assert_eq!(me.json["role"], "auditor");
}

#[test]
fn a_dry_run_answers_routing_and_path_and_creates_no_case() {
    let s = Server::start();
    let before = case_count(&s);
    let body = json!({
        "channel": "letter", "language": "de",
        "text": "Sehr geehrte Damen und Herren,\nbitte erstatten Sie mir 1.249,90 €.\nMit freundlichen Grüßen",
        "metadata": {"intent": "request_refund", "confidence": 0.92}
    });
    let r = s.call(
        "POST",
        "/v1/console/dry-run",
        Some(Role::Author),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["created_case"], false);
    assert!(r.json["classification"]["confidence"].is_number());
    assert!(r.json["route"]["rule"].is_string(), "{}", r.text);
    if r.json["route"]["workflow"].is_string() {
        assert!(
            r.json["run"]["path"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        );
    }
    assert_eq!(case_count(&s), before);
    assert!(s.call("GET", "/v1/tasks", Some(Role::Reviewer), None).json == json!([]));
    s.call(
        "POST",
        "/v1/console/dry-run",
        Some(Role::Reviewer),
        Some(&body),
    )
    .assert_error(403, "forbidden");
}

fn files_of(s: &Server, id: &str) -> serde_json::Map<String, Value> {
    let r = s.call(
        "GET",
        &format!("/v1/console/workflows/{id}/definition"),
        Some(Role::Author),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["files"].as_object().unwrap().clone()
}

#[test]
fn a_check_reports_every_problem_with_its_node_and_publishes_nothing() {
    let s = Server::start();
    let mut files = files_of(&s, "request_refund");
    let yaml = files["workflow.yaml"].as_str().unwrap().to_string();
    let broken = yaml.replacen("version: 1", "version: 2", 1).replacen(
        "next: check_amount",
        "next: nowhere",
        1,
    );
    files.insert("workflow.yaml".into(), json!(broken));
    let body = json!({"id": "request_refund", "files": files});
    let r = s.call(
        "POST",
        "/v1/console/workflows/check",
        Some(Role::Author),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], false);
    let dangling = r.json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "dangling_edge")
        .expect("the dangling edge is reported");
    assert_eq!(dangling["node"], "extract");
    assert!(dangling["line"].as_u64().unwrap() > 0);
    assert!(
        dangling["file"]
            .as_str()
            .unwrap()
            .ends_with("workflow.yaml")
    );

    // A good version checks out, with every fixture run; still nothing is published.
    let mut files = files_of(&s, "request_refund");
    files.insert(
        "workflow.yaml".into(),
        json!(yaml.replacen("version: 1", "version: 2", 1)),
    );
    let body = json!({"id": "request_refund", "files": files});
    let r = s.call(
        "POST",
        "/v1/console/workflows/check",
        Some(Role::Author),
        Some(&body),
    );
    assert_eq!(r.json["valid"], true, "{}", r.text);
    assert!(r.json["fixtures"].as_array().unwrap().len() >= 5);
    let served = s.call(
        "GET",
        "/v1/workflows/request_refund",
        Some(Role::Author),
        None,
    );
    assert_eq!(served.json["version"], 1);

    let fixtures = s.call(
        "POST",
        "/v1/console/workflows/request_refund/fixtures",
        Some(Role::Author),
        None,
    );
    assert_eq!(fixtures.json["failed"], 0, "{}", fixtures.text);
    let versions = s.call(
        "GET",
        "/v1/console/workflows/request_refund/versions",
        Some(Role::Author),
        None,
    );
    assert_eq!(versions.json["versions"].as_array().unwrap().len(), 1);
}

#[test]
fn case_search_filters_and_shows_no_personal_data() {
    let s = Server::start();
    // Sent with a token that may state the intent (an admin's), so the route is known.
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Admin),
        Some(&json!({
            "channel": "chat", "language": "en", "customer_id": "C-1002399",
            "text": "Please refund the 12.00 EUR you charged twice",
            "metadata": {"intent": "request_refund", "confidence": 0.95}
        })),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["case_id"].as_str().unwrap().to_string();
    let done = s.wait_case(&id, |c| c["status"] == "completed");
    assert_eq!(done["status"], "completed");
    let found = s.call(
        "GET",
        &format!(
            "/v1/console/cases?id={}&status=completed&intent=request_refund",
            &id[..8]
        ),
        Some(Role::Auditor),
        None,
    );
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(found.json["total"], 1);
    assert_eq!(found.json["cases"][0]["case_id"], id.as_str());
    assert!(!found.text.contains("charged twice") && !found.text.contains("C-1002399"));
    let none = s.call(
        "GET",
        "/v1/console/cases?status=failed",
        Some(Role::Auditor),
        None,
    );
    assert_eq!(none.json["total"], 0);
    s.call("GET", "/v1/console/cases", Some(Role::Submitter), None)
        .assert_error(403, "forbidden");
    let status = s.call("GET", "/v1/console/status", Some(Role::Admin), None);
    assert_eq!(status.json["cases"]["by_status"]["completed"], 1);
    s.call("GET", "/v1/console/status", Some(Role::Auditor), None)
        .assert_error(403, "forbidden");
}
