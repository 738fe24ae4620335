//! The branches the hub sources, from a TOML file (`<data>/branches.toml` or
//! `--branches FILE`):
//!
//! ```toml
//! [[branch]]
//! name = "berlin-01"       # a-z, 0-9, '-' (it becomes a subject token)
//! domain = "berlin-01"     # the JetStream domain its stream lives in; default: the name
//! ```
//!
//! Checked once when read: a list that loaded names each branch once, with valid names.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fleet::wire;

/// Most branches one hub sources (one source each in `CG_FLEET`).
pub const MAX_BRANCHES: usize = 10_000;
/// Longest JetStream domain name.
pub const MAX_DOMAIN: usize = 64;

/// One branch: its name and the JetStream domain its stream `CG_<BRANCH>` lives in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub name: String,
    /// Default: the branch's name (one leaf node per branch, its own domain).
    pub domain: Option<String>,
}

impl Branch {
    pub fn domain(&self) -> &str {
        self.domain.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    branch: Vec<Branch>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read the branch list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("branch list {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The branches, in the file's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Branches(pub Vec<Branch>);

impl Branches {
    /// Reads and checks the file; a missing file is an empty list only when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<Branches, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Branches::default());
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Branches::parse(&text).map_err(|message| Error::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Branches, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.branch.len() > MAX_BRANCHES {
            return Err(format!(
                "{} branches; one hub sources at most {MAX_BRANCHES}",
                file.branch.len()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, b) in file.branch.iter().enumerate() {
            let at = format!("branch {} (`{}`)", i + 1, b.name.escape_debug());
            wire::check_branch(&b.name).map_err(|e| format!("{at}: {e}"))?;
            check_domain(b.domain()).map_err(|e| format!("{at}: {e}"))?;
            if !seen.insert(b.name.as_str()) {
                return Err(format!("{at}: the name is listed twice"));
            }
        }
        Ok(Branches(file.branch))
    }

    pub fn get(&self, name: &str) -> Option<&Branch> {
        self.0.iter().find(|b| b.name == name)
    }
}

/// A JetStream domain is `[A-Za-z0-9_-]{1,64}`: it becomes part of `$JS.<domain>.API`.
fn check_domain(d: &str) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= MAX_DOMAIN
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "domain `{}` must be 1 to {MAX_DOMAIN} of letters, digits, '-' and '_'",
            d.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_list_names_each_branch_once_with_valid_names() {
        let ok = Branches::parse(
            "[[branch]]\nname = \"b1\"\n[[branch]]\nname = \"b2\"\ndomain = \"hub\"\n",
        )
        .unwrap();
        assert_eq!(ok.0[0].domain(), "b1");
        assert_eq!(ok.0[1].domain(), "hub");
        let twice = Branches::parse("[[branch]]\nname = \"b1\"\n[[branch]]\nname = \"b1\"\n");
        assert!(
            twice
                .unwrap_err()
                .contains("branch 2 (`b1`): the name is listed twice")
        );
        let bad = Branches::parse("[[branch]]\nname = \"B.1\"\n").unwrap_err();
        assert!(bad.contains("branch 1"), "{bad}");
        let dom = Branches::parse("[[branch]]\nname = \"b1\"\ndomain = \"a.b\"\n").unwrap_err();
        assert!(dom.contains("domain `a.b`"), "{dom}");
        assert!(Branches::parse("[[branch]]\nnam = \"b1\"\n").is_err());
    }
}
