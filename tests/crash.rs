//! Crash tests: the real `casegraph serve` process, on the real store on disk, is killed
//! with SIGKILL at random moments while a stream of requests comes in, then restarted.
//! Afterwards: every request whose `202 Accepted` reached the client exists; every case
//! ends in a terminal or waiting state; no side effect was applied twice at a counting
//! back office that deduplicates by idempotency key; `casegraph audit verify` passes.
//!
//! A focused test kills the server between the end of cases and the answer of a slow
//! `reply_to` receiver: after the restart every final case's notification still arrives.
//!
//! Quick mode (the test command): 20 kill points per backend. Long mode:
//! `CASEGRAPH_CRASH_KILLS=500 cargo test --test crash -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};

/// The fake back office: applies each idempotency key once, counts every delivery.
#[derive(Default)]
struct Ledger {
    /// key → (connector.operation, deliveries)
    calls: Mutex<HashMap<String, (String, u32)>>,
}

struct Receiver {
    url: String,
    ledger: Arc<Ledger>,
}

async fn receive(
    State(ledger): State<Arc<Ledger>>,
    UrlPath((connector, operation)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let payload: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut calls = ledger.calls.lock().unwrap();
    let entry = calls
        .entry(key.clone())
        .or_insert_with(|| (format!("{connector}.{operation}"), 0));
    entry.1 += 1;
    axum::Json(json!({
        "refund_id": format!("R-{}", &key[key.len().saturating_sub(8)..]),
        "status": "booked", "amount": payload["amount"],
        "blocked": true, "card_ref": "CARD-1",
        "order_id": "O-1", "delivery_business_days": 5,
        "dispatched_on": "2026-03-01", "carrier": "post", "tracking_id": "T-1",
        "customer_id": payload["customer_id"], "segment": "retail", "verified": true,
        "tenure_years": 3,
    }))
}

/// Serves `app` on a free port of 127.0.0.1 from its own thread; returns the address.
fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

impl Receiver {
    fn start() -> Receiver {
        let ledger = Arc::new(Ledger::default());
        let addr = serve_on_loopback(
            axum::Router::new()
                .route("/{connector}/{operation}", post(receive))
                .with_state(ledger.clone()),
        );
        Receiver {
            url: format!("http://{addr}"),
            ledger,
        }
    }
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    /// A failing test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path, backend: &str, receiver: &str) -> Server {
    start_server_with(data, backend, receiver, &[])
}

/// [`start_server`] with more configuration from the environment.
fn start_server_with(data: &Path, backend: &str, receiver: &str, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casegraph"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--workflows")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"))
        .env("CASEGRAPH_STORE__BACKEND", backend)
        .env("CASEGRAPH_CONNECTORS__BASE_URL", receiver)
        .env("CASEGRAPH_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, url };
    let url = &server.url;
    // The address is printed when the socket is bound; wait until the service is ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = agent();
    loop {
        let ready = agent
            .get(&format!("{url}/readyz"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ready && data.join("admin.token").is_file() {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn request(i: u64) -> Value {
    match i % 3 {
        0 => json!({
            "channel": "form", "language": "en", "customer_id": format!("C-{:06}", 100_000 + i),
            "text": "Please refund the cancelled order.", "fields": { "amount": "25.00" },
            "metadata": { "intent": "request_refund", "confidence": 0.97 }
        }),
        1 => json!({
            "channel": "chat", "language": "de", "customer_id": format!("C-{:06}", 200_000 + i),
            "text": "Meine Karte mit den Endziffern 4821 wurde gestern gestohlen, bitte sofort sperren!", "fields": {},
            "metadata": { "intent": "lost_or_stolen_card", "confidence": 0.95 }
        }),
        _ => json!({
            "channel": "letter", "language": "de", "customer_id": format!("C-{:06}", 300_000 + i),
            "text": "Sehr geehrte Damen und Herren, ich bitte um Erstattung von 30,00 EUR. Mit freundlichen Grüßen", "fields": {},
            "metadata": { "intent": "request_refund", "confidence": 0.96 }
        }),
    }
}

/// Posts requests until told to stop; returns the case ids whose 202 arrived.
fn client(url: String, token: String, seed: u64, stop: Arc<AtomicBool>) -> Vec<String> {
    let agent = agent();
    let mut acked = Vec::new();
    let mut i = seed * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let resp = agent
            .post(&format!("{url}/v1/requests"))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Idempotency-Key", &format!("k-{i}"))
            .header("Content-Type", "application/json")
            .send(request(i).to_string());
        let Ok(mut resp) = resp else { break };
        if resp.status() == 202 {
            let body: Value = match resp.body_mut().read_to_string() {
                Ok(b) => serde_json::from_str(&b).unwrap(),
                Err(_) => break,
            };
            acked.push(body["case_id"].as_str().unwrap().to_string());
        }
    }
    acked
}

/// A small deterministic generator for kill moments (no randomness crate needed).
struct Moments(u64);
impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

fn token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn crash_suite(backend: &str, seed: u64) {
    let kills: usize = std::env::var("CASEGRAPH_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("data");
    let mut moments = Moments(seed);
    let mut acked: Vec<String> = Vec::new();
    for _ in 0..kills {
        let mut server = start_server(&data, backend, &receiver.url);
        let token = token(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (url, token, stop) = (server.url.clone(), token.clone(), stop.clone());
                let seed = acked.len() as u64 * 10 + c;
                std::thread::spawn(move || client(url, token, seed, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(moments.next_ms(20, 400)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            acked.extend(c.join().unwrap());
        }
    }
    assert!(
        acked.len() > kills,
        "requests were accepted between the kills"
    );

    // Restart once more and let recovery finish every acknowledged case.
    let mut server = start_server(&data, backend, &receiver.url);
    let token = token(&data);
    let agent = agent();
    let mut states: BTreeMap<String, Value> = BTreeMap::new();
    for id in &acked {
        // Recovery runs in the background; give each case a minute to settle.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut resp = agent
                .get(&format!("{}/v1/cases/{id}", server.url))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap();
            assert_eq!(resp.status(), 200, "acknowledged case {id} is missing");
            let case: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            let status = case["status"].as_str().unwrap().to_string();
            if ["completed", "failed", "escalated", "waiting"].contains(&status.as_str()) {
                states.insert(id.clone(), case);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "case {id} is still {status} long after restart"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Side effects: each call node a case passed was applied exactly once, under one key.
    let calls = receiver.ledger.calls.lock().unwrap();
    for (id, case) in &states {
        let applied: Vec<&String> = calls
            .keys()
            .filter(|k| k.starts_with(&format!("{id}:")))
            .collect();
        let call_nodes = case["path"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| ["book", "block", "replace"].contains(&n.as_str().unwrap()))
            .count();
        if case["status"] == "completed" {
            assert_eq!(
                applied.len(),
                call_nodes,
                "case {id}: {} effects for {call_nodes} call steps: {applied:?}\n{case}",
                applied.len()
            );
        }
    }
    drop(calls);
    let redelivered = receiver
        .ledger
        .calls
        .lock()
        .unwrap()
        .values()
        .filter(|(_, n)| *n > 1)
        .count();
    eprintln!(
        "{backend}: {kills} kills, {} acknowledged, all found; {} side effects, {redelivered} redelivered with their key after a crash",
        acked.len(),
        receiver.ledger.calls.lock().unwrap().len()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    server.child.wait().unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_casegraph"))
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn redb_loses_no_acknowledged_request_across_sigkills() {
    crash_suite("redb", 7);
}

#[test]
fn sled_loses_no_acknowledged_request_across_sigkills() {
    crash_suite("sled", 11);
}

/// A slow `reply_to` receiver: records every notification as it arrives, then holds the
/// answer until released.
#[derive(Default)]
struct Hook {
    /// (Idempotency-Key, body) of every delivery, in arrival order.
    deliveries: Mutex<Vec<(String, Value)>>,
    released: AtomicBool,
}

async fn hook(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: String) -> &'static str {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    hook.deliveries.lock().unwrap().push((key, body));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hook.released.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    "ok"
}

impl Hook {
    /// Serves the hook on 127.0.0.1; returns it and its address.
    fn start() -> (Arc<Hook>, String) {
        let hook_state = Arc::new(Hook::default());
        let addr = serve_on_loopback(
            axum::Router::new()
                .route("/hooks/case", post(hook))
                .with_state(hook_state.clone()),
        );
        (hook_state, addr.to_string())
    }
}

fn get_json(agent: &ureq::Agent, url: &str, token: &str) -> (u16, String) {
    let mut resp = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn reply_to_notifications_survive_a_sigkill_before_the_receiver_answers() {
    let backoffice = Receiver::start();
    let (hook, addr) = Hook::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let allowed = format!("[\"{addr}\"]");
    let env = [("CASEGRAPH_WEBHOOKS__ALLOWED_HOSTS", allowed.as_str())];
    let server = start_server_with(&data, "redb", &backoffice.url, &env);
    let token = token(&data);
    let agent = agent();
    // Refund requests only: a lost card now waits for the customer's confirmation.
    let ids: Vec<String> = (0..9)
        .filter(|i| i % 3 != 1)
        .map(|i| {
            let mut body = request(i);
            body["reply_to"] = json!(format!("http://{addr}/hooks/case"));
            let mut resp = agent
                .post(&format!("{}/v1/requests", server.url))
                .header("Authorization", &format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap();
            assert_eq!(resp.status(), 202);
            let v: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            v["case_id"].as_str().unwrap().to_string()
        })
        .collect();
    // Every case ends while the receiver holds the first notification unanswered.
    let mut finals = BTreeMap::new();
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, text) = get_json(&agent, &format!("{}/v1/cases/{id}", server.url), &token);
            assert_eq!(status, 200, "{text}");
            let case: Value = serde_json::from_str(&text).unwrap();
            let s = case["status"].as_str().unwrap().to_string();
            if ["completed", "failed", "escalated"].contains(&s.as_str()) {
                finals.insert(id.clone(), s);
                break;
            }
            assert!(s != "waiting", "case {id} waits: {case}");
            assert!(Instant::now() < deadline, "case {id} is still {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.deliveries.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no notification was attempted");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL, no notification answered yet
    server.child.wait().unwrap();
    let before = hook.deliveries.lock().unwrap().len();
    hook.released.store(true, Ordering::Relaxed);

    let server = start_server_with(&data, "redb", &backoffice.url, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<String> = hook
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        if finals.keys().all(|id| got.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart only {got:?} of {:?} were notified",
            finals.keys()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Same key, same body, every time; the body is the case's end.
    let deliveries = hook.deliveries.lock().unwrap().clone();
    let mut bodies: BTreeMap<String, Value> = BTreeMap::new();
    for (key, body) in &deliveries {
        assert_eq!(
            body["case_id"],
            key.as_str(),
            "Idempotency-Key is the case id"
        );
        assert_eq!(body["status"], finals[key].as_str(), "{body}");
        let first = bodies.entry(key.clone()).or_insert_with(|| body.clone());
        assert_eq!(first, body, "a redelivery carries the same body");
    }
    eprintln!(
        "{} final cases; {before} delivery attempts before the kill, {} in all",
        finals.len(),
        deliveries.len()
    );
    // Delivered notifications are no longer stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = get_json(&agent, &format!("{}/metrics", server.url), &token);
        if metrics
            .lines()
            .any(|l| l == "casegraph_pending_notifications 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "notifications stay stored:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A refund request that names no amount: the case asks for it and waits.
fn request_without_amount(i: u64) -> Value {
    json!({
        "channel": "chat", "language": "en", "customer_id": format!("C-{:06}", 400_000 + i),
        "text": "I would like a refund for my cancelled order, please.", "fields": {},
        "metadata": { "intent": "request_refund", "confidence": 0.97 }
    })
}

/// Posts `body` to `path` with a key until the box answers (it may be down between kills);
/// returns the answer's status and JSON, or `None` once `stop` is set.
fn post_until(url: &str, path: &str, token: &str, key: &str, body: &Value) -> Option<(u16, Value)> {
    let agent = agent();
    let resp = agent
        .post(&format!("{url}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .send(body.to_string());
    let mut resp = resp.ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[test]
fn acknowledged_answers_reach_their_case_exactly_once_across_sigkills() {
    let kills: usize = std::env::var("CASEGRAPH_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|k: usize| k.min(100))
        .unwrap_or(8);
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("data");
    // Cases that wait for the customer's answer.
    let server = start_server(&data, "redb", &receiver.url);
    let token = token(&data);
    let cases: Vec<String> = (0..40u64)
        .map(|i| {
            let (status, body) = post_until(
                &server.url,
                "/v1/requests",
                &token,
                &format!("req-{i}"),
                &request_without_amount(i),
            )
            .unwrap();
            assert_eq!(status, 202, "{body}");
            body["case_id"].as_str().unwrap().to_string()
        })
        .collect();
    let agent = agent();
    for id in &cases {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = get_json(&agent, &format!("{}/v1/cases/{id}", server.url), &token);
            assert_eq!(status, 200);
            let case: Value = serde_json::from_str(&body).unwrap();
            if case["waiting"]["kind"] == "answer" {
                break;
            }
            assert!(Instant::now() < deadline, "case {id} never asked: {case}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(server);

    // Answers stream in (two clients race on each one with the same key) while the box is
    // killed; an answer counts as acknowledged once a 202 reached a client.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut moments = Moments(7);
    for round in 0..kills {
        let mut server = start_server(&data, "redb", &receiver.url);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let (url, token, stop, acked) = (
                    server.url.clone(),
                    token.clone(),
                    stop.clone(),
                    acked.clone(),
                );
                let cases = cases.clone();
                std::thread::spawn(move || {
                    for (i, id) in cases.iter().enumerate().skip((round * 5 + c) % cases.len()) {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let body = json!({"channel": "form", "text": "",
                            "fields": {"amount": format!("{}.00", 10 + i)}});
                        let path = format!("/v1/cases/{id}/messages");
                        let Some((status, answer)) =
                            post_until(&url, &path, &token, &format!("answer-{id}"), &body)
                        else {
                            return;
                        };
                        if status == 202 {
                            let m = answer["message_id"].as_str().unwrap().to_string();
                            let mut acked = acked.lock().unwrap();
                            let seen = acked.entry(id.clone()).or_insert_with(|| m.clone());
                            assert_eq!(*seen, m, "one key, one message id");
                        } else {
                            // Nothing else may answer a message than 202, or the box being busy.
                            assert!(matches!(status, 429 | 503), "{status}: {answer}");
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(moments.next_ms(20, 300)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "answers were accepted between the kills");

    // After a last restart every acknowledged answer has reached its case exactly once.
    let server = start_server(&data, "redb", &receiver.url);
    for (id, message_id) in &acked {
        let deadline = Instant::now() + Duration::from_secs(60);
        let case = loop {
            let (status, body) = get_json(&agent, &format!("{}/v1/cases/{id}", server.url), &token);
            assert_eq!(status, 200, "case {id} is missing");
            let case: Value = serde_json::from_str(&body).unwrap();
            if case["status"] == "completed" {
                break case;
            }
            assert!(
                Instant::now() < deadline,
                "case {id} did not take its acknowledged answer: {case}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(case["outcome"], "refunded", "{case}");
        let answers: Vec<&Value> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "in")
            .collect();
        assert_eq!(answers.len(), 1, "case {id}: one answer stored: {case}");
        assert_eq!(answers[0]["message_id"], message_id.as_str());
        assert_eq!(answers[0]["node"], "ask_amount");
        assert_eq!(
            case["data"]["answers"]["ask_amount"]["message_id"],
            message_id.as_str()
        );
        let booked = receiver
            .ledger
            .calls
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(&format!("{id}:")))
            .count();
        assert_eq!(booked, 1, "case {id}: the refund was booked once");
    }
    eprintln!(
        "answers: {kills} kills, {} of {} answers acknowledged, each reached its case once",
        acked.len(),
        cases.len()
    );
}

/// A warranty event about customer `i`; nobody consented, so each case ends `no_consent`.
fn warranty_event(i: u64) -> Value {
    json!({
        "specversion": "1.0", "id": format!("ev-{i}"), "source": "/products", "type": "warranty.expiring",
        "subject": format!("K-{i}"), "data": { "product_id": format!("P-{i}"), "product": "dryer",
        "expires_on": "2027-01-05" }
    })
}

/// Posts events until told to stop; returns `(event number, cases)` of every `202`.
fn event_client(url: String, token: String, seed: u64, stop: Arc<AtomicBool>) -> Vec<(u64, Value)> {
    let agent = agent();
    let mut acked = Vec::new();
    let mut i = seed * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let resp = agent
            .post(&format!("{url}/v1/events"))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/cloudevents+json")
            .send(warranty_event(i).to_string());
        let Ok(mut resp) = resp else { break };
        if resp.status() == 202 {
            let Ok(text) = resp.body_mut().read_to_string() else {
                break;
            };
            let body: Value = serde_json::from_str(&text).unwrap();
            acked.push((i, body["cases"].clone()));
        }
    }
    acked
}

#[test]
fn a_sigkill_during_a_burst_of_events_loses_no_acknowledged_event() {
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("data");
    let mut moments = Moments(23);
    let mut acked: Vec<(u64, Value)> = Vec::new();
    for round in 0..6 {
        let mut server = start_server(&data, "redb", &receiver.url);
        let token = token(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (url, token, stop) = (server.url.clone(), token.clone(), stop.clone());
                std::thread::spawn(move || event_client(url, token, round * 10 + c + 1, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(moments.next_ms(50, 400)));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            acked.extend(c.join().unwrap());
        }
    }
    assert!(acked.len() > 6, "events were accepted between the kills");
    let server = start_server(&data, "redb", &receiver.url);
    let token = token(&data);
    let agent = agent();
    for (i, cases) in &acked {
        // The event is stored: posting it again answers the cases it started then.
        let mut resp = agent
            .post(&format!("{}/v1/events", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/cloudevents+json")
            .send(warranty_event(*i).to_string())
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(
            &body["cases"], cases,
            "event {i} was acknowledged, then lost or changed"
        );
        let id = cases[0].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut resp = agent
                .get(&format!("{}/v1/cases/{id}", server.url))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap();
            assert_eq!(
                resp.status(),
                200,
                "the case of acknowledged event {i} is missing"
            );
            let case: Value =
                serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
            if case["status"] == "completed" {
                assert_eq!(case["outcome"], "no_consent", "{case}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "case {id} did not finish: {case}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("events: 6 kills, {} acknowledged, all found", acked.len());
}
