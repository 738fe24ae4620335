//! The message trigger: what the customer writes to a case, on any channel.
//!
//! Accepting a message ([`Runner::post_message`]) stores it on the case (in its personal
//! record, where erasure and archives reach) with its audit record, durably, before the
//! caller answers. It is never refused for the case's state: a case that waits for an
//! answer gets the message as its trigger at once; a case that is running, parked in a
//! queue or waiting for a reviewer keeps it, shows it to the reviewer, and hands it to its
//! next `ask` node (the segment commit does, see `segment.rs`). Only a finished case
//! refuses one ([`Error::CaseFinished`]): the sender starts a new request instead.
//!
//! Processing it ([`Runner::on_message`]) classifies the message like a request (the
//! model's signals are available to rules) and resumes the case along the `ask` node's
//! `answer` edge; it writes only through its [`Segment`].
//!
//! A request that quotes a case reference is attached here too ([`Runner::attach`]).

use serde_json::{Map, Value, json};

use super::segment::{Outcome, Segment};
use super::{Error, Runner};
use crate::audit;
use crate::exec::{Answer, Event, Waiting, digest};
use crate::intake::{Channel, Request};
use crate::pipeline::Received;
use crate::reference;
use crate::store::{
    Batch, CaseRecord, CaseStatus, Direction, IdempotencyEntry, Message, Pending, PersonalRecord,
    Table, Trigger,
};

/// Messages a case keeps at most from its customer; one more is refused.
pub const MAX_MESSAGES: usize = 50;

/// A customer's message to a case, as accepted (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel: Channel,
    pub text: String,
    pub fields: Map<String, Value>,
    pub language: Option<String>,
    /// Per client (the caller prefixes its name), so two systems cannot collide.
    pub idempotency_key: Option<String>,
    /// Token name of the sender.
    pub by: Option<String>,
    /// `api` or `reference`.
    pub via: &'static str,
}

/// The answer to an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub message_id: String,
    pub case_id: String,
    /// The case's status after the message was stored.
    pub status: CaseStatus,
    /// The idempotency key was seen before with the same message: this is that message.
    pub duplicate: bool,
    /// The message is the case's trigger: the case must be run (queued to the workers).
    pub triggered: bool,
}

/// Where a request that quotes a case reference goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attach {
    /// To this live case, as a message.
    To(String),
    /// A new case, linked to this finished one.
    Link(String),
}

impl Runner {
    /// Stores a customer's message on case `case_id` durably; the case's answer if it waits
    /// for one. Run the case ([`Runner::process`]) when [`Posted::triggered`].
    pub fn post_message(&self, case_id: &str, new: NewMessage) -> Result<Posted, Error> {
        let _lock = self.lock(case_id);
        let mut rec = self
            .store
            .get_json::<CaseRecord>(Table::Cases, case_id.as_bytes(), "case")?
            .ok_or_else(|| Error::NoCase(case_id.to_string()))?;
        let message_digest = digest(&json!({ "channel": new.channel.as_str(), "text": new.text,
            "fields": new.fields, "language": new.language }));
        let key = new
            .idempotency_key
            .as_ref()
            .map(|k| format!("message\0{case_id}\0{k}"));
        if let Some(k) = &key
            && let Some(seen) = self.store.get_json::<IdempotencyEntry>(
                Table::Idempotency,
                k.as_bytes(),
                "idempotency key",
            )?
        {
            if seen.request_digest != message_digest {
                return Err(Error::KeyReused {
                    key: new.idempotency_key.clone().unwrap_or_default(),
                    case_id: case_id.to_string(),
                });
            }
            return Ok(Posted {
                message_id: keyed_id(k),
                case_id: case_id.to_string(),
                status: rec.status,
                duplicate: true,
                triggered: false,
            });
        }
        if rec.status.is_final() {
            return Err(Error::CaseFinished {
                case_id: case_id.to_string(),
                status: rec.status,
            });
        }
        let mut personal = self
            .store
            .get_json::<PersonalRecord>(Table::Personal, case_id.as_bytes(), "personal data")?
            .unwrap_or_else(PersonalRecord::empty);
        let received = personal
            .messages
            .iter()
            .filter(|m| m.direction == Direction::In)
            .count();
        if received >= MAX_MESSAGES {
            return Err(Error::TooManyMessages {
                case_id: case_id.to_string(),
                limit: MAX_MESSAGES,
            });
        }
        let now = self.clock.now();
        let message_id = match &key {
            Some(k) => keyed_id(k),
            None => random_id()?,
        };
        personal.messages.push(Message {
            message_id: message_id.clone(),
            direction: Direction::In,
            channel: new.channel.as_str().to_string(),
            text: new.text,
            fields: new.fields,
            language: new.language.clone(),
            at: now,
            node: None,
            via: new.via.to_string(),
        });
        let mut batch = Batch::new();
        if let Some(k) = &key {
            batch.put(
                Table::Idempotency,
                k.as_bytes(),
                &IdempotencyEntry {
                    case_id: case_id.to_string(),
                    request_digest: message_digest.clone(),
                },
            );
        }
        batch.audit(audit::Entry::new(
            case_id,
            audit::Kind::Message,
            now,
            json!({ "direction": "in", "message_id": message_id, "channel": new.channel.as_str(),
                "language": new.language, "message_digest": message_digest, "via": new.via,
                "by": new.by }),
        ));
        let waits_for_answer = matches!(
            rec.state.as_ref().and_then(|s| s.waiting.as_ref()),
            Some(Waiting::Answer { .. })
        ) && rec.status == CaseStatus::Waiting;
        let triggered = waits_for_answer && rec.pending.is_none();
        if triggered {
            rec.pending = Some(Pending {
                trigger: Trigger::Message {
                    message_id: message_id.clone(),
                },
                at: now,
            });
            rec.status = CaseStatus::Running;
            rec.updated_at = now;
            batch.put_case(&rec).mark_pending(case_id);
        }
        batch.put(Table::Personal, case_id.as_bytes(), &personal);
        self.store.commit(batch)?;
        Ok(Posted {
            message_id,
            case_id: case_id.to_string(),
            status: rec.status,
            duplicate: false,
            triggered,
        })
    }

    /// Resumes the case with the customer's message as the answer to the question it waits
    /// on. The message is classified like a request; a classifier that fails leaves the
    /// answer without a classification, never the case failed.
    pub(super) fn on_message(
        &self,
        seg: &mut Segment<'_>,
        message_id: &str,
    ) -> Result<Outcome, Error> {
        let waiting_node = match seg.rec.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            Some(Waiting::Answer { node, .. }) => node.clone(),
            _ => {
                // Stored as the trigger only while the case waited for an answer; a record
                // that says otherwise keeps the message for the next question.
                seg.rec.status = CaseStatus::Waiting;
                return Ok(Ok(None));
            }
        };
        let Some(message) = seg
            .personal
            .messages
            .iter_mut()
            .find(|m| m.message_id == message_id && m.direction == Direction::In)
        else {
            // The message went with an erasure between its commit and this segment.
            seg.rec.status = CaseStatus::Waiting;
            return Ok(Ok(None));
        };
        message.node = Some(waiting_node);
        let message = message.clone();
        let channel = match message.channel.as_str() {
            "form" => Channel::Form,
            "letter" => Channel::Letter,
            _ => Channel::Chat,
        };
        let mut request = Request::text(channel, message.text.clone());
        request.fields = message.fields.clone();
        request.language = message.language.clone();
        let received = Received::new(request);
        let classification = match self.classifier.classify(&received) {
            Ok(c) => c.to_json(),
            Err(e) => {
                tracing::warn!(case = %seg.case_id, "classifying an answer failed: {e}");
                Value::Null
            }
        };
        let answer = Answer {
            message_id: message.message_id.clone(),
            text: received.intake.text.clone(),
            channel: message.channel.clone(),
            fields: message.fields.clone(),
            language: message
                .language
                .clone()
                .or_else(|| Some(received.language().to_string())),
            received_at: message.at,
            classification,
        };
        self.resume(seg, Event::Answered(answer))
    }

    /// The case a request that quotes a case reference (in `in_reply_to` or its text)
    /// belongs to: a live case of the same submitter and customer takes it as a message; a
    /// finished one is linked from the new case. A reference that names nothing (or a case
    /// of someone else: nothing about it is revealed) starts a new case as any request.
    pub(super) fn attach(&self, new: &super::NewRequest) -> Result<Option<Attach>, Error> {
        let request = &new.request;
        let mut groups = Vec::new();
        if let Some(r) = &request.in_reply_to {
            groups.extend(reference::candidates(r));
        }
        if let Some(t) = &request.text {
            groups.extend(reference::candidates(t));
        }
        let customer = request
            .customer_id
            .as_ref()
            .map(|c| self.store.pseudonym(c));
        let mut finished = None;
        for candidates in groups {
            let mut live = Vec::new();
            for r in &candidates {
                for id in self.store.references().cases(r)? {
                    let Some(rec) =
                        self.store
                            .get_json::<CaseRecord>(Table::Cases, id.as_bytes(), "case")?
                    else {
                        continue;
                    };
                    let same_sender = rec.submitted_by == new.submitted_by;
                    let same_customer = match (&customer, &rec.customer) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    };
                    if !same_sender || !same_customer || rec.erased {
                        continue;
                    }
                    if rec.status.is_final() {
                        finished.get_or_insert(rec.id);
                    } else {
                        live.push(rec.id);
                    }
                }
            }
            // One confused character may make a second reference valid; only one that
            // names exactly one live case is trusted.
            if live.len() == 1 {
                return Ok(live.pop().map(Attach::To));
            }
        }
        Ok(finished.map(Attach::Link))
    }
}

/// A message id fixed by its idempotency key, so a retry answers the same id.
fn keyed_id(key: &str) -> String {
    format!("m-{}", &digest(&json!(key))[..20])
}

fn random_id() -> Result<String, Error> {
    let mut r = [0u8; 10];
    getrandom::fill(&mut r)
        .map_err(|e| crate::store::Error::backend("os", format!("no randomness: {e}")))?;
    Ok(format!("m-{}", hex::encode(r)))
}
