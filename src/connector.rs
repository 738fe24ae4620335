//! The HTTP connector for `call` nodes: one attempt is one `POST
//! {base_url}/{connector}/{operation}` with the call's JSON payload and its
//! `Idempotency-Key`, so the back office can drop a repeated attempt or a replay after a
//! crash. Timeouts, transport failures and `5xx` are retryable (the workflow's retry
//! policy decides whether and when to try again); `4xx` and answers that are not JSON are
//! not. Calls run on worker threads, so a small blocking client is enough.
//!
//! Outbound traffic goes to the one configured base URL, over HTTP or HTTPS (rustls). An
//! HTTPS server's certificate is always verified: against the bundled Mozilla roots
//! (webpki-roots; the host's certificate store is not read), or, when a `ca_file` is
//! configured, against its certificates only (a site's internal PKI). There is no way to
//! turn verification off, and a failed handshake is a failed attempt, never a fallback
//! to plain HTTP. The `reply_to` webhooks use the same client ([`agent_trusting`]).

use std::time::Duration;

use casegraph_engine::exec::{CallError, CallRequest, Connector};
use serde_json::Value;
use ureq::tls::TlsConfig;

/// The certificates an agent trusts; read with the configuration that names their file.
pub use crate::config::Roots;

/// Calls a back-office gateway over HTTP.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    base_url: String,
    agent: ureq::Agent,
}

/// A blocking HTTP client that answers every status as a response (not an error), gives
/// up after `timeout` in all, and trusts the bundled roots for HTTPS.
pub fn agent(timeout: Duration) -> ureq::Agent {
    agent_trusting(timeout, &Roots::bundled())
}

/// [`agent`], trusting `roots` for HTTPS.
pub fn agent_trusting(timeout: Duration, roots: &Roots) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots.certs().clone())
                .build(),
        )
        .build()
        .into()
}

/// [`agent_trusting`] that resolves host names with `resolver` and ignores proxies from
/// the environment: for `reply_to` calls, whose resolver checks every address it returns
/// (`webhook::target`), which a proxy would bypass.
pub fn agent_resolving(
    timeout: Duration,
    roots: &Roots,
    resolver: impl ureq::unversioned::resolver::Resolver,
) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots.certs().clone())
                .build(),
        )
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        resolver,
    )
}

impl HttpConnector {
    pub fn new(base_url: &str, timeout: Duration, roots: &Roots) -> HttpConnector {
        HttpConnector {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent: agent_trusting(timeout, roots),
        }
    }

    fn url(&self, r: &CallRequest) -> String {
        format!("{}/{}/{}", self.base_url, r.connector, r.operation)
    }
}

fn failure(retryable: bool, message: String) -> CallError {
    CallError { retryable, message }
}

impl Connector for HttpConnector {
    fn call(&self, r: &CallRequest) -> Result<Value, CallError> {
        let body = serde_json::to_vec(&r.payload)
            .map_err(|e| failure(false, format!("payload is not serializable: {e}")))?;
        let started = std::time::Instant::now();
        let result = self
            .agent
            .post(&self.url(r))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header("Idempotency-Key", &r.idempotency_key)
            .send(&body[..]);
        let mut response = match result {
            Ok(resp) => resp,
            // Connection refused, reset, DNS, timeout: the system may be back later.
            Err(e) => {
                tracing::warn!(case = %r.case_id, node = %r.node, attempt = r.attempt,
                    "connector {}.{} unreachable: {e}", r.connector, r.operation);
                return Err(failure(
                    true,
                    format!("{}.{}: {e}", r.connector, r.operation),
                ));
            }
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        tracing::debug!(case = %r.case_id, node = %r.node, status, elapsed_ms = started.elapsed().as_millis() as u64,
            "connector {}.{}", r.connector, r.operation);
        match status {
            200..=299 => {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).map_err(|e| {
                    failure(
                        false,
                        format!(
                            "{}.{} answered {status} with a body that is not JSON: {e}",
                            r.connector, r.operation
                        ),
                    )
                })
            }
            // Too many requests and server errors are worth another attempt.
            429 | 500..=599 => Err(failure(
                true,
                format!("{}.{} answered {status}", r.connector, r.operation),
            )),
            // The answer's body is not repeated: it may hold personal data, and this
            // message reaches the case record and the log.
            _ => Err(failure(
                false,
                format!(
                    "{}.{} refused the call with {status}",
                    r.connector, r.operation
                ),
            )),
        }
    }
}
