//! `[fleet]`: how a box reports to the fleet's NATS JetStream and takes rollouts from its hub.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::options::duration;

/// The box side of the fleet (`docs/fleet.md`, ADR 0019). Off until `nats_url` and `branch`
/// are set: a box without a fleet works exactly as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetOptions {
    /// The NATS server the box talks to: its branch-local leaf node or a regional server
    /// (`nats://host:4222`, `tls://host:4222`). Unset: no fleet.
    pub nats_url: Option<String>,
    /// This box's branch name (`[a-z0-9-]{1,32}`): its subjects, its stream and its rollouts.
    pub branch: Option<String>,
    /// The JetStream domain of the server the box talks to (a leaf node's own domain);
    /// unset: the server's default (a regional server without domains).
    pub domain: Option<String>,
    /// The hub's JetStream domain, where rollouts are published.
    pub hub_domain: String,
    /// A NATS credentials file (JWT and nkey seed) for this branch.
    pub credentials: Option<PathBuf>,
    /// User name for user + password authentication (over TLS); the password is read from
    /// `password_file`, never written in the configuration.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A CA certificate (PEM) the NATS server's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// The hub's ed25519 public key (64 hex digits); rollouts signed by any other key are
    /// refused. Unset: the box takes no rollouts.
    pub hub_key: Option<String>,
    /// How often the box publishes its health snapshot.
    #[serde(with = "duration")]
    pub health_interval: Duration,
    /// Most audit records the relay publishes before it waits for their acknowledgements.
    pub batch: usize,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            nats_url: None,
            branch: None,
            domain: None,
            hub_domain: "hub".into(),
            credentials: None,
            user: None,
            password_file: None,
            tls_ca: None,
            hub_key: None,
            health_interval: Duration::from_secs(30),
            batch: 256,
        }
    }
}

impl FleetOptions {
    /// Whether the box is part of a fleet.
    pub fn enabled(&self) -> bool {
        self.nats_url.is_some()
    }
}
