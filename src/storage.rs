//! The disk watermarks: free space on the data directory's filesystem and the data
//! directory's size are measured on a small background thread, and [`Guard::refusal`]
//! says which writes must be refused now (`[storage]` settings, docs/operations.md "Disk
//! space"):
//!
//! - below the **soft** mark new requests are refused (`507 storage_pressure`): the rest
//!   of the disk is for what is already accepted, publishes and tokens;
//! - below the **hard** mark, and after a store write failed for the disk's reasons
//!   (full, I/O error) until one succeeds again, every write the API offers is refused
//!   (`507 storage_full` / `503 storage_unavailable`) except task completions and token
//!   revocations; `/readyz` answers `store: false`.
//!
//! Reads, task completions, the cases already accepted (workers, timers) and erasure (the
//! CLI) are never refused here: they fail only if the disk itself refuses them. After a
//! failed write the guard tries a one-record write each sample, so writes come back by
//! themselves once space returns (the store reopens itself, see
//! `docs/adr/0011-disk-full-recovers-in-place.md`).
//!
//! The guard knows nothing of HTTP: the API's shedding middleware (`api::shedding`) asks it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use casegraph_engine::store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::config::StorageOptions;

const MIB: u64 = 1024 * 1024;

/// Seconds a refused client is told to wait: disk space comes back with retention or an
/// operator, not within a second.
pub const RETRY_AFTER_SECS: u64 = 10;

/// Where the disk stands, from good to bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Above both marks.
    Ok,
    /// Below the soft mark: new requests are refused.
    Pressure,
    /// Below the hard mark: every write but task completions is refused.
    Full,
    /// A store write failed for the disk's reasons and none succeeded since.
    Failed,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Ok,
            1 => Level::Pressure,
            2 => Level::Full,
            _ => Level::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Pressure => "pressure",
            Level::Full => "full",
            Level::Failed => "failed",
        }
    }

    /// Whether the box takes writes beyond task completions (what `/readyz` reports).
    pub fn writable(self) -> bool {
        self <= Level::Pressure
    }
}

/// What a write-bearing request is, for the marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A new request (a new case): refused from the soft mark on.
    Intake,
    /// Any other write (publish, token creation): refused from the hard mark on.
    Other,
}

/// A refusal and what to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub level: Level,
    /// After a failed write: whether the disk was full (else an I/O error).
    pub disk_full: bool,
}

impl Refusal {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self.level {
            Level::Ok | Level::Pressure => "storage_pressure",
            Level::Full => "storage_full",
            Level::Failed if self.disk_full => "storage_full",
            Level::Failed => "storage_unavailable",
        }
    }

    /// `507 Insufficient Storage` for a full disk, `503` for a failing one.
    pub fn status(self) -> u16 {
        if self.code() == "storage_unavailable" {
            503
        } else {
            507
        }
    }

    /// What the client reads.
    pub fn message(self) -> &'static str {
        match self.code() {
            "storage_pressure" => {
                "the box's disk is nearly full: it takes no new requests until space is freed; try again later"
            }
            "storage_full" => {
                "the box's disk is full: it takes no writes until space is freed; try again later"
            }
            _ => {
                "the box's disk failed a write: it takes no writes until one succeeds again; try again later"
            }
        }
    }
}

/// Checks a store write: its outcome tells the guard whether the disk takes writes.
type Probe = Box<dyn Fn() -> Result<(), store::Error> + Send + Sync>;

/// The disk as the console and a refusal's details show it: the level, whether the soft mark
/// is near, and the figures the marks are compared with (0 = that mark is off).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok`, `pressure` (below the soft mark), `full` (below the hard mark) or `failed` (the
    /// last write failed).
    pub level: &'static str,
    /// Within a quarter of the soft mark: the console warns.
    pub warning: bool,
    pub free_bytes: u64,
    pub data_bytes: u64,
    pub soft_free_bytes: u64,
    pub hard_free_bytes: u64,
    pub budget_bytes: u64,
    pub soft_budget_bytes: u64,
    /// Writes that failed since the start.
    pub write_failures: u64,
}

/// Watches the data directory's disk against the `[storage]` marks.
pub struct Guard {
    dir: PathBuf,
    /// Marks in bytes; 0: that measure is off.
    soft_free: u64,
    hard_free: u64,
    budget: u64,
    soft_budget: u64,
    free: AtomicU64,
    data: AtomicU64,
    level: AtomicU8,
    /// A store write failed for the disk's reasons and none succeeded since.
    failed: AtomicBool,
    /// The last failed write found the disk full (else an I/O error).
    failed_full: AtomicBool,
    /// Free bytes when that write failed: a full disk is asked again only once it has
    /// more (each failed write costs the store a reopen).
    failed_free: AtomicU64,
    probe: OnceLock<Probe>,
    /// Runs once writes succeed again after a failure (on the sampling thread).
    resumed: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Writes succeeded again since the last sample: `resumed` is due.
    resume_due: AtomicBool,
    /// Refusals by code, and store writes that failed for the disk's reasons.
    refused_pressure: AtomicU64,
    refused_full: AtomicU64,
    refused_unavailable: AtomicU64,
    write_failures: AtomicU64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("dir", &self.dir)
            .field("level", &self.level())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard over `dir` for `options`, sampled once now and then on a thread that ends
    /// when the last reference to the guard is dropped.
    pub fn start(options: &StorageOptions, dir: &Path) -> std::io::Result<Arc<Guard>> {
        let budget = options.budget_mib.saturating_mul(MIB);
        let guard = Arc::new(Guard {
            dir: dir.to_path_buf(),
            soft_free: options.soft_free_mib.saturating_mul(MIB),
            hard_free: options.hard_free_mib.saturating_mul(MIB),
            budget,
            soft_budget: budget / 100 * u64::from(options.soft_budget_percent.clamp(1, 100)),
            free: AtomicU64::new(u64::MAX),
            data: AtomicU64::new(0),
            level: AtomicU8::new(Level::Ok as u8),
            failed: AtomicBool::new(false),
            failed_full: AtomicBool::new(false),
            failed_free: AtomicU64::new(0),
            probe: OnceLock::new(),
            resumed: OnceLock::new(),
            resume_due: AtomicBool::new(false),
            refused_pressure: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_unavailable: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        });
        guard.sample();
        let weak: Weak<Guard> = Arc::downgrade(&guard);
        let every = options.sample_interval.max(Duration::from_millis(1));
        std::thread::Builder::new()
            .name("disk-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(g) = weak.upgrade() else { break };
                    g.sample();
                }
            })?;
        Ok(guard)
    }

    /// Sets the write that tells, after a failure, whether the disk takes writes again.
    pub fn set_probe(&self, probe: impl Fn() -> Result<(), store::Error> + Send + Sync + 'static) {
        let _ = self.probe.set(Box::new(probe));
    }

    /// Sets what runs once writes succeed again after a failure: the service feeds the
    /// cases whose work a failed write left stored back to the workers.
    pub fn on_resumed(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.resumed.set(Box::new(f));
    }

    /// Measures the disk now (and, after a failed write, tries the probe, whose outcome
    /// reaches [`Guard::record`] through the store like any write's).
    pub fn sample(&self) {
        if let Ok(s) = rustix::fs::statvfs(&self.dir) {
            self.free
                .store(s.f_bavail.saturating_mul(s.f_frsize), Ordering::Relaxed);
        }
        self.data.store(dir_bytes(&self.dir), Ordering::Relaxed);
        let space_returned = !self.failed_full.load(Ordering::Relaxed)
            || self.free() > self.failed_free.load(Ordering::Relaxed);
        if self.failed.load(Ordering::Relaxed)
            && space_returned
            && let Some(probe) = self.probe.get()
            && let Err(e) = probe()
        {
            tracing::debug!("the store does not take writes yet: {e}");
        }
        self.update();
        if self.resume_due.swap(false, Ordering::Relaxed)
            && let Some(resumed) = self.resumed.get()
        {
            resumed();
        }
    }

    /// Takes note of a store write's outcome (every write of the service's store).
    pub fn record(&self, result: &Result<(), store::Error>) {
        match result {
            Ok(()) => {
                if self.failed.swap(false, Ordering::Relaxed) {
                    tracing::info!("the store takes writes again");
                    self.resume_due.store(true, Ordering::Relaxed);
                    self.update();
                }
            }
            Err(e) if e.is_disk() => {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                self.failed_full
                    .store(matches!(e, store::Error::Full { .. }), Ordering::Relaxed);
                self.failed_free.store(self.free(), Ordering::Relaxed);
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "a store write failed ({e}); writes are refused until one succeeds again"
                    );
                    self.update();
                }
            }
            Err(_) => {}
        }
    }

    fn update(&self) {
        let free = self.free();
        let data = self.data_bytes();
        let below = |mark: u64| mark > 0 && free < mark;
        let over = |mark: u64| mark > 0 && data >= mark;
        let level = if self.failed.load(Ordering::Relaxed) {
            Level::Failed
        } else if below(self.hard_free) || over(self.budget) {
            Level::Full
        } else if below(self.soft_free) || over(self.soft_budget) {
            Level::Pressure
        } else {
            Level::Ok
        };
        let was = Level::from_u8(self.level.swap(level as u8, Ordering::Relaxed));
        if was != level {
            let (free_mib, data_mib) = (free / MIB, data / MIB);
            match level {
                Level::Ok => tracing::info!(
                    free_mib,
                    data_mib,
                    "disk space is back above the storage marks: taking requests again"
                ),
                Level::Pressure => tracing::warn!(
                    free_mib,
                    data_mib,
                    "disk space is below the soft storage mark: new requests are refused (507 storage_pressure)"
                ),
                Level::Full => tracing::error!(
                    free_mib,
                    data_mib,
                    "disk space is below the hard storage mark: every write but task completions is refused (507 storage_full)"
                ),
                Level::Failed => {}
            }
        }
    }

    /// Where the disk stands at the last sample.
    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// Whether a write of this kind must be refused now; counts the refusal.
    pub fn refusal(&self, write: Write) -> Option<Refusal> {
        let level = self.level();
        let refused = match write {
            Write::Intake => level >= Level::Pressure,
            Write::Other => level >= Level::Full,
        };
        if !refused {
            return None;
        }
        let counter = match level {
            Level::Failed if !self.failed_full.load(Ordering::Relaxed) => &self.refused_unavailable,
            Level::Failed | Level::Full => &self.refused_full,
            _ => &self.refused_pressure,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Refusal {
            level,
            disk_full: self.failed_full.load(Ordering::Relaxed),
        })
    }

    /// Free bytes on the data directory's filesystem (for this process) at the last sample.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Bytes the data directory occupies at the last sample.
    pub fn data_bytes(&self) -> u64 {
        self.data.load(Ordering::Relaxed)
    }

    /// The figures for the console and for the details of a refusal.
    pub fn status(&self) -> Status {
        let level = self.level();
        let free = self.free();
        // Warn before the soft mark: within a quarter of it again above it.
        let warn_free = self.soft_free.saturating_add(self.soft_free / 4);
        let warn_data = self.soft_budget - self.soft_budget / 10;
        let warning = level == Level::Ok
            && ((self.soft_free > 0 && free < warn_free)
                || (self.soft_budget > 0 && self.data_bytes() >= warn_data));
        Status {
            level: level.as_str(),
            warning,
            free_bytes: free,
            data_bytes: self.data_bytes(),
            soft_free_bytes: self.soft_free,
            hard_free_bytes: self.hard_free,
            budget_bytes: self.budget,
            soft_budget_bytes: self.soft_budget,
            write_failures: self.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Sets the storage gauges and counters (at scrape time).
    pub fn export(&self, m: &Metrics) {
        m.free_bytes.set(clamp(self.free()));
        m.data_bytes.set(clamp(self.data_bytes()));
        for (mark, bytes) in [
            ("soft_free", self.soft_free),
            ("hard_free", self.hard_free),
            ("budget", self.budget),
            ("soft_budget", self.soft_budget),
        ] {
            m.marks
                .get_or_create(&MarkLabels { mark: mark.into() })
                .set(clamp(bytes));
        }
        m.level.set(self.level() as i64);
        for (code, n) in [
            ("storage_pressure", &self.refused_pressure),
            ("storage_full", &self.refused_full),
            ("storage_unavailable", &self.refused_unavailable),
        ] {
            let c = m.refused.get_or_create(&CodeLabels { code: code.into() });
            let now = n.load(Ordering::Relaxed);
            c.inc_by(now.saturating_sub(c.get()));
        }
        let now = self.write_failures.load(Ordering::Relaxed);
        m.write_failures
            .inc_by(now.saturating_sub(m.write_failures.get()));
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, so a sparse file counts
/// what it really holds).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(allocated(&m));
            }
        }
    }
    total
}

#[cfg(unix)]
fn allocated(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(m).saturating_mul(512)
}

#[cfg(not(unix))]
fn allocated(m: &std::fs::Metadata) -> u64 {
    m.len()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MarkLabels {
    pub mark: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// The storage metrics (`casegraph_storage_*`), set from the guard when scraped.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub free_bytes: Gauge,
    pub data_bytes: Gauge,
    pub marks: Family<MarkLabels, Gauge>,
    pub level: Gauge,
    pub refused: Family<CodeLabels, Counter>,
    pub write_failures: Counter,
}

impl Metrics {
    /// Registers the storage metrics.
    pub fn register(r: &mut Registry) -> Metrics {
        let m = Metrics::default();
        r.register(
            "storage_free_bytes",
            "Free bytes on the data directory's filesystem",
            m.free_bytes.clone(),
        );
        r.register(
            "storage_data_bytes",
            "Bytes the data directory occupies (store, published versions, tokens)",
            m.data_bytes.clone(),
        );
        r.register(
            "storage_mark_bytes",
            "The storage marks in bytes ([storage]: soft_free, hard_free, budget, soft_budget); 0: off",
            m.marks.clone(),
        );
        r.register(
            "storage_level",
            "Where the disk stands: 0 ok, 1 below the soft mark, 2 below the hard mark, 3 a write failed",
            m.level.clone(),
        );
        r.register(
            "storage_refused",
            "Requests refused for disk space, by error code",
            m.refused.clone(),
        );
        r.register(
            "store_write_failures",
            "Store writes that failed for the disk's reasons (full, I/O error)",
            m.write_failures.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(soft_free_mib: u64, hard_free_mib: u64, budget_mib: u64) -> StorageOptions {
        StorageOptions {
            soft_free_mib,
            hard_free_mib,
            budget_mib,
            soft_budget_percent: 50,
            sample_interval: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_data_size_budget_sets_the_soft_and_hard_marks() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = Guard::start(&options(0, 0, 1), dir.path()).expect("guard");
        assert_eq!(g.level(), Level::Ok);
        assert_eq!(g.refusal(Write::Intake), None);
        assert!(!g.status().warning);
        // Within a tenth of the soft mark (512 KiB): still taking requests, but warned.
        std::fs::write(dir.path().join("a"), vec![1u8; 480 * 1024]).expect("write");
        g.sample();
        assert_eq!(g.level(), Level::Ok, "{:?}", g.status());
        assert!(g.status().warning, "{:?}", g.status());
        std::fs::write(dir.path().join("a"), vec![1u8; 600 * 1024]).expect("write");
        g.sample();
        assert_eq!(g.level(), Level::Pressure, "{:?}", g.status());
        assert_eq!(
            g.refusal(Write::Intake).map(Refusal::code),
            Some("storage_pressure")
        );
        assert_eq!(
            g.refusal(Write::Other),
            None,
            "publishes go on at the soft mark"
        );
        std::fs::write(dir.path().join("b"), vec![1u8; 600 * 1024]).expect("write");
        g.sample();
        assert_eq!(g.level(), Level::Full);
        assert_eq!(
            g.refusal(Write::Other).map(Refusal::code),
            Some("storage_full")
        );
        assert!(!g.level().writable());
        std::fs::remove_file(dir.path().join("b")).expect("rm");
        std::fs::remove_file(dir.path().join("a")).expect("rm");
        g.sample();
        assert_eq!(g.level(), Level::Ok);
    }

    #[test]
    fn free_space_marks_follow_the_filesystem() {
        let dir = tempfile::tempdir().expect("tmp");
        // No filesystem here has an exabyte free: both marks are crossed.
        let g = Guard::start(&options(1 << 40, 1 << 39, 0), dir.path()).expect("guard");
        assert_eq!(g.level(), Level::Full);
        let g = Guard::start(&options(1, 0, 0), dir.path()).expect("guard");
        assert!(g.free() > MIB && g.free() < u64::MAX);
        assert_eq!(g.level(), Level::Ok);
    }

    #[test]
    fn a_failed_write_refuses_writes_until_the_probe_succeeds() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = Guard::start(&options(0, 0, 0), dir.path()).expect("guard");
        let disk_ok = Arc::new(AtomicBool::new(false));
        let (d, store) = (disk_ok.clone(), Arc::downgrade(&g));
        // The probe's write reaches the guard as every store write does.
        g.set_probe(move || {
            let r = if d.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(store::Error::Io {
                    backend: "test",
                    message: "input/output error".into(),
                })
            };
            if let Some(g) = store.upgrade() {
                g.record(&r);
            }
            r
        });
        g.record(&Err(store::Error::Full {
            backend: "test",
            message: "no space".into(),
        }));
        assert_eq!(g.level(), Level::Failed);
        assert_eq!(
            g.refusal(Write::Other).map(Refusal::code),
            Some("storage_full")
        );
        // A full disk is not asked again before it has more free space than when the
        // write failed; an I/O error is asked again every sample.
        g.failed_free.store(u64::MAX, Ordering::Relaxed);
        g.sample();
        assert_eq!(
            g.status().write_failures,
            1,
            "no probe on an unchanged full disk"
        );
        g.record(&Err(store::Error::Io {
            backend: "test",
            message: "input/output error".into(),
        }));
        g.sample();
        assert_eq!(
            g.refusal(Write::Intake).map(Refusal::status),
            Some(503),
            "an I/O error now"
        );
        assert_eq!(g.level(), Level::Failed, "the probe still fails");
        disk_ok.store(true, Ordering::Relaxed);
        g.sample();
        assert_eq!(
            g.level(),
            Level::Ok,
            "writes come back without anyone acting"
        );
        assert_eq!(g.status().write_failures, 3);
    }
}
