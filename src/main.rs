//! The `casegraph` command: validate, test, draw and run workflows; serve the HTTP API;
//! manage tokens.
//!
//! The concrete parts (rules engine, clock, simulated back office, the service) live in the
//! `casegraph` library next to this file; the engine crate stays free of I/O choices.
#![forbid(unsafe_code)]

mod cli;

use casegraph::backoffice;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The service logs what it does; the offline commands only their errors.
    let default = match (&args.log, &args.command) {
        (Some(level), _) => level.as_str(),
        (None, cli::Command::Serve(_)) => "info",
        (None, _) => "error",
    };
    init_tracing(default, args.log_format == cli::LogFormat::Json);
    match args.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(default: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASEGRAPH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}
