//! The executor: runs a case through a compiled workflow, one node at a time.
//!
//! A run is a pure function of the workflow, the case, the clock and the connector answers,
//! so replaying the same inputs gives the same path and data. The executor never waits:
//! on a `human` node, a `wait` node or a call's retry backoff it records what the case waits
//! for and returns; the caller (service scheduler, fixture runner, CLI) feeds the matching
//! [`Event`] back in later. Every node execution produces a [`StepRecord`] for the audit
//! trail. Storage and transport are the caller's business.
//!
//! What a node does lives with its kind (`workflow::nodes`); this module is the step loop
//! around it, the events that resume a case and the records it leaves. The case itself
//! (`crate::case`) and the back-office port (`Connector`, from the `call` kind) are
//! re-exported here, where callers have always found them.

mod clock;
mod run;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use run::Executor;

pub use crate::case::{Answer, Case, Failure, Reply, Status, Waiting, digest, lookup};
pub use crate::workflow::nodes::{CallError, CallRequest, Connector, Effect};

/// Something that moves a waiting case on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reviewer completed the task the case waits for.
    TaskCompleted(TaskCompletion),
    /// The clock reached the case's due time (timer, SLA or an unanswered question).
    TimerFired,
    /// The customer answered the question the case waits on.
    Answered(Answer),
}

/// A reviewer's answer to a human task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompletion {
    pub task_id: String,
    pub decision: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub comment: Option<String>,
    /// Who decided (token name or reviewer id); recorded in the audit trail.
    pub by: String,
}

/// The audit record of one node execution (or one task completion / timer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub case_id: String,
    /// Position in the case's step sequence, from 1.
    pub seq: u32,
    pub node: String,
    pub kind: String,
    /// Clock time the step ran at.
    pub at: Timestamp,
    /// Wall time the step took, in microseconds (measurement only; never drives behaviour).
    pub elapsed_us: u64,
    /// sha256 of the case data before and after the step.
    pub input_digest: String,
    pub output_digest: String,
    /// sha256 of the script or expression that ran, when one did.
    pub script_digest: Option<String>,
    /// The edge taken out of the node (`next`, `when <cond>`, `decision approve`, …).
    pub edge: Option<String>,
    /// The node the case moved to, if it moved.
    pub to: Option<String>,
    /// Node-specific facts: call attempt and outcome, checkpoint evidence digests, task
    /// decision and reviewer, error message. Never raw personal data.
    pub detail: Value,
}

/// A request the executor cannot act on; the case is left as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("request does not match the input schema of workflow `{workflow}`: {}",
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidInput {
        workflow: String,
        errors: Vec<crate::workflow::InputError>,
    },
    #[error(
        "case `{case_id}` runs workflow `{expected}` version {version}, not `{given}` version {given_version}"
    )]
    WrongWorkflow {
        case_id: String,
        expected: String,
        version: u32,
        given: String,
        given_version: u32,
    },
    #[error("case `{case_id}` is {status}, not waiting")]
    NotWaiting {
        case_id: String,
        status: &'static str,
    },
    #[error("case `{case_id}` waits for {waiting}, not for {event}")]
    UnexpectedEvent {
        case_id: String,
        waiting: String,
        event: String,
    },
    #[error("decision `{decision}` is not allowed for task `{task_id}`; allowed: {}", allowed.join(", "))]
    UnknownDecision {
        task_id: String,
        decision: String,
        allowed: Vec<String>,
    },
    #[error("case `{case_id}` waits until {due}; it is only {now}")]
    NotDue {
        case_id: String,
        due: Timestamp,
        now: Timestamp,
    },
}
