//! The memory budget: resident memory (RSS) is sampled from `/proc/self/statm` on a small
//! background thread, and [`Guard::must_shed`] says when new work must be refused: once
//! resident memory reaches `memory.shed_at_percent` of `memory.budget_mib` while there is
//! queued work to drain (and always at the budget itself).
//!
//! The guard knows nothing of HTTP: the API's shedding middleware (`api::shedding`) asks
//! it and answers `503` + `Retry-After`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::MemoryOptions;

/// Bytes of one memory page (`/proc/self/statm` counts pages).
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The resident memory of this process in bytes, or `None` where `/proc` is unavailable.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The resident memory of another process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Watches resident memory against the budget.
#[derive(Debug)]
pub struct Guard {
    /// Shed from this many resident bytes on; `u64::MAX` without a budget.
    shed_at: u64,
    budget: u64,
    rss: AtomicU64,
    shedding: AtomicBool,
    sheds: AtomicU64,
}

impl Guard {
    /// A guard for `options`; with a budget, starts the sampling thread, which ends when
    /// the last reference to the guard is dropped.
    pub fn start(options: &MemoryOptions) -> std::io::Result<Arc<Guard>> {
        let budget = options.budget_mib.saturating_mul(1024 * 1024);
        let guard = Arc::new(Guard {
            shed_at: if budget == 0 {
                u64::MAX
            } else {
                budget / 100 * u64::from(options.shed_at_percent.clamp(1, 100))
            },
            budget,
            rss: AtomicU64::new(resident_bytes().unwrap_or(0)),
            shedding: AtomicBool::new(false),
            sheds: AtomicU64::new(0),
        });
        if budget > 0 {
            let weak: Weak<Guard> = Arc::downgrade(&guard);
            let every = options.sample_interval.max(Duration::from_millis(1));
            std::thread::Builder::new()
                .name("memory-watch".into())
                .spawn(move || {
                    while let Some(g) = weak.upgrade() {
                        g.sample();
                        drop(g);
                        std::thread::sleep(every);
                    }
                })?;
        }
        Ok(guard)
    }

    /// Reads resident memory now.
    pub fn sample(&self) {
        let Some(rss) = resident_bytes() else { return };
        self.rss.store(rss, Ordering::Relaxed);
        let over = rss >= self.shed_at;
        if self.shedding.swap(over, Ordering::Relaxed) != over {
            if over {
                tracing::warn!(
                    rss_mib = rss / (1024 * 1024),
                    budget_mib = self.budget / (1024 * 1024),
                    "resident memory is near the budget: shedding new requests (503)"
                );
            } else {
                tracing::info!(
                    rss_mib = rss / (1024 * 1024),
                    "resident memory is back under the shedding mark: taking requests again"
                );
            }
        }
    }

    /// Whether resident memory is at or above the shedding mark.
    pub fn over(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// Whether new work must be refused now, with `queued` cases waiting for a worker.
    /// At the budget itself: always. Between the mark and the budget: only while there is
    /// queued work to drain. Freed memory often stays resident (the allocator keeps it),
    /// so an idle box above the mark would otherwise refuse everything for good although
    /// refusing frees nothing; it takes requests again once its queue is empty.
    pub fn must_shed(&self, queued: usize) -> bool {
        let at_budget = self.budget > 0 && self.resident() >= self.budget;
        at_budget || (self.over() && queued > 0)
    }

    /// Counts a refused request.
    pub fn shed(&self) {
        self.sheds.fetch_add(1, Ordering::Relaxed);
    }

    /// Resident bytes at the last sample.
    pub fn resident(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// The budget in bytes (0: none).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Requests refused so far.
    pub fn sheds(&self) -> u64 {
        self.sheds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().expect("statm");
            assert!(rss > 1024 * 1024, "{rss}");
            let other = resident_bytes_of(std::process::id()).expect("status");
            // The two files count the same thing; allow for growth between the reads.
            assert!(other.abs_diff(rss) < 64 * 1024 * 1024, "{other} vs {rss}");
        }
    }

    #[test]
    fn a_tiny_budget_sheds_and_no_budget_never_does() {
        let tiny = Guard::start(&MemoryOptions {
            budget_mib: 1,
            shed_at_percent: 90,
            sample_interval: Duration::from_millis(5),
        })
        .expect("guard");
        tiny.sample();
        assert!(!cfg!(target_os = "linux") || tiny.over());
        let none = Guard::start(&MemoryOptions::default()).expect("guard");
        none.sample();
        assert!(!none.over());
    }

    #[test]
    fn above_the_mark_an_idle_box_still_takes_work_and_at_the_budget_none() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let rss_mib = resident_bytes().expect("statm") / (1024 * 1024);
        // the mark at 1 % of a budget 64 MiB above what this process holds now
        let over = Guard::start(&MemoryOptions {
            budget_mib: rss_mib + 64,
            shed_at_percent: 1,
            sample_interval: Duration::from_secs(3600),
        })
        .expect("guard");
        over.sample();
        assert!(over.over());
        assert!(!over.must_shed(0), "nothing queued: refusing frees nothing");
        assert!(over.must_shed(3), "work queued: drain it first");
        let full = Guard::start(&MemoryOptions {
            budget_mib: 1,
            shed_at_percent: 90,
            sample_interval: Duration::from_secs(3600),
        })
        .expect("guard");
        full.sample();
        assert!(full.must_shed(0), "at the budget nothing new is taken");
    }
}
