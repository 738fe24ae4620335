//! The real `casegraph serve` binary as a child process, for attacks that could abort the
//! process: an in-process server would take the test runner down with it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The URL a spawned `casegraph` process prints as `listening on URL` on its piped stdout;
/// the rest of its output is drained on a thread of its own.
pub fn listening_url(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the process prints its address")
            .expect("a line");
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    url
}

/// Spawns `cmd`, a `casegraph` command that listens on `127.0.0.1:0` and prints `listening on
/// URL`, and waits until `ready` (a path) answers 200 and `<data>/admin.token` exists. Returns
/// the child, its URL, the bootstrap admin token and an agent that never treats a status as
/// an error. `casegraph serve` and `casegraph hub` both start this way.
pub fn spawn_listening(
    mut cmd: Command,
    data: &Path,
    ready: &str,
) -> (Child, String, String, ureq::Agent) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let url = listening_url(&mut child);
    let agent = super::agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = data.join("admin.token");
    while !(agent
        .get(&format!("{url}{ready}"))
        .call()
        .is_ok_and(|r| r.status() == 200)
        && token.is_file())
    {
        assert!(
            Instant::now() < deadline,
            "the process did not become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let admin = std::fs::read_to_string(token)
        .expect("admin token")
        .trim()
        .to_string();
    (child, url, admin, agent)
}

/// A spawned server on `127.0.0.1:0` with the shipped workflows and its bootstrap admin
/// token; killed on drop, so a failing test leaves no server behind.
pub struct Process {
    child: Child,
    pub url: String,
    /// The bootstrap admin token the server wrote to `<data>/admin.token`.
    pub admin: String,
    agent: ureq::Agent,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `casegraph serve` on `data` and waits until it is ready.
    pub fn start(data: &Path) -> Process {
        Process::start_with_env(data, &[])
    }

    /// Starts `casegraph serve` on `data` with configuration from `env`
    /// (`CASEGRAPH_<SECTION>__<KEY>`) and waits until it is ready.
    pub fn start_with_env(data: &Path, env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_casegraph"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--workflows")
            .arg(super::workflows())
            .env("CASEGRAPH_LOG", "error")
            .envs(env.iter().copied())
            .stderr(Stdio::null());
        let (child, url, admin, agent) = spawn_listening(cmd, data, "/readyz");
        Process {
            child,
            url,
            admin,
            agent,
        }
    }

    /// A GET (no body) or a POST of JSON with `token`; `None` when the process gave no answer.
    pub fn call(&self, path: &str, token: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {token}");
        let result = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(b.to_string().as_bytes()),
            None => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut resp = result.ok()?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A metric's value from `/metrics` (first sample whose line starts with `name`; 0 when
    /// absent), read with `token`.
    pub fn metric(&self, token: &str, name: &str) -> f64 {
        let Ok(mut resp) = self
            .agent
            .get(&format!("{}/metrics", self.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
        else {
            return 0.0;
        };
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process runs and answers `/healthz`.
    pub fn alive(&mut self) -> bool {
        let answers = self
            .agent
            .get(&format!("{}/healthz", self.url))
            .call()
            .is_ok_and(|r| r.status() == 200);
        answers && self.child.try_wait().ok().flatten().is_none()
    }
}
