//! The `casegraph` command: validate, test, draw and run workflows; serve the HTTP API;
//! manage tokens.
//!
//! The concrete parts (rules engine, clock, simulated back office, the service) live in the
//! `casegraph` library next to this file; the engine crate stays free of I/O choices.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // The service logs what it does (at its configuration's `log.level`, known once the
    // configuration is loaded); the offline commands only their errors.
    LOG_JSON.store(args.log_format == cli::LogFormat::Json, Ordering::Relaxed);
    match (&args.log, &args.command) {
        (Some(level), _) => init_tracing(level),
        (None, cli::Command::Serve(_)) => {}
        (None, _) => init_tracing("error"),
    }
    match args.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Log lines as JSON (`--log-format json`).
static LOG_JSON: AtomicBool = AtomicBool::new(false);
static LOG_INIT: std::sync::Once = std::sync::Once::new();

/// Starts logging once: `CASEGRAPH_LOG`, else `default`; later calls do nothing.
fn init_tracing(default: &str) {
    LOG_INIT.call_once(|| start_tracing(default, LOG_JSON.load(Ordering::Relaxed)));
}

fn start_tracing(default: &str, json: bool) {
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
