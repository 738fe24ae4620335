//! The audit log: append-only, hash-chained records of everything that happened to a case.
//!
//! Each [`Record`] commits to the previous record's hash, so changing, removing or
//! reordering any record breaks the chain from that point; [`verify`] names the first such
//! record. Records carry pseudonymous ids, digests and decisions, never raw personal data:
//! request text and customer fields live in the store's erasable `personal` table, so an
//! erasure leaves the chain intact. This module does no I/O; the store appends records
//! (in commit order) and hands them back for verification and export.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// The request was accepted and is durable (payload digest, channel, customer pseudonym).
    Accepted,
    /// The intent model's answer (model version, top scores, out-of-scope flag).
    Classified,
    /// The routing policy's answer (policy version, the rule that fired, the route).
    Routed,
    /// One node execution (node, kind, script digest, input/output digests, edge).
    Step,
    /// A reviewer completed a human task (who, decision, comment digest).
    TaskCompleted,
    /// A connector call and its answer (idempotency key, attempt, result digest).
    Call,
    /// The case ended (status, outcome).
    Outcome,
    /// Personal data of a customer was erased (pseudonym, cases).
    Erased,
    /// The case was resumed after a restart.
    Recovered,
    /// A message of the conversation: the customer's (`in`: channel, language, text digest,
    /// how it arrived) or a question the case sent (`out`).
    Message,
    /// A customer's consent for a purpose changed (pseudonym, purpose, granted, source).
    /// Recorded under `customer:<pseudonym>`.
    ConsentChanged,
    /// A proactive case contacted the customer (pseudonym, purpose, reply digest).
    Contacted,
    /// A schedule handled its occurrences (which ran, which were skipped, cases started).
    /// Recorded under `schedule:<workflow>`.
    Scheduled,
}

/// An audit record before it has its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub case_id: String,
    pub kind: Kind,
    pub at: Timestamp,
    /// Kind-specific facts: ids, digests, decisions; never raw personal data.
    pub body: Value,
}

impl Entry {
    pub fn new(case_id: impl Into<String>, kind: Kind, at: Timestamp, body: Value) -> Entry {
        Entry {
            case_id: case_id.into(),
            kind,
            at,
            body,
        }
    }
}

/// A chained audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the box's chain, from 1, without gaps.
    pub seq: u64,
    pub case_id: String,
    pub kind: Kind,
    pub at: Timestamp,
    pub body: Value,
    /// The previous record's hash (64 zeros for the first record).
    pub prev: String,
    /// sha256 over `prev` and this record's content.
    pub hash: String,
}

/// The content a record's hash covers (everything but the hash itself).
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    case_id: &'a str,
    kind: Kind,
    at: Timestamp,
    body: &'a Value,
    prev: &'a str,
}

fn hash_of(seq: u64, case_id: &str, kind: Kind, at: Timestamp, body: &Value, prev: &str) -> String {
    let content = Hashed {
        seq,
        case_id,
        kind,
        at,
        body,
        prev,
    };
    let bytes = serde_json::to_vec(&content).expect("audit records serialize");
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(&bytes);
    hex::encode(h.finalize())
}

impl Record {
    /// The hash this record's content gives.
    pub fn computed_hash(&self) -> String {
        hash_of(
            self.seq,
            &self.case_id,
            self.kind,
            self.at,
            &self.body,
            &self.prev,
        )
    }
}

/// An entry written as JSON ahead of its place in the chain, where the entry is made: the
/// chain's single writer (the store's commit thread) then only frames it with `seq`, `prev`
/// and `hash` ([`Head::append_written`]) instead of serializing the body twice (once for the
/// hash, once to store it). The bytes it gives are exactly `serde_json::to_vec` of the
/// [`Record`] that [`Head::append`] makes of the same entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    case_id: String,
    /// `{"case_id":…,"kind":…,"at":…,"body":…}`: the fields of [`Hashed`] between `seq` and
    /// `prev`, in its order.
    json: Vec<u8>,
}

impl Written {
    pub fn new(entry: &Entry) -> Written {
        Written {
            case_id: entry.case_id.clone(),
            json: serde_json::to_vec(entry).expect("audit entries serialize"),
        }
    }

    pub fn case_id(&self) -> &str {
        &self.case_id
    }
}

/// The end of the chain: the last record's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Head {
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    /// Chains `entry` after the head and moves the head to it.
    pub fn append(&mut self, entry: Entry) -> Record {
        let seq = self.seq + 1;
        let hash = hash_of(
            seq,
            &entry.case_id,
            entry.kind,
            entry.at,
            &entry.body,
            &self.hash,
        );
        let record = Record {
            seq,
            case_id: entry.case_id,
            kind: entry.kind,
            at: entry.at,
            body: entry.body,
            prev: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = seq;
        record
    }

    /// [`Head::append`] of an entry already written: moves the head to it and returns its
    /// seq and the record's stored bytes. The hash is taken over the same bytes as
    /// [`Record::computed_hash`] takes (the record without `hash`), framed here rather than
    /// serialized again.
    pub fn append_written(&mut self, entry: &Written) -> (u64, Vec<u8>) {
        let seq = self.seq + 1;
        // `{"case_id":…}` without its braces goes between `"seq":n,` and `,"prev":…`.
        let inner = &entry.json[1..entry.json.len() - 1];
        let mut bytes = Vec::with_capacity(inner.len() + 180);
        bytes.extend_from_slice(b"{\"seq\":");
        bytes.extend_from_slice(seq.to_string().as_bytes());
        bytes.push(b',');
        bytes.extend_from_slice(inner);
        bytes.extend_from_slice(b",\"prev\":");
        serde_json::to_writer(&mut bytes, &self.hash).expect("a string serializes");
        bytes.push(b'}');
        let mut h = Sha256::new();
        h.update(self.hash.as_bytes());
        h.update(&bytes);
        let hash = hex::encode(h.finalize());
        bytes.pop();
        bytes.extend_from_slice(b",\"hash\":\"");
        bytes.extend_from_slice(hash.as_bytes());
        bytes.extend_from_slice(b"\"}");
        self.seq = seq;
        self.hash = hash;
        (seq, bytes)
    }
}

/// The key of a record in the per-case index.
pub fn case_key(case_id: &str, seq: u64) -> Vec<u8> {
    let mut k = case_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What is wrong with the chain, at the first record where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("record {seq} is altered: its content does not match its hash")]
    Altered { seq: u64 },
    #[error("record {expected} is missing (the next record found is {found})")]
    Missing { expected: u64, found: u64 },
    #[error("record {seq} is out of order: it is stored at position {position}")]
    Reordered { seq: u64, position: u64 },
    #[error("record {seq} does not follow record {prev_seq}: its `prev` is not that record's hash")]
    Broken { seq: u64, prev_seq: u64 },
    #[error("record at position {position} is not readable: {message}")]
    Unreadable { position: u64, message: String },
    #[error("record {seq}, verified earlier, is missing or no longer the record verified")]
    Unverified { seq: u64 },
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Records in the verified chain (the head's seq).
    pub records: u64,
    pub head: String,
    /// Records checked by this verification: all of them, or those after the mark an
    /// incremental verification started from.
    pub checked: u64,
}

/// Walks stored records (`(key, bytes)` in key order; the key is the big-endian seq) and
/// checks every link. Returns the first problem.
pub fn verify<I>(stored: I) -> Result<Verified, Problem>
where
    I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
{
    verify_from(Head::genesis(), stored)
}

/// [`verify`] of the records after `start`, a head verified before: the first record
/// must be `start.seq + 1` and chain to `start.hash`. What lies at or before `start` is
/// trusted, not checked (a full [`verify`] checks it).
pub fn verify_from<I>(start: Head, stored: I) -> Result<Verified, Problem>
where
    I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
{
    let from = start.seq;
    let mut prev = start;
    for (key, bytes) in stored {
        let expected = prev.seq + 1;
        let position = key
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| Problem::Unreadable {
            position,
            message: e.to_string(),
        })?;
        if position != record.seq {
            return Err(Problem::Reordered {
                seq: record.seq,
                position,
            });
        }
        if record.seq > expected {
            return Err(Problem::Missing {
                expected,
                found: record.seq,
            });
        }
        if record.seq < expected {
            return Err(Problem::Reordered {
                seq: record.seq,
                position: expected,
            });
        }
        // The hash covers the parsed record; the byte comparison also catches edits that
        // parse to the same values (`z` for `Z` in a timestamp, an escaped letter).
        let canonical = serde_json::to_vec(&record).unwrap_or_default();
        if record.computed_hash() != record.hash || canonical != bytes {
            return Err(Problem::Altered { seq: record.seq });
        }
        if record.prev != prev.hash {
            return Err(Problem::Broken {
                seq: record.seq,
                prev_seq: prev.seq,
            });
        }
        prev = Head {
            seq: record.seq,
            hash: record.hash,
        };
    }
    Ok(Verified {
        records: prev.seq,
        head: prev.hash,
        checked: prev.seq - from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut head = Head::genesis();
        (0..n)
            .map(|i| {
                let r = head.append(Entry::new(
                    format!("case-{}", i % 3),
                    Kind::Step,
                    Timestamp::UNIX_EPOCH,
                    json!({ "node": format!("n{i}"), "digest": "ab" }),
                ));
                (
                    r.seq.to_be_bytes().to_vec(),
                    serde_json::to_vec(&r).expect("json"),
                )
            })
            .collect()
    }

    #[test]
    fn an_entry_written_ahead_gives_the_record_append_gives_byte_for_byte() {
        let entries = [
            Entry::new("case-1", Kind::Accepted, Timestamp::UNIX_EPOCH, json!(null)),
            Entry::new(
                "customer:\"quoted\" \u{e9}\u{1F600}\n",
                Kind::ConsentChanged,
                "2026-12-07T06:30:00.123456789Z".parse().expect("time"),
                json!({ "text": "line\nbreak \\ \u{0}", "n": [1, 2.5, -3], "nested": { "a": {} } }),
            ),
            Entry::new("", Kind::Step, Timestamp::MAX, json!("")),
        ];
        let mut framed = Head::genesis();
        let mut serialized = Head::genesis();
        for (i, entry) in entries.iter().cycle().take(7).enumerate() {
            let (seq, bytes) = framed.append_written(&Written::new(entry));
            let record = serialized.append(entry.clone());
            assert_eq!(seq, record.seq);
            assert_eq!(
                String::from_utf8(bytes.clone()).expect("utf-8"),
                serde_json::to_string(&record).expect("json"),
                "entry {i}"
            );
            assert_eq!(framed, serialized);
            let read: Record = serde_json::from_slice(&bytes).expect("stored bytes parse");
            assert_eq!(read.computed_hash(), read.hash);
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = verify(chain(5)).expect("intact");
        assert_eq!(v.records, 5);
    }

    #[test]
    fn a_deleted_record_is_missing() {
        let mut c = chain(5);
        c.remove(2);
        assert_eq!(
            verify(c),
            Err(Problem::Missing {
                expected: 3,
                found: 4
            })
        );
    }

    #[test]
    fn a_truncated_tail_is_not_detectable_from_the_records_alone() {
        // The chain proves order and content; the head is what proves the length, which is
        // why `audit verify` also prints the head hash for the operator to keep.
        let mut c = chain(5);
        c.pop();
        assert_eq!(verify(c).map(|v| v.records), Ok(4));
    }
}
