//! Bearer tokens and roles.
//!
//! Tokens live in `<data_dir>/tokens.json` as sha256 hashes, never in clear: whoever reads
//! the file cannot use it. A token is shown once, when it is created. The file is rewritten
//! atomically (temp file, fsync, rename) and is readable by its owner only. The CLI edits it
//! while the server is stopped; a running server adds tokens through `POST /v1/tokens`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Posts requests and reads the cases it submitted.
    Submitter,
    /// Works the human task inbox.
    Reviewer,
    /// Publishes workflows and classifies test texts.
    Author,
    /// Reads cases (personal data masked) and audit trails.
    Auditor,
    /// Everything, including tokens and metrics.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Submitter,
        Role::Reviewer,
        Role::Author,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Reviewer => "reviewer",
            Role::Author => "author",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`; use submitter, reviewer, author, auditor or admin")
            })
    }
}

/// A stored token: who it is, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenEntry {
    pub id: String,
    /// The client's name; cases a submitter posts are recorded under it.
    pub name: String,
    pub role: Role,
    /// sha256 of the token, hex.
    #[schema(ignore)]
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub hash: String,
    pub created_at: String,
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// A token file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("token file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("a token named `{0}` already exists")]
    NameTaken(String),
    #[error("no randomness available: {0}")]
    Random(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<TokenEntry>,
}

/// The tokens of one data directory.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    entries: RwLock<Vec<TokenEntry>>,
    by_hash: RwLock<HashMap<String, Principal>>,
}

const FILE_NAME: &str = "tokens.json";

impl Tokens {
    /// Reads `<data_dir>/tokens.json` (none yet is an empty set).
    pub fn open(data_dir: &Path) -> Result<Tokens, Error> {
        let path = data_dir.join(FILE_NAME);
        let file: File = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::File {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => {
                return Err(Error::File {
                    path,
                    message: e.to_string(),
                });
            }
        };
        let tokens = Tokens {
            path,
            entries: RwLock::new(Vec::new()),
            by_hash: RwLock::new(HashMap::new()),
        };
        tokens.install(file.tokens);
        Ok(tokens)
    }

    fn install(&self, entries: Vec<TokenEntry>) {
        let index = entries
            .iter()
            .map(|t| {
                (
                    t.hash.clone(),
                    Principal {
                        id: t.id.clone(),
                        name: t.name.clone(),
                        role: t.role,
                    },
                )
            })
            .collect();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = index;
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    pub fn is_empty(&self) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Every token (hashes left out).
    pub fn list(&self) -> Vec<TokenEntry> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| TokenEntry {
                hash: String::new(),
                ..t.clone()
            })
            .collect()
    }

    /// Creates a token and stores its hash; returns the entry and the token itself.
    pub fn create(&self, role: Role, name: Option<&str>) -> Result<(TokenEntry, String), Error> {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let id = format!("t-{}", hex::encode(random::<4>()?));
        let name = name.map(str::to_string).unwrap_or_else(|| id.clone());
        if entries.iter().any(|t| t.name == name) {
            return Err(Error::NameTaken(name));
        }
        let secret = format!("cg_{}", hex::encode(random::<24>()?));
        let entry = TokenEntry {
            id,
            name,
            role,
            hash: hash(&secret),
            created_at: jiff::Timestamp::now().to_string(),
        };
        entries.push(entry.clone());
        self.save(&entries)?;
        self.install(entries);
        Ok((
            TokenEntry {
                hash: String::new(),
                ..entry
            },
            secret,
        ))
    }

    /// Removes the token with this id or name; `false` if there is none.
    pub fn revoke(&self, id_or_name: &str) -> Result<bool, Error> {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let before = entries.len();
        entries.retain(|t| t.id != id_or_name && t.name != id_or_name);
        if entries.len() == before {
            return Ok(false);
        }
        self.save(&entries)?;
        self.install(entries);
        Ok(true)
    }

    /// The principal a presented token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.by_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash(token))
            .cloned()
    }

    fn save(&self, entries: &[TokenEntry]) -> Result<(), Error> {
        let err = |e: std::io::Error| Error::File {
            path: self.path.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            crate::data_dir::create(dir).map_err(|e| Error::File {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        }
        let bytes = serde_json::to_vec_pretty(&File {
            tokens: entries.to_vec(),
        })
        .map_err(|e| Error::File {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = private_file(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        Ok(())
    }
}

/// Creates (truncating) a file only its owner can read.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path)
}

fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let tokens = Tokens::open(dir.path()).expect("open");
        let (entry, secret) = tokens
            .create(Role::Reviewer, Some("alice"))
            .expect("create");
        let file = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("file");
        assert!(!file.contains(&secret), "the token is not stored in clear");
        let again = Tokens::open(dir.path()).expect("reopen");
        let who = again.authenticate(&secret).expect("known");
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Reviewer));
        assert!(again.authenticate("cg_wrong").is_none());
        assert!(matches!(
            again.create(Role::Admin, Some("alice")),
            Err(Error::NameTaken(_))
        ));
        assert!(again.revoke(&entry.id).expect("revoke"));
        assert!(again.authenticate(&secret).is_none());
        assert!(!again.revoke("nobody").expect("revoke"));
    }
}
