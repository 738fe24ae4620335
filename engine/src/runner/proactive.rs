//! Proactive cases: started by a business event or a schedule occurrence, not by a
//! customer's request. Accepting one stores, in one commit with whatever started it, the
//! case with a [`Trigger::Proactive`] and the snapshot of the customer it may contact (the
//! consents per purpose and the recent contacts, see `rules::customer`), and the *start
//! key* `(workflow, customer, once key)` that keeps the same event or occurrence from
//! starting a second case. The trigger ([`Runner::on_proactive`]) starts the workflow on
//! that stored snapshot, so a replay after a crash decides the same way.
//!
//! The case sees `case.event` (type, source, id, time, data) or `case.schedule`
//! (occurrence, date, year, data), `case.customer` and a `case.request` with the channel,
//! customer number and language. Its replies are contacts for the workflow's purpose,
//! recorded in the segment's commit (see `segment.rs`).

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::segment::{Outcome, Segment};
use super::{Error, Runner, new_case_id};
use crate::audit;
use crate::exec::{self, Failure};
use crate::store::{Batch, CaseRecord, CaseStatus, Pending, PersonalRecord, Table, Trigger, key};
use crate::workflow::Workflow;

/// Contacts per purpose a snapshot keeps (the newest): enough for any `contacts(p, days)`
/// a rule asks about a proactive workflow's customer, bounded for a customer contacted
/// without end.
const SNAPSHOT_CONTACTS: usize = 100;

/// What started a proactive case: the event or the occurrence, as the case sees it.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// `event` or `schedule`: the case data key, and the case's channel.
    pub kind: &'static str,
    pub value: Value,
    /// The once key when the workflow declares no `once_per`.
    pub default_once: String,
    /// Where the case's replies and questions go (an event's `replyto`).
    pub reply_to: Option<String>,
}

/// The proactive cases one commit starts: the batch, and the start keys already in it.
pub(super) struct Starting {
    pub batch: Batch,
    pub cases: Vec<String>,
    seen: HashSet<Vec<u8>>,
    /// Who starts them (the event's sender, or `schedule`), and when.
    by: String,
    now: Timestamp,
}

impl Starting {
    pub fn new(by: &str, now: Timestamp) -> Self {
        Starting {
            batch: Batch::new(),
            cases: Vec::new(),
            seen: HashSet::new(),
            by: by.to_string(),
            now,
        }
    }
}

impl Runner {
    /// Adds to `starting` a case of `wf` for customer `customer_id`, unless one was started
    /// for the same once key already. Returns the new case's id.
    pub(super) fn start_proactive(
        &self,
        starting: &mut Starting,
        wf: &Workflow,
        customer_id: &str,
        language: &str,
        origin: &Origin,
    ) -> Result<Option<String>, Error> {
        let (by, now) = (starting.by.clone(), starting.now);
        let customer = self.store.pseudonym(customer_id);
        // Stored as a digest: a `once_per` value (a product number) stays out of the keys.
        let once = exec::digest(&json!(once_key(wf, origin)));
        if !starting.seen.insert(key(&[&wf.id, &customer, &once]))
            || self.store.starts().get(&wf.id, &customer, &once)?.is_some()
        {
            return Ok(None);
        }
        let case_id = new_case_id(now)?;
        let purpose = wf.triggers.purpose.clone().unwrap_or_default();
        let stored = json!({
            "workflow": wf.id,
            "purpose": purpose,
            "request": { "channel": origin.kind, "customer_id": customer_id, "language": language },
            origin.kind: origin.value,
            "customer": self.snapshot(&customer)?,
        });
        let request_digest = exec::digest(&stored);
        let record = CaseRecord {
            id: case_id.clone(),
            status: CaseStatus::Accepted,
            channel: origin.kind.to_string(),
            language: language.to_string(),
            customer: Some(customer.clone()),
            request_digest: request_digest.clone(),
            classification: None,
            route: None,
            workflow: None,
            state: None,
            queue_task: None,
            queue_reason: None,
            error: None,
            pending: Some(Pending {
                trigger: Trigger::Proactive {
                    workflow: wf.id.clone(),
                },
                at: now,
            }),
            erased: false,
            accepted_at: now,
            updated_at: now,
            submitted_by: Some(by.clone()),
            reply_to: origin.reply_to.clone(),
            linked_case: None,
            why: None,
        };
        let batch = &mut starting.batch;
        batch
            .put_case(&record)
            .put(
                Table::Personal,
                case_id.as_bytes(),
                &PersonalRecord {
                    request: stored,
                    data: Value::Null,
                    reply_text: None,
                    error: None,
                    messages: Vec::new(),
                },
            )
            .mark_pending(&case_id)
            .put_raw(
                Table::CustomerCases,
                key(&[&customer, &case_id]),
                Vec::new(),
            )
            .put_start(&wf.id, &customer, &once, &case_id)
            .audit(audit::Entry::new(
                &case_id,
                audit::Kind::Accepted,
                now,
                json!({
                    "request_digest": request_digest,
                    "channel": origin.kind,
                    "language": language,
                    "customer": customer,
                    "submitted_by": by,
                    "workflow": wf.id,
                    "started_by": started_by(origin),
                    "once_key_digest": once,
                }),
            ));
        starting.cases.push(case_id.clone());
        Ok(Some(case_id))
    }

    /// The customer's consents and recent contacts, as `consent()`/`contacts()` read them,
    /// and the box's quiet hours (`quiet_hours()`).
    fn snapshot(&self, customer: &str) -> Result<Value, Error> {
        let consents: Map<String, Value> = self
            .store
            .consents()
            .of(customer)?
            .into_iter()
            .map(|c| (c.purpose, Value::Bool(c.current.granted)))
            .collect();
        let mut contacts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (purpose, at) in self.store.contacts().of(customer)? {
            contacts.entry(purpose).or_default().push(json!(at));
        }
        for times in contacts.values_mut() {
            let extra = times.len().saturating_sub(SNAPSHOT_CONTACTS);
            times.drain(..extra);
        }
        let mut snapshot = json!({ "consents": consents, "contacts": contacts });
        if let Some(q) = &self.quiet_hours {
            snapshot["quiet_hours"] = json!(q);
        }
        Ok(snapshot)
    }

    /// Starts the workflow a proactive case was accepted for, on its stored snapshot.
    pub(super) fn on_proactive(
        &self,
        seg: &mut Segment<'_>,
        workflow: &str,
    ) -> Result<Outcome, Error> {
        let catalog = self.catalog();
        let Some(wf) = catalog.get(workflow).cloned() else {
            return Ok(Err(Failure::public(format!(
                "the case was started for workflow `{workflow}`, which is no longer published"
            ))));
        };
        let Value::Object(mut stored) = seg.personal.request.clone() else {
            return Ok(Err(Failure::public(
                "the stored start of the proactive case cannot be read".into(),
            )));
        };
        let request = stored.remove("request").unwrap_or(Value::Null);
        let mut extra = Map::new();
        for k in ["event", "schedule", "customer"] {
            if let Some(v) = stored.remove(k) {
                extra.insert(k.into(), v);
            }
        }
        let begun = seg
            .exec
            .start_with(&wf, seg.case_id, request, Value::Null, extra);
        Ok(match begun {
            // A proactive case has no reviewer to correct its data: it fails, with the
            // paths and rules broken; the values stay in the personal record.
            Err(exec::Error::InvalidInput { workflow, errors }) => {
                let reason = format!(
                    "the start does not fit the input schema of workflow `{workflow}`: {}",
                    errors
                        .iter()
                        .map(|e| e.reason())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let message = exec::Error::InvalidInput { workflow, errors }.to_string();
                Err(Failure { message, reason })
            }
            other => self.started(seg, &wf, other),
        })
    }
}

/// The value of the workflow's `once_per` path in what started the case, or the origin's
/// own key (every event or occurrence once).
fn once_key(wf: &Workflow, origin: &Origin) -> String {
    let Some(path) = &wf.triggers.once_per else {
        return origin.default_once.clone();
    };
    let mut parts = path.split('.');
    if parts.next() != Some(origin.kind) {
        return origin.default_once.clone();
    }
    let found = parts.try_fold(&origin.value, |v, p| v.get(p));
    match found {
        Some(Value::String(s)) => format!("{path}={s}"),
        Some(v) if !v.is_null() => format!("{path}={v}"),
        _ => origin.default_once.clone(),
    }
}

/// What the audit trail keeps of the origin: ids and times, never its data.
fn started_by(origin: &Origin) -> Value {
    let v = &origin.value;
    match origin.kind {
        "event" => json!({ "event": { "type": v["type"], "source": v["source"], "id": v["id"] } }),
        _ => json!({ "schedule": { "occurrence": v["occurrence"] } }),
    }
}
