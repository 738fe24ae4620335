//! `casegraph audit verify|export --data DIR`: check the hash chain, write it as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::audit::Record;
use casegraph_engine::store::{self, Store, archive};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check every link of the audit chain; exit 0 when intact, 1 naming the first altered,
    /// missing or reordered record. Without `--archive`, the live chain from the anchor of
    /// the last archive cut; with it, the whole history through the archive files.
    Verify(VerifyArgs),
    /// Write the audit records as JSON lines (all, or one case's).
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// The box's data directory (stop the server first: the store is opened exclusively).
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}

/// Most archive files one verification reads.
const MAX_ARCHIVES: usize = 10_000;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Archive files (`casegraph archive`) holding the chain before the live part; give
    /// all of them to verify the whole history.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub archive: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Only this case's records.
    #[arg(long)]
    pub case: Option<String>,
    /// Output file (`-`: standard output).
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
}

/// Opens an existing store, whichever backend it is.
pub fn open_existing(data: &std::path::Path) -> anyhow::Result<Store> {
    let Some(kind) = store::detect(data) else {
        anyhow::bail!("{} holds no casegraph store", data.display());
    };
    Store::open(
        data,
        &store::Options {
            backend: kind,
            ..store::Options::default()
        },
    )
    .with_context(|| {
        format!(
            "cannot open the store in {} (is the server still running?)",
            data.display()
        )
    })
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify(args) => {
            if args.archive.len() > MAX_ARCHIVES {
                anyhow::bail!(
                    "{} archive files given; at most {MAX_ARCHIVES} per verification",
                    args.archive.len()
                );
            }
            let store = open_existing(&args.data.data)?;
            let anchor = store.audit_anchor()?;
            if !args.archive.is_empty() {
                return match archive::verify(&store, &args.archive) {
                    Ok(v) => {
                        println!(
                            "audit history intact: {} record(s) through {} archive file(s) and the live store; head {}",
                            v.records,
                            args.archive.len(),
                            v.head
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(archive::Error::Store(e)) => Err(e.into()),
                    Err(problem) => {
                        println!("audit history broken: {problem}");
                        Ok(ExitCode::FAILURE)
                    }
                };
            }
            match store.audit_verify()? {
                Ok(v) if anchor.seq > 0 => {
                    println!(
                        "audit chain intact: {} record(s); head {}; records 1..={} are in archives (verify them with --archive)",
                        v.records, v.head, anchor.seq
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(v) => {
                    println!(
                        "audit chain intact: {} record(s); head {}",
                        v.records, v.head
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(problem) => {
                    println!("audit chain broken: {problem}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Export(args) => {
            let store = open_existing(&args.data.data)?;
            let mut out = super::output(&args.output)?;
            let mut records = store.audit_records();
            let mut n = 0u64;
            for (_, bytes) in &mut records {
                let record: Record =
                    serde_json::from_slice(&bytes).context("an audit record is not readable")?;
                if args.case.as_ref().is_some_and(|c| *c != record.case_id) {
                    continue;
                }
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
                n += 1;
            }
            if let Some(e) = records.error {
                return Err(e.into());
            }
            out.flush()?;
            eprintln!("{n} audit record(s) written");
            Ok(ExitCode::SUCCESS)
        }
    }
}
