//! The workflows a running box serves: the shipped ones overlaid by versions published
//! through the API.
//!
//! Published versions are kept in `<data_dir>/published/<id>/`. At start, and on every
//! publish, a complete catalog directory is assembled under `<data_dir>/catalog/<n>/` and
//! compiled from there; the directories of this run stay in place because a catalog's
//! workflows point at them (the runner stores a version's files when a case first runs on
//! it). Older ones are removed at the next start. A shipped workflow whose version is
//! higher than the published one wins (an upgrade of the box brings a newer version).
//!
//! Publishing is all or nothing: the new version is compiled together with every other
//! workflow and the routing policy, and its fixtures run, before anything is kept.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use casegraph_engine::fixture;
use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Catalog, Diagnostic};
use serde::Serialize;

/// A publish that was refused, with everything the author needs to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("the workflow does not compile: {} problem(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error("{} fixture(s) of the workflow failed", .0.len())]
    FixturesFailed(Vec<FixtureFailure>),
    #[error(
        "workflow `{id}` is at version {current}; a new version must be higher than that, not {given}"
    )]
    VersionNotNewer {
        id: String,
        current: u32,
        given: u32,
    },
    #[error("workflow files could not be written: {0}")]
    Io(String),
    /// The compiler or a fixture run panicked: a bug, never the author's fault. The
    /// message is for the log only.
    #[error("compiling the workflow panicked: {0}")]
    Panicked(String),
}

/// Stack of the thread a bundle is compiled and its fixtures run on (16 MiB). The
/// compiler recurses over a bundle's YAML and JSON at most `yaml::MAX_DEPTH` levels deep,
/// which needs a small fraction of this; the size is explicit so that bound holds whichever
/// thread serves the request (tokio's blocking pool threads have 2 MiB).
pub const COMPILE_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Runs `f` (a compile, a check, a fixture run of an author's bundle) on a thread of its
/// own with [`COMPILE_STACK_BYTES`] of stack. A panic in it is caught and returned as
/// [`Error::Panicked`], so one bundle never takes the server down with it.
pub fn isolated<T, F>(what: &str, f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let worker = std::thread::Builder::new()
        .name(format!("compile-{what}"))
        .stack_size(COMPILE_STACK_BYTES)
        .spawn(f)
        .map_err(|e| Error::Io(format!("cannot start the compile thread: {e}")))?;
    worker.join().map_err(|panic| {
        let message = crate::incident::panic_message(panic.as_ref());
        Error::Panicked(format!("{what}: {message}"))
    })
}

/// One fixture that failed, as the author sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FixtureFailure {
    pub name: String,
    pub file: String,
    pub failures: Vec<String>,
}

/// Shipped plus published workflows.
#[derive(Debug)]
pub struct Library {
    shipped: PathBuf,
    data_dir: PathBuf,
    rules: Arc<Rules>,
    /// The assembled catalog directory currently served.
    current: Mutex<PathBuf>,
    next: AtomicU64,
}

impl Library {
    /// Assembles and compiles the catalog to serve at start.
    pub fn open(
        shipped: &Path,
        data_dir: &Path,
        rules: Arc<Rules>,
    ) -> anyhow::Result<(Library, Catalog)> {
        let catalogs = data_dir.join("catalog");
        // Directories of earlier runs are not referenced any more.
        let _ = std::fs::remove_dir_all(&catalogs);
        std::fs::create_dir_all(&catalogs)?;
        std::fs::create_dir_all(data_dir.join("published"))?;
        finish_interrupted_publishes(&data_dir.join("published"))?;
        let dir = catalogs.join("0");
        copy_dir(shipped, &dir)?;
        for entry in std::fs::read_dir(data_dir.join("published"))? {
            let published = entry?.path();
            let Some(id) = published
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            if id.starts_with('.') || !published.join("workflow.yaml").is_file() {
                continue;
            }
            let shipped_version = declared_version(&dir.join(&id).join("workflow.yaml"));
            let published_version = declared_version(&published.join("workflow.yaml"));
            if shipped_version.is_some() && shipped_version >= published_version {
                tracing::info!(workflow = %id, "the shipped version is newer than the published one; serving the shipped one");
                continue;
            }
            let target = dir.join(&id);
            let _ = std::fs::remove_dir_all(&target);
            copy_dir(&published, &target)?;
        }
        let catalog = Catalog::load(&dir, &rules).map_err(|d| {
            anyhow::anyhow!("the workflows do not compile; nothing is served:\n{d}")
        })?;
        Ok((
            Library {
                shipped: shipped.to_path_buf(),
                data_dir: data_dir.to_path_buf(),
                rules,
                current: Mutex::new(dir),
                next: AtomicU64::new(1),
            },
            catalog,
        ))
    }

    /// Where the shipped workflows come from.
    pub fn shipped(&self) -> &Path {
        &self.shipped
    }

    /// A fresh path for a scratch copy of the catalog (a console check): under
    /// `<data_dir>/catalog/`, so it is private like the rest of the data directory and a
    /// copy a crash left behind is removed at the next start with the old catalogs. The
    /// caller creates and removes it.
    pub fn scratch_dir(&self) -> PathBuf {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        self.data_dir
            .join("catalog")
            .join(format!("check-{}", hex::encode(r)))
    }

    /// The rules engine the workflows were compiled with (fixture runs and dry runs use it).
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Whether `files` are exactly the published version of `id` (a rollout delivered
    /// again after it was applied is recognised by its content, not only its version).
    pub fn is_published(&self, id: &str, files: &BTreeMap<String, String>) -> bool {
        if check_id(id).is_err() {
            return false;
        }
        let dir = self.data_dir.join("published").join(id);
        let mut found = 0;
        for (name, content) in files {
            if check_file_name(name).is_err()
                || std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
            {
                return false;
            }
            found += 1;
        }
        let count = |d: &Path| {
            std::fs::read_dir(d)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                        .count()
                })
                .unwrap_or(0)
        };
        found == count(&dir) + count(&dir.join("tests"))
    }

    /// Compiles `files` as workflow `id` in a copy of the served catalog and runs its
    /// fixtures; on success keeps it as the published version and returns the new catalog.
    /// Callers serialize publishes (the API holds a lock).
    pub fn publish(
        &self,
        id: &str,
        files: &BTreeMap<String, String>,
        current: &Catalog,
    ) -> Result<Catalog, Error> {
        check_id(id)?;
        if !files.contains_key("workflow.yaml") {
            return Err(Error::BadRequest(
                "`files` must contain `workflow.yaml`".into(),
            ));
        }
        for name in files.keys() {
            check_file_name(name)?;
        }
        let io = |e: std::io::Error| Error::Io(e.to_string());
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let staging = self.data_dir.join("catalog").join(format!("{n}"));
        let served = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Removed on every way out but success, a panic in the compiler included.
        let mut guard = Staging(Some(staging.clone()));
        copy_dir(&served, &staging).map_err(io)?;
        let target = staging.join(id);
        let _ = std::fs::remove_dir_all(&target);
        write_files(&target, files).map_err(io)?;
        let catalog = match Catalog::load(&staging, &self.rules) {
            Ok(c) => c,
            Err(d) => {
                let diags =
                    d.0.into_iter()
                        .map(|mut d| {
                            d.file = d
                                .file
                                .strip_prefix(&staging)
                                .map(Path::to_path_buf)
                                .unwrap_or(d.file);
                            d
                        })
                        .collect();
                return Err(Error::Invalid(diags));
            }
        };
        let Some(wf) = catalog.get(id) else {
            return Err(Error::BadRequest(format!(
                "workflow.yaml does not define workflow `{id}`"
            )));
        };
        if let Some(old) = current.get(id)
            && wf.version <= old.version
        {
            return Err(Error::VersionNotNewer {
                id: id.to_string(),
                current: old.version,
                given: wf.version,
            });
        }
        let failures: Vec<FixtureFailure> = fixture::run_workflow(&catalog, wf, &self.rules)
            .into_iter()
            .filter(|o| !o.passed())
            .map(|o| FixtureFailure {
                name: o.name,
                file: o
                    .file
                    .strip_prefix(&staging)
                    .unwrap_or(&o.file)
                    .display()
                    .to_string(),
                failures: o.failures,
            })
            .collect();
        if !failures.is_empty() {
            return Err(Error::FixturesFailed(failures));
        }
        // Keep it: write the published copy next to the old one, then swap by rename.
        let published = self.data_dir.join("published");
        let fresh = published.join(format!(".{id}.new"));
        let _ = std::fs::remove_dir_all(&fresh);
        write_files(&fresh, files).map_err(io)?;
        let old = published.join(format!(".{id}.old"));
        let _ = std::fs::remove_dir_all(&old);
        let live = published.join(id);
        if live.exists() {
            std::fs::rename(&live, &old).map_err(io)?;
        }
        std::fs::rename(&fresh, &live).map_err(io)?;
        let _ = std::fs::remove_dir_all(&old);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = staging;
        guard.0 = None;
        Ok(catalog)
    }
}

/// A catalog directory being assembled for a publish: removed when dropped, unless it
/// became the served one.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A publish swaps `<id>` for `.<id>.new` by two renames (`<id>` → `.<id>.old`,
/// `.<id>.new` → `<id>`). A box that died between them has only `.<id>.new`, a version
/// that had passed every check: it is put in place. Any other leftover is removed.
fn finish_interrupted_publishes(published: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(published)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(hidden) = name.strip_prefix('.') else {
            continue;
        };
        if let Some(id) = hidden.strip_suffix(".new")
            && !published.join(id).exists()
            && path.join("workflow.yaml").is_file()
        {
            tracing::info!(workflow = %id, "completing a publish interrupted by a stop");
            std::fs::rename(&path, published.join(id))?;
        } else {
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && id != "routing";
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "`id` must be 1–64 characters of a-z, 0-9 and `_` (and not `routing`), not `{id}`"
        )))
    }
}

/// A file of a workflow directory: `name.ext` or `tests/name.ext`, nothing that leaves it.
fn check_file_name(name: &str) -> Result<(), Error> {
    let path = Path::new(name);
    let parts: Vec<_> = path.components().collect();
    let plain = |c: &Component<'_>| {
        matches!(c, Component::Normal(s) if s.to_str().is_some_and(|s| {
            !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        }))
    };
    let ok = match parts.as_slice() {
        [f] => plain(f),
        [d, f] => *d == Component::Normal("tests".as_ref()) && plain(f),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "file name `{name}` is not allowed; use `name.ext` or `tests/name.ext`"
        )))
    }
}

fn write_files(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    Ok(())
}

/// Copies a directory tree (workflow directories: plain files and folders). A symbolic
/// link is copied as what it points at only when that lies inside `from`; a link out of
/// the tree is left behind (and logged), so the copy cannot turn a file from elsewhere on
/// the box into a plain file of a workflow, where the compiler's confinement would no
/// longer see where it came from.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    copy_tree(&from.canonicalize()?, from, to)
}

fn copy_tree(root: &Path, from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let mut kind = entry.file_type()?;
        if kind.is_symlink() {
            match entry.path().canonicalize() {
                Ok(real) if real.starts_with(root) => kind = std::fs::metadata(&real)?.file_type(),
                _ => {
                    tracing::warn!(path = %entry.path().display(), "a symbolic link that leads out of the workflow tree is not copied");
                    continue;
                }
            }
        }
        if kind.is_dir() {
            copy_tree(root, &entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            // `copy` keeps the source's mode (0644 in a source tree); copies in the data
            // directory are private like everything else there.
            crate::data_dir::restrict_file(&target)?;
        }
    }
    Ok(())
}

/// The `version:` a workflow.yaml declares, read without compiling it.
fn declared_version(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("version:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_interrupted_between_its_renames_is_completed_at_start() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let data = tempfile::tempdir().expect("tmp");
        let published = data.path().join("published");
        let fresh = published.join(".request_refund.new");
        copy_dir(&shipped.join("request_refund"), &fresh).expect("copy");
        let yaml = std::fs::read_to_string(fresh.join("workflow.yaml")).expect("yaml");
        std::fs::write(
            fresh.join("workflow.yaml"),
            yaml.replace("version: 1\n", "version: 2\n"),
        )
        .expect("write");
        std::fs::create_dir_all(published.join(".card_arrival.old")).expect("leftover");
        let rules = Arc::new(Rules::new(Default::default()));
        let (_, catalog) = Library::open(&shipped, data.path(), rules).expect("opens");
        assert_eq!(catalog.get("request_refund").map(|w| w.version), Some(2));
        assert!(published.join("request_refund").is_dir());
        assert!(!published.join(".card_arrival.old").exists());
    }

    #[test]
    fn a_panic_while_compiling_is_an_error_not_an_abort() {
        let e = isolated("test", || -> u32 { panic!("the compiler broke") })
            .expect_err("a panic is an error");
        assert!(
            matches!(&e, Error::Panicked(m) if m.contains("the compiler broke")),
            "{e}"
        );
        // Deep recursion that would overflow a 2 MiB pool thread fits the explicit stack.
        fn down(n: u32) -> u32 {
            let pad = std::hint::black_box([0u8; 1024]);
            if n == 0 {
                u32::from(pad[0])
            } else {
                down(n - 1) + 1
            }
        }
        assert_eq!(isolated("test", || down(4_000)).ok(), Some(4_000));
    }

    #[test]
    fn links_out_of_the_tree_are_not_copied() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join("secret"), "cg_secret").expect("secret");
        let from = tmp.path().join("shipped");
        std::fs::create_dir_all(from.join("wf")).expect("dir");
        std::fs::write(from.join("wf/a.rhai"), "1").expect("file");
        std::os::unix::fs::symlink(tmp.path().join("secret"), from.join("wf/out.rhai"))
            .expect("link");
        std::os::unix::fs::symlink(from.join("wf/a.rhai"), from.join("wf/in.rhai")).expect("link");
        let to = tmp.path().join("copy");
        copy_dir(&from, &to).expect("copies");
        assert!(to.join("wf/a.rhai").is_file());
        assert!(to.join("wf/in.rhai").is_file());
        assert!(!to.join("wf/out.rhai").exists());
    }

    #[test]
    fn file_names_cannot_leave_the_workflow_directory() {
        assert!(check_file_name("workflow.yaml").is_ok());
        assert!(check_file_name("tests/a_b-1.yaml").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "a/b.yaml",
            "tests/../../x",
            ".hidden",
            "",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        assert!(check_id("request_refund").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("routing").is_err());
    }
}
