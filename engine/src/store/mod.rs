//! Durable local state: one [`Backend`] trait with a redb and a sled implementation, group
//! commit on top of it, and the typed tables the runner and the service use.
//!
//! The promise: [`Store::commit`] returns only after the batch is on disk, atomically, and
//! concurrent commits share one sync (see [`group`]). Everything above this module speaks in
//! typed records ([`records`]); everything below in tables of ordered byte keys.
//!
//! What each backend assumes about the disk and guarantees is written in
//! `docs/reliability.md`; the default is chosen in `docs/adr/0005-default-store-backend.md`.

pub mod archive;
mod chain;
mod group;
mod inbox;
mod proactive;
pub mod records;
mod redb;
mod rewrite;
mod sled;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use self::redb::{PowerLossDisk, RedbBackend};
pub use self::sled::SledBackend;
use crate::audit;
pub use chain::AuditRecords;
pub use group::CommitStats;
pub use inbox::{OpenQueue, Place};
pub use proactive::{
    ConsentChange, ConsentRecord, Consents, Contacts, EventEntry, Events, ScheduleMark, Schedules,
    Starts,
};
pub use records::*;
pub use rewrite::{Rewritten, rewrite};
pub use tables::{
    Cases, CustomerCases, DueTimer, Idempotency, Listed, Notifications, Outbox, Personal,
    RelayCursor, Row, Timers, WorkflowVersions,
};

/// The tables of the store. Keys are ordered bytes; values are JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// case id → [`CaseRecord`] (without personal data).
    Cases,
    /// case id → case data and request (personal data; erasable).
    Personal,
    /// `customer pseudonym \0 case id` → empty: the cases of a customer, for erasure.
    CustomerCases,
    /// case id → empty: cases with work stored but not yet done (recovery scans this).
    Pending,
    /// task id → [`TaskEntry`]: open human tasks.
    Tasks,
    /// `due (big-endian nanoseconds) \0 case id` → empty: cases waiting for a timer or SLA.
    Timers,
    /// idempotency key → [`IdempotencyEntry`].
    Idempotency,
    /// workflow digest → [`WorkflowBundle`]: every version that ever ran.
    Workflows,
    /// connector idempotency key → [`OutboxEntry`].
    Outbox,
    /// audit seq (u64 big-endian) → [`audit::Record`].
    Audit,
    /// `case id \0 seq` → empty: a case's audit records.
    AuditByCase,
    /// Box-wide settings (pseudonymization salt, schema version).
    Meta,
    /// case id → [`Notification`]: a final case's `reply_to` notification not yet delivered.
    /// Written in the commit that makes the case final; deleted once delivered or refused.
    Notifications,
    /// `case reference \0 case id` → empty: the case a quoted reference names.
    References,
    /// `source \0 id` of a business event → [`EventEntry`]: what the event started.
    Events,
    /// `workflow \0 customer pseudonym \0 once key` → case id: a proactive case already
    /// started for that customer, so the same event or occurrence starts no second one.
    Starts,
    /// `customer pseudonym \0 purpose` → [`ConsentRecord`] with its history. Erasable.
    Consents,
    /// `customer pseudonym \0 purpose \0 time \0 case id` → empty: a proactive contact.
    Contacts,
    /// workflow id → [`ScheduleMark`]: the last occurrence its schedule handled.
    Schedules,
}

impl Table {
    pub const ALL: [Table; 19] = [
        Table::Cases,
        Table::Personal,
        Table::CustomerCases,
        Table::Pending,
        Table::Tasks,
        Table::Timers,
        Table::Idempotency,
        Table::Workflows,
        Table::Outbox,
        Table::Audit,
        Table::AuditByCase,
        Table::Meta,
        Table::Notifications,
        Table::References,
        Table::Events,
        Table::Starts,
        Table::Consents,
        Table::Contacts,
        Table::Schedules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Cases => "cases",
            Table::Personal => "personal",
            Table::CustomerCases => "customer_cases",
            Table::Pending => "pending",
            Table::Tasks => "tasks",
            Table::Timers => "timers",
            Table::Idempotency => "idempotency",
            Table::Workflows => "workflows",
            Table::Outbox => "outbox",
            Table::Audit => "audit",
            Table::AuditByCase => "audit_by_case",
            Table::Meta => "meta",
            Table::Notifications => "notifications",
            Table::References => "references",
            Table::Events => "events",
            Table::Starts => "starts",
            Table::Consents => "consents",
            Table::Contacts => "contacts",
            Table::Schedules => "schedules",
        }
    }
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Rows [`Store::each_chunk`] callers and [`Store::count_rows`] read at a time.
const EACH_CHUNK: usize = 256;

/// One write: a put (`Some`) or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A storage engine: ordered tables of bytes with atomic, durable multi-table writes.
///
/// The conformance suite (`engine/tests/store_conformance.rs`) runs against every
/// implementation. Implementations need no internal write concurrency: [`Store`] calls
/// [`Backend::write`] from one committer thread.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The value at `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Entries with `from <= key < to` (`to = None`: to the end), in key order, at most
    /// `limit`.
    fn range(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error>;
    /// Entries with `from <= key < to` (`to = None`: to the end), greatest key first, at
    /// most `limit`: newest-first listings page through this without reading the rest.
    fn range_back(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, Error>;
    /// The entry with the greatest key.
    fn last(&self, table: Table) -> Result<Option<Entry>, Error>;
    /// Applies every op of every group, all or nothing, and returns once they are durable.
    fn write(&self, groups: &[Vec<Op>]) -> Result<(), Error>;
    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> u64;
    /// The backend's name, as in configuration.
    fn name(&self) -> &'static str;
    /// Gives the space of deleted entries back to the filesystem while the store stays
    /// open; reads and writes wait until it is done. `None`: this backend does not (sled
    /// reclaims on its own schedule, a backend over a custom storage has no file).
    fn compact(&self) -> Result<Option<Compaction>, Error> {
        Ok(None)
    }
}

/// What one compaction of an open store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// The store file's size before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
    /// How long reads and writes waited for it, in milliseconds.
    pub millis: u64,
}

/// Which backend, as configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// redb: fsync'd copy-on-write B-trees. The default (see the ADR).
    #[default]
    Redb,
    /// sled 0.34: log-structured; syncs with `sync_file_range`.
    Sled,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redb" => Ok(Kind::Redb),
            "sled" => Ok(Kind::Sled),
            other => Err(format!(
                "unknown store backend `{other}`; use `redb` or `sled`"
            )),
        }
    }
}

/// Store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Which storage engine keeps the data directory.
    pub backend: Kind,
    /// Cache the engine may use, in MiB (sled's default of 1 GiB would not fit small boxes).
    pub cache_mib: u64,
    /// Most commits grouped under one sync; bounds the latency a large group adds.
    pub max_group: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Kind::Redb,
            cache_mib: 32,
            max_group: 512,
        }
    }
}

/// A storage failure. [`Error::Full`] and [`Error::Io`] are the disk's (the service answers
/// `507 storage_full` and `503 storage_unavailable`); the others are internal (`500`).
///
/// A failed write never lands in part: every backend write is one transaction.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("store backend {backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    /// The filesystem of the data directory has no room for the write (ENOSPC, EDQUOT,
    /// EFBIG). Nothing of it landed; it can succeed once space is freed.
    #[error("store backend {backend}: the disk is full: {message}")]
    Full {
        backend: &'static str,
        message: String,
    },
    /// The disk failed a read or write (or the backend is reopening after such a failure).
    /// Nothing of a failed write landed.
    #[error("store backend {backend}: I/O error: {message}")]
    Io {
        backend: &'static str,
        message: String,
    },
    #[error("stored {what} `{key}` is not readable: {message}")]
    Corrupt {
        what: &'static str,
        key: String,
        message: String,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("cannot open the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn backend(backend: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Backend {
            backend,
            message: e.to_string(),
        }
    }

    /// The error an I/O failure of `backend` means: [`Error::Full`] when the disk is out
    /// of room, [`Error::Io`] otherwise.
    pub(crate) fn io(backend: &'static str, e: &std::io::Error) -> Error {
        let message = e.to_string();
        if no_space(e) {
            Error::Full { backend, message }
        } else {
            Error::Io { backend, message }
        }
    }

    /// Whether this is the disk's failure (full, or an I/O error) rather than a bug or
    /// damaged data: such a write may succeed later, once space or the disk returns.
    pub fn is_disk(&self) -> bool {
        matches!(self, Error::Full { .. } | Error::Io { .. })
    }
}

/// Whether `e` says the filesystem has no room: ENOSPC, EDQUOT (over quota) or EFBIG
/// (over the file-size limit).
pub fn no_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    const EDQUOT: i32 = 122;
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge
    ) || matches!(e.raw_os_error(), Some(ENOSPC | EFBIG | EDQUOT))
}

/// Opens the backend `options` names in `dir` (created if missing). A directory that
/// already holds one backend's data is opened with that backend whatever `options` says,
/// so data is never orphaned.
///
/// The store holds personal data: what this function and the backends' `open` create is
/// private to the owner (directories `0700`, the redb file `0600`) whatever the umask, also
/// when an erasure's rewrite opens a fresh store. Files a backend creates later (sled's
/// segments) follow the umask, which the service sets to `077`.
pub fn open_backend(dir: &Path, options: &Options) -> Result<Arc<dyn Backend>, Error> {
    let open_err = |path: &Path, e: std::io::Error| Error::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    private_dir(dir).map_err(|e| open_err(dir, e))?;
    // A rewrite after an erasure that a crash interrupted is completed (or its partial
    // copy discarded) before anything opens the store.
    rewrite::finish(dir)?;
    let mut kind = options.backend;
    if let Some(found) = detect(dir)
        && found != kind
    {
        tracing::warn!(
            "data directory {} holds a {found:?} store; using it rather than the configured {kind:?}",
            dir.display()
        );
        kind = found;
    }
    let path = rewrite::store_path(dir, kind);
    Ok(match kind {
        Kind::Redb => Arc::new(RedbBackend::open(&path, options)?),
        Kind::Sled => Arc::new(SledBackend::open(&path, options)?),
    })
}

/// Creates `dir` (and missing parents) `0700`; an existing one is left alone.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Creates `file` empty and `0600` unless it exists.
pub(crate) fn private_file(file: &Path) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Which backend a data directory holds, if any.
pub fn detect(dir: &Path) -> Option<Kind> {
    if dir.join("casegraph.redb").is_file() {
        Some(Kind::Redb)
    } else if dir.join("sled").is_dir() {
        Some(Kind::Sled)
    } else {
        None
    }
}

/// The typed store: tables of records over a backend, with group commit and the audit chain.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    committer: Arc<group::Committer>,
    /// The open tasks in the inbox's order, kept by the commit thread.
    inbox: Arc<inbox::Inbox>,
    salt: Arc<[u8; 32]>,
    /// One incremental audit verification at a time: concurrent ones would check the same
    /// tail and race to move the mark.
    verify_lock: Arc<std::sync::Mutex<()>>,
}

impl Store {
    /// Opens (or creates) the store in `dir` (see [`open_backend`] for which backend).
    pub fn open(dir: &Path, options: &Options) -> Result<Store, Error> {
        Store::with_backend(open_backend(dir, options)?, options.max_group)
    }

    /// A store over an already opened backend.
    pub fn with_backend(backend: Arc<dyn Backend>, max_group: usize) -> Result<Store, Error> {
        let head = group::stored_head(backend.as_ref())?.unwrap_or_else(audit::Head::genesis);
        let salt = match backend.get(Table::Meta, b"salt")? {
            Some(s) if s.len() == 32 => {
                let mut a = [0u8; 32];
                a.copy_from_slice(&s);
                a
            }
            _ => {
                let fresh = fresh_salt()?;
                backend.write(&[vec![Op {
                    table: Table::Meta,
                    key: b"salt".to_vec(),
                    value: Some(fresh.to_vec()),
                }]])?;
                fresh
            }
        };
        let inbox = Arc::new(inbox::Inbox::default());
        let committer =
            group::Committer::start(backend.clone(), head, max_group.max(1), inbox.clone());
        Ok(Store {
            backend,
            committer: Arc::new(committer),
            inbox,
            salt: Arc::new(salt),
            verify_lock: Arc::new(std::sync::Mutex::new(())),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Writes the batch atomically and returns when it is durable. Concurrent commits share
    /// one sync. Audit entries in the batch are chained in commit order.
    pub fn commit(&self, batch: Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.committer.commit(batch)
    }

    /// Queues the batch for the next group write and returns at once: `then` gets the
    /// write's result on the commit thread, after the data is durable (or failed to be),
    /// in commit order with every other commit. `then` must be short: later commits wait
    /// for it. Lets a caller go on with other work while its commit syncs.
    pub fn commit_then(&self, batch: Batch, then: impl FnOnce(Result<(), Error>) + Send + 'static) {
        if batch.is_empty() {
            return then(Ok(()));
        }
        self.committer.commit_then(batch, Box::new(then))
    }

    /// Writes one small record (the time, in the `meta` table) through the committer: tells
    /// whether the disk takes writes again after a failure.
    pub fn probe_write(&self) -> Result<(), Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut batch = Batch::new();
        batch.put_raw(
            Table::Meta,
            b"write_probe".to_vec(),
            now.to_be_bytes().to_vec(),
        );
        self.commit(batch)
    }

    /// Gives the space of deleted entries back while the store stays open (see
    /// [`Backend::compact`]). The commit group is quiet meanwhile: its next write waits for
    /// the backend, so what it acknowledges is written after the compaction, never into it.
    pub fn compact(&self) -> Result<Option<Compaction>, Error> {
        self.backend.compact()
    }

    /// Commits, syncs and requests since start, for metrics and benchmarks.
    pub fn stats(&self) -> CommitStats {
        self.committer.stats()
    }

    /// A customer's pseudonymous id: stable on this box, not reversible without its salt.
    pub fn pseudonym(&self, customer_id: &str) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&self.salt[..]);
        h.update(customer_id.as_bytes());
        format!("cust-{}", hex::encode(&h.finalize()[..12]))
    }

    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        match self.backend.get(table, key)? {
            Some(v) => decode(what, key, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn scan_json<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<(Vec<u8>, T)>, Error> {
        let end = prefix_end(prefix);
        self.backend
            .range(table, prefix, end.as_deref(), usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode(what, &k, &v).map(|t| (k, t)))
            .collect()
    }

    /// Hands `table` to `f` in key order, at most `size` rows at a time: for a walk over a
    /// whole table that need not hold every row at once (a large table read whole leaves
    /// its size behind in the reading thread's malloc arena).
    pub(crate) fn each_chunk(
        &self,
        table: Table,
        size: usize,
        mut f: impl FnMut(Vec<Entry>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut from: Vec<u8> = Vec::new();
        loop {
            let chunk = self.backend.range(table, &from, None, size)?;
            let full = chunk.len() == size;
            if let Some((last, _)) = chunk.last() {
                // the smallest key after `last`
                from = last.clone();
                from.push(0);
            }
            f(chunk)?;
            if !full {
                return Ok(());
            }
        }
    }

    /// How many rows `table` has, counted [`EACH_CHUNK`] rows at a time.
    pub(crate) fn count_rows(&self, table: Table) -> Result<usize, Error> {
        let mut n = 0;
        self.each_chunk(table, EACH_CHUNK, |chunk| {
            n += chunk.len();
            Ok(())
        })?;
        Ok(n)
    }

    pub(crate) fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let end = prefix_end(prefix);
        Ok(self
            .backend
            .range(table, prefix, end.as_deref(), usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
}

fn fresh_salt() -> Result<[u8; 32], Error> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| Error::backend("os", format!("no randomness: {e}")))?;
    Ok(salt)
}

/// The smallest key greater than every key with this prefix (`None`: no bound).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what,
        key: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records serialize")
}

/// Writes that commit together, plus audit entries to chain.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
    /// Written as JSON here, in the caller's thread; the commit thread only chains them.
    pub(crate) audit: Vec<audit::Written>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.audit.is_empty()
    }

    pub fn put_raw(&mut self, table: Table, key: impl Into<Vec<u8>>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op {
            table,
            key: key.into(),
            value: Some(value),
        });
        self
    }

    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> &mut Self {
        self.put_raw(table, key, encode(value))
    }

    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op {
            table,
            key: key.into(),
            value: None,
        });
        self
    }

    /// Appends an audit entry; the committer gives it its place in the chain.
    pub fn audit(&mut self, entry: audit::Entry) -> &mut Self {
        self.audit.push(audit::Written::new(&entry));
        self
    }

    /// Number of writes and audit entries.
    pub fn len(&self) -> usize {
        self.ops.len() + self.audit.len()
    }
}

/// Joins key parts with `\0` (ids never contain it; validated at intake).
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(matches!(Error::io("redb", &full), Error::Full { .. }));
        let quota = std::io::Error::from(std::io::ErrorKind::QuotaExceeded);
        assert!(matches!(Error::io("redb", &quota), Error::Full { .. }));
        let eio = std::io::Error::from_raw_os_error(5);
        let e = Error::io("redb", &eio);
        assert!(matches!(e, Error::Io { .. }) && e.is_disk());
        assert!(!Error::backend("redb", "bug").is_disk());
    }

    #[test]
    fn rows_are_counted_and_visited_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &Options::default()).expect("store");
        let rows = 2 * EACH_CHUNK + 7;
        let mut batch = Batch::default();
        for i in 0..rows {
            let queue = ["refunds", "cards"][i % 2];
            let row = serde_json::json!({ "queue": queue, "n": i });
            batch.put_raw(
                Table::Tasks,
                format!("t{i:05}"),
                row.to_string().into_bytes(),
            );
        }
        store.commit(batch).expect("commit");
        assert_eq!(store.count_rows(Table::Tasks).expect("count"), rows);
        assert_eq!(store.count_rows(Table::Pending).expect("count"), 0);
        let mut seen = Vec::new();
        store
            .each_chunk(Table::Tasks, EACH_CHUNK, |chunk| {
                for (k, v) in &chunk {
                    seen.push(decode::<serde_json::Value>("task", k, v)?["n"].clone());
                }
                Ok(())
            })
            .expect("each");
        let want: Vec<serde_json::Value> = (0..rows).map(|i| i.into()).collect();
        assert_eq!(seen, want, "every row once, in key order");
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
