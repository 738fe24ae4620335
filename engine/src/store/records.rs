//! The typed records the tables hold. Personal data (request text, fields, case data,
//! reply text) lives only in [`PersonalRecord`]; everything else carries ids and digests.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exec::{Case, TaskCompletion};
use crate::routing::{Priority, Route, Why};

/// Where a case stands, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Durable, not yet classified or routed.
    Accepted,
    /// Work is in progress (or was, when the box stopped; recovery resumes it).
    Running,
    /// Waits for a reviewer or a timer.
    Waiting,
    Completed,
    Failed,
    Escalated,
}

impl CaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Accepted => "accepted",
            CaseStatus::Running => "running",
            CaseStatus::Waiting => "waiting",
            CaseStatus::Completed => "completed",
            CaseStatus::Failed => "failed",
            CaseStatus::Escalated => "escalated",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            CaseStatus::Completed | CaseStatus::Failed | CaseStatus::Escalated
        )
    }

    pub const ALL: [CaseStatus; 6] = [
        CaseStatus::Accepted,
        CaseStatus::Running,
        CaseStatus::Waiting,
        CaseStatus::Completed,
        CaseStatus::Failed,
        CaseStatus::Escalated,
    ];
}

/// The workflow version a case runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRef {
    pub id: String,
    pub version: u32,
    pub digest: String,
}

/// Work stored durably but not yet done: what the next segment of the case runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Classify, route and start the case.
    Start,
    /// A reviewer's completion of the task the case waits for.
    Task { completion: TaskCompletion },
    /// The case's timer or SLA came due.
    Timer,
    /// A customer's message arrived for the question the case waits on.
    Message { message_id: String },
    /// Start `workflow` for a business event or a schedule occurrence (no classification,
    /// no routing: the workflow's trigger chose it).
    Proactive { workflow: String },
}

/// A trigger and the clock time its segment runs at. Replaying a segment after a crash uses
/// the same time, so it takes the same path and sends the same idempotency keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub trigger: Trigger,
    pub at: Timestamp,
}

/// A case, without its personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: String,
    pub status: CaseStatus,
    pub channel: String,
    pub language: String,
    /// The customer's pseudonym on this box, if the request named a customer.
    pub customer: Option<String>,
    /// sha256 of the request as accepted.
    pub request_digest: String,
    /// The intent model's answer (intent, confidence, top-k, model version).
    pub classification: Option<Value>,
    /// Where routing sent the case and which rule fired.
    pub route: Option<Route>,
    /// Why routing chose the route: the rule, its priority and scores, and the signals it
    /// decided on. Absent on cases routed before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Why>,
    pub workflow: Option<WorkflowRef>,
    /// The executor's state after the last checkpoint; its `data` and reply text are kept in
    /// [`PersonalRecord`] and are `null`/empty here.
    pub state: Option<Case>,
    /// The open task of a case routed to a queue (no workflow yet).
    pub queue_task: Option<String>,
    /// Why the case waits in a queue without a workflow (with `queue_task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_reason: Option<QueueReason>,
    /// Why the case failed before or outside a workflow run (routing, a reviewer's choice
    /// that is no longer published, a stored case that cannot run, a segment that
    /// panicked), without personal data; a failure inside a run is in
    /// `state.error`, also without personal data. The full message is in
    /// [`PersonalRecord::error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pending: Option<Pending>,
    /// Set when the customer's personal data was erased.
    #[serde(default)]
    pub erased: bool,
    pub accepted_at: Timestamp,
    pub updated_at: Timestamp,
    /// Who submitted it (token name), for "read own cases".
    pub submitted_by: Option<String>,
    /// Webhook for the outcome, if the submitter gave one.
    pub reply_to: Option<String>,
    /// The earlier, finished case whose reference the request quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_case: Option<String>,
}

/// A case's personal data: the request and the case data scripts work on. Erasable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalRecord {
    pub request: Value,
    pub data: Value,
    /// The reply text sent to the customer.
    pub reply_text: Option<String>,
    /// Why the case failed or was parked, in full: it may quote the offending value (a
    /// field that does not fit the input schema, a script's thrown value), so it lives
    /// here, where erasure reaches, and never in the case record or the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The conversation: the questions the case sent and the customer's messages, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
}

/// One message of a case's conversation: a question the case sent (`out`) or what the
/// customer wrote (`in`). Personal data: it lives in the [`PersonalRecord`], so erasure and
/// archives cover it; the audit trail keeps its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: String,
    pub direction: Direction,
    /// `form`, `letter` or `chat` (`in`); the reply channel (`out`).
    pub channel: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
    pub language: Option<String>,
    pub at: Timestamp,
    /// The `ask` node that asked (`out`) or took the answer (`in`); `None` for a message
    /// not yet handed to a question.
    pub node: Option<String>,
    /// How it arrived: `api` (`POST /v1/cases/{id}/messages`), `reference` (a request
    /// that quoted the case reference), `question` (sent by the case).
    pub via: String,
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

impl PersonalRecord {
    /// The personal record of a case whose record is missing (erased while running).
    pub fn empty() -> PersonalRecord {
        PersonalRecord {
            request: Value::Null,
            data: Value::Null,
            reply_text: None,
            error: None,
            messages: Vec::new(),
        }
    }

    /// The first customer message no question has taken yet.
    pub fn unanswered_message(&self) -> Option<&Message> {
        self.messages
            .iter()
            .find(|m| m.direction == Direction::In && m.node.is_none())
    }
}

/// Why a case waits in a queue without a workflow. Names rules, workflows and field paths,
/// never values: it is shown to reviewers and kept after erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum QueueReason {
    /// The routing policy sent it there; `rule` is the rule that fired.
    Routed { rule: String },
    /// Its request does not fit the input schema of the workflow chosen for it.
    InputInvalid {
        workflow: String,
        /// The violations as `path: keyword` (`/customer_id: pattern`).
        fields: Vec<String>,
    },
}

/// An open human task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    pub task_id: String,
    pub case_id: String,
    pub queue: String,
    pub node: String,
    pub title: Option<String>,
    pub decisions: Vec<String>,
    pub created_at: Timestamp,
    pub sla_due: Option<Timestamp>,
    /// Why a triage task was opened (absent on a workflow's own human tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<QueueReason>,
    /// The case's priority, as routing gave it: the inbox lists `high` first.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Why the case was routed where it was (the case's [`CaseRecord::why`]), so the inbox
    /// can say it without reading every case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Why>,
}

/// An idempotency key's case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    pub case_id: String,
    /// sha256 of the request body the key first came with.
    pub request_digest: String,
}

/// A workflow version's files, so a case can resume on it after it was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowBundle {
    pub id: String,
    pub version: u32,
    pub digest: String,
    /// File name → content, for every file of the workflow directory (fixtures excluded).
    pub files: BTreeMap<String, String>,
}

/// Where a connector call stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutboxState {
    /// Sent (or about to be); no answer recorded. Recovery re-sends it with the same key.
    Pending,
    /// The system answered.
    Done { answer: Value },
    /// The attempt failed.
    Failed { retryable: bool, message: String },
}

/// A connector call in the outbox, by idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub key: String,
    pub case_id: String,
    pub node: String,
    pub connector: String,
    pub operation: String,
    pub attempt: u32,
    #[serde(flatten)]
    pub state: OutboxState,
    pub updated_at: Timestamp,
}

/// A `reply_to` notification stored until the requester has it (at-least-once delivery).
///
/// Only the URL is kept: the body is built from the case when it is sent, so the reply text
/// (personal data) stays in [`PersonalRecord`] alone, and erasure deletes this entry with
/// the rest of the customer's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub url: String,
    /// When the case ended (the commit that stored this entry).
    pub since: Timestamp,
}

/// The key of a timer entry: due time first, so a range scan finds what is due.
pub fn timer_key(due: Timestamp, case_id: &str) -> Vec<u8> {
    // Offset so that times before 1970 still order correctly as unsigned bytes.
    let nanos = due.as_nanosecond();
    let ordered = (nanos as u128 ^ (1u128 << 127)).to_be_bytes();
    let mut k = ordered.to_vec();
    k.push(0);
    k.extend_from_slice(case_id.as_bytes());
    k
}

/// The case id in a timer key.
pub fn timer_case(key: &[u8]) -> Option<&str> {
    key.get(17..).and_then(|b| std::str::from_utf8(b).ok())
}

/// The upper bound (exclusive) of timer keys due at or before `now`.
pub fn timer_bound(now: Timestamp) -> Vec<u8> {
    let nanos = now.as_nanosecond();
    let ordered = (nanos as u128 ^ (1u128 << 127)).to_be_bytes();
    let mut k = ordered.to_vec();
    k.push(1);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_order_by_due_time() {
        let a = Timestamp::from_second(-5).expect("t");
        let b = Timestamp::from_second(10).expect("t");
        let c = Timestamp::from_second(1_000_000).expect("t");
        assert!(timer_key(a, "z") < timer_key(b, "a"));
        assert!(timer_key(b, "z") < timer_key(c, "a"));
        assert!(timer_key(b, "zzz") < timer_bound(b));
        assert!(timer_bound(b) < timer_key(c, ""));
        assert_eq!(timer_case(&timer_key(b, "case-1")), Some("case-1"));
    }
}
