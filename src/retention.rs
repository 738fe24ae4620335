//! The retention job of `casegraph serve`: when the store has been quiet for
//! `retention.idle_after` and `retention.interval` has passed since the last run, the
//! finished cases older than their status's age go to a new archive file in
//! `retention.directory` and leave the live store (`store::archive`, which is crash-safe
//! on its own: a run the process did not finish leaves duplicates, never losses).
//!
//! Idle means no commit: the job compares the store's commit count between its checks, so
//! a box taking requests, running cases or firing timers is left alone.
//!
//! After a run that removed cases (and `retention.compact`), the store is compacted in
//! place, so the file gives their space back while the server keeps serving: requests that
//! touch the store wait the compaction out (its cost is in `docs/operations.md`). The first
//! idle run after a start compacts too, and so does any run that finds the file grown to
//! twice its size after the last compaction: unclean restarts and redb's growth in steps
//! leave space behind that no archive run frees ([`must_compact`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casegraph_engine::store::archive::{self, Archived, Cutoffs};
use casegraph_engine::store::{Compaction, Store};
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::RetentionOptions;

/// Starts the job if `options` enable it; it ends when `stop` turns true (after the run in
/// progress, if any). With `wait_for_relay` (the box is part of a fleet) a run waits until
/// the fleet relay has every audit record acknowledged: archiving takes records out of the
/// live chain, and the hub must have them first.
pub fn spawn(
    options: &RetentionOptions,
    data_dir: &Path,
    store: Store,
    metrics: Metrics,
    wait_for_relay: bool,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !options.enabled {
        return None;
    }
    let options = options.clone();
    let dir = options
        .directory
        .clone()
        .unwrap_or_else(|| data_dir.join("archive"));
    let check = (options.idle_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commits = store.stats().commits;
        let mut quiet_since = Instant::now();
        let mut last_run: Option<Instant> = None;
        // The file's size right after the last compaction; `None` until the first.
        let mut compacted_to: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let now = store.stats().commits;
            if now != commits {
                commits = now;
                quiet_since = Instant::now();
                continue;
            }
            let due = last_run.is_none_or(|t| t.elapsed() >= options.interval);
            if quiet_since.elapsed() < options.idle_after || !due {
                continue;
            }
            if wait_for_relay && relay_behind(&store) {
                tracing::info!(
                    "retention: waiting for the fleet relay to send every audit record first"
                );
                quiet_since = Instant::now();
                continue;
            }
            let (s, o, d) = (store.clone(), options.clone(), dir.clone());
            let removed = match tokio::task::spawn_blocking(move || run_once(&s, &o, &d)).await {
                Ok(Ok(Some(done))) => {
                    tracing::info!(
                        file = %done.path.display(),
                        cases = done.cases,
                        removed = done.removed,
                        anchor = done.anchor.seq,
                        "retention: finished cases archived"
                    );
                    metrics.archived(done.cases);
                    done.removed
                }
                Ok(Ok(None)) => {
                    tracing::debug!("retention: no finished case is old enough");
                    metrics.archived(0);
                    0
                }
                Ok(Err(e)) => {
                    tracing::error!("retention: archive run failed: {e}");
                    0
                }
                Err(e) => {
                    tracing::error!("retention: archive run panicked: {e}");
                    0
                }
            };
            if options.compact && must_compact(removed, store.disk_bytes(), compacted_to) {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.compact()).await {
                    Ok(Ok(Some(c))) => {
                        tracing::info!(
                            bytes_before = c.bytes_before,
                            bytes_after = c.bytes_after,
                            millis = c.millis,
                            "retention: store compacted"
                        );
                        metrics.compacted(&c);
                        compacted_to = Some(c.bytes_after);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::error!("retention: compaction failed: {e}"),
                    Err(e) => tracing::error!("retention: compaction panicked: {e}"),
                }
            }
            // The run's own commits are not activity.
            commits = store.stats().commits;
            last_run = Some(Instant::now());
        }
    }))
}

/// Whether audit records are committed that the fleet relay has not had acknowledged.
fn relay_behind(store: &Store) -> bool {
    match (store.audit_head(), store.relay_cursor().get()) {
        (Ok(head), Ok(cursor)) => cursor < head.seq,
        // Unknown: archive nothing rather than records the hub may not have.
        _ => true,
    }
}

/// Whether an idle run compacts the store: after it removed cases, at the first run since the
/// start (`compacted_to` is `None`: the file may carry what unclean restarts left), and when
/// the file has grown to twice its size after the last compaction.
pub fn must_compact(removed: u64, file_bytes: u64, compacted_to: Option<u64>) -> bool {
    removed > 0 || compacted_to.is_none_or(|after| file_bytes >= after.saturating_mul(2))
}

/// One run: the cases past their age into `dir/cases-<time>.jsonl.zst`; `None` when no case
/// is old enough (no file is written).
pub fn run_once(
    store: &Store,
    options: &RetentionOptions,
    dir: &Path,
) -> Result<Option<Archived>, archive::Error> {
    let now = Timestamp::now();
    let io = |e: std::io::Error| archive::Error::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io)?;
    // What a crash left of a file being written is never complete: it goes.
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "partial") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut cutoffs = Cutoffs::default();
    for (status, age) in [
        ("completed", options.completed),
        ("failed", options.failed),
        ("escalated", options.escalated),
    ] {
        let age = jiff::SignedDuration::try_from(age).unwrap_or(jiff::SignedDuration::MAX);
        cutoffs
            .0
            .insert(status, now.checked_sub(age).unwrap_or(Timestamp::MIN));
    }
    let path: PathBuf = dir.join(format!(
        "cases-{}.jsonl.zst",
        now.strftime("%Y%m%dT%H%M%S%.fZ")
    ));
    archive::archive(store, &cutoffs, &path, options.max_cases, now)
}

/// What retention and compaction did since the start (`casegraph_retention_*`,
/// `casegraph_store_compaction_*`), for `/metrics` and the console's box status.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    archived_cases: Counter,
    /// Unix seconds of the last finished archive run (also one that found nothing); 0: none.
    last_archive: Gauge,
    compactions: Counter,
    /// Unix seconds of the last compaction; 0: none.
    last_compaction: Gauge,
    last_compaction_millis: Gauge,
    last_compaction_before: Gauge,
    last_compaction_after: Gauge,
}

/// Retention as the console shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Cases moved into archive files since the start.
    pub archived_cases: u64,
    /// When the last archive run finished (RFC 3339); `None`: not since the start.
    pub last_archive: Option<String>,
    pub last_compaction: Option<CompactionStatus>,
}

/// The last compaction of the store.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CompactionStatus {
    /// When it finished (RFC 3339).
    pub at: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long requests touching the store waited for it.
    pub millis: u64,
}

impl Metrics {
    /// Registers the retention metrics.
    pub fn register(r: &mut Registry) -> Metrics {
        let m = Metrics::default();
        r.register(
            "retention_archived_cases",
            "Finished cases moved into archive files by the retention job",
            m.archived_cases.clone(),
        );
        r.register(
            "retention_last_archive_timestamp_seconds",
            "When the last retention run finished (unix seconds); 0: none since the start",
            m.last_archive.clone(),
        );
        r.register(
            "store_compactions",
            "Compactions of the store while serving",
            m.compactions.clone(),
        );
        r.register(
            "store_last_compaction_timestamp_seconds",
            "When the last compaction finished (unix seconds); 0: none since the start",
            m.last_compaction.clone(),
        );
        r.register(
            "store_last_compaction_milliseconds",
            "How long the last compaction held reads and writes",
            m.last_compaction_millis.clone(),
        );
        r.register(
            "store_last_compaction_bytes_before",
            "The store file's size before the last compaction",
            m.last_compaction_before.clone(),
        );
        r.register(
            "store_last_compaction_bytes_after",
            "The store file's size after the last compaction",
            m.last_compaction_after.clone(),
        );
        m
    }

    fn archived(&self, cases: u64) {
        self.archived_cases.inc_by(cases);
        self.last_archive.set(Timestamp::now().as_second());
    }

    fn compacted(&self, c: &Compaction) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.last_compaction_millis.set(gauge(c.millis));
        self.last_compaction_before.set(gauge(c.bytes_before));
        self.last_compaction_after.set(gauge(c.bytes_after));
        self.compactions.inc();
        self.last_compaction.set(Timestamp::now().as_second());
    }

    /// What the console shows.
    pub fn status(&self) -> Status {
        let at = |secs: i64| {
            (secs > 0)
                .then(|| Timestamp::from_second(secs).ok())
                .flatten()
                .map(|t| t.to_string())
        };
        let bytes = |g: &Gauge| u64::try_from(g.get()).unwrap_or(0);
        Status {
            archived_cases: self.archived_cases.get(),
            last_archive: at(self.last_archive.get()),
            last_compaction: at(self.last_compaction.get()).map(|at| CompactionStatus {
                at,
                bytes_before: bytes(&self.last_compaction_before),
                bytes_after: bytes(&self.last_compaction_after),
                millis: bytes(&self.last_compaction_millis),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::must_compact;

    #[test]
    fn an_idle_run_compacts_after_removals_once_after_the_start_and_when_the_file_doubled() {
        assert!(must_compact(3, 10, Some(10)), "cases removed");
        assert!(must_compact(0, 10, None), "first run since the start");
        assert!(!must_compact(0, 19, Some(10)), "grown, but less than twice");
        assert!(
            must_compact(0, 20, Some(10)),
            "twice the size after the last compaction"
        );
    }
}
