//! One node execution: what each node kind does and which edge it takes.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{CallRequest, Case, Executor, Failure, Waiting, digest, lookup};
use crate::rules::Context;
use crate::workflow::{Edge, Node, Step, WaitFor, Workflow};

/// What one node execution decided.
pub(super) enum Outcome {
    /// Take this edge to this node.
    Go {
        edge: String,
        to: String,
        detail: Value,
    },
    /// Suspend; the case waits.
    Wait { waiting: Waiting, detail: Value },
    /// The case reached an end.
    End { outcome: String, escalated: bool },
    /// The case fails; `detail` goes to the audit trail, so it holds no personal data.
    Fail { failure: Failure, detail: Value },
}

impl Executor<'_> {
    /// Executes one node; returns what it decided and the digest of the script that ran.
    pub(super) fn execute(
        &self,
        wf: &Workflow,
        node: &Node,
        case: &mut Case,
        now: Timestamp,
        attempt: u32,
    ) -> (Outcome, Option<String>) {
        let ctx = Context {
            case_id: &case.id,
            node: &node.id,
            now,
        };
        let next = |edge: Edge, detail: Value| match follow(wf, &node.id, &edge) {
            Some(to) => Outcome::Go {
                edge: edge.label(),
                to,
                detail,
            },
            None => Outcome::Fail {
                failure: Failure::public(format!(
                    "node `{}` has no `{}` edge",
                    node.id,
                    edge.label()
                )),
                detail: Value::Null,
            },
        };
        match &node.step {
            Step::Rule { script } => {
                let digest = Some(script.digest.clone());
                match self.rules.run(script, &ctx, &mut case.data) {
                    Ok(_) => (next(Edge::Next, Value::Null), digest),
                    Err(e) => (script_failed(e), digest),
                }
            }
            Step::Decision => {
                for (edge, to) in wf.edges_from(&node.id) {
                    let Edge::When {
                        order, condition, ..
                    } = edge
                    else {
                        continue;
                    };
                    match self.rules.eval_bool(condition, &ctx, &case.data) {
                        Ok(true) => {
                            let detail = json!({ "branch": order });
                            let outcome = Outcome::Go {
                                edge: edge.label(),
                                to: to.id.clone(),
                                detail,
                            };
                            return (outcome, Some(condition.digest.clone()));
                        }
                        Ok(false) => {}
                        Err(e) => return (script_failed(e), Some(condition.digest.clone())),
                    }
                }
                (next(Edge::Otherwise, Value::Null), None)
            }
            Step::Call {
                connector,
                operation,
                payload,
                result,
                max_attempts,
                backoff,
            } => {
                let payload_value = match payload {
                    Some(p) => match self.rules.eval(p, &ctx, &[("case", &case.data)]) {
                        Ok(v) => v,
                        Err(e) => return (script_failed(e), Some(p.digest.clone())),
                    },
                    None => json!({}),
                };
                let visit = case.visits.get(&node.id).copied().unwrap_or(1);
                let request = CallRequest {
                    case_id: case.id.clone(),
                    node: node.id.clone(),
                    connector: connector.clone(),
                    operation: operation.clone(),
                    idempotency_key: format!("{}:{}:{}", case.id, node.id, visit),
                    payload: payload_value,
                    attempt,
                };
                let script_digest = payload.as_ref().map(|p| p.digest.clone());
                let mut detail = json!({
                    "connector": connector, "operation": operation, "attempt": attempt,
                    "idempotency_key": request.idempotency_key,
                    "payload_digest": digest(&request.payload),
                });
                let outcome = match self.connector.call(&request) {
                    Ok(answer) => {
                        detail["answer_digest"] = json!(digest(&answer));
                        if let (Some(key), Value::Object(m)) = (result, &mut case.data) {
                            m.insert(key.clone(), answer);
                        }
                        next(Edge::Next, detail)
                    }
                    // The step record is audit: a back-office message may quote what it
                    // was sent (an amount, a customer id), so only its digest goes there;
                    // the message itself stays in the outbox, which erasure clears.
                    Err(e) if e.retryable && attempt < *max_attempts => {
                        detail["retryable"] = json!(true);
                        detail["error_digest"] = json!(digest(&json!(e.message)));
                        let delay = backoff_delay(*backoff, attempt);
                        let due = now.saturating_add(delay).unwrap_or(now);
                        detail["retry_at"] = json!(due);
                        let waiting = Waiting::Timer {
                            node: node.id.clone(),
                            due,
                            retry_attempt: Some(attempt + 1),
                        };
                        Outcome::Wait { waiting, detail }
                    }
                    Err(e) => {
                        detail["retryable"] = json!(e.retryable);
                        detail["error_digest"] = json!(digest(&json!(e.message)));
                        match follow(wf, &node.id, &Edge::Failure) {
                            Some(to) => Outcome::Go {
                                edge: Edge::Failure.label(),
                                to,
                                detail,
                            },
                            None => Outcome::Fail {
                                failure: Failure {
                                    message: format!(
                                        "call {connector}.{operation} failed after {attempt} attempt(s): {}",
                                        e.message
                                    ),
                                    reason: format!(
                                        "call {connector}.{operation} failed after {attempt} attempt(s)"
                                    ),
                                },
                                detail,
                            },
                        }
                    }
                };
                (outcome, script_digest)
            }
            Step::Human {
                queue,
                task,
                sla,
                decisions,
            } => {
                let visit = case.visits.get(&node.id).copied().unwrap_or(1);
                let task_id = format!("{}-{}-{}", case.id, node.id, visit);
                let sla_due = sla.and_then(|d| now.saturating_add(signed(d)).ok());
                let detail = json!({ "task_id": task_id, "queue": queue, "sla_due": sla_due });
                let waiting = Waiting::Task {
                    task_id,
                    node: node.id.clone(),
                    queue: queue.clone(),
                    task: task.clone(),
                    decisions: decisions.clone(),
                    created_at: now,
                    sla_due,
                };
                (Outcome::Wait { waiting, detail }, None)
            }
            Step::Wait(wait_for) => {
                let (due, script_digest) = match wait_for {
                    WaitFor::Duration(d) => (now.saturating_add(signed(*d)).unwrap_or(now), None),
                    WaitFor::Until(expr) => {
                        let digest = Some(expr.digest.clone());
                        match self.rules.eval(expr, &ctx, &[("case", &case.data)]) {
                            Ok(v) => match parse_due(&v) {
                                Some(due) => (due, digest),
                                None => {
                                    let expected =
                                        "expected an RFC 3339 timestamp or a YYYY-MM-DD date";
                                    let failure = Failure {
                                        message: format!(
                                            "`until` of node `{}` gave {v}, {expected}",
                                            node.id
                                        ),
                                        reason: format!(
                                            "`until` of node `{}` gave no date, {expected}",
                                            node.id
                                        ),
                                    };
                                    return (
                                        Outcome::Fail {
                                            failure,
                                            detail: Value::Null,
                                        },
                                        digest,
                                    );
                                }
                            },
                            Err(e) => return (script_failed(e), digest),
                        }
                    }
                };
                if due <= now {
                    return (
                        next(Edge::Next, json!({ "due": due, "already_due": true })),
                        script_digest,
                    );
                }
                let waiting = Waiting::Timer {
                    node: node.id.clone(),
                    due,
                    retry_attempt: None,
                };
                (
                    Outcome::Wait {
                        waiting,
                        detail: json!({ "due": due }),
                    },
                    script_digest,
                )
            }
            Step::Checkpoint {
                name,
                assert,
                evidence,
            } => {
                let digest_of = Some(assert.digest.clone());
                let evidence: serde_json::Map<String, Value> = evidence
                    .iter()
                    .map(|path| {
                        let d = lookup(&case.data, path).map(digest);
                        (path.clone(), d.map(Value::String).unwrap_or(Value::Null))
                    })
                    .collect();
                match self.rules.eval_bool(assert, &ctx, &case.data) {
                    Ok(true) => {
                        let detail =
                            json!({ "checkpoint": name, "passed": true, "evidence": evidence });
                        (next(Edge::Next, detail), digest_of)
                    }
                    Ok(false) => {
                        let detail =
                            json!({ "checkpoint": name, "passed": false, "evidence": evidence });
                        let message = format!("checkpoint `{name}` failed at node `{}`", node.id);
                        let failure = Failure::public(message);
                        (Outcome::Fail { failure, detail }, digest_of)
                    }
                    Err(e) => (script_failed(e), digest_of),
                }
            }
            Step::Reply { template } => {
                let language = lookup(&case.data, "request.language")
                    .and_then(Value::as_str)
                    .unwrap_or("en")
                    .to_string();
                let context = json!({ "case": case.data, "case_id": case.id });
                match wf.render_reply(template, &language, &context) {
                    Ok((language, text)) => {
                        let detail = json!({ "template": template, "language": language, "text_digest": digest(&json!(text)) });
                        case.reply = Some(super::Reply {
                            template: template.clone(),
                            language,
                            text,
                        });
                        (next(Edge::Next, detail), None)
                    }
                    Err(e) => {
                        let at = format!(
                            "{}: node `{}`, case `{}`: reply template `{template}` failed",
                            wf.dir.join("workflow.yaml").display(),
                            node.id,
                            case.id
                        );
                        // The template engine's message may quote case data; its kind
                        // does not.
                        let failure = Failure {
                            message: format!("{at}: {e}"),
                            reason: format!("{at}: {}", e.kind()),
                        };
                        (
                            Outcome::Fail {
                                failure,
                                detail: Value::Null,
                            },
                            None,
                        )
                    }
                }
            }
            Step::End { outcome, escalated } => (
                Outcome::End {
                    outcome: outcome.clone(),
                    escalated: *escalated,
                },
                None,
            ),
        }
    }
}

/// The target of a node's edge of the given kind (decision edges by name).
pub(super) fn follow(wf: &Workflow, node: &str, edge: &Edge) -> Option<String> {
    wf.edges_from(node)
        .into_iter()
        .find(|(e, _)| match (e, edge) {
            (Edge::Decision(a), Edge::Decision(b)) => a == b,
            (a, b) => std::mem::discriminant(*a) == std::mem::discriminant(b),
        })
        .map(|(_, to)| to.id.clone())
}

fn script_failed(e: crate::rules::Error) -> Outcome {
    Outcome::Fail {
        failure: Failure::script(&e),
        detail: Value::Null,
    }
}

pub(super) fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Exponential backoff: `base`, then doubled per further attempt, capped at a day.
fn backoff_delay(base: Duration, attempt: u32) -> SignedDuration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    signed(base.saturating_mul(factor).min(Duration::from_secs(86_400)))
}

fn parse_due(v: &Value) -> Option<Timestamp> {
    let s = v.as_str()?;
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let date: jiff::civil::Date = s.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}
