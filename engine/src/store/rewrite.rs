//! Rewriting a store into fresh files: what makes an erasure true on disk.
//!
//! Both backends are copy-on-write. A deleted or overwritten value stays in freed pages
//! (redb) or in old log segments (sled) until the space happens to be reused, so a search
//! of the data directory finds personal data long after it was erased (ADR 0008).
//! [`rewrite`] copies every live entry into a new store beside the old one and swaps it in;
//! the old files are deleted, and with them every byte that no longer belongs to a live
//! record. The same rewrite is `casegraph compact`: the fresh store holds the live data only,
//! not the space that deleted or archived records and unclean restarts left.
//!
//! The store must be closed (no [`super::Store`] open on it). The swap is a sequence of
//! renames, each atomic, and every [`super::open_backend`] first runs [`finish`], which
//! completes or discards a swap a crash interrupted. So the directory always holds exactly
//! one whole store, either the old or the new one, never neither:
//!
//! 1. copy into `<store>.rewriting`, compact it (redb) and sync it (a crash here: removed at
//!    the next open);
//! 2. rename it to `<store>.fresh`: from now on the copy is complete;
//! 3. rename `<store>` to `<store>.stale`;
//! 4. rename `<store>.fresh` to `<store>`;
//! 5. remove `<store>.stale`.

use std::path::{Path, PathBuf};

use super::{Backend, Error, Kind, Op, Options, RedbBackend, SledBackend, Table, detect};

/// Entries copied per write transaction.
const PAGE: usize = 4096;

/// What a rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Live entries copied.
    pub entries: u64,
    /// Bytes on disk before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The store's own path in `dir` for a backend kind.
pub(super) fn store_path(dir: &Path, kind: Kind) -> PathBuf {
    match kind {
        Kind::Redb => dir.join("casegraph.redb"),
        Kind::Sled => dir.join("sled"),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn remove(path: &Path) -> Result<(), Error> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn open(path: &Path, kind: Kind, options: &Options) -> Result<Box<dyn Backend>, Error> {
    Ok(match kind {
        Kind::Redb => Box::new(RedbBackend::open(path, options)?),
        Kind::Sled => Box::new(SledBackend::open(path, options)?),
    })
}

/// Rewrites the closed store in `dir` into fresh files and swaps them in (see the module
/// documentation for the steps and what a crash leaves).
pub fn rewrite(dir: &Path, options: &Options) -> Result<Rewritten, Error> {
    finish(dir)?;
    let kind = detect(dir).ok_or_else(|| Error::Open {
        path: dir.to_path_buf(),
        message: "holds no casegraph store".into(),
    })?;
    let path = store_path(dir, kind);
    let building = sibling(&path, ".rewriting");
    let fresh = sibling(&path, ".fresh");
    remove(&building)?;
    let (entries, bytes_before, bytes_after) = {
        let from = open(&path, kind, options)?;
        let to = open(&building, kind, options)?;
        let entries = copy(from.as_ref(), to.as_ref())?;
        (entries, from.disk_bytes(), to.disk_bytes())
        // Both close here: redb syncs on every commit, sled flushed in `write`.
    };
    // A copy written a page per transaction leaves redb's allocation regions partly
    // empty; compacting the copy (before it counts as complete) gives that back.
    let bytes_after = match kind {
        Kind::Redb => compact_redb(&building)?,
        Kind::Sled => bytes_after,
    };
    std::fs::rename(&building, &fresh).map_err(|e| io(&fresh, e))?;
    sync_dir(dir)?;
    finish(dir)?;
    Ok(Rewritten {
        entries,
        bytes_before,
        bytes_after,
    })
}

/// Compacts the closed redb file at `path` until redb finds nothing more to move; returns
/// its size after.
fn compact_redb(path: &Path) -> Result<u64, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Open {
        path: path.to_path_buf(),
        message: format!("compaction: {e}"),
    };
    let mut db = redb::Database::open(path).map_err(|e| fail(&e))?;
    while db.compact().map_err(|e| fail(&e))? {}
    drop(db);
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| io(path, e))
}

/// Completes a swap a crash interrupted, or discards a copy that was never completed.
/// Run before a store in `dir` is opened.
pub fn finish(dir: &Path) -> Result<(), Error> {
    for kind in [Kind::Redb, Kind::Sled] {
        let path = store_path(dir, kind);
        let building = sibling(&path, ".rewriting");
        let fresh = sibling(&path, ".fresh");
        let stale = sibling(&path, ".stale");
        remove(&building)?;
        if fresh.exists() {
            if path.exists() {
                std::fs::rename(&path, &stale).map_err(|e| io(&stale, e))?;
                sync_dir(dir)?;
            }
            std::fs::rename(&fresh, &path).map_err(|e| io(&path, e))?;
            sync_dir(dir)?;
        }
        if stale.exists() {
            remove(&stale)?;
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Copies every entry of every table, a page per transaction, in key order.
fn copy(from: &dyn Backend, to: &dyn Backend) -> Result<u64, Error> {
    let mut entries = 0u64;
    for table in Table::ALL {
        let mut start: Vec<u8> = Vec::new();
        loop {
            let page = from.range(table, &start, None, PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            // The next page starts just after the last key: the key with a 0 byte added.
            start = last.clone();
            start.push(0);
            let full = page.len() == PAGE;
            entries += page.len() as u64;
            let ops: Vec<Op> = page
                .into_iter()
                .map(|(key, value)| Op {
                    table,
                    key,
                    value: Some(value),
                })
                .collect();
            to.write(&[ops])?;
            if !full {
                break;
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &dyn Backend, table: Table, key: &[u8], value: &[u8]) {
        b.write(&[vec![Op {
            table,
            key: key.to_vec(),
            value: Some(value.to_vec()),
        }]])
        .expect("write");
    }

    fn contains(dir: &Path, needle: &[u8]) -> bool {
        fn walk(p: &Path, needle: &[u8]) -> bool {
            if p.is_dir() {
                return std::fs::read_dir(p)
                    .expect("dir")
                    .flatten()
                    .any(|e| walk(&e.path(), needle));
            }
            let bytes = std::fs::read(p).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
        walk(dir, needle)
    }

    /// Deleted values stay in the files until the rewrite; live ones, across pages, survive it.
    #[test]
    fn a_rewrite_drops_deleted_bytes_and_keeps_every_live_entry() {
        for kind in [Kind::Redb, Kind::Sled] {
            let dir = tempfile::tempdir().expect("tempdir");
            let options = Options {
                backend: kind,
                ..Options::default()
            };
            {
                let b = super::super::open_backend(dir.path(), &options).expect("open");
                for i in 0..(PAGE + 10) {
                    put(b.as_ref(), Table::Audit, &(i as u64).to_be_bytes(), b"kept");
                }
                put(b.as_ref(), Table::Personal, b"c-1", b"Erika Zaunkoenig");
                put(b.as_ref(), Table::Personal, b"c-2", b"Other Customer");
                b.write(&[vec![Op {
                    table: Table::Personal,
                    key: b"c-1".to_vec(),
                    value: None,
                }]])
                .expect("delete");
            }
            // sled keeps the deleted value in its log here; redb happens to reuse the page
            // in so small a store (`tests/hostile/privacy.rs` shows it keeping them too).
            if kind == Kind::Sled {
                assert!(contains(dir.path(), b"Erika Zaunkoenig"), "the experiment");
            }
            let done = rewrite(dir.path(), &options).expect("rewrite");
            assert_eq!(done.entries, (PAGE + 10 + 1) as u64, "{kind:?}");
            assert!(!contains(dir.path(), b"Erika Zaunkoenig"), "{kind:?}");
            // The fresh store is as private as the one it replaced, whatever the umask.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let path = store_path(dir.path(), kind);
                let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
                assert_eq!(mode & 0o077, 0, "{kind:?}: {mode:o}");
            }
            let b = super::super::open_backend(dir.path(), &options).expect("reopen");
            assert_eq!(
                b.get(Table::Personal, b"c-2").expect("get"),
                Some(b"Other Customer".to_vec())
            );
            let audit = b.range(Table::Audit, b"", None, usize::MAX).expect("range");
            assert_eq!(audit.len(), PAGE + 10, "{kind:?}");
        }
    }

    /// A crash at any step of the swap leaves one whole store, which the next open finds.
    #[test]
    fn an_interrupted_swap_is_completed_or_discarded_at_the_next_open() {
        let options = Options::default();
        let make = |path: &Path, marker: &[u8]| {
            let b = RedbBackend::open(path, &options).expect("open");
            put(&b, Table::Meta, b"which", marker);
        };
        let which = |dir: &Path| {
            let b = super::super::open_backend(dir, &options).expect("open");
            b.get(Table::Meta, b"which").expect("get")
        };
        let old = |dir: &Path| dir.join("casegraph.redb");
        // After step 1: a partial copy; the old store stays.
        let dir = tempfile::tempdir().expect("tempdir");
        make(&old(dir.path()), b"old");
        make(&dir.path().join("casegraph.redb.rewriting"), b"partial");
        assert_eq!(which(dir.path()), Some(b"old".to_vec()));
        assert!(!dir.path().join("casegraph.redb.rewriting").exists());
        // After step 2: the complete copy is swapped in.
        let dir = tempfile::tempdir().expect("tempdir");
        make(&old(dir.path()), b"old");
        make(&dir.path().join("casegraph.redb.fresh"), b"new");
        assert_eq!(which(dir.path()), Some(b"new".to_vec()));
        // After step 3: no store under its own name, but a complete copy.
        let dir = tempfile::tempdir().expect("tempdir");
        make(&dir.path().join("casegraph.redb.stale"), b"old");
        make(&dir.path().join("casegraph.redb.fresh"), b"new");
        assert_eq!(which(dir.path()), Some(b"new".to_vec()));
        assert!(!dir.path().join("casegraph.redb.stale").exists());
        // After step 4: only the stale copy is left to remove.
        let dir = tempfile::tempdir().expect("tempdir");
        make(&old(dir.path()), b"new");
        make(&dir.path().join("casegraph.redb.stale"), b"old");
        assert_eq!(which(dir.path()), Some(b"new".to_vec()));
        assert!(!dir.path().join("casegraph.redb.stale").exists());
    }
}
