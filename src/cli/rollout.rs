//! `casegraph rollout`: the hub's signing key and publishing a workflow version to named
//! branches (`docs/fleet.md`, "Rollout"). Boxes verify the signature against their
//! `fleet.hub_key` and apply the bundle like `POST /v1/workflows`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use async_nats::jetstream;

use casegraph::fleet::connect::Endpoint;
use casegraph::fleet::{auth, publish, sign};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make the hub's ed25519 key: `hub.key` (secret, 0600) and `hub.pub` (for each box's
    /// `fleet.hub_key`) in DIR. An existing key is never replaced.
    Keygen {
        /// Folder for the key files (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a workflow folder and publish it to the named branches; prints the rollout id.
    Publish(PublishArgs),
    /// Print a nats-server `authorization` block: one user per branch, allowed its own
    /// subjects, stream, rollout consumer and inbox only, and the hub's user. Passwords
    /// come from the variables `$CG_<BRANCH>_PASSWORD` and `$CG_HUB_PASSWORD`.
    NatsAuth {
        /// Branches, comma-separated.
        #[arg(long)]
        branches: String,
        /// The hub's JetStream domain (where `CG_ROLLOUT` lives).
        #[arg(long, default_value = "hub")]
        hub_domain: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The hub's NATS server (`nats://host:4222`, `tls://host:4222`).
    #[arg(long)]
    pub nats: String,
    /// The JetStream domain of `CG_ROLLOUT` when the server is not in it (a leaf node).
    #[arg(long)]
    pub domain: Option<String>,
    /// The hub's NATS user.
    #[command(flatten)]
    pub auth: super::nats_auth::NatsAuth,
    /// The hub's secret key (`hub.key` from `casegraph rollout keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// Branches to roll out to, comma-separated.
    #[arg(long)]
    pub branches: String,
    /// The workflow folder (its name is the workflow id), as `POST /v1/workflows` takes it.
    #[arg(long)]
    pub workflow: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen { out } => {
            let key = sign::SecretKey::generate()?;
            let (secret, public) = key.write(&out)?;
            println!("secret key: {} (keep it on the hub only)", secret.display());
            println!("public key: {}", public.display());
            println!("fleet.hub_key = \"{}\"", key.public().to_hex());
            println!("key id: {}", key.public().key_id());
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish(args) => publish(args),
        Command::NatsAuth {
            branches,
            hub_domain,
        } => {
            let branches = publish::parse_branches(&branches)?;
            print!(
                "{}",
                auth::authorization(
                    &branches,
                    &hub_domain,
                    "$CG_HUB_PASSWORD",
                    auth::password_variable
                )
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let key = sign::SecretKey::read(&args.key)?;
    let key_id = key.public().key_id();
    let branches = publish::parse_branches(&args.branches)?;
    let bundle = publish::read_workflow(&args.workflow)?;
    let mut endpoint = Endpoint {
        url: args.nats.clone(),
        name: "casegraph-hub-rollout".into(),
        ..Endpoint::default()
    };
    args.auth.apply(&mut endpoint);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rollout = runtime.block_on(async move {
        // The connection retries in the background; the timeout below bounds the wait.
        let client = endpoint.connect().await?;
        let js = match &args.domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        let rollout = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            publish::publish(&js, &key, branches, bundle),
        )
        .await
        .with_context(|| format!("no acknowledgement from NATS at {} within 60s", args.nats))??;
        client.flush().await.ok();
        anyhow::Ok(rollout)
    })?;
    println!("{}", rollout.id);
    eprintln!(
        "rollout {} published to {} (key {})",
        rollout.id,
        rollout.branches.join(", "),
        key_id
    );
    Ok(ExitCode::SUCCESS)
}
