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

use std::net::SocketAddr;
use std::time::Duration;

use casegraph_engine::exec::{CallError, CallRequest, Connector};
use serde_json::Value;
use ureq::tls::TlsConfig;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

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
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots.certs().clone())
                .build(),
        )
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        Literal::default(),
    )
}

/// A resolver that takes an address written in the URL as it is, and asks DNS (ureq's
/// own resolver) only for a name. ureq resolves before every call, even on a pooled
/// connection, and under a timeout its resolver starts a thread for each lookup so that
/// it can give up: for a back office configured by address that was one thread started
/// and ended per call, for nothing.
#[derive(Debug, Default)]
pub struct Literal {
    names: DefaultResolver,
}

impl Resolver for Literal {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // `host:port` as ureq's resolver would look it up (the scheme's default port when
        // none is written; an IPv6 address in brackets), which parses as an address only
        // when it is one.
        let literal = uri
            .scheme()
            .zip(uri.authority())
            .and_then(|(scheme, authority)| DefaultResolver::host_and_port(scheme, authority))
            .and_then(|host_port| host_port.parse::<SocketAddr>().ok());
        match literal {
            Some(addr) => {
                let mut found = self.empty();
                found.push(addr);
                Ok(found)
            }
            None => self.names.resolve(uri, config, timeout),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// No time left to resolve: ureq's own resolver gives up (its lookup thread cannot
    /// answer within zero), so a literal that resolves here never went to it.
    fn no_time() -> NextTimeout {
        NextTimeout {
            after: std::time::Duration::ZERO.into(),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        }
    }

    fn resolve(url: &str, timeout: NextTimeout) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: ureq::http::Uri = url.parse().expect("uri");
        let found = Literal::default().resolve(&uri, &ureq::config::Config::default(), timeout)?;
        Ok(found.iter().copied().collect())
    }

    #[test]
    fn an_address_in_the_url_is_taken_as_it_is_without_a_lookup() {
        let cases = [
            ("http://10.1.2.3:8080/crm/get", "10.1.2.3:8080"),
            ("http://192.168.0.7/crm/get", "192.168.0.7:80"),
            ("https://203.0.113.9/hook", "203.0.113.9:443"),
            ("https://[2001:db8::1]:8443/hook", "[2001:db8::1]:8443"),
        ];
        for (url, addr) in cases {
            let found = resolve(url, no_time()).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                found,
                vec![addr.parse::<SocketAddr>().expect("addr")],
                "{url}"
            );
        }
    }

    #[test]
    fn a_name_is_still_looked_up_within_its_timeout() {
        let found = resolve("http://localhost:9/x", NextTimeout::default()).expect("localhost");
        assert!(
            !found.is_empty() && found.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
            "{found:?}"
        );
        assert!(
            resolve("http://localhost:9/x", no_time()).is_err(),
            "a name with no time left to look it up is not found"
        );
    }
}
