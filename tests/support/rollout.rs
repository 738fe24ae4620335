//! Rollout tests' helpers: a hub key, workflow folders to roll out, boxes with `[fleet]`,
//! and reading the reports boxes publish on their branch streams.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use casegraph::fleet::sign::{PUBLIC_FILE, SECRET_FILE, SecretKey};
use casegraph::fleet::wire::{self, RolloutReport};

use super::Server;

/// A tokio runtime for the test's own NATS calls (servers run their own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `casegraph rollout keygen --out <dir>/key`: the key folder and the public key's hex.
pub fn keygen(dir: &Path) -> (PathBuf, String) {
    let out = dir.join("key");
    let o = super::casegraph(&["rollout", "keygen", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = std::fs::read_to_string(out.join(PUBLIC_FILE)).unwrap();
    (out, public.trim().to_string())
}

pub fn secret(key_dir: &Path) -> SecretKey {
    SecretKey::read(&key_dir.join(SECRET_FILE)).unwrap()
}

/// A copy of the shipped `request_refund` at `version`, with `edit` applied to its
/// workflow.yaml, in `<dir>/v<version>/request_refund`.
pub fn refund_folder(dir: &Path, version: u32, edit: impl Fn(String) -> String) -> PathBuf {
    let from = super::workflows().join("request_refund");
    let to = dir.join(format!("v{version}")).join("request_refund");
    std::fs::create_dir_all(to.join("tests")).unwrap();
    for sub in ["", "tests"] {
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let yaml = std::fs::read_to_string(to.join("workflow.yaml")).unwrap();
    let yaml = edit(yaml.replace("version: 1\n", &format!("version: {version}\n")));
    std::fs::write(to.join("workflow.yaml"), yaml).unwrap();
    to
}

/// `casegraph rollout publish`: the rollout id it prints.
pub fn publish(
    nats_url: &str,
    key_dir: &Path,
    branches: &str,
    folder: &Path,
    extra: &[&str],
) -> String {
    let key = key_dir.join(SECRET_FILE);
    let mut args = vec![
        "rollout",
        "publish",
        "--nats",
        nats_url,
        "--key",
        key.to_str().unwrap(),
        "--branches",
        branches,
        "--workflow",
        folder.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = super::casegraph(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Creates the branch's stream `CG_<BRANCH>` (what the box's relay does), so its reports
/// are kept.
pub async fn branch_stream(js: &jetstream::Context, branch: &str) {
    js.get_or_create_stream(stream::Config {
        name: wire::branch_stream(branch),
        subjects: vec![wire::branch_subjects(branch)],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Every rollout report in the branch's stream, oldest first.
pub async fn reports(js: &jetstream::Context, branch: &str) -> Vec<RolloutReport> {
    let Ok(mut s) = js.get_stream(wire::branch_stream(branch)).await else {
        return Vec::new();
    };
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await
            && m.subject.as_str() == wire::branch_subject(branch, wire::Kind::Rollout)
        {
            out.push(serde_json::from_slice(&m.payload).unwrap());
        }
    }
    out
}

/// Waits (up to 90 s: a publish compiles and runs every fixture) for a report of `branch`
/// that `wanted` accepts.
pub async fn wait_report(
    js: &jetstream::Context,
    branch: &str,
    wanted: impl Fn(&RolloutReport) -> bool,
) -> RolloutReport {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = reports(js, branch).await;
        if let Some(r) = all.iter().find(|r| wanted(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such report from branch {branch}; reports: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A box of `branch` talking to `nats_url`, taking rollouts signed by `hub_key`.
pub fn start_box(nats_url: &str, branch: &str, hub_key: &str) -> Server {
    let (url, branch, key) = (
        nats_url.to_string(),
        branch.to_string(),
        hub_key.to_string(),
    );
    Server::start_with(move |c| {
        c.fleet.nats_url = Some(url);
        c.fleet.branch = Some(branch);
        c.fleet.hub_key = Some(key);
    })
}

/// The version the box serves of `id`.
pub fn served_version(server: &Server, id: &str) -> u64 {
    let r = server.call(
        "GET",
        &format!("/v1/workflows/{id}"),
        Some(casegraph::auth::Role::Author),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["version"].as_u64().unwrap()
}
