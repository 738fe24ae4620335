//! `casegraph compact --data DIR`: rewrite the store into fresh files, so the data
//! directory holds the live data and not the space that deleted, archived or overwritten
//! records left behind. The same crash-safe swap as after an erasure (ADR 0008); the server
//! must be stopped (the store is opened exclusively).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use casegraph_engine::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The box's data directory (stop the server first).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(kind) = store::detect(&args.data) else {
        anyhow::bail!("{} holds no casegraph store", args.data.display());
    };
    let started = Instant::now();
    let done = store::rewrite(
        &args.data,
        &store::Options {
            backend: kind,
            ..store::Options::default()
        },
    )
    .with_context(|| {
        format!(
            "cannot compact the store in {} (is the server still running?)",
            args.data.display()
        )
    })?;
    println!(
        "store compacted: {} live entries, {} -> {} bytes in {:.1} s",
        done.entries,
        done.bytes_before,
        done.bytes_after,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
