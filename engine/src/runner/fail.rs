//! Failing a case whose stored work cannot be run.
//!
//! A segment that panics leaves the case's trigger stored: run again, by a worker or by
//! recovery at the next start, it would panic again, forever. The service catches the
//! panic (the engine does not: a panic inside a segment is also how tests model a box
//! that lost power) and ends the case here, with the reason on the case and in its audit
//! outcome.

use serde_json::json;

use super::{Error, Runner};
use crate::audit;
use crate::exec::{Status, Waiting};
use crate::store::{Batch, CaseRecord, CaseStatus, Notification, Table, timer_key};

impl Runner {
    /// Fails the case with `reason` and drops its stored work, open task and timer, so
    /// nothing runs it again. `reason` goes into the audit chain, so it must not quote case
    /// data. A case without stored work is left as it is (its status is returned).
    pub fn fail(&self, case_id: &str, reason: &str) -> Result<CaseStatus, Error> {
        let _lock = self.lock(case_id);
        let mut rec = self
            .store
            .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
            .ok_or_else(|| Error::NoCase(case_id.to_string()))?;
        if rec.pending.is_none() {
            return Ok(rec.status);
        }
        let at = self.clock.now();
        let mut batch = Batch::new();
        if let Some(w) = rec.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            if let Waiting::Task { task_id, .. } = w {
                batch.delete(Table::Tasks, task_id.as_bytes());
            }
            if let Some(due) = w.due() {
                batch.delete(Table::Timers, timer_key(due, case_id));
            }
        }
        if let Some(t) = rec.queue_task.take() {
            batch.delete(Table::Tasks, t.as_bytes());
        }
        rec.status = CaseStatus::Failed;
        rec.pending = None;
        rec.error = Some(reason.to_string());
        rec.updated_at = at;
        if let Some(state) = &mut rec.state {
            state.status = Status::Failed;
            state.error = Some(reason.to_string());
            state.waiting = None;
        }
        batch.audit(audit::Entry::new(
            case_id,
            audit::Kind::Outcome,
            at,
            json!({ "status": "failed", "error": reason }),
        ));
        // As in a segment that ends the case: its notification is stored with the end.
        if let Some(url) = &rec.reply_to {
            batch.put(
                Table::Notifications,
                case_id.as_bytes(),
                &Notification {
                    url: url.clone(),
                    since: at,
                },
            );
        }
        batch.delete(Table::Pending, case_id.as_bytes()).put(
            Table::Cases,
            case_id.as_bytes(),
            &rec,
        );
        self.store.commit(batch)?;
        Ok(rec.status)
    }
}
