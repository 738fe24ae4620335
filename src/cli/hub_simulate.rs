//! `casegraph hub simulate`: branches that publish what a box's relay would (chained
//! audit records, case summaries, health snapshots) into their own streams on one NATS
//! server, for the hub's benchmark (`scripts/bench-fleet.sh`) and demonstrations. Each
//! branch goes on from the last record its stream holds, so runs add to the same chains.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use casegraph::fleet::hub::simulate;
use casegraph::fleet::wire::{self, Kind};
use jiff::Timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The NATS server the branch streams live on.
    #[arg(long)]
    pub nats: String,
    /// Simulated branches, named `<prefix>-<n>`.
    #[arg(long, default_value_t = 50)]
    pub branches: usize,
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Cases each branch publishes (one audit record and one summary each).
    #[arg(long, default_value_t = 100)]
    pub cases: u64,
    /// Cases per second per branch; 0: as fast as JetStream acknowledges.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Write the hub's branch list here (every branch in `--domain`).
    #[arg(long)]
    pub write_branches: Option<PathBuf>,
    /// The JetStream domain of the branch streams, for `--write-branches`.
    #[arg(long, default_value = "hub")]
    pub domain: String,
    /// Publish one record with altered content: `BRANCH:SEQ` (the hub must flag it).
    #[arg(long)]
    pub alter: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.branches == 0 || args.branches > 1000 {
        anyhow::bail!("--branches must be 1 to 1000");
    }
    let names: Vec<String> = (1..=args.branches)
        .map(|i| format!("{}-{i}", args.prefix))
        .collect();
    for n in &names {
        wire::check_branch(n).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
    }
    let alter = match &args.alter {
        Some(a) => {
            let (b, seq) = a.split_once(':').context("--alter must be BRANCH:SEQ")?;
            Some((
                b.to_string(),
                seq.parse::<u64>().context("--alter: SEQ is a number")?,
            ))
        }
        None => None,
    };
    if let Some(path) = &args.write_branches {
        let text: String = names
            .iter()
            .map(|n| format!("[[branch]]\nname = \"{n}\"\ndomain = \"{}\"\n", args.domain))
            .collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = async_nats::connect(args.nats.as_str())
            .await
            .with_context(|| format!("cannot connect to {}", args.nats))?;
        let js = jetstream::new(client);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for name in names {
            let js = js.clone();
            let alter = alter.clone().filter(|(b, _)| *b == name).map(|(_, s)| s);
            let in_flight = (IN_FLIGHT / args.branches).clamp(1, 64);
            tasks.push(tokio::spawn(branch(
                js, name, args.cases, args.rate, alter, in_flight,
            )));
        }
        let mut messages = 0u64;
        for t in tasks {
            messages += t.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "branches": args.branches,
                "cases_per_branch": args.cases,
                "messages": messages,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "messages_per_second": (messages as f64 / secs).round(),
            })
        );
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Publishes in flight across all branches before they wait for acknowledgements.
const IN_FLIGHT: usize = 4000;

/// One branch: `cases` cases at `rate` a second, a health snapshot every second and at
/// the end. Returns the messages published.
async fn branch(
    js: jetstream::Context,
    name: String,
    cases: u64,
    rate: f64,
    alter: Option<u64>,
    in_flight: usize,
) -> anyhow::Result<u64> {
    let mut b = simulate::resume(&js, &name).await?;
    let every = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut last_health = Instant::now();
    let mut pending = Vec::new();
    let mut messages = 0u64;
    for i in 0..cases {
        if let Some(every) = every {
            let due = started + every.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let (mut record, summary) = b.case(Timestamp::now());
        if alter == Some(record.record.seq) {
            record.record.body = serde_json::json!({ "status": "completed", "outcome": "altered" });
        }
        let key = record.record.seq.to_string();
        pending.push(simulate::publish(&js, &name, Kind::Audit, Some(&key), &record).await?);
        pending.push(simulate::publish(&js, &name, Kind::Case, Some(&key), &summary).await?);
        messages += 2;
        if last_health.elapsed() >= Duration::from_secs(1) {
            pending.push(b.publish_health(&js, Timestamp::now()).await?);
            messages += 1;
            last_health = Instant::now();
        }
        // Bounded in flight, as a relay would be, and all branches together under the
        // JetStream context's limit of acknowledgements in flight (5,000 in async-nats):
        // beyond it a publish waits for a slot only an awaited acknowledgement frees, and
        // branches each holding unawaited ones would wait for ever.
        if pending.len() >= in_flight {
            simulate::ack(std::mem::take(&mut pending)).await?;
        }
    }
    pending.push(b.publish_health(&js, Timestamp::now()).await?);
    simulate::ack(pending).await?;
    Ok(messages + 1)
}
