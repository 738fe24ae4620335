//! `casegraph token create|list|revoke`: API tokens in a data directory. Run it while the
//! server is stopped (a running server reads the token file at start; an admin adds tokens
//! to a running server with `POST /v1/tokens`).

use std::path::PathBuf;
use std::process::ExitCode;

use casegraph::auth::{Role, Tokens};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token; prints it on the last line (it is stored hashed and never shown again).
    Create {
        /// Data directory of the box.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// submitter, reviewer, author, auditor or admin.
        #[arg(long)]
        role: Role,
        /// A unique client name (default: the token id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (ids, names, roles; never the tokens).
    List {
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Revoke a token by id or name.
    Revoke {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Token id or name.
        token: String,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create { data, role, name } => {
            let tokens = Tokens::open(&data)?;
            let (entry, secret) = tokens.create(role, name.as_deref())?;
            eprintln!(
                "created token {} (name `{}`, role {}); keep it safe, it is not shown again:",
                entry.id,
                entry.name,
                entry.role.as_str()
            );
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        Command::List { data } => {
            let tokens = Tokens::open(&data)?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(["id", "name", "role", "created"]);
            for t in tokens.list() {
                table.add_row([t.id, t.name, t.role.as_str().to_string(), t.created_at]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke { data, token } => {
            let tokens = Tokens::open(&data)?;
            if tokens.revoke(&token)? {
                println!("revoked {token}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no token `{token}`");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
