//! The serde shape of `workflow.yaml`, as a process owner writes it.
//!
//! Every value a problem could be reported against is `Spanned`, so compilation can point
//! at file, line and node. Per-kind rules (which fields a `rule` node may carry, and so on)
//! are checked by each kind in `nodes`, not here, so one run reports every problem.

use std::collections::HashMap;

use marked_yaml::Spanned;
use serde::Deserialize;

/// Top-level fields of `workflow.yaml`. The top level is read field by field (see
/// `compile::load`) so that an unknown or broken field does not hide the others.
pub const TOP_LEVEL_FIELDS: &[&str] = &[
    "id",
    "version",
    "title",
    "description",
    "intents",
    "triggers",
    "languages",
    "input_schema",
    "start",
    "limits",
    "risk",
    "knowledge",
    "replies",
    "nodes",
];

/// Per-run limits a workflow declares for its cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDef {
    /// Upper bound on node executions per case; a case that exceeds it fails.
    pub max_steps: Option<Spanned<u32>>,
}

/// What starts a workflow besides the intents routing maps to it: business events and a
/// schedule. A workflow with triggers may contact a customer on its own, so its paths to a
/// `reply` must pass a consent check (see `workflow::consent`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersDef {
    /// CloudEvent types (`warranty.expiring`) that start a case for the event's subject.
    #[serde(default)]
    pub events: Vec<Spanned<String>>,
    pub schedule: Option<ScheduleDef>,
    /// The consent purpose the workflow contacts customers for (`marketing`, `service`);
    /// its replies count as contacts for that purpose (`contacts(purpose, days)`).
    pub purpose: Option<Spanned<String>>,
    /// A path into what started the case (`event.data.product_id`, `schedule.year`) whose
    /// value starts at most one case per customer; default: every event or occurrence.
    pub once_per: Option<Spanned<String>>,
}

/// A schedule: when it fires, and which customers each occurrence is for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// A five-field cron pattern (`0 9 * * MON-FRI`), read in `timezone`.
    pub cron: Spanned<String>,
    /// An IANA time zone (`Europe/Berlin`); default `UTC`.
    pub timezone: Option<Spanned<String>>,
    /// The back-office query that names the customers of an occurrence.
    pub subjects: SubjectsDef,
    /// Occurrences missed while the box was off run once at start (`true`, the default)
    /// or are skipped (`false`); either way the audit trail records them.
    pub catch_up: Option<Spanned<bool>>,
}

/// The connector call that lists an occurrence's customers: it answers
/// `{"subjects": [{"customer_id": "…", "data": {…}}, …]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsDef {
    pub connector: Spanned<String>,
    pub operation: Spanned<String>,
    /// rhai expression giving the request payload (a map); it sees `schedule`.
    pub payload: Option<Spanned<String>>,
}

/// One conditional edge of a `decision` node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchDef {
    /// rhai boolean expression over `case`.
    pub when: Spanned<String>,
    /// Target node id.
    pub to: Spanned<String>,
}

/// Retry policy of a `call` node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryDef {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: Spanned<u32>,
    /// Delay before the first retry, doubled on each further one (`30s`, `2m`).
    pub backoff: Option<Spanned<String>>,
}

/// A node as written: the fields of every kind. Which fields a node may carry depends on its
/// `kind`; see [`super::nodes::allowed_fields`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    pub kind: Spanned<String>,
    pub description: Option<Spanned<String>>,
    /// The next node (rule, call on success, wait, checkpoint, reply).
    pub next: Option<Spanned<String>>,
    /// How often the node may run in one case; bounds a cycle through it.
    pub max_visits: Option<Spanned<u32>>,
    /// rule: rhai script file, relative to the workflow directory.
    pub script: Option<Spanned<String>>,
    /// decision: conditional edges, tried in order.
    pub branches: Option<Vec<BranchDef>>,
    /// decision: edge taken when no branch matches.
    pub otherwise: Option<Spanned<String>>,
    /// call: connector name (a back-office system).
    pub connector: Option<Spanned<String>>,
    /// call: operation on the connector.
    pub operation: Option<Spanned<String>>,
    /// call: rhai expression giving the request payload (a map); default: empty map.
    pub payload: Option<Spanned<String>>,
    /// call: case-data key the connector's answer is stored under.
    pub result: Option<Spanned<String>>,
    /// call: retry policy.
    pub retry: Option<RetryDef>,
    /// call: node taken when the call fails for good.
    pub on_failure: Option<Spanned<String>>,
    /// call: `read` (a look-up), `reversible` or `irreversible` (default). An irreversible
    /// workflow reaches an irreversible call only past the customer's confirmation or a
    /// reviewer's decision.
    pub effect: Option<Spanned<String>>,
    /// human: the task queue.
    pub queue: Option<Spanned<String>>,
    /// human: what the reviewer is asked.
    pub task: Option<Spanned<String>>,
    /// human: time until the task escalates (`4h`, `2d`).
    pub sla: Option<Spanned<String>>,
    /// human: decision name → node taken.
    pub decisions: Option<HashMap<Spanned<String>, Spanned<String>>>,
    /// human: node taken when the SLA passes.
    pub escalate: Option<Spanned<String>>,
    /// wait: a fixed delay (`2d`).
    pub duration: Option<Spanned<String>>,
    /// wait: rhai expression giving an RFC 3339 timestamp or `YYYY-MM-DD` date.
    pub until: Option<Spanned<String>>,
    /// checkpoint: human-readable name of what is asserted.
    pub name: Option<Spanned<String>>,
    /// checkpoint: rhai boolean expression; false fails the case.
    pub assert: Option<Spanned<String>>,
    /// checkpoint: case-data paths whose values are recorded (as digests) as evidence.
    pub evidence: Option<Vec<Spanned<String>>>,
    /// reply, ask: template name from `replies`.
    pub template: Option<Spanned<String>>,
    /// ask: the node taken when the customer answers.
    pub answer: Option<Spanned<String>>,
    /// ask: how long to wait for the answer (`14d`).
    pub timeout: Option<Spanned<String>>,
    /// ask: the node taken when nobody answered in time.
    pub on_timeout: Option<Spanned<String>>,
    /// end: the outcome of the case.
    pub outcome: Option<Spanned<String>>,
    /// end: final status, `completed` (default) or `escalated`.
    pub status: Option<Spanned<String>>,
}

/// Reply templates: name → language → template text.
pub type Replies = HashMap<Spanned<String>, HashMap<Spanned<String>, Spanned<String>>>;

impl NodeDef {
    /// Reviewer decisions in the order they are written.
    pub fn decisions_in_order(&self) -> Vec<(&Spanned<String>, &Spanned<String>)> {
        let mut d: Vec<_> = self.decisions.iter().flatten().collect();
        d.sort_by_key(|(k, _)| pos(k));
        d
    }

    /// The fields that are set, by name, with their location (line, column).
    pub fn present_fields(&self) -> Vec<(&'static str, (usize, usize))> {
        let mut out = Vec::new();
        macro_rules! field {
            ($name:ident) => {
                if let Some(v) = &self.$name {
                    out.push((stringify!($name), pos(v)));
                }
            };
        }
        field!(next);
        field!(script);
        field!(otherwise);
        field!(connector);
        field!(operation);
        field!(payload);
        field!(result);
        field!(on_failure);
        field!(effect);
        field!(queue);
        field!(task);
        field!(sla);
        field!(escalate);
        field!(duration);
        field!(until);
        field!(name);
        field!(assert);
        field!(template);
        field!(answer);
        field!(timeout);
        field!(on_timeout);
        field!(outcome);
        field!(status);
        if let Some(b) = &self.branches {
            out.push((
                "branches",
                b.first().map(|b| pos(&b.when)).unwrap_or((0, 0)),
            ));
        }
        if let Some(r) = &self.retry {
            out.push(("retry", pos(&r.max_attempts)));
        }
        if let Some(d) = &self.decisions {
            out.push(("decisions", d.keys().map(pos).min().unwrap_or((0, 0))));
        }
        if let Some(e) = &self.evidence {
            out.push(("evidence", e.first().map(pos).unwrap_or((0, 0))));
        }
        out
    }
}

fn pos<T>(s: &Spanned<T>) -> (usize, usize) {
    s.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}
