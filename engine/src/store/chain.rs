//! The audit chain as stored: records read in chain order a page at a time, the full
//! verification (`casegraph audit verify`) and the incremental one behind
//! `GET /v1/cases/{id}/audit`.
//!
//! Incremental verification keeps a verified-prefix mark (`meta/audit_verified`: the seq
//! and hash of the last record a verification reached) and checks only the records after
//! it, so a request costs what was appended since the last one, not the box's history.
//! Invariants: the mark only ever names a record that a verification found chained to the
//! genesis (through earlier marks); before trusting it, the marked record must still be
//! stored with the marked hash and match its own hash. A record changed after the mark is
//! caught by the next incremental verification; one changed at or before it is caught by a
//! full verification, which ignores the mark (and by the mark check, for the marked
//! record itself). The mark lives in the same store as the chain: it saves work, it is not
//! a second witness; the head hash `audit verify` prints is.

use super::{Backend, Batch, Error, Store, Table, decode};
use crate::audit;

/// The key of the verified-prefix mark in `Table::Meta`.
const MARK: &[u8] = b"audit_verified";

/// Audit records in chain order, read a page at a time. A read error ends the iteration
/// and is kept in [`AuditRecords::error`].
#[derive(Debug)]
pub struct AuditRecords<'a> {
    backend: &'a dyn Backend,
    next: u64,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
    pub error: Option<Error>,
}

const AUDIT_PAGE: usize = 2048;

impl Iterator for AuditRecords<'_> {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.page.next() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self
                .backend
                .range(Table::Audit, &self.next.to_be_bytes(), None, AUDIT_PAGE)
            {
                Ok(page) => {
                    if page.len() < AUDIT_PAGE {
                        self.done = true;
                    }
                    if let Some((k, _)) = page.last() {
                        let last = k
                            .as_slice()
                            .try_into()
                            .map(u64::from_be_bytes)
                            .unwrap_or(u64::MAX);
                        self.next = last.saturating_add(1);
                        if last == u64::MAX {
                            self.done = true;
                        }
                    }
                    self.page = page.into_iter();
                }
                Err(e) => {
                    self.error = Some(e);
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl Store {
    /// Every audit record, stored bytes, in key order.
    pub fn audit_records(&self) -> AuditRecords<'_> {
        // From key 0, not 1: a record planted before the first one is reported too.
        AuditRecords {
            backend: self.backend.as_ref(),
            next: 0,
            page: Vec::new().into_iter(),
            done: false,
            error: None,
        }
    }

    /// The audit records after `seq`, stored bytes, in key order.
    pub fn audit_records_after(&self, seq: u64) -> AuditRecords<'_> {
        AuditRecords {
            backend: self.backend.as_ref(),
            next: seq.saturating_add(1),
            page: Vec::new().into_iter(),
            done: seq == u64::MAX,
            error: None,
        }
    }

    /// Checks the live audit chain: every record after the anchor (the genesis before any
    /// archive cut, see [`super::archive`]) chained from it, and each record kept from
    /// before it (cases still live at the cut) intact on its own; the archives hold the
    /// links before the anchor. The outer error is a storage failure; the inner one names
    /// the first altered, missing or reordered record.
    pub fn audit_verify(&self) -> Result<Result<audit::Verified, audit::Problem>, Error> {
        let anchor = self.audit_anchor()?;
        if anchor.seq > 0 {
            let mut early = self.audit_records();
            for (key, bytes) in &mut early {
                let position = key
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                if position > anchor.seq {
                    break;
                }
                if let Err(problem) = intact(position, &bytes) {
                    return Ok(Err(problem));
                }
            }
            if let Some(e) = early.error {
                return Err(e);
            }
        }
        let mut records = if anchor.seq > 0 {
            self.audit_records_after(anchor.seq)
        } else {
            // From key 0, not 1: a record planted before the first one is reported too.
            self.audit_records()
        };
        let verdict = audit::verify_from(anchor, &mut records);
        match records.error {
            Some(e) => Err(e),
            None => Ok(verdict),
        }
    }

    /// Verifies the records appended since the last incremental verification and moves
    /// the mark to the head (see the module documentation). The outer error is a storage
    /// failure; the inner one names the first problem found.
    pub fn audit_verify_incremental(
        &self,
    ) -> Result<Result<audit::Verified, audit::Problem>, Error> {
        let _one = self.verify_lock.lock().unwrap_or_else(|e| e.into_inner());
        // The anchor of the last archive cut is a verified start too: the records before
        // it may be gone from the live store.
        let anchor = self.audit_anchor()?;
        let start = match self.backend.get(Table::Meta, MARK)? {
            Some(bytes) => {
                let mark: audit::Head = decode("audit mark", MARK, &bytes)?;
                if mark.seq <= anchor.seq {
                    anchor
                } else if !self.still_marked(&mark)? {
                    return Ok(Err(audit::Problem::Unverified { seq: mark.seq }));
                } else {
                    mark
                }
            }
            None => anchor,
        };
        let mut records = self.audit_records_after(start.seq);
        let verdict = audit::verify_from(start.clone(), &mut records);
        if let Some(e) = records.error {
            return Err(e);
        }
        if let Ok(v) = &verdict
            && v.records > start.seq
        {
            let mark = audit::Head {
                seq: v.records,
                hash: v.head.clone(),
            };
            let mut batch = Batch::new();
            batch.put(Table::Meta, MARK, &mark);
            self.commit(batch)?;
        }
        Ok(verdict)
    }

    /// Whether the marked record is still stored, with the marked hash, and intact.
    fn still_marked(&self, mark: &audit::Head) -> Result<bool, Error> {
        let Some(bytes) = self.backend.get(Table::Audit, &mark.seq.to_be_bytes())? else {
            return Ok(false);
        };
        let Ok(record) = serde_json::from_slice::<audit::Record>(&bytes) else {
            return Ok(false);
        };
        let canonical = serde_json::to_vec(&record).unwrap_or_default();
        Ok(record.seq == mark.seq
            && record.hash == mark.hash
            && record.computed_hash() == record.hash
            && canonical == bytes)
    }
}

/// A record kept from before the anchor: readable, at its own position, matching its hash.
fn intact(position: u64, bytes: &[u8]) -> Result<(), audit::Problem> {
    let record: audit::Record =
        serde_json::from_slice(bytes).map_err(|e| audit::Problem::Unreadable {
            position,
            message: e.to_string(),
        })?;
    if record.seq != position {
        return Err(audit::Problem::Reordered {
            seq: record.seq,
            position,
        });
    }
    let canonical = serde_json::to_vec(&record).unwrap_or_default();
    if record.computed_hash() != record.hash || canonical != bytes {
        return Err(audit::Problem::Altered { seq: record.seq });
    }
    Ok(())
}
