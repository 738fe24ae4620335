//! Simulated branches for the hub's tests and benchmark (`casegraph hub simulate`): each
//! publishes what a box's relay would (chained audit records, case summaries, health
//! snapshots) into its own branch stream, with the contract's subjects and message ids.
//! A simulated branch owns a real audit chain (`audit::Head::append`), so the hub verifies
//! it exactly as it verifies a box's; tests alter records before publishing to see the
//! hub flag them.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, stream};
use casegraph_engine::audit::{self, Entry, Head, Record};
use jiff::Timestamp;
use serde::Serialize;

use crate::fleet::wire::{self, AuditRecord, CaseSummary, ChainHead, Health, Kind};

/// One simulated branch.
#[derive(Debug)]
pub struct Branch {
    pub name: String,
    /// Its chain's head: the last record made.
    pub head: Head,
    /// Cases started, for case ids.
    pub cases: u64,
}

/// A failed publish, naming the subject.
#[derive(Debug, thiserror::Error)]
#[error("publishing on {subject}: {message}")]
pub struct Error {
    pub subject: String,
    pub message: String,
}

/// Creates (or keeps) the branch stream `CG_<BRANCH>` capturing `cg.b.<branch>.>` in the
/// domain `js` talks to, as a box's set-up does.
pub async fn ensure_stream(js: &jetstream::Context, branch: &str) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        name: wire::branch_stream(branch),
        subjects: vec![wire::branch_subjects(branch)],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| Error {
        subject: wire::branch_subjects(branch),
        message: e.to_string(),
    })
}

/// A branch that goes on from the last audit record its stream holds (a new chain when it
/// holds none), so a simulator run after another continues the same chain.
pub async fn resume(js: &jetstream::Context, branch: &str) -> Result<Branch, Error> {
    ensure_stream(js, branch).await?;
    let fail = |message: String| Error {
        subject: wire::branch_subject(branch, Kind::Audit),
        message,
    };
    let stream = js
        .get_stream(wire::branch_stream(branch))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut b = Branch::new(branch);
    match stream
        .get_last_raw_message_by_subject(&wire::branch_subject(branch, Kind::Audit))
        .await
    {
        Ok(m) => {
            let last: AuditRecord = serde_json::from_slice(&m.payload)
                .map_err(|e| fail(format!("the last record is not readable: {e}")))?;
            b.head = Head {
                seq: last.record.seq,
                hash: last.record.hash,
            };
            b.cases = last.record.seq;
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    Ok(b)
}

/// What one publish returns: JetStream's acknowledgement, awaited by [`ack`].
pub type Pending = jetstream::context::PublishAckFuture;

/// Publishes `message` on the branch's `kind` subject with `Nats-Msg-Id` =
/// `wire::msg_id(branch, kind, key)` (no id when `key` is `None`, so JetStream keeps
/// every copy: tests use it to see the hub's own idempotency).
pub async fn publish<T: Serialize>(
    js: &jetstream::Context,
    branch: &str,
    kind: Kind,
    key: Option<&str>,
    message: &T,
) -> Result<Pending, Error> {
    let subject = wire::branch_subject(branch, kind);
    let mut headers = async_nats::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            wire::MSG_ID_HEADER,
            wire::msg_id(branch, kind, key).as_str(),
        );
    }
    let payload = serde_json::to_vec(message).expect("wire messages serialize");
    js.publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|e| Error {
            subject,
            message: e.to_string(),
        })
}

/// Waits for JetStream to acknowledge every publish.
pub async fn ack(pending: Vec<Pending>) -> Result<(), Error> {
    for p in pending {
        p.await.map_err(|e| Error {
            subject: "(acknowledgement)".into(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

impl Branch {
    pub fn new(name: &str) -> Branch {
        Branch {
            name: name.to_string(),
            head: Head::genesis(),
            cases: 0,
        }
    }

    /// The next record of the chain, about `case_id`, made at `at`.
    pub fn record(&mut self, case_id: &str, at: Timestamp) -> Record {
        self.head.append(Entry::new(
            case_id,
            audit::Kind::Outcome,
            at,
            serde_json::json!({ "status": "completed", "outcome": "resolved" }),
        ))
    }

    /// A new case: its record and its summary after it.
    pub fn case(&mut self, at: Timestamp) -> (AuditRecord, CaseSummary) {
        self.cases += 1;
        let case_id = format!("{}-{:08}", self.name, self.cases);
        let record = self.record(&case_id, at);
        let summary = CaseSummary {
            branch: self.name.clone(),
            audit_seq: record.seq,
            case_id,
            status: "completed".into(),
            workflow: Some("card_block".into()),
            version: Some(1),
            route: Some("workflow".into()),
            outcome: Some("resolved".into()),
            accepted_at: at,
            updated_at: at,
            signals: BTreeMap::new(),
        };
        (
            AuditRecord {
                branch: self.name.clone(),
                record,
            },
            summary,
        )
    }

    /// Publishes a new case (record and summary), with message ids.
    pub async fn publish_case(
        &mut self,
        js: &jetstream::Context,
        at: Timestamp,
    ) -> Result<Vec<Pending>, Error> {
        let (record, summary) = self.case(at);
        let key = record.record.seq.to_string();
        Ok(vec![
            publish(js, &self.name, Kind::Audit, Some(&key), &record).await?,
            publish(js, &self.name, Kind::Case, Some(&key), &summary).await?,
        ])
    }

    /// The health snapshot of a box at this head, `backlog` records not yet relayed.
    pub fn health(&self, at: Timestamp, backlog: u64) -> Health {
        Health {
            branch: self.name.clone(),
            at,
            engine_version: env!("CARGO_PKG_VERSION").into(),
            model_version: Some("intent@1".into()),
            routing_version: Some(1),
            workflows: BTreeMap::from([("card_block".to_string(), 1)]),
            queue_depth: 0,
            open_tasks: BTreeMap::from([("fraud".to_string(), self.cases % 7)]),
            cases: BTreeMap::from([("completed".to_string(), self.cases)]),
            rss_bytes: None,
            audit_head: (self.head.seq > 0).then(|| ChainHead {
                seq: self.head.seq,
                hash: self.head.hash.clone(),
            }),
            backlog,
            chain_problem: None,
        }
    }

    pub async fn publish_health(
        &self,
        js: &jetstream::Context,
        at: Timestamp,
    ) -> Result<Pending, Error> {
        let h = self.health(at, 0);
        publish(js, &self.name, Kind::Health, Some(&at.to_string()), &h).await
    }
}
