//! The task trigger: a reviewer's completion of the human task a case waits on.
//!
//! Accepting it ([`Runner::complete_task`]) checks the task is still open and the decision
//! allowed, and stores the completion as the case's trigger. Processing it
//! ([`Runner::on_task`]) resumes the case's workflow at its human node; a case without a
//! workflow waits on a triage task, and there the decision routes it: close the case, or
//! start the chosen workflow on the request as the reviewer corrected it. Processing may
//! not check the completion again (it was checked under the case lock when accepted, and a
//! replay must take the same path) and writes only through its [`Segment`].
//!
//! A task is open while its row is in [`Table::Tasks`]; the commit that stores a completion
//! as the case's trigger also deletes the row, and every segment keeps the rows in step
//! with what the case waits on. Two reviewers may race on one task: the check that the
//! task is still open is made again under the case lock, so exactly one completion is
//! stored and the other is refused as [`Error::TaskAlreadyCompleted`] without touching the
//! case.

use serde_json::{Value, json};

use super::segment::{Outcome, Segment};
use super::triage::{self, CLOSE};
use super::{CASE_ID_LEN, Error, Runner};
use crate::audit;
use crate::classify::{Classification, Correction};
use crate::exec::{Event, Failure, TaskCompletion, Waiting, digest};
use crate::pipeline::{FRUSTRATION, SENTIMENT};
use crate::routing::Route;
use crate::store::{Batch, CaseRecord, CaseStatus, Pending, Table, TaskEntry, Trigger};

/// The case a task id belongs to: task ids start with their case's id (`<case>.triage`
/// for a triage task, `<case>-<node>-<visit>` for a workflow's human node).
pub(super) fn task_case(task_id: &str) -> Option<&str> {
    let case = task_id.get(..CASE_ID_LEN)?;
    let rest = &task_id[CASE_ID_LEN..];
    (case.starts_with("c-") && (rest.starts_with('.') || rest.starts_with('-'))).then_some(case)
}

/// The case waits on this task (a triage task, or the task of the node it waits at).
fn waits_on(rec: &CaseRecord, task_id: &str) -> bool {
    rec.queue_task.as_deref() == Some(task_id)
        || matches!(
            rec.state.as_ref().and_then(|s| s.waiting.as_ref()),
            Some(Waiting::Task { task_id: t, .. }) if t == task_id
        )
}

impl Runner {
    /// The open task `task_id`; or why there is none: [`Error::TaskAlreadyCompleted`] for
    /// a task that was open once, [`Error::NoTask`] for one that never was.
    pub fn task(&self, task_id: &str) -> Result<TaskEntry, Error> {
        match self
            .store
            .get_json::<TaskEntry>(Table::Tasks, task_id.as_bytes(), "task")?
        {
            Some(task) => Ok(task),
            None => Err(self.closed_task(task_id)?),
        }
    }

    /// Why `task_id` has no open task. Reads the case without its lock: a completion's
    /// trigger and the deletion of its task are one commit, and the segment that runs the
    /// trigger writes its audit records in the commit that clears it, so a reader always
    /// sees one or the other.
    fn closed_task(&self, task_id: &str) -> Result<Error, Error> {
        let no_task = || Error::NoTask(task_id.to_string());
        let Some(case_id) = task_case(task_id) else {
            return Ok(no_task());
        };
        let Some(rec) =
            self.store
                .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
        else {
            return Ok(no_task());
        };
        let closed = |reason| {
            Ok(Error::TaskAlreadyCompleted {
                task_id: task_id.to_string(),
                case_id: rec.id.clone(),
                status: rec.status,
                reason,
            })
        };
        if let Some(Pending {
            trigger: Trigger::Task { completion },
            ..
        }) = &rec.pending
            && completion.task_id == task_id
        {
            return closed("another completion of it is running");
        }
        let mut seen = false;
        for r in self.case_audit(case_id)? {
            let detail = match r.kind {
                audit::Kind::Step => &r.body["detail"],
                _ => &r.body,
            };
            if detail.get("task_id").and_then(Value::as_str) != Some(task_id) {
                continue;
            }
            seen = true;
            let event = detail.get("event").and_then(Value::as_str);
            if r.kind == audit::Kind::TaskCompleted || event == Some("task_completed") {
                return closed("it was completed");
            }
            if event == Some("sla_passed") {
                return closed("it passed its SLA and the case moved on");
            }
        }
        if seen {
            closed("the case moved on")
        } else {
            Ok(no_task())
        }
    }

    /// Stores a reviewer's completion durably, then runs the case on.
    pub fn complete_task(&self, completion: TaskCompletion) -> Result<CaseStatus, Error> {
        let case_id = {
            let task = self.task(&completion.task_id)?;
            let _lock = self.lock(&task.case_id);
            // A completion that won the lock first deleted the task with the commit that
            // stored its trigger: read it again under the lock, so the loser changes nothing.
            let task = self.task(&completion.task_id)?;
            let mut rec = self
                .store
                .get_json::<CaseRecord>(Table::Cases, task.case_id.as_bytes(), "case")?
                .ok_or_else(|| Error::NoCase(task.case_id.clone()))?;
            if rec.pending.is_some() {
                return Err(Error::Busy(rec.id));
            }
            if !waits_on(&rec, &task.task_id) {
                // A task row the case no longer waits on (never left by a segment).
                return Err(Error::TaskAlreadyCompleted {
                    task_id: task.task_id,
                    case_id: rec.id,
                    status: rec.status,
                    reason: "the case no longer waits on it",
                });
            }
            if !task.decisions.contains(&completion.decision) {
                return Err(Error::UnknownDecision {
                    task_id: task.task_id,
                    decision: completion.decision,
                    allowed: task.decisions,
                });
            }
            if rec.state.is_none() {
                // a triage task: the reviewer's intent becomes a training label, and the
                // reviewer may correct the request's fields before a workflow starts
                self.check_reviewed_intent(&completion)?;
                self.check_intent_served(&rec, &completion)?;
                triage::check_corrections(&completion.data)
                    .and(triage::reviewed_mood(&completion.data).map(|_| ()))
                    .map_err(|reason| Error::InvalidCorrection {
                        task_id: completion.task_id.clone(),
                        reason,
                    })?;
            }
            let now = self.clock.now();
            rec.pending = Some(Pending {
                trigger: Trigger::Task { completion },
                at: now,
            });
            rec.status = CaseStatus::Running;
            rec.updated_at = now;
            let mut batch = Batch::new();
            batch
                .put(Table::Cases, rec.id.as_bytes(), &rec)
                .put_raw(Table::Pending, rec.id.as_bytes(), Vec::new())
                .delete(Table::Tasks, task.task_id.as_bytes());
            self.store.commit(batch)?;
            rec.id
        };
        self.process(&case_id)
    }

    /// Refuses a triage completion whose `data.intent` is not a label the model knows (or,
    /// for a model without a fixed set, not label-shaped): a mistyped correction would
    /// otherwise be lost to training without anyone noticing.
    fn check_reviewed_intent(&self, completion: &TaskCompletion) -> Result<(), Error> {
        let refuse = |reason: String, allowed: Vec<String>| Error::InvalidIntent {
            task_id: completion.task_id.clone(),
            reason,
            allowed,
        };
        match triage::reviewed_intent(&completion.data) {
            None => Ok(()),
            Some(Err(())) => Err(refuse(
                "must be an intent label (at most 64 ASCII letters, digits, `_`, `-`)".into(),
                Vec::new(),
            )),
            Some(Ok(label)) => match self.classifier.labels() {
                Some(labels) if !labels.iter().any(|l| l == label) => Err(refuse(
                    format!("`{label}` is not a label of the model"),
                    labels.to_vec(),
                )),
                _ => Ok(()),
            },
        }
    }
}

impl Runner {
    /// Refuses a triage completion that starts a workflow answering per intent from a
    /// knowledge base for an intent it does not serve (the reviewer's `data.intent`, else
    /// the classified one): the case would have no answer to give.
    fn check_intent_served(
        &self,
        rec: &CaseRecord,
        completion: &TaskCompletion,
    ) -> Result<(), Error> {
        let Some(wf) = self.catalog().get(&completion.decision).cloned() else {
            return Ok(());
        };
        if wf.knowledge.is_none() {
            return Ok(());
        }
        let reviewed = triage::reviewed_intent(&completion.data).and_then(Result::ok);
        let classified = rec
            .classification
            .as_ref()
            .and_then(|c| c.get("intent"))
            .and_then(Value::as_str);
        if triage::case_intent(&wf.intents, reviewed, classified).is_some() {
            return Ok(());
        }
        let named = reviewed.or(classified).unwrap_or("none");
        Err(Error::InvalidIntent {
            task_id: completion.task_id.clone(),
            reason: format!(
                "workflow `{}` answers per intent and does not serve `{named}`; name the intent the request is about, one of the workflow's, in `data.intent`",
                wf.id
            ),
            allowed: wf.intents.clone(),
        })
    }
}

impl Runner {
    /// Runs a stored completion: resumes the workflow, or routes a triage decision.
    pub(super) fn on_task(
        &self,
        seg: &mut Segment<'_>,
        completion: TaskCompletion,
    ) -> Result<Outcome, Error> {
        if seg.rec.state.is_some() {
            return self.resume(seg, Event::TaskCompleted(completion));
        }
        self.on_triage_decision(seg, completion)
    }

    /// A case routed to a queue: the reviewer picks a workflow or closes it.
    fn on_triage_decision(
        &self,
        seg: &mut Segment<'_>,
        completion: TaskCompletion,
    ) -> Result<Outcome, Error> {
        let mut body = decision_record(&completion);
        let corrected = if completion.decision == CLOSE {
            Vec::new()
        } else {
            let data = &completion.data;
            self.correct(&mut seg.rec, &mut seg.personal, data, &mut seg.batch)
        };
        if let (Value::Object(m), false) = (&mut body, corrected.is_empty()) {
            // Which fields the reviewer corrected, never their values.
            m.insert("corrected".into(), json!(corrected));
        }
        seg.entries.push(audit::Entry::new(
            seg.case_id,
            audit::Kind::TaskCompleted,
            seg.at,
            body,
        ));
        seg.rec.queue_task = None;
        seg.rec.queue_reason = None;
        if completion.decision == CLOSE {
            seg.rec.status = CaseStatus::Completed;
            seg.entries.push(audit::Entry::new(
                seg.case_id,
                audit::Kind::Outcome,
                seg.at,
                json!({ "status": "completed", "outcome": "closed_by_reviewer" }),
            ));
            return Ok(Ok(None));
        }
        let Some(wf) = self.catalog().get(&completion.decision).cloned() else {
            return Ok(Err(Failure::public(format!(
                "the reviewer chose workflow `{}`, which is no longer published",
                completion.decision
            ))));
        };
        let request = match super::start::stored_request(seg) {
            Ok(r) => r,
            Err(failure) => return Ok(Err(failure)),
        };
        let stored = seg.rec.classification.clone().unwrap_or(Value::Null);
        let mut classification: Classification = match serde_json::from_value(stored) {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(Failure::public(format!(
                    "the stored classification cannot be read: {e}"
                ))));
            }
        };
        // The workflow sees the mood the reviewer read, not the model's.
        let mood = triage::reviewed_mood(&completion.data).unwrap_or_default();
        if let Some(label) = mood.sentiment {
            classification.signals.insert(
                SENTIMENT.into(),
                json!({ "label": label, "confidence": 1.0, "corrected": true }),
            );
        }
        if let Some(flagged) = mood.frustrated {
            classification.signals.insert(
                FRUSTRATION.into(),
                json!({ "score": if flagged { 1.0 } else { 0.0 }, "flagged": flagged, "corrected": true }),
            );
        }
        // The case is about the intent the reviewer's choice means, so a workflow that
        // answers per intent answers that one; what the model read stays beside it.
        let reviewed = triage::reviewed_intent(&completion.data).and_then(Result::ok);
        let model_intent = classification.intent.clone();
        if let Some(intent) = triage::case_intent(&wf.intents, reviewed, model_intent.as_deref()) {
            classification.intent = Some(intent.clone());
        }
        classification.corrected_by_reviewer = Some(Correction {
            workflow: wf.id.clone(),
            intents: wf.intents.clone(),
            by: completion.by.clone(),
            model_intent,
        });
        seg.rec.route = Some(Route::Workflow {
            workflow: wf.id.clone(),
            rule: format!("reviewer {}", completion.by),
            risk: Some(wf.risk),
            threshold: None,
        });
        self.start_workflow(seg, &wf, &request, &classification)
    }
}

/// The audit body of a triage decision: who decided what, the reviewer's intent label (or
/// that one was refused), and only a digest of the comment.
fn decision_record(completion: &TaskCompletion) -> Value {
    let mut body = json!({ "task_id": completion.task_id, "decision": completion.decision,
                "by": completion.by,
                "comment_digest": completion.comment.as_ref().map(|c| digest(&json!(c))) });
    if let (Value::Object(m), Some(intent)) = (&mut body, triage::reviewed_intent(&completion.data))
    {
        match intent {
            Ok(label) => m.insert("intent".into(), json!(label)),
            Err(()) => m.insert("intent_refused".into(), json!(true)),
        };
    }
    // Checked when the completion was accepted: labels and a boolean, no personal datum.
    let mood = triage::reviewed_mood(&completion.data).unwrap_or_default();
    if let Value::Object(m) = &mut body {
        if let Some(label) = mood.sentiment {
            m.insert("sentiment".into(), json!(label));
        }
        if let Some(flagged) = mood.frustrated {
            m.insert("frustrated".into(), json!(flagged));
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_names_its_case() {
        let case = "c-019ae3f2b7c-0a1b2c3d4e5f";
        assert_eq!(case.len(), CASE_ID_LEN);
        assert_eq!(task_case(&format!("{case}.triage")), Some(case));
        assert_eq!(task_case(&format!("{case}-approve-2")), Some(case));
        for not in [
            "t-none",
            "",
            case,
            "c-019ae3f2b7c-0a1b2c3d4e5fX",
            "ü".repeat(20).as_str(),
        ] {
            assert_eq!(task_case(not), None, "{not}");
        }
    }
}
