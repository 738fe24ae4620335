//! `casegraph serve`: the HTTP service on the shipped defaults or a configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph::config::{Config, Overrides};
use casegraph::profile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (store, tokens, published workflows); default `./data`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on; default 127.0.0.1:8080.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Firmware profile: reads `firmware-profiles/NAME.toml` as a configuration layer.
    #[arg(long, env = "CASEGRAPH_PROFILE")]
    pub profile: Option<String>,
    /// Shipped workflows directory; default `./workflows`.
    #[arg(long)]
    pub workflows: Option<PathBuf>,
    /// Intent models directory (`inference.model` names one of its sub-directories);
    /// default `./models`.
    #[arg(long)]
    pub models: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let profile = args.profile.as_deref().map(profile::layer).transpose()?;
    let config = Config::load(
        profile,
        args.config.as_deref(),
        std::env::vars(),
        &Overrides {
            data_dir: args.data,
            listen: args.listen,
            workflows_dir: args.workflows,
            models_dir: args.models,
        },
    )?;
    crate::init_tracing(&config.log.level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.runtime.http_threads > 0 {
        builder.worker_threads(config.runtime.http_threads);
    }
    let runtime = builder
        .max_blocking_threads(config.runtime.blocking_threads)
        .enable_all()
        .thread_name("http")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        // Scripts and tests read the bound address (e.g. with --listen 127.0.0.1:0) here.
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("listening on {scheme}://{}", listener.local_addr()?);
        casegraph::serve::run(config, listener, signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on ctrl-c or SIGTERM.
pub(super) async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
