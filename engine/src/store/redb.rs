//! The redb backend: copy-on-write B-trees, one file, every commit fsync'd
//! (`Durability::Immediate`, redb's default).
//!
//! After a failed read or write (a full disk, an I/O error) redb refuses everything with
//! "Previous I/O error occurred" until the database is closed and opened again. A backend
//! over a file does that by itself (see `docs/adr/0011-disk-full-recovers-in-place.md`):
//! the operation that met the failure closes the database and opens it again, which runs
//! redb's own repair and check of the file; until that succeeds (at most one attempt per
//! [`REOPEN_EVERY`]) reads and writes answer [`Error::Io`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, Compaction, Entry, Error, Op, Options, Table};

const NAME: &str = "redb";

/// Least time between two attempts to reopen the database after an I/O failure: a disk
/// that is still full is not asked again for every request.
const REOPEN_EVERY: Duration = Duration::from_millis(200);

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Sorts redb's failures: the disk's ([`Error::Full`], [`Error::Io`]) from the rest.
fn err(e: impl Into<redb::Error>) -> Error {
    let e: redb::Error = e.into();
    match &e {
        redb::Error::Io(io) => Error::io(NAME, io),
        redb::Error::PreviousIo | redb::Error::DatabaseClosed => Error::Io {
            backend: NAME,
            message: format!("{e} (the store is being reopened)"),
        },
        _ => Error::backend(NAME, e),
    }
}

/// redb over a file (or, in tests, over a storage that can lose unsynced writes).
#[derive(Debug)]
pub struct RedbBackend {
    open: RwLock<Open>,
    /// The file, to reopen after an I/O failure; `None` over a custom storage.
    path: Option<PathBuf>,
    cache: usize,
    /// Times the database was reopened after an I/O failure.
    reopened: AtomicU64,
}

/// The database as it is now opened.
#[derive(Debug)]
struct Open {
    /// `None` while a reopen after an I/O failure has not yet succeeded.
    db: Option<Database>,
    /// Counts the openings, so that of several threads that met the same failure only
    /// the first reopens.
    generation: u64,
    /// When the last reopen was tried.
    tried: Option<Instant>,
}

impl RedbBackend {
    /// Opens (or creates, `0600` whatever the umask) the store file at `path`.
    pub fn open(path: &Path, options: &Options) -> Result<RedbBackend, Error> {
        // redb initialises an empty file as a new database.
        super::private_file(path).map_err(|e| Error::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let cache = cache_bytes(options);
        let db = open_file(path, cache).map_err(|e| Error::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        RedbBackend::init(db, Some(path.to_path_buf()), cache)
    }

    /// redb over a custom storage, e.g. [`PowerLossDisk`].
    pub fn with_storage(
        storage: impl redb::StorageBackend,
        options: &Options,
    ) -> Result<RedbBackend, Error> {
        let cache = cache_bytes(options);
        let db = Database::builder()
            .set_cache_size(cache)
            .create_with_backend(storage)
            .map_err(err)?;
        RedbBackend::init(db, None, cache)
    }

    fn init(db: Database, path: Option<PathBuf>, cache: usize) -> Result<RedbBackend, Error> {
        create_tables(&db)?;
        Ok(RedbBackend {
            open: RwLock::new(Open {
                db: Some(db),
                generation: 0,
                tried: None,
            }),
            path,
            cache,
            reopened: AtomicU64::new(0),
        })
    }

    /// Times the database was reopened after an I/O failure since it was opened.
    pub fn reopened(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    /// Runs `f` on the open database. When it meets the disk's failure, the database is
    /// reopened (see the module) and a read (`retry`) is tried once more.
    fn with_db<T>(
        &self,
        retry: bool,
        f: impl Fn(&Database) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (result, generation) = self.attempt(&f);
        match result {
            Err(e) if e.is_disk() => {
                if self.reopen(generation) && retry {
                    self.attempt(&f).0
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn attempt<T>(&self, f: &impl Fn(&Database) -> Result<T, Error>) -> (Result<T, Error>, u64) {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner());
        let result = match &open.db {
            Some(db) => f(db),
            None => Err(Error::Io {
                backend: NAME,
                message: "the store is closed after an I/O error and not yet reopened".into(),
            }),
        };
        (result, open.generation)
    }

    /// Closes and reopens the database after an I/O failure met at `generation`; whether
    /// it is open now. Another thread's reopen since then counts.
    fn reopen(&self, generation: u64) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        if open.generation != generation {
            return open.db.is_some();
        }
        if open.db.is_none() && open.tried.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return false;
        }
        // Closed first: redb holds a lock on its file while it is open.
        drop(open.db.take());
        open.generation += 1;
        open.tried = Some(Instant::now());
        match open_file(path, self.cache)
            .map_err(err)
            .and_then(|db| create_tables(&db).map(|()| db))
        {
            Ok(db) => {
                open.db = Some(db);
                self.reopened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    path = %path.display(),
                    "the store was reopened after an I/O error and its file checked; writes go on"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "the store cannot be reopened after an I/O error yet (tried again on the next access): {e}"
                );
                false
            }
        }
    }

    /// Up to `limit` entries of `[from, to)`, first to last or (`back`) last to first.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        back: bool,
    ) -> Result<Vec<Entry>, Error> {
        self.with_db(true, |db| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(def(table)).map_err(err)?;
            let iter = match to {
                Some(to) => t.range(from..to),
                None => t.range(from..),
            }
            .map_err(err)?;
            let entry = |item: Result<_, redb::StorageError>| {
                let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                    item.map_err(err)?;
                Ok((k.value().to_vec(), v.value().to_vec()))
            };
            if back {
                iter.rev().take(limit).map(entry).collect()
            } else {
                iter.take(limit).map(entry).collect()
            }
        })
    }
}

/// Opens (or repairs, after an unclean close) the database file.
fn open_file(path: &Path, cache: usize) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(cache).create(path)
}

fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write().map_err(err)?;
    for t in Table::ALL {
        txn.open_table(def(t)).map_err(err)?;
    }
    txn.commit().map_err(err)
}

fn cache_bytes(options: &Options) -> usize {
    usize::try_from(options.cache_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

impl Backend for RedbBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.with_db(true, |db| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(def(table)).map_err(err)?;
            Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        self.scan(table, from, to, limit, false)
    }

    fn range_back(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        self.scan(table, from, to, limit, true)
    }

    fn last(&self, table: Table) -> Result<Option<Entry>, Error> {
        self.with_db(true, |db| {
            let txn = db.begin_read().map_err(err)?;
            let t = txn.open_table(def(table)).map_err(err)?;
            Ok(t.last()
                .map_err(err)?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
        })
    }

    fn write(&self, groups: &[Vec<Op>]) -> Result<(), Error> {
        // Ops on different tables do not interact; within a table their order is kept.
        let mut by_table: BTreeMap<Table, Vec<&Op>> = BTreeMap::new();
        for op in groups.iter().flatten() {
            by_table.entry(op.table).or_default().push(op);
        }
        // A failed write is not tried again here: whether it landed is for the caller to
        // find out (the committer reads the audit head back).
        self.with_db(false, |db| {
            let txn = db.begin_write().map_err(err)?;
            for (table, ops) in &by_table {
                let mut t = txn.open_table(def(*table)).map_err(err)?;
                for op in ops {
                    match &op.value {
                        Some(v) => {
                            t.insert(op.key.as_slice(), v.as_slice()).map_err(err)?;
                        }
                        None => {
                            t.remove(op.key.as_slice()).map_err(err)?;
                        }
                    }
                }
            }
            txn.commit().map_err(err)
        })
    }

    fn disk_bytes(&self) -> u64 {
        self.path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        NAME
    }

    /// redb's own compaction on the open file, under the write side of the lock every read
    /// and write takes: none runs meanwhile, so no transaction blocks it. Each step is an
    /// ordinary two-phase durable commit, so a crash in the middle leaves a consistent file
    /// (the one being compacted, partly shrunk). Then the whole file is checked; a failure
    /// on the way (a disk error) closes and reopens the database as after any I/O failure.
    fn compact(&self) -> Result<Option<Compaction>, Error> {
        if self.path.is_none() {
            return Ok(None);
        }
        let started = Instant::now();
        let bytes_before = self.disk_bytes();
        let (result, generation) = {
            let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
            let generation = open.generation;
            let result = match open.db.as_mut() {
                Some(db) => compact_and_check(db),
                None => Err(Error::Io {
                    backend: NAME,
                    message: "the store is closed after an I/O error and not yet reopened".into(),
                }),
            };
            (result, generation)
        };
        if let Err(e) = result {
            // Whatever redb met, the file is checked again on reopening.
            self.reopen(generation);
            return Err(e);
        }
        Ok(Some(Compaction {
            bytes_before,
            bytes_after: self.disk_bytes(),
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }))
    }
}

/// Compacts until redb finds nothing more to move, then checks every page.
fn compact_and_check(db: &mut Database) -> Result<(), Error> {
    while db.compact().map_err(err)? {}
    if db.check_integrity().map_err(err)? {
        Ok(())
    } else {
        Err(Error::backend(
            NAME,
            "the integrity check after compaction repaired the file",
        ))
    }
}

/// An in-memory disk that keeps only what was synced when the power goes: every write
/// since the last `sync_data` is dropped by [`PowerLossDisk::power_loss`]. Used to prove
/// that what a commit acknowledged survives.
#[derive(Debug, Clone, Default)]
pub struct PowerLossDisk {
    state: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    /// What the storage holds right now (page cache view).
    current: Vec<u8>,
    /// What survives a power loss.
    synced: Vec<u8>,
    syncs: u64,
}

impl PowerLossDisk {
    pub fn new() -> PowerLossDisk {
        PowerLossDisk::default()
    }

    /// Cuts the power: the disk keeps only synced bytes. Returns a disk to reopen with.
    pub fn power_loss(&self) -> PowerLossDisk {
        let d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        PowerLossDisk {
            state: Arc::new(Mutex::new(Disk {
                current: d.synced.clone(),
                synced: d.synced.clone(),
                syncs: 0,
            })),
        }
    }

    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).syncs
    }
}

impl redb::StorageBackend for PowerLossDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start + out.len();
        if end > d.current.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the disk",
            ));
        }
        out.copy_from_slice(&d.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        d.current
            .resize(usize::try_from(len).map_err(std::io::Error::other)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        d.synced = d.current.clone();
        d.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start + data.len();
        if end > d.current.len() {
            d.current.resize(end, 0);
        }
        d.current[start..end].copy_from_slice(data);
        Ok(())
    }
}
