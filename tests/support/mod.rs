//! A real server on 127.0.0.1:0 with a temporary data directory, and a small HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casegraph::auth::{Role, Tokens};
use casegraph::config::Config;
use serde_json::Value;

pub mod hub;
pub mod nats;
pub mod process;
pub mod rollout;

/// A running server; stopped (gracefully) on drop.
pub struct Server {
    pub base: String,
    pub data: tempfile::TempDir,
    pub tokens: HashMap<Role, String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    agent: ureq::Agent,
}

/// Runs the `casegraph` binary in the source tree to completion.
pub fn casegraph(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_casegraph"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

pub fn workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// The `i`-th of the shipped sample requests (round robin) as a `POST /v1/requests` body,
/// with a customer id of its own.
pub fn sample_request(i: usize) -> Value {
    let samples = std::fs::read_to_string(workflows().join("samples/requests.jsonl")).unwrap();
    let lines: Vec<Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = &lines[i % lines.len()];
    let mut body = serde_json::json!({
        "channel": s["channel"], "language": s["language"], "fields": s["fields"],
        "customer_id": format!("C-{i:07}"),
    });
    if let Some(t) = s["text"].as_str().filter(|t| !t.is_empty()) {
        body["text"] = serde_json::json!(t);
    }
    body
}

/// The configuration tests start from: shipped workflows, fast timers, no bootstrap token.
/// An HTTP client for a test server: a status is never an error, and a fresh connection
/// per request (the server may close one after answering early — a 401 or a refusal
/// before reading a body — and a pooled POST would then fail).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into()
}

pub fn config(data: &Path) -> Config {
    let mut c = Config {
        data_dir: data.to_path_buf(),
        workflows_dir: workflows(),
        ..Config::default()
    };
    c.server.timer_interval = Duration::from_millis(100);
    c.server.bootstrap_admin_token = false;
    c.server.shutdown_grace = Duration::from_secs(5);
    c
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(|_| {})
    }

    /// Starts a server with one token per role (named after the role).
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Server {
        let server = Server::launch(adjust, "http");
        server.wait_ready();
        server
    }

    /// Starts a server whose configuration turns TLS on; readiness is the caller's to check.
    pub fn start_tls(adjust: impl FnOnce(&mut Config)) -> Server {
        let server = Server::launch(adjust, "https");
        std::thread::sleep(Duration::from_millis(300));
        server
    }

    fn launch(adjust: impl FnOnce(&mut Config), scheme: &str) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut tokens = HashMap::new();
        {
            let store = Tokens::open(data.path()).unwrap();
            for role in Role::ALL {
                let (_, t) = store.create(role, Some(role.as_str())).unwrap();
                tokens.insert(role, t);
            }
        }
        let mut c = config(data.path());
        adjust(&mut c);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                casegraph::serve::run(c, listener, async move {
                    let _ = rx.await;
                })
                .await
            })
        });
        Server {
            base,
            data,
            tokens,
            stop: Some(tx),
            thread: Some(thread),
            agent: agent(),
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.agent.get(&format!("{}/readyz", self.base)).call()
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn token(&self, role: Role) -> &str {
        &self.tokens[&role]
    }

    /// Stops the server gracefully and returns its result.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }

    /// A request: method, path, role (None: no token), JSON body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        role: Option<Role>,
        body: Option<&Value>,
    ) -> Response {
        self.raw(
            method,
            path,
            role.map(|r| self.token(r).to_string()).as_deref(),
            body.map(|b| ("application/json", b.to_string().into_bytes())),
            &[],
        )
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Response {
        let url = format!("{}{}", self.base, path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.call()
            }
            _ => {
                let mut r = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "DELETE" => self.agent.delete(&url).force_send_body(),
                    other => panic!("the test client does not speak {other}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                match body {
                    Some((ct, bytes)) => r.header("Content-Type", ct).send(&bytes[..]),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            text,
            json,
        }
    }

    /// Creates a submitter token with `capabilities` (as admin) and returns its secret.
    pub fn token_with(&self, name: &str, capabilities: &[&str]) -> String {
        let body =
            serde_json::json!({ "role": "submitter", "name": name, "capabilities": capabilities });
        let r = self.call("POST", "/v1/tokens", Some(Role::Admin), Some(&body));
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["token"].as_str().unwrap().to_string()
    }

    /// Posts a CloudEvent in structured mode with `token`.
    pub fn post_event(&self, token: &str, event: &Value) -> Response {
        self.raw(
            "POST",
            "/v1/events",
            Some(token),
            Some((
                "application/cloudevents+json",
                event.to_string().into_bytes(),
            )),
            &[],
        )
    }

    /// Posts a request as the submitter and returns the case id.
    pub fn submit(&self, body: &Value) -> String {
        let r = self.call("POST", "/v1/requests", Some(Role::Submitter), Some(body));
        assert_eq!(r.status, 202, "{}", r.text);
        r.json["case_id"].as_str().unwrap().to_string()
    }

    /// Polls the case (as admin) until `done` says so.
    pub fn wait_case(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.call("GET", &format!("/v1/cases/{id}"), Some(Role::Admin), None);
            assert_eq!(r.status, 200, "{}", r.text);
            if done(&r.json) {
                return r.json;
            }
            assert!(
                Instant::now() < deadline,
                "case {id} did not get there: {}",
                r.text
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A metric's value from /metrics (first sample whose line starts with `name`).
    pub fn metric(&self, name: &str) -> f64 {
        let r = self.call("GET", "/metrics", Some(Role::Admin), None);
        assert_eq!(r.status, 200);
        r.text
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    pub json: Value,
}

impl Response {
    /// Asserts the documented error shape and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error"]["code"], code, "{}", self.text);
        assert!(self.json["error"]["message"].is_string(), "{}", self.text);
        assert!(self.json["error"].get("details").is_some(), "{}", self.text);
    }
}

/// Reads one HTTP request (headers and a `Content-Length` body) from a connection.
pub fn read_request(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// The JSON body of a request read by [`read_request`].
pub fn request_body(request: &str) -> Value {
    serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}
