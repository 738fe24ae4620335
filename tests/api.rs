//! The HTTP API end to end: the real server on 127.0.0.1:0 with a temporary data directory,
//! the shipped workflows and the simulated back office, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use casegraph::auth::Role;
use serde_json::{Value, json};
use support::{Server, read_request, request_body};

fn refund_letter(amount: &str) -> Value {
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": "C-1002314",
        "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über {amount} €. Bitte überweisen Sie das Geld zurück auf DE89 3704 0044 0532 0130 00.\nMit freundlichen Grüßen\nErika Mustermann"),
    })
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

#[test]
fn a_letter_flows_through_classification_and_a_workflow_to_a_reply() {
    let s = Server::start();
    let id = s.submit(&refund_letter("42,50"));
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["status"], "completed", "{case}");
    assert_eq!(case["outcome"], "refunded");
    // The shipped model read the letter's body.
    let classification = &case["classification"];
    assert_eq!(
        classification["intent"], "request_refund",
        "{classification}"
    );
    assert_eq!(classification["source"], "model");
    assert_eq!(classification["out_of_scope"], false);
    assert_eq!(classification["language"], "de");
    assert!(
        classification["model"]
            .as_str()
            .unwrap()
            .starts_with("intent-e5-de-en@"),
        "{classification}"
    );
    assert!(classification["confidence"].as_f64().unwrap() >= 0.6);
    assert_eq!(classification["top"][0]["intent"], "request_refund");
    // the case's classification carries the customer's tone (a calm letter: not frustrated)
    assert!(
        ["negative", "neutral", "positive"]
            .contains(&classification["sentiment"]["label"].as_str().unwrap()),
        "{classification}"
    );
    assert_eq!(classification["frustration"]["flagged"], false);
    assert_eq!(case["workflow"]["id"], "request_refund");
    assert_eq!(case["route"]["workflow"], "request_refund");
    let reply = case["reply"]["text"].as_str().unwrap();
    assert!(reply.contains("42,50 €"), "{reply}");
    assert_eq!(case["request"]["channel"], "letter");

    // The auditor sees the trail and that the chain verifies, but no personal data.
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert_eq!(audit.json["chain_verified"], true);
    assert_eq!(audit.json["records_intact"], true);
    let kinds: Vec<&str> = audit.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.starts_with(&["accepted", "classified", "routed"]),
        "{kinds:?}"
    );
    assert!(!audit.text.contains("Mustermann"));
    let masked = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Auditor), None);
    assert_eq!(masked.json["masked"], true);
    assert!(masked.json["request"].is_null());
    assert!(masked.json["reply"]["text"].is_null());
    assert!(!masked.text.contains("Mustermann"));
}

#[test]
fn an_off_topic_request_is_flagged_by_the_model_and_goes_to_triage() {
    let s = Server::start();
    let id = s.submit(
        &json!({"channel": "chat", "text": "Wie wird das Wetter am Wochenende in Hamburg?"}),
    );
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(case["route"]["queue"], "triage", "{case}");
    assert_eq!(case["route"]["rule"], "out_of_scope", "{case}");
    assert_eq!(case["classification"]["out_of_scope"], true);
    assert_eq!(case["classification"]["source"], "model");
    // which part of the model decided is on record (the n-gram half alone, or all of it)
    assert!(
        matches!(
            case["classification"]["stage"].as_str(),
            Some("lexical" | "full")
        ),
        "{case}"
    );
    // The language was not given: it was detected from the text.
    assert_eq!(case["request"]["language"], "de");
    // ... from what the customer wrote: a chat bot greeting in English does not count.
    let chat = s.submit(&json!({"channel": "chat", "text":
        "Bot: Hello and welcome to our support chat! How can I help you today? Please describe your question in a few words.\n\
         Kunde: meine karte ist immer noch nicht da\n\
         Bot: I am sorry to hear that. Let me check the delivery status of your card for you, this may take a moment.\n\
         Kunde: seit zwei wochen warte ich"}));
    let case = s.wait_case(&chat, |c| c["classification"].is_object());
    assert_eq!(case["request"]["language"], "de", "{case}");
    assert_eq!(case["classification"]["language"], "de", "{case}");
    let tasks = s.call("GET", "/v1/tasks?queue=triage", Some(Role::Reviewer), None);
    assert!(
        tasks
            .json
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["case_id"] == id),
        "{}",
        tasks.text
    );
}

/// The `rel="next"` path of a task listing's `Link` header, if another page follows.
fn next_page(r: &support::Response) -> Option<String> {
    let link = r.headers.get("link")?;
    let path = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(path.to_string())
}

#[test]
fn a_reviewer_reads_a_backlog_page_by_page_and_a_forged_cursor_is_refused() {
    let s = Server::start();
    let ids: Vec<String> = ["1.249,90", "2.100,00", "3.050,10", "4.999,00", "5.400,00"]
        .iter()
        .map(|a| s.submit(&refund_letter(a)))
        .collect();
    for id in &ids {
        s.wait_case(id, |c| c["status"] == "waiting");
    }
    let all = s.call("GET", "/v1/tasks?queue=refunds", Some(Role::Reviewer), None);
    assert_eq!(all.json.as_array().map(Vec::len), Some(5), "{}", all.text);
    assert_eq!(next_page(&all), None, "one page holds them all");

    // pages of two: the Link header leads on, and the pages together are the inbox
    let mut listed = Vec::new();
    let mut path = Some("/v1/tasks?queue=refunds&limit=2".to_string());
    let mut pages = 0;
    while let Some(p) = path {
        let page = s.call("GET", &p, Some(Role::Reviewer), None);
        assert_eq!(page.status, 200, "{p}: {}", page.text);
        listed.extend(page.json.as_array().unwrap().iter().cloned());
        path = next_page(&page);
        pages += 1;
        if pages == 1 {
            // the reviewer completes the first page's last task before reading on: the
            // cursor names its place, so the next page still begins after it
            let last = &listed[1]["task_id"];
            let done = s.call(
                "POST",
                &format!("/v1/tasks/{}/complete", last.as_str().unwrap()),
                Some(Role::Reviewer),
                Some(&json!({"decision": "approve"})),
            );
            assert_eq!(done.status, 200, "{}", done.text);
        }
    }
    assert_eq!(pages, 3);
    let ids_of =
        |tasks: &[Value]| -> Vec<Value> { tasks.iter().map(|t| t["task_id"].clone()).collect() };
    assert_eq!(ids_of(&listed), ids_of(all.json.as_array().unwrap()));

    for forged in ["zz", "787c7c317c74", &"ab".repeat(5000), "' OR 1=1 --"] {
        let path = format!("/v1/tasks?limit=2&after={}", forged.replace(' ', "%20"));
        let r = s.call("GET", &path, Some(Role::Reviewer), None);
        r.assert_error(400, "invalid_query");
        assert_eq!(r.json["error"]["details"]["field"], "after", "{}", r.text);
    }
}

#[test]
fn a_refund_above_the_limit_waits_for_a_reviewer_who_completes_the_task() {
    let s = Server::start();
    let id = s.submit(&refund_letter("1.249,90"));
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(case["waiting"]["kind"], "task", "{case}");
    assert_eq!(case["waiting"]["queue"], "refunds");
    // the operator's gauge counts it in its queue
    let open_refunds = "casegraph_open_tasks{queue=\"refunds\"}";
    assert_eq!(s.metric(open_refunds), 1.0);
    let tasks = s.call("GET", "/v1/tasks?queue=refunds", Some(Role::Reviewer), None);
    assert_eq!(tasks.status, 200, "{}", tasks.text);
    // ... and so does the reviewers' count per queue
    let queues = s.call("GET", "/v1/tasks/queues", Some(Role::Reviewer), None);
    assert_eq!(queues.status, 200, "{}", queues.text);
    assert_eq!(queues.json["open"], 1, "{}", queues.text);
    assert_eq!(
        queues.json["queues"][0]["queue"], "refunds",
        "{}",
        queues.text
    );
    assert_eq!(queues.json["queues"][0]["open"], 1, "{}", queues.text);
    assert_eq!(
        queues.json["queues"][0]["oldest"], tasks.json[0]["created_at"],
        "{}",
        queues.text
    );
    let first = s.call("GET", "/v1/tasks?limit=1", Some(Role::Reviewer), None);
    assert_eq!(
        first.json.as_array().map(Vec::len),
        Some(1),
        "{}",
        first.text
    );
    let task = tasks
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["case_id"] == id)
        .expect("the task is in the inbox")
        .clone();
    let task_id = task["task_id"].as_str().unwrap();
    let path = format!("/v1/tasks/{task_id}/complete");

    let wrong = s.call(
        "POST",
        &path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "maybe"})),
    );
    wrong.assert_error(422, "unknown_decision");
    assert!(wrong.json["error"]["details"]["allowed"].is_array());

    let done = s.call(
        "POST",
        &path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "approve", "comment": "receipt checked"})),
    );
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["status"], "completed");
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["outcome"], "refunded", "{case}");
    assert_eq!(
        s.metric(open_refunds),
        0.0,
        "a completed task is no longer open"
    );

    let again = s.call(
        "POST",
        &path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "approve"})),
    );
    again.assert_error(409, "task_already_completed");
}

/// The shipped refund workflow with a different SLA and version.
fn refund_files(version: u32, sla: &str) -> BTreeMap<String, String> {
    let dir = support::workflows().join("request_refund");
    let mut files = BTreeMap::new();
    for entry in walk(&dir) {
        let name = entry
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut text = std::fs::read_to_string(&entry).unwrap();
        if name == "workflow.yaml" {
            text = text
                .replace("version: 1\n", &format!("version: {version}\n"))
                .replace("sla: 8h", &format!("sla: {sla}"));
        }
        files.insert(name, text);
    }
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_published_version_with_a_short_sla_escalates_on_time() {
    let s = Server::start();
    let body = json!({"id": "request_refund", "files": refund_files(2, "1s")});
    let published = s.call("POST", "/v1/workflows", Some(Role::Author), Some(&body));
    assert_eq!(published.status, 201, "{}", published.text);
    assert_eq!(published.json["version"], 2);
    let shown = s.call(
        "GET",
        "/v1/workflows/request_refund",
        Some(Role::Author),
        None,
    );
    assert_eq!(shown.json["version"], 2, "{}", shown.text);

    let id = s.submit(&refund_letter("1.249,90"));
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["status"], "escalated", "{case}");
    assert_eq!(case["outcome"], "approval_overdue");
    assert_eq!(case["workflow"]["version"], 2);
    // The escalated task left the inbox.
    let tasks = s.call("GET", "/v1/tasks?queue=refunds", Some(Role::Reviewer), None);
    assert!(!tasks.text.contains(&id), "{}", tasks.text);

    // The same version again is refused.
    let again = s.call("POST", "/v1/workflows", Some(Role::Author), Some(&body));
    again.assert_error(409, "version_not_newer");
}

#[test]
fn an_invalid_workflow_publish_is_refused_with_every_problem_and_nothing_changes() {
    let s = Server::start();
    let mut files = refund_files(3, "8h");
    let yaml = files["workflow.yaml"]
        .replace("next: check_amount", "next: nowhere")
        .replace("script: extract.rhai", "script: missing.rhai");
    files.insert("workflow.yaml".into(), yaml);
    let r = s.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&json!({"id": "request_refund", "files": files})),
    );
    r.assert_error(422, "workflow_invalid");
    let diags = r.json["error"]["details"]["diagnostics"]
        .as_array()
        .unwrap();
    assert!(diags.len() >= 2, "{}", r.text);
    assert!(
        diags
            .iter()
            .all(|d| d["line"].is_number() && d["file"].is_string())
    );
    assert!(
        !r.text.contains(s.data.path().to_str().unwrap()),
        "no server paths leak"
    );

    // A version that compiles but breaks its own fixtures is refused too.
    let mut files = refund_files(3, "8h");
    let yaml = files["workflow.yaml"].replace("case.amount <= 50.00\"", "case.amount <= 10.00\"");
    files.insert("workflow.yaml".into(), yaml);
    let r = s.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&json!({"id": "request_refund", "files": files})),
    );
    r.assert_error(422, "fixtures_failed");
    assert!(
        !r.json["error"]["details"]["fixtures"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let bad_name = s.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&json!({"id": "request_refund", "files": {"../../etc/x": "", "workflow.yaml": ""}})),
    );
    bad_name.assert_error(422, "invalid_request");

    let shown = s.call(
        "GET",
        "/v1/workflows/request_refund",
        Some(Role::Author),
        None,
    );
    assert_eq!(shown.json["version"], 1, "{}", shown.text);
    assert!(!s.data.path().join("published/request_refund").exists());
}

#[test]
fn idempotent_resubmission_answers_the_same_case_and_a_different_body_conflicts() {
    let s = Server::start();
    let body = refund_letter("42,50");
    let headers = [("Idempotency-Key", "order-4711")];
    let token = s.token(Role::Submitter).to_string();
    let post = |b: &Value| {
        s.raw(
            "POST",
            "/v1/requests",
            Some(&token),
            Some(("application/json", b.to_string().into_bytes())),
            &headers,
        )
    };
    let first = post(&body);
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.json["duplicate"], false);
    let second = post(&body);
    assert_eq!(second.status, 202);
    assert_eq!(second.json["case_id"], first.json["case_id"]);
    assert_eq!(second.json["duplicate"], true);
    let other = post(&refund_letter("99,00"));
    other.assert_error(409, "idempotency_key_reused");
    assert_eq!(
        other.json["error"]["details"]["case_id"],
        first.json["case_id"]
    );

    // Another client's identical key is its own.
    let admin = s.raw(
        "POST",
        "/v1/requests",
        Some(s.token(Role::Admin)),
        Some(("application/json", body.to_string().into_bytes())),
        &headers,
    );
    assert_eq!(admin.status, 202);
    assert_ne!(admin.json["case_id"], first.json["case_id"]);
}

#[test]
fn every_role_boundary_is_enforced() {
    let s = Server::start();
    let own = s.submit(&refund_letter("1.249,90"));
    s.wait_case(&own, |c| c["status"] == "waiting");
    let publish = json!({"id": "request_refund", "files": {}});
    let request = refund_letter("10,00");
    let classify = json!({"text": "where is my card?"});
    let complete = json!({"decision": "approve"});
    let token = json!({"role": "reviewer"});
    let case = format!("/v1/cases/{own}");
    let audit = format!("/v1/cases/{own}/audit");
    // (method, path, body, roles allowed besides admin)
    let table: Vec<(&str, &str, Option<&Value>, &[Role])> = vec![
        ("POST", "/v1/requests", Some(&request), &[Role::Submitter]),
        (
            "GET",
            &case,
            None,
            &[Role::Submitter, Role::Reviewer, Role::Auditor],
        ),
        ("GET", &audit, None, &[Role::Auditor]),
        ("GET", "/v1/tasks", None, &[Role::Reviewer]),
        ("GET", "/v1/tasks/queues", None, &[Role::Reviewer]),
        (
            "POST",
            "/v1/tasks/t-none/complete",
            Some(&complete),
            &[Role::Reviewer],
        ),
        ("POST", "/v1/workflows", Some(&publish), &[Role::Author]),
        (
            "POST",
            "/v1/classify",
            Some(&classify),
            &[Role::Author, Role::Reviewer],
        ),
        ("GET", "/v1/tokens", None, &[]),
        ("POST", "/v1/tokens", Some(&token), &[]),
        ("GET", "/metrics", None, &[Role::Auditor]),
        (
            "GET",
            "/v1/workflows",
            None,
            &[Role::Submitter, Role::Reviewer, Role::Author, Role::Auditor],
        ),
    ];
    for (method, path, body, allowed) in &table {
        let none = s.call(method, path, None, *body);
        none.assert_error(401, "unauthorized");
        assert_eq!(
            none.headers.get("www-authenticate").map(String::as_str),
            Some("Bearer")
        );
        let bogus = s.raw(method, path, Some("cg_not_a_token"), None, &[]);
        bogus.assert_error(401, "unauthorized");
        for role in Role::ALL {
            let r = s.call(method, path, Some(role), *body);
            if role == Role::Admin || allowed.contains(&role) {
                assert!(
                    r.status != 401 && r.status != 403,
                    "{role:?} may {method} {path}: {}",
                    r.text
                );
            } else {
                r.assert_error(403, "forbidden");
            }
        }
    }
    // A submitter reads only its own cases.
    let other = s.raw(
        "POST",
        "/v1/requests",
        Some(s.token(Role::Admin)),
        Some(("application/json", request.to_string().into_bytes())),
        &[],
    );
    let other_id = other.json["case_id"].as_str().unwrap();
    s.call(
        "GET",
        &format!("/v1/cases/{other_id}"),
        Some(Role::Submitter),
        None,
    )
    .assert_error(404, "not_found");
    // Admins create tokens that work at once.
    let created = s.call(
        "POST",
        "/v1/tokens",
        Some(Role::Admin),
        Some(&json!({"role": "reviewer", "name": "bob"})),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let bob = created.json["token"].as_str().unwrap();
    assert_eq!(s.raw("GET", "/v1/tasks", Some(bob), None, &[]).status, 200);
    assert!(
        !s.call("GET", "/v1/tokens", Some(Role::Admin), None)
            .text
            .contains(bob)
    );
}

#[test]
fn malformed_bodies_get_the_documented_error_and_nothing_is_stored() {
    let s = Server::start_with(|c| c.limits.body_limit_bytes = 4096);
    let commits = s.metric("casegraph_store_commits");
    let token = s.token(Role::Submitter).to_string();
    let post = |ct: &str, body: &[u8]| {
        s.raw(
            "POST",
            "/v1/requests",
            Some(&token),
            Some((ct, body.to_vec())),
            &[],
        )
    };
    post("application/json", b"{\"channel\": \"chat\", \"text\": ")
        .assert_error(400, "malformed_json");
    post("text/plain", b"{\"channel\": \"chat\", \"text\": \"hi\"}")
        .assert_error(415, "unsupported_media_type");
    post("application/json", br#"{"channel": "chat", "text": 42}"#)
        .assert_error(422, "invalid_request");
    post("application/json", br#"{"channel": "fax", "text": "hi"}"#)
        .assert_error(422, "invalid_request");
    let unknown = post(
        "application/json",
        br#"{"channel": "chat", "text": "hi", "colour": "red"}"#,
    );
    unknown.assert_error(422, "invalid_request");
    assert!(
        unknown.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    post("application/json", br#"{"channel": "letter"}"#).assert_error(422, "invalid_request");
    post("application/json", br#"{"channel": "form", "text": " "}"#)
        .assert_error(422, "invalid_request");
    post(
        "application/json",
        br#"{"channel": "chat", "text": "hi", "customer_id": "a b"}"#,
    )
    .assert_error(422, "invalid_request");
    post(
        "application/json",
        br#"{"channel": "chat", "text": "hi", "reply_to": "http://elsewhere.example/hook"}"#,
    )
    .assert_error(422, "reply_to_not_allowed");
    let big = format!(r#"{{"channel": "chat", "text": "{}"}}"#, "x".repeat(8000));
    post("application/json", big.as_bytes()).assert_error(413, "body_too_large");
    s.raw(
        "POST",
        "/v1/requests",
        Some(&token),
        Some((
            "application/json",
            br#"{"channel": "chat", "text": "hi"}"#.to_vec(),
        )),
        &[("Idempotency-Key", "bad key with spaces")],
    )
    .assert_error(400, "invalid_idempotency_key");
    s.call("GET", "/v1/nowhere", Some(Role::Admin), None)
        .assert_error(404, "not_found");
    s.call("GET", "/v1/requests", Some(Role::Admin), None)
        .assert_error(405, "method_not_allowed");
    s.call("GET", "/v1/cases/c-none", Some(Role::Admin), None)
        .assert_error(404, "not_found");
    s.call(
        "GET",
        "/v1/workflows/request_refund/graph?format=png",
        Some(Role::Admin),
        None,
    )
    .assert_error(400, "invalid_query");
    s.call(
        "GET",
        "/v1/tasks?queue=a&colour=red",
        Some(Role::Admin),
        None,
    )
    .assert_error(400, "invalid_query");
    s.call("GET", "/v1/tasks?limit=0", Some(Role::Admin), None)
        .assert_error(400, "invalid_query");
    s.call("GET", "/v1/tasks/queues?queue=a", Some(Role::Admin), None)
        .assert_error(400, "invalid_query");
    assert_eq!(
        s.metric("casegraph_store_commits"),
        commits,
        "nothing was stored"
    );
}

#[test]
fn workflows_are_listed_and_drawn() {
    let s = Server::start();
    let list = s.call("GET", "/v1/workflows", Some(Role::Author), None);
    assert_eq!(list.status, 200);
    let ids: Vec<&str> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"request_refund") && ids.contains(&"card_arrival"),
        "{ids:?}"
    );
    let m = s.call(
        "GET",
        "/v1/workflows/request_refund/graph",
        Some(Role::Author),
        None,
    );
    assert_eq!(m.status, 200);
    assert!(m.text.starts_with("flowchart TD"), "{}", m.text);
    let d = s.call(
        "GET",
        "/v1/workflows/request_refund/graph?format=dot",
        Some(Role::Author),
        None,
    );
    assert!(d.text.starts_with("digraph"), "{}", d.text);
    s.call("GET", "/v1/workflows/nope", Some(Role::Author), None)
        .assert_error(404, "not_found");
    let c = s.call(
        "POST",
        "/v1/classify",
        Some(Role::Author),
        Some(&json!({"text": "where is my card", "metadata": {"intent": "card_arrival"}})),
    );
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json["intent"], "card_arrival");
    assert_eq!(c.json["source"], "metadata");
    s.call(
        "POST",
        "/v1/classify",
        Some(Role::Author),
        Some(&json!({"text": "  "})),
    )
    .assert_error(422, "invalid_request");
    // Without a stated intent the model answers, in either language, with its top intents.
    for (text, intent, language) in [
        (
            "I lost my card yesterday, please block it",
            "lost_or_stolen_card",
            "en",
        ),
        ("Ich möchte mein Konto kündigen.", "terminate_account", "de"),
    ] {
        let c = s.call(
            "POST",
            "/v1/classify",
            Some(Role::Reviewer),
            Some(&json!({"text": text})),
        );
        assert_eq!(c.status, 200, "{}", c.text);
        assert_eq!(c.json["intent"], intent, "{}", c.text);
        assert_eq!(c.json["source"], "model");
        assert_eq!(c.json["language"], language, "{}", c.text);
        assert!(c.json["top"].as_array().unwrap().len() >= 3, "{}", c.text);
    }
    // Sentiment and frustration come with the model's answer, in the agreed shape.
    for (text, label, flagged) in [
        (
            "This is the fourth time I am writing about this refund. If it is not back by Friday I am closing my account and calling my lawyer.",
            "negative",
            true,
        ),
        (
            "Vielen Dank für die schnelle Hilfe, die Karte ist angekommen!",
            "positive",
            false,
        ),
    ] {
        let c = s.call(
            "POST",
            "/v1/classify",
            Some(Role::Reviewer),
            Some(&json!({"text": text})),
        );
        assert_eq!(c.status, 200, "{}", c.text);
        let sentiment = c.json["sentiment"].as_object().expect("sentiment object");
        assert_eq!(sentiment.len(), 2, "{}", c.text);
        assert_eq!(sentiment["label"], label, "{}", c.text);
        let confidence = sentiment["confidence"].as_f64().expect("a number");
        assert!((0.0..=1.0).contains(&confidence), "{}", c.text);
        let frustration = c.json["frustration"]
            .as_object()
            .expect("frustration object");
        assert_eq!(frustration.len(), 2, "{}", c.text);
        assert_eq!(frustration["flagged"], flagged, "{}", c.text);
        let score = frustration["score"].as_f64().expect("a number");
        assert!((0.0..=1.0).contains(&score), "{}", c.text);
    }
}

#[test]
fn health_readiness_metrics_and_the_openapi_document() {
    let s = Server::start();
    assert_eq!(s.call("GET", "/healthz", None, None).status, 200);
    let ready = s.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["checks"]["simulated_backoffice"], true);
    assert!(
        ready.json["checks"]["model"]
            .as_str()
            .unwrap()
            .starts_with("intent-e5-de-en@"),
        "{}",
        ready.text
    );
    let doc = s.call("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    for path in [
        "/v1/requests",
        "/v1/cases/{id}",
        "/v1/cases/{id}/audit",
        "/v1/tasks",
        "/v1/tasks/queues",
        "/v1/tasks/{id}/complete",
        "/v1/workflows",
        "/v1/workflows/{id}/graph",
        "/v1/classify",
        "/v1/console/cases",
        "/v1/console/dry-run",
        "/v1/console/workflows/{id}/definition",
    ] {
        assert!(doc.json["paths"].get(path).is_some(), "{path} documented");
    }
    for schema in ["Sentiment", "Frustration", "Tone"] {
        assert!(
            doc.json["components"]["schemas"].get(schema).is_some(),
            "{schema} documented"
        );
    }
    let page = s.call("GET", "/docs", None, None);
    assert!(page.text.contains("/openapi.json") && !page.text.contains("https://"));

    let id = s.submit(&refund_letter("42,50"));
    s.wait_case(&id, is_final);
    let m = s.call("GET", "/metrics", Some(Role::Admin), None);
    for name in [
        "casegraph_http_requests_total",
        "casegraph_case_segments_total",
        "casegraph_case_segment_duration_seconds",
        "casegraph_classification_duration_seconds",
        "casegraph_classification_confidence",
        "casegraph_store_write_duration_seconds",
        "casegraph_intake_queue_depth",
        "casegraph_accept_duration_seconds",
        "casegraph_sentiment_total{label=\"",
        "casegraph_frustration_flagged_total",
    ] {
        assert!(m.text.contains(name), "{name} in\n{}", m.text);
    }
}

/// A back office that accepts connections and never answers, for `secs` seconds: a call
/// to it holds a worker until the connector's timeout.
fn hanging_back_office(secs: u64) -> (String, std::thread::JoinHandle<()>) {
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hang.local_addr().unwrap());
    hang.set_nonblocking(true).unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if let Ok(c) = hang.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (url, held)
}

/// A refund letter of customer `C-10024nn`: requests of different customers never wait
/// for each other's cases.
fn letter_of(n: usize) -> Value {
    let mut r = refund_letter("42,50");
    r["customer_id"] = json!(format!("C-100240{n}"));
    r
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_keeps_serving() {
    // Three requests for one worker and one queue place: the worker hangs on the back
    // office, the second case takes the place, the third is held for one
    // (limits.queue_wait) and then refused.
    let (url, held) = hanging_back_office(6);
    let s = Server::start_with(|c| {
        c.limits.workers = 1;
        c.limits.queue_depth = 1;
        c.limits.queue_wait = Duration::from_millis(300);
        c.connectors.base_url = Some(url);
        c.connectors.timeout = Duration::from_secs(5);
    });
    let mut statuses = Vec::new();
    for n in 0..3 {
        let sent = std::time::Instant::now();
        let r = s.call(
            "POST",
            "/v1/requests",
            Some(Role::Submitter),
            Some(&letter_of(n)),
        );
        if r.status == 429 {
            r.assert_error(429, "queue_full");
            assert!(r.headers.contains_key("retry-after"));
            assert!(
                sent.elapsed() >= Duration::from_millis(300),
                "held for a queue place first"
            );
        }
        statuses.push(r.status);
        // The worker takes the first case before the next request arrives.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(statuses, vec![202, 202, 429]);
    assert_eq!(s.call("GET", "/healthz", None, None).status, 200);
    drop(s);
    let _ = held.join();
}

/// A server with one case worker and one queue place, holding requests up to `wait` for
/// a place, whose back office never answers: each case's call times out after a second.
fn one_worker_one_place(wait: Duration) -> (Server, std::thread::JoinHandle<()>) {
    let (url, held) = hanging_back_office(4);
    let s = Server::start_with(|c| {
        c.limits.workers = 1;
        c.limits.queue_depth = 1;
        c.limits.queue_wait = wait;
        c.connectors.base_url = Some(url);
        c.connectors.timeout = Duration::from_secs(1);
    });
    (s, held)
}

#[test]
fn a_request_held_for_a_queue_place_is_accepted_when_one_frees_up() {
    // As above, but the first case's call times out after a second, which frees the
    // worker: held long enough, the third request gets the place; not held, it is refused.
    for (wait, third) in [(Duration::from_secs(10), 202), (Duration::ZERO, 429)] {
        let (s, held) = one_worker_one_place(wait);
        let mut statuses = Vec::new();
        for n in 0..3 {
            let r = s.call(
                "POST",
                "/v1/requests",
                Some(Role::Submitter),
                Some(&letter_of(n)),
            );
            statuses.push(r.status);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(statuses, vec![202, 202, third], "queue_wait {wait:?}");
        drop(s);
        let _ = held.join();
    }
}

#[test]
fn an_answer_to_a_waiting_case_is_held_for_a_queue_place_like_a_request() {
    // A case waits for the customer's answer; then the worker hangs on the back office and
    // the queue's one place is taken. The answer is held for a place (limits.queue_wait)
    // and stored when the first call times out; not held, it is refused and nothing of it
    // is stored, so the client can send it again.
    for (wait, status) in [(Duration::from_secs(10), 202), (Duration::ZERO, 429)] {
        let (s, held) = one_worker_one_place(wait);
        let mut asking = letter_of(9);
        asking["text"] = json!(
            "Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung. Bitte überweisen Sie das Geld zurück.\nMit freundlichen Grüßen\nErika Mustermann"
        );
        let id = s.submit(&asking);
        s.wait_case(&id, |c| c["waiting"]["kind"] == "answer");
        for n in 0..2 {
            let r = s.call(
                "POST",
                "/v1/requests",
                Some(Role::Submitter),
                Some(&letter_of(n)),
            );
            assert_eq!(r.status, 202, "{}", r.text);
            std::thread::sleep(Duration::from_millis(200));
        }
        let answer = json!({ "channel": "chat", "text": "Es waren 42,50 EUR" });
        let path = format!("/v1/cases/{id}/messages");
        let r = s.call("POST", &path, Some(Role::Submitter), Some(&answer));
        assert_eq!(r.status, status, "queue_wait {wait:?}: {}", r.text);
        if status == 429 {
            r.assert_error(429, "queue_full");
            let case = s.call(
                "GET",
                &format!("/v1/cases/{id}"),
                Some(Role::Submitter),
                None,
            );
            assert_eq!(
                case.json["messages"].as_array().unwrap().len(),
                1,
                "{}",
                case.text
            );
            assert_eq!(case.json["waiting"]["kind"], "answer", "{}", case.text);
        }
        drop(s);
        let _ = held.join();
    }
}

/// `request` is a `reply_to` notification of case `id`: posted to the hook, keyed by the case.
fn assert_is_notification_of(request: &str, id: &str) {
    assert!(request.starts_with("POST /hooks/case"), "{request}");
    assert!(
        request
            .to_lowercase()
            .contains(&format!("idempotency-key: {id}")),
        "{request}"
    );
}

#[test]
fn reply_to_is_notified_when_the_case_ends() {
    use std::io::Write;
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hook.local_addr().unwrap().to_string();
    let received = std::thread::spawn(move || {
        let (mut conn, _) = hook.accept().unwrap();
        let request = read_request(&mut conn);
        conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        request
    });
    let allowed = addr.clone();
    let s = Server::start_with(move |c| c.webhooks.allowed_hosts = vec![allowed]);
    let mut body = refund_letter("42,50");
    body["reply_to"] = json!(format!("http://{addr}/hooks/case"));
    let id = s.submit(&body);
    s.wait_case(&id, is_final);
    let request = received.join().unwrap();
    assert_is_notification_of(&request, &id);
    let v = request_body(&request);
    assert_eq!(v["case_id"], id);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["outcome"], "refunded");
}

#[test]
fn a_receiver_that_is_down_at_first_still_gets_the_notification() {
    use std::io::Write;
    // A port nobody listens on (yet): connections are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let allowed = addr.clone();
    let s = Server::start_with(move |c| {
        c.webhooks.allowed_hosts = vec![allowed];
        // Every retry after the first failure is the stored notification's, not the round's.
        c.webhooks.max_attempts = 1;
    });
    let mut body = refund_letter("42,50");
    body["reply_to"] = json!(format!("http://{addr}/hooks/case"));
    let id = s.submit(&body);
    s.wait_case(&id, is_final);
    assert_eq!(s.metric("casegraph_pending_notifications"), 1.0);
    // Let a few attempts be refused, then come up: answer 503 once, then 204.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(s.metric("casegraph_pending_notifications"), 1.0);
    let hook = std::net::TcpListener::bind(&addr).unwrap();
    let mut requests = Vec::new();
    for answer in ["503 Service Unavailable", "204 No Content"] {
        let (mut conn, _) = hook.accept().unwrap();
        requests.push(read_request(&mut conn));
        conn.write_all(
            format!("HTTP/1.1 {answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    }
    for request in &requests {
        assert_is_notification_of(request, &id);
    }
    let (first, second) = (request_body(&requests[0]), request_body(&requests[1]));
    assert_eq!(first, second, "a retry carries exactly the same body");
    assert_eq!(first["case_id"], id);
    assert_eq!(first["status"], "completed");
    assert_eq!(first["outcome"], "refunded");
    assert!(first["reply"].is_string(), "{first}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.metric("casegraph_pending_notifications") != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivered notification is still stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_event_with_replyto_sends_the_reminder_there_and_a_foreign_host_is_refused() {
    use std::io::Write;
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hook.local_addr().unwrap().to_string();
    let received = std::thread::spawn(move || {
        let (mut conn, _) = hook.accept().unwrap();
        let request = read_request(&mut conn);
        conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        request
    });
    let allowed = addr.clone();
    let s = Server::start_with(move |c| c.webhooks.allowed_hosts = vec![allowed]);
    let crm = s.token_with("crm", &["send_events", "manage_consents"]);
    let granted = s.raw(
        "PUT",
        "/v1/customers/K-H/consents/marketing",
        Some(&crm),
        Some((
            "application/json",
            br#"{"granted": true, "source": "branch"}"#.to_vec(),
        )),
        &[],
    );
    assert_eq!(granted.status, 200, "{}", granted.text);
    let mut foreign = warranty_event("h-0", "K-H", "P-0", "en");
    foreign["replyto"] = json!("http://elsewhere.example/hooks/case");
    let r = s.post_event(&crm, &foreign);
    r.assert_error(422, "invalid_event");
    assert_eq!(
        r.json["error"]["details"]["attribute"], "replyto",
        "{}",
        r.text
    );

    let mut event = warranty_event("h-1", "K-H", "P-1", "en");
    event["replyto"] = json!(format!("http://{addr}/hooks/case"));
    let a = s.post_event(&crm, &event);
    assert_eq!(a.status, 202, "{}", a.text);
    let case = a.json["cases"][0].as_str().unwrap().to_string();
    s.wait_case(&case, is_final);
    let request = received.join().unwrap();
    assert_is_notification_of(&request, &case);
    let v = request_body(&request);
    assert_eq!(v["outcome"], "reminded", "{v}");
    assert!(
        v["reply"]
            .as_str()
            .unwrap_or_default()
            .contains("2027-01-05"),
        "{v}"
    );
}

#[test]
fn quiet_hours_from_the_configuration_hold_a_reminder_back() {
    // A quiet window around the present, in UTC: the reminder must wait for its end.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hhmm = |z: jiff::Zoned| z.strftime("%H:%M").to_string();
    let from = hhmm(
        now.checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap(),
    );
    let until = hhmm(
        now.checked_add(jiff::SignedDuration::from_hours(2))
            .unwrap(),
    );
    let s = Server::start_with(move |c| {
        c.contact.quiet_hours = Some(casegraph_engine::rules::QuietHours {
            from,
            until,
            timezone: "UTC".into(),
            days: Vec::new(),
        });
    });
    let crm = s.token_with("crm", &["send_events", "manage_consents"]);
    let granted = s.raw(
        "PUT",
        "/v1/customers/K-Q/consents/marketing",
        Some(&crm),
        Some((
            "application/json",
            br#"{"granted": true, "source": "branch"}"#.to_vec(),
        )),
        &[],
    );
    assert_eq!(granted.status, 200, "{}", granted.text);
    let a = s.post_event(&crm, &warranty_event("q-1", "K-Q", "P-1", "en"));
    assert_eq!(a.status, 202, "{}", a.text);
    let case = a.json["cases"][0].as_str().unwrap().to_string();
    let waiting = s.wait_case(&case, |c| c["status"] == "waiting");
    assert!(
        waiting["reply"].is_null(),
        "nothing is sent in quiet hours: {waiting}"
    );
    assert_eq!(waiting["waiting"]["node"], "wait_quiet", "{waiting}");
}

fn warranty_event(id: &str, customer: &str, product: &str, language: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/products/warranty", "type": "warranty.expiring",
        "subject": customer, "time": "2026-12-06T08:00:00Z", "datacontenttype": "application/json",
        "data": { "product_id": product, "product": "washing machine", "expires_on": "2027-01-05",
                  "language": language }
    })
}

#[test]
fn a_warranty_event_reminds_the_customer_who_consented_and_no_one_else() {
    let s = Server::start();
    let crm = s.token_with("crm", &["send_events", "manage_consents"]);
    let granted = s.raw(
        "PUT",
        "/v1/customers/K-A/consents/marketing",
        Some(&crm),
        Some((
            "application/json",
            br#"{"granted": true, "source": "branch"}"#.to_vec(),
        )),
        &[],
    );
    assert_eq!(granted.status, 200, "{}", granted.text);

    let a = s.post_event(&crm, &warranty_event("w-1", "K-A", "P-1", "en"));
    let b = s.post_event(&crm, &warranty_event("w-2", "K-B", "P-2", "de"));
    assert_eq!((a.status, b.status), (202, 202), "{} {}", a.text, b.text);
    assert_eq!(a.json["event_id"], "w-1");
    let case_a = a.json["cases"][0].as_str().unwrap().to_string();
    let case_b = b.json["cases"][0].as_str().unwrap().to_string();
    let done_a = s.wait_case(&case_a, is_final);
    let done_b = s.wait_case(&case_b, is_final);
    assert_eq!(done_a["outcome"], "reminded", "{done_a}");
    assert!(
        done_a["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("2027-01-05"),
        "{done_a}"
    );
    assert_eq!(done_b["outcome"], "no_consent", "{done_b}");
    assert!(
        done_b["reply"].is_null(),
        "nothing is sent without consent: {done_b}"
    );
    // The case shows the event that started it.
    assert_eq!(
        done_a["request"]["event"]["type"], "warranty.expiring",
        "{done_a}"
    );

    // The same event again: the same answer, no new case.
    let again = s.post_event(&crm, &warranty_event("w-1", "K-A", "P-1", "en"));
    assert_eq!(again.status, 202);
    assert_eq!(again.json, a.json);
    // A malformed event is refused, naming the attribute.
    let mut broken = warranty_event("w-3", "K-A", "P-3", "en");
    broken["time"] = json!("yesterday");
    let r = s.post_event(&crm, &broken);
    r.assert_error(422, "invalid_event");
    assert_eq!(
        r.json["error"]["details"]["attribute"], "time",
        "{}",
        r.text
    );

    // The consent with its history, as a reviewer sees it.
    let consents = s.call(
        "GET",
        "/v1/customers/K-A/consents",
        Some(Role::Reviewer),
        None,
    );
    assert_eq!(consents.status, 200, "{}", consents.text);
    assert_eq!(consents.json["consents"][0]["purpose"], "marketing");
    assert_eq!(consents.json["consents"][0]["current"]["source"], "branch");
}
