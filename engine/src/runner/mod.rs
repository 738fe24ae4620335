//! The durable runner: where the executor meets the store.
//!
//! A case moves in *segments*. Each segment starts from a durable [`Trigger`] (accepted
//! request, task completion, timer) stored with the clock time it runs at, and ends in one
//! checkpoint commit: the new case state, its tasks and timers, and its audit records. If
//! the box dies inside a segment, [`Runner::recover`] runs the segment again from its
//! trigger with the same clock time, so it takes the same path; connector calls go through
//! the outbox ([`outbox`]), which records a call that changes the back office durably
//! *before* it is sent and answers a replayed call from its record, so a side effect is
//! sent again only with the same idempotency key.
//!
//! Each trigger has its own file: `start.rs` (classify, route, start the workflow or open
//! a triage task), `task.rs` (accept a completion; resume the case, or route a triage
//! decision), `timer.rs` (arm due timers; resume on one). `segment.rs` holds what they
//! share: the case loaded under its lock, the executor, and the commit of the outcome.
//! A new trigger is a [`Trigger`] variant, one file here with its `on_<trigger>` function,
//! and one arm in [`Runner::process`] (below).
//!
//! This module knows the store and the executor, not HTTP: the service and the CLI drive it.

mod consent;
mod erase;
mod event;
mod fail;
mod locks;
mod message;
mod notify;
mod outbox;
mod proactive;
mod schedule;
mod segment;
use segment::Segmented;
mod start;
mod task;
mod timer;
mod triage;
mod version;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit;
use crate::classify;
use crate::exec::{Clock, Connector, digest};
use crate::intake::Request;
use crate::rules::Rules;
use crate::store::{
    self, Batch, CaseRecord, CaseStatus, IdempotencyEntry, Pending, PersonalRecord, Place, Store,
    Table, TaskEntry, Trigger, key,
};
use crate::workflow::{Catalog, Workflow};

pub use crate::store::OpenQueue;
pub use consent::{Change as ConsentChange, MAX_HISTORY, MAX_PURPOSES, is_purpose};
pub use erase::{Erasure, erase_archived, erase_customer};
pub use event::{CONSENT_CHANGED, EventAccepted, NewEvent};
pub use message::{MAX_MESSAGES, NewMessage, Posted};
pub use schedule::GRACE as SCHEDULE_GRACE;
pub use triage::{SENTIMENT_LABELS, TRIAGE_QUEUE, is_intent_label};

/// A request refused or a failure while handling it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("idempotency key `{key}` was already used for a different request (case `{case_id}`)")]
    KeyReused { key: String, case_id: String },
    #[error("no case `{0}`")]
    NoCase(String),
    #[error("no open task `{0}`")]
    NoTask(String),
    /// The task was open once and is no more: another completion won it, or the case moved
    /// on past it (its SLA passed). Nothing about the case changed.
    #[error("task `{task_id}` is no longer open: {reason} (case `{case_id}` is {})", status.as_str())]
    TaskAlreadyCompleted {
        task_id: String,
        case_id: String,
        status: CaseStatus,
        reason: &'static str,
    },
    #[error("decision `{decision}` is not allowed for task `{task_id}`; allowed: {}", allowed.join(", "))]
    UnknownDecision {
        task_id: String,
        decision: String,
        allowed: Vec<String>,
    },
    #[error("`data.intent` of task `{task_id}` {reason}")]
    InvalidIntent {
        task_id: String,
        reason: String,
        /// The labels the model knows, when it has a fixed set.
        allowed: Vec<String>,
    },
    /// `data.request` of a triage completion corrects what may not be corrected.
    #[error("task `{task_id}`: {reason}")]
    InvalidCorrection { task_id: String, reason: String },
    #[error("case `{0}` is busy with earlier work; try again")]
    Busy(String),
    /// A message for a case that has ended: the customer starts a new request.
    #[error("case `{case_id}` has ended ({}); a new message starts a new request", status.as_str())]
    CaseFinished { case_id: String, status: CaseStatus },
    #[error("case `{case_id}` already holds {limit} messages from the customer")]
    TooManyMessages { case_id: String, limit: usize },
    /// A business event's `(source, id)` was accepted before with another body.
    #[error("event `{id}` from `{event_source}` was already accepted with a different body")]
    EventReused { event_source: String, id: String },
    /// A business event that is well-formed but does not mean anything here.
    #[error("`{attribute}`: {message}")]
    InvalidEvent { attribute: String, message: String },
    #[error("{0}")]
    InvalidConsent(String),
    /// A schedule's occurrence could not be handled (its subjects query failed).
    #[error("{0}")]
    Schedule(String),
    #[error("workflow version {digest} of case `{case_id}` cannot be loaded: {message}")]
    WorkflowVersion {
        case_id: String,
        digest: String,
        message: String,
    },
}

/// A request as accepted at intake (already checked by the caller).
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub request: Request,
    pub idempotency_key: Option<String>,
    /// Token name of the submitter.
    pub submitted_by: Option<String>,
}

/// The answer to an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub case_id: String,
    /// The idempotency key was seen before with the same request: this is that case.
    pub duplicate: bool,
    /// The request quoted the reference of a live case and went to it as this message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The case must be run (queued to the workers): a new case, or a message that is the
    /// answer the case waited for.
    pub run: bool,
}

/// An acceptance up to its commit: answered already (a duplicate, a message to a live
/// case), or a batch to store, with the idempotency key's lock held until it is durable.
enum Acceptance {
    Done(Accepted),
    Store(locks::Guarded<Accepted>),
}

/// Where processing left a case: its status, and whether the last segment stored a
/// notification for the case's `reply_to` (a final case, or a question to the customer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub status: CaseStatus,
    pub notify: bool,
}

/// Drives cases through workflows, durably.
pub struct Runner {
    store: Store,
    catalog: RwLock<Arc<Catalog>>,
    rules: Arc<Rules>,
    connector: Arc<dyn Connector>,
    classifier: Arc<dyn classify::Service>,
    clock: Arc<dyn Clock>,
    /// Where old workflow versions are unpacked to be compiled again.
    versions_dir: PathBuf,
    /// Compiled workflow versions that are not in the current catalog, by digest.
    versions: Mutex<HashMap<String, Arc<Workflow>>>,
    /// Digests whose files are known to be in the store.
    stored_versions: Mutex<std::collections::HashSet<String>>,
    /// Striped per-case (and per-idempotency-key) locks: one segment per case at a time.
    locks: Arc<locks::Locks>,
    /// How soon the queue task of a high-priority case is due.
    priority_sla: std::time::Duration,
    /// The box's quiet hours, written into every proactive case's customer snapshot.
    quiet_hours: Option<crate::rules::QuietHours>,
    /// Held while proactive starts check their start keys and commit: two events (or an
    /// event and a schedule) sharing a `once_per` value must not both start a case.
    starts: Mutex<()>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

/// The parts a runner is built from.
#[allow(
    missing_debug_implementations,
    reason = "holds trait objects without Debug"
)]
pub struct Parts {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub rules: Arc<Rules>,
    pub connector: Arc<dyn Connector>,
    pub classifier: Arc<dyn classify::Service>,
    pub clock: Arc<dyn Clock>,
    pub versions_dir: PathBuf,
    /// How soon the queue task of a case routed with `priority: "high"` is due (the
    /// configuration's `tasks.priority_sla`); other queue tasks have no SLA.
    pub priority_sla: std::time::Duration,
    /// When proactive cases must not contact customers (the configuration's
    /// `contact.quiet_hours`); `None`: no quiet hours.
    pub quiet_hours: Option<crate::rules::QuietHours>,
}

/// The default of [`Parts::priority_sla`]: one hour.
pub const DEFAULT_PRIORITY_SLA: std::time::Duration = std::time::Duration::from_secs(3600);

impl Runner {
    pub fn new(parts: Parts) -> Runner {
        Runner {
            store: parts.store,
            catalog: RwLock::new(parts.catalog),
            rules: parts.rules,
            connector: parts.connector,
            classifier: parts.classifier,
            clock: parts.clock,
            versions_dir: parts.versions_dir,
            versions: Mutex::new(HashMap::new()),
            stored_versions: Mutex::new(std::collections::HashSet::new()),
            locks: locks::Locks::new(),
            priority_sla: parts.priority_sla,
            quiet_hours: parts.quiet_hours,
            starts: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves new cases from `catalog`; running cases stay on their versions.
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The lock of proactive starts and consent changes (see `starts`): held from reading
    /// start keys and consents to the commit, never across a connector call.
    fn starts_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.starts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self, id: &str) -> locks::Held {
        self.locks.hold(id)
    }

    /// Stores the request durably and returns its case id. The case is not run here:
    /// call [`Runner::process`] (the service's workers do) or [`Runner::recover`] when
    /// [`Accepted::run`]. A request that quotes the reference of a live case of the same
    /// submitter and customer goes to that case as a message (see `message.rs`).
    pub fn accept(&self, new: NewRequest) -> Result<Accepted, Error> {
        match self.prepare_accept(new)? {
            Acceptance::Done(accepted) => Ok(accepted),
            Acceptance::Store(guarded) => guarded.commit(&self.store),
        }
    }

    /// [`Runner::accept`] without waiting for the sync: `then` gets the result once the
    /// request is durable (on the commit thread, so it must be short: queue the case,
    /// answer the client), or here when there was nothing to store or it failed. A request
    /// that goes to a live case as a message is stored before this returns. The
    /// idempotency key stays locked until the request is durable, so a second request with
    /// the same key finds the first.
    pub fn accept_then(
        &self,
        new: NewRequest,
        then: impl FnOnce(Result<Accepted, Error>) + Send + 'static,
    ) {
        match self.prepare_accept(new) {
            Err(e) => then(Err(e)),
            Ok(Acceptance::Done(accepted)) => then(Ok(accepted)),
            Ok(Acceptance::Store(guarded)) => guarded.commit_then(&self.store, then),
        }
    }

    /// Everything of an acceptance up to its commit.
    fn prepare_accept(&self, new: NewRequest) -> Result<Acceptance, Error> {
        let linked = match self.attach(&new)? {
            Some(message::Attach::To(case_id)) => {
                let r = &new.request;
                let posted = self.post_message(
                    &case_id,
                    NewMessage {
                        channel: r.channel,
                        text: r.text.clone().unwrap_or_default(),
                        fields: r.fields.clone(),
                        language: r.language.clone(),
                        idempotency_key: new.idempotency_key.clone(),
                        by: new.submitted_by.clone(),
                        via: "reference",
                    },
                )?;
                return Ok(Acceptance::Done(Accepted {
                    case_id,
                    duplicate: posted.duplicate,
                    message_id: Some(posted.message_id),
                    run: posted.triggered,
                }));
            }
            Some(message::Attach::Link(case_id)) => Some(case_id),
            None => None,
        };
        self.prepare_new(new, linked)
    }

    fn prepare_new(
        &self,
        new: NewRequest,
        linked_case: Option<String>,
    ) -> Result<Acceptance, Error> {
        let request = new.request.to_json();
        let request_digest = digest(&request);
        let key_lock = new.idempotency_key.as_deref().map(|k| self.lock(k));
        if let Some(k) = &new.idempotency_key
            && let Some(seen) = self.store.get_json::<IdempotencyEntry>(
                Table::Idempotency,
                k.as_bytes(),
                "idempotency key",
            )?
        {
            if seen.request_digest == request_digest {
                return Ok(Acceptance::Done(Accepted {
                    case_id: seen.case_id,
                    duplicate: true,
                    message_id: None,
                    run: false,
                }));
            }
            return Err(Error::KeyReused {
                key: k.clone(),
                case_id: seen.case_id,
            });
        }
        let now = self.clock.now();
        let case_id = new_case_id(now)?;
        let customer = new
            .request
            .customer_id
            .as_ref()
            .map(|c| self.store.pseudonym(c));
        let record = CaseRecord {
            id: case_id.clone(),
            status: CaseStatus::Accepted,
            channel: new.request.channel.as_str().to_string(),
            language: new.request.language.clone().unwrap_or_else(|| "en".into()),
            customer: customer.clone(),
            request_digest: request_digest.clone(),
            classification: None,
            route: None,
            why: None,
            workflow: None,
            state: None,
            queue_task: None,
            queue_reason: None,
            error: None,
            pending: Some(Pending {
                trigger: Trigger::Start,
                at: now,
            }),
            erased: false,
            accepted_at: now,
            updated_at: now,
            submitted_by: new.submitted_by.clone(),
            reply_to: new.request.reply_to.clone(),
            linked_case: linked_case.clone(),
        };
        let mut batch = Batch::new();
        batch
            .put(Table::Cases, case_id.as_bytes(), &record)
            .put(
                Table::Personal,
                case_id.as_bytes(),
                &PersonalRecord {
                    request,
                    data: Value::Null,
                    reply_text: None,
                    error: None,
                    messages: Vec::new(),
                },
            )
            .put_raw(Table::Pending, case_id.as_bytes(), Vec::new())
            .put_reference(&case_id);
        if let Some(c) = &customer {
            batch.put_raw(Table::CustomerCases, key(&[c, &case_id]), Vec::new());
        }
        if let Some(k) = &new.idempotency_key {
            batch.put(
                Table::Idempotency,
                k.as_bytes(),
                &IdempotencyEntry {
                    case_id: case_id.clone(),
                    request_digest: request_digest.clone(),
                },
            );
        }
        batch.audit(audit::Entry::new(
            &case_id,
            audit::Kind::Accepted,
            now,
            json!({
                "request_digest": request_digest,
                "channel": record.channel,
                "language": record.language,
                "customer": customer,
                "submitted_by": new.submitted_by,
                "idempotency_key_digest": new.idempotency_key.as_ref().map(|k| digest(&json!(k))),
                "linked_case": linked_case,
            }),
        ));
        Ok(Acceptance::Store(locks::Guarded {
            batch,
            value: Accepted {
                case_id,
                duplicate: false,
                message_id: None,
                run: true,
            },
            lock: key_lock,
        }))
    }

    /// A case and its personal data (absent once erased).
    pub fn case(
        &self,
        case_id: &str,
    ) -> Result<Option<(CaseRecord, Option<PersonalRecord>)>, Error> {
        let Some(rec) =
            self.store
                .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
        else {
            return Ok(None);
        };
        let personal = self.store.get_json::<PersonalRecord>(
            Table::Personal,
            case_id.as_bytes(),
            "personal data",
        )?;
        Ok(Some((rec, personal)))
    }

    /// Open tasks, high priority first, then the soonest due, then the oldest; only
    /// `queue`'s if given.
    pub fn tasks(&self, queue: Option<&str>) -> Result<Vec<TaskEntry>, Error> {
        self.tasks_page(queue, usize::MAX)
    }

    /// The first `limit` open tasks in the inbox's order ([`Runner::tasks`]): the store
    /// keeps that order in memory, so a reviewer's page reads the page's tasks, not every
    /// open task (a night's backlog can be thousands).
    pub fn tasks_page(&self, queue: Option<&str>, limit: usize) -> Result<Vec<TaskEntry>, Error> {
        Ok(self.store.tasks_page(queue, limit)?)
    }

    /// [`Runner::tasks_page`] after the place `after` (see [`Store::tasks_after`](crate::store::Store::tasks_after)).
    pub fn tasks_after(
        &self,
        queue: Option<&str>,
        after: Option<&Place>,
        limit: usize,
    ) -> Result<Vec<TaskEntry>, Error> {
        Ok(self.store.tasks_after(queue, after, limit)?)
    }

    /// Open tasks per queue and when each queue's oldest was created: what `/metrics`, the
    /// console and the fleet's health show, without reading a task.
    pub fn open_tasks_by_queue(
        &self,
    ) -> Result<std::collections::BTreeMap<String, OpenQueue>, Error> {
        Ok(self.store.open_tasks_per_queue()?)
    }

    /// Runs the case's stored work (if any) to its next checkpoint and commits it. Returns
    /// the case's status afterwards. Each trigger is handled in its own file; a new trigger
    /// is one more arm here.
    pub fn process(&self, case_id: &str) -> Result<CaseStatus, Error> {
        let segmented = self.segments(case_id)?;
        self.settle(segmented)
    }

    /// Commits a concluded segment and waits for it; returns the case's status.
    fn settle(&self, segmented: Segmented) -> Result<CaseStatus, Error> {
        match segmented {
            Segmented::Idle(status) => Ok(status),
            Segmented::Ready(guarded) => Ok(guarded.commit(&self.store)?.status),
        }
    }

    /// [`Runner::process`] without waiting for the last commit's sync: runs the segments
    /// here, hands the last one's batch to the store and returns; `then` gets the outcome
    /// once that batch is durable (on the commit thread, so it must be short), or at once
    /// when nothing was to be written or the segment failed. The case's lock is held until
    /// the batch is durable: whoever takes the case next reads what this wrote. Lets a case
    /// worker run the next case while the last one's commit syncs.
    pub fn process_then(
        &self,
        case_id: &str,
        then: impl FnOnce(Result<Processed, Error>) + Send + 'static,
    ) {
        match self.segments(case_id) {
            Err(e) => then(Err(e)),
            Ok(Segmented::Idle(status)) => then(Ok(Processed {
                status,
                notify: false,
            })),
            Ok(Segmented::Ready(guarded)) => guarded.commit_then(&self.store, then),
        }
    }

    /// Runs the case's segments up to the one whose batch is committed last. A segment that
    /// leaves the case waiting for an answer the customer already sent stores that message
    /// as the next trigger; it is committed here and the next segment runs (bounded: each
    /// takes one message, and a case keeps at most `MAX_MESSAGES`).
    fn segments(&self, case_id: &str) -> Result<Segmented, Error> {
        let mut rounds = 0;
        loop {
            let segmented = self.segment(case_id, |seg, trigger| match trigger {
                Trigger::Start => self.on_start(seg),
                Trigger::Task { completion } => self.on_task(seg, completion),
                Trigger::Timer => self.on_timer(seg),
                Trigger::Message { message_id } => self.on_message(seg, &message_id),
                Trigger::Proactive { workflow } => self.on_proactive(seg, &workflow),
            })?;
            rounds += 1;
            // A segment leaves a case `running` only when it stored the next trigger (a
            // segment with none to run answers at once, after one read of the record).
            match segmented {
                Segmented::Ready(guarded)
                    if guarded.value.status == CaseStatus::Running && rounds <= MAX_MESSAGES =>
                {
                    // the next segment reads what this one wrote
                    guarded.commit(&self.store)?;
                }
                last => return Ok(last),
            }
        }
    }

    /// Runs the stored work of every case that has some: after a restart, every accepted
    /// and unfinished case resumes from its last checkpoint. Returns how many ran.
    pub fn recover(&self) -> Result<usize, Error> {
        let pending = self.store.scan_keys(Table::Pending, b"")?;
        let mut n = 0;
        for k in pending {
            let id = String::from_utf8_lossy(&k).into_owned();
            match self.process(&id) {
                Ok(_) => n += 1,
                Err(e) => tracing::error!(case = %id, "recovery could not resume the case: {e}"),
            }
        }
        Ok(n)
    }

    /// How many cases wait for a worker (a count, without their ids).
    pub fn pending_count(&self) -> Result<usize, Error> {
        Ok(self.store.count_rows(Table::Pending)?)
    }

    /// Cases with stored work not yet done.
    pub fn pending(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .store
            .scan_keys(Table::Pending, b"")?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect())
    }

    /// The audit records of one case, in order.
    pub fn case_audit(&self, case_id: &str) -> Result<Vec<audit::Record>, Error> {
        let mut prefix = case_id.as_bytes().to_vec();
        prefix.push(0);
        let keys = self.store.scan_keys(Table::AuditByCase, &prefix)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let seq = &k[prefix.len()..];
            if let Some(r) =
                self.store
                    .get_json::<audit::Record>(Table::Audit, seq, "audit record")?
            {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// Length of a case id: `c-`, 11 hex digits, `-`, 12 hex digits.
const CASE_ID_LEN: usize = 26;

/// A time-ordered, unique case id: `c-<millis hex>-<random hex>`, [`CASE_ID_LEN`] long
/// (task ids start with their case's id, see [`task::task_case`]).
fn new_case_id(now: Timestamp) -> Result<String, Error> {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r)
        .map_err(|e| store::Error::backend("os", format!("no randomness: {e}")))?;
    Ok(format!(
        "c-{:011x}-{}",
        now.as_millisecond().max(0),
        hex::encode(r)
    ))
}
