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
    /// Most audit records the relay publishes before it waits for their acknowledgements
    /// (1 to 10000).
    pub batch: usize,
    /// Most bytes the branch stream keeps on the server the box talks to; the oldest
    /// messages go first once it is full. Size it for the longest time the hub may be away.
    pub stream_max_bytes: u64,
    /// Oldest message the branch stream keeps (the hub must have sourced it by then).
    #[serde(with = "duration")]
    pub stream_max_age: Duration,
}

/// Most records the relay publishes before it awaits their acknowledgements.
pub const MAX_BATCH: usize = 10_000;

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
            stream_max_bytes: 1024 * 1024 * 1024,
            stream_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl FleetOptions {
    /// Whether the box is part of a fleet.
    pub fn enabled(&self) -> bool {
        self.nats_url.is_some()
    }

    /// Checks the options of an enabled fleet; the error names the key (`fleet.<key>`) and
    /// what is wrong with it. Files are checked to exist here, so a typo stops the start
    /// rather than the relay an hour later.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.enabled() {
            return Ok(());
        }
        let bad = |key: &str, message: String| Err((format!("fleet.{key}"), message));
        let url = self.nats_url.as_deref().unwrap_or_default();
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| url.starts_with(s) && url.len() > s.len());
        if !scheme_ok {
            return bad(
                "nats_url",
                format!("`{url}` must be nats://host:port or tls://host:port"),
            );
        }
        match &self.branch {
            None => return bad("branch", "is required when fleet.nats_url is set".into()),
            Some(b) => crate::fleet::wire::check_branch(b).or_else(|e| bad("branch", e))?,
        }
        for (key, domain) in [
            ("domain", self.domain.as_deref()),
            ("hub_domain", Some(&*self.hub_domain)),
        ] {
            if let Some(d) = domain
                && (d.is_empty()
                    || !d
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            {
                return bad(key, format!("`{d}` must be letters, digits, '-' or '_'"));
            }
        }
        if let Some(key) = &self.hub_key
            && (key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return bad(
                "hub_key",
                format!(
                    "must be the hub's ed25519 public key as 64 hex digits, not {} characters",
                    key.len()
                ),
            );
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(
                "batch",
                format!("{} is not within 1 to {MAX_BATCH}", self.batch),
            );
        }
        if self.health_interval < Duration::from_secs(1) {
            return bad(
                "health_interval",
                format!("{:?} is shorter than 1s", self.health_interval),
            );
        }
        if self.stream_max_bytes < 1024 * 1024 {
            return bad(
                "stream_max_bytes",
                format!("{} is less than 1 MiB", self.stream_max_bytes),
            );
        }
        if self.stream_max_age < Duration::from_secs(60) {
            return bad(
                "stream_max_age",
                format!("{:?} is shorter than 1 minute", self.stream_max_age),
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return bad(
                "user",
                "fleet.user and fleet.password_file go together".into(),
            );
        }
        for (key, file) in [
            ("credentials", &self.credentials),
            ("password_file", &self.password_file),
            ("tls_ca", &self.tls_ca),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return bad(key, format!("{} is not a readable file", path.display()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn enabled() -> FleetOptions {
        FleetOptions {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            branch: Some("berlin-01".into()),
            ..FleetOptions::default()
        }
    }

    fn key_of(o: &FleetOptions) -> String {
        o.validate().unwrap_err().0
    }

    #[test]
    fn off_or_well_formed_passes() {
        FleetOptions::default().validate().unwrap();
        enabled().validate().unwrap();
        let o = FleetOptions {
            hub_key: Some("ab".repeat(32)),
            domain: Some("b1".into()),
            ..enabled()
        };
        o.validate().unwrap();
    }

    #[test]
    fn each_wrong_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.creds");
        let cases: Vec<(&str, FleetOptions)> = vec![
            (
                "fleet.nats_url",
                FleetOptions {
                    nats_url: Some("127.0.0.1:4222".into()),
                    ..enabled()
                },
            ),
            (
                "fleet.branch",
                FleetOptions {
                    branch: None,
                    ..enabled()
                },
            ),
            (
                "fleet.branch",
                FleetOptions {
                    branch: Some("Berlin.01".into()),
                    ..enabled()
                },
            ),
            (
                "fleet.domain",
                FleetOptions {
                    domain: Some("b.1".into()),
                    ..enabled()
                },
            ),
            (
                "fleet.hub_key",
                FleetOptions {
                    hub_key: Some("ab".repeat(31)),
                    ..enabled()
                },
            ),
            (
                "fleet.hub_key",
                FleetOptions {
                    hub_key: Some("zz".repeat(32)),
                    ..enabled()
                },
            ),
            (
                "fleet.batch",
                FleetOptions {
                    batch: 0,
                    ..enabled()
                },
            ),
            (
                "fleet.batch",
                FleetOptions {
                    batch: MAX_BATCH + 1,
                    ..enabled()
                },
            ),
            (
                "fleet.health_interval",
                FleetOptions {
                    health_interval: Duration::from_millis(999),
                    ..enabled()
                },
            ),
            (
                "fleet.stream_max_bytes",
                FleetOptions {
                    stream_max_bytes: 1000,
                    ..enabled()
                },
            ),
            (
                "fleet.stream_max_age",
                FleetOptions {
                    stream_max_age: Duration::from_secs(5),
                    ..enabled()
                },
            ),
            (
                "fleet.user",
                FleetOptions {
                    user: Some("b1".into()),
                    ..enabled()
                },
            ),
            (
                "fleet.credentials",
                FleetOptions {
                    credentials: Some(missing.clone()),
                    ..enabled()
                },
            ),
            (
                "fleet.tls_ca",
                FleetOptions {
                    tls_ca: Some(missing.clone()),
                    ..enabled()
                },
            ),
        ];
        for (key, o) in cases {
            assert_eq!(key_of(&o), key, "{o:?}");
        }
        let (_, message) = FleetOptions {
            credentials: Some(missing.clone()),
            ..enabled()
        }
        .validate()
        .unwrap_err();
        assert!(message.contains("nope.creds"), "{message}");
    }
}
