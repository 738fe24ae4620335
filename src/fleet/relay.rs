//! The box's relay (ADR 0019): publishes what the box committed into its branch stream
//! `CG_<BRANCH>`, from a durable cursor in the store, and the health snapshot every
//! `fleet.health_interval`. A tokio task `casegraph serve` starts when `[fleet]` is set.
//!
//! Invariants:
//! - The cursor ([`Store::relay_cursor`]) names the last audit seq such that every message
//!   for it and every record before it was acknowledged by JetStream; it is written only
//!   after those acknowledgements, in its own small commit (never in a case's batch).
//! - Every message carries `Nats-Msg-Id` ([`wire::msg_id`]), so what is published again
//!   after a crash between an acknowledgement and the cursor write is dropped by the
//!   stream's duplicate window; at start the relay also moves its cursor past the last
//!   audit record the stream already holds if it is the box's own (seq and hash), so a
//!   restart after a longer outage re-sends nothing either.
//! - The relay never holds up the box: case commits do not wait for it, and with NATS
//!   unreachable it only backs off and counts the backlog (bounded by the store's disk).
//!
//! Wake-up: the relay polls the store's in-memory count of appended audit records every
//! [`POLL`] (an atomic read; no store read while nothing was appended).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use casegraph_engine::audit;
use casegraph_engine::routing::Route;
use casegraph_engine::store::{CaseRecord, Store};
use tokio::sync::watch;

use super::connect::Endpoint;
use super::metrics::Metrics;
use super::wire::{self, Kind};
use crate::api::AppState;
use crate::config::FleetOptions;

/// How often the relay looks whether the box appended audit records.
pub const POLL: Duration = Duration::from_millis(50);
/// Longest wait between two attempts while NATS does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// How long JetStream may take to acknowledge; longer counts as a failed publish.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Duplicate window of the branch stream: covers a restart of the box (the cursor recovery
/// at start covers longer ones).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);

/// Starts the relay if `[fleet]` is set; it ends when `stop` turns true.
pub fn spawn(
    options: &FleetOptions,
    state: AppState,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (Some(url), Some(branch)) = (&options.nats_url, &options.branch) else {
        return None;
    };
    let endpoint = Endpoint::of_box(options, url, branch, format!("casegraph-box-{branch}"));
    state.metrics.fleet.enabled.store(true, Ordering::Relaxed);
    let relay = Relay {
        branch: branch.clone(),
        store: state.runner.store().clone(),
        metrics: state.metrics.fleet.clone(),
        options: options.clone(),
        cursor: 0,
        head: 0,
    };
    Some(tokio::spawn(relay.run(endpoint, state, stop)))
}

struct Relay {
    branch: String,
    store: Store,
    metrics: Metrics,
    options: FleetOptions,
    /// The last acknowledged audit seq (as stored).
    cursor: u64,
    /// The last committed audit seq, as last read.
    head: u64,
}

/// One message to publish: where it goes, its id, its bytes, and the audit seq it stands
/// for (the cursor may pass that seq only once it is acknowledged).
struct Message {
    kind: Kind,
    id: String,
    payload: Vec<u8>,
    position: u64,
}

impl Relay {
    async fn run(mut self, endpoint: Endpoint, state: AppState, mut stop: watch::Receiver<bool>) {
        let client = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(e) => {
                    // Only a configuration problem gets here (the server's absence does
                    // not): say it, and try again in case the file appears.
                    tracing::error!("fleet relay: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        let js = {
            let b = jetstream::context::ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                // Above what one batch can have in flight (records and summaries), so a
                // batch never waits on its own unacknowledged publishes.
                .max_ack_inflight(2 * self.options.batch + 16);
            match &self.options.domain {
                Some(d) => b.domain(d.clone()).build(client.clone()),
                None => b.build(client.clone()),
            }
        };
        match self.read_position().await {
            Ok(()) => {}
            Err(e) => {
                tracing::error!("fleet relay: cannot read the relay cursor; not relaying: {e}");
                return;
            }
        }
        let mut stream_ready = false;
        let mut backoff = MIN_BACKOFF;
        let mut retry_at = tokio::time::Instant::now();
        let mut appended = self.store.stats().audit_records;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(self.options.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut health_due = false;
            tokio::select! {
                _ = stop.changed() => break,
                _ = poll.tick() => {}
                _ = health.tick() => health_due = true,
            }
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            tracing::trace!(
                connected,
                head = self.head,
                cursor = self.cursor,
                "fleet relay: tick"
            );
            self.metrics.connected.set(i64::from(connected));
            self.refresh_head(&mut appended);
            if health_due && connected && stream_ready {
                tokio::select! {
                    () = self.publish_health(&js, &state) => {}
                    _ = stop.changed() => break,
                }
            }
            if !connected || tokio::time::Instant::now() < retry_at {
                continue;
            }
            while self.head > self.cursor || !stream_ready {
                let step = async {
                    if !stream_ready {
                        self.ensure_stream(&js).await?;
                        stream_ready = true;
                    }
                    if self.head > self.cursor {
                        self.relay_batch(&js).await?;
                    }
                    Ok::<(), String>(())
                };
                let result = tokio::select! {
                    r = step => r,
                    _ = stop.changed() => return,
                };
                self.refresh_head(&mut appended);
                match result {
                    Ok(()) => backoff = MIN_BACKOFF,
                    Err(e) => {
                        tracing::warn!(
                            backlog = self.head.saturating_sub(self.cursor),
                            "fleet relay: {e}; trying again in {backoff:?}"
                        );
                        retry_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        stream_ready = false;
                        break;
                    }
                }
            }
        }
    }

    /// Reads the audit head again if records were appended since `appended` was counted
    /// (one key read, done inline: cheaper than a hop to a blocking thread).
    fn refresh_head(&mut self, appended: &mut u64) {
        let now = self.store.stats().audit_records;
        if now != *appended {
            *appended = now;
            match self.store.audit_head() {
                Ok(head) => self.head = head.seq,
                Err(e) => tracing::warn!("fleet relay: cannot read the audit head: {e}"),
            }
        }
        self.show_backlog();
    }

    /// Reads the stored cursor and the audit head.
    async fn read_position(&mut self) -> Result<(), String> {
        let store = self.store.clone();
        let (cursor, head) = tokio::task::spawn_blocking(move || {
            Ok::<_, String>((
                store.relay_cursor().get().map_err(|e| e.to_string())?,
                store.audit_head().map_err(|e| e.to_string())?.seq,
            ))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.cursor = cursor;
        self.head = head;
        self.show_backlog();
        Ok(())
    }

    fn show_backlog(&self) {
        let backlog = self.head.saturating_sub(self.cursor);
        self.metrics
            .backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        if backlog == 0 {
            self.metrics.progress();
        }
    }

    /// Creates the branch stream if it is missing (file storage, the configured limits),
    /// and moves the cursor past the last audit record it already holds.
    async fn ensure_stream(&mut self, js: &jetstream::Context) -> Result<(), String> {
        let name = wire::branch_stream(&self.branch);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![wire::branch_subjects(&self.branch)],
            storage: stream::StorageType::File,
            max_bytes: i64::try_from(self.options.stream_max_bytes).unwrap_or(i64::MAX),
            max_age: self.options.stream_max_age,
            duplicate_window: DUPLICATE_WINDOW,
            discard: stream::DiscardPolicy::Old,
            description: Some(format!("casegraph box of branch {}", self.branch)),
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("cannot open the branch stream {name}: {e}"))?;
        tracing::debug!(stream = name, "fleet relay: branch stream ready");
        let subject = wire::branch_subject(&self.branch, Kind::Audit);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => serde_json::from_slice::<wire::AuditRecord>(&m.payload)
                .map(|r| (r.record.seq, r.record.hash))
                .ok(),
            // No audit message yet (or none kept): nothing to skip.
            Err(_) => None,
        };
        if let Some((last, hash)) = last
            && last > self.cursor
            && last <= self.head
        {
            // Anyone who may publish on the branch's subjects could plant a record there;
            // only one this box committed, with its hash, moves the cursor.
            let store = self.store.clone();
            let own = tokio::task::spawn_blocking(move || own_hash(&store, last))
                .await
                .map_err(|e| e.to_string())?;
            if own.as_deref() != Some(hash.as_str()) {
                tracing::warn!(
                    seq = last,
                    "fleet relay: the branch stream's last audit record is not the one this box committed at that seq; relaying from the cursor"
                );
                return Ok(());
            }
            tracing::info!(
                stream_holds = last,
                cursor = self.cursor,
                "fleet relay: the branch stream already holds records after the cursor; going on after them"
            );
            self.store_cursor(last).await?;
        }
        Ok(())
    }

    async fn store_cursor(&mut self, seq: u64) -> Result<(), String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.relay_cursor().set(seq))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot store the relay cursor: {e}"))?;
        self.cursor = seq;
        Ok(())
    }

    /// Publishes up to `fleet.batch` records after the cursor (and the summaries of the
    /// cases they changed), awaits every acknowledgement and moves the cursor to the last
    /// record before the first failure.
    async fn relay_batch(&mut self, js: &jetstream::Context) -> Result<(), String> {
        let (store, branch, after, batch) = (
            self.store.clone(),
            self.branch.clone(),
            self.cursor,
            self.options.batch,
        );
        let (messages, last) =
            tokio::task::spawn_blocking(move || read_batch(&store, &branch, after, batch))
                .await
                .map_err(|e| e.to_string())??;
        tracing::debug!(
            after,
            last,
            messages = messages.len(),
            "fleet relay: publishing a batch"
        );
        if messages.is_empty() {
            // Nothing after the cursor (an archive cut took it): the head is all there is.
            self.head = self.cursor;
            return Ok(());
        }
        let mut pending: Vec<(Kind, u64, PublishAckFuture)> = Vec::with_capacity(messages.len());
        let mut failed: Option<(u64, String)> = None;
        for m in messages {
            let mut headers = HeaderMap::new();
            headers.insert(wire::MSG_ID_HEADER, m.id.as_str());
            let subject = wire::branch_subject(&self.branch, m.kind);
            match js
                .publish_with_headers(subject, headers, m.payload.into())
                .await
            {
                Ok(ack) => pending.push((m.kind, m.position, ack)),
                Err(e) => {
                    failed = Some((m.position, format!("publishing {}: {e}", m.id)));
                    break;
                }
            }
        }
        // Awaited together: each waits up to ACK_TIMEOUT from when it is awaited, so one
        // after the other a lost connection would cost the batch's length times that.
        let mut acks = tokio::task::JoinSet::new();
        for (kind, position, ack) in pending {
            acks.spawn(async move { (kind, position, ack.await) });
        }
        while let Some(joined) = acks.join_next().await {
            let (kind, position, result) = joined.map_err(|e| e.to_string())?;
            match result {
                Ok(_) => self.metrics.published(kind),
                Err(e) => {
                    if failed.as_ref().is_none_or(|(p, _)| position < *p) {
                        failed = Some((position, format!("no acknowledgement: {e}")));
                    }
                }
            }
        }
        let acked_to = match &failed {
            Some((position, _)) => position.saturating_sub(1).max(self.cursor),
            None => last,
        };
        tracing::debug!(
            acked_to,
            failed = failed.is_some(),
            "fleet relay: batch acknowledged"
        );
        if acked_to > self.cursor {
            self.store_cursor(acked_to).await?;
            self.metrics.progress();
        }
        match failed {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    async fn publish_health(&self, js: &jetstream::Context, state: &AppState) {
        let (s, branch, backlog) = (
            state.clone(),
            self.branch.clone(),
            self.head.saturating_sub(self.cursor),
        );
        let Ok(health) =
            tokio::task::spawn_blocking(move || super::health::snapshot(&s, &branch, backlog))
                .await
        else {
            return;
        };
        let id = wire::msg_id(
            &self.branch,
            Kind::Health,
            &health.at.as_millisecond().to_string(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(wire::MSG_ID_HEADER, id.as_str());
        let payload = serde_json::to_vec(&health).expect("health serializes");
        let subject = wire::branch_subject(&self.branch, Kind::Health);
        let result = match js
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => self.metrics.published(Kind::Health),
            Err(e) => tracing::debug!("fleet relay: health snapshot not published: {e}"),
        }
    }
}

/// The hash of the box's own audit record `seq`, if it is stored and readable.
fn own_hash(store: &Store, seq: u64) -> Option<String> {
    let (_, bytes) = store.audit_records_after(seq.checked_sub(1)?).next()?;
    let record: audit::Record = serde_json::from_slice(&bytes).ok()?;
    (record.seq == seq).then_some(record.hash)
}

/// Reads up to `batch` records after `after` and builds their messages: each record, and
/// after the batch the summary of every case a record changed (one per case, at the seq
/// of its last such record). Returns the messages and the last record's seq.
fn read_batch(
    store: &Store,
    branch: &str,
    after: u64,
    batch: usize,
) -> Result<(Vec<Message>, u64), String> {
    let mut messages = Vec::with_capacity(batch + batch / 4);
    let mut changed: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = after;
    let mut records = store.audit_records_after(after);
    for (key, bytes) in records.by_ref().take(batch) {
        let record: audit::Record = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "audit record at {} is not readable ({e}); relaying stops before it",
                String::from_utf8_lossy(&key)
            )
        })?;
        if record.seq != last + 1 {
            tracing::warn!(
                expected = last + 1,
                found = record.seq,
                "fleet relay: audit records are missing before this one (archived before they were relayed?)"
            );
        }
        last = record.seq;
        if changes_case(record.kind) {
            changed.insert(record.case_id.clone(), record.seq);
        }
        let id = wire::msg_id(branch, Kind::Audit, &record.seq.to_string());
        let message = wire::AuditRecord {
            branch: branch.to_string(),
            record,
        };
        messages.push(Message {
            kind: Kind::Audit,
            id,
            payload: serde_json::to_vec(&message).expect("audit records serialize"),
            position: last,
        });
    }
    if let Some(e) = records.error {
        return Err(format!("cannot read the audit records after {after}: {e}"));
    }
    let mut summaries: Vec<Message> = Vec::new();
    for (case_id, seq) in changed {
        let case = match store.cases().get(&case_id) {
            Ok(Some(case)) => case,
            // Archived since, or not a case (`customer:…`, `schedule:…`): no summary.
            Ok(None) => continue,
            Err(e) => return Err(format!("cannot read case {case_id}: {e}")),
        };
        let summary = summary(branch, seq, &case);
        summaries.push(Message {
            kind: Kind::Case,
            id: wire::msg_id(branch, Kind::Case, &seq.to_string()),
            payload: serde_json::to_vec(&summary).expect("summaries serialize"),
            position: seq,
        });
    }
    summaries.sort_by_key(|m| m.position);
    messages.extend(summaries);
    Ok((messages, last))
}

/// Whether a record of this kind changes what a case summary shows.
fn changes_case(kind: audit::Kind) -> bool {
    use audit::Kind as K;
    matches!(
        kind,
        K::Accepted
            | K::Classified
            | K::Routed
            | K::Step
            | K::TaskCompleted
            | K::Outcome
            | K::Message
            | K::Erased
    )
}

/// A case's summary for the hub: status, workflow, route, outcome, times and signals;
/// never the request, the case data, the customer or a reply.
pub fn summary(branch: &str, audit_seq: u64, case: &CaseRecord) -> wire::CaseSummary {
    let mut signals = BTreeMap::new();
    if let Some(why) = &case.why {
        let s = &why.signals;
        if let Some(intent) = &s.intent {
            signals.insert("intent".into(), intent.clone().into());
        }
        if let Some(c) = s.confidence {
            signals.insert("confidence".into(), c.into());
        }
        signals.insert("out_of_scope".into(), s.out_of_scope.into());
        if let Some(label) = s.sentiment.as_ref().and_then(|v| v.get("label")) {
            signals.insert("sentiment".into(), label.clone());
        }
        if let Some(flagged) = s.frustration.as_ref().and_then(|v| v.get("flagged")) {
            signals.insert("frustrated".into(), flagged.clone());
        }
    } else if let Some(c) = &case.classification {
        for key in ["intent", "confidence"] {
            if let Some(v) = c.get(key) {
                signals.insert(key.into(), v.clone());
            }
        }
    }
    wire::CaseSummary {
        branch: branch.to_string(),
        audit_seq,
        case_id: case.id.clone(),
        status: case.status.as_str().to_string(),
        workflow: case.workflow.as_ref().map(|w| w.id.clone()),
        version: case.workflow.as_ref().map(|w| w.version),
        route: case.route.as_ref().map(|r| match r {
            Route::Workflow { .. } => "workflow".to_string(),
            Route::Queue { queue, .. } => format!("queue:{queue}"),
        }),
        outcome: case.state.as_ref().and_then(|s| s.outcome.clone()),
        accepted_at: case.accepted_at,
        updated_at: case.updated_at,
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_that_change_a_case_bring_a_summary() {
        assert!(changes_case(audit::Kind::Outcome) && changes_case(audit::Kind::Routed));
        assert!(!changes_case(audit::Kind::Call) && !changes_case(audit::Kind::Scheduled));
    }
}
