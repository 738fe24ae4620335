//! The executor: runs a case through a compiled workflow, one node at a time.
//!
//! A run is a pure function of the workflow, the case, the clock and the connector answers,
//! so replaying the same inputs gives the same path and data. The executor never waits:
//! on a `human` node, a `wait` node or a call's retry backoff it records what the case waits
//! for and returns; the caller (service scheduler, fixture runner, CLI) feeds the matching
//! [`Event`] back in later. Every node execution produces a [`StepRecord`] for the audit
//! trail. Storage and transport are the caller's business.

mod clock;
mod run;
mod step;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use run::Executor;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Between nodes; the executor will go on.
    Running,
    /// Suspended until a task completion or a timer (see [`Case::waiting`]).
    Waiting,
    /// Reached an `end` node.
    Completed,
    /// Reached an `end` node marked `status: escalated`.
    Escalated,
    /// Stopped by a script error, a failed checkpoint, a failed call without failure edge,
    /// or a bound; [`Case::error`] says which.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Escalated => "escalated",
            Status::Failed => "failed",
        }
    }

    /// Completed, escalated or failed: nothing more will happen to the case.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Escalated | Status::Failed)
    }
}

/// What a suspended case waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Waiting {
    /// A reviewer's decision on a human task.
    Task {
        task_id: String,
        node: String,
        queue: String,
        task: Option<String>,
        decisions: Vec<String>,
        created_at: Timestamp,
        /// When the task escalates if nobody decided.
        sla_due: Option<Timestamp>,
    },
    /// A durable timer: a `wait` node, or the backoff before a call's next attempt.
    Timer {
        node: String,
        due: Timestamp,
        /// The call attempt to make when the timer fires (retry backoff); `None` for `wait`.
        retry_attempt: Option<u32>,
    },
}

impl Waiting {
    /// When a timer event will move the case on (timer due, or SLA), if ever.
    pub fn due(&self) -> Option<Timestamp> {
        match self {
            Waiting::Task { sla_due, .. } => *sla_due,
            Waiting::Timer { due, .. } => Some(*due),
        }
    }
}

/// The reply the case produced for the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub template: String,
    pub language: String,
    pub text: String,
}

/// A case: one request's run through one workflow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub workflow: String,
    /// A case stays on the version it started with.
    pub workflow_version: u32,
    pub workflow_digest: String,
    pub status: Status,
    /// The case data scripts read and write as `case`.
    pub data: Value,
    /// The node the case is at: next to run, waiting at, or the end it reached.
    pub current: String,
    pub waiting: Option<Waiting>,
    /// Visits per node, for `max_visits` and idempotency keys.
    pub visits: BTreeMap<String, u32>,
    /// Node executions so far, bounded by the workflow's `max_steps`.
    pub steps: u32,
    /// Step records written so far (node executions plus task completions and timers);
    /// the last record's `seq`.
    pub records: u32,
    /// Node ids in the order they were entered (a call's retries are not repeated here).
    pub path: Vec<String>,
    pub outcome: Option<String>,
    pub reply: Option<Reply>,
    /// Why the case failed, in full; may quote case data (see [`Failure`]).
    pub error: Option<String>,
    /// Why the case failed, without any value from the case (see [`Failure`]): what the
    /// audit trail and the stored case record keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Something that moves a waiting case on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reviewer completed the task the case waits for.
    TaskCompleted(TaskCompletion),
    /// The clock reached the case's due time (timer or SLA).
    TimerFired,
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

/// A back-office system a `call` node talks to.
pub trait Connector: Send + Sync {
    /// Performs one attempt of a call. The same `idempotency_key` arrives on every retry
    /// and replay of the same logical call, so the system can deduplicate.
    fn call(&self, request: &CallRequest) -> Result<Value, CallError>;
}

/// One attempt of a `call` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    pub case_id: String,
    pub node: String,
    pub connector: String,
    pub operation: String,
    pub payload: Value,
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// A failed call attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// Whether trying again may succeed (timeouts, 5xx) or not (4xx, unknown operation).
    pub retryable: bool,
    pub message: String,
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

/// Why a case failed, twice over.
///
/// `message` is the whole story for the people working the case; it may quote case data (a
/// script's thrown value, a back-office answer, a field's value), so it is personal data and
/// is stored only where erasure reaches. `reason` says the same without any value from the
/// case (node ids, kinds, file and line, field paths, schema keywords): it is what goes to
/// the audit trail, the log and the case record, which all outlive erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub reason: String,
}

impl Failure {
    /// A message built only from the workflow and the executor's own state, so it is its
    /// own reason.
    pub fn public(message: String) -> Failure {
        Failure {
            reason: message.clone(),
            message,
        }
    }

    /// A script or condition failed: rhai's message may quote what the script threw or
    /// read, so the reason keeps only where it failed.
    pub fn script(e: &crate::rules::Error) -> Failure {
        let node = |n: &Option<String>| {
            n.as_ref()
                .map(|n| format!("node `{n}`, "))
                .unwrap_or_default()
        };
        // `if let` rather than `match`: a kind of script error added later falls to the
        // generic reason instead of quoting its message.
        let reason = if let crate::rules::Error::Runtime {
            file,
            line,
            node: n,
            case_id,
            ..
        } = e
        {
            format!(
                "{}:{line}: {}case `{case_id}`: the script failed",
                file.display(),
                node(n)
            )
        } else if let crate::rules::Error::Compile {
            file,
            line,
            column,
            node: n,
            ..
        } = e
        {
            format!(
                "{}:{line}:{column}: {}the script does not compile",
                file.display(),
                node(n)
            )
        } else {
            "a script failed".to_string()
        };
        Failure {
            message: e.to_string(),
            reason,
        }
    }
}

/// sha256 of a JSON value's canonical serialization, hex.
pub fn digest(value: &Value) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// The value at a dotted path (`refund.amount`) in case data.
pub fn lookup<'v>(data: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(data, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_failure_keeps_where_it_failed_but_not_what_it_threw() {
        let e = crate::rules::Error::Runtime {
            file: "wf/extract.rhai".into(),
            line: 3,
            node: Some("extract".into()),
            case_id: "c-1".into(),
            message: "Runtime error: cannot read DE44500105175407324931".into(),
        };
        let f = Failure::script(&e);
        assert!(f.message.contains("DE44500105175407324931"));
        assert_eq!(
            f.reason,
            "wf/extract.rhai:3: node `extract`, case `c-1`: the script failed"
        );
    }
}
