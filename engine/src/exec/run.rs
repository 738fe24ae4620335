//! The step loop: evaluate a node, record it, pick the edge, until the case waits or ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Case, Clock, Connector, Error, Event, Failure, Status, StepRecord, TaskCompletion, Waiting,
    digest,
};
use crate::rules::Rules;
use crate::workflow::nodes::{Outcome, Run};
use crate::workflow::{Edge, Node, Workflow};

/// Runs cases. Holds only borrowed, shared parts; cheap to build per run.
#[derive(Clone, Copy)]
pub struct Executor<'a> {
    pub rules: &'a Rules,
    pub clock: &'a dyn Clock,
    pub connector: &'a dyn Connector,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl<'a> Executor<'a> {
    pub fn new(rules: &'a Rules, clock: &'a dyn Clock, connector: &'a dyn Connector) -> Self {
        Executor {
            rules,
            clock,
            connector,
        }
    }

    /// Starts a case: checks the request against the workflow's input schema, then runs it
    /// until it waits or ends. `request` becomes `case.request`, `classification`
    /// `case.classification`.
    pub fn start(
        &self,
        workflow: &Workflow,
        case_id: &str,
        request: Value,
        classification: Value,
    ) -> Result<(Case, Vec<StepRecord>), Error> {
        self.start_with_customer(workflow, case_id, request, classification, Value::Null)
    }

    /// [`Executor::start`] with the customer's history as `case.customer` (left out when
    /// `null`).
    pub fn start_with_customer(
        &self,
        workflow: &Workflow,
        case_id: &str,
        request: Value,
        classification: Value,
        customer: Value,
    ) -> Result<(Case, Vec<StepRecord>), Error> {
        let mut extra = serde_json::Map::new();
        if !customer.is_null() {
            extra.insert("customer".into(), customer);
        }
        self.start_with(workflow, case_id, request, classification, extra)
    }

    /// [`Executor::start`] with more case data beside `request` and `classification`: the
    /// customer's history, or what started a proactive case (`event` or `schedule`) and
    /// its `customer` snapshot of consents and contacts.
    pub fn start_with(
        &self,
        workflow: &Workflow,
        case_id: &str,
        request: Value,
        classification: Value,
        extra: serde_json::Map<String, Value>,
    ) -> Result<(Case, Vec<StepRecord>), Error> {
        workflow
            .validate_input(&request)
            .map_err(|errors| Error::InvalidInput {
                workflow: workflow.id.clone(),
                errors,
            })?;
        let now = self.clock.now();
        let mut data = extra;
        data.insert("request".into(), request);
        data.insert("classification".into(), classification);
        data.insert("tasks".into(), json!({}));
        let data = Value::Object(data);
        let mut case = Case {
            id: case_id.to_string(),
            workflow: workflow.id.clone(),
            workflow_version: workflow.version,
            workflow_digest: workflow.digest.clone(),
            status: Status::Running,
            data,
            current: workflow.start().id.clone(),
            waiting: None,
            visits: BTreeMap::new(),
            steps: 0,
            records: 0,
            path: Vec::new(),
            outcome: None,
            reply: None,
            error: None,
            reason: None,
            created_at: now,
            updated_at: now,
        };
        let mut records = Vec::new();
        self.advance(workflow, &mut case, None, &mut records, None);
        Ok((case, records))
    }

    /// Feeds an event to a waiting case and runs it on. On `Err` the case is unchanged.
    pub fn resume(
        &self,
        workflow: &Workflow,
        case: &mut Case,
        event: Event,
    ) -> Result<Vec<StepRecord>, Error> {
        if case.workflow != workflow.id || case.workflow_version != workflow.version {
            return Err(Error::WrongWorkflow {
                case_id: case.id.clone(),
                expected: case.workflow.clone(),
                version: case.workflow_version,
                given: workflow.id.clone(),
                given_version: workflow.version,
            });
        }
        let Some(waiting) = case
            .waiting
            .clone()
            .filter(|_| case.status == Status::Waiting)
        else {
            return Err(Error::NotWaiting {
                case_id: case.id.clone(),
                status: case.status.as_str(),
            });
        };
        let now = self.clock.now();
        let mut records = Vec::new();
        let before = digest(&case.data);
        let started = Instant::now();
        let resumption = self.take(case, &waiting, event, now)?;
        case.waiting = None;
        case.status = Status::Running;
        case.updated_at = now;
        // The digest of the data as the resumption left it, when its step computed one.
        let mut carried = None;
        if let Some((edge, detail)) = resumption.edge {
            // The resumption itself is a step of the waiting node: who decided, or the timer.
            let node = workflow
                .node(&resumption.node)
                .expect("a waiting case's node exists in its workflow");
            let to = workflow.follow(&node.id, &edge);
            let record = StepRecord {
                case_id: case.id.clone(),
                seq: next_seq(case),
                node: node.id.clone(),
                kind: node.step.kind().into(),
                at: now,
                elapsed_us: elapsed_us(started),
                input_digest: before,
                output_digest: carried.insert(digest(&case.data)).clone(),
                script_digest: None,
                edge: Some(edge.label()),
                to: to.clone(),
                detail,
            };
            records.push(record);
            match to {
                Some(to) => case.current = to,
                None => {
                    let message = format!("node `{}` has no `{}` edge", node.id, edge.label());
                    fail(case, Failure::public(message));
                    return Ok(records);
                }
            }
        }
        self.advance(workflow, case, resumption.retry, &mut records, carried);
        Ok(records)
    }

    /// Checks that `event` is what the case waits for and says where it leads. Only a
    /// task completion changes the case (its decision goes to `case.tasks`), and only once
    /// it checked.
    fn take(
        &self,
        case: &mut Case,
        waiting: &Waiting,
        event: Event,
        now: Timestamp,
    ) -> Result<Resumption, Error> {
        match (waiting, event) {
            (
                Waiting::Task {
                    task_id,
                    node,
                    decisions,
                    ..
                },
                Event::TaskCompleted(done),
            ) => {
                self.check_task(case, task_id, decisions, &done)?;
                Ok(task_completed(case, node, task_id, done))
            }
            (
                Waiting::Task {
                    node,
                    sla_due: Some(due),
                    task_id,
                    ..
                },
                Event::TimerFired,
            ) => {
                self.check_due(case, *due, now)?;
                let detail = json!({ "event": "sla_passed", "task_id": task_id, "sla_due": due });
                Ok(Resumption::along(node, Edge::Escalation, detail))
            }
            (
                Waiting::Timer {
                    node,
                    due,
                    retry_attempt,
                },
                Event::TimerFired,
            ) => {
                self.check_due(case, *due, now)?;
                Ok(match retry_attempt {
                    Some(attempt) => Resumption {
                        node: node.clone(),
                        edge: None,
                        retry: Some(*attempt),
                    },
                    None => {
                        let detail = json!({ "event": "timer_fired", "due": due });
                        Resumption::along(node, Edge::Next, detail)
                    }
                })
            }
            (Waiting::Answer { node, .. }, Event::Answered(answer)) => {
                Ok(answered(case, node, answer))
            }
            (Waiting::Answer { node, due, .. }, Event::TimerFired) => {
                self.check_due(case, *due, now)?;
                let detail = json!({ "event": "answer_timeout", "due": due });
                Ok(Resumption::along(node, Edge::Timeout, detail))
            }
            (waiting, event) => Err(Error::UnexpectedEvent {
                case_id: case.id.clone(),
                waiting: describe(waiting),
                event: match event {
                    Event::TaskCompleted(t) => format!("a completion of task `{}`", t.task_id),
                    Event::TimerFired => "a timer".into(),
                    Event::Answered(a) => format!("the answer `{}`", a.message_id),
                },
            }),
        }
    }

    fn check_task(
        &self,
        case: &Case,
        task_id: &str,
        decisions: &[String],
        done: &TaskCompletion,
    ) -> Result<(), Error> {
        if done.task_id != task_id {
            return Err(Error::UnexpectedEvent {
                case_id: case.id.clone(),
                waiting: format!("task `{task_id}`"),
                event: format!("a completion of task `{}`", done.task_id),
            });
        }
        if !decisions.contains(&done.decision) {
            return Err(Error::UnknownDecision {
                task_id: task_id.into(),
                decision: done.decision.clone(),
                allowed: decisions.to_vec(),
            });
        }
        Ok(())
    }

    fn check_due(&self, case: &Case, due: Timestamp, now: Timestamp) -> Result<(), Error> {
        if now < due {
            return Err(Error::NotDue {
                case_id: case.id.clone(),
                due,
                now,
            });
        }
        Ok(())
    }

    /// Runs nodes until the case waits, ends or fails. `retry` is the call attempt to make
    /// at the current node when resuming after a backoff; `carried`, the digest of the case
    /// data as it is now, if the caller has it.
    fn advance(
        &self,
        wf: &Workflow,
        case: &mut Case,
        mut retry: Option<u32>,
        records: &mut Vec<StepRecord>,
        mut carried: Option<String>,
    ) {
        // Wall-clock bound of this segment: each node is bounded by the rule deadline, but
        // `max_steps` of them in a row would hold the worker for as many deadlines.
        let began = Instant::now();
        let budget = self.rules.limits().segment_time();
        // A step's output digest is the next step's input digest: nothing changes the case
        // data between two steps of one segment, so it is computed once.
        while case.status == Status::Running {
            let node = wf
                .node(&case.current)
                .expect("the current node exists in the case's workflow");
            let attempt = retry.take();
            if let Err(failure) = enter(wf, case, node, began.elapsed(), budget, attempt) {
                fail(case, failure);
                return;
            }
            case.steps += 1;
            let now = self.clock.now();
            let before = carried.take().unwrap_or_else(|| digest(&case.data));
            let started = Instant::now();
            let (outcome, script_digest) = self.execute(wf, node, case, now, attempt.unwrap_or(1));
            let mut record = StepRecord {
                case_id: case.id.clone(),
                seq: next_seq(case),
                node: node.id.clone(),
                kind: node.step.kind().into(),
                at: now,
                elapsed_us: 0,
                input_digest: before,
                output_digest: String::new(),
                script_digest,
                edge: None,
                to: None,
                detail: Value::Null,
            };
            case.updated_at = now;
            settle(case, &mut record, outcome);
            record.output_digest = if node.step.may_change_data() {
                digest(&case.data)
            } else {
                debug_assert_eq!(
                    record.input_digest,
                    digest(&case.data),
                    "a {} step changed the case data",
                    node.step.kind()
                );
                record.input_digest.clone()
            };
            record.elapsed_us = elapsed_us(started);
            tracing::debug!(case = %case.id, node = %node.id, kind = node.step.kind(), "step");
            carried = Some(record.output_digest.clone());
            records.push(record);
        }
    }

    /// Executes one node, as its kind says; returns what it decided and the digest of the
    /// script that ran.
    fn execute(
        &self,
        wf: &Workflow,
        node: &Node,
        case: &mut Case,
        now: Timestamp,
        attempt: u32,
    ) -> (Outcome, Option<String>) {
        let mut run = Run {
            wf,
            node,
            case,
            rules: self.rules,
            connector: self.connector,
            now,
            attempt,
        };
        node.step.run(&mut run)
    }
}

/// Where an event that a waiting case took leads.
struct Resumption {
    /// The node the case waited at.
    node: String,
    /// The edge to take out of it, with the step record's detail; `None` to run the node
    /// again (a call's next attempt).
    edge: Option<(Edge, Value)>,
    /// The call attempt to make when the node runs again.
    retry: Option<u32>,
}

impl Resumption {
    fn along(node: &str, edge: Edge, detail: Value) -> Resumption {
        Resumption {
            node: node.to_string(),
            edge: Some((edge, detail)),
            retry: None,
        }
    }
}

/// Records a reviewer's decision under `case.tasks.<node>` and takes its edge.
fn task_completed(case: &mut Case, node: &str, task_id: &str, done: TaskCompletion) -> Resumption {
    let TaskCompletion {
        decision,
        data,
        comment,
        by,
        ..
    } = done;
    let tasks = case.data.as_object_mut().and_then(|m| {
        m.entry("tasks")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    });
    if let Some(tasks) = tasks {
        tasks.insert(
            node.to_string(),
            json!({ "decision": decision, "data": data, "comment": comment, "by": by }),
        );
    }
    let detail = json!({
        "event": "task_completed", "task_id": task_id, "decision": decision, "by": by,
        "comment_digest": comment.as_ref().map(|c| digest(&json!(c))),
    });
    Resumption::along(node, Edge::Decision(decision), detail)
}

/// Keeps the customer's answer at `case.answers.<node>` (the last answer to a node that
/// asked twice) and goes along the node's `answer` edge. The step record keeps digests and
/// the channel, never the text.
fn answered(case: &mut Case, node: &str, answer: crate::case::Answer) -> Resumption {
    let detail = json!({
        "event": "answered", "message_id": answer.message_id, "channel": answer.channel,
        "text_digest": digest(&json!(answer.text)),
        "intent": answer.classification.get("intent"),
    });
    let answers = case.data.as_object_mut().and_then(|m| {
        m.entry("answers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
    });
    if let Some(answers) = answers {
        answers.insert(
            node.to_string(),
            serde_json::to_value(&answer).unwrap_or(Value::Null),
        );
    }
    Resumption::along(node, Edge::Answer, detail)
}

/// Counts a node execution against the segment's time budget and the workflow's step
/// bound, and a first attempt (not a call's retry) as a visit against the node's bound and
/// on the case's path.
fn enter(
    wf: &Workflow,
    case: &mut Case,
    node: &Node,
    elapsed: Duration,
    budget: Duration,
    attempt: Option<u32>,
) -> Result<(), Failure> {
    if elapsed > budget {
        return Err(Failure::public(format!(
            "the case ran without waiting for more than {} ms (limit rules.max_segment_ms); it was stopped before node `{}`",
            budget.as_millis(),
            node.id
        )));
    }
    if case.steps >= wf.max_steps {
        return Err(Failure::public(format!(
            "the case exceeded the workflow's bound of {} steps (limits.max_steps) at node `{}`",
            wf.max_steps, node.id
        )));
    }
    if attempt.is_none() {
        let visits = case.visits.entry(node.id.clone()).or_insert(0);
        *visits += 1;
        if let Some(max) = node.max_visits
            && *visits > max
        {
            return Err(Failure::public(format!(
                "node `{}` was reached a {}th time; its bound is max_visits: {max}",
                node.id, *visits
            )));
        }
        case.path.push(node.id.clone());
    }
    Ok(())
}

/// Applies what a node execution decided to the case, and to its step record.
fn settle(case: &mut Case, record: &mut StepRecord, outcome: Outcome) {
    match outcome {
        Outcome::Go { edge, to, detail } => {
            record.edge = Some(edge);
            record.to = Some(to.clone());
            record.detail = detail;
            case.current = to;
        }
        Outcome::Wait { waiting, detail } => {
            record.detail = detail;
            case.waiting = Some(waiting);
            case.status = Status::Waiting;
        }
        Outcome::End { outcome, escalated } => {
            record.detail = json!({ "outcome": outcome });
            case.outcome = Some(outcome);
            case.status = if escalated {
                Status::Escalated
            } else {
                Status::Completed
            };
        }
        Outcome::Fail { failure, detail } => {
            // The step record is audit: the reason, never the message.
            record.detail = detail;
            if let Value::Object(m) = &mut record.detail {
                m.insert("error".into(), json!(failure.reason));
            } else {
                record.detail = json!({ "error": failure.reason });
            }
            fail(case, failure);
        }
    }
}

/// Fails the case. The log gets the reason only: logs are kept and shipped beyond the
/// reach of erasure.
fn fail(case: &mut Case, failure: Failure) {
    tracing::warn!(case = %case.id, node = %case.current, "case failed: {}", failure.reason);
    case.status = Status::Failed;
    case.error = Some(failure.message);
    case.reason = Some(failure.reason);
    case.waiting = None;
}

fn next_seq(case: &mut Case) -> u32 {
    case.records += 1;
    case.records
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn describe(w: &Waiting) -> String {
    match w {
        Waiting::Task { task_id, .. } => format!("task `{task_id}`"),
        Waiting::Timer { due, .. } => format!("a timer due {due}"),
        Waiting::Answer { node, .. } => format!("the customer's answer to `{node}`"),
    }
}
