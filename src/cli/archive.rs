//! `casegraph archive --before DATE --output FILE --data DIR`: move finished cases out of
//! the live store into a compressed, self-verifying archive (see
//! `casegraph_engine::store::archive`).
//!
//! Trust boundary: the operator on the box, with the data directory (the server stopped:
//! the store is opened exclusively). Limits: `--before` not in the future, at most
//! `--max-cases` per file, an existing `--output` is never overwritten (only a complete
//! archive of this box, which a crashed run left, is finished).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::store::archive::{self, Cutoffs};
use jiff::Timestamp;

/// Most cases one run may put in a file: bounds the run's time and the file's size.
pub const MAX_CASES: usize = 1_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The box's data directory (stop the server first: the store is opened exclusively).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Archive finished cases (completed, failed, escalated) last changed before this date
    /// (`2026-06-30`, midnight UTC) or time (`2026-06-30T12:00:00Z`); not in the future.
    #[arg(long, value_parser = parse_before)]
    pub before: Timestamp,
    /// The archive file to write (`.jsonl.zst`); refused if it exists, unless it is a
    /// complete archive of this box that an interrupted run left: then it is finished.
    #[arg(long)]
    pub output: PathBuf,
    /// Most cases in this file; run again for the rest.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=MAX_CASES as u64))]
    pub max_cases: u64,
}

/// A date (midnight UTC) or an RFC 3339 time.
pub fn parse_before(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let date: jiff::civil::Date = s.parse().map_err(|_| {
        format!("`{s}` is neither a date (2026-06-30) nor a time (2026-06-30T12:00:00Z)")
    })?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| format!("`{s}`: {e}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    if args.before > now {
        anyhow::bail!(
            "--before {} is in the future; only cases that ended before now can be archived",
            args.before
        );
    }
    if args.output.as_os_str() == "-" {
        anyhow::bail!("--output must be a file: the archive is synced and renamed into place");
    }
    let store = super::audit::open_existing(&args.data)?;
    let done = archive::archive(
        &store,
        &Cutoffs::all_before(args.before),
        &args.output,
        args.max_cases as usize,
        now,
    )
    .with_context(|| format!("archive to {}", args.output.display()))?;
    let Some(done) = done else {
        println!(
            "no finished case last changed before {}: nothing archived, no file written",
            args.before
        );
        return Ok(ExitCode::SUCCESS);
    };
    if done.resumed {
        println!(
            "{} existed: finished the interrupted run",
            done.path.display()
        );
    }
    println!(
        "{}: {} case(s), {} audit record(s); {} case(s) removed from the live store; live audit chain now starts after record {} ({})",
        done.path.display(),
        done.cases,
        done.audit_records,
        done.removed,
        done.anchor.seq,
        done.anchor.hash
    );
    Ok(ExitCode::SUCCESS)
}
