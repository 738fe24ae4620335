//! Erasure of a customer's personal data (GDPR).
//!
//! What goes, for every finished case of the customer: the personal record (request, case
//! data, reply text, the full failure message), the `reply_to` URL and any notification
//! still waiting to be sent, the outbox entries of the case's back-office calls (their
//! answers carry customer ids, amounts, addresses) and the idempotency keys that point at
//! the case (a submitter may have built them from personal data). What stays: the case
//! record (ids, status, digests, the failure reason without values) and the audit trail,
//! which records *that* data was erased. Nothing else in the store holds personal data:
//! the audit trail and the case record carry reasons and digests only (see
//! [`crate::exec::Failure`]).
//!
//! This removes the data from the store's tables. The bytes can survive in the backend's
//! freed pages until they are reused; `casegraph erase` therefore rewrites the store
//! afterwards ([`crate::store::rewrite`], ADR 0008).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;

use super::{Error, Runner};
use crate::audit;
use crate::store::{Batch, CaseRecord, Row, Store, archive};
use jiff::Timestamp;

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The customer's pseudonym on this box.
    pub customer: String,
    /// Cases whose personal data was erased.
    pub erased: Vec<String>,
    /// Unfinished cases, left as they are: they need their data to finish. Erase again
    /// once they have ended.
    pub unfinished: Vec<String>,
}

impl Runner {
    /// Erases the personal data of every finished case of `customer_id`.
    pub fn erase_customer(&self, customer_id: &str, by: &str) -> Result<Erasure, Error> {
        erase_customer(&self.store, customer_id, by, self.clock.now())
    }
}

/// Erases the personal data of every finished case of `customer_id`. Needs no case locks:
/// finished cases are never written by anything else. Each case goes in one commit, so a
/// crash leaves every case either whole or erased; erasing again finishes the rest.
pub fn erase_customer(
    store: &Store,
    customer_id: &str,
    by: &str,
    now: Timestamp,
) -> Result<Erasure, Error> {
    let customer = store.pseudonym(customer_id);
    let case_ids = store.customer_cases().of(&customer)?;
    // The customer's consents and contacts go first, in one commit: they are personal data
    // of the customer, not of a case; the audit chain keeps the pseudonymous changes.
    let mut rows = store.consents().rows_of(&customer)?;
    rows.extend(store.contacts().rows_of(&customer)?);
    if !rows.is_empty() {
        let mut batch = Batch::new();
        for row in rows {
            batch.remove(row);
        }
        batch.audit(audit::Entry::new(
            format!("customer:{customer}"),
            audit::Kind::Erased,
            now,
            json!({ "customer": customer, "by": by, "what": ["consents", "contacts"] }),
        ));
        store.commit(batch)?;
    }
    let mut result = Erasure {
        customer: customer.clone(),
        erased: Vec::new(),
        unfinished: Vec::new(),
    };
    // Idempotency rows by case, read once, when the first case is erased.
    let mut idempotency: Option<HashMap<String, Vec<Row>>> = None;
    for case_id in case_ids {
        let Some(mut rec) = store.cases().get(&case_id)? else {
            continue;
        };
        if rec.erased {
            continue;
        }
        if !rec.status.is_final() || rec.pending.is_some() {
            result.unfinished.push(case_id);
            continue;
        }
        strip(&mut rec, now);
        let mut batch = Batch::new();
        // A notification not yet delivered goes too: its URL is the submitter's and its
        // body would carry the erased reply.
        batch
            .delete_personal(&case_id)
            .delete_notification(&case_id);
        // A final case replays no call.
        for call in store.outbox().of_case(&case_id)? {
            batch.remove(call);
        }
        let by_case = match &mut idempotency {
            Some(map) => map,
            None => idempotency.insert(store.idempotency().rows_by_case()?),
        };
        for row in by_case.remove(&case_id).unwrap_or_default() {
            batch.remove(row);
        }
        batch.put_case(&rec).audit(audit::Entry::new(
            &case_id,
            audit::Kind::Erased,
            now,
            json!({ "customer": customer, "by": by,
                    "what": ["request", "case_data", "reply_text", "error_message",
                             "reply_to", "notification", "outbox", "idempotency_keys"] }),
        ));
        store.commit(batch)?;
        result.erased.push(case_id);
    }
    Ok(result)
}

/// Marks a case record erased and drops what in it could quote personal data.
fn strip(rec: &mut CaseRecord, now: Timestamp) {
    rec.erased = true;
    rec.reply_to = None;
    rec.updated_at = now;
    if let Some(state) = &mut rec.state {
        // Records written before failures were split into message and reason kept the
        // message here, value and all.
        state.error = match (&state.reason, &state.error) {
            (Some(reason), _) => Some(reason.clone()),
            (None, Some(_)) => Some("erased with the case's personal data".into()),
            (None, None) => None,
        };
    }
}

/// Erases the personal data of `customer_id`'s cases in the archive `files` (ADR 0012):
/// each file that holds one is rewritten without it (personal record, back-office answers,
/// idempotency keys, `reply_to`) and replaced by rename; its audit records stay as they
/// are, and the live chain records the erasure. Returns the erased case ids per file.
pub fn erase_archived(
    store: &Store,
    customer_id: &str,
    by: &str,
    files: &[std::path::PathBuf],
    now: Timestamp,
) -> Result<Vec<(std::path::PathBuf, Vec<String>)>, archive::Error> {
    let customer = store.pseudonym(customer_id);
    let mut result = Vec::new();
    for path in files {
        let erased = archive::rewrite_cases(path, |c| {
            if c.case.customer.as_deref() != Some(customer.as_str()) || c.case.erased {
                return false;
            }
            strip(&mut c.case, now);
            c.personal = None;
            c.outbox.clear();
            c.idempotency_keys.clear();
            true
        })?;
        if !erased.is_empty() {
            let mut batch = Batch::new();
            for case_id in &erased {
                batch.audit(audit::Entry::new(
                    case_id,
                    audit::Kind::Erased,
                    now,
                    json!({ "customer": customer, "by": by, "archived": true,
                        "what": ["request", "case_data", "reply_text", "error_message",
                                 "reply_to", "outbox", "idempotency_keys"] }),
                ));
            }
            store.commit(batch)?;
        }
        result.push((path.clone(), erased));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        CaseStatus, IdempotencyEntry, Notification, Options, OutboxEntry, OutboxState,
        PersonalRecord, Table, key,
    };
    use serde_json::Value;

    #[test]
    fn erasure_drops_a_notification_not_yet_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Options::default()).expect("store");
        let customer = store.pseudonym("C-1");
        let at = Timestamp::UNIX_EPOCH;
        let rec = CaseRecord {
            reply_to: Some("http://crm.local/hooks/C-1".into()),
            ..finished_record("c-1", &customer)
        };
        let mut batch = Batch::new();
        batch
            .put(Table::Cases, "c-1", &rec)
            .put(
                Table::Personal,
                "c-1",
                &PersonalRecord {
                    request: Value::Null,
                    data: Value::Null,
                    reply_text: Some("Dear customer".into()),
                    error: None,
                    messages: Vec::new(),
                },
            )
            .put_raw(Table::CustomerCases, key(&[&customer, "c-1"]), Vec::new())
            .put(
                Table::Notifications,
                "c-1",
                &Notification {
                    url: "http://crm.local/hooks/C-1".into(),
                    since: at,
                },
            );
        store.commit(batch).expect("commit");
        let erasure = erase_customer(&store, "C-1", "test", at).expect("erase");
        assert_eq!(erasure.erased, ["c-1"]);
        let b = store.backend();
        assert_eq!(b.get(Table::Notifications, b"c-1").expect("get"), None);
        assert_eq!(b.get(Table::Personal, b"c-1").expect("get"), None);
        let rec: CaseRecord = store
            .get_json(Table::Cases, b"c-1", "case")
            .expect("get")
            .expect("case");
        assert_eq!(rec.reply_to, None);
    }

    /// A completed case of `customer` (a pseudonym) with nothing but its record.
    fn finished_record(id: &str, customer: &str) -> CaseRecord {
        let at = Timestamp::UNIX_EPOCH;
        CaseRecord {
            id: id.into(),
            status: CaseStatus::Completed,
            channel: "chat".into(),
            language: "en".into(),
            customer: Some(customer.into()),
            request_digest: String::new(),
            classification: None,
            route: None,
            why: None,
            workflow: None,
            state: None,
            queue_task: None,
            queue_reason: None,
            error: None,
            pending: None,
            erased: false,
            accepted_at: at,
            updated_at: at,
            submitted_by: None,
            reply_to: None,
            linked_case: None,
        }
    }

    fn finished_case(store: &Store, id: &str, customer_id: &str, batch: &mut Batch) {
        let customer = store.pseudonym(customer_id);
        let at = Timestamp::UNIX_EPOCH;
        let rec = finished_record(id, &customer);
        let call = format!("{id}:book:1");
        batch
            .put(Table::Cases, id, &rec)
            .put_raw(Table::CustomerCases, key(&[&customer, id]), Vec::new())
            .put(
                Table::Outbox,
                call.as_bytes(),
                &OutboxEntry {
                    key: call.clone(),
                    case_id: id.into(),
                    node: "book".into(),
                    connector: "crm".into(),
                    operation: "get_customer".into(),
                    attempt: 1,
                    state: OutboxState::Done {
                        answer: serde_json::json!({ "customer_id": customer_id }),
                    },
                    updated_at: at,
                },
            )
            .put(
                Table::Idempotency,
                format!("{customer_id}-order"),
                &IdempotencyEntry {
                    case_id: id.into(),
                    request_digest: String::new(),
                },
            );
    }

    #[test]
    fn erasure_drops_back_office_answers_and_idempotency_keys_of_that_customer_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Options::default()).expect("store");
        let mut batch = Batch::new();
        finished_case(&store, "c-1", "C-1", &mut batch);
        finished_case(&store, "c-10", "C-10", &mut batch);
        store.commit(batch).expect("commit");
        let erasure = erase_customer(&store, "C-1", "dpo", Timestamp::UNIX_EPOCH).expect("erase");
        assert_eq!(erasure.erased, ["c-1"]);
        let b = store.backend();
        // Before: the answer with the customer number stayed in the outbox.
        assert_eq!(b.get(Table::Outbox, b"c-1:book:1").expect("get"), None);
        assert_eq!(b.get(Table::Idempotency, b"C-1-order").expect("get"), None);
        // `c-10` shares the prefix `c-1` but not `c-1:`; its customer was not erased.
        assert!(b.get(Table::Outbox, b"c-10:book:1").expect("get").is_some());
        assert!(
            b.get(Table::Idempotency, b"C-10-order")
                .expect("get")
                .is_some()
        );
    }
}
