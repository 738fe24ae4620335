//! Bearer tokens, roles and capabilities.
//!
//! Tokens live in `<data_dir>/tokens.json` as sha256 hashes, never in clear: whoever reads
//! the file cannot use it. A token is shown once, when it is created. Tokens carry 192
//! random bits, so a plain (unsalted) hash is enough and online guessing is hopeless; the
//! lookup is by hash, so its timing says something about a hash, never about a token.
//!
//! The file is the one truth: the server and the `casegraph token` CLI both change it by
//! a locked read-modify-write ([`file`]), and the server checks the file's stamp on every
//! authentication and reloads when it changed. A token revoked by either is refused by the
//! next request, and no writer puts back what another removed.
//!
//! Must not depend on the HTTP layer: `api::auth` maps these types to answers.

mod file;

use std::collections::HashMap;
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

/// What a token may do beyond its role; granted by an admin, one by one.
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
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// May state a request's classification in `metadata.intent` (a back-office system
    /// that already knows it); the model is then not asked. Without it a stated intent is
    /// only a hint. For submitter tokens (admins may do it anyway).
    StateIntent,
    /// May post business events (`POST /v1/events`), which start proactive cases and
    /// change consents. For submitter tokens of the systems that send them.
    SendEvents,
    /// May record a customer's consents (`PUT /v1/customers/{id}/consents/{purpose}`).
    /// For submitter tokens of the systems that collect them.
    ManageConsents,
}

impl Capability {
    pub const ALL: [Capability; 3] = [
        Capability::StateIntent,
        Capability::SendEvents,
        Capability::ManageConsents,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::StateIntent => "state_intent",
            Capability::SendEvents => "send_events",
            Capability::ManageConsents => "manage_consents",
        }
    }

    /// The roles the capability means something for.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Capability::StateIntent | Capability::SendEvents | Capability::ManageConsents => {
                &[Role::Submitter, Role::Admin]
            }
        }
    }
}

impl std::str::FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown capability `{s}`; use state_intent, send_events or manage_consents"
                )
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
    /// What the token may do beyond its role (files from before capabilities have none).
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// sha256 of the token, hex.
    #[schema(ignore)]
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub hash: String,
    pub created_at: String,
}

impl TokenEntry {
    fn principal(&self) -> Principal {
        Principal {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            capabilities: self.capabilities.clone(),
        }
    }

    fn without_hash(&self) -> TokenEntry {
        TokenEntry {
            hash: String::new(),
            ..self.clone()
        }
    }
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub capabilities: Vec<Capability>,
}

impl Principal {
    /// The token was granted `capability`, or is an admin's: an admin may do everything,
    /// and could grant itself any capability anyway.
    pub fn may(&self, capability: Capability) -> bool {
        self.role == Role::Admin || self.capabilities.contains(&capability)
    }
}

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken<'a> {
    pub role: Role,
    /// Unique client name; the token id when absent.
    pub name: Option<&'a str>,
    pub capabilities: &'a [Capability],
}

/// A token that cannot be created or removed, or a token file that cannot be read or
/// written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("token file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("a token named `{0}` already exists")]
    NameTaken(String),
    #[error("a token name must be 1–{MAX_NAME} characters of letters, digits, `.`, `_` and `-`")]
    InvalidName,
    #[error("the capability `{}` is for {} tokens only", .capability.as_str(), roles(.capability.roles()))]
    CapabilityNotForRole { capability: Capability, role: Role },
    #[error("`{0}` is the last admin token; create another admin token before revoking this one")]
    LastAdmin(String),
    #[error("no randomness available: {0}")]
    Random(String),
}

fn roles(rs: &[Role]) -> String {
    rs.iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Longest token name: names go into logs, listings and case records.
pub const MAX_NAME: usize = 64;

/// A name is 1–[`MAX_NAME`] characters of ASCII letters, digits, `.`, `_`, `-`: nothing
/// that can forge a log line or a table row, and short enough for every listing.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(()) } else { Err(Error::InvalidName) }
}

/// What the server last read from the file.
#[derive(Debug)]
struct Loaded {
    stamp: file::Stamp,
    entries: Vec<TokenEntry>,
    by_hash: HashMap<String, Principal>,
}

impl Loaded {
    fn new(entries: Vec<TokenEntry>, stamp: file::Stamp) -> Loaded {
        let by_hash = entries
            .iter()
            .map(|t| (t.hash.clone(), t.principal()))
            .collect();
        Loaded {
            stamp,
            entries,
            by_hash,
        }
    }
}

/// The tokens of one data directory.
#[derive(Debug)]
pub struct Tokens {
    file: file::TokenFile,
    loaded: RwLock<Loaded>,
}

const FILE_NAME: &str = "tokens.json";

impl Tokens {
    /// Reads `<data_dir>/tokens.json` (none yet is an empty set). A file that cannot be
    /// read or parsed is an error here; later, while serving, it means no token is valid.
    pub fn open(data_dir: &Path) -> Result<Tokens, Error> {
        let file = file::TokenFile::new(data_dir.join(FILE_NAME));
        let (entries, stamp) = file.read()?;
        Ok(Tokens {
            file,
            loaded: RwLock::new(Loaded::new(entries, stamp)),
        })
    }

    /// Reloads the file when its stamp says it changed since it was last read.
    fn refresh(&self) {
        let now = self.file.stamp();
        if self.read_loaded().stamp.still(&now) {
            return;
        }
        let fresh = match self.file.read() {
            Ok((entries, stamp)) => Loaded::new(entries, stamp),
            Err(e) => {
                // Fail closed: a file that cannot be read grants nothing. Logged once per
                // change of the file, since the stamp is kept.
                tracing::error!("{e}; no token is valid until the file is repaired");
                Loaded::new(Vec::new(), now.settled())
            }
        };
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    fn read_loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    fn install(&self, entries: Vec<TokenEntry>, stamp: file::Stamp) {
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded::new(entries, stamp);
    }

    pub fn is_empty(&self) -> bool {
        self.refresh();
        self.read_loaded().entries.is_empty()
    }

    /// Every token (hashes left out).
    pub fn list(&self) -> Vec<TokenEntry> {
        self.refresh();
        self.read_loaded()
            .entries
            .iter()
            .map(TokenEntry::without_hash)
            .collect()
    }

    /// Creates a token without capabilities; see [`Tokens::create_with`].
    pub fn create(&self, role: Role, name: Option<&str>) -> Result<(TokenEntry, String), Error> {
        self.create_with(&NewToken {
            role,
            name,
            capabilities: &[],
        })
    }

    /// Creates a token and stores its hash; returns the entry and the token itself.
    pub fn create_with(&self, new: &NewToken<'_>) -> Result<(TokenEntry, String), Error> {
        if let Some(n) = new.name {
            check_name(n)?;
        }
        if let Some(&c) = new
            .capabilities
            .iter()
            .find(|c| !c.roles().contains(&new.role))
        {
            return Err(Error::CapabilityNotForRole {
                capability: c,
                role: new.role,
            });
        }
        let mut capabilities = new.capabilities.to_vec();
        capabilities.sort();
        capabilities.dedup();
        let secret = format!("cg_{}", hex::encode(random::<24>()?));
        let (entry, entries, stamp) = self.file.update(|entries| {
            let taken = |s: &str| entries.iter().any(|t| t.id == s || t.name == s);
            // An id never equals another token's id or name, so `revoke` by either is
            // unambiguous.
            let id = loop {
                let id = format!("t-{}", hex::encode(random::<4>()?));
                if !taken(&id) {
                    break id;
                }
            };
            let name = new.name.map(str::to_string).unwrap_or_else(|| id.clone());
            if taken(&name) {
                return Err(Error::NameTaken(name));
            }
            let entry = TokenEntry {
                id,
                name,
                role: new.role,
                capabilities,
                hash: hash(&secret),
                created_at: jiff::Timestamp::now().to_string(),
            };
            entries.push(entry.clone());
            Ok(entry)
        })?;
        self.install(entries, stamp);
        Ok((entry.without_hash(), secret))
    }

    /// Removes the token with this id, or else with this name; `None` if there is none.
    /// The last admin token is never removed ([`Error::LastAdmin`]): a box without one
    /// could not be administered over the API.
    pub fn revoke(&self, id_or_name: &str) -> Result<Option<TokenEntry>, Error> {
        self.remove(id_or_name, true)
    }

    /// [`Tokens::revoke`] by id only (the API's `DELETE /v1/tokens/{id}`).
    pub fn revoke_id(&self, id: &str) -> Result<Option<TokenEntry>, Error> {
        self.remove(id, false)
    }

    fn remove(&self, key: &str, by_name: bool) -> Result<Option<TokenEntry>, Error> {
        let (removed, entries, stamp) = self.file.update(|entries| {
            let at = entries.iter().position(|t| t.id == key).or_else(|| {
                by_name
                    .then(|| entries.iter().position(|t| t.name == key))
                    .flatten()
            });
            let Some(at) = at else { return Ok(None) };
            let admins = entries.iter().filter(|t| t.role == Role::Admin).count();
            if entries[at].role == Role::Admin && admins == 1 {
                return Err(Error::LastAdmin(entries[at].name.clone()));
            }
            Ok(Some(entries.remove(at)))
        })?;
        self.install(entries, stamp);
        Ok(removed.map(|t| t.without_hash()))
    }

    /// The principal a presented token belongs to, by the file as it is now.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.refresh();
        self.read_loaded().by_hash.get(&hash(token)).cloned()
    }
}

/// Writes a secret to a new file only its owner can read: an existing file (a stale one,
/// or one planted with a wider mode or as a symbolic link) is removed first, and the new
/// one is created exclusively with mode 0600.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o600))?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()
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
mod tests;
