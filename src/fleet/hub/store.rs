//! The hub's own store: one redb file in the hub's data directory, typed tables only.
//! Handlers and the ingest ask for branch states, record hashes, case summaries, health
//! snapshots and rollout reports; nobody outside this file names a table or builds a key.
//!
//! One [`Batch`] is one write transaction: the ingest applies a batch of messages through
//! it and moves the hub's cursor on `CG_FLEET` (the stream sequence of the last message
//! applied) in the same commit, so a crash before the commit reads them again and a crash
//! after it never does.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::fleet::wire::{CaseSummary, Health, RolloutReport};

/// Branch name → [`BranchState`] (JSON).
const BRANCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("branches");
/// (branch, audit seq) → the record's hash as the branch sent it.
const RECORDS: TableDefinition<(&str, u64), &str> = TableDefinition::new("records");
/// (branch, case id) → the [`CaseSummary`] with the highest audit seq (JSON).
const CASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("cases");
/// Branch name → its latest [`Health`] (JSON).
const HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("health");
/// (branch, rollout id) → the branch's [`RolloutReport`] (JSON).
const ROLLOUTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rollouts");

/// What the hub keeps about itself: [`CURSOR`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The `CG_FLEET` stream sequence of the last message applied.
const CURSOR: &str = "fleet_cursor";

/// The file in the hub's data directory.
pub const FILE_NAME: &str = "hub.redb";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("hub store {path}: {message}")]
    Open { path: String, message: String },
    #[error("hub store: {0}")]
    Redb(String),
    #[error("hub store: a stored {what} is not readable: {message}")]
    Corrupt { what: &'static str, message: String },
}

fn err(e: impl Into<redb::Error>) -> Error {
    Error::Redb(e.into().to_string())
}

/// What the hub knows of one branch beyond the messages it keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BranchState {
    /// The highest audit seq applied: the head of the chain the hub holds.
    pub applied: u64,
    /// The hash of record `applied` (empty before the first record).
    pub head_hash: String,
    /// Records held (distinct seqs): a record published twice counts once.
    pub records: u64,
    /// The latest time any message of the branch carries (record, summary or snapshot):
    /// when the box was last known alive, not when the hub happened to read it.
    pub last_seen: Option<Timestamp>,
    /// When the hub last applied a message of the branch.
    pub last_applied: Option<Timestamp>,
    /// Cases by status, counted from the summaries held (one per case).
    pub cases: BTreeMap<String, u64>,
    /// What is wrong with the branch's chain, first found first (at most
    /// [`MAX_PROBLEMS`]; `problems_dropped` counts the rest). Empty = verified.
    pub problems: Vec<String>,
    pub problems_dropped: u64,
    /// Messages of the branch the hub could not use (unreadable, naming another branch,
    /// beyond the limits), and the last reason.
    pub rejected: u64,
    pub last_rejected: Option<String>,
    /// The latest rollout report's id.
    pub last_rollout: Option<String>,
}

/// Problems kept per branch: the first ones say where the chain went wrong.
pub const MAX_PROBLEMS: usize = 20;

impl BranchState {
    /// Flags a problem of the chain (the same problem twice is kept once).
    pub fn flag(&mut self, problem: String) {
        tracing::warn!("fleet chain problem: {problem}");
        if self.problems.contains(&problem) {
            return;
        }
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_dropped += 1;
        }
    }

    pub fn reject(&mut self, reason: String) {
        tracing::warn!("fleet message rejected: {reason}");
        self.rejected += 1;
        self.last_rejected = Some(reason);
    }

    pub fn seen(&mut self, at: Timestamp, now: Timestamp) {
        self.last_seen = Some(self.last_seen.map_or(at, |s| s.max(at)));
        self.last_applied = Some(now);
    }
}

/// The hub's store.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `<dir>/hub.redb` with every table.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| Error::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(BRANCHES).map_err(err)?;
        txn.open_table(RECORDS).map_err(err)?;
        txn.open_table(CASES).map_err(err)?;
        txn.open_table(HEALTH).map_err(err)?;
        txn.open_table(ROLLOUTS).map_err(err)?;
        txn.open_table(META).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Store { db })
    }

    /// Runs `f` in one write transaction and commits it when `f` succeeds.
    pub fn write<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let txn = self.db.begin_write().map_err(err)?;
        let out = {
            let mut batch = Batch {
                branches: txn.open_table(BRANCHES).map_err(err)?,
                records: txn.open_table(RECORDS).map_err(err)?,
                cases: txn.open_table(CASES).map_err(err)?,
                health: txn.open_table(HEALTH).map_err(err)?,
                rollouts: txn.open_table(ROLLOUTS).map_err(err)?,
                meta: txn.open_table(META).map_err(err)?,
            };
            f(&mut batch)?
        };
        txn.commit().map_err(err)?;
        Ok(out)
    }

    /// Every branch with a state, by name, from `after` (exclusive), at most `limit`.
    pub fn branches(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, BranchState)>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(BRANCHES).map_err(err)?;
        let range = match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        }
        .map_err(err)?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_string(), decode("branch state", v.value())?));
        }
        Ok(out)
    }

    /// The `CG_FLEET` sequence of the last message applied (0: none yet).
    pub fn cursor(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(META).map_err(err)?;
        Ok(t.get(CURSOR).map_err(err)?.map_or(0, |v| v.value()))
    }

    pub fn branch(&self, name: &str) -> Result<Option<BranchState>, Error> {
        self.read(BRANCHES, name, "branch state")
    }

    pub fn health(&self, branch: &str) -> Result<Option<Health>, Error> {
        self.read(HEALTH, branch, "health snapshot")
    }

    /// The hash the hub holds for record `seq` of `branch`.
    pub fn record_hash(&self, branch: &str, seq: u64) -> Result<Option<String>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(RECORDS).map_err(err)?;
        Ok(t.get((branch, seq))
            .map_err(err)?
            .map(|v| v.value().to_string()))
    }

    pub fn case(&self, branch: &str, case_id: &str) -> Result<Option<CaseSummary>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(CASES).map_err(err)?;
        t.get((branch, case_id))
            .map_err(err)?
            .map(|v| decode("case summary", v.value()))
            .transpose()
    }

    /// The branch's rollout reports, by rollout id, at most `limit`.
    pub fn rollouts(&self, branch: &str, limit: usize) -> Result<Vec<RolloutReport>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(ROLLOUTS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range((branch, "")..).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            if k.value().0 != branch {
                break;
            }
            out.push(decode("rollout report", v.value())?);
        }
        Ok(out)
    }

    fn read<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(table).map_err(err)?;
        t.get(key)
            .map_err(err)?
            .map(|v| decode(what, v.value()))
            .transpose()
    }
}

/// The tables of one write transaction.
pub struct Batch<'txn> {
    branches: redb::Table<'txn, &'static str, &'static [u8]>,
    records: redb::Table<'txn, (&'static str, u64), &'static str>,
    cases: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    health: redb::Table<'txn, &'static str, &'static [u8]>,
    rollouts: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    meta: redb::Table<'txn, &'static str, u64>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch<'_> {
    pub fn cursor(&self) -> Result<u64, Error> {
        Ok(self.meta.get(CURSOR).map_err(err)?.map_or(0, |v| v.value()))
    }

    /// Moves the cursor: committed with the effects of the messages up to it.
    pub fn set_cursor(&mut self, seq: u64) -> Result<(), Error> {
        self.meta.insert(CURSOR, seq).map_err(err)?;
        Ok(())
    }

    pub fn branch(&self, name: &str) -> Result<BranchState, Error> {
        Ok(match self.branches.get(name).map_err(err)? {
            Some(v) => decode("branch state", v.value())?,
            None => BranchState::default(),
        })
    }

    pub fn put_branch(&mut self, name: &str, state: &BranchState) -> Result<(), Error> {
        self.branches
            .insert(name, encode(state).as_slice())
            .map_err(err)?;
        Ok(())
    }

    pub fn record_hash(&self, branch: &str, seq: u64) -> Result<Option<String>, Error> {
        Ok(self
            .records
            .get((branch, seq))
            .map_err(err)?
            .map(|v| v.value().to_string()))
    }

    pub fn put_record_hash(&mut self, branch: &str, seq: u64, hash: &str) -> Result<(), Error> {
        self.records.insert((branch, seq), hash).map_err(err)?;
        Ok(())
    }

    pub fn case(&self, branch: &str, case_id: &str) -> Result<Option<CaseSummary>, Error> {
        self.cases
            .get((branch, case_id))
            .map_err(err)?
            .map(|v| decode("case summary", v.value()))
            .transpose()
    }

    pub fn put_case(&mut self, summary: &CaseSummary) -> Result<(), Error> {
        self.cases
            .insert(
                (summary.branch.as_str(), summary.case_id.as_str()),
                encode(summary).as_slice(),
            )
            .map_err(err)?;
        Ok(())
    }

    pub fn health(&self, branch: &str) -> Result<Option<Health>, Error> {
        self.health
            .get(branch)
            .map_err(err)?
            .map(|v| decode("health snapshot", v.value()))
            .transpose()
    }

    pub fn put_health(&mut self, health: &Health) -> Result<(), Error> {
        self.health
            .insert(health.branch.as_str(), encode(health).as_slice())
            .map_err(err)?;
        Ok(())
    }

    pub fn rollout(&self, branch: &str, id: &str) -> Result<Option<RolloutReport>, Error> {
        self.rollouts
            .get((branch, id))
            .map_err(err)?
            .map(|v| decode("rollout report", v.value()))
            .transpose()
    }

    pub fn put_rollout(&mut self, report: &RolloutReport) -> Result<(), Error> {
        self.rollouts
            .insert(
                (report.branch.as_str(), report.rollout_id.as_str()),
                encode(report).as_slice(),
            )
            .map_err(err)?;
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("hub values serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what,
        message: e.to_string(),
    })
}
