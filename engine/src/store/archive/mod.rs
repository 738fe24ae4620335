//! Retention: finished cases move out of the live store into archive files ([`file`]).
//!
//! A cut takes the finished cases older than their status's cutoff, writes them with the
//! audit chain segment since the previous cut to a new archive file, syncs it, and only
//! then removes them from the live store. The live store keeps an anchor (`meta/audit_anchor`:
//! the seq and hash of the last record of the segment), so its own chain verifies from the
//! anchor and the whole history verifies through the archives ([`verify`]).
//!
//! Crash safety: the file is complete and on disk (renamed into place, directory synced)
//! before the anchor moves or anything is deleted; the anchor moves before the first
//! delete; each case goes in one commit, and only if the live store still holds it exactly
//! as archived. A crash therefore leaves every case live, archived, or both, never neither;
//! [`archive`] with the same file finishes the removal, with a new file it archives the
//! remaining cases again (a duplicate, which [`verify`] accepts when the copies agree).
//!
//! What the audit segment holds: every record after the previous anchor, also those of
//! cases that stay live (they stay in the live store too); so the archives together hold
//! the whole chain up to the anchor without gaps.

pub mod file;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    Batch, CaseRecord, CaseStatus, IdempotencyEntry, OutboxEntry, PersonalRecord, Store, Table,
    decode, encode, key,
};
use crate::audit;
pub use file::{ArchivedCase, Header, Line, Manifest};
pub use verify::verify;

/// The key of the live chain's anchor in `Table::Meta`.
pub(crate) const ANCHOR: &[u8] = b"audit_anchor";

/// Cases read per page while selecting.
const PAGE: usize = 1024;

/// Why an archive run or check failed. Each names the file (and line) or the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{} line {line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("the live audit chain is broken, nothing archived: {0}")]
    LiveChain(audit::Problem),
    #[error("{0}")]
    History(String),
    #[error(transparent)]
    Store(#[from] super::Error),
}

/// Which finished cases a cut takes: those whose last change is before their status's
/// cutoff. A status without a cutoff is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cutoffs(pub BTreeMap<&'static str, Timestamp>);

impl Cutoffs {
    /// The same cutoff for every finished status.
    pub fn all_before(before: Timestamp) -> Cutoffs {
        Cutoffs(
            CaseStatus::ALL
                .into_iter()
                .filter(|s| s.is_final())
                .map(|s| (s.as_str(), before))
                .collect(),
        )
    }

    fn takes(&self, case: &CaseRecord) -> bool {
        case.status.is_final()
            && case.pending.is_none()
            && self
                .0
                .get(case.status.as_str())
                .is_some_and(|cut| case.updated_at < *cut)
    }
}

/// What a cut did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archived {
    pub path: PathBuf,
    /// Cases in the file.
    pub cases: u64,
    /// Audit records in the file's segment.
    pub audit_records: u64,
    /// Cases removed from the live store now (fewer than `cases` when some changed since,
    /// or an earlier run already removed them).
    pub removed: u64,
    /// The live anchor after the cut.
    pub anchor: audit::Head,
    /// Whether `path` existed and was finished rather than written.
    pub resumed: bool,
}

impl Store {
    /// This box's id in archive headers: derived from the store's salt, so it names the
    /// store without revealing the salt.
    pub fn box_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"casegraph box");
        h.update(&self.salt[..]);
        hex::encode(&h.finalize()[..8])
    }

    /// Where the live chain starts: the last record of the last cut (genesis before any).
    pub fn audit_anchor(&self) -> Result<audit::Head, super::Error> {
        Ok(match self.backend.get(Table::Meta, ANCHOR)? {
            Some(bytes) => decode("audit anchor", ANCHOR, &bytes)?,
            None => audit::Head::genesis(),
        })
    }
}

/// Archives the cases `cutoffs` takes (at most `max_cases`) into a new file at `output`,
/// then removes them from the live store; `None` (and no file) when no case is taken. With
/// an `output` that is already a complete archive of this box (a run a crash interrupted),
/// writes nothing and finishes the removal of its cases.
pub fn archive(
    store: &Store,
    cutoffs: &Cutoffs,
    output: &Path,
    max_cases: usize,
    now: Timestamp,
) -> Result<Option<Archived>, Error> {
    if output.exists() {
        let header = file::header(output)?;
        if header.box_id != store.box_id() {
            return Err(Error::File {
                path: output.to_path_buf(),
                message: "exists and is an archive of another box; choose a new file".into(),
            });
        }
        return remove(store, output, true).map(Some);
    }
    let taken = select(store, cutoffs, max_cases)?;
    if taken.is_empty() {
        return Ok(None);
    }
    let from = store.audit_anchor()?;
    let live = store.audit_verify()?.map_err(Error::LiveChain)?;
    let to = audit::Head {
        seq: live.records,
        hash: live.head,
    };
    let header = Header {
        format: file::FORMAT.into(),
        box_id: store.box_id(),
        created_at: now,
        from: from.clone(),
        to: to.clone(),
    };
    let mut writer = file::Writer::create(output, &header)?;
    let mut idempotency: Option<HashMap<String, Vec<String>>> = None;
    for case in taken {
        let keys = match &mut idempotency {
            Some(map) => map,
            None => idempotency.insert(idempotency_keys(store)?),
        };
        writer.case(gather(store, case, keys)?)?;
    }
    for (_, bytes) in store.audit_records_after(from.seq) {
        let record: audit::Record = decode("audit record", b"", &bytes)?;
        if record.seq > to.seq {
            break;
        }
        writer.audit(record)?;
    }
    writer.finish()?;
    remove(store, output, false).map(Some)
}

/// The finished cases `cutoffs` takes, oldest pages first, at most `max`.
fn select(store: &Store, cutoffs: &Cutoffs, max: usize) -> Result<Vec<CaseRecord>, Error> {
    let mut taken = Vec::new();
    let mut start: Vec<u8> = Vec::new();
    loop {
        let page = store.backend.range(Table::Cases, &start, None, PAGE)?;
        let full = page.len() == PAGE;
        if let Some((last, _)) = page.last() {
            start = last.clone();
            start.push(0);
        }
        for (k, v) in page {
            let case: CaseRecord = decode("case", &k, &v)?;
            if !cutoffs.takes(&case) {
                continue;
            }
            // A reply not yet delivered keeps its case live until the sender is done.
            if store.backend.get(Table::Notifications, &k)?.is_some() {
                continue;
            }
            taken.push(case);
            if taken.len() >= max {
                return Ok(taken);
            }
        }
        if !full {
            return Ok(taken);
        }
    }
}

/// Everything the live store holds for `case`.
fn gather(
    store: &Store,
    case: CaseRecord,
    idempotency: &mut HashMap<String, Vec<String>>,
) -> Result<ArchivedCase, Error> {
    let id = case.id.clone();
    let personal =
        store.get_json::<PersonalRecord>(Table::Personal, id.as_bytes(), "personal record")?;
    let outbox = store
        .scan_json::<OutboxEntry>(Table::Outbox, format!("{id}:").as_bytes(), "outbox entry")?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    Ok(ArchivedCase {
        idempotency_keys: idempotency.remove(&id).unwrap_or_default(),
        audit: audit_seqs(store, &id)?,
        case,
        personal,
        outbox,
    })
}

/// The seqs of a case's audit records, from the per-case index.
fn audit_seqs(store: &Store, case_id: &str) -> Result<Vec<u64>, Error> {
    let mut prefix = case_id.as_bytes().to_vec();
    prefix.push(0);
    Ok(store
        .scan_keys(Table::AuditByCase, &prefix)?
        .into_iter()
        .filter_map(|k| k[prefix.len()..].try_into().ok().map(u64::from_be_bytes))
        .collect())
}

/// Idempotency keys by the case they point at (one scan of the table).
fn idempotency_keys(store: &Store) -> Result<HashMap<String, Vec<String>>, Error> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (k, entry) in
        store.scan_json::<IdempotencyEntry>(Table::Idempotency, b"", "idempotency key")?
    {
        map.entry(entry.case_id)
            .or_default()
            .push(String::from_utf8_lossy(&k).into_owned());
    }
    Ok(map)
}

/// A case as the live store must still hold it for its removal.
struct Removal {
    case: CaseRecord,
    digest: [u8; 32],
    outbox: Vec<String>,
    idempotency_keys: Vec<String>,
    audit: Vec<u64>,
}

/// Reads the complete archive at `path` back from disk, moves the anchor to its end and
/// removes each of its cases that the live store still holds exactly as archived.
fn remove(store: &Store, path: &Path, resumed: bool) -> Result<Archived, Error> {
    let mut removals = Vec::new();
    let (header, manifest) = file::read(path, |_, line| {
        if let Line::Case(c) = line {
            removals.push(Removal {
                digest: Sha256::digest(encode(&c.case)).into(),
                case: c.case.clone(),
                outbox: c.outbox.iter().map(|e| e.key.clone()).collect(),
                idempotency_keys: c.idempotency_keys.clone(),
                audit: c.audit.clone(),
            });
        }
        Ok(())
    })?;
    if header.box_id != store.box_id() {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: "is an archive of another box".into(),
        });
    }
    let mut anchor = store.audit_anchor()?;
    if header.from.seq > anchor.seq {
        return Err(Error::File {
            path: path.to_path_buf(),
            message: format!(
                "starts after record {}, but the live chain's anchor is record {}: an archive between them is missing",
                header.from.seq, anchor.seq
            ),
        });
    }
    if header.to.seq > anchor.seq {
        // The file holds every record up to `to`: the live chain may start there. Moved
        // before anything is deleted, so the live chain always verifies from its anchor.
        anchor = header.to.clone();
        let mut batch = Batch::new();
        batch.put(Table::Meta, ANCHOR, &anchor);
        store.commit(batch)?;
    }
    let mut removed = 0u64;
    for r in removals {
        if remove_case(store, &r, &anchor)? {
            removed += 1;
        }
    }
    Ok(Archived {
        path: path.to_path_buf(),
        cases: manifest.cases,
        audit_records: manifest.audit_records,
        removed,
        anchor,
        resumed,
    })
}

/// Removes one archived case in one commit, if the live store holds it as archived and all
/// its audit records are at or before the anchor. Returns whether it did.
fn remove_case(store: &Store, r: &Removal, anchor: &audit::Head) -> Result<bool, Error> {
    let id = r.case.id.as_bytes();
    let Some(live) = store.backend.get(Table::Cases, id)? else {
        return Ok(false);
    };
    let digest: [u8; 32] = Sha256::digest(&live).into();
    let seqs = audit_seqs(store, &r.case.id)?;
    if digest != r.digest || seqs.iter().any(|s| *s > anchor.seq || !r.audit.contains(s)) {
        // Changed since it was archived (an erasure, a late record): it stays live, and
        // the archived copy is an older duplicate.
        return Ok(false);
    }
    let mut batch = Batch::new();
    batch
        .delete(Table::Cases, id)
        .delete(Table::Personal, id)
        .delete(Table::Notifications, id)
        .delete_reference(&r.case.id);
    if let Some(customer) = &r.case.customer {
        batch.delete(Table::CustomerCases, key(&[customer, &r.case.id]));
    }
    for k in &r.outbox {
        batch.delete(Table::Outbox, k.as_bytes());
    }
    for k in &r.idempotency_keys {
        let points_here = store
            .get_json::<IdempotencyEntry>(Table::Idempotency, k.as_bytes(), "idempotency key")?
            .is_some_and(|e| e.case_id == r.case.id);
        if points_here {
            batch.delete(Table::Idempotency, k.as_bytes());
        }
    }
    for seq in seqs {
        batch
            .delete(Table::AuditByCase, audit::case_key(&r.case.id, seq))
            .delete(Table::Audit, seq.to_be_bytes());
    }
    store.commit(batch)?;
    Ok(true)
}

/// Rewrites the archive at `path` with `change` applied to each case; `change` returns
/// whether it changed the case. The new file replaces the old one by rename (written and
/// synced first, as every archive), so a crash leaves the old or the new file, whole.
/// Returns the ids of the changed cases; with none, the file is left as it was.
pub fn rewrite_cases(
    path: &Path,
    mut change: impl FnMut(&mut ArchivedCase) -> bool,
) -> Result<Vec<String>, Error> {
    // Checked whole before anything is written from it.
    let (header, _) = file::read(path, |_, _| Ok(()))?;
    let fresh = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".rewriting");
        path.with_file_name(name)
    };
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::File {
                path: fresh,
                message: e.to_string(),
            });
        }
        _ => {}
    }
    let mut writer = file::Writer::create(&fresh, &header)?;
    let mut changed = Vec::new();
    file::read(path, |_, line| match line {
        Line::Case(c) => {
            let mut c = (**c).clone();
            if change(&mut c) {
                changed.push(c.case.id.clone());
            }
            writer.case(c)
        }
        Line::Audit(r) => writer.audit(r.clone()),
        _ => Ok(()),
    })?;
    if changed.is_empty() {
        drop(writer);
        let _ = std::fs::remove_file(file::partial_path(&fresh));
        return Ok(changed);
    }
    writer.finish()?;
    let err = |e: std::io::Error| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::rename(&fresh, path).map_err(err)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(changed)
}
