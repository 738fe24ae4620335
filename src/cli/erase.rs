//! `casegraph erase --customer ID --data DIR`: erase a customer's personal data (GDPR).
//!
//! Erasure deletes the records; then the store is rewritten into fresh files, because both
//! backends keep deleted values in freed pages until they are reused (ADR 0008). The server
//! must be stopped: the store is opened here, exclusively.

use std::path::PathBuf;
use std::process::ExitCode;

use casegraph_engine::{runner, store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The customer number as the requests carried it.
    #[arg(long)]
    pub customer: String,
    /// The box's data directory (stop the server first, or use the API).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Who asked for the erasure; recorded in the audit trail.
    #[arg(long, default_value = "operator")]
    pub by: String,
    /// Archive files (`casegraph archive`) to erase the customer's data from as well: each
    /// one holding such a case is rewritten without it (ADR 0012).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub archive: Vec<PathBuf>,
}

/// Most archive files one erasure reads: each is read whole.
const MAX_ARCHIVES: usize = 10_000;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.archive.len() > MAX_ARCHIVES {
        anyhow::bail!(
            "{} archive files given; at most {MAX_ARCHIVES} per erasure",
            args.archive.len()
        );
    }
    let store = super::audit::open_existing(&args.data)?;
    let now = jiff::Timestamp::now();
    let erasure = runner::erase_customer(&store, &args.customer, &args.by, now)?;
    let archived = runner::erase_archived(&store, &args.customer, &args.by, &args.archive, now)?;
    // Closes the store (the commit thread ends with the last handle) before the rewrite.
    drop(store);
    let rewritten = store::rewrite(&args.data, &store::Options::default())?;
    println!(
        "customer {}: personal data of {} case(s) erased",
        erasure.customer,
        erasure.erased.len()
    );
    for id in &erasure.erased {
        println!("  erased      {id}");
    }
    for (path, ids) in &archived {
        println!("  archive {}: {} case(s) erased", path.display(), ids.len());
        for id in ids {
            println!("  erased      {id} (archived)");
        }
    }
    for id in &erasure.unfinished {
        println!("  unfinished  {id} (erase again once it has ended)");
    }
    println!(
        "store rewritten: {} live entries, {} -> {} bytes (erased data no longer in freed pages)",
        rewritten.entries, rewritten.bytes_before, rewritten.bytes_after
    );
    Ok(ExitCode::SUCCESS)
}
