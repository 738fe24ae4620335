//! Failing a case whose stored work cannot be run.
//!
//! A segment that panics leaves the case's trigger stored: run again, by a worker or by
//! recovery at the next start, it would panic again, forever. The service catches the
//! panic (the engine does not: a panic inside a segment is also how tests model a box
//! that lost power) and ends the case here, through the segment's own commit, so a case
//! failed this way is stored, audited and notified like any case that failed.

use super::{Error, Runner};
use crate::exec::Failure;
use crate::store::CaseStatus;

impl Runner {
    /// Fails the case with `reason` and drops its stored work, open task and timer, so
    /// nothing runs it again. `reason` goes into the audit chain, so it must not quote case
    /// data. A case without stored work is left as it is (its status is returned).
    pub fn fail(&self, case_id: &str, reason: &str) -> Result<CaseStatus, Error> {
        let now = self.clock.now();
        let segmented = self.segment(case_id, |seg, _trigger| {
            // The stored trigger is dropped unrun: the case fails now, not when the trigger
            // was stored, and with it goes its triage task, if it had one.
            seg.at = now;
            seg.rec.queue_task = None;
            Ok(Err(Failure::public(reason.to_string())))
        })?;
        self.settle(segmented)
    }
}
