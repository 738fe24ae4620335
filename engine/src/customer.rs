//! A customer's history with the box, as routing (`request.customer`) and workflows
//! (`case.customer`) see it: how often they wrote lately, what is still open, what went
//! wrong before. Counted from the customer's earlier case records (by pseudonym, see
//! [`crate::store::CustomerCases`]), never from personal data, so it holds no text and
//! survives in the audit trail.
//!
//! An erased case no longer counts: erasure is the customer's wish that the box forget
//! them, and a history that still remembered their earlier letters would not honour it.
//! An archived case has left the customer's index and does not count either.
//!
//! Pure: the caller reads the records and brings the time.

use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::routing::Route;
use crate::store::{CaseRecord, CaseStatus};

/// The window of [`History::contacts_30d`], in days.
pub const RECENT_DAYS: i64 = 30;

/// The queue whose cases count as complaints: the one the shipped policy sends legal
/// threats and supervisory complaints to.
pub const COMPLAINTS_QUEUE: &str = "complaints";

/// What routing and workflows know about the customer of a case. All counts are of the
/// customer's *earlier* cases; the case being decided is never among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct History {
    /// The request named a customer, so the counts below mean something. `false` for an
    /// anonymous request (every count is then 0).
    pub known: bool,
    /// Earlier cases accepted in the last [`RECENT_DAYS`] days.
    pub contacts_30d: u32,
    /// Earlier cases that are not finished (waiting for a reviewer, a timer, a queue).
    pub open_cases: u32,
    /// Earlier cases that ended escalated (an SLA passed, a person must follow up).
    pub escalations: u32,
    /// Earlier cases routed to the [`COMPLAINTS_QUEUE`].
    pub complaints: u32,
    /// Earlier cases whose classification flagged the customer as frustrated.
    pub frustrated_contacts: u32,
    /// Whole days since the latest earlier case was accepted; `None` when there is none.
    pub days_since_last_contact: Option<u32>,
}

impl History {
    /// The history of a customer whose earlier cases are `records`, at `now`, leaving out
    /// case `except` (the one being decided) and every erased case.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a CaseRecord>,
        now: Timestamp,
        except: &str,
    ) -> History {
        // A timestamp has no calendar: a day here is 24 hours.
        let recent = now
            .checked_sub((RECENT_DAYS * 24).hours())
            .unwrap_or(Timestamp::MIN);
        let mut h = History {
            known: true,
            ..History::default()
        };
        let mut last: Option<Timestamp> = None;
        for r in records {
            if r.id == except || r.erased || r.accepted_at > now {
                continue;
            }
            if r.accepted_at >= recent {
                h.contacts_30d += 1;
            }
            if !r.status.is_final() {
                h.open_cases += 1;
            }
            if r.status == CaseStatus::Escalated {
                h.escalations += 1;
            }
            if matches!(&r.route, Some(Route::Queue { queue, .. }) if queue == COMPLAINTS_QUEUE) {
                h.complaints += 1;
            }
            if r.classification
                .as_ref()
                .and_then(|c| c.pointer("/frustration/flagged"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
            {
                h.frustrated_contacts += 1;
            }
            last = last.max(Some(r.accepted_at));
        }
        h.days_since_last_contact = last.map(|t| {
            let secs = now.as_second().saturating_sub(t.as_second()).max(0);
            u32::try_from(secs / 86_400).unwrap_or(u32::MAX)
        });
        h
    }

    /// The JSON routing and workflows see.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn record(id: &str, days_ago: i64, status: CaseStatus) -> CaseRecord {
        let now: Timestamp = "2026-03-31T12:00:00Z".parse().unwrap();
        let at = now.checked_sub((days_ago * 24).hours()).unwrap();
        serde_json::from_value(json!({
            "id": id, "status": status, "channel": "chat", "language": "en",
            "customer": "p", "request_digest": "d", "classification": null, "route": null,
            "workflow": null, "state": null, "queue_task": null, "pending": null,
            "accepted_at": at, "updated_at": at, "submitted_by": null, "reply_to": null
        }))
        .unwrap()
    }

    #[test]
    fn counts_earlier_cases_and_forgets_erased_ones() {
        let now: Timestamp = "2026-03-31T12:00:00Z".parse().unwrap();
        let mut complaint = record("c2", 3, CaseStatus::Waiting);
        complaint.route = Some(Route::Queue {
            queue: COMPLAINTS_QUEUE.into(),
            rule: "legal_or_regulatory".into(),
        });
        complaint.classification = Some(json!({"frustration": {"score": 0.9, "flagged": true}}));
        let mut erased = record("c3", 1, CaseStatus::Escalated);
        erased.erased = true;
        let records = [
            record("c1", 45, CaseStatus::Escalated),
            complaint,
            erased,
            record("c4", 0, CaseStatus::Waiting),
        ];
        let h = History::from_records(&records, now, "c4");
        assert_eq!(
            h,
            History {
                known: true,
                contacts_30d: 1,
                open_cases: 1,
                escalations: 1,
                complaints: 1,
                frustrated_contacts: 1,
                days_since_last_contact: Some(3),
            },
            "c4 is the case being decided, c3 was erased, c1 is older than 30 days"
        );
        let first = History::from_records(&records[3..], now, "c4");
        assert_eq!(first.days_since_last_contact, None);
        assert_eq!(first.contacts_30d, 0);
        assert!(first.known);
    }
}
