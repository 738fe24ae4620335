//! The stored `reply_to` notifications of final cases ([`Store::notifications`](crate::store::Store::notifications)): what a
//! sender lists, reads and deletes. Sending them is the application's job; the entry is
//! written by the segment that makes the case final ([`Runner::process`]).

use super::{Error, Runner};
use crate::store::{Batch, Notification};

impl Runner {
    /// Stored notifications in case-id order (oldest case first), starting after the case
    /// `after` (from the first when `None`), at most `limit`.
    pub fn notifications(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Notification)>, Error> {
        Ok(self.store.notifications().after(after, limit)?)
    }

    /// The stored notification of a case, if it is still to be sent.
    pub fn notification(&self, case_id: &str) -> Result<Option<Notification>, Error> {
        Ok(self.store.notifications().get(case_id)?)
    }

    /// Number of stored notifications not yet delivered.
    pub fn notifications_pending(&self) -> Result<usize, Error> {
        Ok(self.store.notifications().count()?)
    }

    /// Forgets a case's notification once the one stored at `since` was delivered (or
    /// refused for good): under the case's lock, so a newer notification a segment stored
    /// meanwhile (a case that asked a question, then ended) stays to be sent. `None`
    /// forgets whatever is stored.
    pub fn notification_sent(
        &self,
        case_id: &str,
        since: Option<jiff::Timestamp>,
    ) -> Result<(), Error> {
        let _lock = self.lock(case_id);
        if let Some(since) = since
            && self
                .store
                .notifications()
                .get(case_id)?
                .is_some_and(|n| n.since != since)
        {
            return Ok(());
        }
        self.notification_done(case_id)
    }

    /// Forgets a case's notification: delivered, or refused for good.
    pub fn notification_done(&self, case_id: &str) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete_notification(case_id);
        Ok(self.store.commit(batch)?)
    }
}
