//! `reply_to` notifications: when a case ends, its outcome is POSTed to the URL the
//! submitter gave. Only hosts and ports listed in `webhooks.allowed_hosts` are called (none
//! by default), only at public addresses unless configured otherwise, so a request cannot
//! make the box reach arbitrary addresses ([`target`]).
//!
//! Delivery is at least once. The segment that makes a case final stores its notification
//! (`Table::Notifications`, case id → URL) in the same commit; this module sends stored
//! notifications and deletes each once the receiver answered 2xx, or refused it for good
//! (4xx other than 429), or it can no longer be sent (host no longer allowed, case erased).
//! Anything else leaves it stored. The body is built from the case at send time, so every
//! attempt, before or after a restart, carries the same body and the case id as
//! `Idempotency-Key`, for the receiver to deduplicate.
//!
//! One background thread sends: a slow receiver never holds up a case worker. It learns of
//! new notifications from a bounded queue ([`Notifier::notify`], after a final segment) and
//! from a sweep of the table at start-up (recovery) and every [`SWEEP`]; a full queue loses
//! nothing, the sweep finds the entry. Retries: exponential backoff with jitter
//! (0.5 s, 1 s, 2 s … plus up to half again), without blocking other notifications; after
//! `webhooks.max_attempts` failures a warning is logged and the notification stays stored,
//! retried with the delay growing to at most [`MAX_DELAY`]. The case's outcome stays
//! readable at `GET /v1/cases/{id}` whatever happens to the notification.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use casegraph_engine::runner::Runner;
use casegraph_engine::store::{CaseRecord, PersonalRecord};
use serde_json::{Value, json};

use crate::config::WebhookOptions;

pub mod target;

pub use target::{Policy, Refusal};

/// How often the table is swept for notifications the sender does not know of.
pub const SWEEP: Duration = Duration::from_secs(30);
/// The longest wait between two attempts of a failing notification (before jitter).
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// Notifications the sender keeps in memory at once; more stay in the table for later
/// sweeps, so memory stays bounded however long a receiver is down.
const MAX_TRACKED: usize = 4096;
/// Entries one sweep reads.
const SWEEP_BATCH: usize = 512;

/// The notification body for a final case, or for a case that asks the customer a
/// question (`status: waiting`, `waiting.kind: answer`): the reply is then the question, and
/// `reference` what the customer quotes when answering on any channel.
pub fn body(rec: &CaseRecord, personal: Option<&PersonalRecord>) -> Value {
    let waiting = rec.state.as_ref().and_then(|s| match &s.waiting {
        Some(casegraph_engine::exec::Waiting::Answer { node, due, .. }) => {
            Some(json!({ "kind": "answer", "node": node, "due": due }))
        }
        _ => None,
    });
    json!({
        "case_id": rec.id,
        "reference": casegraph_engine::reference::of(&rec.id),
        "status": rec.status.as_str(),
        "outcome": rec.state.as_ref().and_then(|s| s.outcome.clone()),
        "waiting": waiting,
        "reply": personal.and_then(|p| p.reply_text.clone()),
        "updated_at": rec.updated_at,
    })
}

/// Sends stored notifications in the background. Clones share the sender thread.
#[derive(Debug, Clone)]
pub struct Notifier {
    policy: Policy,
    jobs: mpsc::SyncSender<String>,
    thread: Arc<Thread>,
}

#[derive(Debug)]
struct Thread {
    stop: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Notifier {
    /// Starts the sender thread, which first sweeps the notifications left from the last run.
    /// The thread holds the runner weakly: stopping the service is not delayed by it.
    /// `roots` are what an `https://` receiver's certificate is verified against.
    pub fn start(
        options: &WebhookOptions,
        roots: &crate::config::Roots,
        runner: &Arc<Runner>,
    ) -> Notifier {
        let (tx, rx) = mpsc::sync_channel::<String>(1024);
        let policy = Policy::new(&options.allowed_hosts, options.allow_private_addresses);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = Sender {
            runner: Arc::downgrade(runner),
            agent: agent(options, roots, &policy),
            policy: policy.clone(),
            round: options.max_attempts.max(1),
            rx,
            stop: stop.clone(),
            failures: HashMap::new(),
            due: BinaryHeap::new(),
            cursor: None,
        };
        let handle = std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || sender.run());
        let handle = match handle {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(
                    "cannot start the webhook thread; notifications stay stored until the next start: {e}"
                );
                None
            }
        };
        Notifier {
            policy,
            jobs: tx,
            thread: Arc::new(Thread {
                stop,
                handle: Mutex::new(handle),
            }),
        }
    }

    /// Whether `url` may be called: listed, and resolving to addresses the box may
    /// connect to. Blocks on a DNS lookup.
    pub fn check(&self, url: &str) -> Result<(), Refusal> {
        self.policy.check(url)
    }

    /// Tells the sender that `case_id` has a stored notification. Never blocks: with the
    /// queue full the entry waits in the table for the next sweep.
    pub fn notify(&self, case_id: &str) {
        if self.jobs.try_send(case_id.to_string()).is_err() {
            tracing::debug!(case = %case_id, "webhook queue full; the next sweep sends it");
        }
    }

    /// Stops the sender after the attempt in hand (bounded by `webhooks.timeout`) and waits
    /// for it. What was not delivered stays stored for the next start.
    pub fn stop(&self) {
        self.thread.stop.store(true, Ordering::Relaxed);
        let handle = self
            .thread
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The sender thread's state.
struct Sender {
    runner: Weak<Runner>,
    agent: ureq::Agent,
    policy: Policy,
    /// `webhooks.max_attempts`: failures after which a warning is logged (and again after
    /// each further round as many).
    round: u32,
    rx: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    /// Notifications the sender knows of → failed attempts so far. Each has one entry in
    /// `due`.
    failures: HashMap<String, u32>,
    /// When each known notification is tried next.
    due: BinaryHeap<Reverse<(Instant, String)>>,
    /// Where the next sweep continues (after this case id); `None`: from the start.
    cursor: Option<String>,
}

/// What became of one attempt.
enum Outcome {
    /// 2xx, a definitive refusal, or nothing left to send: the entry is deleted, unless a
    /// newer one (stored at another time, e.g. the final state after a question) took its
    /// place meanwhile. `None`: whatever entry is there goes.
    Done(Option<jiff::Timestamp>),
    /// Try again later; the entry stays.
    Retry,
}

impl Sender {
    fn run(mut self) {
        let mut next_sweep = Instant::now();
        while !self.stopping() {
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep();
                next_sweep = now + SWEEP;
            }
            while let Some(Reverse((at, _))) = self.due.peek()
                && *at <= Instant::now()
                && !self.stopping()
            {
                let Some(Reverse((_, id))) = self.due.pop() else {
                    break;
                };
                self.attempt(id);
            }
            let next_due = self.due.peek().map_or(next_sweep, |Reverse((at, _))| *at);
            let wait = next_due
                .min(next_sweep)
                .saturating_duration_since(Instant::now())
                // Stop is checked this often.
                .min(Duration::from_millis(200));
            match self.rx.recv_timeout(wait) {
                Ok(id) => {
                    self.track(id);
                    while let Ok(id) = self.rx.try_recv() {
                        self.track(id);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Schedules a notification now, unless it is known already or memory is full (then it
    /// stays in the table for a later sweep). Returns false when full.
    fn track(&mut self, id: String) -> bool {
        if self.failures.contains_key(&id) {
            return true;
        }
        if self.failures.len() >= MAX_TRACKED {
            return false;
        }
        self.failures.insert(id.clone(), 0);
        self.due.push(Reverse((Instant::now(), id)));
        true
    }

    /// Reads the next stored notifications and schedules those the sender does not know of.
    fn sweep(&mut self) {
        let Some(runner) = self.runner.upgrade() else {
            return;
        };
        let rows = match runner.notifications(self.cursor.as_deref(), SWEEP_BATCH) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("cannot read stored notifications: {e}");
                return;
            }
        };
        drop(runner);
        let complete = rows.len() < SWEEP_BATCH;
        let mut last = None;
        for (id, _) in rows {
            if !self.track(id.clone()) {
                // Memory is full: continue from here next time.
                self.cursor = last;
                return;
            }
            last = Some(id);
        }
        self.cursor = if complete { None } else { last };
    }

    /// One attempt at a notification; reschedules it or forgets it.
    fn attempt(&mut self, id: String) {
        let outcome = self.deliver(&id);
        if let Outcome::Done(since) = outcome {
            let done = self
                .runner
                .upgrade()
                .map(|r| r.notification_sent(&id, since).map_err(|e| e.to_string()));
            match done {
                Some(Ok(())) | None => {
                    self.failures.remove(&id);
                    return;
                }
                Some(Err(e)) => {
                    tracing::error!(case = %id, "cannot delete the sent notification: {e}")
                }
            }
        }
        let failures = self.failures.entry(id.clone()).or_insert(0);
        *failures += 1;
        let n = *failures;
        if n.is_multiple_of(self.round) {
            tracing::warn!(case = %id, attempts = n, "reply_to still failing; the notification stays stored and is retried");
        }
        self.due.push(Reverse((Instant::now() + backoff(n), id)));
    }

    fn deliver(&self, id: &str) -> Outcome {
        let Some(runner) = self.runner.upgrade() else {
            return Outcome::Retry;
        };
        let (url, body, key, since) = match prepare(&runner, &self.policy, id) {
            Ok(Some(job)) => job,
            Ok(None) => return Outcome::Done(None),
            Err(e) => {
                tracing::error!(case = %id, "cannot read the notification: {e}");
                return Outcome::Retry;
            }
        };
        // Not held during the call: stopping the service does not wait for the runner.
        drop(runner);
        let result = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &key)
            .send(body.to_string().as_bytes());
        match result {
            Ok(r) if r.status().is_success() => {
                tracing::info!(case = %id, "requester notified");
                Outcome::Done(Some(since))
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::warn!(case = %id, status = r.status().as_u16(), "reply_to refused the notification; not sent again");
                Outcome::Done(Some(since))
            }
            Ok(r) => {
                tracing::warn!(case = %id, status = r.status().as_u16(), "reply_to failed");
                Outcome::Retry
            }
            Err(e) => {
                tracing::warn!(case = %id, "reply_to unreachable: {e}");
                Outcome::Retry
            }
        }
    }
}

/// The URL, body, idempotency key and stored time of a stored notification: the key is
/// the case id for a final case (as always), `<case id>:q<millis>` for a question; `None` when there is nothing to send (no
/// entry any more, the case is gone or erased, the host is no longer allowed or no longer
/// resolves to an address the box may call).
fn prepare(
    runner: &Runner,
    policy: &Policy,
    id: &str,
) -> Result<Option<(String, Value, String, jiff::Timestamp)>, casegraph_engine::runner::Error> {
    let Some(n) = runner.notification(id)? else {
        return Ok(None);
    };
    let Some((rec, personal)) = runner.case(id)? else {
        tracing::warn!(case = %id, "notification for a case that is not stored; dropped");
        return Ok(None);
    };
    if rec.erased {
        return Ok(None);
    }
    match policy.check(&n.url) {
        // DNS may be down for a moment: the attempt fails in the resolver and is retried.
        Ok(()) | Err(Refusal::Unresolved) => {}
        Err(why) => {
            tracing::warn!(case = %id, "{why}; notification dropped");
            return Ok(None);
        }
    }
    let key = if rec.status.is_final() {
        id.to_string()
    } else {
        format!("{id}:q{}", n.since.as_millisecond())
    };
    Ok(Some((n.url, body(&rec, personal.as_ref()), key, n.since)))
}

/// The sender's HTTP client: no redirects (a redirect could lead anywhere), no proxy from
/// the environment (the address check must see the receiver's address), and the policy's
/// resolver, so it connects only to checked addresses.
fn agent(options: &WebhookOptions, roots: &crate::config::Roots, policy: &Policy) -> ureq::Agent {
    crate::connector::agent_resolving(options.timeout, roots, policy.resolver())
}

/// Wait before the next attempt after `failures` failed ones: 500 ms · 2^(failures-1), at
/// most [`MAX_DELAY`], plus up to half of that again at random.
fn backoff(failures: u32) -> Duration {
    let cap = MAX_DELAY.as_millis() as u64;
    let base = 500u64
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(cap);
    let mut r = [0u8; 4];
    let jitter = match getrandom::fill(&mut r) {
        Ok(()) => u64::from(u32::from_le_bytes(r)) % (base / 2 + 1),
        Err(_) => 0,
    };
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(750));
        assert!(backoff(3) >= Duration::from_millis(2000));
        for n in [20, 40, u32::MAX] {
            let d = backoff(n);
            assert!(d >= MAX_DELAY && d <= MAX_DELAY * 3 / 2, "{n}: {d:?}");
        }
    }
}
