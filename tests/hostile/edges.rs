//! Hostile input at the HTTP edges: oversized parts of a request body, oversized or
//! trickled headers, bodies never finished, `reply_to` aimed at the box's own network, an
//! audit endpoint asked again and again, console searches over a large store, and the modes
//! of what the box writes to disk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::Server;

fn form(fields: Value) -> Value {
    json!({ "channel": "form", "language": "en", "text": "please help", "fields": fields })
}

fn refused_naming(s: &Server, body: &Value, field: &str) {
    let r = s.call("POST", "/v1/requests", Some(Role::Submitter), Some(body));
    r.assert_error(422, "invalid_request");
    assert_eq!(r.json["error"]["details"]["field"], field, "{}", r.text);
}

#[test]
fn form_fields_cannot_get_around_the_text_limit() {
    let s = Server::start();
    // One 200 KB field (the body limit is raised so that the field, not the body, is what
    // is refused).
    let s_big = Server::start_with(|c| c.limits.body_limit_bytes = 1024 * 1024);
    refused_naming(
        &s_big,
        &form(json!({ "reason": "x".repeat(200_000) })),
        "fields.reason",
    );
    // Many fields each under the per-field limit, together over the text limit.
    let many: serde_json::Map<String, Value> = (0..10)
        .map(|i| (format!("f{i}"), json!("y".repeat(4_000))))
        .collect();
    let r = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Submitter),
        Some(&form(Value::Object(many))),
    );
    r.assert_error(422, "invalid_request");
    assert!(
        r.json["error"]["details"]["field"]
            .as_str()
            .unwrap()
            .starts_with("fields."),
        "{}",
        r.text
    );
    // Too many fields, nested values, control characters in names.
    let lots: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("f{i}"), json!(i))).collect();
    refused_naming(&s, &form(Value::Object(lots)), "fields");
    refused_naming(&s, &form(json!({ "a": { "b": ["c"] } })), "fields.a");
    refused_naming(&s, &form(json!({ "a\u{0}b": "c" })), "fields");
    // A normal form still goes through.
    let ok = s.call(
        "POST",
        "/v1/requests",
        Some(Role::Submitter),
        Some(&form(
            json!({ "amount": "25.00", "ordered_on": "2026-11-18" }),
        )),
    );
    assert_eq!(ok.status, 202, "{}", ok.text);
}

#[test]
fn metadata_and_reply_to_are_bounded() {
    let s = Server::start();
    let mut body = form(json!({}));
    body["metadata"] = json!({ "note": "n".repeat(10_000) });
    refused_naming(&s, &body, "metadata");
    body["metadata"] = json!({ "a": { "b": { "c": { "d": { "e": 1 } } } } });
    refused_naming(&s, &body, "metadata");
    let mut body = form(json!({}));
    body["reply_to"] = json!("https://crm.example/\r\nX-Injected: 1");
    refused_naming(&s, &body, "reply_to");
    body["reply_to"] = json!(format!("https://crm.example/{}", "a".repeat(5_000)));
    refused_naming(&s, &body, "reply_to");
    // The idempotency key is bounded too.
    let r = s.raw(
        "POST",
        "/v1/requests",
        Some(s.token(Role::Submitter)),
        Some(("application/json", form(json!({})).to_string().into_bytes())),
        &[("Idempotency-Key", &"k".repeat(201))],
    );
    r.assert_error(400, "invalid_idempotency_key");
}

/// What a raw connection got back before the server closed it (or `deadline` passed):
/// the bytes read and whether the server closed the connection.
fn read_until_closed(conn: &mut TcpStream, deadline: Duration) -> (String, bool) {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match conn.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset by the server: closed too.
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://")).unwrap()
}

#[test]
fn oversized_headers_are_refused_with_431() {
    let s = Server::start();
    for (what, headers) in [
        (
            "one 200 KB header",
            format!("X-Big: {}\r\n", "a".repeat(200_000)),
        ),
        (
            "500 small headers",
            (0..500).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
    ] {
        let mut conn = connect(&s);
        let request = format!("GET /healthz HTTP/1.1\r\nHost: box\r\n{headers}\r\n");
        // The server may close before the whole head is written; that is an answer too.
        let _ = conn.write_all(request.as_bytes());
        let (got, closed) = read_until_closed(&mut conn, Duration::from_secs(10));
        assert!(closed, "{what}: the connection stayed open");
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 431"),
            "{what}: {got}"
        );
    }
    // Ordinary headers still work.
    let r = s.raw("GET", "/healthz", None, None, &[("X-Fine", "yes")]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_trickling_its_headers_is_cut_off() {
    let s = Server::start_with(|c| c.server.header_read_timeout = Duration::from_millis(800));
    let mut conn = connect(&s);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: box\r\n")
        .unwrap();
    // One byte every 100 ms, never the blank line that ends the head.
    let until = Instant::now() + Duration::from_secs(10);
    let mut closed = false;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        if conn.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        conn.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut b = [0u8; 64];
        if matches!(conn.read(&mut b), Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling client held its connection for 10 s");
    // An idle kept-alive connection is closed after the same time.
    let mut idle = connect(&s);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: box\r\n\r\n")
        .unwrap();
    let (got, closed) = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "an idle connection stayed open");
}

#[test]
fn a_body_that_never_finishes_is_answered_within_the_request_timeout() {
    let s = Server::start_with(|c| {
        c.server.request_timeout = Duration::from_secs(1);
        c.limits.queue_wait = Duration::from_millis(500);
    });
    let mut conn = connect(&s);
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: box\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"channel\":",
        s.token(Role::Submitter)
    );
    conn.write_all(head.as_bytes()).unwrap();
    let (got, _) = read_until_closed(&mut conn, Duration::from_secs(10));
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("\"timeout\""), "{got}");
}

#[test]
fn every_post_route_has_a_body_limit() {
    let s = Server::start_with(|c| c.limits.body_limit_bytes = 4096);
    let big = json!({ "text": "x".repeat(8192) }).to_string().into_bytes();
    // As admin, who may call every route: the limit, not the role, is what answers.
    // (`POST /v1/console/workflows/{id}/fixtures` reads no body.)
    for path in [
        "/v1/requests",
        "/v1/classify",
        "/v1/tasks/t-1/complete",
        "/v1/workflows",
        "/v1/tokens",
        "/v1/console/dry-run",
        "/v1/console/workflows/check",
    ] {
        let r = s.raw(
            "POST",
            path,
            Some(s.token(Role::Admin)),
            Some(("application/json", big.clone())),
            &[],
        );
        assert_eq!(r.status, 413, "{path}: {}", r.text);
    }
}

#[cfg(unix)]
fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    use std::os::unix::fs::PermissionsExt as _;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        out.push((p.clone(), m.permissions().mode() & 0o777, m.is_dir()));
        if m.is_dir() {
            walk(&p, out);
        }
    }
}

fn is_final(c: &Value) -> bool {
    matches!(
        c["status"].as_str(),
        Some("completed" | "failed" | "escalated" | "waiting")
    )
}

#[cfg(unix)]
#[test]
fn the_data_directory_and_everything_in_it_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = Server::start_with(|c| {
        // As a shell with umask 022 leaves them.
        let mut found = Vec::new();
        walk(&c.data_dir, &mut found);
        for (p, _, dir) in found {
            let mode = if dir { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::set_permissions(&c.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    let id = s.submit(&json!({
        "channel": "chat", "language": "en", "customer_id": "C-1002399",
        "text": "Please refund the 12.00 EUR you charged twice",
        "metadata": {"intent": "request_refund", "confidence": 0.95}
    }));
    s.wait_case(&id, is_final);
    let root = std::fs::metadata(s.data.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(root, 0o700, "the data directory");
    let mut found = Vec::new();
    walk(s.data.path(), &mut found);
    assert!(found.len() >= 3, "{found:?}");
    for (p, mode, dir) in found {
        let want = if dir { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        assert_eq!(mode & want, want, "{} is {mode:o}", p.display());
    }
}

#[test]
fn reply_to_may_not_point_at_the_box_s_own_network_or_other_ports() {
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    hook.set_nonblocking(true).unwrap();
    let port = hook.local_addr().unwrap().port();
    let s = Server::start_with(move |c| {
        c.webhooks.allowed_hosts = vec![format!("localhost:{port}"), "crm.example".into()]
    });
    let submit = |url: String| {
        let mut body = form(json!({}));
        body["reply_to"] = json!(url);
        s.call("POST", "/v1/requests", Some(Role::Submitter), Some(&body))
    };
    // A listed name that resolves to 127.0.0.1.
    let r = submit(format!("http://localhost:{port}/hooks/case"));
    r.assert_error(422, "reply_to_not_allowed");
    assert!(r.text.contains("non-public"), "{}", r.text);
    assert_eq!(r.json["error"]["details"]["field"], "reply_to");
    // A listed host at ports the list does not name (an entry without a port means 443).
    for url in ["https://crm.example:22/x", "http://crm.example/x"] {
        let r = submit(url.to_string());
        r.assert_error(422, "reply_to_not_allowed");
        assert!(
            r.text.contains("not in webhooks.allowed_hosts"),
            "{}",
            r.text
        );
    }
    assert!(hook.accept().is_err(), "the box connected to the hook");
    // The operator may allow the site's own network explicitly.
    let open = Server::start_with(move |c| {
        c.webhooks.allowed_hosts = vec![format!("localhost:{port}")];
        c.webhooks.allow_private_addresses = true;
    });
    let mut body = form(json!({}));
    body["reply_to"] = json!(format!("http://localhost:{port}/hooks/case"));
    let r = open.call("POST", "/v1/requests", Some(Role::Submitter), Some(&body));
    assert_eq!(r.status, 202, "{}", r.text);
}

#[test]
fn the_audit_endpoint_verifies_only_what_was_appended_since_it_last_did() {
    let s = Server::start();
    let chat = |text: &str| {
        json!({
            "channel": "chat", "language": "en", "text": text,
            "metadata": {"intent": "request_refund", "confidence": 0.95}
        })
    };
    let first = s.submit(&chat("Please refund the 12.00 EUR you charged twice"));
    s.wait_case(&first, is_final);
    let audit = |id: &str| {
        let r = s.call(
            "GET",
            &format!("/v1/cases/{id}/audit"),
            Some(Role::Auditor),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["chain_verified"], true, "{}", r.text);
        r.json
    };
    let a = audit(&first);
    let total = a["chain"]["records"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(
        a["chain"]["checked"], total,
        "the first verification checks all"
    );
    assert_eq!(
        audit(&first)["chain"]["checked"],
        0,
        "nothing new, nothing checked"
    );
    let second = s.submit(&chat("Please refund the 30.00 EUR for the cancelled order"));
    s.wait_case(&second, is_final);
    let b = audit(&second);
    let now = b["chain"]["records"].as_u64().unwrap();
    assert!(now > total);
    assert_eq!(b["chain"]["checked"].as_u64().unwrap(), now - total);
}

#[test]
fn the_console_case_search_answers_a_bounded_page_and_a_cursor() {
    let s = Server::start();
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(s.submit(&json!({
            "channel": "chat", "language": "en", "text": format!("refund {i} please"),
            "metadata": {"intent": "request_refund", "confidence": 0.95}
        })));
    }
    // Newest first: ids begin with their acceptance time.
    ids.sort();
    ids.reverse();
    let search = |q: &str| {
        s.call(
            "GET",
            &format!("/v1/console/cases?{q}"),
            Some(Role::Auditor),
            None,
        )
    };
    let whole = search("");
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(
        whole.json["cases"].as_array().unwrap().len(),
        50,
        "the default page"
    );
    assert_eq!(whole.json["total"], 60);
    assert_eq!(whole.json["total_exact"], true);
    for too_many in ["limit=201", "limit=1000000", "limit=0"] {
        let r = search(too_many);
        r.assert_error(422, "invalid_request");
        assert_eq!(r.json["error"]["details"]["field"], "limit");
    }
    let mut seen = Vec::new();
    let mut q = "limit=25".to_string();
    for _ in 0..10 {
        let page = search(&q);
        assert_eq!(page.status, 200, "{}", page.text);
        let cases = page.json["cases"].as_array().unwrap();
        assert!(cases.len() <= 25);
        seen.extend(
            cases
                .iter()
                .map(|c| c["case_id"].as_str().unwrap().to_string()),
        );
        match page.json["next"].as_str() {
            Some(next) => q = format!("limit=25&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every case once, newest first");
}
