//! The box side of the fleet against real `nats-server` processes: the relay puts every
//! audit record into the branch stream exactly once, whatever happens to NATS or to the
//! box, case summaries carry no personal data, and the box works on while NATS is away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use casegraph::fleet::wire;
use casegraph_engine::store::{Options, Store};
use serde_json::Value;
use support::Server;
use support::nats::{Nats, free_port};
use support::process::Process;

const BRANCH: &str = "b1";

/// What the branch stream holds, read back message by message.
struct Stream {
    /// Audit seq of every audit message, in stream order.
    audit: Vec<u64>,
    /// Case summaries, as published.
    cases: Vec<wire::CaseSummary>,
    health: Vec<wire::Health>,
    /// Every payload, for the personal-data check.
    raw: Vec<String>,
}

fn read_stream(url: &str, domain: Option<&str>) -> Stream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = match domain {
            Some(d) => async_nats::jetstream::with_domain(client, d),
            None => async_nats::jetstream::new(client),
        };
        let mut stream = js.get_stream(wire::branch_stream(BRANCH)).await.unwrap();
        let info = stream.info().await.unwrap().clone();
        let mut out = Stream {
            audit: Vec::new(),
            cases: Vec::new(),
            health: Vec::new(),
            raw: Vec::new(),
        };
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let m = match stream.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) => panic!("stream message {seq} of {info:?}: {e}"),
            };
            let text = String::from_utf8(m.payload.to_vec()).unwrap();
            match wire::parse_branch_subject(&m.subject).map(|(_, k)| k) {
                Some(wire::Kind::Audit) => {
                    let r: wire::AuditRecord = serde_json::from_str(&text).unwrap();
                    assert_eq!(r.branch, BRANCH);
                    assert_eq!(r.record.computed_hash(), r.record.hash, "relayed intact");
                    out.audit.push(r.record.seq);
                }
                Some(wire::Kind::Case) => out.cases.push(serde_json::from_str(&text).unwrap()),
                Some(wire::Kind::Health) => out.health.push(serde_json::from_str(&text).unwrap()),
                other => panic!("unexpected subject {} ({other:?})", m.subject),
            }
            out.raw.push(text);
        }
        out
    })
}

/// Every record `1..=head` once, in order: no gap, no duplicate.
fn assert_exactly_once(stream: &Stream, head: u64) {
    let expected: Vec<u64> = (1..=head).collect();
    if stream.audit != expected {
        let mut seen = BTreeMap::new();
        for s in &stream.audit {
            *seen.entry(*s).or_insert(0) += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        let gaps: Vec<_> = (1..=head).filter(|s| !seen.contains_key(s)).collect();
        panic!(
            "stream holds {} audit messages for head {head}; duplicates {dups:?}, missing {gaps:?}",
            stream.audit.len()
        );
    }
}

/// The audit head of a stopped box's store.
fn head_of(data: &Path) -> u64 {
    let store = Store::open(data, &Options::default()).unwrap();
    store.audit_head().unwrap().seq
}

fn fleet(c: &mut casegraph::config::Config, url: &str, batch: usize) {
    c.fleet.nats_url = Some(url.to_string());
    c.fleet.branch = Some(BRANCH.into());
    c.fleet.batch = batch;
    c.fleet.health_interval = Duration::from_secs(1);
}

fn settled(case: &Value) -> bool {
    !matches!(case["status"].as_str(), Some("accepted" | "running"))
}

fn submit_all(server: &Server, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| server.submit(&support::sample_request(i)))
        .collect();
    for id in &ids {
        server.wait_case(id, settled);
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

/// Whether `secret` stands in `text` as a value of its own, not inside a longer run of
/// letters and digits: a card's last four digits `9876` must not be found inside a sha256
/// digest or a byte count, where they occur by chance.
fn contains_token(text: &str, secret: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(secret).any(|(at, _)| {
        !alnum(text[..at].chars().next_back()) && !alnum(text[at + secret.len()..].chars().next())
    })
}

/// The strings of a request a summary must never carry: its text, the customer id and
/// every field's value.
fn personal_strings(i: usize) -> Vec<String> {
    let r = support::sample_request(i);
    let mut out = vec![r["customer_id"].as_str().unwrap().to_string()];
    if let Some(t) = r["text"].as_str() {
        out.push(t.to_string());
    }
    if let Some(fields) = r["fields"].as_object() {
        for v in fields.values() {
            if let Some(s) = v.as_str().filter(|s| s.len() >= 4) {
                out.push(s.to_string());
            }
        }
    }
    out
}

#[test]
fn a_box_relays_every_record_once_and_no_personal_data() {
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(nats_dir.path(), free_port(), None, BRANCH, "");
    let mut server = Server::start_with(|c| fleet(c, &nats.url(), 16));
    let n = 12;
    let ids = submit_all(&server, n);
    let settled = jiff::Timestamp::now();
    wait_for("an empty backlog", 30, || {
        server.metric("casegraph_fleet_backlog_records") == 0.0
            && server.metric("casegraph_fleet_published_total{kind=\"case\"}") > 0.0
    });
    // A snapshot taken after the cases settled (the one at start counts none of them).
    wait_for("a health snapshot after the cases", 10, || {
        read_stream(&nats.url(), None)
            .health
            .iter()
            .any(|h| h.at > settled)
    });
    assert_eq!(server.metric("casegraph_fleet_connected"), 1.0);
    let data = server.data.path().to_path_buf();
    let keep = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    server.stop().unwrap();
    let stream = read_stream(&nats.url(), None);
    assert_exactly_once(&stream, head_of(&data));

    // A summary for every case, and the last one says where the case is.
    for id in &ids {
        assert!(
            stream.cases.iter().any(|c| &c.case_id == id),
            "no summary of {id}"
        );
    }
    assert!(
        stream
            .cases
            .iter()
            .any(|c| c.workflow.is_some() && c.route.is_some())
    );
    let health = stream.health.last().unwrap();
    assert_eq!(health.branch, BRANCH);
    assert!(health.chain_problem.is_none(), "{health:?}");
    assert!(!health.workflows.is_empty() && health.routing_version.is_some());
    assert!(health.cases.values().sum::<u64>() >= n as u64);

    for i in 0..n {
        for secret in personal_strings(i) {
            for text in &stream.raw {
                assert!(
                    !contains_token(text, &secret),
                    "`{secret}` left the box: {text}"
                );
            }
        }
    }
    drop(keep);
}

#[test]
fn without_nats_the_box_works_on_degraded_and_catches_up() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let server = Server::start_with(|c| fleet(c, &url, 64));
    let ids = submit_all(&server, 6);
    assert!(ids.len() == 6, "cases accepted and run without NATS");
    let ready = server.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["checks"]["fleet"], "degraded", "{}", ready.text);
    assert_eq!(
        ready.json["checks"]["fleet_problem"],
        "not connected to NATS"
    );
    assert!(server.metric("casegraph_fleet_backlog_records") > 0.0);
    assert_eq!(server.metric("casegraph_fleet_connected"), 0.0);

    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(nats_dir.path(), port, None, BRANCH, "");
    wait_for("the backlog to drain", 60, || {
        server.metric("casegraph_fleet_backlog_records") == 0.0
    });
    let ready = server.call("GET", "/readyz", None, None);
    assert_eq!(ready.json["checks"]["fleet"], "ok", "{}", ready.text);
    let data = server.data.path().to_path_buf();
    let mut server = server;
    let keep = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    server.stop().unwrap();
    assert_exactly_once(&read_stream(&nats.url(), None), head_of(&data));
    drop(keep);
}

#[test]
fn nats_killed_during_a_burst_leaves_no_gap_and_no_duplicate() {
    // The relay's log shows with a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("casegraph::fleet=debug,async_nats=info")
        .with_test_writer()
        .try_init();
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(nats_dir.path(), free_port(), None, BRANCH, "");
    let server = std::sync::Arc::new(Server::start_with(|c| fleet(c, &nats.url(), 8)));
    let burst = {
        let s = server.clone();
        std::thread::spawn(move || submit_all(&s, 30))
    };
    wait_for("the relay to start publishing", 30, || {
        server.metric("casegraph_fleet_published_total{kind=\"audit\"}") > 0.0
    });
    nats.kill();
    std::thread::sleep(Duration::from_millis(1500));
    nats.restart();
    burst.join().unwrap();
    wait_for("the backlog to drain", 90, || {
        server.metric("casegraph_fleet_backlog_records") == 0.0
    });
    let mut server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    let data = server.data.path().to_path_buf();
    let keep = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    server.stop().unwrap();
    assert_exactly_once(&read_stream(&nats.url(), None), head_of(&data));
    drop(keep);
}

#[test]
fn a_box_killed_mid_relay_resumes_without_gap_or_duplicate() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let env = [
        ("CASEGRAPH_FLEET__NATS_URL", url.as_str()),
        ("CASEGRAPH_FLEET__BRANCH", BRANCH),
        ("CASEGRAPH_FLEET__BATCH", "1"),
    ];
    // A backlog built while NATS is away, then relayed one record per batch and cut short.
    let mut box1 = Process::start_with_env(data.path(), &env);
    let mut ids = Vec::new();
    for i in 0..15 {
        let (status, body) = box1
            .call(
                "/v1/requests",
                &box1.admin,
                Some(&support::sample_request(i)),
            )
            .unwrap();
        assert_eq!(status, 202, "{body}");
        ids.push(body["case_id"].as_str().unwrap().to_string());
    }
    let admin = box1.admin.clone();
    wait_for("the cases to settle", 60, || {
        ids.iter().all(|id| {
            box1.call(&format!("/v1/cases/{id}"), &admin, None)
                .is_some_and(|(_, c)| settled(&c))
        })
    });
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(nats_dir.path(), port, None, BRANCH, "");
    wait_for("the relay to be mid-way", 60, || {
        box1.metric(&admin, "casegraph_fleet_published_total{kind=\"audit\"}") >= 3.0
    });
    box1.kill();
    let mut box2 = Process::start_with_env(data.path(), &env);
    let admin = box2.admin.clone();
    wait_for("the backlog to drain after the restart", 60, || {
        box2.metric(&admin, "casegraph_fleet_backlog_records") == 0.0
            && box2.metric(&admin, "casegraph_fleet_connected") == 1.0
    });
    box2.kill();
    assert_exactly_once(&read_stream(&nats.url(), None), head_of(data.path()));
}

/// The leaf topology: the box talks to its branch's leaf node (domain `b1`); with the hub
/// away the leaf's stream acknowledges on its own. Sourcing into the hub is the hub's job.
#[test]
fn a_leaf_node_acknowledges_while_the_hub_is_down() {
    let hub_dir = tempfile::tempdir().unwrap();
    let mut hub = Nats::hub(hub_dir.path(), "");
    let leaf_port = hub.leaf_port.unwrap();
    hub.kill();
    let leaf_dir = tempfile::tempdir().unwrap();
    let leaf = Nats::leaf(leaf_dir.path(), BRANCH, leaf_port, "");
    let mut server = Server::start_with(|c| {
        fleet(c, &leaf.url(), 32);
        c.fleet.domain = Some(BRANCH.into());
    });
    submit_all(&server, 4);
    wait_for("the leaf to acknowledge everything", 30, || {
        server.metric("casegraph_fleet_backlog_records") == 0.0
            && server.metric("casegraph_fleet_published_total{kind=\"audit\"}") > 0.0
    });
    let data = server.data.path().to_path_buf();
    let keep = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    server.stop().unwrap();
    assert_exactly_once(&read_stream(&leaf.url(), Some(BRANCH)), head_of(&data));
    drop(keep);
}

#[test]
fn a_wrong_fleet_setting_stops_the_start_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let mut c = support::config(data.path());
    c.fleet.nats_url = Some("nats://127.0.0.1:4222".into());
    c.fleet.branch = Some("b1".into());
    c.fleet.hub_key = Some("abc".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("fleet.hub_key"), "{e}");
    c.fleet.hub_key = None;
    c.fleet.batch = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .starts_with("fleet.batch")
    );
}

/// The shipped box example is a valid configuration; a setting that is wrong there stops
/// the start with the key named.
#[test]
fn the_shipped_fleet_example_loads_and_a_wrong_key_is_named() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/casegraph-fleet.toml");
    let flags = casegraph::config::Overrides::default();
    let c = casegraph::config::Config::load(None, Some(&example), Vec::new(), &flags).unwrap();
    assert_eq!(c.fleet.branch.as_deref(), Some("b1"));
    assert_eq!(c.fleet.domain.as_deref(), Some("b1"));
    assert_eq!(c.fleet.stream_max_age, Duration::from_secs(30 * 24 * 3600));
    let env = vec![("CASEGRAPH_FLEET__BATCH".to_string(), "20000".to_string())];
    let e = casegraph::config::Config::load(None, Some(&example), env, &flags)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fleet.batch") && e.contains("20000"), "{e}");
}

/// Retention archives nothing the hub has not had: with NATS away a finished case past its
/// age stays in the live store; once the relay caught up it is archived, and every record
/// was relayed before.
#[test]
fn retention_waits_for_the_relay() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let archives = tempfile::tempdir().unwrap();
    let dir = archives.path().to_path_buf();
    let mut server = Server::start_with(|c| {
        fleet(c, &url, 64);
        c.retention.enabled = true;
        c.retention.completed = Duration::from_millis(200);
        c.retention.failed = Duration::from_millis(200);
        c.retention.escalated = Duration::from_millis(200);
        c.retention.idle_after = Duration::from_millis(300);
        c.retention.directory = Some(dir);
    });
    let id = server.submit(&support::sample_request(0));
    let case = server.wait_case(&id, settled);
    assert!(
        matches!(
            case["status"].as_str(),
            Some("completed" | "failed" | "escalated")
        ),
        "the first sample finishes on its own: {case}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let r = server.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
    assert_eq!(r.status, 200, "archived before it was relayed");

    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(nats_dir.path(), port, None, BRANCH, "");
    wait_for("the case to be archived once relayed", 60, || {
        server
            .call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None)
            .status
            == 404
    });
    let data = server.data.path().to_path_buf();
    let keep = std::mem::replace(&mut server.data, tempfile::tempdir().unwrap());
    server.stop().unwrap();
    let stream = read_stream(&nats.url(), None);
    assert!(stream.cases.iter().any(|c| c.case_id == id));
    // The live chain goes on from the archive's anchor: everything up to it was relayed.
    let head = head_of(&data);
    assert_exactly_once(&stream, head);
    drop(keep);
}

/// Hostile: someone who may publish on the branch's subjects plants an audit record in the
/// stream while the box is away. The box does not take it for its own position: it relays
/// every record it committed, and the planted one stays what it is.
#[test]
fn a_record_planted_in_the_stream_does_not_move_the_cursor() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let env = [
        ("CASEGRAPH_FLEET__NATS_URL", url.as_str()),
        ("CASEGRAPH_FLEET__BRANCH", BRANCH),
    ];
    let mut box1 = Process::start_with_env(data.path(), &env);
    let admin = box1.admin.clone();
    for i in 0..3 {
        let (status, body) = box1
            .call("/v1/requests", &admin, Some(&support::sample_request(i)))
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    wait_for("a backlog", 30, || {
        box1.metric(&admin, "casegraph_fleet_backlog_records") >= 3.0
    });
    box1.kill();
    let head = head_of(data.path());
    assert!(head >= 3);

    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(nats_dir.path(), port, None, BRANCH, "");
    let forged_seq = head;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: wire::branch_stream(BRANCH),
            subjects: vec![wire::branch_subjects(BRANCH)],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut forged = casegraph_engine::audit::Head::genesis();
        let record = forged.append(casegraph_engine::audit::Entry::new(
            "forged",
            casegraph_engine::audit::Kind::Accepted,
            jiff::Timestamp::now(),
            serde_json::json!({}),
        ));
        let record = casegraph_engine::audit::Record {
            seq: forged_seq,
            ..record
        };
        let record = casegraph_engine::audit::Record {
            hash: record.computed_hash(),
            ..record
        };
        let message = wire::AuditRecord {
            branch: BRANCH.into(),
            record,
        };
        js.publish(
            wire::branch_subject(BRANCH, wire::Kind::Audit),
            serde_json::to_vec(&message).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });

    let mut box2 = Process::start_with_env(data.path(), &env);
    let admin = box2.admin.clone();
    // The cases box1 left unfinished run again and add records: wait for them before the
    // backlog (the relay may drain it before recovery has run).
    wait_for("recovery and the backlog to drain", 60, || {
        box2.metric(&admin, "casegraph_pending_cases") == 0.0
            && box2.metric(&admin, "casegraph_fleet_connected") == 1.0
            && box2.metric(&admin, "casegraph_fleet_backlog_records") == 0.0
    });
    box2.kill();
    let stream = read_stream(&nats.url(), None);
    let mut expected = vec![forged_seq];
    expected.extend(1..=head_of(data.path()));
    assert_eq!(
        stream.audit, expected,
        "the planted record, then every record the box committed"
    );
}
