//! Hostile input: the rest of the surface (classify, console, path and query parameters, TLS, stated intents and moods).
//!
//! A second attacker's round over what the other modules leave: author work that costs a
//! compile (checks, fixture runs, publishes) and model calls asked for over HTTP are
//! admitted a few at a time; TLS handshakes count against the connection limit; a stated
//! intent is a label, not free text, and a stated mood has exactly the agreed shape; failed authentications are counted; nothing an
//! outsider sends becomes a metrics label; odd path and query parameters are answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::{Response, Server};

/// Far beyond what any answer here should take once bounded.
const BOUND: Duration = Duration::from_secs(30);

/// A workflow `id` (intent `id`) whose one rule burns until the rule deadline (1 s), with
/// `fixtures` fixtures: checking it takes about `fixtures` seconds, a dry run about one.
fn slow_bundle(id: &str, fixtures: usize) -> Value {
    let yaml = format!(
        "id: {id}\nversion: 1\nintents: [{id}]\nlanguages: [en]\nstart: burn\n\
         replies:\n  hello:\n    en: \"Hello\"\n\
         nodes:\n  burn: {{kind: rule, script: burn.rhai, next: answer}}\n  \
         answer: {{kind: reply, template: hello, next: done}}\n  done: {{kind: end, outcome: done}}\n"
    );
    let mut files = serde_json::Map::new();
    files.insert("workflow.yaml".into(), json!(yaml));
    files.insert(
        "burn.rhai".into(),
        json!("loop {\n  let s = \"\";\n  s.pad(60000, 'y');\n}\n"),
    );
    files.insert("input.schema.json".into(), json!("{\"type\": \"object\"}"));
    for n in 0..fixtures {
        files.insert(
            format!("tests/slow_{n}.yaml"),
            json!(format!(
                "name: slow {n}\nrequest: {{channel: form, language: en, text: x, fields: {{}}}}\n\
                 classification: {{intent: {id}, confidence: 1.0, out_of_scope: false}}\n\
                 expect: {{status: failed}}\n"
            )),
        );
    }
    json!({ "id": id, "files": files })
}

/// Runs `slow` on a thread and, once it has started, calls `probe` until it answers
/// `503 busy` while `slow` is still running; returns that answer and `slow`'s. `None` when `slow` finished first.
fn busy_while(
    slow: impl FnOnce() -> Response + Send + 'static,
    probe: impl Fn() -> Response,
) -> (Option<Response>, Response) {
    let slow = thread::spawn(slow);
    // A head start, so that `slow` holds its place before the first probe asks.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut busy = None;
    while !slow.is_finished() && started.elapsed() < BOUND {
        let r = probe();
        if r.status == 503 {
            busy = Some(r);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    (busy, slow.join().expect("the slow request"))
}

fn assert_busy(r: &Response) {
    r.assert_error(503, "busy");
    assert!(
        r.headers.contains_key("retry-after"),
        "503 busy without Retry-After: {:?}",
        r.headers
    );
}

/// Entries of `<data>/catalog` that are not a served catalog (`0`, `1`, …).
fn scratch_left(s: &Server) -> Vec<String> {
    std::fs::read_dir(s.data.path().join("catalog"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.chars().all(|c| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn surface_checks_beyond_the_compile_limit_are_busy_and_leave_no_copies() {
    let s = Arc::new(Server::start_with(|c| c.limits.max_compiles = 1));
    let slow = {
        let s = s.clone();
        move || {
            s.call(
                "POST",
                "/v1/console/workflows/check",
                Some(Role::Author),
                Some(&slow_bundle("slow_check", 4)),
            )
        }
    };
    let probe = || {
        s.call(
            "POST",
            "/v1/console/workflows/check",
            Some(Role::Author),
            Some(&slow_bundle("other_check", 0)),
        )
    };
    let (busy, done) = busy_while(slow, probe);
    assert_eq!(done.status, 200, "{}", done.text);
    assert_busy(&busy.expect("a second check was admitted while the first compiled"));
    // Fixture runs and publishes share the bound.
    for probe in [
        Box::new(|| {
            s.call(
                "POST",
                "/v1/console/workflows/request_refund/fixtures",
                Some(Role::Author),
                None,
            )
        }) as Box<dyn Fn() -> Response>,
        Box::new(|| {
            s.call(
                "POST",
                "/v1/workflows",
                Some(Role::Author),
                Some(&slow_bundle("other_publish", 0)),
            )
        }),
    ] {
        let slow = {
            let s = s.clone();
            move || {
                s.call(
                    "POST",
                    "/v1/console/workflows/check",
                    Some(Role::Author),
                    Some(&slow_bundle("slow_check", 4)),
                )
            }
        };
        let (busy, done) = busy_while(slow, probe);
        assert_eq!(done.status, 200, "{}", done.text);
        assert_busy(&busy.expect("compile work was admitted beyond the limit"));
    }
    // Every scratch copy is gone once its check answered, whatever the answer was.
    let broken = json!({ "id": "broken", "files": { "workflow.yaml": "id: [" } });
    let r = s.call(
        "POST",
        "/v1/console/workflows/check",
        Some(Role::Author),
        Some(&broken),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], false, "{}", r.text);
    assert_eq!(scratch_left(&s), Vec::<String>::new());
}

#[test]
fn surface_model_calls_beyond_the_limit_are_busy() {
    let s = Arc::new(Server::start_with(|c| c.limits.max_classify = 1));
    let r = s.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&slow_bundle("slow_dry", 0)),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // A dry run through the burning rule holds its model-call place for a second.
    let slow = {
        let s = s.clone();
        move || {
            let body = json!({ "channel": "form", "language": "en", "text": "x",
                "metadata": { "intent": "slow_dry" } });
            s.call(
                "POST",
                "/v1/console/dry-run",
                Some(Role::Author),
                Some(&body),
            )
        }
    };
    let probe = || {
        s.call(
            "POST",
            "/v1/classify",
            Some(Role::Reviewer),
            Some(&json!({ "text": "my card has not arrived" })),
        )
    };
    let (busy, done) = busy_while(slow, probe);
    assert_eq!(done.status, 200, "{}", done.text);
    assert_busy(&busy.expect("a classification was admitted beyond the limit"));
    // Once the place is free again, classification answers.
    assert_eq!(probe().status, 200);
}

#[test]
fn surface_a_stated_intent_must_be_an_intent_label() {
    let s = Server::start();
    let stated = |intent: &str| {
        json!({ "channel": "chat", "language": "en", "text": "hello",
            "metadata": { "intent": intent, "confidence": 1.0 } })
    };
    for personal in [
        "Anna Schmidt, DE89 3704 0044 0532 0130 00",
        "anna.schmidt.1985",
        // Shaped like a label, but no label of the model nor of the routing policy.
        "anna_schmidt_1985",
        "",
    ] {
        let r = s.call(
            "POST",
            "/v1/requests",
            Some(Role::Admin),
            Some(&stated(personal)),
        );
        r.assert_error(422, "invalid_request");
        assert_eq!(
            r.json["error"]["details"]["field"], "metadata.intent",
            "{}",
            r.text
        );
        assert!(
            !r.text.contains("Schmidt"),
            "the value is echoed: {}",
            r.text
        );
    }
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Admin),
        Some(&stated("request_refund")),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    // A submitter without the capability states a hint, which the model only records.
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Submitter),
        Some(&stated("Anna Schmidt")),
    );
    assert_eq!(r.status, 202, "{}", r.text);
}

#[test]
fn surface_a_stated_mood_must_have_the_agreed_shape() {
    let s = Server::start();
    for (signal, value) in [
        ("frustration", json!({"score": 3, "flagged": true})),
        ("frustration", json!({"score": 0.5, "flagged": "yes"})),
        (
            "sentiment",
            json!({"label": "Kundin ist wütend", "confidence": 0.9}),
        ),
        (
            "sentiment",
            json!({"label": "negative", "confidence": 0.9, "note": "x"}),
        ),
        ("sentiment", json!("negative")),
    ] {
        let r = s.call(
            "POST",
            "/v1/requests",
            Some(Role::Admin),
            Some(&json!({"channel": "chat", "text": "refund please",
                         "metadata": {"intent": "request_refund", signal: value}})),
        );
        r.assert_error(422, "invalid_request");
        assert!(r.text.contains(&format!("metadata.{signal}")), "{}", r.text);
    }
    // A sender who may not state the classification cannot state the mood either: the
    // model decides, and routing never sees the sender's word for it.
    let id = s.submit(
        &json!({"channel": "chat", "language": "en", "customer_id": "C-1002377",
        "text": "refund my 40 euros",
        "metadata": {"frustration": {"score": 1.0, "flagged": true}}}),
    );
    let case = s.wait_case(&id, |c| {
        c["status"] != "accepted" && c["status"] != "running"
    });
    assert!(
        case["why"]["signals"]["frustration"].is_null()
            || case["why"]["signals"]["frustration"]["score"] != 1.0,
        "{case}"
    );
}

#[test]
fn surface_failed_authentications_are_counted() {
    let s = Server::start();
    let before = s.metric("casegraph_auth_failures_total");
    for token in [Some("cg_0000"), Some("nonsense"), None] {
        let r = s.raw("GET", "/v1/tasks", token, None, &[]);
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = s.raw(
        "GET",
        "/v1/tasks",
        None,
        None,
        &[("Authorization", "Basic YTpi")],
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let after = s.metric("casegraph_auth_failures_total");
    assert_eq!(after - before, 4.0, "failures counted: {before} -> {after}");
}

/// Sends `request` as raw bytes on a fresh connection; returns what came back.
fn raw_exchange(s: &Server, request: &[u8]) -> String {
    let addr = s.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn surface_methods_an_outsider_invents_are_not_metrics_labels() {
    let s = Server::start();
    for n in 0..20 {
        let answer = raw_exchange(
            &s,
            format!("INVENTED{n} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    let metrics = s.call("GET", "/metrics", Some(Role::Admin), None).text;
    assert!(!metrics.contains("INVENTED"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[test]
fn surface_odd_path_parameters_are_answered_not_found() {
    let s = Server::start();
    let long = "a".repeat(4_000);
    for path in [
        "/v1/cases/%00".to_string(),
        "/v1/cases/a%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        format!("/v1/cases/{long}"),
        format!("/v1/cases/{long}/audit"),
        "/v1/workflows/..%2Frouting".to_string(),
        format!("/v1/workflows/{long}/graph"),
        "/v1/workflows/%00/graph".to_string(),
        "/v1/console/workflows/..%2F..%2Ftokens/definition".to_string(),
        "/console/..%2F..%2FCargo.toml".to_string(),
    ] {
        let r = s.call("GET", &path, Some(Role::Admin), None);
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert!(
            r.text.len() < 1_000,
            "{path}: the id is echoed: {}",
            r.text.len()
        );
    }
    let r = s.call(
        "POST",
        &format!("/v1/tasks/{long}/complete"),
        Some(Role::Reviewer),
        Some(&json!({ "decision": "approve" })),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.len() < 1_000, "the id is echoed: {}", r.text.len());
}

#[test]
fn surface_odd_query_parameters_are_refused_naming_them() {
    let s = Server::start();
    for q in [
        "limit=0",
        "limit=-1",
        "limit=99999999999999999999999",
        "limit=%00",
    ] {
        let r = s.call("GET", &format!("/v1/tasks?{q}"), Some(Role::Reviewer), None);
        assert!(r.status == 400 || r.status == 422, "{q}: {}", r.text);
        assert!(r.json["error"]["code"].is_string(), "{q}: {}", r.text);
    }
    for q in ["limit=100000", "status=%0A%1B[31m", "cursor=zzzz", "q=%00"] {
        let r = s.call(
            "GET",
            &format!("/v1/console/cases?{q}"),
            Some(Role::Reviewer),
            None,
        );
        assert!(
            [200, 400, 422].contains(&r.status),
            "{q}: {} {}",
            r.status,
            r.text
        );
    }
}

fn tls_client() -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let cert = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/cert.pem");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[test]
fn surface_tls_handshakes_in_flight_count_against_max_connections() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let s = Server::start_tls(|c| {
        c.server.max_connections = 2;
        c.server.tls = Some(casegraph::config::TlsOptions {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        });
    });
    let addr = s.base.trim_start_matches("https://").to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        // The box answers a handshake while nothing else is open.
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let first = tokio::time::timeout(BOUND, tls_client().connect(name.clone(), tcp))
            .await
            .expect("a handshake on an idle box");
        drop(first.expect("handshake"));
        // Two neighbours open connections and never say hello: the box's two places.
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut third = Box::pin(tls_client().connect(name, tcp));
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut third)
                .await
                .is_err(),
            "a third handshake was taken beyond max_connections = 2"
        );
        // When the silent ones go, the waiting client is served.
        drop(silent);
        let tls = tokio::time::timeout(BOUND, third)
            .await
            .expect("the waiting handshake finishes once places are free");
        assert!(tls.is_ok(), "{tls:?}");
    });
}

#[test]
fn surface_console_compiles_and_dry_runs_are_shed_near_the_memory_budget() {
    let s = Server::start_with(|c| c.memory.budget_mib = 1);
    let dry = json!({ "channel": "chat", "language": "en", "text": "my card has not arrived" });
    for (path, body) in [
        (
            "/v1/console/workflows/check",
            Some(slow_bundle("shed_check", 0)),
        ),
        ("/v1/console/workflows/request_refund/fixtures", None),
        ("/v1/console/dry-run", Some(dry)),
    ] {
        let r = s.call("POST", path, Some(Role::Author), body.as_ref());
        r.assert_error(503, "memory_pressure");
        assert!(r.headers.contains_key("retry-after"), "{path}");
    }
}

#[test]
fn surface_dry_runs_and_classifications_bound_their_metadata() {
    let s = Server::start();
    let mut deep = json!("x");
    for _ in 0..10 {
        deep = json!({ "a": deep });
    }
    let big = json!({ "note": "x".repeat(10_000) });
    for metadata in [deep, big] {
        let dry =
            json!({ "channel": "chat", "language": "en", "text": "hello", "metadata": metadata });
        let classify = json!({ "text": "hello", "metadata": metadata });
        for (path, role, body) in [
            ("/v1/console/dry-run", Role::Author, dry),
            ("/v1/classify", Role::Reviewer, classify),
        ] {
            let r = s.call("POST", path, Some(role), Some(&body));
            r.assert_error(422, "invalid_request");
            assert_eq!(
                r.json["error"]["details"]["field"], "metadata",
                "{path}: {}",
                r.text
            );
        }
    }
}

/// A workflow `id` of `n` rule nodes in a row, each working well within the rule deadline.
fn long_chain(id: &str, n: usize) -> Value {
    let mut nodes = String::new();
    for i in 0..n {
        nodes.push_str(&format!(
            "  w{i}: {{kind: rule, script: work.rhai, next: w{}}}\n",
            i + 1
        ));
    }
    nodes.push_str(&format!("  w{n}: {{kind: end, outcome: done}}\n"));
    let yaml = format!(
        "id: {id}\nversion: 1\nintents: [{id}]\nlanguages: [en]\nstart: w0\nnodes:\n{nodes}"
    );
    json!({ "id": id, "files": {
        "workflow.yaml": yaml,
        "work.rhai": "for i in 0..200 {\n  let s = \"\";\n  s.pad(60000, 'y');\n}\n",
        "input.schema.json": "{\"type\": \"object\"}",
    }})
}

#[test]
fn surface_a_case_running_node_after_node_is_stopped_at_the_segment_budget() {
    let s = Server::start_with(|c| {
        c.rules.max_run_ms = 10_000;
        c.rules.max_segment_ms = 500;
    });
    let r = s.call(
        "POST",
        "/v1/workflows",
        Some(Role::Author),
        Some(&long_chain("long_chain", 40)),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let request = json!({ "channel": "form", "language": "en", "text": "x", "fields": {},
        "metadata": { "intent": "long_chain" } });
    let r = s.call("POST", "/v1/requests", Some(Role::Admin), Some(&request));
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["case_id"].as_str().unwrap().to_string();
    let case = s.wait_case(&id, |c| {
        ["completed", "failed"].contains(&c["status"].as_str().unwrap_or(""))
    });
    assert_eq!(case["status"], "failed", "{case}");
    let error = case["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("500 ms (limit rules.max_segment_ms)"),
        "{case}"
    );
}
