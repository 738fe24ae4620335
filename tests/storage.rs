//! A small disk filling up, on a REAL filesystem: `casegraph serve` runs with its data
//! directory on a tmpfs of a few MiB, mounted in a user and mount namespace of its own
//! (`unshare --user --map-root-user --mount`, no root needed), and the test fills the rest
//! of that filesystem with a ballast file it reaches through `/proc/<pid>/root`.
//!
//! Checked: the watermarks refuse intake, then every write, with `507` and Retry-After
//! while reads and task completions go on and `/readyz` follows; with the marks off, a
//! really full disk answers `507 storage_full` (never `500 internal`); nothing answered
//! `202` is lost; writes and the cases they left behind resume once space returns, without
//! a restart.
//!
//! Where user namespaces are not allowed the tests fail and say so; set
//! `CASEGRAPH_TEST_NO_USERNS=1` to skip them there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

/// A server whose data directory is on a tmpfs of its own.
struct SmallDisk {
    child: Child,
    url: String,
    admin: String,
    /// The tmpfs as the test reaches it: `/proc/<pid>/root/<mount point>`.
    disk: PathBuf,
    agent: ureq::Agent,
    _base: tempfile::TempDir,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this machine lets an unprivileged process mount a tmpfs in a namespace of its
/// own; `false` only when the test is told to skip where it cannot.
fn namespaces_allowed() -> bool {
    let ok = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CASEGRAPH_TEST_NO_USERNS").is_some() {
        eprintln!("skipped: no user namespaces here (CASEGRAPH_TEST_NO_USERNS is set)");
        return false;
    }
    assert!(
        ok,
        "`unshare --user --map-root-user --mount` failed: this test needs unprivileged user \
         namespaces (sysctl user.max_user_namespaces > 0, util-linux installed); set \
         CASEGRAPH_TEST_NO_USERNS=1 to skip it on such a machine"
    );
    true
}

impl SmallDisk {
    /// Starts `casegraph serve` with its data directory on a fresh tmpfs of `size_mib`,
    /// with `CASEGRAPH_*` settings from `env`, and waits until it is ready.
    fn start(size_mib: u64, env: &[(&str, &str)]) -> SmallDisk {
        let base = tempfile::tempdir().unwrap();
        let mount = base.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size_mib}m,mode=0700 tmpfs \"$1\" && \
                 exec \"$0\" serve --listen 127.0.0.1:0 --data \"$1/data\" --workflows \"$2\""
            ))
            .arg(env!("CARGO_BIN_EXE_casegraph"))
            .arg(&mount)
            .arg(support::workflows())
            .env("CASEGRAPH_LOG", "warn")
            .env("CASEGRAPH_STORAGE__SAMPLE_INTERVAL", "50ms")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("unshare starts");
        // `unshare` and `sh` exec in place: the child is the server, inside the namespace.
        let disk = PathBuf::from(format!("/proc/{}/root", child.id())).join(
            mount
                .strip_prefix("/")
                .expect("the temporary directory is absolute"),
        );
        let url = support::process::listening_url(&mut child);
        let agent = support::agent();
        let token = disk.join("data/admin.token");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut d = SmallDisk {
            child,
            url,
            admin: String::new(),
            disk,
            agent,
            _base: base,
        };
        while !(token.is_file() && d.get("/readyz").0 == 200) {
            assert!(Instant::now() < deadline, "the server did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        d.admin = std::fs::read_to_string(&token).unwrap().trim().to_string();
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.admin);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(&json!({})).to_string().as_bytes()),
        };
        let mut resp = result.expect("the server answers");
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            retry,
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, None);
        (s, v)
    }

    fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.disk).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Grows the ballast file until `leave` bytes are free on the tmpfs (or the disk is
    /// full, with `leave = 0`).
    fn leave_free(&self, leave: u64) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.disk.join("ballast"))
            .unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.free() > leave {
            let n = (self.free() - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            let _ = f.sync_data();
        }
    }

    /// Frees the space the ballast held.
    fn drop_ballast(&self) {
        std::fs::remove_file(self.disk.join("ballast")).unwrap();
    }

    /// Polls `/readyz` until `check` holds; panics after `secs`.
    fn wait_ready(&self, secs: u64, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, v) = self.get("/readyz");
            if check(s, &v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: /readyz says {s} {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every case in `ids` ran as far as it can (final, or waiting for a
    /// reviewer or a timer).
    fn wait_cases(&self, ids: &[String], secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        for id in ids {
            loop {
                let (code, case) = self.get(&format!("/v1/cases/{id}"));
                assert_eq!(code, 200, "accepted case {id} must be there: {case}");
                let s = case["status"].as_str().unwrap_or("").to_string();
                if matches!(s.as_str(), "completed" | "failed" | "escalated" | "waiting") {
                    break;
                }
                assert!(Instant::now() < deadline, "case {id} stuck in `{s}`");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A refund the workflow hands to a reviewer (above its limit): a task to complete.
fn refund_for_review() -> Value {
    json!({
        "channel": "letter", "language": "de", "customer_id": "C-1002314",
        "text": "Sehr geehrte Damen und Herren,\nich möchte eine Rückerstattung für meine stornierte Bestellung über 1.249,90 €. Bitte überweisen Sie das Geld zurück auf DE89 3704 0044 0532 0130 00.\nMit freundlichen Grüßen\nErika Mustermann",
    })
}

#[test]
fn the_watermarks_refuse_intake_then_every_write_and_readiness_follows_the_disk() {
    if !namespaces_allowed() {
        return;
    }
    let d = SmallDisk::start(
        64,
        &[
            ("CASEGRAPH_STORAGE__SOFT_FREE_MIB", "24"),
            ("CASEGRAPH_STORAGE__HARD_FREE_MIB", "12"),
        ],
    );
    let (s, v, _) = d.call("POST", "/v1/requests", Some(&refund_for_review()));
    assert_eq!(s, 202, "{v}");
    let review = v["case_id"].as_str().unwrap().to_string();
    d.wait_cases(std::slice::from_ref(&review), 60);
    let mut accepted = vec![review.clone()];

    // Below the soft mark: new requests are refused, the box stays ready.
    d.leave_free(18 * MIB);
    let v = d.wait_ready(10, "soft mark", |s, v| {
        s == 200 && v["checks"]["storage"] == "pressure"
    });
    assert_eq!(v["checks"]["store"], true, "{v}");
    let (s, v, retry) = d.call("POST", "/v1/requests", Some(&support::sample_request(1)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (507, Some("storage_pressure")),
        "{v}"
    );
    assert_eq!(retry.as_deref(), Some("10"));
    assert!(
        v["error"]["details"]["free_bytes"].as_u64().unwrap() < 24 * MIB,
        "{v}"
    );
    // Other writes still go on at the soft mark.
    let (s, v, _) = d.call(
        "POST",
        "/v1/tokens",
        Some(&json!({"role": "reviewer", "name": "at-soft"})),
    );
    assert_eq!(s, 201, "{v}");

    // Below the hard mark: every write but task completions is refused; not ready.
    d.leave_free(8 * MIB);
    let v = d.wait_ready(10, "hard mark", |s, _| s == 503);
    assert_eq!(v["error"]["details"]["store"], false, "{v}");
    assert_eq!(v["error"]["details"]["storage"], "full", "{v}");
    let (s, v, retry) = d.call("POST", "/v1/requests", Some(&support::sample_request(2)));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (507, Some("storage_full")),
        "{v}"
    );
    assert!(retry.is_some());
    let (s, v, _) = d.call(
        "POST",
        "/v1/tokens",
        Some(&json!({"role": "reviewer", "name": "at-hard"})),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (507, Some("storage_full")),
        "{v}"
    );
    // Reads and a reviewer's completion of an accepted case go on.
    let (s, case) = d.get(&format!("/v1/cases/{review}"));
    assert_eq!(
        (s, case["status"].as_str()),
        (200, Some("waiting")),
        "{case}"
    );
    let (_, tasks) = d.get("/v1/tasks");
    let task = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["case_id"] == review.as_str())
        .expect("the review task")
        .clone();
    let (s, v, _) = d.call(
        "POST",
        &format!("/v1/tasks/{}/complete", task["task_id"].as_str().unwrap()),
        Some(&json!({"decision": task["decisions"][0]})),
    );
    assert_eq!(s, 200, "{v}");
    // The console's box status and the metrics show it.
    let (s, status) = d.get("/v1/console/status");
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["storage"]["level"], "full", "{status}");
    assert_eq!(status["storage"]["hard_free_bytes"], 12 * MIB, "{status}");
    let metrics = {
        let url = format!("{}/metrics", d.url);
        let mut r = d
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", d.admin))
            .call()
            .unwrap();
        r.body_mut().read_to_string().unwrap()
    };
    assert!(metrics.contains("casegraph_storage_level 2"), "{metrics}");
    assert!(
        metrics.contains("casegraph_storage_free_bytes "),
        "{metrics}"
    );
    assert!(
        metrics.contains("casegraph_storage_mark_bytes{mark=\"soft_free\"} 25165824"),
        "{metrics}"
    );
    assert!(
        metrics.contains("casegraph_storage_refused_total{code=\"storage_pressure\"} 1"),
        "{metrics}"
    );

    // Space returns: ready and taking requests again, nobody restarted anything.
    d.drop_ballast();
    d.wait_ready(10, "space returned", |s, v| {
        s == 200 && v["checks"]["storage"] == "ok"
    });
    let (s, v, _) = d.call("POST", "/v1/requests", Some(&support::sample_request(3)));
    assert_eq!(s, 202, "{v}");
    accepted.push(v["case_id"].as_str().unwrap().to_string());
    d.wait_cases(&accepted, 60);
}

#[test]
fn a_full_disk_answers_storage_full_loses_nothing_and_writes_resume_when_space_returns() {
    if !namespaces_allowed() {
        return;
    }
    // The marks off: the store itself meets ENOSPC.
    let d = SmallDisk::start(
        48,
        &[
            ("CASEGRAPH_STORAGE__SOFT_FREE_MIB", "0"),
            ("CASEGRAPH_STORAGE__HARD_FREE_MIB", "0"),
        ],
    );
    d.leave_free(3 * MIB);
    let mut accepted: Vec<String> = Vec::new();
    let (mut full, mut unavailable, mut not_ready) = (0, 0, 0);
    let mut i = 0;
    while full + unavailable < 40 {
        assert!(
            i < 5_000,
            "the disk never filled: {} accepted",
            accepted.len()
        );
        let (s, v, retry) = d.call("POST", "/v1/requests", Some(&support::sample_request(i)));
        i += 1;
        match (s, v["error"]["code"].as_str()) {
            (202, _) => accepted.push(v["case_id"].as_str().unwrap().to_string()),
            (507, Some("storage_full")) | (503, Some("storage_unavailable")) => {
                assert!(retry.is_some(), "a refusal says when to retry: {v}");
                if s == 507 {
                    full += 1;
                } else {
                    unavailable += 1;
                }
                // Whenever writes are refused the box says it is not ready (unless a write
                // got through again in between).
                let (rs, rv) = d.get("/readyz");
                if rs == 503 {
                    assert_eq!(rv["error"]["details"]["store"], false, "{rv}");
                    not_ready += 1;
                }
            }
            other => panic!(
                "a full disk must answer storage_full/storage_unavailable, got {other:?}: {v}"
            ),
        }
    }
    assert!(full > 0, "ENOSPC is answered 507 storage_full");
    assert!(not_ready > 0, "/readyz never said the store refuses writes");
    eprintln!(
        "filled: {} accepted, {full} storage_full, {unavailable} storage_unavailable, {not_ready} readyz 503",
        accepted.len()
    );
    // Reads go on while the disk is full.
    let (s, v) = d.get(&format!("/v1/cases/{}", accepted[0]));
    assert_eq!(s, 200, "{v}");

    // Space returns: writes resume by themselves, and so do the cases a failed write of
    // a worker left behind.
    d.drop_ballast();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v, _) = d.call("POST", "/v1/requests", Some(&support::sample_request(i)));
        i += 1;
        if s == 202 {
            accepted.push(v["case_id"].as_str().unwrap().to_string());
            break;
        }
        assert!(Instant::now() < deadline, "writes did not resume: {s} {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let (s, v, _) = d.call("POST", "/v1/requests", Some(&support::sample_request(i)));
        i += 1;
        assert_eq!(s, 202, "{v}");
        accepted.push(v["case_id"].as_str().unwrap().to_string());
    }
    d.wait_ready(10, "space returned", |s, _| s == 200);
    // Nothing answered 202 is lost, every case ran as far as it can, and the audit chain
    // across the failures verifies.
    d.wait_cases(&accepted, 90);
    let last = accepted.last().unwrap();
    let (s, audit) = d.get(&format!("/v1/cases/{last}/audit"));
    assert_eq!(s, 200, "{audit}");
    assert_eq!(audit["chain_verified"], true, "{audit}");
}
