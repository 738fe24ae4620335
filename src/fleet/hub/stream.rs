//! The hub's side of JetStream: it makes sure `CG_FLEET` sources every listed branch
//! stream (across domains through `$JS.<domain>.API`, locally when the branch stream is
//! in the hub's own domain) and `CG_ROLLOUT` exists, then reads `CG_FLEET` in order from
//! its own cursor. What is ready is applied in one store transaction that also moves the
//! cursor (the stream sequence of the last message applied): the commit is the
//! acknowledgement. A batch the store refuses is tried again, never skipped.
//!
//! Why not a durable consumer with acks: a message delivered to a hub that was then
//! killed is redelivered only after the ack wait, while later messages flow on, so the
//! hub saw record 12 before record 11 and flagged a gap that was not there (the test
//! `a_hub_stopped_while_branches_publish_catches_up_exactly_once` did). An ordered
//! consumer from the hub's cursor delivers in stream order, also across reconnects (it
//! recreates itself from the last sequence it delivered).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::{FutureExt as _, StreamExt as _};
use jiff::Timestamp;

use super::branches::Branches;
use super::ingest::{self, Incoming};
use super::store::Store;
use crate::fleet::wire;

/// Waits between attempts while NATS or the store is not there.
const RETRY: Duration = Duration::from_secs(1);

/// Ingest lags kept for the percentiles (the most recent ones).
const LAGS_KEPT: usize = 100_000;

/// What the ingest did since the hub started, for `GET /v1/fleet/ingest` and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    pub messages: AtomicU64,
    pub records: AtomicU64,
    pub batches: AtomicU64,
    /// Milliseconds from a record's `at` to its commit at the hub, most recent last.
    lags_ms: Mutex<VecDeque<u64>>,
}

impl Stats {
    fn note(&self, messages: usize, applied: &ingest::Applied, now: Timestamp) {
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        self.records
            .fetch_add(applied.records.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut lags = self.lags_ms.lock().unwrap_or_else(|e| e.into_inner());
        for at in &applied.records {
            let ms = now.duration_since(*at).as_millis().max(0) as u64;
            if lags.len() == LAGS_KEPT {
                lags.pop_front();
            }
            lags.push_back(ms);
        }
    }

    /// The `p`-th percentile (0–100) of the kept lags, in milliseconds.
    pub fn lag_percentile(&self, p: f64) -> Option<u64> {
        let mut lags: Vec<u64> = self
            .lags_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        if lags.is_empty() {
            return None;
        }
        lags.sort_unstable();
        let at = ((p / 100.0) * (lags.len() - 1) as f64).round() as usize;
        lags.get(at.min(lags.len() - 1)).copied()
    }
}

/// `CG_FLEET`'s sources: one per branch, external for branches in another domain.
pub fn sources(branches: &Branches, hub_domain: &str) -> Vec<stream::Source> {
    branches
        .0
        .iter()
        .map(|b| stream::Source {
            name: wire::branch_stream(&b.name),
            external: (b.domain() != hub_domain).then(|| stream::External {
                api_prefix: format!("$JS.{}.API", b.domain()),
                delivery_prefix: None,
            }),
            ..Default::default()
        })
        .collect()
}

/// Creates or updates `CG_FLEET` (with the branch list's sources) and `CG_ROLLOUT`.
pub async fn ensure(
    js: &jetstream::Context,
    branches: &Branches,
    hub_domain: &str,
) -> Result<stream::Stream, String> {
    let fleet = stream::Config {
        name: wire::FLEET_STREAM.to_string(),
        description: Some("casegraph fleet: sources every branch stream".into()),
        subjects: Vec::new(),
        sources: Some(sources(branches, hub_domain)),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_or_update_stream(fleet)
        .await
        .map_err(|e| format!("creating stream {}: {e}", wire::FLEET_STREAM))?;
    let rollout = stream::Config {
        name: wire::ROLLOUT_STREAM.to_string(),
        description: Some("casegraph rollouts, one subject per branch".into()),
        subjects: vec![wire::ROLLOUT_SUBJECTS.to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.create_or_update_stream(rollout)
        .await
        .map_err(|e| format!("creating stream {}: {e}", wire::ROLLOUT_STREAM))?;
    js.get_stream(wire::FLEET_STREAM)
        .await
        .map_err(|e| format!("opening stream {}: {e}", wire::FLEET_STREAM))
}

/// Reads `CG_FLEET` into the store until `stop` turns true.
pub async fn run(
    js: jetstream::Context,
    store: Arc<Store>,
    branches: Arc<Branches>,
    hub_domain: String,
    batch: usize,
    stats: Arc<Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let result = match ensure(&js, &branches, &hub_domain).await {
            Ok(mut fleet) => drain(&mut fleet, &store, batch, &stats, &mut stop).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("fleet hub: {e}; trying again");
            if pause(&mut stop).await {
                return;
            }
        }
    }
}

/// Waits [`RETRY`]; `true` when stopped meanwhile.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Where to start: after the cursor, or from the first message when the stream holds
/// fewer than the hub applied (made anew after its server's store was lost; what the hub
/// holds already is applied as nothing).
async fn start(fleet: &mut stream::Stream, store: &Arc<Store>) -> Result<u64, String> {
    let s = store.clone();
    let cursor = tokio::task::spawn_blocking(move || s.cursor())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let last = fleet
        .info()
        .await
        .map_err(|e| format!("reading {}'s state: {e}", wire::FLEET_STREAM))?
        .state
        .last_sequence;
    if last < cursor {
        tracing::error!(
            cursor,
            last,
            "fleet hub: {} holds fewer messages than the hub applied; reading it from the start",
            wire::FLEET_STREAM
        );
        return Ok(1);
    }
    Ok(cursor + 1)
}

async fn drain(
    fleet: &mut stream::Stream,
    store: &Arc<Store>,
    batch: usize,
    stats: &Stats,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let from = start(fleet, store).await?;
    let consumer = fleet
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating a consumer on {}: {e}", wire::FLEET_STREAM))?;
    tracing::info!(from, "fleet hub: reading {}", wire::FLEET_STREAM);
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("reading {}: {e}", wire::FLEET_STREAM))?;
    loop {
        let first = tokio::select! {
            m = messages.next() => m,
            _ = stop.changed() => return Ok(()),
        };
        let mut ready = match first {
            Some(Ok(m)) => vec![m],
            Some(Err(e)) => return Err(format!("reading {}: {e}", wire::FLEET_STREAM)),
            None => return Err(format!("{} ended", wire::FLEET_STREAM)),
        };
        // What else is ready now joins the same transaction.
        while ready.len() < batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => ready.push(m),
                _ => break,
            }
        }
        let mut incoming = Vec::with_capacity(ready.len());
        for m in &ready {
            let seq = m
                .info()
                .map_err(|e| {
                    format!(
                        "a message of {} without its sequence: {e}",
                        wire::FLEET_STREAM
                    )
                })?
                .stream_sequence;
            incoming.push(Incoming {
                seq,
                subject: m.subject.to_string(),
                payload: m.payload.to_vec(),
            });
        }
        let incoming = Arc::new(incoming);
        loop {
            let (s, inc) = (store.clone(), incoming.clone());
            let result = tokio::task::spawn_blocking(move || {
                let now = Timestamp::now();
                s.write(|b| ingest::apply(b, &inc, now)).map(|a| (a, now))
            })
            .await;
            match result {
                Ok(Ok((applied, now))) => {
                    stats.note(incoming.len(), &applied, now);
                    break;
                }
                Ok(Err(e)) => tracing::error!("fleet hub: committing a batch: {e}; trying again"),
                Err(e) => tracing::error!("fleet hub: the ingest task failed: {e}; trying again"),
            }
            if pause(stop).await {
                // Not committed: read again from the cursor at the next start.
                return Ok(());
            }
        }
    }
}
