//! The fleet end to end: real boxes (`casegraph serve` with `[fleet]`), a real hub
//! (`casegraph hub`) and real `nats-server` processes, in both topologies at once: box `a`
//! talks to the hub site's server (a regional server), box `b` to its own leaf node (its own
//! JetStream domain). What the issue asks: the boxes keep working while the hub is away and
//! the hub catches up exactly once; NATS killed mid-stream leaves no gap and no duplicate at
//! the hub; a record altered in a box's store flags that branch's chain only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use casegraph_engine::store::{Op, Options, Store, Table};
use serde_json::Value;
use support::hub::{Hub, write_branches};
use support::nats::{Nats, free_port};
use support::process::Process;

/// A box of branch `branch` talking to `nats_url`, health every second.
fn start_box(data: &Path, nats_url: &str, branch: &str) -> Process {
    Process::start_with_env(
        data,
        &[
            ("CASEGRAPH_FLEET__NATS_URL", nats_url),
            ("CASEGRAPH_FLEET__BRANCH", branch),
            ("CASEGRAPH_FLEET__HEALTH_INTERVAL", "1s"),
        ],
    )
}

/// Posts `n` sample requests to the box and waits until each has left `accepted`/`running`.
fn submit(b: &Process, from: usize, n: usize) -> Vec<String> {
    let ids: Vec<String> = (from..from + n)
        .map(|i| {
            let (status, body) = b
                .call("/v1/requests", &b.admin, Some(&support::sample_request(i)))
                .expect("the box answers");
            assert_eq!(status, 202, "{body}");
            body["case_id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        wait_for(&format!("case {id} to settle"), 60, || {
            b.call(&format!("/v1/cases/{id}"), &b.admin, None)
                .is_some_and(|(_, c)| !matches!(c["status"].as_str(), Some("accepted" | "running")))
        });
    }
    ids
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit head of a stopped box's store.
fn head_of(data: &Path) -> u64 {
    Store::open(data, &Options::default())
        .unwrap()
        .audit_head()
        .unwrap()
        .seq
}

/// The hub holds every record of the branch up to its head once, its chain verifies, and
/// it counts `cases` cases.
fn caught_up(b: &Value, cases: u64) -> bool {
    let view = b;
    let held: u64 = view["cases"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    view["lag"] == 0 && view["records"] == view["applied"] && held == cases
}

#[test]
fn boxes_work_on_while_the_hub_is_away_and_the_hub_catches_up_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_nats = Nats::hub(&tmp.path().join("nats-hub"), "");
    let leaf_b = Nats::leaf(
        &tmp.path().join("nats-b"),
        "b",
        hub_nats.leaf_port.unwrap(),
        "",
    );
    let hub_data = tmp.path().join("hub");
    write_branches(&hub_data, &[("a", "hub"), ("b", "b")]);
    let mut hub = Hub::start(&hub_data, &hub_nats.url());
    let (data_a, data_b) = (tmp.path().join("box-a"), tmp.path().join("box-b"));
    let mut box_a = start_box(&data_a, &hub_nats.url(), "a");
    let mut box_b = start_box(&data_b, &leaf_b.url(), "b");

    submit(&box_a, 0, 4);
    submit(&box_b, 100, 4);
    for name in ["a", "b"] {
        let b = hub.wait_branch(name, |b| caught_up(b, 4));
        assert_eq!(b["chain"], "verified", "{b:#}");
    }

    // The hub goes away; both boxes take and finish cases as before.
    hub.kill();
    submit(&box_a, 4, 6);
    submit(&box_b, 104, 6);
    let hub = Hub::start(&hub_data, &hub_nats.url());
    for name in ["a", "b"] {
        let b = hub.wait_branch(name, |b| caught_up(b, 10));
        assert_eq!(b["chain"], "verified", "{b:#}");
    }
    // Exactly once: what the hub holds is each box's chain, record for record.
    box_a.kill();
    box_b.kill();
    for (name, data) in [("a", &data_a), ("b", &data_b)] {
        let head = head_of(data);
        let b = hub.wait_branch(name, |b| b["applied"] == head);
        assert_eq!(b["records"], head, "{name}: {b:#}");
        assert_eq!(b["chain"], "verified", "{name}: {b:#}");
    }
}

#[test]
fn nats_killed_mid_stream_leaves_no_gap_and_no_duplicate_at_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = Nats::hub(&tmp.path().join("nats"), "");
    let hub_data = tmp.path().join("hub");
    write_branches(&hub_data, &[("a", "hub")]);
    let hub = Hub::start(&hub_data, &nats.url());
    let data = tmp.path().join("box-a");
    let mut box_a = start_box(&data, &nats.url(), "a");

    // A burst of requests; NATS is killed in the middle of it and comes back.
    let poster = {
        let url = box_a.url.clone();
        let admin = box_a.admin.clone();
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 0..30 {
                let r = agent
                    .post(&format!("{url}/v1/requests"))
                    .header("Authorization", &format!("Bearer {admin}"))
                    .header("Content-Type", "application/json")
                    .send(support::sample_request(i).to_string().as_bytes())
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    nats.kill();
    std::thread::sleep(Duration::from_millis(800));
    nats.restart();
    poster.join().unwrap();
    wait_for("the box's backlog to drain", 60, || {
        box_a.metric(&box_a.admin, "casegraph_fleet_backlog_records") == 0.0
            && box_a.metric(&box_a.admin, "casegraph_fleet_connected") == 1.0
    });
    box_a.kill();
    let head = head_of(&data);
    let b = hub.wait_branch("a", |b| b["applied"] == head);
    assert_eq!(b["records"], head, "no duplicate: {b:#}");
    assert_eq!(b["chain"], "verified", "no gap: {b:#}");
}

#[test]
fn a_record_altered_in_a_box_store_flags_that_branch_only() {
    let tmp = tempfile::tempdir().unwrap();
    // The hub site's server is not up yet: box `a` keeps its records until it is.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let (data_a, data_b) = (tmp.path().join("box-a"), tmp.path().join("box-b"));
    let mut box_a = start_box(&data_a, &url, "a");
    submit(&box_a, 0, 3);
    box_a.kill();
    // Someone with access to the box's disk rewrites a record before it left the box.
    let store = Store::open(&data_a, &Options::default()).unwrap();
    let key = 2u64.to_be_bytes();
    let bytes = store.backend().get(Table::Audit, &key).unwrap().unwrap();
    let mut record: Value = serde_json::from_slice(&bytes).unwrap();
    record["at"] = Value::String("2020-01-01T00:00:00Z".into());
    store
        .backend()
        .write(&[vec![Op {
            table: Table::Audit,
            key: key.to_vec(),
            value: Some(serde_json::to_vec(&record).unwrap()),
        }]])
        .unwrap();
    drop(store);

    let nats = Nats::start(&tmp.path().join("nats"), port, None, "hub", "");
    let hub_data = tmp.path().join("hub");
    write_branches(&hub_data, &[("a", "hub"), ("b", "hub")]);
    let hub = Hub::start(&hub_data, &nats.url());
    let _box_a = start_box(&data_a, &nats.url(), "a");
    let box_b = start_box(&data_b, &nats.url(), "b");
    submit(&box_b, 10, 3);
    let a = hub.wait_branch("a", |b| b["chain"] != "verified");
    let chain = a["chain"].as_str().unwrap();
    assert!(chain.contains('2'), "names the altered record: {a:#}");
    let b = hub.wait_branch("b", |b| caught_up(b, 3));
    assert_eq!(b["chain"], "verified", "the other branch is fine: {b:#}");
    drop(nats);
}
