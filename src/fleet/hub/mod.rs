//! The fleet hub (`casegraph hub`): the same binary as a box, its own data directory.
//! It sources every listed branch stream into `CG_FLEET`, applies what arrives to its own
//! store ([`store`]) through the idempotent [`ingest`], which verifies each branch's audit
//! chain, and serves the fleet view ([`api`]) and the console's Fleet page.
//!
//! Must not depend on a box's store or runner: the hub knows the fleet only from the wire
//! messages ([`crate::fleet::wire`]).

pub mod api;
pub mod branches;
pub mod ingest;
pub mod simulate;
pub mod store;
pub mod stream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::{Role, Tokens};
use crate::fleet::connect::Endpoint;
use branches::Branches;

/// The branch list's name in the data directory, when `--branches` names none.
pub const BRANCHES_FILE: &str = "branches.toml";

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hub site's NATS server (and how to authenticate to it).
    pub endpoint: Endpoint,
    /// The store (`hub.redb`), the token file and by default the branch list.
    pub data_dir: PathBuf,
    /// The branch list; default `<data_dir>/branches.toml` (none there: no branches).
    pub branches_file: Option<PathBuf>,
    /// The hub server's JetStream domain: a branch whose stream lives in it is sourced
    /// locally, any other through `$JS.<domain>.API`.
    pub domain: String,
    /// Most messages applied in one store transaction.
    pub batch: usize,
    /// A branch further behind than this many records is flagged.
    pub lag_alert: u64,
    /// With no token at all, create an admin token in `<data_dir>/admin.token`.
    pub bootstrap_admin_token: bool,
}

impl Options {
    pub fn new(nats_url: &str, data_dir: PathBuf) -> Options {
        Options {
            endpoint: Endpoint {
                url: nats_url.to_string(),
                name: "casegraph-hub".into(),
                ..Default::default()
            },
            data_dir,
            branches_file: None,
            domain: "hub".into(),
            batch: 256,
            lag_alert: 1000,
            bootstrap_admin_token: true,
        }
    }
}

/// Runs the hub on `listener` until `shutdown` completes: the ingest in the background,
/// the API in front. Stops the ingest after the last open request.
pub async fn run(
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&options.batch) {
        anyhow::bail!("--batch must be 1 to 10000, not {}", options.batch);
    }
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (branches_path, optional) = match &options.branches_file {
        Some(p) => (p.clone(), false),
        None => (dir.join(BRANCHES_FILE), true),
    };
    let branches = Arc::new(Branches::load(&branches_path, optional)?);
    let store = Arc::new(store::Store::open(dir)?);
    let tokens = Arc::new(Tokens::open(dir)?);
    bootstrap_admin(&options, &tokens)?;
    let client = options.endpoint.connect().await?;
    let js = async_nats::jetstream::new(client);
    let stats = Arc::new(stream::Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ingest = tokio::spawn(stream::run(
        js,
        store.clone(),
        branches.clone(),
        options.domain.clone(),
        options.batch,
        stats.clone(),
        stop_rx,
    ));
    let hub = Arc::new(api::Hub {
        store,
        tokens,
        branches: branches.clone(),
        stats,
        lag_alert: options.lag_alert,
        in_flight: Arc::new(Semaphore::new(api::MAX_IN_FLIGHT)),
        auth_failures: AtomicU64::new(0),
    });
    tracing::info!(
        addr = %listener.local_addr()?,
        branches = branches.0.len(),
        nats = %options.endpoint.url,
        "casegraph hub serving"
    );
    let limits = crate::http::Limits::from(&crate::config::ServerOptions::default());
    crate::http::serve(listener, api::app(hub), limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    Ok(())
}

/// With no token at all, creates an admin token and leaves it in `admin.token`.
fn bootstrap_admin(options: &Options, tokens: &Tokens) -> anyhow::Result<()> {
    if !tokens.is_empty() || !options.bootstrap_admin_token {
        return Ok(());
    }
    let (_, secret) = tokens.create(Role::Admin, Some("admin"))?;
    let path = options.data_dir.join(crate::serve::ADMIN_TOKEN_FILE);
    crate::auth::write_secret(&path, &secret)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        "no tokens yet: created an admin token in {} (move it somewhere safe and delete the file)",
        path.display()
    );
    Ok(())
}
