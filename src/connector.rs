//! The HTTP connector for `call` nodes: one attempt is one `POST
//! {base_url}/{connector}/{operation}` with the call's JSON payload and its
//! `Idempotency-Key`, so the back office can drop a repeated attempt or a replay after a
//! crash. Timeouts, transport failures and `5xx` are retryable (the workflow's retry
//! policy decides whether and when to try again); `4xx` and answers that are not JSON are
//! not. Calls run on worker threads, so a small blocking client is enough.
//!
//! Outbound traffic is plain HTTP to the one configured base URL (TLS is not built in; put
//! a TLS-terminating proxy in front of a remote back office).

use std::time::Duration;

use casegraph_engine::exec::{CallError, CallRequest, Connector};
use serde_json::Value;

/// Calls a back-office gateway over HTTP.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    base_url: String,
    agent: ureq::Agent,
}

/// A blocking HTTP client that answers every status as a response (not an error) and gives
/// up after `timeout` in all.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

impl HttpConnector {
    pub fn new(base_url: &str, timeout: Duration) -> HttpConnector {
        HttpConnector {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent: agent(timeout),
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
