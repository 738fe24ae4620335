//! The box's side of a rollout (ADR 0019, `docs/fleet.md` "Rollout"): a durable pull
//! consumer `rollout_<branch>` on the hub's `CG_ROLLOUT` reads `cg.r.<branch>`; each
//! message is checked (size, signature against `fleet.hub_key`, the branch, the bundle's
//! limits), applied through [`publish_version`] — exactly the path of `POST /v1/workflows`
//! — and answered on `cg.b.<branch>.rollout` before it is acknowledged. A box that was
//! offline reads what it missed when it reconnects; a message delivered again after it was
//! applied reports `applied` again, never a refusal.
//!
//! Trust boundary: everything on `cg.r.<branch>` is hostile until its signature verified.
//! The raw message is bounded before it is parsed; only the hub's key can make a box apply
//! anything, and even a signed bundle goes through every check an author's publish does.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, message::PublishMessage};
use futures_util::StreamExt as _;
use jiff::Timestamp;
use tokio::sync::watch;

use super::connect::Endpoint;
use super::publish::MAX_FILES;
use super::sign::PublicKey;
use super::wire::{self, Bundle, Kind, RolloutReport, RolloutResult, SignedRollout};
use crate::api::AppState;
use crate::api::workflows::{Refusal, publish_version};
use crate::config::Config;
use crate::library;

/// How long the hub's JetStream waits for an acknowledgement before it delivers a rollout
/// again: a publish compiles and runs fixtures, which takes seconds, not minutes.
const ACK_WAIT: Duration = Duration::from_secs(120);
/// Waits between attempts when NATS or the consumer is not there (doubling up to the last).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(15));

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("fleet.hub_key: {0}")]
    HubKey(#[from] super::sign::Error),
}

/// What the rollout task needs, checked at start.
#[derive(Debug, Clone)]
pub struct Options {
    pub endpoint: Endpoint,
    pub branch: String,
    /// The JetStream domain of `CG_ROLLOUT` when the box talks to another domain (its own
    /// leaf node); `None` when the server the box talks to holds the stream.
    pub hub_domain: Option<String>,
    pub hub_key: PublicKey,
    /// Most bytes of a bundle's files and names: the API's `limits.body_limit_bytes`.
    pub max_bundle_bytes: usize,
}

impl Options {
    /// `None` unless `[fleet]` has `nats_url`, `branch` and `hub_key`: a box without a hub
    /// key takes no rollouts.
    pub fn from_config(config: &Config) -> Result<Option<Options>, Error> {
        let fleet = &config.fleet;
        let (Some(url), Some(branch), Some(key)) = (&fleet.nats_url, &fleet.branch, &fleet.hub_key)
        else {
            return Ok(None);
        };
        // Through a leaf node (its own domain) the hub's stream is reached in the hub's
        // domain; a box talking to the hub's own server reaches it plainly.
        let hub_domain = match &fleet.domain {
            Some(d) if *d != fleet.hub_domain => Some(fleet.hub_domain.clone()),
            _ => None,
        };
        Ok(Some(Options {
            endpoint: Endpoint::of_box(
                fleet,
                url,
                branch,
                format!("casegraph-box-{branch}-rollout"),
            ),
            branch: branch.clone(),
            hub_domain,
            hub_key: PublicKey::from_hex(key)?,
            max_bundle_bytes: config.limits.body_limit_bytes,
        }))
    }

    /// Longest raw message read: the bundle's limit in base64 plus the envelope.
    fn max_message_bytes(&self) -> usize {
        self.max_bundle_bytes / 3 * 4 + 64 * 1024
    }
}

/// Starts the rollout task; it ends when `stop` changes.
pub fn spawn(
    options: Options,
    state: AppState,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stopped = stop.clone();
        tokio::select! {
            () = run(options, state) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    })
}

/// Reads and applies rollouts forever, reconnecting as long as it takes.
async fn run(options: Options, state: AppState) {
    let client = loop {
        match options.endpoint.connect().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(branch = %options.branch, "rollouts: {e}");
                tokio::time::sleep(BACKOFF.1).await;
            }
        }
    };
    let hub = match &options.hub_domain {
        Some(domain) => jetstream::with_domain(client.clone(), domain),
        None => jetstream::new(client.clone()),
    };
    let own = jetstream::new(client);
    let mut wait = BACKOFF.0;
    loop {
        match read(&options, &state, &hub, &own).await {
            Ok(()) => wait = BACKOFF.0,
            Err(e) => {
                tracing::warn!(branch = %options.branch, "rollouts: {e}; trying again in {wait:?}");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// One life of the consumer: created (or found) and read until its message stream ends.
async fn read(
    options: &Options,
    state: &AppState,
    hub: &jetstream::Context,
    own: &jetstream::Context,
) -> Result<(), String> {
    let consumer = hub
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some(wire::rollout_consumer(&options.branch)),
                filter_subject: wire::rollout_subject(&options.branch),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 1,
                ..Default::default()
            },
            wire::ROLLOUT_STREAM,
        )
        .await
        .map_err(|e| format!("the consumer on {}: {e}", wire::ROLLOUT_STREAM))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("reading {}: {e}", wire::ROLLOUT_STREAM))?;
    tracing::info!(branch = %options.branch, "rollouts: reading {}", wire::rollout_subject(&options.branch));
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| format!("reading {}: {e}", wire::ROLLOUT_STREAM))?;
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match take(options, state, &message.payload, seq).await {
            Taken::Later(delay) => {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Taken::Report(report) => {
                if let Err(e) = send(own, &report).await {
                    // Not acknowledged: delivered again, applied idempotently, reported then.
                    let _ = message.ack_with(AckKind::Nak(Some(BACKOFF.1))).await;
                    return Err(format!("reporting rollout {}: {e}", report.rollout_id));
                }
                message
                    .double_ack()
                    .await
                    .map_err(|e| format!("acknowledging rollout {}: {e}", report.rollout_id))?;
            }
        }
    }
    Ok(())
}

/// What became of one message.
#[derive(Debug)]
enum Taken {
    /// Answered: report it, then acknowledge.
    Report(RolloutReport),
    /// Not looked at yet (the box's compiles are busy): deliver it again after the delay.
    Later(Duration),
}

/// Checks and applies one message's bytes (`seq`: its place in the stream, naming a
/// message whose rollout id cannot be read).
async fn take(options: &Options, state: &AppState, raw: &[u8], seq: u64) -> Taken {
    let branch = &options.branch;
    let report = |rollout_id: String, result: RolloutResult| {
        match &result {
            RolloutResult::Applied { .. } => {}
            other => tracing::warn!(%branch, rollout = %rollout_id, "rollout refused: {other:?}"),
        }
        Taken::Report(RolloutReport {
            branch: branch.clone(),
            rollout_id,
            at: Timestamp::now(),
            result,
        })
    };
    let unnamed = format!("unreadable-{seq}");
    let refused = |errors: Vec<String>| RolloutResult::Refused { errors };
    if raw.len() > options.max_message_bytes() {
        return report(
            unnamed,
            refused(vec![format!(
                "the rollout message is {} bytes; this box takes at most {}",
                raw.len(),
                options.max_message_bytes()
            )]),
        );
    }
    let signed: SignedRollout = match serde_json::from_slice(raw) {
        Ok(s) => s,
        Err(e) => {
            return report(
                unnamed,
                refused(vec![format!("the message is not a signed rollout: {e}")]),
            );
        }
    };
    let rollout = match options.hub_key.verify(&signed) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%branch, key = %signed.key_id, "rollout refused: {e}");
            return report(
                unnamed,
                RolloutResult::BadSignature {
                    key_id: signed.key_id,
                },
            );
        }
    };
    if !rollout.branches.iter().any(|b| b == branch) {
        return report(
            rollout.id,
            refused(vec![format!(
                "the rollout is for branches [{}], not for this box's branch `{branch}`",
                rollout.branches.join(", ")
            )]),
        );
    }
    let Bundle::Workflow { id, files } = rollout.bundle;
    let bytes: usize = files.iter().map(|(k, v)| k.len() + v.len()).sum();
    if files.len() > MAX_FILES || bytes > options.max_bundle_bytes {
        return report(
            rollout.id,
            refused(vec![format!(
                "the bundle has {} files of {bytes} bytes; this box takes at most {MAX_FILES} files of {} bytes (limits.body_limit_bytes)",
                files.len(),
                options.max_bundle_bytes
            )]),
        );
    }
    let result = match publish_version(state, id.clone(), files.clone()).await {
        Ok(wf) => {
            // Recorded like an author's publish, with what names the rollout.
            tracing::info!(workflow = %wf.id, version = wf.version, rollout = %rollout.id, key = %signed.key_id, "workflow published by a rollout");
            RolloutResult::Applied {
                workflow: wf.id.clone(),
                version: wf.version,
            }
        }
        Err(Refusal::Busy { retry_after_secs }) => {
            return Taken::Later(Duration::from_secs(retry_after_secs.max(1)));
        }
        Err(Refusal::Publish(library::Error::VersionNotNewer { current, given, .. }))
            if current == given && state.library.is_published(&id, &files) =>
        {
            // Delivered again after it was applied (the box stopped before acknowledging).
            RolloutResult::Applied {
                workflow: id,
                version: current,
            }
        }
        Err(Refusal::Publish(e)) => refused(errors(&id, e)),
    };
    report(rollout.id, result)
}

/// Every error of a refused publish, as the API lists them.
fn errors(id: &str, e: library::Error) -> Vec<String> {
    use library::Error;
    match e {
        Error::Invalid(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
        Error::FixturesFailed(fixtures) => fixtures
            .iter()
            .flat_map(|f| {
                f.failures
                    .iter()
                    .map(move |m| format!("{}: fixture `{}`: {m}", f.file, f.name))
            })
            .collect(),
        e @ (Error::Io(_) | Error::Panicked(_)) => {
            let incident = crate::incident::id();
            tracing::error!(incident = %incident, workflow = %id, "rollout: {e}");
            vec![format!(
                "the box could not publish the workflow (incident {incident} in its log)"
            )]
        }
        e => vec![e.to_string()],
    }
}

/// Publishes `report` on `cg.b.<branch>.rollout` and waits for the branch stream's ack.
async fn send(own: &jetstream::Context, report: &RolloutReport) -> Result<(), String> {
    let payload = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    let ack = own
        .send_publish(
            wire::branch_subject(&report.branch, Kind::Rollout),
            PublishMessage::build()
                .payload(payload.into())
                .message_id(wire::msg_id(
                    &report.branch,
                    Kind::Rollout,
                    &report.rollout_id,
                )),
        )
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}
