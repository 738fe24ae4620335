//! The files of a workflow bundle, read only from inside its folder.
//!
//! A bundle names files (a rule's `script:`, `input_schema:`, its fixtures, the routing
//! policy's script) by paths its author writes. Every such path is confined here, so no
//! other reader of bundle files exists:
//!
//! - an absolute path, a `..` component or an empty name is refused by looking at the text
//!   alone, before the file system is asked anything;
//! - the rest is resolved (symbolic links followed) and must still lie inside the folder;
//!   a link that leads out, or that leads nowhere, is refused with the same words whether
//!   or not its target exists, so a refusal never tells what exists outside;
//! - only regular files of at most [`MAX_FILE_BYTES`] are read (a FIFO would block the
//!   reader, a device or a huge file would exhaust it).
//!
//! Messages never carry the operating system's error text (it names paths outside the
//! bundle) nor any content: what was refused is said in the bundle's own terms.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use crate::diagnostic::Code;

/// Largest file of a bundle that is read, in bytes (1 MiB). Workflow files are a few KB;
/// the API's body limit keeps published bundles far below this.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a file of a bundle was not read. The `Display` forms name the path as written and
/// nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path leaves the folder (absolute, `..`, or a symbolic link out of it).
    #[error("`{0}` is outside the workflow's folder; name a file inside it, without `..`")]
    Outside(String),
    /// The path stays inside, and no file is there.
    #[error("`{0}` does not exist in the workflow's folder")]
    Missing(String),
    /// Not a regular file (a directory, FIFO, device).
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("`{0}` is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge(String),
    /// Not UTF-8 text.
    #[error("`{0}` is not UTF-8 text")]
    NotText(String),
    /// Any other failure (permissions, I/O): the kind only.
    #[error("`{0}` cannot be read ({1})")]
    Unreadable(String, std::io::ErrorKind),
}

impl Error {
    /// Whether the path was refused for leaving the folder.
    pub fn is_outside(&self) -> bool {
        matches!(self, Error::Outside(_))
    }

    /// The diagnostic code this problem is reported under.
    pub fn code(&self) -> Code {
        match self {
            Error::Outside(_) => Code::OutsideBundle,
            Error::TooLarge(_) => Code::Limit,
            _ => Code::Io,
        }
    }
}

/// `rel` as a relative path of plain components (`.` dropped), or `None` when it could
/// leave the folder by its text alone. Looks at nothing on disk.
pub fn lexical(rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Where `rel` lies inside `dir`: the display path (`dir` joined with the cleaned `rel`,
/// for diagnostics) and the resolved path to open.
pub fn resolve(dir: &Path, rel: &str) -> Result<(PathBuf, PathBuf), Error> {
    let clean = lexical(rel).ok_or_else(|| Error::Outside(rel.to_string()))?;
    let shown = dir.join(&clean);
    let root = dir
        .canonicalize()
        .map_err(|e| Error::Unreadable(rel.to_string(), e.kind()))?;
    match root.join(&clean).canonicalize() {
        Ok(real) if real.starts_with(&root) => Ok((shown, real)),
        Ok(_) => Err(Error::Outside(rel.to_string())),
        // The path does not resolve. If a link on the way leads out, any answer about
        // why (missing, "not a directory") would describe what lies outside: refuse it.
        Err(_) if link_out_on_the_way(&root, &clean) => Err(Error::Outside(rel.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing(rel.to_string())),
        Err(e) => Err(Error::Unreadable(rel.to_string(), e.kind())),
    }
}

/// Whether, walking `root/clean` one component at a time, a symbolic link is met that
/// does not resolve to a place inside `root`.
fn link_out_on_the_way(root: &Path, clean: &Path) -> bool {
    let mut at = root.to_path_buf();
    for part in clean.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => match at.canonicalize() {
                Ok(real) if real.starts_with(root) => {}
                _ => return true,
            },
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Reads `rel` from the bundle in `dir`; returns the display path and the text.
pub fn read(dir: &Path, rel: &str) -> Result<(PathBuf, String), Error> {
    let (shown, real) = resolve(dir, rel)?;
    let unreadable = |e: std::io::Error| Error::Unreadable(rel.to_string(), e.kind());
    // Asked before opening: opening a FIFO for reading blocks until someone writes to it.
    let meta = std::fs::metadata(&real).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Error::NotAFile(rel.to_string()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::TooLarge(rel.to_string()));
    }
    let file = std::fs::File::open(&real).map_err(unreadable)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the check and the read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge(rel.to_string()));
    }
    let text = String::from_utf8(bytes).map_err(|_| Error::NotText(rel.to_string()))?;
    Ok((shown, text))
}

/// The plain files directly in `dir/sub` (e.g. a bundle's `tests/`), as paths relative to
/// `dir`, sorted. A `sub` that leaves the folder, or is missing, lists nothing; the files
/// listed are still read through [`read`], which confines each.
pub fn list(dir: &Path, sub: &str, extensions: &[&str]) -> Vec<String> {
    let Ok((_, real)) = resolve(dir, sub) else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(real)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| {
            Path::new(n)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .map(|n| format!("{sub}/{n}"))
        .collect();
    names.sort();
    names
}

/// Every file of a bundle a person may look at: the plain files of its folder and of its
/// `tests/`, by relative name, each read through [`read`] (a link out of the folder, a
/// FIFO or an oversized file is left out).
pub fn all(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let names = |sub: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .map(|n| sub.join(n).to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    names(Path::new(""))
        .into_iter()
        .chain(names(Path::new("tests")))
        .filter_map(|rel| read(dir, &rel).ok().map(|(_, text)| (rel, text)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_by_their_text_are_refused_without_looking() {
        // The folder does not even exist: nothing on disk is asked.
        let dir = Path::new("/nonexistent/bundle");
        for bad in [
            "",
            "/etc/hostname",
            "../x",
            "a/../../x",
            "./..",
            "a/b/../../../x",
            "x\0y",
        ] {
            assert!(lexical(bad).is_none(), "{bad:?}");
            assert_eq!(read(dir, bad).unwrap_err(), Error::Outside(bad.into()));
        }
        assert_eq!(lexical("./a/./b.rhai"), Some(PathBuf::from("a/b.rhai")));
    }

    #[test]
    fn links_out_of_the_folder_are_refused_whether_or_not_their_target_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("secret.token");
        std::fs::write(&outside, "cg_secret").unwrap();
        let dir = tmp.path().join("wf");
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::write(dir.join("inside.rhai"), "1").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("out.rhai")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("nothing"), dir.join("dangling.rhai")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.join("inside.rhai"), dir.join("alias.rhai")).unwrap();

        let out = read(&dir, "out.rhai").unwrap_err();
        let dangling = read(&dir, "dangling.rhai").unwrap_err();
        assert!(out.is_outside() && dangling.is_outside());
        assert!(read(&dir, "up/secret.token").unwrap_err().is_outside());
        assert!(read(&dir, "up/nothing").unwrap_err().is_outside());
        // "not a directory" would say that `secret.token` exists out there.
        assert!(read(&dir, "up/secret.token/x").unwrap_err().is_outside());
        std::os::unix::fs::symlink(dir.join("tests"), dir.join("t")).unwrap();
        assert_eq!(
            read(&dir, "t/gone.yaml").unwrap_err(),
            Error::Missing("t/gone.yaml".into())
        );
        assert!(!format!("{out}").contains("cg_secret"));

        assert_eq!(read(&dir, "alias.rhai").unwrap().1, "1");
        assert_eq!(
            read(&dir, "./inside.rhai").unwrap().0,
            dir.join("inside.rhai")
        );
        assert_eq!(
            read(&dir, "gone.rhai").unwrap_err(),
            Error::Missing("gone.rhai".into())
        );
        assert_eq!(
            read(&dir, "tests").unwrap_err(),
            Error::NotAFile("tests".into())
        );
    }

    #[test]
    fn oversized_files_are_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
        std::fs::write(tmp.path().join("big.rhai"), big).unwrap();
        assert!(matches!(
            read(tmp.path(), "big.rhai"),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn listing_a_folder_that_leads_out_lists_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("a.yaml"), "x: 1").unwrap();
        let dir = tmp.path().join("wf");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("tests")).unwrap();
        assert!(list(&dir, "tests", &["yaml"]).is_empty());
        std::fs::remove_file(dir.join("tests")).unwrap();
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::write(dir.join("tests/b.yaml"), "x: 1").unwrap();
        std::fs::write(dir.join("tests/c.txt"), "x").unwrap();
        assert_eq!(list(&dir, "tests", &["yaml", "yml"]), vec!["tests/b.yaml"]);
    }
}
