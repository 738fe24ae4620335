//! Opening a NATS connection from the `[fleet]` options (box) or the hub's flags: the
//! credentials file or user + password, the CA for TLS, and reconnects that never give up
//! (a box cut off for hours must come back by itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::ConnectOptions;

use crate::config::FleetOptions;

/// How to reach and authenticate to a NATS server.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub url: String,
    /// Client name shown by the server (`casegraph-box-<branch>`, `casegraph-hub`).
    pub name: String,
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// The inbox prefix replies come to (`fleet::auth::inbox_prefix` for a box, so its
    /// NATS user may subscribe to its own replies only); `None`: NATS's `_INBOX`.
    pub inbox_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading the NATS credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the NATS password file {path}: {source}")]
    Password {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fleet.user is set but fleet.password_file is not (or the other way round)")]
    UserWithoutPassword,
    #[error("connecting to NATS at {url}: {message}")]
    Connect { url: String, message: String },
}

impl Endpoint {
    /// A box's connection to `url` as branch `branch`, with the `[fleet]` credentials and CA,
    /// replies on the branch's own inbox prefix: its NATS user may subscribe to nothing else
    /// (`fleet::auth`, packaging/nats/auth.conf). The relay and the rollout reader use it.
    pub fn of_box(fleet: &FleetOptions, url: &str, branch: &str, name: String) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            name,
            credentials: fleet.credentials.clone(),
            user: fleet.user.clone(),
            password_file: fleet.password_file.clone(),
            tls_ca: fleet.tls_ca.clone(),
            inbox_prefix: Some(super::auth::inbox_prefix(branch)),
        }
    }

    /// The connect options: never-ending reconnects, a short connect timeout, the server
    /// may be down at start (the connection is retried in the background).
    async fn options(&self) -> Result<ConnectOptions, Error> {
        let mut o = ConnectOptions::new()
            .name(&self.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &self.credentials {
            o = o
                .credentials_file(path)
                .await
                .map_err(|source| Error::Credentials {
                    path: path.clone(),
                    source,
                })?;
        }
        match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                let password = read_secret(file).map_err(|source| Error::Password {
                    path: file.clone(),
                    source,
                })?;
                o = o.user_and_password(user.clone(), password);
            }
            (None, None) => {}
            _ => return Err(Error::UserWithoutPassword),
        }
        if let Some(prefix) = &self.inbox_prefix {
            o = o.custom_inbox_prefix(prefix);
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(o)
    }

    /// Connects (in the background if the server is not reachable yet).
    pub async fn connect(&self) -> Result<async_nats::Client, Error> {
        self.options()
            .await?
            .connect(self.url.as_str())
            .await
            .map_err(|e| Error::Connect {
                url: self.url.clone(),
                message: e.to_string(),
            })
    }
}

/// A secret file's first line, without the line end.
fn read_secret(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}
