//! Hostile input: tokens, roles and capabilities. A revoked token (by the API or by the CLI
//! while the server runs) is refused from the next request on and never written back;
//! writers of the token file lose nothing; no role but admin manages tokens; only a token
//! granted `state_intent` decides a classification; what a client presents as a token is
//! never echoed, and the bootstrap admin token is written only to a fresh private file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::{Server, casegraph};

const NOT_ADMIN: [Role; 4] = [Role::Submitter, Role::Reviewer, Role::Author, Role::Auditor];

/// Creates a token through the API as the admin; returns (id, token).
fn create(s: &Server, body: Value) -> (String, String) {
    let r = s.call("POST", "/v1/tokens", Some(Role::Admin), Some(&body));
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.json["id"].as_str().unwrap().to_string(),
        r.json["token"].as_str().unwrap().to_string(),
    )
}

/// `GET /v1/workflows` with a raw token: any role may, so the status says only whether
/// the token is valid.
fn status_with(s: &Server, token: &str) -> u16 {
    s.raw("GET", "/v1/workflows", Some(token), None, &[]).status
}

fn names(s: &Server) -> Vec<String> {
    let r = s.call("GET", "/v1/tokens", Some(Role::Admin), None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn token_cli(data: &Path, args: &[&str]) -> std::process::Output {
    let data = data.to_str().unwrap();
    let mut all = vec!["token", args[0], "--data", data];
    all.extend(&args[1..]);
    casegraph(&all)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn cli_revoke_while_serving_takes_effect_at_once_and_is_not_written_back() {
    let s = Server::start();
    let (_, crm) = create(&s, json!({"role": "submitter", "name": "crm"}));
    assert_eq!(status_with(&s, &crm), 200);
    let out = token_cli(s.data.path(), &["revoke", "crm"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status_with(&s, &crm), 401, "the next request is refused");
    // The server's next write merges into the file instead of saving its old list.
    let (_, other) = create(&s, json!({"role": "reviewer", "name": "after"}));
    assert_eq!(status_with(&s, &crm), 401, "not resurrected by a create");
    assert_eq!(status_with(&s, &other), 200);
    assert!(!names(&s).contains(&"crm".to_string()));
    let file = std::fs::read_to_string(s.data.path().join("tokens.json")).unwrap();
    assert!(!file.contains("\"crm\""), "{file}");
    assert_eq!(mode(&s.data.path().join("tokens.json")), 0o600);
    // A token the CLI creates while serving works at once.
    let out = token_cli(
        s.data.path(),
        &["create", "--role", "auditor", "--name", "late"],
    );
    assert!(out.status.success(), "{out:?}");
    let late = String::from_utf8(out.stdout).unwrap();
    assert_eq!(status_with(&s, late.trim()), 200);
}

#[test]
fn delete_token_is_admin_only_revokes_at_once_and_answers_404_for_unknown_ids() {
    let s = Server::start();
    let (id, token) = create(&s, json!({"role": "reviewer", "name": "bob"}));
    let path = format!("/v1/tokens/{id}");
    s.call("DELETE", &path, None, None)
        .assert_error(401, "unauthorized");
    for role in NOT_ADMIN {
        s.call("DELETE", &path, Some(role), None)
            .assert_error(403, "forbidden");
    }
    assert_eq!(status_with(&s, &token), 200, "still valid");
    let r = s.call("DELETE", &path, Some(Role::Admin), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "bob");
    assert!(r.json.get("hash").is_none(), "{}", r.text);
    assert_eq!(
        status_with(&s, &token),
        401,
        "refused from the next request on"
    );
    s.call("DELETE", &path, Some(Role::Admin), None)
        .assert_error(404, "not_found");
    // By id only: a name is not an id.
    s.call("DELETE", "/v1/tokens/submitter", Some(Role::Admin), None)
        .assert_error(404, "not_found");
    s.call("DELETE", "/v1/tokens/t-00000000", Some(Role::Admin), None)
        .assert_error(404, "not_found");
}

#[test]
fn the_last_admin_token_is_kept() {
    let s = Server::start();
    let list = s.call("GET", "/v1/tokens", Some(Role::Admin), None);
    let admin_id = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.call(
        "DELETE",
        &format!("/v1/tokens/{admin_id}"),
        Some(Role::Admin),
        None,
    )
    .assert_error(409, "last_admin");
    let out = token_cli(s.data.path(), &["revoke", "admin"]);
    assert!(!out.status.success(), "the CLI keeps it too: {out:?}");
    assert_eq!(status_with(&s, s.token(Role::Admin)), 200);
    // With a second admin, the first can go.
    let (_, second) = create(&s, json!({"role": "admin", "name": "admin2"}));
    let r = s.call(
        "DELETE",
        &format!("/v1/tokens/{admin_id}"),
        Some(Role::Admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(status_with(&s, s.token(Role::Admin)), 401);
    assert_eq!(status_with(&s, &second), 200);
}

#[test]
fn concurrent_creates_from_the_cli_and_the_api_lose_none() {
    let s = Server::start();
    let data = s.data.path().to_path_buf();
    let tokens: Vec<String> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for i in 0..6 {
            let data = data.clone();
            handles.push(scope.spawn(move || {
                let name = format!("cli-{i}");
                let out = token_cli(&data, &["create", "--role", "submitter", "--name", &name]);
                assert!(out.status.success(), "{out:?}");
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            }));
        }
        for i in 0..6 {
            let s = &s;
            handles.push(scope.spawn(move || {
                create(s, json!({"role": "submitter", "name": format!("api-{i}")})).1
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let listed = names(&s);
    for i in 0..6 {
        for kind in ["cli", "api"] {
            let name = format!("{kind}-{i}");
            assert!(listed.contains(&name), "{name} lost: {listed:?}");
        }
    }
    assert_eq!(listed.len(), 5 + 12, "{listed:?}");
    for t in &tokens {
        assert_eq!(status_with(&s, t), 200);
    }
    assert_eq!(mode(&data.join("tokens.json")), 0o600);
}

#[test]
fn no_role_but_admin_manages_tokens_and_nothing_unknown_is_granted() {
    let s = Server::start();
    let escalate = json!({"role": "admin", "name": "mine"});
    s.call("POST", "/v1/tokens", None, Some(&escalate))
        .assert_error(401, "unauthorized");
    for role in NOT_ADMIN {
        s.call("POST", "/v1/tokens", Some(role), Some(&escalate))
            .assert_error(403, "forbidden");
        s.call("GET", "/v1/tokens", Some(role), None)
            .assert_error(403, "forbidden");
    }
    for bad in [
        json!({"role": "root"}),
        json!({"role": "submitter", "capabilities": ["god_mode"]}),
        json!({"role": "submitter", "capabilities": "state_intent"}),
        // The capability means nothing for a reviewer; refused rather than stored.
        json!({"role": "reviewer", "capabilities": ["state_intent"]}),
        json!({"role": "submitter", "name": "evil\n2026-12-06 INFO token created"}),
        json!({"role": "submitter", "name": "\u{1b}[2J"}),
        json!({"role": "submitter", "name": "x".repeat(10_000)}),
        json!({"role": "submitter", "name": ""}),
    ] {
        let r = s.call("POST", "/v1/tokens", Some(Role::Admin), Some(&bad));
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        assert!(r.text.len() < 2_000, "the answer does not echo a huge name");
    }
    assert_eq!(names(&s).len(), 5, "nothing was created");
    // The CLI holds names to the same rule.
    for bad in ["a\nb", &"y".repeat(10_000)] {
        let out = token_cli(
            s.data.path(),
            &["create", "--role", "reviewer", "--name", bad],
        );
        assert!(!out.status.success(), "{out:?}");
    }
    let out = token_cli(
        s.data.path(),
        &["create", "--role", "reviewer", "--capability", "god"],
    );
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(names(&s).len(), 5, "nothing was created");
}

#[test]
fn what_is_presented_as_a_token_is_never_echoed() {
    let s = Server::start();
    let admin = s.token(Role::Admin).to_string();
    let long = format!("cg_{}", "a".repeat(8_000));
    for presented in [
        format!("{admin}x"),
        long.clone(),
        "cg_secret_of_another_box".to_string(),
    ] {
        let r = s.raw("GET", "/v1/tokens", Some(&presented), None, &[]);
        r.assert_error(401, "unauthorized");
        assert!(!r.text.contains(&presented), "{}", r.text);
    }
    for header in [
        format!("Basic {admin}"),
        "Bearer".into(),
        "Bearer    ".into(),
    ] {
        let r = s.raw(
            "GET",
            "/v1/tokens",
            None,
            None,
            &[("Authorization", &header)],
        );
        r.assert_error(401, "unauthorized");
        assert!(!r.text.contains(&admin), "{}", r.text);
    }
    // The scheme is case-insensitive (RFC 9110).
    let r = s.raw(
        "GET",
        "/v1/tokens",
        None,
        None,
        &[("Authorization", &format!("bearer {admin}"))],
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn a_planted_admin_token_file_is_replaced_by_a_private_one() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = data.join("admin.token");
    std::fs::write(&file, "stale\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Server::start_with(|c| {
        c.data_dir = data.clone();
        c.server.bootstrap_admin_token = true;
    });
    assert_eq!(mode(&file), 0o600, "not left world-readable");
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        s.raw("GET", "/v1/tokens", Some(token.trim()), None, &[])
            .status,
        200
    );
    s.stop().unwrap();

    // A symbolic link in its place is not written through.
    let data = base.path().join("linked");
    std::fs::create_dir(&data).unwrap();
    let outside = base.path().join("outside");
    std::fs::write(&outside, "").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("admin.token")).unwrap();
    let s = Server::start_with(|c| {
        c.data_dir = data.clone();
        c.server.bootstrap_admin_token = true;
    });
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "");
    let link = std::fs::symlink_metadata(data.join("admin.token")).unwrap();
    assert!(link.is_file(), "a plain file now");
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    drop(s);
}

/// Waits until the case has been classified; returns the case.
fn classified(s: &Server, id: &str) -> Value {
    s.wait_case(id, |c| !c["classification"].is_null())
}

const CARD_NOT_ARRIVED: &str =
    "I ordered a new debit card three weeks ago and it still has not arrived. Where is it?";

#[test]
fn a_submitter_cannot_state_the_intent_it_is_only_a_hint() {
    let s = Server::start();
    let id = s.submit(
        &json!({"channel": "chat", "language": "en", "text": CARD_NOT_ARRIVED,
        "metadata": {"intent": "request_refund", "confidence": 1.0, "crm_ref": "X-1"}}),
    );
    let case = classified(&s, &id);
    let c = &case["classification"];
    assert_eq!(c["source"], "model", "the model decided: {c}");
    assert_ne!(c["intent"], "request_refund", "{c}");
    assert_eq!(
        c["hint"]["intent"], "request_refund",
        "the hint is on record: {c}"
    );
    assert_eq!(c["hint"]["confidence"], 1.0, "{c}");
    let meta = &case["request"]["metadata"];
    assert!(meta.get("intent").is_none(), "{meta}");
    assert_eq!(meta["intent_hint"]["intent"], "request_refund", "{meta}");
    assert_eq!(meta["crm_ref"], "X-1", "the rest of the metadata is kept");
    // The audit trail shows it as a hint beside the model's decision.
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    let record = audit.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "classified")
        .cloned()
        .unwrap();
    assert!(record.to_string().contains("\"hint\""), "{record}");

    // A hint that is not a label of the model is not copied into the audit chain.
    let id = s.submit(
        &json!({"channel": "chat", "language": "en", "text": CARD_NOT_ARRIVED,
        "metadata": {"intent": "anna.schmidt.1985"}}),
    );
    let case = classified(&s, &id);
    assert_eq!(case["classification"]["hint"]["known"], false);
    let audit = s.call(
        "GET",
        &format!("/v1/cases/{id}/audit"),
        Some(Role::Auditor),
        None,
    );
    assert!(!audit.text.contains("anna.schmidt"), "{}", audit.text);
}

#[test]
fn a_token_granted_state_intent_decides_the_classification() {
    let s = Server::start();
    let r = s.call(
        "POST",
        "/v1/tokens",
        Some(Role::Admin),
        Some(
            &json!({"role": "submitter", "name": "core-banking", "capabilities": ["state_intent"]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["capabilities"], json!(["state_intent"]));
    let token = r.json["token"].as_str().unwrap().to_string();
    let list = s.call("GET", "/v1/tokens", Some(Role::Admin), None);
    let listed = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "core-banking")
        .cloned()
        .unwrap();
    assert_eq!(listed["capabilities"], json!(["state_intent"]));
    let plain = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "submitter")
        .cloned()
        .unwrap();
    assert_eq!(plain["capabilities"], json!([]));

    let body = json!({"channel": "chat", "language": "en", "text": CARD_NOT_ARRIVED,
        "metadata": {"intent": "card_arrival", "confidence": 0.97}});
    let r = s.raw(
        "POST",
        "/v1/requests",
        Some(&token),
        Some(("application/json", body.to_string().into_bytes())),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let case = classified(&s, r.json["case_id"].as_str().unwrap());
    let c = &case["classification"];
    assert_eq!(c["source"], "metadata", "{c}");
    assert_eq!(c["intent"], "card_arrival");
    assert_eq!(c["confidence"], 0.97);

    // The CLI grants it too, and lists it.
    let out = token_cli(
        s.data.path(),
        &[
            "create",
            "--role",
            "submitter",
            "--name",
            "crm",
            "--capability",
            "state_intent",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = token_cli(s.data.path(), &["list"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().find(|l| l.contains(" crm ")).unwrap();
    assert!(row.contains("state_intent"), "{table}");
}
