//! The outbox: a call that changes the back office (`effect` reversible or irreversible)
//! is recorded durably before it is sent; every call's answer is recorded with the
//! segment's checkpoint, in the same commit. A replayed segment gets recorded answers back
//! instead of calling again; a call that was sent but never answered (the box died before
//! its checkpoint) is sent again with the same idempotency key, which the back-office
//! system uses to deduplicate. A look-up (`effect: read`) has no record before it is sent:
//! sending it again changes nothing, and it saves the case a sync of its own
//! (`docs/adr/0023-look-ups-without-a-write-ahead-record.md`).

use std::sync::Mutex;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::audit;
use crate::exec::{CallError, CallRequest, Connector, digest};
use crate::store::{Batch, OutboxEntry, OutboxState, Store, Table};

pub(super) struct Outbox<'a> {
    pub store: &'a Store,
    pub inner: &'a dyn Connector,
    pub at: Timestamp,
    /// Audit entries for the calls made, committed with the segment's checkpoint.
    pub audit: Mutex<Vec<audit::Entry>>,
    /// The answered calls' outbox entries, committed with the segment's checkpoint.
    pub answered: Mutex<Vec<OutboxEntry>>,
}

impl Outbox<'_> {
    fn record(&self, entry: &OutboxEntry) -> Result<(), CallError> {
        let mut batch = Batch::new();
        batch.put(Table::Outbox, entry.key.as_bytes(), entry);
        self.store.commit(batch).map_err(|e| {
            tracing::error!(case = %entry.case_id, "outbox not writable; call not sent: {e}");
            CallError {
                retryable: true,
                message: "the box could not record the call; it will be tried again".into(),
            }
        })
    }

    fn note(&self, r: &CallRequest, result: &Result<Value, CallError>, replayed: bool) {
        let body = json!({
            "node": r.node,
            "connector": r.connector,
            "operation": r.operation,
            "idempotency_key": r.idempotency_key,
            "attempt": r.attempt,
            "payload_digest": digest(&r.payload),
            "ok": result.is_ok(),
            "answer_digest": result.as_ref().ok().map(digest),
            // A back-office message may quote the payload (amounts, customer ids); the
            // audit trail outlives erasure, so it keeps the message's digest. The message
            // itself is in the outbox entry, which erasure deletes.
            "error_digest": result.as_ref().err().map(|e| digest(&json!(e.message))),
            "retryable": result.as_ref().err().map(|e| e.retryable),
            "replayed": replayed,
        });
        self.audit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(audit::Entry::new(
                &r.case_id,
                audit::Kind::Call,
                self.at,
                body,
            ));
    }
}

impl Connector for Outbox<'_> {
    fn call(&self, r: &CallRequest) -> Result<Value, CallError> {
        let stored = self
            .store
            .get_json::<OutboxEntry>(Table::Outbox, r.idempotency_key.as_bytes(), "outbox entry")
            .map_err(|e| {
                tracing::error!(case = %r.case_id, "outbox not readable: {e}");
                CallError {
                    retryable: true,
                    message: "the box could not read its outbox; it will be tried again".into(),
                }
            })?;
        if let Some(entry) = stored.filter(|e| e.attempt == r.attempt) {
            match entry.state {
                OutboxState::Done { answer } => {
                    let result = Ok(answer);
                    self.note(r, &result, true);
                    return result;
                }
                OutboxState::Failed { retryable, message } => {
                    let result = Err(CallError { retryable, message });
                    self.note(r, &result, true);
                    return result;
                }
                // Sent before a crash, never answered: send again, same key.
                OutboxState::Pending => {}
            }
        }
        let mut entry = OutboxEntry {
            key: r.idempotency_key.clone(),
            case_id: r.case_id.clone(),
            node: r.node.clone(),
            connector: r.connector.clone(),
            operation: r.operation.clone(),
            attempt: r.attempt,
            state: OutboxState::Pending,
            updated_at: self.at,
        };
        if r.effect.writes() {
            self.record(&entry)?;
        }
        let result = self.inner.call(r);
        entry.state = match &result {
            Ok(answer) => OutboxState::Done {
                answer: answer.clone(),
            },
            Err(e) => OutboxState::Failed {
                retryable: e.retryable,
                message: e.message.clone(),
            },
        };
        // Committed with the checkpoint: if that commit is lost, the replay sends again
        // with the same key (safe, only slower).
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
        self.note(r, &result, false);
        result
    }
}
