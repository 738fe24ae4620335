//! The timer trigger: a case's timer or the SLA of the task it waits on came due.
//!
//! Arming ([`Runner::arm_due`]) stores the trigger, under the case lock, for each case
//! whose due time has passed and that has no other work stored; a timer row the case no
//! longer waits on is dropped. Processing ([`Runner::on_timer`]) resumes the workflow with
//! the timer's event; the executor decides what came due. Processing may not look at the
//! timer rows (the commit rewrites them from the case's new waiting state) and writes only
//! through its [`Segment`].

use jiff::Timestamp;

use super::segment::{Outcome, Segment};
use super::{Error, Runner};
use crate::exec::Event;
use crate::store::{Batch, CaseStatus, Pending, Row, Trigger};

impl Runner {
    /// Fires every timer and SLA due by `now`; returns the cases moved on.
    pub fn fire_due(&self, now: Timestamp) -> Result<Vec<String>, Error> {
        let armed = self.arm_due(now)?;
        for case_id in &armed {
            self.process(case_id)?;
        }
        Ok(armed)
    }

    /// Stores a timer trigger for every case whose timer or SLA is due by `now` and returns
    /// those cases without running them: the caller runs each ([`Runner::process`]), the
    /// service under the same panic guard as its workers. An armed case is pending, so
    /// recovery runs it if the box stops first.
    pub fn arm_due(&self, now: Timestamp) -> Result<Vec<String>, Error> {
        let mut fired = Vec::new();
        for due in self.store.timers().due(now, 1024)? {
            if self.arm(due.row, &due.case_id, now)? {
                fired.push(due.case_id);
            }
        }
        Ok(fired)
    }

    /// Drops the timer row `timer` and, if the case is due and has no other work stored,
    /// stores its timer trigger in the same commit. Returns whether it did.
    fn arm(&self, timer: Row, case_id: &str, now: Timestamp) -> Result<bool, Error> {
        let _lock = self.lock(case_id);
        let mut batch = Batch::new();
        batch.remove(timer);
        let rec = self.store.cases().get(case_id)?;
        let armed = match rec {
            Some(mut rec)
                if rec.pending.is_none()
                    && rec
                        .state
                        .as_ref()
                        .and_then(|c| c.waiting.as_ref())
                        .and_then(|w| w.due())
                        .is_some_and(|d| d <= now) =>
            {
                rec.pending = Some(Pending {
                    trigger: Trigger::Timer,
                    at: now,
                });
                rec.status = CaseStatus::Running;
                rec.updated_at = now;
                batch.put_case(&rec).mark_pending(&rec.id);
                true
            }
            // A stale timer: the case moved on (or is busy and keeps its own).
            _ => false,
        };
        self.store.commit(batch)?;
        Ok(armed)
    }

    /// Runs a stored timer trigger: the workflow moves on from where it waits.
    pub(super) fn on_timer(&self, seg: &mut Segment<'_>) -> Result<Outcome, Error> {
        self.resume(seg, Event::TimerFired)
    }
}
