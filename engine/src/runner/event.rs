//! Business events: a system tells the box that something happened to a customer
//! (`warranty.expiring`, `delivery.confirmed`, `consent.changed`). Accepting one is one
//! commit: the event under `(source, id)`, every proactive case the workflows triggered by
//! its type start for its subject, and a consent change it carries. Only then does the
//! caller answer; the same event again answers what the first one started and starts
//! nothing; the same `(source, id)` with another body is refused.
//!
//! The event is checked at the edge (the HTTP layer parses CloudEvents); this file trusts
//! the shape of [`NewEvent`] and checks only what it means (a subject where a workflow
//! needs one, the data of `consent.changed`).

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use super::proactive::{Origin, Starting};
use super::{Error, Runner};
use crate::exec::digest;
use crate::store::EventEntry;

/// The event type that changes a consent; its data is `{"purpose", "granted"}`.
pub const CONSENT_CHANGED: &str = "consent.changed";

/// A business event as the edge checked it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub id: String,
    pub event_type: String,
    /// The customer number the event is about.
    pub subject: Option<String>,
    pub time: Option<Timestamp>,
    pub data: Value,
    /// Where the cases it starts send their replies and questions (the CloudEvents
    /// extension `replyto`, checked by the API like a request's `reply_to`).
    pub reply_to: Option<String>,
    /// The token that sent it.
    pub sent_by: String,
}

impl NewEvent {
    /// What the case sees as `case.event`.
    fn as_case_data(&self) -> Value {
        json!({
            "type": self.event_type,
            "source": self.source,
            "id": self.id,
            "time": self.time,
            "data": self.data,
        })
    }

    /// The language of the customer, when the event's data says it (`de` or `en`).
    fn language(&self) -> &'static str {
        match self.data.get("language").and_then(Value::as_str) {
            Some("de") => "de",
            _ => "en",
        }
    }
}

/// What an accepted event started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventAccepted {
    pub event_id: String,
    pub cases: Vec<String>,
    /// The event was accepted before: this is what it started then.
    pub duplicate: bool,
}

impl Runner {
    /// Stores the event and the cases it starts, durably, and returns them. The cases are
    /// not run here: the caller queues them ([`Runner::process`]).
    pub fn accept_event(&self, event: NewEvent) -> Result<EventAccepted, Error> {
        let body = event.as_case_data();
        let mut digested = json!({ "event": body, "subject": event.subject });
        // Only when given: events stored before `replyto` existed keep their digest.
        if let Some(url) = &event.reply_to {
            digested["reply_to"] = json!(url);
        }
        let event_digest = digest(&digested);
        let _lock = self.lock(&format!("event\0{}\0{}", event.source, event.id));
        if let Some(seen) = self.store.events().get(&event.source, &event.id)? {
            if seen.digest != event_digest {
                return Err(Error::EventReused {
                    event_source: event.source,
                    id: event.id,
                });
            }
            return Ok(EventAccepted {
                event_id: event.id,
                cases: seen.cases,
                duplicate: true,
            });
        }
        let _starts = self.starts_lock();
        let now = self.clock.now();
        let mut starting = Starting::new(&event.sent_by, now);
        if event.event_type == CONSENT_CHANGED {
            let subject = subject(&event)?;
            self.change_consent_in(&mut starting.batch, subject, &consent_change(&event)?, now)?;
        }
        let catalog = self.catalog();
        let triggered: Vec<_> = catalog
            .workflows()
            .filter(|wf| wf.triggers.events.contains(&event.event_type))
            .cloned()
            .collect();
        if !triggered.is_empty() {
            let customer = subject(&event)?;
            let origin = Origin {
                kind: "event",
                value: body,
                default_once: format!("event:{}:{}", event.source, event.id),
                reply_to: event.reply_to.clone(),
            };
            for wf in &triggered {
                self.start_proactive(&mut starting, wf, customer, event.language(), &origin)?;
            }
        }
        let entry = EventEntry {
            digest: event_digest,
            event_type: event.event_type.clone(),
            cases: starting.cases.clone(),
            accepted_at: now,
        };
        let Starting {
            mut batch, cases, ..
        } = starting;
        batch.put_event(&event.source, &event.id, &entry);
        self.store.commit(batch)?;
        Ok(EventAccepted {
            event_id: event.id,
            cases,
            duplicate: false,
        })
    }
}

fn subject(event: &NewEvent) -> Result<&str, Error> {
    event.subject.as_deref().ok_or_else(|| Error::InvalidEvent {
        attribute: "subject".into(),
        message: format!(
            "events of type `{}` start cases for a customer: `subject` must be the customer number",
            event.event_type
        ),
    })
}

/// The consent change a `consent.changed` event carries in its data.
fn consent_change(event: &NewEvent) -> Result<super::consent::Change, Error> {
    let bad = |field: &str, what: &str| Error::InvalidEvent {
        attribute: format!("data.{field}"),
        message: format!("`data.{field}` of a `{CONSENT_CHANGED}` event {what}"),
    };
    let purpose = event
        .data
        .get("purpose")
        .and_then(Value::as_str)
        .filter(|p| super::consent::is_purpose(p))
        .ok_or_else(|| {
            bad(
                "purpose",
                "must be a purpose such as `marketing` (lower_snake_case, 1–64 characters)",
            )
        })?;
    let granted = event
        .data
        .get("granted")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("granted", "must be true or false"))?;
    Ok(super::consent::Change {
        purpose: purpose.to_string(),
        granted,
        source: event.source.clone(),
        at: event.time,
        by: event.sent_by.clone(),
    })
}
