//! Command-line interface: one file per command, dispatched through [`Command`].

mod classify;
mod graph;
mod run;
mod test;
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
    /// Log filter (tracing env-filter syntax); the CASEGRAPH_LOG variable overrides it.
    #[arg(long, global = true, default_value = "error")]
    pub log: String,
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
    /// Classify requests (JSON lines): intent, confidence, top intents, out-of-scope, language.
    Classify(classify::Args),
}

impl Command {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Validate(a) => validate::run(a),
            Command::Test(a) => test::run(a),
            Command::Graph(a) => graph::run(a),
            Command::Run(a) => run::run(a),
            Command::Classify(a) => classify::run(a),
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

/// The rules engine with limits from `CASEGRAPH_RULES_LIMITS` (JSON) or the defaults.
pub fn rules() -> anyhow::Result<Rules> {
    let limits = match std::env::var("CASEGRAPH_RULES_LIMITS") {
        Ok(json) => serde_json::from_str::<Limits>(&json)
            .context("CASEGRAPH_RULES_LIMITS is not a valid limits object")?,
        Err(_) => Limits::default(),
    };
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
