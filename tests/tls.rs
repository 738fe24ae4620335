//! HTTPS on the listener: a client that trusts the box's certificate gets answers; a plain
//! HTTP client gets none and the server keeps serving; a bad key path stops the start with
//! the configuration key named.
//!
//! HTTPS on outbound calls, with the box's own TLS listener as the far end: the connector's
//! client trusting the test certificate as its site CA gets through; with the bundled
//! Mozilla roots the same call fails on the certificate; a bad `connectors.ca_file` stops
//! the start naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casegraph::config::TlsOptions;
use casegraph::connector::{self, HttpConnector, Roots};
use casegraph_engine::exec::{CallRequest, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

fn tls_files() -> TlsOptions {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    TlsOptions {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

fn connector(cert: &PathBuf) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 GET over TLS; returns the raw response.
async fn https_get(addr: &str, path: &str, cert: &PathBuf) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector(cert).connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn the_box_serves_https_with_its_certificate() {
    let files = tls_files();
    let server = support::Server::start_tls(|c| c.server.tls = Some(tls_files()));
    let addr = server.base.trim_start_matches("https://").to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A plain-HTTP client gets no answer from the TLS port...
        let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
        // ...and the server goes on serving clients that speak TLS.
        let answer = https_get(&addr, "/healthz", &files.cert).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = https_get(&addr, "/v1/cases/c-none", &files.cert).await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "auth still applies: {answer}"
        );
    });
}

#[test]
fn a_missing_key_stops_the_start_naming_the_setting() {
    let data = tempfile::tempdir().unwrap();
    let mut config = support::config(data.path());
    config.server.tls = Some(TlsOptions {
        key: data.path().join("nope.pem"),
        ..tls_files()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            casegraph::serve::run(config, listener, std::future::pending()).await
        })
        .unwrap_err();
    assert!(err.to_string().contains("server.tls.key"), "{err:#}");
    assert!(
        !data.path().join("casegraph.redb").exists(),
        "nothing was opened"
    );
}

/// Waits until the TLS server answers `/healthz` through `agent`.
fn wait_healthy(agent: &ureq::Agent, base: &str) -> ureq::http::Response<ureq::Body> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match agent.get(&format!("{base}/healthz")).call() {
            Ok(r) => return r,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no answer: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn call_request() -> CallRequest {
    CallRequest {
        case_id: "c-tls".into(),
        node: "lookup".into(),
        connector: "crm".into(),
        operation: "lookup".into(),
        payload: serde_json::json!({}),
        idempotency_key: "c-tls:lookup:1".into(),
        attempt: 1,
        effect: casegraph_engine::exec::Effect::Read,
    }
}

#[test]
fn outbound_calls_trust_the_site_ca_and_only_it() {
    let files = tls_files();
    let server = support::Server::start_tls(|c| c.server.tls = Some(tls_files()));
    let timeout = Duration::from_secs(10);
    let site = Roots::load(Some(&files.cert), "connectors.ca_file").unwrap();

    // With the site CA the call goes through, verified.
    let trusting = connector::agent_trusting(timeout, &site);
    let answer = wait_healthy(&trusting, &server.base);
    assert_eq!(answer.status(), 200);
    // The connector itself reaches the server: its 401 (no token) is an answer, not a
    // transport failure.
    let err = HttpConnector::new(&server.base, timeout, &site)
        .call(&call_request())
        .unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert!(err.message.contains("refused the call with 4"), "{err:?}");

    // The bundled roots do not know the box's certificate: the handshake fails, nothing
    // is sent in plain text instead.
    let err = connector::agent(timeout)
        .get(&format!("{}/healthz", server.base))
        .call()
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "a certificate error: {err}"
    );
    let err = HttpConnector::new(&server.base, timeout, &Roots::bundled())
        .call(&call_request())
        .unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(err.message.contains("certificate"), "{err:?}");
}

#[test]
fn a_bad_ca_file_stops_the_start_naming_the_setting() {
    let data = tempfile::tempdir().unwrap();
    let not_pem = data.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let cases = [
        ("connectors.ca_file", data.path().join("missing.pem")),
        ("connectors.ca_file", not_pem.clone()),
        // A key is PEM, but no certificate.
        ("webhooks.ca_file", tls_files().key),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (key, file) in cases {
        let mut config = support::config(data.path());
        match key {
            "connectors.ca_file" => {
                config.connectors.base_url = Some("https://127.0.0.1:9".into());
                config.connectors.ca_file = Some(file);
            }
            _ => config.webhooks.ca_file = Some(file),
        }
        let err = rt
            .block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                casegraph::serve::run(config, listener, std::future::pending()).await
            })
            .unwrap_err();
        assert!(err.to_string().starts_with(key), "{key}: {err:#}");
    }
    assert!(
        !data.path().join("casegraph.redb").exists(),
        "nothing was opened"
    );
}
