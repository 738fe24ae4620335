//! `casegraph token create|list|revoke`: API tokens in a data directory. Safe while the
//! server runs: every change is a locked read-modify-write of the token file, and the
//! server notices the change on its next authentication (a revoked token is refused at
//! once; a created one works at once).

use std::path::PathBuf;
use std::process::ExitCode;

use casegraph::auth::{Capability, NewToken, Role, Tokens};
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
        /// A unique client name, 1–64 letters, digits, `.`, `_`, `-` (default: the token id).
        #[arg(long)]
        name: Option<String>,
        /// A capability beyond the role (repeatable): `state_intent` lets a submitter or
        /// admin state a request's classification in `metadata.intent`.
        #[arg(long = "capability")]
        capabilities: Vec<Capability>,
    },
    /// List tokens (ids, names, roles, capabilities; never the tokens).
    List {
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Revoke a token by id or name (the last admin token is kept).
    Revoke {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Token id or name.
        token: String,
    },
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create {
            data,
            role,
            name,
            capabilities,
        } => {
            let tokens = Tokens::open(&data)?;
            let (entry, secret) = tokens.create_with(&NewToken {
                role,
                name: name.as_deref(),
                capabilities: &capabilities,
            })?;
            eprintln!(
                "created token {} (name `{}`, role {}{}); keep it safe, it is not shown again:",
                entry.id,
                entry.name,
                entry.role.as_str(),
                listed(&entry.capabilities)
                    .map(|c| format!(", capabilities {c}"))
                    .unwrap_or_default()
            );
            println!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        Command::List { data } => {
            let tokens = Tokens::open(&data)?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(["id", "name", "role", "capabilities", "created"]);
            for t in tokens.list() {
                table.add_row([
                    t.id,
                    t.name,
                    t.role.as_str().to_string(),
                    listed(&t.capabilities).unwrap_or_default(),
                    t.created_at,
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke { data, token } => {
            let tokens = Tokens::open(&data)?;
            match tokens.revoke(&token)? {
                Some(t) => {
                    println!("revoked {} (name `{}`)", t.id, t.name);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no token `{token}`");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn listed(capabilities: &[Capability]) -> Option<String> {
    (!capabilities.is_empty()).then(|| {
        capabilities
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}
