//! The sled backend (0.34, the stable line). One tree per table; a write is one multi-tree
//! transaction followed by one `flush`. sled 0.34 flushes with `sync_file_range`, which
//! does not sync file metadata: see `docs/reliability.md` for what that means on power loss.

use std::collections::BTreeMap;
use std::path::Path;

use sled::Transactional;

use super::{Backend, Entry, Error, Op, Options, Table};

const NAME: &str = "sled";

/// Sorts sled's failures: the disk's ([`Error::Full`], [`Error::Io`]) from the rest.
fn err(e: sled::Error) -> Error {
    match &e {
        sled::Error::Io(io) => Error::io(NAME, io),
        _ => Error::backend(NAME, e),
    }
}

#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    /// Trees in [`Table::ALL`] order.
    trees: Vec<sled::Tree>,
}

impl SledBackend {
    /// Opens (or creates, `0700` whatever the umask) the store directory at `path`.
    pub fn open(path: &Path, options: &Options) -> Result<SledBackend, Error> {
        super::private_dir(path).map_err(|e| Error::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_mib.saturating_mul(1024 * 1024))
            .open()
            .map_err(|e| Error::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SledBackend { db, trees })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        let i = Table::ALL
            .iter()
            .position(|t| *t == table)
            .expect("every table has a tree");
        &self.trees[i]
    }
}

impl SledBackend {
    /// Up to `limit` entries of `[from, to)`, first to last or (`back`) last to first.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        back: bool,
    ) -> Result<Vec<Entry>, Error> {
        let tree = self.tree(table);
        let iter = match to {
            Some(to) => tree.range(from..to),
            None => tree.range(from..),
        };
        let entry = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err)
        };
        if back {
            iter.rev().take(limit).map(entry).collect()
        } else {
            iter.take(limit).map(entry).collect()
        }
    }
}

impl Backend for SledBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree(table).get(key).map_err(err)?.map(|v| v.to_vec()))
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
        Ok(self
            .tree(table)
            .last()
            .map_err(err)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn write(&self, groups: &[Vec<Op>]) -> Result<(), Error> {
        let mut by_table: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
        for op in groups.iter().flatten() {
            let i = Table::ALL
                .iter()
                .position(|t| *t == op.table)
                .expect("every table has a tree");
            by_table.entry(i).or_default().push(op);
        }
        let trees: Vec<sled::Tree> = self.trees.clone();
        trees
            .as_slice()
            .transaction(|tx| {
                for (i, ops) in &by_table {
                    let t = &tx[*i];
                    for op in ops {
                        match &op.value {
                            Some(v) => {
                                t.insert(op.key.as_slice(), v.as_slice())?;
                            }
                            None => {
                                t.remove(op.key.as_slice())?;
                            }
                        }
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => err(e),
                other => Error::backend(NAME, format!("{other:?}")),
            })?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn name(&self) -> &'static str {
        NAME
    }
}
