//! Applying what branches publish to the hub's store, idempotently, and checking each
//! branch's audit chain on the way (ADR 0019):
//!
//! - an audit record at `applied + 1` must chain to the record before (`prev`) and hash
//!   to its own `hash`; one further ahead leaves a gap, flagged with the missing range
//!   (the record is kept and the head moves on); one already held must be the record
//!   held, else the branch's chain was rewritten;
//! - a case summary replaces the held one only when it follows a later audit record;
//! - a health snapshot replaces an older one, and its chain head must be the record the
//!   hub holds at that seq;
//! - a rollout report is kept per rollout.
//!
//! Whatever is applied twice changes nothing, so a redelivery after a crash (the hub acks
//! only after the commit) or a re-publish beyond JetStream's duplicate window is harmless.
//! No I/O here beyond the store's transaction.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use jiff::Timestamp;
use serde::de::DeserializeOwned;

use super::store::{Batch, BranchState, Error};
use crate::fleet::wire::{self, AuditRecord, CaseSummary, Health, Kind, RolloutReport};
use casegraph_engine::audit;

/// Largest message the hub reads; NATS's own default limit is 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Longest name (status, queue, workflow, case id, rollout id) the hub keeps.
pub const MAX_NAME: usize = 128;
/// Most entries of a map in a message (workflows, queues, statuses, signals).
pub const MAX_ENTRIES: usize = 64;
/// Most distinct case statuses counted per branch.
pub const MAX_STATUSES: usize = 32;

/// One message as it came off the fleet stream.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its sequence in `CG_FLEET`.
    pub seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// The `at` of every audit record applied for the first time (the ingest lag is
    /// the hub's clock minus these).
    pub records: Vec<Timestamp>,
    /// Messages whose subject names no branch (nothing to flag them on).
    pub unattributed: u64,
}

/// Applies `messages` in order within one transaction and moves the cursor past them
/// (those at or before the cursor were applied already and are skipped); `now` is the
/// hub's clock.
pub fn apply(
    batch: &mut Batch<'_>,
    messages: &[Incoming],
    now: Timestamp,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let cursor = batch.cursor()?;
    if let Some(last) = messages.iter().map(|m| m.seq).max().filter(|l| *l > cursor) {
        batch.set_cursor(last)?;
    }
    let mut states: HashMap<String, BranchState> = HashMap::new();
    for m in messages.iter().filter(|m| m.seq > cursor) {
        let Some((branch, kind)) = wire::parse_branch_subject(&m.subject) else {
            tracing::warn!(subject = %m.subject.escape_debug(), "fleet message on a subject of no branch; skipped");
            applied.unattributed += 1;
            continue;
        };
        let state = match states.entry(branch.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(batch.branch(branch)?),
        };
        let rejected = if m.payload.len() > MAX_MESSAGE_BYTES {
            Some(format!(
                "{} message of {} bytes is larger than the hub reads ({MAX_MESSAGE_BYTES})",
                a(kind),
                m.payload.len()
            ))
        } else {
            let p = &m.payload;
            let s = &mut *state;
            match kind {
                Kind::Audit => match read::<AuditRecord>(branch, kind, p) {
                    Ok(r) => record(batch, branch, s, &r.record, now, &mut applied)?,
                    Err(e) => Some(e),
                },
                Kind::Case => match read::<CaseSummary>(branch, kind, p) {
                    Ok(c) => case(batch, s, &c, now)?,
                    Err(e) => Some(e),
                },
                Kind::Health => match read::<Health>(branch, kind, p) {
                    Ok(h) => health(batch, s, &h, now)?,
                    Err(e) => Some(e),
                },
                Kind::Rollout => match read::<RolloutReport>(branch, kind, p) {
                    Ok(r) => rollout(batch, s, &r, now)?,
                    Err(e) => Some(e),
                },
            }
        };
        if let Some(reason) = rejected {
            state.reject(format!("branch {branch}: {reason}"));
        }
    }
    // Each branch's state once per batch, not once per message.
    for (branch, state) in &states {
        batch.put_branch(branch, state)?;
    }
    Ok(applied)
}

/// What a handler answers: `Ok(None)` applied (or already held), `Ok(Some(reason))` the
/// message was not usable, `Err` the store failed (the batch is not committed).
type Handled = Result<Option<String>, Error>;

/// Parses a message that must name `branch` (its subject's) and stay within the limits.
fn read<T: DeserializeOwned + Message>(
    branch: &str,
    kind: Kind,
    payload: &[u8],
) -> Result<T, String> {
    let m: T = serde_json::from_slice(payload)
        .map_err(|e| format!("{} message is not readable: {e}", a(kind)))?;
    if m.branch() != branch {
        return Err(format!(
            "{} message on branch {branch}'s subject names branch `{}`",
            a(kind),
            m.branch()
                .chars()
                .take(MAX_NAME)
                .collect::<String>()
                .escape_debug()
        ));
    }
    m.check().map_err(|e| format!("{} message {e}", a(kind)))?;
    Ok(m)
}

/// "an audit", "a case", … for messages about a message.
fn a(kind: Kind) -> &'static str {
    match kind {
        Kind::Audit => "an audit",
        Kind::Case => "a case",
        Kind::Health => "a health",
        Kind::Rollout => "a rollout",
    }
}

/// What the hub checks of every message beyond its shape.
trait Message {
    fn branch(&self) -> &str;
    /// Names and maps within [`MAX_NAME`] and [`MAX_ENTRIES`].
    fn check(&self) -> Result<(), String>;
}

fn name(field: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_NAME {
        return Err(format!(
            "has a {field} of {} bytes (at most {MAX_NAME})",
            v.len()
        ));
    }
    Ok(())
}

fn map<V>(field: &str, m: &std::collections::BTreeMap<String, V>) -> Result<(), String> {
    if m.len() > MAX_ENTRIES {
        return Err(format!("has {} {field} (at most {MAX_ENTRIES})", m.len()));
    }
    m.keys().try_for_each(|k| name(field, k))
}

impl Message for AuditRecord {
    fn branch(&self) -> &str {
        &self.branch
    }
    fn check(&self) -> Result<(), String> {
        name("case id", &self.record.case_id)?;
        name("hash", &self.record.hash)?;
        name("prev", &self.record.prev)?;
        if self.record.seq == 0 {
            return Err("has seq 0 (records count from 1)".into());
        }
        Ok(())
    }
}

impl Message for CaseSummary {
    fn branch(&self) -> &str {
        &self.branch
    }
    fn check(&self) -> Result<(), String> {
        name("case id", &self.case_id)?;
        name("status", &self.status)?;
        for v in [&self.workflow, &self.route, &self.outcome]
            .into_iter()
            .flatten()
        {
            name("name", v)?;
        }
        map("signals", &self.signals)
    }
}

impl Message for Health {
    fn branch(&self) -> &str {
        &self.branch
    }
    fn check(&self) -> Result<(), String> {
        name("engine version", &self.engine_version)?;
        for v in [&self.model_version, &self.chain_problem]
            .into_iter()
            .flatten()
        {
            name("version or problem", v)?;
        }
        if let Some(h) = &self.audit_head {
            name("head hash", &h.hash)?;
        }
        map("workflows", &self.workflows)?;
        map("queues", &self.open_tasks)?;
        map("statuses", &self.cases)
    }
}

impl Message for RolloutReport {
    fn branch(&self) -> &str {
        &self.branch
    }
    fn check(&self) -> Result<(), String> {
        name("rollout id", &self.rollout_id)?;
        if let wire::RolloutResult::Refused { errors } = &self.result
            && errors.len() > MAX_ENTRIES
        {
            return Err(format!(
                "has {} errors (at most {MAX_ENTRIES})",
                errors.len()
            ));
        }
        Ok(())
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// An audit record: held once per seq, its hash and link checked.
fn record(
    batch: &mut Batch<'_>,
    branch: &str,
    state: &mut BranchState,
    r: &audit::Record,
    now: Timestamp,
    applied: &mut Applied,
) -> Handled {
    let seq = r.seq;
    if let Some(held) = batch.record_hash(branch, seq)? {
        if held != r.hash {
            state.flag(format!(
                "record {seq} arrived again as {} but the hub holds {}: the branch's chain was rewritten",
                short(&r.hash),
                short(&held)
            ));
        }
        return Ok(None);
    }
    let computed = r.computed_hash();
    if computed != r.hash {
        state.flag(format!(
            "record {seq} is altered: its content hashes to {} but it carries {}",
            short(&computed),
            short(&r.hash)
        ));
    }
    if seq == state.applied + 1 {
        let before = if state.applied == 0 {
            audit::GENESIS
        } else {
            state.head_hash.as_str()
        };
        if r.prev != before {
            state.flag(broken(seq, &r.prev, before));
        }
    } else if seq > state.applied + 1 {
        let (from, to, last) = (state.applied + 1, seq - 1, state.applied);
        state.flag(if from == to {
            format!("record {from} is missing: record {seq} came after record {last}")
        } else {
            format!("records {from} to {to} are missing: record {seq} came after record {last}")
        });
    } else if let Some(prev) = batch.record_hash(branch, seq - 1)?
        && prev != r.prev
    {
        // A record of a gap that arrived late: it must still chain to the one before.
        state.flag(broken(seq, &r.prev, &prev));
    }
    batch.put_record_hash(branch, seq, &r.hash)?;
    state.records += 1;
    if seq > state.applied {
        state.applied = seq;
        state.head_hash = r.hash.clone();
    }
    state.seen(r.at, now);
    applied.records.push(r.at);
    Ok(None)
}

fn broken(seq: u64, prev: &str, before: &str) -> String {
    format!(
        "record {seq} does not follow record {}: its prev is {} but that record is {}",
        seq - 1,
        short(prev),
        short(before)
    )
}

/// A case summary: the one following the latest audit record is kept, and the branch's
/// count of cases by status follows it.
fn case(
    batch: &mut Batch<'_>,
    state: &mut BranchState,
    s: &CaseSummary,
    now: Timestamp,
) -> Handled {
    let held = batch.case(&s.branch, &s.case_id)?;
    if held.as_ref().is_some_and(|h| h.audit_seq >= s.audit_seq) {
        return Ok(None);
    }
    if !state.cases.contains_key(&s.status) && state.cases.len() >= MAX_STATUSES {
        return Ok(Some(format!(
            "case {} has a status `{}` beyond the {MAX_STATUSES} statuses the hub counts",
            s.case_id.escape_debug(),
            s.status.escape_debug()
        )));
    }
    if let Some(h) = &held
        && let Some(n) = state.cases.get_mut(&h.status)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            state.cases.remove(&h.status);
        }
    }
    *state.cases.entry(s.status.clone()).or_default() += 1;
    batch.put_case(s)?;
    state.seen(s.updated_at, now);
    Ok(None)
}

/// A health snapshot: the latest is kept; its chain head is checked against the record
/// the hub holds at that seq, whatever the snapshot's age.
fn health(batch: &mut Batch<'_>, state: &mut BranchState, h: &Health, now: Timestamp) -> Handled {
    if let Some(head) = &h.audit_head
        && let Some(held) = batch.record_hash(&h.branch, head.seq)?
        && held != head.hash
    {
        state.flag(format!(
            "the box reports record {} as {} but the hub holds {}: the chain was rewritten after it was relayed",
            head.seq,
            short(&head.hash),
            short(&held)
        ));
    }
    if batch.health(&h.branch)?.is_some_and(|held| held.at >= h.at) {
        return Ok(None);
    }
    batch.put_health(h)?;
    state.seen(h.at, now);
    Ok(None)
}

/// A rollout report: kept per rollout, a later report of the same rollout replaces it.
fn rollout(
    batch: &mut Batch<'_>,
    state: &mut BranchState,
    r: &RolloutReport,
    now: Timestamp,
) -> Handled {
    if batch
        .rollout(&r.branch, &r.rollout_id)?
        .is_some_and(|held| held.at >= r.at)
    {
        return Ok(None);
    }
    batch.put_rollout(r)?;
    state.last_rollout = Some(r.rollout_id.clone());
    state.seen(r.at, now);
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;
    use crate::fleet::hub::store::Store;
    use crate::fleet::wire::ChainHead;
    use casegraph_engine::audit::{Entry, Head, Kind as AuditKind};

    fn chain(n: u64) -> Vec<audit::Record> {
        let mut head = Head::genesis();
        (1..=n)
            .map(|i| {
                let at = Timestamp::from_second(1_700_000_000 + i as i64).unwrap();
                head.append(Entry::new(
                    format!("c-{i}"),
                    AuditKind::Accepted,
                    at,
                    serde_json::json!({ "i": i }),
                ))
            })
            .collect()
    }

    fn audit(branch: &str, r: &audit::Record) -> Incoming {
        Incoming {
            seq: next_seq(),
            subject: wire::branch_subject(branch, Kind::Audit),
            payload: serde_json::to_vec(&AuditRecord {
                branch: branch.into(),
                record: r.clone(),
            })
            .unwrap(),
        }
    }

    fn health(branch: &str, head: &audit::Record) -> Incoming {
        let h = Health {
            branch: branch.into(),
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            engine_version: "0.1.0".into(),
            model_version: None,
            routing_version: None,
            workflows: BTreeMap::new(),
            queue_depth: 0,
            open_tasks: BTreeMap::new(),
            cases: BTreeMap::new(),
            rss_bytes: None,
            audit_head: Some(ChainHead {
                seq: head.seq,
                hash: head.hash.clone(),
            }),
            backlog: 0,
            chain_problem: None,
        };
        Incoming {
            seq: next_seq(),
            subject: wire::branch_subject(branch, Kind::Health),
            payload: serde_json::to_vec(&h).unwrap(),
        }
    }

    /// Stream sequences as JetStream gives them: increasing.
    fn next_seq() -> u64 {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Every message applied: as if each came again under a new stream sequence.
    fn again(messages: &[Incoming]) -> Vec<Incoming> {
        messages
            .iter()
            .map(|m| Incoming {
                seq: next_seq(),
                ..m.clone()
            })
            .collect()
    }

    fn run(store: &Store, messages: &[Incoming]) -> Applied {
        store
            .write(|b| apply(b, messages, Timestamp::now()))
            .unwrap()
    }

    #[test]
    fn records_apply_once_and_a_clean_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records = chain(5);
        let msgs: Vec<Incoming> = records.iter().map(|r| audit("b1", r)).collect();
        assert_eq!(run(&store, &msgs).records.len(), 5);
        assert_eq!(run(&store, &msgs).records.len(), 0, "read again");
        assert_eq!(
            run(&store, &again(&msgs)).records.len(),
            0,
            "published again"
        );
        let s = store.branch("b1").unwrap().unwrap();
        assert_eq!((s.applied, s.records), (5, 5));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn an_altered_record_a_gap_and_a_rewritten_head_are_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut records = chain(8);
        records[1].body = serde_json::json!({ "i": 999 });
        let msgs: Vec<Incoming> = [0, 1, 2, 5, 6]
            .iter()
            .map(|&i| audit("b1", &records[i]))
            .collect();
        run(&store, &msgs);
        let s = store.branch("b1").unwrap().unwrap();
        assert!(
            s.problems[0].starts_with("record 2 is altered"),
            "{:?}",
            s.problems
        );
        assert_eq!(
            s.problems[1],
            "records 4 to 5 are missing: record 6 came after record 3"
        );
        assert_eq!(s.applied, 7);

        let mut other = records[6].clone();
        other.hash = "f".repeat(64);
        run(&store, &[health("b1", &other)]);
        let s = store.branch("b1").unwrap().unwrap();
        assert!(
            s.problems[2].starts_with("the box reports record 7 as ffffffffffff"),
            "{:?}",
            s.problems
        );
    }

    #[test]
    fn a_message_naming_another_branch_is_rejected_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = &chain(1)[0];
        let mut m = audit("b2", r);
        m.subject = wire::branch_subject("b1", Kind::Audit);
        run(&store, &[m]);
        let s = store.branch("b1").unwrap().unwrap();
        assert_eq!((s.records, s.rejected), (0, 1));
        assert!(s.last_rejected.unwrap().contains("names branch `b2`"),);
    }
}
