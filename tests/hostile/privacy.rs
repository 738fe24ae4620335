//! Hostile input: personal data. What a customer sent must be erasable to the last byte of
//! the data directory, must never reach the audit trail or the case record (both outlive
//! erasure), and must not be shown to a role that may not see it. A request that does not
//! fit its workflow goes to a reviewer and says why, without quoting the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::post;
use casegraph::auth::Role;
use casegraph::config::Config;
use casegraph_engine::store::Kind;
use serde_json::{Value, json};

use crate::support::{self, Server};

/// The erased customer: number, name, IBAN (as written and as extracted) and a snippet of
/// the letter. None of it may be found in the data directory after the erasure.
const CUSTOMER: &str = "C-77001234";
const NAME: &str = "Wilhelmine Zaunkoenig";
const IBAN_WRITTEN: &str = "DE44 5001 0517 5407 3249 31";
const IBAN: &str = "DE44500105175407324931";
const SNIPPET: &str = "Quittung vom Gartencenter";
/// What the customer answers when a case asks for the amount.
const ANSWER: &str = "Rechnung Nummer Zitronenfalter";
/// Another customer, whose data must survive the erasure untouched.
const OTHER: &str = "C-55501234";
const OTHER_NAME: &str = "Bartholomaeus Krummbein";

fn letter(customer: &str, name: &str) -> Value {
    // The other customer writes about something else, from another account.
    let (snippet, iban) = if customer == CUSTOMER {
        (SNIPPET, IBAN_WRITTEN)
    } else {
        ("Rechnung vom Baumarkt", "DE75 5121 0800 1245 1261 99")
    };
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": customer,
        "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über 42,50 € ({snippet}). Bitte überweisen Sie das Geld zurück auf {iban}.\nMit freundlichen Grüßen\n{name}"),
    })
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

/// A back office that answers like a real one: with the customer number and IBAN it was
/// sent, so the outbox holds personal data.
fn echoing_back_office() -> String {
    async fn answer(body: String) -> axum::Json<Value> {
        let p: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        axum::Json(json!({
            "refund_id": "R-1", "status": "booked", "amount": p["amount"],
            "customer_id": p["customer_id"], "iban": p["iban"],
        }))
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route("/{connector}/{operation}", post(answer));
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!(
        "http://{}",
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    )
}

/// A server whose data directory is `dir`, which outlives it (the support server deletes
/// its own). The fresh tokens of this start are copied in.
fn serve_in(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Server {
    let dir = dir.to_path_buf();
    Server::start_with(move |c| {
        std::fs::copy(c.data_dir.join("tokens.json"), dir.join("tokens.json")).unwrap();
        c.data_dir = dir;
        adjust(c);
    })
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Which of `needles` occur in which file under `dir`, as raw bytes.
fn grep(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files(dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{needle} in {}", file.display()));
            }
        }
    }
    found
}

fn erase_leaves_no_byte_of_the_customer(backend: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let back_office = echoing_back_office();
    let (erased, kept) = {
        let s = serve_in(dir.path(), |c| {
            c.store.backend = backend;
            c.connectors.base_url = Some(back_office.clone());
            c.webhooks.allowed_hosts = vec!["127.0.0.1:9".into()];
        });
        let mut erased = Vec::new();
        for i in 0..3 {
            let mut body = letter(CUSTOMER, NAME);
            body["reply_to"] = json!(format!("http://127.0.0.1:9/hooks/{CUSTOMER}"));
            let r = s.raw(
                "POST",
                "/v1/requests",
                Some(s.token(Role::Submitter)),
                Some(("application/json", body.to_string().into_bytes())),
                &[("Idempotency-Key", &format!("{CUSTOMER}-{i}"))],
            );
            assert_eq!(r.status, 202, "{}", r.text);
            erased.push(r.json["case_id"].as_str().unwrap().to_string());
        }
        // A conversation: the case asks for the amount and the customer's answer, on
        // another channel, holds personal data of its own.
        let asking = s.submit(&json!({"channel": "letter", "language": "de",
            "customer_id": CUSTOMER,
            "text": format!("Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung.\nMit freundlichen Grüßen\n{NAME}"),
            "metadata": {"intent": "request_refund", "confidence": 0.9}}));
        s.wait_case(&asking, |c| c["waiting"]["kind"] == "answer");
        let r = s.call(
            "POST",
            &format!("/v1/cases/{asking}/messages"),
            Some(Role::Submitter),
            Some(&json!({"channel": "chat", "text": format!("Es waren 17,35 EUR, {ANSWER}")})),
        );
        assert_eq!(r.status, 202, "{}", r.text);
        erased.push(asking);
        let kept = s.submit(&letter(OTHER, OTHER_NAME));
        for id in erased.iter().chain([&kept]) {
            let case = s.wait_case(id, is_final);
            assert_eq!(case["status"], "completed", "{case}");
            // The back office's answer (with the customer's number) is in the case data.
            assert_eq!(case["data"]["refund"]["status"], "booked", "{case}");
        }
        (erased, kept)
    };
    // Before: the data directory holds the customer everywhere.
    let needles = [CUSTOMER, NAME, IBAN, SNIPPET, ANSWER];
    assert!(!grep(dir.path(), &needles).is_empty());

    let data = dir.path().to_str().unwrap();
    let out = support::casegraph(&["erase", "--customer", CUSTOMER, "--data", data]);
    assert!(out.status.success(), "{out:?}");
    let found = grep(dir.path(), &needles);
    assert!(found.is_empty(), "erased data still on disk: {found:?}");
    // The other customer is whole.
    assert_eq!(grep(dir.path(), &[OTHER, OTHER_NAME]).len(), 2);

    let out = support::casegraph(&["audit", "verify", "--data", data]);
    assert!(out.status.success(), "{out:?}");
    let s = serve_in(dir.path(), |c| {
        c.store.backend = backend;
        c.connectors.base_url = Some(back_office.clone());
    });
    for id in &erased {
        let case = s.wait_case(id, |_| true);
        assert_eq!(case["erased"], true, "{case}");
        assert_eq!(case["request"], Value::Null, "{case}");
        assert_eq!(case["status"], "completed");
    }
    let other = s.wait_case(&kept, |_| true);
    assert_eq!(other["request"]["customer_id"], OTHER, "{other}");
    assert_eq!(other["data"]["refund"]["customer_id"], OTHER, "{other}");
    // A reused idempotency key of the erased customer no longer finds its case.
    let r = s.raw(
        "POST",
        "/v1/requests",
        Some(s.token(Role::Submitter)),
        Some((
            "application/json",
            letter(OTHER, OTHER_NAME).to_string().into_bytes(),
        )),
        &[("Idempotency-Key", &format!("{CUSTOMER}-0"))],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(!erased.iter().any(|id| r.json["case_id"] == **id));
}

#[test]
fn erasure_leaves_no_byte_of_the_customer_in_a_redb_store() {
    erase_leaves_no_byte_of_the_customer(Kind::Redb);
}

#[test]
fn erasure_leaves_no_byte_of_the_customer_in_a_sled_store() {
    erase_leaves_no_byte_of_the_customer(Kind::Sled);
}

/// A customer number that is not one: the submitter wrote a name where the number goes.
const NOT_A_NUMBER: &str = "anna.schmidt.1985";

#[test]
fn a_request_that_does_not_fit_its_workflow_goes_to_a_reviewer_and_says_why() {
    let s = Server::start();
    let id = s.submit(&letter(NOT_A_NUMBER, NAME));
    let case = s.wait_case(&id, |c| {
        !["accepted", "running"].contains(&c["status"].as_str().unwrap())
    });
    // Before: 202, then `failed` with `"error": null`, the value quoted in the audit trail.
    assert_eq!(case["status"], "waiting", "{case}");
    let waiting = &case["waiting"];
    assert_eq!(waiting["queue"], "triage", "{case}");
    assert_eq!(waiting["reason"]["code"], "input_invalid", "{case}");
    assert_eq!(waiting["reason"]["workflow"], "request_refund", "{case}");
    assert_eq!(
        waiting["reason"]["fields"],
        json!(["/customer_id: pattern"]),
        "{case}"
    );
    assert!(!waiting.to_string().contains(NOT_A_NUMBER), "{waiting}");

    // The reviewer's inbox says why, without the value.
    let tasks = s.call("GET", "/v1/tasks?queue=triage", Some(Role::Reviewer), None);
    assert_eq!(tasks.status, 200, "{}", tasks.text);
    let task = tasks
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["case_id"] == *id)
        .unwrap()
        .clone();
    assert_eq!(task["reason"]["code"], "input_invalid", "{task}");
    assert!(!tasks.text.contains(NOT_A_NUMBER), "{}", tasks.text);

    // The auditor's trail and case view carry paths and keywords, never the value.
    let audit = auditor_trail(&s, &id);
    assert!(audit.text.contains("input_invalid"), "{}", audit.text);
    assert!(!audit.text.contains(NOT_A_NUMBER), "{}", audit.text);
    let seen = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Auditor), None);
    assert!(!seen.text.contains(NOT_A_NUMBER), "{}", seen.text);

    // A reviewer may correct the customer number and the form fields, nothing else.
    let task_path = format!("/v1/tasks/{}/complete", task["task_id"].as_str().unwrap());
    let refused = s.call(
        "POST",
        &task_path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "request_refund", "data": {"request": {"channel": "form"}}})),
    );
    refused.assert_error(422, "invalid_correction");
    let still_wrong = s.call(
        "POST",
        &task_path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "request_refund", "data": {"request": {"customer_id": "Z"}}})),
    );
    assert_eq!(still_wrong.status, 200, "{}", still_wrong.text);
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(case["waiting"]["reason"]["code"], "input_invalid", "{case}");
    let done = s.call(
        "POST",
        &task_path,
        Some(Role::Reviewer),
        Some(&json!({"decision": "request_refund", "data": {"request": {"customer_id": "C-1002314"}}})),
    );
    assert_eq!(done.status, 200, "{}", done.text);
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["status"], "completed", "{case}");
    assert_eq!(case["outcome"], "refunded", "{case}");
    assert_eq!(case["request"]["customer_id"], "C-1002314", "{case}");
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert!(!audit.text.contains(NOT_A_NUMBER), "{}", audit.text);
    assert!(!audit.text.contains("C-1002314"), "{}", audit.text);
    assert!(
        audit.text.contains("\"corrected\":[\"/customer_id\"]"),
        "{}",
        audit.text
    );
}

/// A copy of the shipped workflows whose refund rule throws what the customer wrote in
/// `fields.note`, as a careless author's rule would.
fn workflows_with_a_throwing_rule() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&support::workflows(), dir.path());
    let rule = dir.path().join("request_refund/extract.rhai");
    let script = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(
        &rule,
        format!("if case.request.fields.note != () {{ throw \"cannot read \" + case.request.fields.note; }}\n{script}"),
    )
    .unwrap();
    dir
}

#[test]
fn a_failed_case_says_why_and_only_the_owner_reads_the_value() {
    let workflows = workflows_with_a_throwing_rule();
    let path = workflows.path().to_path_buf();
    let s = Server::start_with(move |c| c.workflows_dir = path);
    let mut body = letter(CUSTOMER, NAME);
    body["fields"] = json!({ "note": IBAN });
    let id = s.submit(&body);
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["status"], "failed", "{case}");
    // The owner (and reviewers) read the whole message while the data exists.
    let own = s.call(
        "GET",
        &format!("/v1/cases/{id}"),
        Some(Role::Submitter),
        None,
    );
    let error = own.json["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(IBAN), "{}", own.text);
    // The auditor reads why, without the value; the trail never holds it.
    let seen = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Auditor), None);
    let reason = seen.json["error"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("extract.rhai") && reason.contains("node `extract`"),
        "{}",
        seen.text
    );
    assert!(!seen.text.contains(IBAN), "{}", seen.text);
    let audit = auditor_trail(&s, &id);
    assert!(audit.text.contains("the script failed"), "{}", audit.text);
    assert!(!audit.text.contains(IBAN), "{}", audit.text);
}

#[test]
fn a_submitter_reads_its_own_cases_only() {
    let s = Server::start();
    let id = s.submit(&letter(CUSTOMER, NAME));
    s.wait_case(&id, is_final);
    let created = s.call(
        "POST",
        "/v1/tokens",
        Some(Role::Admin),
        Some(&json!({"role": "submitter", "name": "neighbour"})),
    );
    assert!(
        created.status == 200 || created.status == 201,
        "{}",
        created.text
    );
    let neighbour = created.json["token"].as_str().unwrap().to_string();
    for path in [format!("/v1/cases/{id}"), format!("/v1/cases/{id}/audit")] {
        let r = s.raw("GET", &path, Some(&neighbour), None, &[]);
        assert!(r.status == 404 || r.status == 403, "{path}: {}", r.text);
        assert!(!r.text.contains(NAME), "{}", r.text);
    }
    let tasks = s.raw("GET", "/v1/tasks", Some(&neighbour), None, &[]);
    assert_eq!(tasks.status, 403, "{}", tasks.text);
    // Metrics carry no customer number, name or text.
    let metrics = s.call("GET", "/metrics", Some(Role::Admin), None);
    for needle in [CUSTOMER, NAME, SNIPPET] {
        assert!(!metrics.text.contains(needle), "{needle} in /metrics");
    }
}

/// The case's audit trail as an auditor reads it.
fn auditor_trail(s: &Server, id: &str) -> crate::support::Response {
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert_eq!(audit.status, 200, "{}", audit.text);
    audit
}
