//! One segment of a case: from its stored trigger to the next checkpoint.
//!
//! What every trigger shares lives here: loading the case under its lock, the executor on
//! the trigger's clock time, resuming a workflow where it waits, and committing the
//! outcome in one batch (the checkpoint, the tasks and timers that follow the case's new
//! waiting state, the audit records, the notification of a final case). What a trigger
//! does with the case lives in its own file (`start.rs`, `task.rs`, `timer.rs`), which
//! [`Runner::process`] picks by the stored trigger; this file knows none of them.
//!
//! A trigger works on its [`Segment`] only. It writes nothing to the store itself: its
//! writes go into [`Segment::batch`], committed here with the rest, so a crash leaves the
//! trigger stored and none of its work (only the outbox records a call that changes the
//! back office before it is sent, so a replay sends it again with the same key). Its "now"
//! is [`Segment::at`], never the runner's clock, so a replay takes the same path.

use serde_json::{Value, json};

use super::locks::{Guarded, Held};
use super::outbox::Outbox;
use super::{Error, Processed, Runner};
use crate::audit;
use crate::exec::{
    Case, Event, Executor, Failure, ManualClock, Status, StepRecord, Waiting, digest,
};
use crate::store::{
    Batch, CaseRecord, CaseStatus, Direction, Message, Notification, PersonalRecord, Table,
    TaskEntry, Trigger, timer_key,
};

/// The working parts of one segment, handed to the trigger that runs it.
pub(super) struct Segment<'a> {
    pub case_id: &'a str,
    /// The stored trigger's clock time: the segment's "now", the same on a replay.
    pub at: jiff::Timestamp,
    pub rec: CaseRecord,
    pub personal: PersonalRecord,
    /// Runs on a clock fixed at [`Segment::at`], its calls through the outbox.
    pub exec: Executor<'a>,
    /// The trigger's writes, committed with the checkpoint.
    pub batch: Batch,
    /// The trigger's audit records, ordered and chained at the commit.
    pub entries: Vec<audit::Entry>,
    /// Holds the audit records of the segment's connector calls.
    outbox: &'a Outbox<'a>,
    /// What the case waited on before the segment: its task and timer rows go at the commit.
    waited: Option<Waiting>,
    /// The triage task the case had before the segment: its row goes if the task closed.
    queue_task: Option<String>,
}

/// What a trigger made of the case: the executor's new state and its steps; `None` when
/// the trigger set the record itself (parked in triage, closed by a reviewer); or why the
/// case failed. Every outcome is committed. A trigger returns `Result<Outcome, Error>`:
/// an [`Error`] (the store, a workflow version that cannot be loaded) commits nothing and
/// leaves the trigger stored, to run again.
pub(super) type Outcome = Result<Option<(Case, Vec<StepRecord>)>, Failure>;

impl Runner {
    /// Runs one segment of the case, if it has stored work: loads the case under its lock,
    /// hands the segment and its trigger to `run`, and commits the outcome. Returns the
    /// case's status afterwards.
    pub(super) fn segment(
        &self,
        case_id: &str,
        run: impl FnOnce(&mut Segment<'_>, Trigger) -> Result<Outcome, Error>,
    ) -> Result<Segmented, Error> {
        let lock = self.lock(case_id);
        let rec = self
            .store
            .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
            .ok_or_else(|| Error::NoCase(case_id.to_string()))?;
        let Some(pending) = rec.pending.clone() else {
            return Ok(Segmented::Idle(rec.status));
        };
        let personal = self
            .store
            .get_json::<PersonalRecord>(Table::Personal, case_id.as_bytes(), "personal data")?
            .unwrap_or_else(PersonalRecord::empty);
        let clock = ManualClock::new(pending.at);
        let outbox = Outbox {
            store: &self.store,
            inner: self.connector.as_ref(),
            at: pending.at,
            audit: std::sync::Mutex::new(Vec::new()),
            answered: std::sync::Mutex::new(Vec::new()),
        };
        let mut seg = Segment {
            case_id,
            at: pending.at,
            waited: rec.state.as_ref().and_then(|c| c.waiting.clone()),
            queue_task: rec.queue_task.clone(),
            rec,
            personal,
            exec: Executor::new(&self.rules, &clock, &outbox),
            batch: Batch::new(),
            entries: Vec::new(),
            outbox: &outbox,
        };
        let outcome = run(&mut seg, pending.trigger)?;
        Ok(Segmented::Ready(self.conclude(seg, outcome, lock)))
    }

    /// Resumes the case's workflow where it waits, on `event`. A stored case that lost its
    /// state or workflow version (a damaged or tampered data directory) fails with the
    /// reason; it must not panic a worker.
    pub(super) fn resume(&self, seg: &mut Segment<'_>, event: Event) -> Result<Outcome, Error> {
        let (Some(mut case), Some(wref)) = (seg.rec.state.clone(), seg.rec.workflow.clone()) else {
            let missing = if seg.rec.state.is_none() {
                "workflow state"
            } else {
                "workflow version"
            };
            let what = match event {
                Event::TaskCompleted(_) => "a task completion",
                Event::TimerFired => "a timer",
                Event::Answered(_) => "a customer's answer",
            };
            return Ok(Err(Failure::public(format!(
                "the stored case is inconsistent: {what} is stored for it, but it has no {missing} to resume"
            ))));
        };
        case.data = seg.personal.data.clone();
        if let Some(reply) = &mut case.reply {
            reply.text = seg.personal.reply_text.clone().unwrap_or_default();
        }
        let wf = self.workflow(&seg.rec.id, &wref)?;
        Ok(match seg.exec.resume(&wf, &mut case, event) {
            Ok(steps) => Ok(Some((case, steps))),
            // Resumption errors name cases, tasks, decisions and times only.
            Err(e) => Err(Failure::public(e.to_string())),
        })
    }

    /// Concludes the segment into the batch that commits it: the outcome, the tasks and
    /// timers that follow it, the audit records, the notification of a final case, and the
    /// stored trigger cleared. The case's lock goes with it, to be released once the batch
    /// is durable.
    fn conclude(&self, mut seg: Segment<'_>, outcome: Outcome, lock: Held) -> Guarded<Processed> {
        let had_reply = seg.rec.state.as_ref().is_some_and(|c| c.reply.is_some());
        match outcome {
            Ok(Some((case, steps))) => checkpoint(&mut seg, case, steps),
            Ok(None) => {}
            Err(failure) => record_failure(&mut seg, failure),
        }
        if !had_reply && seg.rec.state.as_ref().is_some_and(|c| c.reply.is_some()) {
            record_contact(&mut seg);
        }
        follow_waiting(&mut seg);
        let asked = converse(&mut seg);
        let calls =
            std::mem::take(&mut *seg.outbox.audit.lock().unwrap_or_else(|e| e.into_inner()));
        seg.entries.extend(calls);
        let answered = std::mem::take(
            &mut *seg
                .outbox
                .answered
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for entry in &answered {
            seg.batch.put(Table::Outbox, entry.key.as_bytes(), entry);
        }
        // Classification and routing first; then the segment's calls in the order they
        // happened, then its steps (which refer to the calls by idempotency key); the
        // outcome last. The sort is stable, so each group keeps its own order.
        seg.entries.sort_by_key(|e| match e.kind {
            audit::Kind::Classified | audit::Kind::Routed | audit::Kind::TaskCompleted => 0,
            audit::Kind::Call => 1,
            audit::Kind::Outcome => 3,
            _ => 2,
        });
        let Segment {
            case_id,
            at,
            mut rec,
            personal,
            mut batch,
            entries,
            ..
        } = seg;
        for e in entries {
            batch.audit(e);
        }
        rec.updated_at = at;
        // A case that now waits for an answer the customer already sent takes it at once:
        // the message becomes the next trigger, in this commit (see `message.rs`).
        rec.pending = match (&rec.state, personal.unanswered_message()) {
            (Some(state), Some(m))
                if rec.status == CaseStatus::Waiting
                    && matches!(state.waiting, Some(Waiting::Answer { .. })) =>
            {
                rec.status = CaseStatus::Running;
                Some(crate::store::Pending {
                    trigger: Trigger::Message {
                        message_id: m.message_id.clone(),
                    },
                    at,
                })
            }
            _ => None,
        };
        // Only the segment that makes a case final gets here with a final status (a final
        // case has no stored work), so the notification is stored exactly once, in the same
        // commit: a final case with `reply_to` has either this entry or has been notified.
        // A question to the customer is sent the same way (the same entry: a case has one
        // notification pending at most, and the later one carries the newer state).
        let asks = asked && rec.pending.is_none();
        let notify = (rec.status.is_final() || asks) && rec.reply_to.is_some();
        if notify && let Some(url) = &rec.reply_to {
            batch.put(
                Table::Notifications,
                case_id.as_bytes(),
                &Notification {
                    url: url.clone(),
                    since: at,
                },
            );
        }
        if rec.pending.is_none() {
            batch.delete(Table::Pending, case_id.as_bytes());
        }
        batch
            .put(Table::Personal, case_id.as_bytes(), &personal)
            .put(Table::Cases, case_id.as_bytes(), &rec);
        Guarded {
            batch,
            value: Processed {
                status: rec.status,
                notify,
            },
            lock: Some(lock),
        }
    }
}

/// What [`Runner::segment`] came to.
pub(super) enum Segmented {
    /// The case had no stored work: nothing ran, nothing is to be written.
    Idle(CaseStatus),
    /// The segment ran; its batch is to be committed, with the case's lock held until it
    /// is durable, and it left the case where `value` says.
    Ready(Guarded<Processed>),
}

/// Applies the executor's result to the record: state, status, audit entries.
fn checkpoint(seg: &mut Segment<'_>, mut case: Case, steps: Vec<StepRecord>) {
    let (rec, personal) = (&mut seg.rec, &mut seg.personal);
    for s in steps {
        let mut body = serde_json::to_value(&s).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut body {
            m.remove("case_id");
        }
        seg.entries
            .push(audit::Entry::new(&rec.id, audit::Kind::Step, s.at, body));
    }
    rec.status = match case.status {
        Status::Running => CaseStatus::Running,
        Status::Waiting => CaseStatus::Waiting,
        Status::Completed => CaseStatus::Completed,
        Status::Escalated => CaseStatus::Escalated,
        Status::Failed => CaseStatus::Failed,
    };
    if case.status.is_final() {
        seg.entries.push(audit::Entry::new(
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

/// A proactive case's first reply is a contact for its workflow's purpose: counted by
/// `contacts(purpose, days)` in later cases of the customer, and recorded in the audit
/// trail. A case the customer started is no contact of this kind.
fn record_contact(seg: &mut Segment<'_>) {
    let purpose = seg.personal.request["purpose"].as_str().unwrap_or_default();
    let (Some(customer), true) = (
        seg.rec.customer.as_deref(),
        matches!(seg.rec.channel.as_str(), "event" | "schedule") && !purpose.is_empty(),
    ) else {
        return;
    };
    seg.batch
        .put_contact(customer, purpose, seg.at, seg.case_id);
    seg.entries.push(audit::Entry::new(
        seg.case_id,
        audit::Kind::Contacted,
        seg.at,
        json!({ "customer": customer, "purpose": purpose,
                "reply_digest": seg.personal.reply_text.as_ref().map(|t| digest(&json!(t))) }),
    ));
}

/// Fails the case. The case record, the log and the audit trail get the reason; the
/// message (it may quote case data) goes to the erasable personal record.
fn record_failure(seg: &mut Segment<'_>, Failure { message, reason }: Failure) {
    tracing::warn!(case = %seg.case_id, "{reason}");
    let rec = &mut seg.rec;
    rec.status = CaseStatus::Failed;
    rec.error = Some(reason.clone());
    seg.entries.push(audit::Entry::new(
        seg.case_id,
        audit::Kind::Outcome,
        seg.at,
        json!({ "status": "failed", "error": reason }),
    ));
    seg.personal.error = Some(message);
    if let Some(state) = &mut rec.state {
        state.status = Status::Failed;
        state.error = Some(reason.clone());
        state.reason = Some(reason);
        state.waiting = None;
    }
}

/// The question a case sent in this segment joins its conversation, with its audit record
/// (the text is in the personal record; the step record of the `ask` node has its digest).
fn converse(seg: &mut Segment<'_>) -> bool {
    let Some(q) = question(seg.waited.as_ref(), &seg.rec, &seg.personal) else {
        return false;
    };
    seg.entries.push(audit::Entry::new(
        seg.case_id,
        audit::Kind::Message,
        q.at,
        json!({ "direction": "out", "message_id": q.message_id, "node": q.node,
            "channel": q.channel, "language": q.language,
            "text_digest": digest(&json!(q.text)), "via": q.via,
            "reference": crate::reference::of(seg.case_id) }),
    ));
    seg.personal.messages.push(q);
    true
}

/// Tasks and timers follow the case's new waiting state: the rows of what it waited on go,
/// the rows of what it waits on now are written.
fn follow_waiting(seg: &mut Segment<'_>) {
    let (case_id, batch) = (seg.case_id, &mut seg.batch);
    if let Some(old) = &seg.waited {
        if let Waiting::Task { task_id, .. } = old {
            batch.delete(Table::Tasks, task_id.as_bytes());
        }
        if let Some(due) = old.due() {
            batch.delete(Table::Timers, timer_key(due, case_id));
        }
    }
    if let Some(t) = seg
        .queue_task
        .take()
        .filter(|_| seg.rec.queue_task.is_none())
    {
        batch.delete(Table::Tasks, t.as_bytes());
    }
    let Some(w) = seg.rec.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
        return;
    };
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
                priority: seg.rec.why.as_ref().map(|w| w.priority).unwrap_or_default(),
                why: seg.rec.why.clone(),
            },
        );
    }
    if let Some(due) = w.due() {
        batch.put_raw(Table::Timers, timer_key(due, case_id), Vec::new());
    }
}

/// The question the segment's case just sent, as a message of the conversation: when the
/// case waits on an `ask` node it did not wait on before (or asks it again).
fn question(
    seg_waited: Option<&Waiting>,
    rec: &CaseRecord,
    personal: &PersonalRecord,
) -> Option<Message> {
    let Some(Waiting::Answer { node, asked_at, .. }) = rec.state.as_ref()?.waiting.as_ref() else {
        return None;
    };
    if matches!(seg_waited, Some(Waiting::Answer { asked_at: before, node: n, .. }) if before == asked_at && n == node)
    {
        return None;
    }
    let reply = rec.state.as_ref()?.reply.as_ref()?;
    Some(Message {
        message_id: format!("q-{}-{}", node, asked_at.as_millisecond()),
        direction: Direction::Out,
        channel: rec.channel.clone(),
        text: personal.reply_text.clone().unwrap_or_default(),
        fields: serde_json::Map::new(),
        language: Some(reply.language.clone()),
        at: *asked_at,
        node: Some(node.clone()),
        via: "question".into(),
    })
}
