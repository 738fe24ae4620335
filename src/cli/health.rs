//! `casegraph health`: asks a running server whether it is ready, for container health
//! checks and scripts on images without curl. Exit 0 when ready, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The readiness URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
    pub url: String,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 2)]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(args.timeout.max(1))))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&args.url).call() {
        Ok(r) if r.status().as_u16() == 200 => {
            println!("ready");
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            println!("not ready: {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("no answer from {}: {e}", args.url);
            Ok(ExitCode::FAILURE)
        }
    }
}
