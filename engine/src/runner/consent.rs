//! Consents: per customer and purpose (`service`, `marketing`, …), whether the customer
//! agreed to be contacted, with every change kept (who recorded it, from which source,
//! when the customer said it). Set through `PUT /v1/customers/{id}/consents/{purpose}` or
//! a `consent.changed` event; read by proactive cases through the snapshot taken when
//! they are accepted (`proactive.rs`).
//!
//! Stored under the customer's pseudonym; each change also goes to the audit chain under
//! `customer:<pseudonym>` (purpose, granted, source, times: no customer number). Erasure
//! deletes the rows; the audit records stay, pseudonymous like the rest of the chain.

use jiff::Timestamp;
use serde_json::json;

use super::{Error, Runner};
use crate::audit;
use crate::store::{Batch, ConsentChange, ConsentRecord};

/// Purposes a box keeps at most per customer: a bound on one customer's rows.
pub const MAX_PURPOSES: usize = 32;

/// Changes a consent keeps in its history (the oldest go first).
pub const MAX_HISTORY: usize = 100;

/// A consent change as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub purpose: String,
    pub granted: bool,
    /// The system or channel the customer said it in.
    pub source: String,
    /// When the customer said it; default: when it is recorded.
    pub at: Option<Timestamp>,
    /// The token that records it.
    pub by: String,
}

/// `marketing`: 1–64 lower-case letters, digits and `_`, starting with a letter.
pub fn is_purpose(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Runner {
    /// Records a consent change durably and returns the consent as it now stands.
    pub fn change_consent(
        &self,
        customer_id: &str,
        change: &Change,
    ) -> Result<ConsentRecord, Error> {
        // The same lock as event intake: a PUT and a `consent.changed` event keep their order.
        let _starts = self.starts_lock();
        let mut batch = Batch::new();
        let record = self.change_consent_in(&mut batch, customer_id, change, self.clock.now())?;
        self.store.commit(batch)?;
        Ok(record)
    }

    /// The consent change as writes to `batch` (the event intake commits it with the rest
    /// of the event).
    pub(super) fn change_consent_in(
        &self,
        batch: &mut Batch,
        customer_id: &str,
        change: &Change,
        now: Timestamp,
    ) -> Result<ConsentRecord, Error> {
        let customer = self.store.pseudonym(customer_id);
        let previous = self.store.consents().get(&customer, &change.purpose)?;
        if previous.is_none() && self.store.consents().of(&customer)?.len() >= MAX_PURPOSES {
            return Err(Error::InvalidConsent(format!(
                "a customer has at most {MAX_PURPOSES} consent purposes"
            )));
        }
        let current = ConsentChange {
            granted: change.granted,
            source: change.source.clone(),
            at: change.at.unwrap_or(now),
            by: change.by.clone(),
            recorded_at: now,
        };
        let record = match previous {
            Some(mut r) => {
                r.history.push(std::mem::replace(&mut r.current, current));
                let extra = r.history.len().saturating_sub(MAX_HISTORY);
                r.history.drain(..extra);
                r
            }
            None => ConsentRecord {
                purpose: change.purpose.clone(),
                current,
                history: Vec::new(),
            },
        };
        batch
            .put_consent(&customer, &record)
            .audit(audit::Entry::new(
                format!("customer:{customer}"),
                audit::Kind::ConsentChanged,
                now,
                json!({
                    "customer": customer,
                    "purpose": record.purpose,
                    "granted": record.current.granted,
                    "source": record.current.source,
                    "at": record.current.at,
                    "by": record.current.by,
                }),
            ));
        Ok(record)
    }

    /// The customer's consents, by purpose.
    pub fn consents(&self, customer_id: &str) -> Result<Vec<ConsentRecord>, Error> {
        Ok(self
            .store
            .consents()
            .of(&self.store.pseudonym(customer_id))?)
    }
}
