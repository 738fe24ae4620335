//! The whole history: archives and the live chain checked as one chain.
//!
//! Each archive is checked whole ([`super::file::read`]: its lines, its manifest, its
//! segment chained from `from` to `to`). Across files, the segments must follow on from the
//! genesis without a gap up to the live anchor, and where they overlap (a cut a crash
//! interrupted and ran again) agree at every segment boundary; live records kept from before
//! the anchor (cases still open at the cut) must equal their archived copies; then the live
//! chain verifies from the anchor. Memory is bounded by the number of files, not records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Error, Line, file};
use crate::audit;
use crate::store::Store;

/// Checks the whole history of `store`'s audit chain through the archive `files`; the result
/// counts every record checked. An archive of another box, a gap, a disagreement or a broken
/// live chain is an error that names the file (and line) or the record.
pub fn verify(store: &Store, files: &[PathBuf]) -> Result<audit::Verified, Error> {
    let anchor = store.audit_anchor()?;
    let box_id = store.box_id();
    // Live records at or before the anchor: each must be intact and equal its archived copy.
    let mut early: BTreeMap<u64, String> = BTreeMap::new();
    for (k, bytes) in store.audit_records() {
        let position = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
        if position > anchor.seq {
            break;
        }
        let record: audit::Record = serde_json::from_slice(&bytes).map_err(|e| {
            live(audit::Problem::Unreadable {
                position,
                message: e.to_string(),
            })
        })?;
        if record.seq != position || record.computed_hash() != record.hash {
            return Err(live(audit::Problem::Altered { seq: position }));
        }
        early.insert(record.seq, record.hash);
    }
    // Segment boundaries: every file's ends and the anchor, the points where files and the
    // live chain must agree.
    let mut headers = Vec::new();
    for path in files {
        headers.push((path.clone(), file::header(path)?));
    }
    let mut bounds: BTreeSet<u64> = headers
        .iter()
        .flat_map(|(_, h)| [h.from.seq, h.to.seq])
        .collect();
    bounds.insert(anchor.seq);
    // seq → (hash, where it was read), for the boundaries and the early live records.
    let mut seen: BTreeMap<u64, (String, String)> = BTreeMap::new();
    seen.insert(0, (audit::GENESIS.into(), "the genesis".into()));
    let mut segments = Vec::new();
    let mut checked = 0u64;
    for (path, _) in &headers {
        let mut found: Vec<(u64, String, u64)> = Vec::new();
        let (header, manifest) = file::read(path, |n, line| {
            if let Line::Audit(r) = line {
                if let Some(hash) = early.get(&r.seq)
                    && *hash != r.hash
                {
                    return Err(Error::Line {
                        path: path.clone(),
                        line: n,
                        message: format!(
                            "audit record {} differs from the one the live store keeps",
                            r.seq
                        ),
                    });
                }
                if bounds.contains(&r.seq) {
                    found.push((r.seq, r.hash.clone(), n));
                }
            }
            Ok(())
        })?;
        if header.box_id != box_id {
            return Err(Error::File {
                path: path.clone(),
                message: format!(
                    "is an archive of box {}, this store is box {box_id}",
                    header.box_id
                ),
            });
        }
        checked += manifest.audit_records;
        let mut points = vec![(header.from.seq, header.from.hash.clone(), 1)];
        points.extend(found);
        for (seq, hash, line) in points {
            let at = format!("{} line {line}", path.display());
            if let Some((other, other_at)) = seen.get(&seq) {
                if *other != hash {
                    return Err(Error::History(format!(
                        "audit record {seq} differs between {other_at} and {at}"
                    )));
                }
            } else {
                seen.insert(seq, (hash, at));
            }
        }
        segments.push((header.from.seq, header.to.seq, path.clone()));
    }
    segments.sort();
    let mut reached = 0u64;
    for (from, to, path) in &segments {
        if *from > reached {
            return Err(gap(reached, *from, path));
        }
        reached = reached.max(*to);
    }
    if reached < anchor.seq {
        return Err(Error::History(format!(
            "the archives given end at audit record {reached}, the live chain starts after record {}: records {}..={} are in none of them (an archive is missing)",
            anchor.seq,
            reached + 1,
            anchor.seq
        )));
    }
    if let Some((hash, at)) = seen.get(&anchor.seq)
        && *hash != anchor.hash
    {
        return Err(Error::History(format!(
            "audit record {} in {at} is not the live chain's anchor",
            anchor.seq
        )));
    }
    let live_part = store
        .audit_verify()?
        .map_err(|p| Error::History(format!("the live audit chain is broken: {p}")))?;
    Ok(audit::Verified {
        records: live_part.records,
        head: live_part.head,
        checked: checked + live_part.checked,
    })
}

fn live(problem: audit::Problem) -> Error {
    Error::History(format!("the live audit chain is broken: {problem}"))
}

fn gap(reached: u64, from: u64, path: &Path) -> Error {
    Error::History(format!(
        "audit records {}..={from} are in none of the archives given ({} starts after record {from})",
        reached + 1,
        path.display()
    ))
}
