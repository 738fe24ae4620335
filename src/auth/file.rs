//! `tokens.json` on disk: read whole, changed only under an advisory lock, written whole.
//!
//! Two kinds of writers share the file: a running server (`POST`/`DELETE /v1/tokens`) and
//! the `casegraph token` CLI, possibly at the same moment. Every change is one
//! read-modify-write under an exclusive `flock` on `tokens.json.lock`: the file is read
//! again under the lock, this one change is applied to what is on disk (never to a copy a
//! process held in memory), and the result goes to a temp file that is fsynced and renamed
//! over the old one. So no writer can write back a token another writer removed, and no
//! reader ever sees half a file.
//!
//! The lock sits on a separate file because the rename replaces `tokens.json`'s inode: a
//! lock on the old inode would not exclude a writer that opened the new one. The lock file
//! is never removed (removing it would let two writers lock two different inodes).
//!
//! Readers notice changes through a [`Stamp`] (device, inode, length, mtime) taken with
//! one `stat`, cheap enough for every authentication.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Error, TokenEntry};

/// A rename or a write younger than this may share its mtime with the state before it
/// (coarse file system clocks, a recycled inode): such a stamp is re-checked by reading.
const RACY: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    tokens: Vec<TokenEntry>,
}

/// What one `stat` says about the file's identity and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
    Missing,
    /// `stat` failed for another reason than absence (permissions, I/O).
    Unreadable,
    File {
        dev: u64,
        ino: u64,
        len: u64,
        mtime: i64,
        mtime_nsec: i64,
        /// Changed so recently that an equal stamp does not prove equal content.
        racy: bool,
    },
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let racy = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < RACY);
        Stamp::File {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            racy,
        }
    }

    /// The same stamp, trusted as it is: for a file that failed to read, which is read
    /// again only once it changes (a young file would otherwise be re-read, and its error
    /// logged, on every authentication).
    pub(super) fn settled(self) -> Stamp {
        match self {
            Stamp::File {
                dev,
                ino,
                len,
                mtime,
                mtime_nsec,
                ..
            } => Stamp::File {
                dev,
                ino,
                len,
                mtime,
                mtime_nsec,
                racy: false,
            },
            other => other,
        }
    }

    /// The loaded state (`self`) still describes the file whose stamp is `now`.
    pub(super) fn still(&self, now: &Stamp) -> bool {
        match (self, now) {
            (Stamp::File { racy: true, .. }, _) => false,
            (
                Stamp::File {
                    dev,
                    ino,
                    len,
                    mtime,
                    mtime_nsec,
                    ..
                },
                Stamp::File {
                    dev: d,
                    ino: i,
                    len: l,
                    mtime: m,
                    mtime_nsec: n,
                    ..
                },
            ) => (dev, ino, len, mtime, mtime_nsec) == (d, i, l, m, n),
            (a, b) => a == b,
        }
    }
}

/// `<data_dir>/tokens.json` and its lock.
#[derive(Debug)]
pub(super) struct TokenFile {
    pub(super) path: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

impl TokenFile {
    pub(super) fn new(path: PathBuf) -> TokenFile {
        TokenFile {
            lock: path.with_extension("json.lock"),
            tmp: path.with_extension("json.tmp"),
            path,
        }
    }

    fn err(&self) -> impl Fn(std::io::Error) -> Error + '_ {
        |e| Error::File {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The file's stamp now.
    pub(super) fn stamp(&self) -> Stamp {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stamp::Missing,
            Err(_) => Stamp::Unreadable,
        }
    }

    /// The tokens on disk (none yet is an empty set) and the stamp of what was read: the
    /// stamp is taken from the open file, so it describes exactly these bytes.
    pub(super) fn read(&self) -> Result<(Vec<TokenEntry>, Stamp), Error> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Stamp::Missing));
            }
            Err(e) => return Err(self.err()(e)),
        };
        let stamp = Stamp::of(&f.metadata().map_err(self.err())?);
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(self.err())?;
        let contents: Contents = serde_json::from_slice(&bytes).map_err(|e| Error::File {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok((contents.tokens, stamp))
    }

    /// Applies `change` to the tokens on disk under the lock and writes the result; returns
    /// what `change` returned, the tokens now on disk and their stamp. A `change` that
    /// fails leaves the file as it was.
    pub(super) fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<TokenEntry>) -> Result<T, Error>,
    ) -> Result<(T, Vec<TokenEntry>, Stamp), Error> {
        if let Some(dir) = self.path.parent() {
            crate::data_dir::create(dir)
                .map_err(|e| self.err()(std::io::Error::other(e.to_string())))?;
        }
        let lock = open_private(&self.lock, false).map_err(self.err())?;
        // Blocks until the other writer is done; its changes are then on disk and read below.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| self.err()(e.into()))?;
        let (mut entries, _) = self.read()?;
        let result = change(&mut entries)?;
        let bytes = serde_json::to_vec_pretty(&Contents {
            tokens: entries.clone(),
        })
        .map_err(|e| Error::File {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let mut f = open_private(&self.tmp, true).map_err(self.err())?;
        f.write_all(&bytes).map_err(self.err())?;
        f.sync_all().map_err(self.err())?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(self.err())?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            // The rename itself survives a power cut only once the directory is synced.
            let _ = d.sync_all();
        }
        let stamp = self.stamp();
        drop(lock);
        Ok((result, entries, stamp))
    }
}

/// Opens (creating) a file only its owner can read or write, whatever mode an existing
/// file had and whatever the umask; never through a symbolic link. `truncate` empties it.
pub(super) fn open_private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    // `mode` applies only when the file is created: an existing file keeps its own.
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o600))?;
    Ok(f)
}
