//! How the hub's commands (`casegraph hub`, `casegraph rollout publish`) authenticate to
//! NATS: one set of flags, flattened into each command, applied to a `fleet::connect::Endpoint`.

use std::path::PathBuf;

use casegraph::fleet::connect::Endpoint;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// NATS credentials file (nkey + JWT).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// NATS user (with --password-file).
    #[arg(long)]
    pub user: Option<String>,
    /// File whose first line is the NATS password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the NATS server (TLS is then required).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl NatsAuth {
    /// Sets the endpoint's credentials, user, password file and CA from these flags.
    pub fn apply(self, endpoint: &mut Endpoint) {
        endpoint.credentials = self.credentials;
        endpoint.user = self.user;
        endpoint.password_file = self.password_file;
        endpoint.tls_ca = self.tls_ca;
    }
}
