//! Signed rollouts end to end: the real `casegraph rollout` command publishes to a real
//! `nats-server`, real boxes (in-process servers with `[fleet]`) apply and report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_nats::jetstream;
use casegraph::fleet::publish;
use casegraph::fleet::wire::RolloutResult;
use support::nats::Nats;
use support::rollout::{
    branch_stream, keygen, publish as publish_cli, refund_folder, runtime, secret, served_version,
    start_box, wait_report,
};

#[test]
fn a_signed_version_reaches_an_online_box_now_and_an_offline_box_when_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::hub(&tmp.path().join("nats"), "");
    let rt = runtime();
    let js = rt.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        branch_stream(&js, "north").await;
        branch_stream(&js, "south").await;
        js
    });
    let (key_dir, hub_key) = keygen(tmp.path());
    let north = start_box(&nats.url(), "north", &hub_key);
    assert_eq!(served_version(&north, "request_refund"), 1);

    // Version 2 to both branches while `south` is not running.
    let v2 = refund_folder(tmp.path(), 2, |y| y);
    let id = publish_cli(&nats.url(), &key_dir, "north,south", &v2, &[]);
    let report = rt.block_on(wait_report(&js, "north", |r| r.rollout_id == id));
    assert_eq!(
        report.result,
        RolloutResult::Applied {
            workflow: "request_refund".into(),
            version: 2
        }
    );
    assert_eq!(served_version(&north, "request_refund"), 2);

    let south = start_box(&nats.url(), "south", &hub_key);
    let report = rt.block_on(wait_report(&js, "south", |r| r.rollout_id == id));
    assert!(
        matches!(report.result, RolloutResult::Applied { version: 2, .. }),
        "{report:?}"
    );
    assert_eq!(served_version(&south, "request_refund"), 2);

    // The same files published again under a new rollout id: already served, so applied,
    // not refused by the version rule.
    let again = publish_cli(&nats.url(), &key_dir, "north", &v2, &[]);
    let report = rt.block_on(wait_report(&js, "north", |r| r.rollout_id == again));
    assert!(
        matches!(report.result, RolloutResult::Applied { version: 2, .. }),
        "{report:?}"
    );

    // A version whose fixtures fail is refused with every failure, and nothing changes.
    let broken = refund_folder(tmp.path(), 3, |y| {
        y.replace("case.amount <= 50.00\"", "case.amount <= 10.00\"")
    });
    let bad = publish_cli(&nats.url(), &key_dir, "north", &broken, &[]);
    let report = rt.block_on(wait_report(&js, "north", |r| r.rollout_id == bad));
    let RolloutResult::Refused { errors } = &report.result else {
        panic!("{report:?}")
    };
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.contains("fixture")),
        "{errors:?}"
    );
    assert_eq!(served_version(&north, "request_refund"), 2);

    // Signed by another key: refused, reported with that key's id, nothing applied.
    let other = casegraph::fleet::sign::SecretKey::generate().unwrap();
    let v4 = refund_folder(tmp.path(), 4, |y| y);
    rt.block_on(async {
        publish::publish(
            &js,
            &other,
            vec!["north".into()],
            publish::read_workflow(&v4).unwrap(),
        )
        .await
        .unwrap();
    });
    let other_id = other.public().key_id();
    let report = rt.block_on(wait_report(&js, "north", |r| {
        r.result
            == RolloutResult::BadSignature {
                key_id: other_id.clone(),
            }
    }));
    assert_eq!(report.branch, "north");
    assert_eq!(served_version(&north, "request_refund"), 2);
    // The hub's own key is still the only one that counts.
    assert_ne!(secret(&key_dir).public().key_id(), other_id);
    north.stop().unwrap();
    south.stop().unwrap();
}

#[test]
fn a_box_cut_off_from_nats_takes_the_rollout_when_the_server_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nats = Nats::hub(&tmp.path().join("nats"), "");
    let rt = runtime();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        branch_stream(&js, "east").await;
        publish::ensure_stream(&js).await.unwrap();
    });
    let (key_dir, hub_key) = keygen(tmp.path());
    let east = start_box(&nats.url(), "east", &hub_key);
    // The box's consumer exists before the server goes away.
    std::thread::sleep(std::time::Duration::from_secs(1));
    nats.kill();
    std::thread::sleep(std::time::Duration::from_secs(2));
    nats.restart();
    let v2 = refund_folder(tmp.path(), 2, |y| y);
    let id = publish_cli(&nats.url(), &key_dir, "east", &v2, &[]);
    let js = rt.block_on(async { jetstream::new(async_nats::connect(nats.url()).await.unwrap()) });
    let report = rt.block_on(wait_report(&js, "east", |r| r.rollout_id == id));
    assert!(
        matches!(report.result, RolloutResult::Applied { version: 2, .. }),
        "{report:?}"
    );
    assert_eq!(served_version(&east, "request_refund"), 2);
    east.stop().unwrap();
}

#[test]
fn a_box_behind_its_own_leaf_node_reads_rollouts_in_the_hub_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = Nats::hub(&tmp.path().join("hub"), "");
    let leaf = Nats::leaf(
        &tmp.path().join("leaf"),
        "north",
        hub.leaf_port.unwrap(),
        "",
    );
    let rt = runtime();
    // The branch stream lives in the leaf's own domain, as the relay makes it.
    let local = rt.block_on(async {
        let js = jetstream::new(async_nats::connect(leaf.url()).await.unwrap());
        branch_stream(&js, "north").await;
        js
    });
    let (key_dir, hub_key) = keygen(tmp.path());
    let (url, key) = (leaf.url(), hub_key.clone());
    let north = support::Server::start_with(move |c| {
        c.fleet.nats_url = Some(url);
        c.fleet.branch = Some("north".into());
        c.fleet.domain = Some("north".into());
        c.fleet.hub_key = Some(key);
    });
    let v2 = refund_folder(tmp.path(), 2, |y| y);
    let id = publish_cli(&hub.url(), &key_dir, "north", &v2, &[]);
    let report = rt.block_on(wait_report(&local, "north", |r| r.rollout_id == id));
    assert!(
        matches!(report.result, RolloutResult::Applied { version: 2, .. }),
        "{report:?}"
    );
    assert_eq!(served_version(&north, "request_refund"), 2);
    north.stop().unwrap();
}
