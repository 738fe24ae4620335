//! `casegraph graph <workflow> --format mermaid|dot`.

use std::path::PathBuf;
use std::process::ExitCode;

use casegraph_engine::workflow::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow id.
    pub workflow: String,
    /// Diagram format.
    #[arg(long, default_value = "mermaid", value_parser = ["mermaid", "dot"])]
    pub format: String,
    /// Workflows directory.
    #[arg(long, default_value = "workflows")]
    pub dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = super::rules()?;
    let catalog = match super::load_catalog(&args.dir, &rules) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    match catalog.get(&args.workflow) {
        Some(wf) => {
            print!("{}", wf.diagram(format));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let known: Vec<_> = catalog.workflows().map(|w| w.id.as_str()).collect();
            eprintln!(
                "no workflow `{}` in {}; known: {}",
                args.workflow,
                args.dir.display(),
                known.join(", ")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
