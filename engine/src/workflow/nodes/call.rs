//! `call`: a side effect on a back-office system through a [`Connector`], with an
//! idempotency key, retries with backoff, and a failure edge.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Build, Code, Edge, Kind, Outcome, Run, Step, StepDetails, signed};
use crate::case::{Failure, Waiting, digest};
use crate::rules::Script;
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "call",
    fields: &[
        "connector",
        "operation",
        "payload",
        "result",
        "retry",
        "next",
        "on_failure",
        "effect",
    ],
    compile,
    waits: false,
    ends: false,
    mermaid: ("[[", "]]"),
    dot: "box3d",
};

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
    /// What the call does to the back office (the node's `effect`).
    #[serde(default)]
    pub effect: Effect,
}

/// What a call does to the back-office system, as its node declares it (`effect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A look-up: sending it twice changes nothing, so it needs no record before it is sent.
    Read,
    /// A change the back office can undo (a refund, a booking).
    Reversible,
    /// Blocks, closes or moves money: an irreversible workflow reaches it only past a
    /// confirmation. What a call without `effect` is taken to be.
    #[default]
    Irreversible,
}

impl Effect {
    /// Whether the call changes anything in the back office.
    pub fn writes(self) -> bool {
        self != Effect::Read
    }
}

/// A failed call attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// Whether trying again may succeed (timeouts, 5xx) or not (4xx, unknown operation).
    pub retryable: bool,
    pub message: String,
}

fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    let def = b.def;
    b.next();
    b.edge(&def.on_failure, Edge::Failure);
    let connector = b.required("connector", &def.connector);
    let operation = b.required("operation", &def.operation);
    let payload = match &def.payload {
        Some(p) => Some(b.expression(p)?),
        None => None,
    };
    let (max_attempts, backoff) = match &def.retry {
        Some(r) => {
            if *r.max_attempts == 0 {
                let msg = "`retry.max_attempts` must be at least 1";
                b.problem(Code::InvalidValue, line_of(&r.max_attempts), msg);
            }
            let backoff = match &r.backoff {
                Some(text) => b.duration(text)?,
                None => Duration::from_secs(30),
            };
            (*r.max_attempts, backoff)
        }
        None => (1, Duration::ZERO),
    };
    let effect = match def.effect.as_ref().map(|e| (e, e.as_str())) {
        None | Some((_, "irreversible")) => Effect::Irreversible,
        Some((_, "read")) => Effect::Read,
        Some((_, "reversible")) => Effect::Reversible,
        Some((e, other)) => {
            let msg = format!(
                "`effect` is `{other}`; expected `read` (a look-up), `reversible` or `irreversible`"
            );
            b.problem(Code::InvalidValue, line_of(e), msg);
            Effect::Irreversible
        }
    };
    Some(Step::Call {
        connector: connector?.to_string(),
        operation: operation?.to_string(),
        payload,
        result: def.result.as_ref().map(|r| r.to_string()),
        max_attempts,
        backoff,
        effect,
    })
}

/// A `call` step's data, borrowed for one execution.
pub(super) struct Call<'s> {
    pub connector: &'s str,
    pub operation: &'s str,
    pub payload: Option<&'s Arc<Script>>,
    pub result: Option<&'s String>,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub effect: Effect,
}

impl Call<'_> {
    /// One attempt: the connector's answer goes to `result` and the case on to `next`; a
    /// retryable failure waits for the backoff, a final one takes `on_failure` or fails
    /// the case. The step record is audit: a back-office message may quote what it was
    /// sent (an amount, a customer id), so only its digest goes there; the message itself
    /// stays in the outbox, which erasure clears.
    pub(super) fn run(&self, run: &mut Run<'_>) -> (Outcome, Option<String>) {
        let script_digest = self.payload.map(|p| p.digest.clone());
        let request = match self.request(run) {
            Ok(request) => request,
            Err(e) => return (Outcome::script_failed(e), script_digest),
        };
        let attempt = request.attempt;
        let mut detail = json!({
            "connector": self.connector, "operation": self.operation, "attempt": attempt,
            "idempotency_key": request.idempotency_key,
            "payload_digest": digest(&request.payload),
        });
        let outcome = match run.connector.call(&request) {
            Ok(answer) => {
                detail["answer_digest"] = json!(digest(&answer));
                if let (Some(key), Value::Object(m)) = (self.result, &mut run.case.data) {
                    m.insert(key.clone(), answer);
                }
                run.next(Edge::Next, detail)
            }
            Err(e) => {
                detail["retryable"] = json!(e.retryable);
                detail["error_digest"] = json!(digest(&json!(e.message)));
                if e.retryable && attempt < self.max_attempts {
                    self.retry(run, detail)
                } else {
                    self.failed(run, &e, detail)
                }
            }
        };
        (outcome, script_digest)
    }

    /// The attempt's request: the payload expression's map (empty without one) and a key
    /// that stays the same across the attempts of one visit.
    fn request(&self, run: &mut Run<'_>) -> Result<CallRequest, crate::rules::Error> {
        let payload = match self.payload {
            Some(p) => {
                let rules = run.rules;
                let (ctx, data) = run.sandbox();
                rules.eval(p, &ctx, &[("case", data)])?
            }
            None => json!({}),
        };
        let (case, node) = (&run.case, &run.node.id);
        Ok(CallRequest {
            case_id: case.id.clone(),
            node: node.clone(),
            connector: self.connector.to_string(),
            operation: self.operation.to_string(),
            idempotency_key: format!("{}:{}:{}", case.id, node, run.visit()),
            payload,
            attempt: run.attempt,
            effect: self.effect,
        })
    }

    /// Waits for the backoff before the next attempt.
    fn retry(&self, run: &Run<'_>, mut detail: Value) -> Outcome {
        let attempt = run.attempt;
        let due = run
            .now
            .saturating_add(backoff_delay(self.backoff, attempt))
            .unwrap_or(run.now);
        detail["retry_at"] = json!(due);
        let waiting = Waiting::Timer {
            node: run.node.id.clone(),
            due,
            retry_attempt: Some(attempt + 1),
        };
        Outcome::Wait { waiting, detail }
    }

    /// Failed for good: the `on_failure` edge, or the case fails.
    fn failed(&self, run: &Run<'_>, e: &CallError, detail: Value) -> Outcome {
        if let Some(to) = run.wf.follow(&run.node.id, &Edge::Failure) {
            return Outcome::Go {
                edge: Edge::Failure.label(),
                to,
                detail,
            };
        }
        let (connector, operation, attempt) = (self.connector, self.operation, run.attempt);
        let what = format!("call {connector}.{operation} failed after {attempt} attempt(s)");
        let failure = Failure {
            message: format!("{what}: {}", e.message),
            reason: what,
        };
        Outcome::Fail { failure, detail }
    }
}

/// Exponential backoff: `base`, then doubled per further attempt, capped at a day.
fn backoff_delay(base: Duration, attempt: u32) -> SignedDuration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    signed(base.saturating_mul(factor).min(Duration::from_secs(86_400)))
}

pub(super) fn label(connector: &str, operation: &str) -> String {
    format!("call {connector}.{operation}")
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CallDetails {
    pub connector: String,
    pub operation: String,
    /// Where the answer goes in the case data.
    pub result: Option<String>,
    pub max_attempts: u32,
    pub backoff_secs: u64,
}

/// The payload expression is shown on its own (see `Step::script`).
pub(super) fn details(
    connector: &str,
    operation: &str,
    result: &Option<String>,
    max_attempts: u32,
    backoff: Duration,
) -> StepDetails {
    StepDetails::Call(CallDetails {
        connector: connector.to_owned(),
        operation: operation.to_owned(),
        result: result.clone(),
        max_attempts,
        backoff_secs: backoff.as_secs(),
    })
}
