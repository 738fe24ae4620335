//! Durable acceptance throughput with group commit, per backend and concurrency, against
//! this disk's raw fsync rate measured in the same run.
//!
//! `cargo bench -p casegraph-engine --bench store [-- --seconds N]`
//!
//! Each "accept" is the real intake path: `Runner::accept` writes the case record, the
//! personal-data record, the pending marker, the customer index and an audit record, and
//! returns only after the store synced them. Prints one table; the numbers go to
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use casegraph_engine::runner::NewRequest;
use casegraph_engine::store;
use serde_json::json;

mod support;
use support::runner;

/// fsyncs per second of a 4 KiB write + fsync loop in `dir`.
fn raw_fsync_rate(dir: &Path, seconds: f64) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Row {
    accepted_per_s: f64,
    commits_per_sync: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes_per_case: f64,
}

fn measure(kind: store::Kind, concurrency: usize, seconds: f64, base: &Path) -> Row {
    let dir = tempfile::tempdir_in(base).unwrap();
    let runner = Arc::new(runner(dir.path(), kind));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let before = runner.store().stats();
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|t| {
            let runner = runner.clone();
            let stop = stop.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let request = serde_json::from_value(json!({
                        "channel": "letter", "language": "de", "customer_id": format!("C-{:06}", t * 100_000 + i as usize),
                        "text": "Sehr geehrte Damen und Herren, bitte erstatten Sie mir 1.249,90 EUR für die stornierte Bestellung GK-2026-118. Mit freundlichen Grüßen",
                        "fields": {}
                    }))
                    .unwrap();
                    let at = Instant::now();
                    runner
                        .accept(NewRequest {
                            request,
                            idempotency_key: Some(format!("k-{t}-{i}")),
                            submitted_by: Some("bench".into()),
                        })
                        .unwrap();
                    latencies.push(at.elapsed());
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let after = runner.store().stats();
    let n = count.load(Ordering::Relaxed);
    let commits = (after.commits - before.commits) as f64;
    let syncs = (after.syncs - before.syncs).max(1) as f64;
    let bytes = runner.store().backend().disk_bytes() as f64;
    Row {
        accepted_per_s: n as f64 / elapsed,
        commits_per_sync: commits / syncs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        bytes_per_case: bytes / n.max(1) as f64,
    }
}

fn main() {
    let mut seconds = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds"
            && let Some(v) = args.next()
        {
            seconds = v.parse().unwrap_or(seconds);
        }
    }
    // Measure on the same filesystem as the target directory, not a tmpfs /tmp.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-store");
    std::fs::create_dir_all(&base).unwrap();
    let probe = tempfile::tempdir_in(&base).unwrap();
    let fsync = raw_fsync_rate(probe.path(), seconds);
    println!("raw fsync rate on this disk: {fsync:.0}/s ({seconds} s, 4 KiB write + fdatasync)");
    println!();
    println!(
        "| backend | concurrency | accepted/s | × fsync rate | commits per sync | p50 ms | p99 ms | disk bytes per case |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for kind in [store::Kind::Redb, store::Kind::Sled] {
        for concurrency in [1usize, 16, 128] {
            let r = measure(kind, concurrency, seconds, &base);
            println!(
                "| {kind:?} | {concurrency} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} | {:.0} |",
                r.accepted_per_s,
                r.accepted_per_s / fsync,
                r.commits_per_sync,
                r.p50_ms,
                r.p99_ms,
                r.bytes_per_case
            );
        }
    }
}
