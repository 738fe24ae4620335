//! The hub's side of JetStream: it makes sure `CG_FLEET` sources every listed branch
//! stream (across domains through `$JS.<domain>.API`, locally when the branch stream is
//! in the hub's own domain) and `CG_ROLLOUT` exists, then drains `CG_FLEET` with one
//! durable pull consumer. What is ready is applied in one store transaction and only then
//! acknowledged (ack-all on the last message), so a crash redelivers and the idempotent
//! ingest applies it once. A batch the store refuses is tried again, never skipped: with
//! ack-all, acknowledging a later message would drop it.

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

/// The hub's durable consumer on `CG_FLEET`.
pub const CONSUMER: &str = "hub";

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

/// Creates or updates `CG_FLEET` (with the branch list's sources) and `CG_ROLLOUT`, and
/// the hub's durable consumer.
pub async fn ensure(
    js: &jetstream::Context,
    branches: &Branches,
    hub_domain: &str,
) -> Result<consumer::PullConsumer, String> {
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
    let stream = js
        .get_stream(wire::FLEET_STREAM)
        .await
        .map_err(|e| format!("opening stream {}: {e}", wire::FLEET_STREAM))?;
    stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            format!(
                "creating consumer {CONSUMER} on {}: {e}",
                wire::FLEET_STREAM
            )
        })
}

/// Drains `CG_FLEET` into the store until `stop` turns true.
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
        let consumer = match ensure(&js, &branches, &hub_domain).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("fleet hub: {e}; trying again");
                if pause(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(
            branches = branches.0.len(),
            "fleet hub: consuming {}",
            wire::FLEET_STREAM
        );
        if let Err(e) = drain(&consumer, &store, batch, &stats, &mut stop).await {
            tracing::warn!("fleet hub: {e}; reconnecting the consumer");
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

async fn drain(
    consumer: &consumer::PullConsumer,
    store: &Arc<Store>,
    batch: usize,
    stats: &Stats,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| format!("pulling from {}: {e}", wire::FLEET_STREAM))?;
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
        let incoming: Arc<Vec<Incoming>> = Arc::new(
            ready
                .iter()
                .map(|m| Incoming {
                    subject: m.subject.to_string(),
                    payload: m.payload.to_vec(),
                })
                .collect(),
        );
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
                // Not acknowledged: redelivered to the next start.
                return Ok(());
            }
        }
        if let Some(last) = ready.last() {
            // Ack-all: acknowledges every message of the batch. A lost ack redelivers
            // them, which the ingest applies as nothing.
            if let Err(e) = last.ack().await {
                tracing::warn!("fleet hub: acknowledging a batch: {e}");
            }
        }
    }
}
