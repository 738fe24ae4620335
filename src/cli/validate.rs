//! `casegraph validate [DIR]`.

use std::process::ExitCode;

use casegraph_engine::workflow::Catalog;

use super::WorkflowsDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub workflows: WorkflowsDir,
    /// Print problems as a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = super::rules()?;
    match Catalog::load(&args.workflows.dir, &rules) {
        Ok(catalog) => {
            if args.json {
                println!("[]");
            } else {
                for wf in catalog.workflows() {
                    println!(
                        "ok  {} v{}  intents: {}  nodes: {}",
                        wf.id,
                        wf.version,
                        wf.intents.join(", "),
                        wf.nodes().count()
                    );
                }
                println!("ok  routing v{}", catalog.routing.version);
                println!(
                    "{} workflow(s) and the routing policy in {} are valid",
                    catalog.workflows().count(),
                    args.workflows.dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&diags.0)?);
            } else {
                for d in &diags.0 {
                    println!("{d}");
                }
                println!("{} problem(s) found", diags.0.len());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
