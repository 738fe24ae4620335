//! A case: one request's run through one workflow version, as the executor leaves it after
//! each segment: its data, where it stands, what it waits for, why it failed.
//!
//! This is the vocabulary the node kinds (`workflow::nodes`) and the step loop (`exec`)
//! share; it sits below both, so a kind can suspend or fail a case without reaching up into
//! the executor. It depends on nothing but the rules' error type.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The customer's answer to the question an `ask` node sent, or its timeout.
    Answer {
        node: String,
        /// When the question was sent.
        asked_at: Timestamp,
        /// When the case takes the node's `on_timeout` edge if nobody answered. (The
        /// case reference the question printed is `crate::reference::of` the case id.)
        due: Timestamp,
    },
}

impl Waiting {
    /// When a timer event will move the case on (timer due, or SLA), if ever.
    pub fn due(&self) -> Option<Timestamp> {
        match self {
            Waiting::Task { sla_due, .. } => *sla_due,
            Waiting::Timer { due, .. } | Waiting::Answer { due, .. } => Some(*due),
        }
    }
}

/// A customer's answer to an `ask` node, as the case keeps it at `case.answers.<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The stored message the answer came as.
    pub message_id: String,
    /// Normalized text (OCR'd letters arrive cleaned like a request).
    pub text: String,
    /// `form`, `letter` or `chat`: the channel the answer came back on.
    pub channel: String,
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
    pub language: Option<String>,
    pub received_at: Timestamp,
    /// The model's reading of the answer (intent, confidence, signals), for rules.
    #[serde(default)]
    pub classification: Value,
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
