//! Conversations: `POST /v1/cases/{id}/messages` and requests that quote a case reference.
//! A submitter tries to write to another system's case, to flood a case, to race two
//! answers for one question; nothing it sends may reach a case it did not submit, and no
//! acknowledged message may be lost.

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::Server;

fn refund_without_amount(customer: &str) -> Value {
    json!({"channel": "chat", "language": "en", "customer_id": customer,
        "text": "I want a refund for the order I cancelled last week"})
}

fn waits_for_answer(c: &Value) -> bool {
    c["status"] == "waiting" && c["waiting"]["kind"] == "answer"
}

fn submitter(s: &Server, name: &str) -> String {
    let r = s.call(
        "POST",
        "/v1/tokens",
        Some(Role::Admin),
        Some(&json!({"role": "submitter", "name": name})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["token"].as_str().unwrap().to_string()
}

fn post_as(s: &Server, token: &str, path: &str, body: &Value) -> crate::support::Response {
    s.raw(
        "POST",
        path,
        Some(token),
        Some(("application/json", body.to_string().into_bytes())),
        &[],
    )
}

#[test]
fn only_the_case_submitter_may_write_to_a_case() {
    let s = Server::start();
    let id = s.submit(&refund_without_amount("C-5000001"));
    let case = s.wait_case(&id, waits_for_answer);
    let reference = case["reference"].as_str().unwrap().to_string();
    let mallory = submitter(&s, "mallory");
    let path = format!("/v1/cases/{id}/messages");
    let answer = json!({"channel": "chat", "text": "It was 999.00 EUR"});
    // Another system's token cannot tell the case exists, let alone answer it.
    post_as(&s, &mallory, &path, &answer).assert_error(404, "not_found");
    assert_eq!(
        s.raw("GET", &format!("/v1/cases/{id}"), Some(&mallory), None, &[])
            .status,
        404
    );
    for role in [Role::Reviewer, Role::Author, Role::Auditor] {
        s.call("POST", &path, Some(role), Some(&answer))
            .assert_error(403, "forbidden");
    }
    s.raw(
        "POST",
        &path,
        None,
        Some(("application/json", answer.to_string().into_bytes())),
        &[],
    )
    .assert_error(401, "unauthorized");
    // Quoting the reference (in the text, or as `in_reply_to`) with the same customer
    // number does not attach its request either: it becomes a case of its own.
    for quoted in [
        json!({"channel": "chat", "language": "en", "customer_id": "C-5000001",
            "text": format!("Re {reference}: it was 999.00 EUR")}),
        json!({"channel": "chat", "language": "en", "customer_id": "C-5000001",
            "text": "it was 999.00 EUR", "in_reply_to": reference}),
    ] {
        let r = post_as(&s, &mallory, "/v1/requests", &quoted);
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json["attached"], false, "{}", r.text);
        assert_ne!(r.json["case_id"], id.as_str());
        assert_eq!(r.json.get("message_id"), None, "{}", r.text);
    }
    // The owner's own system quoting it for another customer does not attach either.
    let other_customer = json!({"channel": "chat", "language": "en", "customer_id": "C-5000002",
        "text": format!("{reference} it was 5.00 EUR")});
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Submitter),
        Some(&other_customer),
    );
    assert_eq!(r.json["attached"], false, "{}", r.text);
    // The case still waits, untouched.
    let after = s.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
    assert!(waits_for_answer(&after.json), "{}", after.text);
    assert_eq!(
        after.json["messages"].as_array().unwrap().len(),
        1,
        "only the question"
    );
}

#[test]
fn oversized_and_malformed_messages_are_refused_and_store_nothing() {
    let s = Server::start();
    // A large refund waits for a reviewer, so messages pile up on it.
    let id = s.submit(
        &json!({"channel": "form", "language": "en", "customer_id": "C-5000003",
        "text": "Refund please", "fields": {"amount": "900.00"}}),
    );
    s.wait_case(&id, |c| c["waiting"]["kind"] == "task");
    let path = format!("/v1/cases/{id}/messages");
    let post = |body: &Value| s.call("POST", &path, Some(Role::Submitter), Some(body));
    post(&json!({"channel": "chat", "text": "x".repeat(20_001)}))
        .assert_error(422, "invalid_request");
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("f{i}"), json!("v"))).collect();
    post(&json!({"channel": "form", "text": "", "fields": many}))
        .assert_error(422, "invalid_request");
    post(&json!({"channel": "chat", "text": "hi", "case_id": "c-other"}))
        .assert_error(422, "invalid_request");
    post(&json!({"channel": "chat"})).assert_error(422, "invalid_request");
    let r = s.raw(
        "POST",
        &path,
        Some(s.token(Role::Submitter)),
        Some((
            "application/json",
            b"{\"channel\": \"chat\", \"text\": ".to_vec(),
        )),
        &[],
    );
    r.assert_error(400, "malformed_json");
    let long_id = format!("/v1/cases/{}/messages", "c".repeat(5_000));
    let r = s.call(
        "POST",
        &long_id,
        Some(Role::Submitter),
        Some(&json!({"channel": "chat", "text": "hi"})),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.len() < 1_000, "the id is not echoed whole");
    // A flood stops at the per-case bound; what was accepted stays.
    for i in 0..50 {
        let r = post(&json!({"channel": "chat", "text": format!("message {i}")}));
        assert_eq!(r.status, 202, "{}", r.text);
    }
    post(&json!({"channel": "chat", "text": "one more"})).assert_error(409, "too_many_messages");
    let case = s.call(
        "GET",
        &format!("/v1/cases/{id}"),
        Some(Role::Reviewer),
        None,
    );
    let messages = case.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 50, "nothing refused was stored");
    assert_eq!(
        case.json["waiting"]["kind"], "task",
        "the case is still the reviewer's"
    );
}

#[test]
fn two_answers_racing_for_one_question_are_both_kept() {
    let s = Server::start();
    let id = s.submit(
        &json!({"channel": "form", "language": "en", "customer_id": "C-5000004",
        "text": "please change my contact details", "fields": {},
        "metadata": {"intent": "edit_personal_details"}}),
    );
    s.wait_case(&id, waits_for_answer);
    let path = format!("/v1/cases/{id}/messages");
    // Chat answers: a change given in a chat goes to a reviewer, so the case stays live
    // whichever answer the question takes.
    let answers = [
        json!({"channel": "chat", "text": "my new address is first@example.com"}),
        json!({"channel": "chat", "text": "my new address is second@example.com"}),
    ];
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = answers
            .iter()
            .map(|a| scope.spawn(|| s.call("POST", &path, Some(Role::Submitter), Some(a))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // One answer was taken by the question; the other is on the case, not lost.
    let case = s.wait_case(&id, |c| {
        c["status"] != "running" && c["status"] != "accepted"
    });
    let incoming: Vec<&Value> = case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .collect();
    assert_eq!(incoming.len(), 2, "{case}");
    let taken = incoming
        .iter()
        .filter(|m| m["node"] == "ask_details")
        .count();
    assert_eq!(taken, 1, "exactly one answer was taken: {case}");
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r.json["message_id"].as_str().unwrap())
        .collect();
    for m in incoming {
        assert!(ids.contains(&m["message_id"].as_str().unwrap()));
    }
}
