//! Conversations through the real server: a case asks the customer (an `ask` node), waits
//! durably, and resumes on the answer, whatever channel it comes back on — a message to the
//! case, or a new request that quotes the printed case reference.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use casegraph::auth::Role;
use serde_json::{Value, json};
use support::Server;

/// A German refund letter that names no amount.
fn letter_without_amount(customer: &str) -> Value {
    json!({
        "channel": "letter",
        "language": "de",
        "customer_id": customer,
        "text": "Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung. Bitte überweisen Sie das Geld zurück.\nMit freundlichen Grüßen\nErika Mustermann",
    })
}

fn waits_for_answer(c: &Value) -> bool {
    c["status"] == "waiting" && c["waiting"]["kind"] == "answer"
}

fn is_final(c: &Value) -> bool {
    ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
}

fn post_message(s: &Server, case: &str, role: Role, body: &Value) -> support::Response {
    s.call(
        "POST",
        &format!("/v1/cases/{case}/messages"),
        Some(role),
        Some(body),
    )
}

#[test]
fn a_letter_without_an_amount_asks_and_the_answer_completes_the_refund() {
    let s = Server::start();
    let id = s.submit(&letter_without_amount("C-1002314"));
    let case = s.wait_case(&id, waits_for_answer);
    let reference = case["reference"].as_str().unwrap().to_string();
    assert!(reference.starts_with("CG-"), "{case}");
    assert_eq!(case["waiting"]["node"], "ask_amount", "{case}");
    assert_eq!(case["waiting"]["reference"], reference.as_str());
    assert!(case["waiting"]["due"].is_string(), "{case}");
    let question = case["reply"]["text"].as_str().unwrap();
    assert!(question.contains(&reference), "{question}");
    assert!(question.contains("Betrag"), "{question}");
    assert_eq!(case["messages"][0]["direction"], "out", "{case}");

    let r = post_message(
        &s,
        &id,
        Role::Submitter,
        &json!({"channel": "chat", "text": "Es waren 42,50 EUR"}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["case_id"], id.as_str());
    assert!(r.json["message_id"].as_str().unwrap().starts_with("m-"));
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["status"], "completed", "{case}");
    assert_eq!(case["outcome"], "refunded", "{case}");
    assert!(case["reply"]["text"].as_str().unwrap().contains("42,50"));
    // The conversation: the question out, the answer in, taken by the ask node.
    let messages = case["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{case}");
    assert_eq!(messages[1]["direction"], "in");
    assert_eq!(messages[1]["channel"], "chat");
    assert_eq!(messages[1]["node"], "ask_amount");
    assert_eq!(messages[1]["text"], "Es waren 42,50 EUR");
    assert_eq!(case["data"]["answers"]["ask_amount"]["channel"], "chat");
    assert!(case["data"]["answers"]["ask_amount"]["classification"].is_object());

    // The audit trail has both messages by digest, never their text.
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert_eq!(audit.status, 200);
    let kinds: Vec<&str> = audit.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "message")
        .map(|r| r["body"]["direction"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["out", "in"], "{}", audit.text);
    assert!(
        !audit.text.contains("42,50 EUR"),
        "the audit quotes the answer"
    );
    assert_eq!(audit.json["chain_verified"], true);
    // The auditor sees the conversation's shape, not its text.
    let masked = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Auditor), None);
    assert_eq!(masked.json["messages"][1]["text"], Value::Null);
    assert_eq!(masked.json["messages"][1]["channel"], "chat");
}

#[test]
fn an_ocr_letter_that_quotes_the_reference_is_attached_to_the_waiting_case() {
    let s = Server::start();
    let id = s.submit(&letter_without_amount("C-1002315"));
    let case = s.wait_case(&id, waits_for_answer);
    let reference = case["reference"].as_str().unwrap().to_string();
    // OCR read one character wrong; the check character lets the box find the case.
    let code: Vec<char> = reference[3..].replace('-', "").chars().collect();
    let mut noisy = code.clone();
    noisy[5] = if code[5] == '8' { 'B' } else { '8' };
    let noisy: String = noisy.into_iter().collect();
    let letter = json!({
        "channel": "letter",
        "language": "de",
        "customer_id": "C-1002315",
        "text": format!("Sehr geehrte Damen und Herren,\nIhr Zeichen: CG-{} {}\nder Betrag war 35,00 EUR.\nMit freundlichen Grüßen\nErika Mustermann", &noisy[..4], &noisy[4..]),
    });
    let r = s.call("POST", "/v1/requests", Some(Role::Submitter), Some(&letter));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["attached"], true, "{}", r.text);
    assert_eq!(r.json["case_id"], id.as_str(), "{}", r.text);
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["outcome"], "refunded", "{case}");
    assert_eq!(case["messages"][1]["via"], "reference");
    assert_eq!(case["messages"][1]["channel"], "letter");

    // The finished case's reference quoted again starts a new case linked to it.
    let again = json!({"channel": "chat", "language": "de", "customer_id": "C-1002315",
        "text": "Ich habe noch eine Frage zu meiner Erstattung", "in_reply_to": reference});
    let r = s.call("POST", "/v1/requests", Some(Role::Submitter), Some(&again));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["attached"], false);
    let new_id = r.json["case_id"].as_str().unwrap();
    assert_ne!(new_id, id);
    let new_case = s.call(
        "GET",
        &format!("/v1/cases/{new_id}"),
        Some(Role::Admin),
        None,
    );
    assert_eq!(
        new_case.json["linked_case"],
        id.as_str(),
        "{}",
        new_case.text
    );
}

#[test]
fn an_unanswered_question_follows_on_timeout() {
    // The shipped refund workflow with a one-second timeout instead of 14 days.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&support::workflows(), dir.path());
    let wf = dir.path().join("request_refund/workflow.yaml");
    let text = std::fs::read_to_string(&wf).unwrap();
    assert!(text.contains("timeout: 14d"));
    std::fs::write(&wf, text.replace("timeout: 14d", "timeout: 1s")).unwrap();
    let workflows = dir.path().to_path_buf();
    let s = Server::start_with(move |c| c.workflows_dir = workflows);
    let id = s.submit(&letter_without_amount("C-1002316"));
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["outcome"], "no_answer", "{case}");
    assert!(
        case["path"]
            .as_array()
            .unwrap()
            .contains(&json!("reply_closed"))
    );
    // A message after the end is refused, and nothing is stored.
    let r = post_message(
        &s,
        &id,
        Role::Submitter,
        &json!({"channel": "chat", "text": "42 EUR"}),
    );
    r.assert_error(409, "case_finished");
}

#[test]
fn a_message_while_the_case_waits_for_a_reviewer_is_kept_for_the_next_question() {
    let s = Server::start();
    // A large refund waits for a reviewer's approval.
    let id = s.submit(
        &json!({"channel": "form", "language": "en", "customer_id": "C-1002317",
        "text": "Refund for the cancelled order", "fields": {"amount": "480.00"}}),
    );
    let case = s.wait_case(&id, |c| c["waiting"]["kind"] == "task");
    assert_eq!(case["current_node"], "approval", "{case}");
    let r = post_message(
        &s,
        &id,
        Role::Submitter,
        &json!({"channel": "chat", "text": "Any news on my refund?"}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["status"], "waiting", "{}", r.text);
    // Still waiting for the reviewer, who sees the message on the case.
    let case = s.call(
        "GET",
        &format!("/v1/cases/{id}"),
        Some(Role::Reviewer),
        None,
    );
    assert_eq!(case.json["waiting"]["kind"], "task");
    assert_eq!(case.json["messages"][0]["text"], "Any news on my refund?");
    assert_eq!(case.json["messages"][0]["node"], Value::Null);
}

#[test]
fn messages_are_idempotent_and_only_the_case_submitter_may_post() {
    let s = Server::start();
    let id = s.submit(&letter_without_amount("C-1002318"));
    s.wait_case(&id, waits_for_answer);
    let path = format!("/v1/cases/{id}/messages");
    let body = json!({"channel": "form", "text": "", "fields": {"amount": "12.00"}});
    let post = |key: &str, body: &Value| {
        s.raw(
            "POST",
            &path,
            Some(s.token(Role::Submitter)),
            Some(("application/json", body.to_string().into_bytes())),
            &[("Idempotency-Key", key)],
        )
    };
    let first = post("answer-1", &body);
    assert_eq!(first.status, 202, "{}", first.text);
    let again = post("answer-1", &body);
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["duplicate"], true);
    assert_eq!(again.json["message_id"], first.json["message_id"]);
    post(
        "answer-1",
        &json!({"channel": "form", "text": "", "fields": {"amount": "99.00"}}),
    )
    .assert_error(409, "idempotency_key_reused");
    let case = s.wait_case(&id, is_final);
    assert_eq!(case["outcome"], "refunded");
    assert_eq!(
        case["messages"].as_array().unwrap().len(),
        2,
        "one answer stored"
    );

    // Another submitter, a reviewer, an auditor: nobody else may write to the case.
    let other = s.call(
        "POST",
        "/v1/tokens",
        Some(Role::Admin),
        Some(&json!({"role": "submitter", "name": "other-system"})),
    );
    let other = other.json["token"].as_str().unwrap().to_string();
    let id2 = s.submit(&letter_without_amount("C-1002319"));
    let case2 = s.wait_case(&id2, waits_for_answer);
    let path2 = format!("/v1/cases/{id2}/messages");
    let answer = json!({"channel": "chat", "text": "40 EUR"});
    let r = s.raw(
        "POST",
        &path2,
        Some(&other),
        Some(("application/json", answer.to_string().into_bytes())),
        &[],
    );
    r.assert_error(404, "not_found");
    post_message(&s, &id2, Role::Reviewer, &answer).assert_error(403, "forbidden");
    post_message(&s, &id2, Role::Auditor, &answer).assert_error(403, "forbidden");
    post_message(&s, "c-00000000000-000000000000", Role::Submitter, &answer)
        .assert_error(404, "not_found");
    // Another submitter quoting the reference in a request starts its own case: it cannot
    // answer someone else's question.
    let quoting = json!({"channel": "chat", "language": "de", "customer_id": "C-1002319",
        "text": format!("Betrag 40 EUR, {}", case2["reference"].as_str().unwrap())});
    let r = s.raw(
        "POST",
        "/v1/requests",
        Some(&other),
        Some(("application/json", quoting.to_string().into_bytes())),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["attached"], false, "{}", r.text);
    assert_ne!(r.json["case_id"], id2.as_str());
    let still = s.call("GET", &format!("/v1/cases/{id2}"), Some(Role::Admin), None);
    assert!(waits_for_answer(&still.json), "{}", still.text);

    // Bad bodies name what is wrong.
    post_message(
        &s,
        &id2,
        Role::Submitter,
        &json!({"channel": "fax", "text": "x"}),
    )
    .assert_error(422, "invalid_request");
    post_message(
        &s,
        &id2,
        Role::Submitter,
        &json!({"channel": "chat", "text": "  "}),
    )
    .assert_error(422, "invalid_request");
    let long = "x".repeat(20_001);
    let r = post_message(
        &s,
        &id2,
        Role::Submitter,
        &json!({"channel": "chat", "text": long}),
    );
    assert!(r.status == 413 || r.status == 422, "{}", r.text);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_question_and_then_the_outcome_reach_reply_to() {
    use std::io::Write;
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hook.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = hook.accept().unwrap();
            let request = support::read_request(&mut conn);
            conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            tx.send(request).unwrap();
        }
    });
    let allowed = addr.clone();
    let s = Server::start_with(move |c| c.webhooks.allowed_hosts = vec![allowed]);
    let mut body = letter_without_amount("C-1002320");
    body["reply_to"] = json!(format!("http://{addr}/hooks/case"));
    let id = s.submit(&body);
    let wait = std::time::Duration::from_secs(30);
    // The question arrives while the case waits, keyed apart from the final notification.
    let question = rx.recv_timeout(wait).expect("the question was sent");
    let q = support::request_body(&question);
    assert_eq!(q["case_id"], id.as_str(), "{q}");
    assert_eq!(q["status"], "waiting", "{q}");
    assert_eq!(q["waiting"]["kind"], "answer", "{q}");
    let reference = q["reference"].as_str().unwrap();
    assert!(q["reply"].as_str().unwrap().contains(reference), "{q}");
    assert!(
        question
            .to_lowercase()
            .contains(&format!("idempotency-key: {id}:q")),
        "{question}"
    );
    let r = post_message(
        &s,
        &id,
        Role::Submitter,
        &json!({"channel": "chat", "text": "Es waren 12,00 EUR"}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let end = rx.recv_timeout(wait).expect("the outcome was sent");
    let e = support::request_body(&end);
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(e["outcome"], "refunded", "{e}");
    assert!(
        end.to_lowercase()
            .contains(&format!("idempotency-key: {id}\r\n")),
        "{end}"
    );
}
