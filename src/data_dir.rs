//! The data directory's permissions: it holds the store (personal data, the audit chain),
//! the token file and the bootstrap admin token, so only the service's own user may read
//! it, whatever the umask of the shell or unit that started the box.
//!
//! Invariant after [`prepare`]: the directory is `0700`, nothing in it grants group or
//! other any permission, and the process creates every later file `0600` and directory
//! `0700` (umask `077`), including the files the store backends create themselves.
//! A directory that was too open is tightened, not refused: the box must start after an
//! upgrade from a version that left `0755`; the warning names the old mode.

use std::path::{Path, PathBuf};

/// Permission bits nothing in the data directory may have.
const GROUP_OTHER: u32 = 0o077;

/// The data directory could not be made private.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot create the data directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot restrict the permissions of {path}: {source}")]
    Restrict {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates `dir` (and missing parents) `0700`; an existing directory is left as it is.
pub fn create(dir: &Path) -> Result<(), Error> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| Error::Create {
        path: dir.to_path_buf(),
        source,
    })
}

/// Makes the data directory private (see the module documentation): sets the process
/// umask to `077`, creates `dir` `0700` or tightens it, and takes group and other
/// permissions off everything already in it. Symbolic links are not followed.
pub fn prepare(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        // Process-wide on purpose: store backends, the workflow library and rule output
        // create files through code this crate does not control.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(GROUP_OTHER as _));
    }
    create(dir)?;
    #[cfg(unix)]
    restrict_tree(dir, 0)?;
    Ok(())
}

/// Takes group and other permissions off one file (a copy that kept its source's mode).
pub fn restrict_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & GROUP_OTHER != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Deepest directory level tightened (the store and library nest a few levels).
#[cfg(unix)]
const MAX_DEPTH: usize = 16;

#[cfg(unix)]
fn restrict_tree(path: &Path, depth: usize) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let fail = |source| Error::Restrict {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER != 0 {
        let private = mode & 0o700;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(fail)?;
        if depth == 0 {
            tracing::warn!(
                "the data directory {} was readable by others (mode {mode:o}); restricted it to {private:o}",
                path.display()
            );
        }
    }
    if meta.is_dir() && depth < MAX_DEPTH {
        for entry in std::fs::read_dir(path).map_err(fail)? {
            restrict_tree(&entry.map_err(fail)?.path(), depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn an_open_data_directory_is_tightened() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("published/x")).expect("mkdir");
        std::fs::write(dir.join("published/x/workflow.yaml"), "id: x").expect("write");
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("published"), 0o755),
            (dir.join("published/x"), 0o775),
            (dir.join("published/x/workflow.yaml"), 0o644),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).expect("chmod");
        }
        prepare(&dir).expect("prepare");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("published")), 0o700);
        assert_eq!(mode(&dir.join("published/x")), 0o700);
        assert_eq!(mode(&dir.join("published/x/workflow.yaml")), 0o600);
        // What is created afterwards is private too.
        std::fs::write(dir.join("later"), "x").expect("write");
        assert_eq!(mode(&dir.join("later")), 0o600);
    }

    #[test]
    fn a_new_data_directory_is_private() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("a/b");
        create(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
    }
}
