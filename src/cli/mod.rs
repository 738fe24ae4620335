//! Command-line interface: one file per command, dispatched through [`Command`].

mod archive;
mod audit;
mod classify;
mod compact;
mod corrections;
mod erase;
mod graph;
mod health;
mod hub;
mod hub_simulate;
mod nats_auth;
mod profile;
mod report;
mod rollout;
mod run;
mod serve;
mod test;
mod token;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph_engine::rules::{Limits, Rules};
use casegraph_engine::workflow::Catalog;
use clap::{Parser, Subcommand};

/// casegraph: hybrid rules-plus-ML workflow engine for customer care.
#[derive(Debug, Parser)]
#[command(name = "casegraph", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing env-filter syntax; default `info` for serve, `error` otherwise);
    /// the CASEGRAPH_LOG variable overrides it.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Log lines as plain text or one JSON object each.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CASEGRAPH_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile every workflow and the routing policy; list every problem with file and line.
    Validate(validate::Args),
    /// Run the fixtures of every workflow and of the routing policy.
    Test(test::Args),
    /// Draw a workflow's graph as Mermaid or Graphviz dot.
    Graph(graph::Args),
    /// Route and run a batch of requests offline (JSON lines), with a summary of outcomes.
    Run(run::Args),
    /// Serve the HTTP API (intake, cases, tasks, workflows) with the durable store.
    Serve(serve::Args),
    /// Verify or export the hash-chained audit log of a data directory.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Erase a customer's personal data; the audit chain stays intact and records it.
    Erase(erase::Args),
    /// Move finished cases older than a date into a compressed, self-verifying archive file.
    Archive(archive::Args),
    /// Rewrite the store into fresh files to give back the space of deleted records.
    Compact(compact::Args),
    /// Export the reviewers' triage decisions as labelled training examples (server stopped).
    #[command(subcommand)]
    Corrections(corrections::Command),
    /// Create, list and revoke API tokens (also while the server runs).
    #[command(subcommand)]
    Token(token::Command),
    /// Ask a running server whether it is ready (exit 0) or not (exit 1).
    Health(health::Args),
    /// Firmware profiles: list them, check one against this machine.
    #[command(subcommand)]
    Profile(profile::Command),
    /// Classify requests (JSON lines): intent, confidence, top intents, out-of-scope, language.
    Classify(classify::Args),
    /// The hub's rollout key, and publishing a signed workflow version to branches.
    #[command(subcommand)]
    Rollout(rollout::Command),
    /// The fleet hub: sources every branch stream, verifies their audit chains, serves the view.
    Hub(Box<hub::Args>),
}

impl Command {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Validate(a) => validate::run(a),
            Command::Test(a) => test::run(a),
            Command::Graph(a) => graph::run(a),
            Command::Run(a) => run::run(a),
            Command::Serve(a) => serve::run(a),
            Command::Token(c) => token::run(c),
            Command::Audit(c) => audit::run(c),
            Command::Erase(a) => erase::run(a),
            Command::Archive(a) => archive::run(a),
            Command::Compact(a) => compact::run(a),
            Command::Corrections(c) => corrections::run(c),
            Command::Profile(c) => profile::run(c),
            Command::Health(a) => health::run(a),
            Command::Classify(a) => classify::run(a),
            Command::Rollout(c) => rollout::run(c),
            Command::Hub(a) => hub::run(*a),
        }
    }
}

/// The workflows directory argument shared by the commands.
#[derive(Debug, clap::Args)]
pub struct WorkflowsDir {
    /// Directory holding one sub-directory per workflow and `routing/`.
    #[arg(default_value = "workflows")]
    pub dir: PathBuf,
}

/// Where an export writes: standard output for `-`, else a new file at `path`.
pub fn output(path: &Path) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ))
    })
}

/// The rules engine with limits from `CASEGRAPH_RULES_LIMITS` (JSON) or the defaults.
pub fn rules() -> anyhow::Result<Rules> {
    let limits = match std::env::var("CASEGRAPH_RULES_LIMITS") {
        Ok(json) => serde_json::from_str::<Limits>(&json)
            .context("CASEGRAPH_RULES_LIMITS is not a valid limits object")?,
        Err(_) => Limits::default(),
    };
    limits
        .validate()
        .map_err(|e| anyhow::anyhow!("CASEGRAPH_RULES_LIMITS: {e}"))?;
    Ok(Rules::new(limits))
}

/// Loads the catalog, printing every problem when it does not compile.
pub fn load_catalog(dir: &Path, rules: &Rules) -> Result<Catalog, ExitCode> {
    Catalog::load(dir, rules).map_err(|diags| {
        for d in &diags.0 {
            eprintln!("{d}");
        }
        eprintln!(
            "{} problem(s) in {}; nothing was loaded",
            diags.0.len(),
            dir.display()
        );
        ExitCode::FAILURE
    })
}
