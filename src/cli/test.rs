//! `casegraph test [DIR]`: run every fixture, show a diff for each failure.

use std::process::ExitCode;

use casegraph_engine::fixture;

use super::WorkflowsDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub workflows: WorkflowsDir,
    /// Only the fixtures of this workflow (or `routing`).
    #[arg(long)]
    pub only: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = super::rules()?;
    let catalog = match super::load_catalog(&args.workflows.dir, &rules) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let outcomes: Vec<_> = fixture::run_all(&catalog, &rules)
        .into_iter()
        .filter(|o| args.only.as_ref().is_none_or(|only| &o.suite == only))
        .collect();
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    for o in &outcomes {
        let mark = if o.passed() { "PASS" } else { "FAIL" };
        println!("{mark}  {}: {}  ({})", o.suite, o.name, o.file.display());
        for failure in &o.failures {
            for line in failure.lines() {
                println!("      {line}");
            }
        }
    }
    println!(
        "\nfixtures: {} passed, {failed} failed, {} total",
        outcomes.len() - failed,
        outcomes.len()
    );
    if outcomes.is_empty() {
        println!("no fixtures found");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
