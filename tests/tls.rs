//! HTTPS on the listener: a client that trusts the box's certificate gets answers; a plain
//! HTTP client gets none and the server keeps serving; a bad key path stops the start with
//! the configuration key named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casegraph::config::TlsOptions;
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
