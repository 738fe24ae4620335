//! `POST /v1/events` and the consent endpoints under attack: tokens without the role or
//! the capability, malformed and oversized events, an event id reused with another body,
//! and auditors reading consents (masked).

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::Server;

fn event(id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "crm", "type": "warranty.expiring",
        "subject": "K-1", "data": { "product_id": "P-1", "product": "dryer", "expires_on": "2027-01-05" }
    })
}

#[test]
fn only_tokens_allowed_to_send_events_may_post_them() {
    let s = Server::start();
    // A submitter without the capability, and roles that never may.
    let plain = s.token(Role::Submitter).to_string();
    let r = s.post_event(&plain, &event("e-1"));
    r.assert_error(403, "forbidden");
    assert_eq!(r.json["error"]["details"]["capability"], "send_events");
    for role in [Role::Reviewer, Role::Author, Role::Auditor] {
        let token = s.token(role).to_string();
        s.post_event(&token, &event("e-1"))
            .assert_error(403, "forbidden");
    }
    let r = s.raw(
        "POST",
        "/v1/events",
        None,
        Some((
            "application/cloudevents+json",
            event("e-1").to_string().into_bytes(),
        )),
        &[],
    );
    r.assert_error(401, "unauthorized");
    // Nothing was stored by the refused attempts: the first accepted one starts a case.
    let sender = s.token_with("products", &["send_events"]);
    let r = s.post_event(&sender, &event("e-1"));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json["cases"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
}

#[test]
fn malformed_events_are_refused_naming_the_attribute() {
    let s = Server::start();
    let sender = s.token_with("products", &["send_events"]);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("specversion", json!("0.3"), 422, "specversion"),
        ("id", Value::Null, 422, "id"),
        ("id", json!("x".repeat(300)), 422, "id"),
        ("source", json!(""), 422, "source"),
        ("type", json!("warranty expiring!"), 422, "type"),
        ("subject", json!("K 1; drop"), 422, "subject"),
        ("time", json!("soon"), 422, "time"),
        ("datacontenttype", json!("text/xml"), 422, "datacontenttype"),
        ("data_base64", json!("AAAA"), 422, "data_base64"),
        ("subject", Value::Null, 422, "subject"),
        // `replyto` may not point the box at itself, its network or anything unlisted.
        ("replyto", json!("http://127.0.0.1:9/admin"), 422, "replyto"),
        (
            "replyto",
            json!("http://169.254.169.254/latest/meta-data"),
            422,
            "replyto",
        ),
        ("replyto", json!("file:///etc/passwd"), 422, "replyto"),
        (
            "replyto",
            json!(format!("https://x.example/{}", "a".repeat(5000))),
            422,
            "replyto",
        ),
    ];
    for (attribute, value, status, named) in cases {
        let mut e = event("e-bad");
        if value.is_null() {
            e.as_object_mut().unwrap().remove(attribute);
        } else {
            e[attribute] = value;
        }
        let r = s.post_event(&sender, &e);
        assert_eq!(r.status, status, "{attribute}: {}", r.text);
        assert_eq!(
            r.json["error"]["details"]["attribute"], named,
            "{attribute}: {}",
            r.text
        );
    }
    // Not JSON, the wrong media type, too large.
    let r = s.raw(
        "POST",
        "/v1/events",
        Some(&sender),
        Some((
            "application/cloudevents+json",
            b"{\"specversion\":".to_vec(),
        )),
        &[],
    );
    r.assert_error(400, "malformed_json");
    let r = s.raw(
        "POST",
        "/v1/events",
        Some(&sender),
        Some(("text/plain", event("e-2").to_string().into_bytes())),
        &[],
    );
    r.assert_error(415, "unsupported_media_type");
    let mut big = event("e-3");
    big["data"]["padding"] = json!("x".repeat(70 * 1024));
    let r = s.post_event(&sender, &big);
    r.assert_error(413, "body_too_large");
    // None of them started anything; an id reused with another body is a conflict.
    let first = s.post_event(&sender, &event("e-4"));
    assert_eq!(first.status, 202, "{}", first.text);
    let mut changed = event("e-4");
    changed["data"]["product_id"] = json!("P-2");
    s.post_event(&sender, &changed)
        .assert_error(409, "event_reused");
}

#[test]
fn consents_are_recorded_by_allowed_tokens_only_and_masked_for_auditors() {
    let s = Server::start();
    let body = br#"{"granted": true, "source": "app"}"#.to_vec();
    let put = |token: Option<&str>, path: &str, body: &[u8]| {
        s.raw(
            "PUT",
            path,
            token,
            Some(("application/json", body.to_vec())),
            &[],
        )
    };
    let plain = s.token(Role::Submitter).to_string();
    put(Some(&plain), "/v1/customers/K-1/consents/marketing", &body).assert_error(403, "forbidden");
    let reviewer = s.token(Role::Reviewer).to_string();
    put(
        Some(&reviewer),
        "/v1/customers/K-1/consents/marketing",
        &body,
    )
    .assert_error(403, "forbidden");
    put(None, "/v1/customers/K-1/consents/marketing", &body).assert_error(401, "unauthorized");
    let crm = s.token_with("crm", &["manage_consents"]);
    put(Some(&crm), "/v1/customers/K-1/consents/Marketing!", &body)
        .assert_error(422, "invalid_request");
    put(Some(&crm), "/v1/customers/K%201/consents/marketing", &body)
        .assert_error(422, "invalid_request");
    put(
        Some(&crm),
        "/v1/customers/K-1/consents/marketing",
        br#"{"granted": "yes", "source": "app"}"#,
    )
    .assert_error(422, "invalid_request");
    let ok = put(Some(&crm), "/v1/customers/K-1/consents/marketing", &body);
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Reading: not for submitters; auditors see states and times, not sources.
    s.call(
        "GET",
        "/v1/customers/K-1/consents",
        Some(Role::Submitter),
        None,
    )
    .assert_error(403, "forbidden");
    let seen = s.call(
        "GET",
        "/v1/customers/K-1/consents",
        Some(Role::Auditor),
        None,
    );
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(seen.json["masked"], true);
    assert_eq!(seen.json["consents"][0]["granted"], true);
    assert!(
        seen.json["consents"][0]["current"]["source"].is_null(),
        "{}",
        seen.text
    );
    assert!(
        seen.json["consents"][0]["current"]["by"].is_null(),
        "{}",
        seen.text
    );
}
