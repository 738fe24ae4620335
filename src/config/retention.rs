//! `[retention]`: which finished cases `casegraph serve` moves into archive files, and when.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::options::duration;

/// Retention: finished cases older than their status's age leave the live store for an
/// archive file (`casegraph archive` does the same by hand; `docs/operations.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionOptions {
    /// Archive on a schedule while serving. Off by default: a box keeps every case until
    /// its operator chooses how long and where archives go.
    pub enabled: bool,
    /// Completed cases older than this (since their last change) are archived.
    #[serde(with = "duration")]
    pub completed: Duration,
    /// Failed cases: kept longer by default, they are the ones someone asks about.
    #[serde(with = "duration")]
    pub failed: Duration,
    /// Escalated cases.
    #[serde(with = "duration")]
    pub escalated: Duration,
    /// Where archive files are written; default `<data_dir>/archive`. Copy them off the box:
    /// what stays here still takes disk space.
    pub directory: Option<PathBuf>,
    /// Shortest time between two runs.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// A run starts only once the store has seen no write for this long: it reads and
    /// deletes in bulk, and should not compete with intake.
    #[serde(with = "duration")]
    pub idle_after: Duration,
    /// Most cases per run (per archive file); the next run takes the rest.
    pub max_cases: usize,
    /// Compact the store in place at idle runs: after one that removed cases, at the first
    /// since the start, and when the file has doubled since the last compaction; reads and
    /// writes wait while it runs (`docs/operations.md` has its cost).
    pub compact: bool,
}

/// Most cases one run may archive: bounds a run's time and its file's size.
pub const MAX_CASES: usize = 1_000_000;

const DAY: u64 = 24 * 3600;

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            enabled: false,
            completed: Duration::from_secs(90 * DAY),
            failed: Duration::from_secs(180 * DAY),
            escalated: Duration::from_secs(180 * DAY),
            directory: None,
            interval: Duration::from_secs(DAY),
            idle_after: Duration::from_secs(300),
            max_cases: 100_000,
            compact: true,
        }
    }
}

impl RetentionOptions {
    /// What is wrong with these settings: `(field, message)`.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.completed.is_zero() || self.failed.is_zero() || self.escalated.is_zero() {
            return Some((
                "retention",
                "completed, failed and escalated must be positive ages",
            ));
        }
        if self.interval.is_zero() {
            return Some(("retention.interval", "must be positive"));
        }
        if !(1..=MAX_CASES).contains(&self.max_cases) {
            return Some(("retention.max_cases", "must be 1 to 1000000"));
        }
        None
    }
}
