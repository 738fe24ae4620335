//! `casegraph hub`: the fleet hub (ADR 0019, `docs/fleet.md` "Hub"): sources every listed
//! branch stream, verifies each branch's audit chain and serves the fleet view.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use casegraph::fleet::hub::{self, Options};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The hub site's NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, required = true)]
    pub nats: Option<String>,
    /// Data directory: the hub's store, its tokens, `branches.toml`.
    #[arg(long, required = true)]
    pub data: Option<PathBuf>,
    /// Address the API and the console listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The branch list (TOML, `[[branch]] name, domain`); default `<data>/branches.toml`.
    #[arg(long)]
    pub branches: Option<PathBuf>,
    /// The hub server's JetStream domain (branch streams in it are sourced locally).
    #[arg(long, default_value = "hub")]
    pub domain: String,
    /// Most messages applied in one store transaction.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Flag a branch further behind than this many records.
    #[arg(long, default_value_t = 1000)]
    pub lag_alert: u64,
    #[command(flatten)]
    pub auth: super::nats_auth::NatsAuth,
    /// Do not create an admin token when the hub has none.
    #[arg(long)]
    pub no_bootstrap_token: bool,
}

/// What else the hub command does besides running the hub.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Simulated branches publishing chained records, summaries and health (benchmark, demo).
    Simulate(super::hub_simulate::Args),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Command::Simulate(a)) => return super::hub_simulate::run(a),
        None => {}
    }
    crate::init_tracing("info");
    let nats = args.nats.context("--nats is required")?;
    let data = args.data.context("--data is required")?;
    let mut options = Options::new(&nats, data);
    args.auth.apply(&mut options.endpoint);
    options.branches_file = args.branches;
    options.domain = args.domain;
    options.batch = args.batch;
    options.lag_alert = args.lag_alert;
    options.bootstrap_admin_token = !args.no_bootstrap_token;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hub")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // Scripts and tests read the bound address (e.g. with --listen 127.0.0.1:0) here.
        println!("listening on http://{}", listener.local_addr()?);
        hub::run(options, listener, super::serve::signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
