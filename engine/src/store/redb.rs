//! The redb backend: copy-on-write B-trees, one file, every commit fsync'd
//! (`Durability::Immediate`, redb's default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Backend, Entry, Error, Op, Options, Table};

const NAME: &str = "redb";

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::backend(NAME, e)
}

/// redb over a file (or, in tests, over a storage that can lose unsynced writes).
#[derive(Debug)]
pub struct RedbBackend {
    db: Database,
    path: Option<PathBuf>,
}

impl RedbBackend {
    /// Opens (or creates, `0600` whatever the umask) the store file at `path`.
    pub fn open(path: &Path, options: &Options) -> Result<RedbBackend, Error> {
        // redb initialises an empty file as a new database.
        super::private_file(path).map_err(|e| Error::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let db = Database::builder()
            .set_cache_size(cache_bytes(options))
            .create(path)
            .map_err(|e| Error::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        RedbBackend::init(db, Some(path.to_path_buf()))
    }

    /// redb over a custom storage, e.g. [`PowerLossDisk`].
    pub fn with_storage(
        storage: impl redb::StorageBackend,
        options: &Options,
    ) -> Result<RedbBackend, Error> {
        let db = Database::builder()
            .set_cache_size(cache_bytes(options))
            .create_with_backend(storage)
            .map_err(err)?;
        RedbBackend::init(db, None)
    }

    fn init(db: Database, path: Option<PathBuf>) -> Result<RedbBackend, Error> {
        let txn = db.begin_write().map_err(err)?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(RedbBackend { db, path })
    }
}

impl RedbBackend {
    /// Up to `limit` entries of `[from, to)`, first to last or (`back`) last to first.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        back: bool,
    ) -> Result<Vec<Entry>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(def(table)).map_err(err)?;
        let iter = match to {
            Some(to) => t.range(from..to),
            None => t.range(from..),
        }
        .map_err(err)?;
        let entry = |item: Result<_, redb::StorageError>| {
            let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) = item.map_err(err)?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        };
        if back {
            iter.rev().take(limit).map(entry).collect()
        } else {
            iter.take(limit).map(entry).collect()
        }
    }
}

fn cache_bytes(options: &Options) -> usize {
    usize::try_from(options.cache_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

impl Backend for RedbBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(def(table)).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
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
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(def(table)).map_err(err)?;
        Ok(t.last()
            .map_err(err)?
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
    }

    fn write(&self, groups: &[Vec<Op>]) -> Result<(), Error> {
        // Ops on different tables do not interact; within a table their order is kept.
        let mut by_table: BTreeMap<Table, Vec<&Op>> = BTreeMap::new();
        for op in groups.iter().flatten() {
            by_table.entry(op.table).or_default().push(op);
        }
        let txn = self.db.begin_write().map_err(err)?;
        for (table, ops) in by_table {
            let mut t = txn.open_table(def(table)).map_err(err)?;
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
