//! The retention job of `casegraph serve`: when the store has been quiet for
//! `retention.idle_after` and `retention.interval` has passed since the last run, the
//! finished cases older than their status's age go to a new archive file in
//! `retention.directory` and leave the live store (`store::archive`, which is crash-safe
//! on its own: a run the process did not finish leaves duplicates, never losses).
//!
//! Idle means no commit: the job compares the store's commit count between its checks, so
//! a box taking requests, running cases or firing timers is left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casegraph_engine::store::Store;
use casegraph_engine::store::archive::{self, Archived, Cutoffs};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::config::RetentionOptions;

/// Starts the job if `options` enable it; it ends when `stop` turns true (after the run in
/// progress, if any).
pub fn spawn(
    options: &RetentionOptions,
    data_dir: &Path,
    store: Store,
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
            let (s, o, d) = (store.clone(), options.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || run_once(&s, &o, &d)).await {
                Ok(Ok(Some(done))) => tracing::info!(
                    file = %done.path.display(),
                    cases = done.cases,
                    removed = done.removed,
                    anchor = done.anchor.seq,
                    "retention: finished cases archived"
                ),
                Ok(Ok(None)) => tracing::debug!("retention: no finished case is old enough"),
                Ok(Err(e)) => tracing::error!("retention: archive run failed: {e}"),
                Err(e) => tracing::error!("retention: archive run panicked: {e}"),
            }
            // The run's own commits are not activity.
            commits = store.stats().commits;
            last_run = Some(Instant::now());
        }
    }))
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
