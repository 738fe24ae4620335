//! A load generator for a running `casegraph serve`: posts the sample requests at a given
//! concurrency and reports accepted requests per second with p50/p99 acceptance latency,
//! then waits until the box has run every accepted case to its next checkpoint (completed,
//! waiting for a reviewer or a timer) and reports cases per second.
//!
//! ```sh
//! cargo run --release --example load -- --url http://127.0.0.1:8080 --token "$(cat data/admin.token)" \
//!     --concurrency 1,16,128 --seconds 10
//! ```
//!
//! Requests come from `workflows/samples/requests.jsonl` (the `casegraph run` format: its
//! `intent` and `confidence` are sent as `metadata`, which the stand-in classifier reads).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the box.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A submitter or admin token (admin also reads /metrics for the completion phase).
    #[arg(long)]
    token: String,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,16,128", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds of posting per level.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sample requests (JSON lines).
    #[arg(long, default_value = "workflows/samples/requests.jsonl")]
    input: PathBuf,
}

/// A sample line as an API request body.
fn body(line: &Value) -> Value {
    let mut b = line.clone();
    let m = b.as_object_mut().unwrap();
    let intent = m.remove("intent");
    let confidence = m.remove("confidence");
    m.remove("out_of_scope");
    let mut meta = serde_json::Map::new();
    if let Some(i) = intent {
        meta.insert("intent".into(), i);
    }
    if let Some(c) = confidence {
        meta.insert("confidence".into(), c);
    }
    m.insert("metadata".into(), Value::Object(meta));
    b
}

fn metric(agent: &ureq::Agent, args: &Args, name: &str) -> Option<f64> {
    let mut r = agent
        .get(&format!("{}/metrics", args.url))
        .header("Authorization", &format!("Bearer {}", args.token))
        .call()
        .ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    // A family with no sample yet reads as 0.
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let samples: Vec<Value> = std::fs::read_to_string(&args.input)
        .expect("sample requests")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| body(&serde_json::from_str(l).expect("a JSON line")))
        .collect();
    let samples = Arc::new(samples);
    // Keep-alive connections for every worker thread, as a real client pool would.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .max_idle_connections(512)
        .max_idle_connections_per_host(512)
        .build()
        .into();
    println!(
        "| concurrency | accepted | accepted/s | p50 ms | p99 ms | refused (429/503) | errors | cases run/s |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &n in &args.concurrency {
        let segments_before = metric(&agent, &args, "casegraph_case_segments_total");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads: Vec<_> = (0..n)
            .map(|t| {
                let stop = stop.clone();
                let samples = samples.clone();
                let agent = agent.clone();
                let url = format!("{}/v1/requests", args.url);
                let auth = format!("Bearer {}", args.token);
                std::thread::spawn(move || {
                    let (mut lat, mut refused, mut errors) = (Vec::new(), 0u64, 0u64);
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let b = samples[i % samples.len()].to_string();
                        i += n;
                        let sent = Instant::now();
                        match agent
                            .post(&url)
                            .header("Authorization", &auth)
                            .header("Content-Type", "application/json")
                            .send(b.as_bytes())
                        {
                            Ok(r) if r.status() == 202 => {
                                lat.push(sent.elapsed().as_secs_f64() * 1000.0)
                            }
                            Ok(r) if r.status() == 429 || r.status() == 503 => {
                                refused += 1;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, refused, errors)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(args.seconds));
        stop.store(true, Ordering::Relaxed);
        let (mut lat, mut refused, mut errors) = (Vec::new(), 0, 0);
        for t in threads {
            let (l, r, e) = t.join().unwrap();
            lat.extend(l);
            refused += r;
            errors += e;
        }
        let posting = started.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.total_cmp(b));
        // Completion: until the box has no queued or pending case left.
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let queued = metric(&agent, &args, "casegraph_intake_queue_depth").unwrap_or(0.0);
            let pending = metric(&agent, &args, "casegraph_pending_cases").unwrap_or(0.0);
            if queued == 0.0 && pending == 0.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let total = started.elapsed().as_secs_f64();
        let segments = match (
            segments_before,
            metric(&agent, &args, "casegraph_case_segments_total"),
        ) {
            (Some(a), Some(b)) => format!("{:.0}", (b - a) / total),
            _ => "n/a (token cannot read /metrics)".into(),
        };
        println!(
            "| {n} | {} | {:.0} | {:.2} | {:.2} | {refused} | {errors} | {segments} |",
            lat.len(),
            lat.len() as f64 / posting,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
        );
    }
}
