//! One segment of a case: from its stored trigger to the next checkpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::outbox::Outbox;
use super::triage::{CLOSE, TRIAGE_QUEUE, reviewed_intent};
use super::{Error, Runner};
use crate::audit;
use crate::exec::{
    self, Case, Event, Executor, Failure, ManualClock, Status, StepRecord, Waiting, digest,
};
use crate::routing::{self, Route};
use crate::rules::Context;
use crate::store::{
    Batch, CaseRecord, CaseStatus, Notification, PersonalRecord, QueueReason, Table, TaskEntry,
    Trigger, WorkflowBundle, WorkflowRef, timer_key,
};
use crate::workflow::{Workflow, compile_dir};

impl Runner {
    /// Runs the case's stored work (if any) to its next checkpoint and commits it. Returns
    /// the case's status afterwards.
    pub fn process(&self, case_id: &str) -> Result<CaseStatus, Error> {
        let _lock = self.lock(case_id);
        let mut rec = self
            .store
            .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
            .ok_or_else(|| Error::NoCase(case_id.to_string()))?;
        let Some(pending) = rec.pending.clone() else {
            return Ok(rec.status);
        };
        let mut personal = self
            .store
            .get_json::<PersonalRecord>(Table::Personal, case_id.as_bytes(), "personal data")?
            .unwrap_or(PersonalRecord {
                request: Value::Null,
                data: Value::Null,
                reply_text: None,
                error: None,
            });
        let at = pending.at;
        let clock = ManualClock::new(at);
        let outbox = Outbox {
            store: &self.store,
            inner: self.connector.as_ref(),
            at,
            audit: Mutex::new(Vec::new()),
        };
        let exec = Executor::new(&self.rules, &clock, &outbox);
        let mut batch = Batch::new();
        let mut entries = Vec::new();
        let before = rec.state.clone();
        let old_task = rec.queue_task.clone();
        let mut outcome: Result<(Option<Case>, Vec<StepRecord>), Failure> = Ok((None, Vec::new()));
        match pending.trigger {
            Trigger::Start => {
                let classification = match self.classifier.classify(&personal.request) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(case = %case_id, "classification failed: {e}");
                        json!({ "intent": null, "confidence": 0.0, "out_of_scope": true,
                                "error": e, "model": "unavailable" })
                    }
                };
                entries.push(audit::Entry::new(
                    case_id,
                    audit::Kind::Classified,
                    at,
                    classification.clone(),
                ));
                rec.classification = Some(classification.clone());
                let catalog = self.catalog();
                let ctx = Context {
                    case_id,
                    node: "routing",
                    now: at,
                };
                let input = routing::input(&personal.request, &classification);
                match catalog
                    .routing
                    .route(&self.rules, &ctx, &input, catalog.intent_map())
                {
                    Err(e) => outcome = Err(routing_failure(&e)),
                    Ok(route) => {
                        entries.push(audit::Entry::new(
                            case_id,
                            audit::Kind::Routed,
                            at,
                            json!({ "policy_version": catalog.routing.version, "rule": route.rule(), "route": route }),
                        ));
                        rec.route = Some(route.clone());
                        match route {
                            Route::Workflow { workflow, .. } => match catalog.get(&workflow) {
                                Some(wf) => {
                                    outcome = self.start(
                                        &exec,
                                        &wf.clone(),
                                        &mut rec,
                                        &mut personal,
                                        classification,
                                        &mut batch,
                                        &mut entries,
                                    );
                                }
                                None => {
                                    outcome = Err(Failure::public(format!(
                                        "routing chose workflow `{workflow}`, which is not loaded"
                                    )))
                                }
                            },
                            Route::Queue { queue, rule } => {
                                let reason = QueueReason::Routed { rule };
                                self.open_triage(&mut rec, &queue, reason, at, &mut batch);
                            }
                        }
                    }
                }
            }
            Trigger::Task { completion } if rec.state.is_none() => {
                // A case routed to a queue: the reviewer picks a workflow or closes it.
                let mut body = json!({ "task_id": completion.task_id, "decision": completion.decision,
                            "by": completion.by,
                            "comment_digest": completion.comment.as_ref().map(|c| digest(&json!(c))) });
                if let (Value::Object(m), Some(intent)) =
                    (&mut body, reviewed_intent(&completion.data))
                {
                    match intent {
                        Ok(label) => m.insert("intent".into(), json!(label)),
                        Err(()) => m.insert("intent_refused".into(), json!(true)),
                    };
                }
                let corrected = if completion.decision == CLOSE {
                    Vec::new()
                } else {
                    self.correct(&mut rec, &mut personal, &completion.data, &mut batch)
                };
                if let (Value::Object(m), false) = (&mut body, corrected.is_empty()) {
                    // Which fields the reviewer corrected, never their values.
                    m.insert("corrected".into(), json!(corrected));
                }
                entries.push(audit::Entry::new(
                    case_id,
                    audit::Kind::TaskCompleted,
                    at,
                    body,
                ));
                rec.queue_task = None;
                rec.queue_reason = None;
                if completion.decision == CLOSE {
                    rec.status = CaseStatus::Completed;
                    entries.push(audit::Entry::new(
                        case_id,
                        audit::Kind::Outcome,
                        at,
                        json!({ "status": "completed", "outcome": "closed_by_reviewer" }),
                    ));
                } else {
                    let catalog = self.catalog();
                    match catalog.get(&completion.decision).cloned() {
                        Some(wf) => {
                            let mut classification =
                                rec.classification.clone().unwrap_or(Value::Null);
                            if let Value::Object(m) = &mut classification {
                                m.insert(
                                    "corrected_by_reviewer".into(),
                                    json!({ "workflow": wf.id, "intents": wf.intents, "by": completion.by }),
                                );
                            }
                            rec.route = Some(Route::Workflow {
                                workflow: wf.id.clone(),
                                rule: format!("reviewer {}", completion.by),
                            });
                            outcome = self.start(
                                &exec,
                                &wf,
                                &mut rec,
                                &mut personal,
                                classification,
                                &mut batch,
                                &mut entries,
                            );
                        }
                        None => {
                            outcome = Err(Failure::public(format!(
                                "the reviewer chose workflow `{}`, which is no longer published",
                                completion.decision
                            )))
                        }
                    }
                }
            }
            trigger => {
                let event = match trigger {
                    Trigger::Task { completion } => Event::TaskCompleted(completion),
                    _ => Event::TimerFired,
                };
                // A stored case that lost its state or workflow version (a damaged or
                // tampered data directory) fails with the reason; it must not panic a worker.
                match (rec.state.clone(), rec.workflow.clone()) {
                    (Some(mut case), Some(wref)) => {
                        case.data = personal.data.clone();
                        if let Some(reply) = &mut case.reply {
                            reply.text = personal.reply_text.clone().unwrap_or_default();
                        }
                        let wf = self.workflow(&rec.id, &wref)?;
                        outcome = match exec.resume(&wf, &mut case, event) {
                            Ok(steps) => Ok((Some(case), steps)),
                            // Resumption errors name cases, tasks, decisions and times only.
                            Err(e) => Err(Failure::public(e.to_string())),
                        };
                    }
                    (state, _) => {
                        let missing = if state.is_none() {
                            "workflow state"
                        } else {
                            "workflow version"
                        };
                        let what = match event {
                            Event::TaskCompleted(_) => "a task completion",
                            Event::TimerFired => "a timer",
                        };
                        outcome = Err(Failure::public(format!(
                            "the stored case is inconsistent: {what} is stored for it, but it has no {missing} to resume"
                        )));
                    }
                }
            }
        }
        match outcome {
            Ok((Some(case), steps)) => {
                self.checkpoint(&mut rec, &mut personal, case, steps, &mut entries)
            }
            Ok((None, _)) => {}
            Err(Failure { message, reason }) => {
                // The case record, the log and the audit trail get the reason; the message
                // (it may quote case data) goes to the erasable personal record.
                tracing::warn!(case = %case_id, "{reason}");
                rec.status = CaseStatus::Failed;
                rec.error = Some(reason.clone());
                entries.push(audit::Entry::new(
                    case_id,
                    audit::Kind::Outcome,
                    at,
                    json!({ "status": "failed", "error": reason }),
                ));
                personal.error = Some(message);
                if let Some(state) = &mut rec.state {
                    state.status = Status::Failed;
                    state.error = Some(reason.clone());
                    state.reason = Some(reason);
                    state.waiting = None;
                }
            }
        }
        // Tasks and timers follow the case's new waiting state.
        if let Some(old) = before.as_ref().and_then(|c| c.waiting.as_ref()) {
            if let Waiting::Task { task_id, .. } = old {
                batch.delete(Table::Tasks, task_id.as_bytes());
            }
            if let Some(due) = old.due() {
                batch.delete(Table::Timers, timer_key(due, case_id));
            }
        }
        if let Some(t) = old_task.filter(|_| rec.queue_task.is_none()) {
            batch.delete(Table::Tasks, t.as_bytes());
        }
        if let Some(state) = &rec.state
            && let Some(w) = &state.waiting
        {
            if let Waiting::Task {
                task_id,
                node,
                queue,
                task,
                decisions,
                created_at,
                sla_due,
            } = w
            {
                batch.put(
                    Table::Tasks,
                    task_id.as_bytes(),
                    &TaskEntry {
                        task_id: task_id.clone(),
                        case_id: case_id.to_string(),
                        queue: queue.clone(),
                        node: node.clone(),
                        title: task.clone(),
                        decisions: decisions.clone(),
                        created_at: *created_at,
                        sla_due: *sla_due,
                        reason: None,
                    },
                );
            }
            if let Some(due) = w.due() {
                batch.put_raw(Table::Timers, timer_key(due, case_id), Vec::new());
            }
        }
        entries.extend(outbox.audit.into_inner().unwrap_or_else(|e| e.into_inner()));
        // Classification and routing first; then the segment's calls in the order they
        // happened, then its steps (which refer to the calls by idempotency key); the
        // outcome last. The sort is stable, so each group keeps its own order.
        entries.sort_by_key(|e| match e.kind {
            audit::Kind::Classified | audit::Kind::Routed | audit::Kind::TaskCompleted => 0,
            audit::Kind::Call => 1,
            audit::Kind::Outcome => 3,
            _ => 2,
        });
        for e in entries {
            batch.audit(e);
        }
        rec.pending = None;
        rec.updated_at = at;
        // Only the segment that makes a case final gets here with a final status (a final
        // case has no stored work), so the notification is stored exactly once, in the same
        // commit: a final case with `reply_to` has either this entry or has been notified.
        if rec.status.is_final()
            && let Some(url) = &rec.reply_to
        {
            batch.put(
                Table::Notifications,
                case_id.as_bytes(),
                &Notification {
                    url: url.clone(),
                    since: at,
                },
            );
        }
        batch
            .delete(Table::Pending, case_id.as_bytes())
            .put(Table::Personal, case_id.as_bytes(), &personal)
            .put(Table::Cases, case_id.as_bytes(), &rec);
        self.store.commit(batch)?;
        Ok(rec.status)
    }

    /// Starts `wf` on the case. A request that does not fit the workflow's input schema is
    /// not a failure of the case but of its data: it goes to the triage queue, where a
    /// reviewer can correct it (see [`Runner::correct`]) and choose a workflow again.
    #[allow(clippy::too_many_arguments, reason = "one segment's working parts")]
    fn start(
        &self,
        exec: &Executor<'_>,
        wf: &Arc<Workflow>,
        rec: &mut CaseRecord,
        personal: &mut PersonalRecord,
        classification: Value,
        batch: &mut Batch,
        entries: &mut Vec<audit::Entry>,
    ) -> Result<(Option<Case>, Vec<StepRecord>), Failure> {
        match exec.start(wf, &rec.id, personal.request.clone(), classification) {
            Ok((case, steps)) => {
                rec.workflow = Some(WorkflowRef {
                    id: wf.id.clone(),
                    version: wf.version,
                    digest: wf.digest.clone(),
                });
                self.keep_version(wf, batch);
                Ok((Some(case), steps))
            }
            Err(exec::Error::InvalidInput { workflow, errors }) => {
                let failure = Failure::input(&workflow, &errors);
                let reason = QueueReason::InputInvalid {
                    workflow,
                    fields: errors.iter().map(|e| e.reason()).collect(),
                };
                entries.push(audit::Entry::new(
                    &rec.id,
                    audit::Kind::Routed,
                    pending_at(rec),
                    json!({ "queue": TRIAGE_QUEUE, "reason": reason }),
                ));
                personal.error = Some(failure.message);
                self.open_triage(rec, TRIAGE_QUEUE, reason, pending_at(rec), batch);
                Ok((None, Vec::new()))
            }
            Err(e) => Err(Failure::public(e.to_string())),
        }
    }

    /// Applies the executor's result to the record: state, status, audit entries.
    fn checkpoint(
        &self,
        rec: &mut CaseRecord,
        personal: &mut PersonalRecord,
        mut case: Case,
        steps: Vec<StepRecord>,
        entries: &mut Vec<audit::Entry>,
    ) {
        for s in steps {
            let mut body = serde_json::to_value(&s).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut body {
                m.remove("case_id");
            }
            entries.push(audit::Entry::new(&rec.id, audit::Kind::Step, s.at, body));
        }
        rec.status = match case.status {
            Status::Running => CaseStatus::Running,
            Status::Waiting => CaseStatus::Waiting,
            Status::Completed => CaseStatus::Completed,
            Status::Escalated => CaseStatus::Escalated,
            Status::Failed => CaseStatus::Failed,
        };
        if case.status.is_final() {
            entries.push(audit::Entry::new(
                &rec.id,
                audit::Kind::Outcome,
                case.updated_at,
                json!({ "status": rec.status, "outcome": case.outcome, "error": case.reason,
                        "reply_digest": case.reply.as_ref().map(|r| digest(&json!(r.text))) }),
            ));
        }
        personal.data = std::mem::take(&mut case.data);
        personal.reply_text = case.reply.as_mut().map(|r| std::mem::take(&mut r.text));
        // The stored state keeps the reason; the full message is personal data.
        personal.error = case.error.take();
        case.error = case.reason.clone();
        rec.state = Some(case);
    }

    /// Makes sure the store holds the files of this workflow version.
    fn keep_version(&self, wf: &Workflow, batch: &mut Batch) {
        let mut known = self
            .stored_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if known.contains(&wf.digest) {
            return;
        }
        if let Ok(Some(_)) = self
            .store
            .backend()
            .get(Table::Workflows, wf.digest.as_bytes())
        {
            known.insert(wf.digest.clone());
            return;
        }
        let mut files = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&wf.dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.is_file()
                    && let (Some(name), Ok(text)) = (
                        path.file_name().and_then(|n| n.to_str()),
                        std::fs::read_to_string(&path),
                    )
                {
                    files.insert(name.to_string(), text);
                }
            }
        }
        batch.put(
            Table::Workflows,
            wf.digest.as_bytes(),
            &WorkflowBundle {
                id: wf.id.clone(),
                version: wf.version,
                digest: wf.digest.clone(),
                files,
            },
        );
        known.insert(wf.digest.clone());
    }

    /// The workflow version a case runs on: the current one if unchanged, else the stored
    /// files of its version, compiled again.
    pub(super) fn workflow(&self, case_id: &str, r: &WorkflowRef) -> Result<Arc<Workflow>, Error> {
        if let Some(wf) = self.catalog().get(&r.id)
            && wf.digest == r.digest
        {
            return Ok(wf.clone());
        }
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wf) = versions.get(&r.digest) {
            return Ok(wf.clone());
        }
        let fail = |message: String| Error::WorkflowVersion {
            case_id: case_id.to_string(),
            digest: r.digest.clone(),
            message,
        };
        let bundle = self
            .store
            .get_json::<WorkflowBundle>(Table::Workflows, r.digest.as_bytes(), "workflow version")?
            .ok_or_else(|| fail("its files are not in the store".into()))?;
        let dir = self.versions_dir.join(&r.digest).join(&bundle.id);
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        for (name, text) in &bundle.files {
            std::fs::write(dir.join(name), text).map_err(|e| fail(e.to_string()))?;
        }
        let wf = compile_dir(&dir, &self.rules).map_err(|d| {
            fail(
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        if wf.digest != r.digest {
            return Err(fail(format!("its files compile to version {}", wf.digest)));
        }
        let wf = Arc::new(wf);
        versions.insert(r.digest.clone(), wf.clone());
        Ok(wf)
    }
}

/// When the segment runs (the stored trigger's clock time).
fn pending_at(rec: &CaseRecord) -> jiff::Timestamp {
    rec.pending.as_ref().map(|p| p.at).unwrap_or(rec.updated_at)
}

/// A routing failure: the policy's script may have thrown or returned case data.
fn routing_failure(e: &routing::Error) -> Failure {
    let reason = match e {
        routing::Error::Script(e) => Failure::script(e).reason,
        routing::Error::NotARoute { file, .. } => format!("{file}: routing returned no route"),
        routing::Error::UnknownWorkflow { file, .. } => {
            format!("{file}: routing chose a workflow that does not exist")
        }
    };
    Failure {
        message: format!("routing failed: {e}"),
        reason: format!("routing failed: {reason}"),
    }
}
