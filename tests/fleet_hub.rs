//! The fleet hub against a real `nats-server`, with branches simulated by publishing wire
//! messages into their branch streams (as a box's relay would): records applied exactly
//! once, a hub stopped and restarted catches up once, a tampered record, a gap and a
//! rewritten chain head are flagged on their branch only, and a leaf domain is sourced
//! after the hub's server comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_nats::jetstream;
use casegraph::fleet::hub::simulate::{self, Branch};
use casegraph::fleet::wire::{AuditRecord, Kind};
use jiff::Timestamp;
use serde_json::Value;
use support::hub::{Hub, write_branches};
use support::nats::Nats;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Publishes `n` cases (record + summary) and a health snapshot of the branch.
async fn cases(js: &jetstream::Context, b: &mut Branch, n: usize) {
    let mut pending = Vec::new();
    for _ in 0..n {
        pending.extend(b.publish_case(js, Timestamp::now()).await.unwrap());
    }
    pending.push(b.publish_health(js, Timestamp::now()).await.unwrap());
    simulate::ack(pending).await.unwrap();
}

fn records(b: &Value) -> u64 {
    b["records"].as_u64().unwrap()
}

#[test]
fn records_of_two_branches_apply_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    write_branches(&data, &[("b1", "hub"), ("b2", "hub")]);
    let hub = Hub::start(&data, &nats.url());
    let rt = runtime();
    let mut branches = [Branch::new("b1"), Branch::new("b2")];
    let sent = rt.block_on(async {
        let js = connect(&nats.url()).await;
        let mut sent = Vec::new();
        for b in &mut branches {
            simulate::ensure_stream(&js, &b.name).await.unwrap();
            for _ in 0..20 {
                let (r, s) = b.case(Timestamp::now());
                let key = r.record.seq.to_string();
                simulate::publish(&js, &b.name, Kind::Audit, Some(&key), &r)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                simulate::publish(&js, &b.name, Kind::Case, Some(&key), &s)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                sent.push((r, s));
            }
            simulate::ack(vec![b.publish_health(&js, Timestamp::now()).await.unwrap()])
                .await
                .unwrap();
        }
        sent
    });
    for name in ["b1", "b2"] {
        let b = hub.wait_branch(name, |b| records(b) == 20 && b["lag"] == 0);
        assert_eq!(b["chain"], "verified", "{b:#}");
        assert_eq!(b["applied"], 20);
        assert_eq!(b["cases"]["completed"], 20, "{b:#}");
        assert_eq!(b["versions"]["workflows"]["card_block"], 1);
        assert!(b["flags"].as_array().unwrap().is_empty(), "{b:#}");
    }

    // Published again: with the same message ids JetStream drops them; without ids they
    // reach the hub, which applies them as nothing.
    rt.block_on(async {
        let js = connect(&nats.url()).await;
        let mut pending = Vec::new();
        for (r, s) in &sent {
            let key = r.record.seq.to_string();
            let b = r.branch.as_str();
            for id in [Some(key.as_str()), None] {
                pending.push(simulate::publish(&js, b, Kind::Audit, id, r).await.unwrap());
                pending.push(simulate::publish(&js, b, Kind::Case, id, s).await.unwrap());
            }
        }
        simulate::ack(pending).await.unwrap();
    });
    let (_, before) = hub.get("/v1/fleet/ingest", Some(&hub.admin));
    let want = before["messages"].as_u64().unwrap();
    // 2 branches × (20 records + 20 summaries + 1 health) first, then 80 without ids.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, i) = hub.get("/v1/fleet/ingest", Some(&hub.admin));
        if i["messages"].as_u64().unwrap() >= 82 + 80 {
            assert_eq!(i["records"], 40, "{i:#} (before {want})");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all re-published seen: {i:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for name in ["b1", "b2"] {
        let b = hub.branch(name);
        assert_eq!(
            (records(&b), b["applied"].as_u64()),
            (20, Some(20)),
            "{b:#}"
        );
        assert_eq!(b["cases"]["completed"], 20, "{b:#}");
        assert_eq!(b["chain"], "verified", "{b:#}");
        assert_eq!(b["rejected"], 0, "{b:#}");
    }
}

#[test]
fn a_hub_stopped_while_branches_publish_catches_up_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    write_branches(&data, &[("b1", "hub"), ("b2", "hub")]);
    let mut hub = Hub::start(&data, &nats.url());
    let rt = runtime();
    let mut branches = [Branch::new("b1"), Branch::new("b2")];
    rt.block_on(async {
        let js = connect(&nats.url()).await;
        for b in &mut branches {
            simulate::ensure_stream(&js, &b.name).await.unwrap();
            cases(&js, b, 10).await;
        }
    });
    for name in ["b1", "b2"] {
        hub.wait_branch(name, |b| records(b) == 10);
    }
    hub.kill();
    rt.block_on(async {
        let js = connect(&nats.url()).await;
        for b in &mut branches {
            cases(&js, b, 30).await;
        }
    });
    let hub = Hub::start(&data, &nats.url());
    for name in ["b1", "b2"] {
        let b = hub.wait_branch(name, |b| records(b) == 40 && b["lag"] == 0);
        assert_eq!(b["applied"], 40);
        assert_eq!(b["cases"]["completed"], 40, "{b:#}");
        assert_eq!(b["chain"], "verified", "{b:#}");
    }
}

#[test]
fn a_wrong_hash_a_gap_and_a_rewritten_head_flag_their_branch_only() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&dir.path().join("nats"), "");
    let data = dir.path().join("hub");
    let names = ["clean", "altered", "gap", "rewritten"];
    write_branches(&data, &names.map(|n| (n, "hub")));
    let hub = Hub::start(&data, &nats.url());
    let rt = runtime();
    rt.block_on(async {
        let js = connect(&nats.url()).await;
        for name in names {
            simulate::ensure_stream(&js, name).await.unwrap();
            let mut b = Branch::new(name);
            let mut pending = Vec::new();
            for i in 1..=5u64 {
                let (mut r, _) = b.case(Timestamp::now());
                if name == "altered" && i == 3 {
                    r.record.body =
                        serde_json::json!({ "status": "completed", "outcome": "refund 9999" });
                }
                if name == "gap" && i == 4 {
                    continue;
                }
                let key = r.record.seq.to_string();
                pending.push(
                    simulate::publish(&js, name, Kind::Audit, Some(&key), &r)
                        .await
                        .unwrap(),
                );
            }
            let mut h = b.health(Timestamp::now(), 0);
            if name == "rewritten" {
                // The box now says record 5 is something else than what it relayed.
                h.audit_head.as_mut().unwrap().hash = "e".repeat(64);
            }
            pending.push(
                simulate::publish(&js, name, Kind::Health, Some("1"), &h)
                    .await
                    .unwrap(),
            );
            simulate::ack(pending).await.unwrap();
        }
    });
    let settled = |b: &Value| b["health"].is_object() && b["applied"] == 5;
    let clean = hub.wait_branch("clean", settled);
    assert_eq!(clean["chain"], "verified", "{clean:#}");
    let altered = hub.wait_branch("altered", settled);
    let chain = altered["chain"].as_str().unwrap();
    assert!(
        chain.starts_with("record 3 is altered: its content hashes to"),
        "{chain}"
    );
    assert_eq!(
        altered["problems"].as_array().unwrap().len(),
        1,
        "{altered:#}"
    );
    let gap = hub.wait_branch("gap", settled);
    assert_eq!(
        gap["chain"],
        "record 4 is missing: record 5 came after record 3"
    );
    assert_eq!(gap["records"], 4);
    let rewritten = hub.wait_branch("rewritten", |b| settled(b) && b["chain"] != "verified");
    let chain = rewritten["chain"].as_str().unwrap();
    assert!(
        chain.starts_with("the box reports record 5 as eeeeeeeeeeee but the hub holds"),
        "{chain}"
    );

    // The list shows the same, each branch red for its own reason only.
    let (status, page) = hub.get("/v1/fleet/branches", Some(&hub.admin));
    assert_eq!(status, 200, "{page}");
    let flagged: Vec<(&str, usize)> = page["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["branch"].as_str().unwrap(),
                b["flags"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        flagged,
        [("altered", 1), ("clean", 0), ("gap", 1), ("rewritten", 1)]
    );
}

#[test]
fn a_leaf_domain_is_sourced_after_the_hub_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::hub(&dir.path().join("nats"), "");
    let leaf = Nats::leaf(&dir.path().join("leaf"), "b1", nats.leaf_port.unwrap(), "");
    let data = dir.path().join("hub");
    write_branches(&data, &[("b1", "b1")]);
    let hub = Hub::start(&data, &nats.url());
    let rt = runtime();
    let mut b = Branch::new("b1");
    // The box talks to its leaf node only; its stream lives in the leaf's domain.
    let js = rt.block_on(async {
        let js = connect(&leaf.url()).await;
        simulate::ensure_stream(&js, "b1").await.unwrap();
        cases(&js, &mut b, 10).await;
        js
    });
    hub.wait_branch("b1", |b| records(b) == 10);

    nats.kill();
    rt.block_on(async {
        let mut pending = Vec::new();
        for _ in 0..100 {
            let (r, _) = b.case(Timestamp::now());
            let key = r.record.seq.to_string();
            let r: AuditRecord = r;
            pending.push(
                simulate::publish(&js, "b1", Kind::Audit, Some(&key), &r)
                    .await
                    .unwrap(),
            );
        }
        pending.push(b.publish_health(&js, Timestamp::now()).await.unwrap());
        // Acknowledged by the leaf's own JetStream while the hub site is down.
        simulate::ack(pending).await.unwrap();
    });
    nats.restart();
    let b1 = hub.wait_branch("b1", |b| records(b) == 110 && b["lag"] == 0);
    assert_eq!(b1["chain"], "verified", "{b1:#}");
    assert_eq!(b1["domain"], "b1");
}
