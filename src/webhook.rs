//! `reply_to` notifications: when a case ends, its outcome is POSTed to the URL the
//! submitter gave. Only hosts listed in `webhooks.allowed_hosts` are called (none by
//! default), so a request cannot make the box reach arbitrary addresses.
//!
//! Notifications are best effort, sent from one background thread fed by a bounded queue:
//! a slow receiver never holds up a case worker. Each gets `max_attempts` tries with
//! exponential backoff and jitter and carries the case id as `Idempotency-Key`. The case's
//! outcome stays readable at `GET /v1/cases/{id}` whatever happens to the notification.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::config::WebhookOptions;

struct Job {
    url: String,
    case_id: String,
    body: Value,
}

/// Sends notifications in the background.
#[derive(Debug, Clone)]
pub struct Notifier {
    allowed: Vec<String>,
    jobs: Option<mpsc::SyncSender<Job>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("case_id", &self.case_id)
            .finish()
    }
}

/// `host` and `host:port` of an http(s) URL.
fn authority(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let auth = rest.split(['/', '?', '#']).next()?;
    if auth.is_empty() || auth.contains('@') {
        return None;
    }
    let host = auth.rsplit_once(':').map_or(auth, |(h, _)| h);
    Some((host, auth))
}

impl Notifier {
    /// Starts the sender thread (none if no host is allowed).
    pub fn start(options: &WebhookOptions) -> Notifier {
        if options.allowed_hosts.is_empty() {
            return Notifier {
                allowed: Vec::new(),
                jobs: None,
            };
        }
        let (tx, rx) = mpsc::sync_channel::<Job>(1024);
        let agent = crate::connector::agent(options.timeout);
        let attempts = options.max_attempts;
        let spawned = std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                for job in rx {
                    send(&agent, &job, attempts);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the webhook thread; no notifications: {e}");
        }
        Notifier {
            allowed: options.allowed_hosts.clone(),
            jobs: Some(tx),
        }
    }

    /// Whether `url` may be called.
    pub fn allows(&self, url: &str) -> bool {
        authority(url)
            .is_some_and(|(host, auth)| self.allowed.iter().any(|a| a == host || a == auth))
    }

    /// Queues a notification; drops it (logged) if the URL is not allowed or the queue is full.
    pub fn notify(&self, url: &str, case_id: &str, body: Value) {
        let Some(jobs) = &self.jobs else { return };
        if !self.allows(url) {
            tracing::warn!(case = %case_id, "reply_to host is not in webhooks.allowed_hosts; not notified");
            return;
        }
        let job = Job {
            url: url.to_string(),
            case_id: case_id.to_string(),
            body,
        };
        if jobs.try_send(job).is_err() {
            tracing::warn!(case = %case_id, "webhook queue full; notification dropped");
        }
    }
}

fn send(agent: &ureq::Agent, job: &Job, attempts: u32) {
    let body = job.body.to_string();
    for attempt in 1..=attempts {
        let result = agent
            .post(&job.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &job.case_id)
            .send(body.as_bytes());
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(case = %job.case_id, "requester notified");
                return;
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::warn!(case = %job.case_id, status = r.status().as_u16(), "reply_to refused the notification");
                return;
            }
            Ok(r) => {
                tracing::warn!(case = %job.case_id, attempt, status = r.status().as_u16(), "reply_to failed")
            }
            Err(e) => tracing::warn!(case = %job.case_id, attempt, "reply_to unreachable: {e}"),
        }
        if attempt < attempts {
            std::thread::sleep(backoff(attempt));
        }
    }
}

/// 500 ms · 2^(attempt-1), plus up to half of that again at random.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let mut r = [0u8; 2];
    let jitter = match getrandom::fill(&mut r) {
        Ok(()) => u64::from(u16::from_le_bytes(r)) % (base / 2 + 1),
        Err(_) => 0,
    };
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_hosts_are_allowed() {
        let n = Notifier {
            allowed: vec!["crm.local".into(), "127.0.0.1:9000".into()],
            jobs: None,
        };
        assert!(n.allows("http://crm.local/hooks/case"));
        assert!(n.allows("https://crm.local:8443/x"));
        assert!(n.allows("http://127.0.0.1:9000/x"));
        assert!(!n.allows("http://127.0.0.1:9001/x"));
        assert!(!n.allows("http://evil.example@crm.local/x"));
        assert!(!n.allows("ftp://crm.local/x"));
        assert!(backoff(3) >= Duration::from_millis(2000));
    }
}
