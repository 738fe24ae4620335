//! The real `casegraph hub` binary as a child process against a real `nats-server`, and
//! simulated branches publishing into their branch streams (`fleet::hub::simulate`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use casegraph::auth::{Role, Tokens};
use serde_json::Value;

/// A running hub; killed on drop (SIGKILL: the hub must survive being killed).
pub struct Hub {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    /// The bootstrap admin token.
    pub admin: String,
    agent: ureq::Agent,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `<data>/branches.toml` listing `(name, domain)`.
pub fn write_branches(data: &Path, branches: &[(&str, &str)]) {
    std::fs::create_dir_all(data).unwrap();
    let text: String = branches
        .iter()
        .map(|(n, d)| format!("[[branch]]\nname = \"{n}\"\ndomain = \"{d}\"\n"))
        .collect();
    std::fs::write(data.join("branches.toml"), text).unwrap();
}

impl Hub {
    /// Starts `casegraph hub` on `data` against `nats_url` and waits until it answers.
    pub fn start(data: &Path, nats_url: &str) -> Hub {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_casegraph"));
        cmd.args([
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--nats",
            nats_url,
            "--data",
        ])
        .arg(data)
        .env("CASEGRAPH_LOG", "warn")
        .stderr(Stdio::inherit());
        let (child, url, admin, agent) = super::process::spawn_listening(cmd, data, "/healthz");
        Hub {
            child,
            url,
            data: data.to_path_buf(),
            admin,
            agent,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A token of `role` in the hub's token file.
    pub fn token(&self, role: Role) -> String {
        let tokens = Tokens::open(&self.data).unwrap();
        let name = format!("{}-{}", role.as_str(), tokens.list().len());
        tokens.create(role, Some(&name)).unwrap().1
    }

    /// GET `path` with `token` (none: no Authorization header): status and JSON body.
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.agent.get(&format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = r.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The branch's detail, as the admin sees it.
    pub fn branch(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/fleet/branches/{name}"), Some(&self.admin));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `done` holds for the branch's detail; returns it.
    pub fn wait_branch(&self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = self.branch(name);
            if done(&b) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "branch {name} never got there: {b:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
