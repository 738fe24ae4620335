//! Hostile input against the real `casegraph hub`: callers without the role, queries and
//! paths out of bounds, a list of many branches, and branches publishing what they must
//! not (messages naming another branch, oversized or unreadable payloads, maps beyond the
//! limits). The hub refuses each, names why on the branch, and loses nothing it accepted.

use std::collections::BTreeMap;

use async_nats::jetstream;
use casegraph::auth::Role;
use casegraph::fleet::hub::simulate::{self, Branch};
use casegraph::fleet::wire::{self, Kind};
use jiff::Timestamp;
use serde_json::Value;

use crate::support::hub::{Hub, write_branches};
use crate::support::nats::Nats;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn only_admins_and_auditors_read_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    write_branches(&data, &[("b1", "hub")]);
    let hub = Hub::start(&data, &nats.url());
    let paths = [
        "/v1/fleet/branches",
        "/v1/fleet/branches/b1",
        "/v1/fleet/ingest",
    ];
    for path in paths {
        let (status, body) = hub.get(path, None);
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &Value::from("unauthorized"))
        );
        let (status, _) = hub.get(path, Some("cg_0000"));
        assert_eq!(status, 401, "{path} with a made-up token");
        for role in [Role::Submitter, Role::Reviewer, Role::Author] {
            let (status, body) = hub.get(path, Some(&hub.token(role)));
            assert_eq!(status, 403, "{path} as {role:?}: {body}");
            assert_eq!(
                body["error"]["details"]["allowed"],
                serde_json::json!(["auditor", "admin"])
            );
        }
        assert_eq!(
            hub.get(path, Some(&hub.token(Role::Auditor))).0,
            200,
            "{path}"
        );
        assert_eq!(hub.get(path, Some(&hub.admin)).0, 200, "{path}");
    }
    // The console's pages need no token and hold no data.
    assert_eq!(hub.get("/console/", None).0, 200);
}

#[test]
fn queries_paths_and_many_branches_stay_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    let names: Vec<String> = (0..250).map(|i| format!("b{i:03}")).collect();
    let listed: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "hub")).collect();
    write_branches(&data, &listed);
    let hub = Hub::start(&data, &nats.url());
    let admin = Some(hub.admin.as_str());
    for bad in ["limit=0", "limit=101", "limit=-1", "limit=x"] {
        let (status, body) = hub.get(&format!("/v1/fleet/branches?{bad}"), admin);
        assert!(matches!(status, 400 | 422), "{bad}: {status} {body}");
    }
    let (status, body) = hub.get("/v1/fleet/branches?verbose=1", admin);
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &Value::from("invalid_query"))
    );

    // A long path parameter is not echoed whole.
    let long = "x".repeat(5000);
    let (status, body) = hub.get(&format!("/v1/fleet/branches/{long}"), admin);
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"].as_str().unwrap().len() < 200,
        "{body}"
    );
    assert_eq!(hub.get("/v1/fleet/branches/..%2Fhub.redb", admin).0, 404);

    // 250 branches come in pages of at most 100, each once, in order.
    let mut seen = Vec::new();
    let mut path = "/v1/fleet/branches".to_string();
    loop {
        let (status, page) = hub.get(&path, admin);
        assert_eq!(status, 200, "{page}");
        let branches = page["branches"].as_array().unwrap();
        assert!(branches.len() <= 100);
        seen.extend(
            branches
                .iter()
                .map(|b| b["branch"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/fleet/branches?after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, names);
}

#[test]
fn a_branch_publishing_what_it_must_not_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    write_branches(&data, &[("b1", "hub"), ("b2", "hub")]);
    let hub = Hub::start(&data, &nats.url());
    let rt = runtime();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        simulate::ensure_stream(&js, "b1").await.unwrap();
        simulate::ensure_stream(&js, "b2").await.unwrap();
        let mut b1 = Branch::new("b1");
        let mut b2 = Branch::new("b2");
        let mut pending = b1.publish_case(&js, Timestamp::now()).await.unwrap();
        // b1 speaks for b2: a record and a health snapshot naming b2 on b1's subjects.
        let (forged, _) = b2.case(Timestamp::now());
        pending.push(
            simulate::publish(&js, "b1", Kind::Audit, None, &forged)
                .await
                .unwrap(),
        );
        pending.push(
            simulate::publish(
                &js,
                "b1",
                Kind::Health,
                None,
                &b2.health(Timestamp::now(), 0),
            )
            .await
            .unwrap(),
        );
        // Ten thousand queues in a health snapshot.
        let mut h = b1.health(Timestamp::now(), 0);
        h.open_tasks = (0..10_000)
            .map(|i| (format!("q{i}"), 1))
            .collect::<BTreeMap<_, _>>();
        pending.push(
            simulate::publish(&js, "b1", Kind::Health, None, &h)
                .await
                .unwrap(),
        );
        // Not JSON, and larger than the hub reads.
        for payload in [b"{not json".to_vec(), vec![b' '; 300 * 1024]] {
            let subject = wire::branch_subject("b1", Kind::Case);
            pending.push(js.publish(subject, payload.into()).await.unwrap());
        }
        // After all that, b1's next case still counts.
        pending.extend(b1.publish_case(&js, Timestamp::now()).await.unwrap());
        simulate::ack(pending).await.unwrap();
    });
    let b1 = hub.wait_branch("b1", |b| b["records"] == 2 && b["rejected"] == 5);
    assert_eq!(b1["chain"], "verified", "{b1:#}");
    assert_eq!(b1["cases"]["completed"], 2);
    assert!(b1["health"].is_null(), "no snapshot was usable: {b1:#}");
    assert!(
        b1["flags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("5 messages rejected")),
        "{b1:#}"
    );
    assert!(
        b1["last_rejected"]
            .as_str()
            .unwrap()
            .contains("larger than the hub reads"),
        "{b1:#}"
    );
    // b2 published nothing and holds nothing: b1 could not write for it.
    let (_, b2) = hub.get("/v1/fleet/branches/b2", Some(&hub.admin));
    assert_eq!(
        (b2["records"].as_u64(), b2["rejected"].as_u64()),
        (Some(0), Some(0)),
        "{b2:#}"
    );
}
