//! What a box and the hub say to each other over NATS JetStream: subjects, stream names,
//! message ids and the JSON messages. Both sides use only these names, so a change here is
//! a change of the fleet protocol (ADR 0019). No I/O here.
//!
//! Subjects:
//! - `cg.b.<branch>.audit`, `.case`, `.health`, `.rollout`: what a box publishes, captured
//!   by its branch stream `CG_<BRANCH>` in the JetStream domain the box talks to (its leaf
//!   node's, or a regional server's);
//! - `cg.r.<branch>`: rollouts for one branch, captured by the hub's `CG_ROLLOUT` stream.
//!
//! The hub's `CG_FLEET` stream has no subjects of its own: it sources every branch stream
//! (across domains through `$JS.<domain>.API`), so a branch that was cut off catches up by
//! itself and nothing is captured twice.

use std::collections::BTreeMap;

use casegraph_engine::audit;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The hub's stream that sources every branch stream.
pub const FLEET_STREAM: &str = "CG_FLEET";
/// The hub's stream of rollouts (subjects `cg.r.>`).
pub const ROLLOUT_STREAM: &str = "CG_ROLLOUT";
/// Subjects of the rollout stream.
pub const ROLLOUT_SUBJECTS: &str = "cg.r.>";
/// The header JetStream de-duplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Longest branch name: it is part of subjects, stream and consumer names.
pub const MAX_BRANCH_LEN: usize = 32;

/// A branch name is `[a-z0-9-]{1,32}`, starting with a letter or digit: it becomes a subject
/// token and part of stream names, so no dots, wildcards or spaces.
pub fn check_branch(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > MAX_BRANCH_LEN || !ok_chars || name.starts_with('-') {
        return Err(format!(
            "branch name `{name}` must be 1 to {MAX_BRANCH_LEN} of a-z, 0-9 and '-', not starting with '-'"
        ));
    }
    Ok(())
}

/// What a box publishes; the last subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One audit chain record ([`AuditRecord`]).
    Audit,
    /// The state of one case after an audit record ([`CaseSummary`]).
    Case,
    /// The periodic health snapshot ([`Health`]).
    Health,
    /// The result of applying a rollout ([`RolloutReport`]).
    Rollout,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audit => "audit",
            Kind::Case => "case",
            Kind::Health => "health",
            Kind::Rollout => "rollout",
        }
    }

    pub fn parse(token: &str) -> Option<Kind> {
        Some(match token {
            "audit" => Kind::Audit,
            "case" => Kind::Case,
            "health" => Kind::Health,
            "rollout" => Kind::Rollout,
            _ => return None,
        })
    }
}

/// `cg.b.<branch>.<kind>`.
pub fn branch_subject(branch: &str, kind: Kind) -> String {
    format!("cg.b.{branch}.{}", kind.as_str())
}

/// `cg.b.<branch>.>`: everything one branch publishes.
pub fn branch_subjects(branch: &str) -> String {
    format!("cg.b.{branch}.>")
}

/// The branch and kind of a subject a box published on (`None` for anything else).
pub fn parse_branch_subject(subject: &str) -> Option<(&str, Kind)> {
    let rest = subject.strip_prefix("cg.b.")?;
    let (branch, kind) = rest.split_once('.')?;
    check_branch(branch).ok()?;
    Some((branch, Kind::parse(kind)?))
}

/// `CG_<BRANCH>`: the branch's stream (upper case, '-' → '_').
pub fn branch_stream(branch: &str) -> String {
    format!("CG_{}", branch.to_ascii_uppercase().replace('-', "_"))
}

/// `cg.r.<branch>`: rollouts for one branch.
pub fn rollout_subject(branch: &str) -> String {
    format!("cg.r.{branch}")
}

/// The durable consumer a branch reads its rollouts with, on the hub's rollout stream.
pub fn rollout_consumer(branch: &str) -> String {
    format!("rollout_{}", branch.replace('-', "_"))
}

/// The `Nats-Msg-Id` of a rollout's message to one branch: publishing the same rollout
/// again (a retry of the hub's command) is dropped by JetStream.
pub fn rollout_msg_id(rollout_id: &str, branch: &str) -> String {
    format!("{rollout_id}:{branch}")
}

/// The `Nats-Msg-Id` of a message: branch, kind and the message's own key (the audit
/// sequence for audit records and case summaries, the snapshot's time for health, the
/// rollout id for reports), so a re-publish after a crash is dropped by JetStream.
pub fn msg_id(branch: &str, kind: Kind, key: &str) -> String {
    format!("{branch}:{}:{key}", kind.as_str())
}

/// One audit chain record as the box committed it: the record carries pseudonymous ids
/// and digests only (never personal data), so the hub can recompute every hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub branch: String,
    pub record: audit::Record,
}

/// A case's state after the audit record `audit_seq`, without personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub branch: String,
    /// The audit record this summary follows; the hub keeps the summary with the highest.
    pub audit_seq: u64,
    pub case_id: String,
    /// `running`, `waiting`, `completed`, `failed`, `escalated`, … (the case's status).
    pub status: String,
    pub workflow: Option<String>,
    pub version: Option<u32>,
    /// The route's kind and target (`workflow`, `queue:<name>`, `triage`), if routed.
    pub route: Option<String>,
    pub outcome: Option<String>,
    pub accepted_at: Timestamp,
    pub updated_at: Timestamp,
    /// Signals of the classification (intent, confidence, sentiment label, frustration flag),
    /// never the text.
    #[serde(default)]
    pub signals: BTreeMap<String, serde_json::Value>,
}

/// The box's periodic snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub branch: String,
    pub at: Timestamp,
    /// The casegraph version the box runs.
    pub engine_version: String,
    pub model_version: Option<String>,
    pub routing_version: Option<u32>,
    /// Served workflow id → version.
    pub workflows: BTreeMap<String, u32>,
    /// Cases waiting for a worker.
    pub queue_depth: u64,
    /// Open human tasks by queue.
    pub open_tasks: BTreeMap<String, u64>,
    /// Cases by status.
    pub cases: BTreeMap<String, u64>,
    pub rss_bytes: Option<u64>,
    /// The last audit record the box committed; the hub compares it with what it holds.
    pub audit_head: Option<ChainHead>,
    /// Audit records committed but not yet acknowledged by JetStream.
    pub backlog: u64,
    /// The box's own verification of its chain: `None` when it verifies, else the problem.
    pub chain_problem: Option<String>,
}

/// A position in an audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

/// A rollout as the hub publishes it on `cg.r.<branch>`: the signed bytes and the
/// signature. The box verifies `signature` over exactly `payload`'s bytes (base64-decoded)
/// with its configured hub key before it parses them as a [`Rollout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedRollout {
    /// Hex sha256 of the hub's public key, first 16 digits: names the key in reports.
    pub key_id: String,
    /// Base64 (standard) of the [`Rollout`]'s JSON.
    pub payload: String,
    /// Base64 (standard) of the ed25519 signature over the decoded payload.
    pub signature: String,
}

/// What the hub asks named branches to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique per rollout (the hub makes it); reports name it.
    pub id: String,
    pub created_at: Timestamp,
    /// The branches it is meant for; a box refuses a rollout not naming its branch.
    pub branches: Vec<String>,
    pub bundle: Bundle,
}

/// The content of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bundle {
    /// A workflow version, exactly the body of `POST /v1/workflows`: its id and its
    /// folder's files by name.
    Workflow {
        id: String,
        files: BTreeMap<String, String>,
    },
}

/// A box's answer to a rollout, published on `cg.b.<branch>.rollout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutReport {
    pub branch: String,
    pub rollout_id: String,
    pub at: Timestamp,
    pub result: RolloutResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RolloutResult {
    /// Published: the workflow and its new version.
    Applied { workflow: String, version: u32 },
    /// Validation, fixtures or the version rule refused it: every error, as the API gives them.
    Refused { errors: Vec<String> },
    /// The signature did not verify against the box's hub key (or no key is configured).
    BadSignature { key_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_subject_tokens() {
        assert!(check_branch("berlin-01").is_ok());
        for bad in [
            "",
            "Berlin",
            "a.b",
            "a*",
            "a>",
            "-a",
            "a b",
            &"x".repeat(33),
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subjects_round_trip() {
        let s = branch_subject("berlin-01", Kind::Health);
        assert_eq!(s, "cg.b.berlin-01.health");
        assert_eq!(parse_branch_subject(&s), Some(("berlin-01", Kind::Health)));
        assert_eq!(parse_branch_subject("cg.b.Berlin.audit"), None);
        assert_eq!(parse_branch_subject("cg.r.berlin"), None);
        assert_eq!(branch_stream("berlin-01"), "CG_BERLIN_01");
        assert_eq!(msg_id("b1", Kind::Audit, "42"), "b1:audit:42");
    }
}
