//! `casegraph corrections export`: requests the shipped model sent to triage, decided by a
//! reviewer over HTTP on the real server, exported offline as labelled training examples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use casegraph::auth::Role;
use serde_json::{Value, json};
use support::{Server, casegraph};

/// Submits a request, waits until the model sent it to triage, and completes the triage task.
fn triage_and_decide(s: &Server, request: Value, completion: Value) -> String {
    let id = s.submit(&request);
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(case["route"]["queue"], "triage", "{case}");
    let done = s.call(
        "POST",
        &format!("/v1/tasks/{id}.triage/complete"),
        Some(Role::Reviewer),
        Some(&completion),
    );
    assert_eq!(done.status, 200, "{}", done.text);
    id
}

#[test]
fn reviewed_triage_decisions_are_exported_as_redacted_labelled_examples() {
    // The data directory outlives the server (its own temporary one goes with it): the
    // tokens made for the server are copied over before it starts.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start_with(|c| {
        std::fs::create_dir_all(&data).unwrap();
        for f in std::fs::read_dir(&c.data_dir).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
        }
        c.data_dir = data.clone();
    });
    let vague = |extra: &str| json!({"channel": "chat", "text": format!("hallo, wegen der sache von neulich{extra}")});
    // The reviewer names the intent: that is the label.
    let named = triage_and_decide(
        &s,
        vague(
            ", schreibt mir an erika.mustermann@example.de oder zahlt auf DE89 3704 0044 0532 0130 00",
        ),
        json!({"decision": "request_refund", "data": {"intent": "request_refund"}, "comment": "Frau M. will ihr Geld"}),
    );
    // A workflow serving one intent: its intent is the label.
    let routed = triage_and_decide(
        &s,
        vague(" - danke"),
        json!({"decision": "terminate_account"}),
    );
    // A workflow serving two intents (card_arrival, card_delivery_estimate): which one?
    triage_and_decide(&s, vague(", grüße"), json!({"decision": "card_arrival"}));
    // Closed: not necessarily off-topic.
    triage_and_decide(&s, vague(""), json!({"decision": "close"}));
    // Closed as not for us.
    let off_topic = triage_and_decide(
        &s,
        json!({"channel": "chat", "text": "Wie wird das Wetter am Wochenende in Hamburg?"}),
        json!({"decision": "close", "data": {"intent": "oos"}}),
    );
    // Labels the model does not have, or that are not labels at all, are refused with the
    // reason and the task stays open; the reviewer then closes it without a label.
    let mistyped = s.submit(&vague("!"));
    s.wait_case(&mistyped, |c| c["status"] == "waiting");
    for (intent, says) in [
        ("weather", "`weather` is not a label of the model"),
        ("Kundin ist verärgert", "must be an intent label"),
    ] {
        let refused = s.call(
            "POST",
            &format!("/v1/tasks/{mistyped}.triage/complete"),
            Some(Role::Reviewer),
            Some(&json!({"decision": "request_refund", "data": {"intent": intent}})),
        );
        assert_eq!(refused.status, 422, "{}", refused.text);
        assert_eq!(
            refused.json["error"]["code"], "invalid_intent",
            "{}",
            refused.text
        );
        assert!(refused.text.contains(says), "{}", refused.text);
    }
    let refused = s.call(
        "POST",
        &format!("/v1/tasks/{mistyped}.triage/complete"),
        Some(Role::Reviewer),
        Some(&json!({"decision": "close", "data": {"intent": "card_arival"}})),
    );
    let allowed = &refused.json["error"]["details"]["allowed"];
    assert!(
        allowed.as_array().unwrap().contains(&json!("card_arrival")),
        "{}",
        refused.text
    );
    let still = s.call(
        "GET",
        &format!("/v1/cases/{mistyped}"),
        Some(Role::Reviewer),
        None,
    );
    assert_eq!(still.json["status"], "waiting", "{}", still.text);
    assert_eq!(still.json["route"]["queue"], "triage", "{}", still.text);
    let closed = s.call(
        "POST",
        &format!("/v1/tasks/{mistyped}.triage/complete"),
        Some(Role::Reviewer),
        Some(&json!({"decision": "close"})),
    );
    assert_eq!(closed.status, 200, "{}", closed.text);
    // A customer whose data is erased later.
    triage_and_decide(
        &s,
        json!({"channel": "chat", "customer_id": "C-77", "text": "Wie spät ist es in Tokio?"}),
        json!({"decision": "close", "data": {"intent": "oos"}}),
    );
    s.stop().unwrap();
    let data = data.to_str().unwrap().to_string();

    let erase = casegraph(&["erase", "--customer", "C-77", "--data", &data]);
    assert!(
        erase.status.success(),
        "{}",
        String::from_utf8_lossy(&erase.stderr)
    );

    let file = tmp.path().join("corrections.jsonl");
    let out = casegraph(&[
        "corrections",
        "export",
        "--data",
        &data,
        "--output",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_case = |id: &str| {
        lines
            .iter()
            .find(|l| l["case_id"] == id)
            .unwrap_or_else(|| panic!("{id} exported: {text}"))
    };
    assert_eq!(lines.len(), 3, "{text}\n{stderr}");

    let l = by_case(&named);
    assert_eq!(l["intent"], "request_refund");
    assert_eq!(l["channel"], "chat");
    assert_eq!(l["language"], "de");
    assert!(
        l["text"]
            .as_str()
            .unwrap()
            .contains("wegen der sache von neulich"),
        "{l}"
    );
    assert!(l["text"].as_str().unwrap().contains("[EMAIL]"), "{l}");
    assert!(
        l["model"].as_str().unwrap().starts_with("intent-e5-de-en"),
        "{l}"
    );
    assert!(l["model_confidence"].is_number(), "{l}");
    assert!(l["decided_at"].is_string(), "{l}");
    assert_eq!(by_case(&routed)["intent"], "terminate_account");
    assert_eq!(by_case(&off_topic)["intent"], "oos");
    assert_eq!(by_case(&off_topic)["model_out_of_scope"], true);
    // No personal data, no reviewer, no customer.
    for needle in ["mustermann", "DE89", "0532", "Frau M.", "reviewer", "C-77"] {
        assert!(
            !text.to_lowercase().contains(&needle.to_lowercase()),
            "{needle} in {text}"
        );
    }
    for key in ["by", "customer", "comment"] {
        assert!(
            lines.iter().all(|l| l.get(key).is_none()),
            "{key} in {text}"
        );
    }

    assert!(stderr.contains("exported 3 correction(s)"), "{stderr}");
    assert!(stderr.contains("skipped closed: 2"), "{stderr}");
    assert!(stderr.contains("skipped ambiguous_workflow: 1"), "{stderr}");
    assert!(!stderr.contains("invalid_label"), "{stderr}");
    assert!(stderr.contains("skipped erased: 1"), "{stderr}");

    // Only decisions from a time on.
    let later = casegraph(&[
        "corrections",
        "export",
        "--data",
        &data,
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(later.status.success());
    assert!(later.stdout.is_empty());
    assert!(String::from_utf8_lossy(&later.stderr).contains("exported 0 correction(s)"));
}

#[test]
fn a_reviewer_who_starts_answer_question_for_another_intent_gets_that_intent_answered() {
    let s = Server::start();
    let request = json!({"channel": "chat", "language": "en", "text": "hello, about the thing from the other day"});
    let id = s.submit(&request);
    let case = s.wait_case(&id, |c| c["status"] == "waiting");
    assert_eq!(case["route"]["queue"], "triage", "{case}");
    let classified = case["classification"]["intent"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_ne!(classified, "card_acceptance", "{case}");
    let complete = |body: Value| {
        s.call(
            "POST",
            &format!("/v1/tasks/{id}.triage/complete"),
            Some(Role::Reviewer),
            Some(&body),
        )
    };
    // Naming an intent the workflow does not answer is refused with the ones it does, and
    // the task stays open.
    let refused =
        complete(json!({"decision": "answer_question", "data": {"intent": "request_refund"}}));
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(
        refused.json["error"]["code"], "invalid_intent",
        "{}",
        refused.text
    );
    assert!(refused.text.contains("data.intent"), "{}", refused.text);
    // The reviewer's intent is the one the case is answered for; the model's reading stays.
    let done =
        complete(json!({"decision": "answer_question", "data": {"intent": "card_acceptance"}}));
    assert_eq!(done.status, 200, "{}", done.text);
    let case = s.wait_case(&id, |c| {
        ["completed", "failed", "escalated"].contains(&c["status"].as_str().unwrap_or(""))
    });
    assert_eq!(case["status"], "completed", "{case}");
    assert_eq!(case["outcome"], "answered", "{case}");
    let reply = case["reply"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reply.contains("Mastercard"),
        "the card_acceptance answer: {case}"
    );
}
