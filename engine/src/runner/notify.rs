//! The stored `reply_to` notifications of final cases ([`Table::Notifications`]): what a
//! sender lists, reads and deletes. Sending them is the application's job; the entry is
//! written by the segment that makes the case final ([`Runner::process`]).

use super::{Error, Runner};
use crate::store::{Batch, Notification, Table, decode};

impl Runner {
    /// Stored notifications in case-id order (oldest case first), starting after the case
    /// `after` (from the first when `None`), at most `limit`.
    pub fn notifications(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Notification)>, Error> {
        let from = match after {
            // The smallest key greater than `after`.
            Some(a) => [a.as_bytes(), &[0]].concat(),
            None => Vec::new(),
        };
        self.store
            .backend()
            .range(Table::Notifications, &from, None, limit)?
            .into_iter()
            .map(|(k, v)| {
                let n: Notification = decode("notification", &k, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    /// The stored notification of a case, if it is still to be sent.
    pub fn notification(&self, case_id: &str) -> Result<Option<Notification>, Error> {
        Ok(self
            .store
            .get_json(Table::Notifications, case_id.as_bytes(), "notification")?)
    }

    /// Number of stored notifications not yet delivered.
    pub fn notifications_pending(&self) -> Result<usize, Error> {
        Ok(self.store.scan_keys(Table::Notifications, b"")?.len())
    }

    /// Forgets a case's notification: delivered, or refused for good.
    pub fn notification_done(&self, case_id: &str) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete(Table::Notifications, case_id.as_bytes());
        Ok(self.store.commit(batch)?)
    }
}
