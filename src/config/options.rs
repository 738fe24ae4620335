//! The sections of the configuration, one `Options` type per part of the service: the
//! listener, limits, connectors, webhooks, the HTTP runtime, inference, the memory budget
//! and the log.
//!
//! The bottom of the configuration: plain serde types with their defaults, which every part
//! of the service (and a firmware profile, which sets some of them for a box class) depends
//! on; they depend on no other module of the crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerOptions {
    /// Address to listen on; loopback by default so a fresh box exposes nothing.
    pub listen: SocketAddr,
    /// How long a running request may take before it is answered `503`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// How long shutdown waits for open connections and running steps.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How often due timers and SLAs are fired.
    #[serde(with = "duration")]
    pub timer_interval: Duration,
    /// With no token in the data directory, create an admin token at start and write it to
    /// `<data_dir>/admin.token` (mode 0600), so a fresh box can be used at once.
    pub bootstrap_admin_token: bool,
    /// Serve HTTPS with this certificate and key; plain HTTP when absent.
    pub tls: Option<TlsOptions>,
    /// How long a client may take to send a request's headers (from their first byte, or
    /// from the previous answer on a kept-alive connection); then the connection is closed.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; `431` beyond.
    pub max_header_bytes: usize,
    /// Most headers in one request; `431` beyond.
    pub max_headers: usize,
    /// Most open connections; beyond it new ones wait until one closes.
    pub max_connections: usize,
}

/// The listener's TLS certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            timer_interval: Duration::from_secs(1),
            bootstrap_admin_token: true,
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 1024,
        }
    }
}

/// Limits and back-pressure: what keeps the box inside its memory on overload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsOptions {
    /// Largest request body accepted, in bytes (`413` beyond).
    pub body_limit_bytes: usize,
    /// Requests being made durable at once; beyond it intake answers `503` + Retry-After.
    pub max_in_flight: usize,
    /// Accepted cases waiting for a worker; when full intake answers `429` + Retry-After
    /// before storing anything.
    pub queue_depth: usize,
    /// Threads that run cases (CPU work: rules, templates, connector calls). A worker
    /// spends most of a case waiting for its commit's sync, and group commit shares one
    /// sync among the commits that arrive together, so more workers than cores finish
    /// more: 16 instead of 2 took the durable benchmark from 767 to 1,881 finished cases/s
    /// at concurrency 32 (docs/benchmarks.md).
    pub workers: usize,
    /// Seconds a client is told to wait in `Retry-After`.
    pub retry_after_secs: u64,
    /// How long intake holds a request for a queue place when the queue is full, before it
    /// answers `429`: a client that sends again at once is slowed to the workers' pace
    /// instead of drawing a storm of refusals. At most `queue_depth` requests are held;
    /// `0s` answers at once.
    #[serde(with = "duration")]
    pub queue_wait: Duration,
    /// Author work that compiles a bundle at once: console checks and fixture runs and
    /// publishes together. Each copies the catalog and runs on a compile thread of its
    /// own; beyond it they answer `503 busy` + Retry-After.
    pub max_compiles: usize,
    /// Model calls asked for over HTTP at once (`POST /v1/classify` and the console's dry
    /// run), beside the workers' own: beyond it they answer `503 busy` + Retry-After, so
    /// they cannot crowd the inference queue that intake needs.
    pub max_classify: usize,
}

impl Default for LimitsOptions {
    fn default() -> Self {
        LimitsOptions {
            body_limit_bytes: 256 * 1024,
            max_in_flight: 256,
            queue_depth: 4096,
            workers: 16,
            retry_after_secs: 1,
            queue_wait: Duration::from_secs(1),
            max_compiles: 2,
            max_classify: 4,
        }
    }
}

/// Where `call` nodes go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorOptions {
    /// Base URL of the back-office gateway; a call goes to `{base_url}/{connector}/{operation}`.
    /// Unset: the built-in simulated back office answers (and says so).
    pub base_url: Option<String>,
    /// Time one attempt may take (connect + answer).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// PEM bundle of the CA certificates an `https://` back office is verified against,
    /// instead of the bundled Mozilla roots (a site's internal PKI). Unset: bundled roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        ConnectorOptions {
            base_url: None,
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

/// `reply_to` notifications when a case ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookOptions {
    /// Hosts (`host` or `host:port`) `reply_to` may point at; empty means no webhooks are
    /// sent. Outbound calls go only to configured hosts, at port 443 for an entry without
    /// a port, at the named port otherwise.
    pub allowed_hosts: Vec<String>,
    /// Time one notification may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Attempts per notification (exponential backoff with jitter between them).
    pub max_attempts: u32,
    /// PEM bundle of the CA certificates an `https://` receiver is verified against,
    /// instead of the bundled Mozilla roots. Unset: bundled roots.
    pub ca_file: Option<PathBuf>,
    /// Let listed host names resolve to loopback, private, link-local and other non-public
    /// addresses (a receiver on the site's own network). Off: only public addresses, or
    /// an address listed as such in `allowed_hosts`.
    pub allow_private_addresses: bool,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            allow_private_addresses: false,
            allowed_hosts: Vec::new(),
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            ca_file: None,
        }
    }
}

/// Threads of the async HTTP runtime (the case workers are `limits.workers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeOptions {
    /// Async threads that parse requests and answer them; 0 means one per available core.
    pub http_threads: usize,
    /// Most threads for blocking work (store reads, commits waiting for their sync, rule
    /// runs of task completions). Each holds a stack, so small boxes keep this low;
    /// intake never needs more than `limits.max_in_flight` of them.
    pub blocking_threads: usize,
    /// How much lower (Linux nice, 0–19) the case workers and the intent model's threads
    /// run than intake and the commit thread: when the cores are busy, answering a request
    /// (`202` once it is durable) goes before running cases. A trade: on edge-small, 10 took
    /// acceptance p99 at half load from ~5.7 to ~5.0 ms but finished ~10 % fewer cases at
    /// saturation (the commit thread, served sooner, groups fewer commits per sync;
    /// docs/benchmarks.md). 0, the default, runs them all alike.
    pub background_nice: u8,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            http_threads: 0,
            blocking_threads: 512,
            background_nice: 0,
        }
    }
}

/// Which build of the intent model a box loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Dynamically quantized weights: about a quarter of the memory, faster on CPUs with
    /// AVX2/VNNI, a small accuracy cost (stated in the model card).
    #[default]
    Int8,
    /// Full-precision weights: the reference the int8 build is measured against.
    Fp32,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Int8 => "int8",
            Variant::Fp32 => "fp32",
        }
    }
}

/// How the intent model runs (ONNX Runtime through `ort`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceOptions {
    /// The model directory under `models/`.
    pub model: String,
    /// Quantized or full-precision weights.
    pub variant: Variant,
    /// Intra-op threads of one session.
    pub threads: usize,
    /// Sessions that run batches side by side; each holds its own copy of the weights'
    /// working memory, so `sessions × threads` should not exceed the cores left to it.
    pub sessions: usize,
    /// Most waiting requests an inference thread takes at a time (each is its own model
    /// call, so that no answer depends on its company: ADR 0027).
    pub batch_size: usize,
    /// How long a request may wait for others to fill its batch; zero runs at once (the
    /// default: a batch saves no model work, so waiting only adds latency).
    #[serde(with = "duration")]
    pub batch_window: Duration,
    /// Let the model's n-gram half decide alone where the model card's `[cascade]` says
    /// it is sure enough, without running the encoder; `false` runs it for every request.
    pub cascade: bool,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            model: "intent-e5-de-en".into(),
            variant: Variant::Int8,
            threads: 1,
            sessions: 1,
            batch_size: 8,
            batch_window: Duration::ZERO,
            cascade: true,
        }
    }
}

/// The resident memory the service may use, and what it does near it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryOptions {
    /// Resident memory (RSS) budget of the process in MiB; 0 means no budget.
    pub budget_mib: u64,
    /// Intake and classification answer `503` + Retry-After once RSS reaches this share
    /// of the budget (percent), so the rest of the budget absorbs the work in flight.
    pub shed_at_percent: u8,
    /// How often resident memory is read (`/proc/self/statm`).
    #[serde(with = "duration")]
    pub sample_interval: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            budget_mib: 0,
            shed_at_percent: 90,
            sample_interval: Duration::from_millis(50),
        }
    }
}

/// The disk the data directory lives on, and what the service does as it fills: the
/// watermarks (see `src/storage.rs` and docs/operations.md, "Disk space").
///
/// A mark is crossed when *either* measure says so: free space on the data directory's
/// filesystem below `*_free_mib`, or the data directory's own size above its share of
/// `budget_mib`. 0 turns a measure off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageOptions {
    /// Soft mark: with less free space than this (MiB), new requests and publishes are
    /// refused with `507 storage_pressure` + Retry-After; accepted work goes on.
    pub soft_free_mib: u64,
    /// Hard mark: with less free space than this (MiB), every write the API offers is
    /// refused (`507 storage_full`) except task completions; the space left is for the
    /// cases already accepted to finish. Must be below `soft_free_mib`.
    pub hard_free_mib: u64,
    /// Most bytes the data directory may hold, in MiB (0: no budget): the hard mark at the
    /// budget, the soft mark at `soft_budget_percent` of it.
    pub budget_mib: u64,
    /// The soft mark as a share of `budget_mib` (percent).
    pub soft_budget_percent: u8,
    /// How often free space and the data directory's size are measured.
    #[serde(with = "duration")]
    pub sample_interval: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            soft_free_mib: 256,
            hard_free_mib: 64,
            budget_mib: 0,
            soft_budget_percent: 90,
            sample_interval: Duration::from_secs(1),
        }
    }
}

/// What the service logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogOptions {
    /// Log filter (tracing env-filter syntax, e.g. `info` or `warn,casegraph=info`);
    /// `--log` and `CASEGRAPH_LOG` override it.
    pub level: String,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            level: "info".into(),
        }
    }
}

impl InferenceOptions {
    /// The model directory: `models/<model>` under `models_root`.
    pub fn model_dir(&self, models_root: &std::path::Path) -> std::path::PathBuf {
        models_root.join(&self.model)
    }

    /// The ONNX session options these settings mean.
    pub fn session_options(&self) -> casegraph_engine::classify::onnx::Options {
        casegraph_engine::classify::onnx::Options {
            intra_threads: self.threads,
            sessions: self.sessions,
            cascade: self.cascade,
            ..Default::default()
        }
    }

    /// The micro-batching these settings mean: one batch worker per session.
    pub fn batch_options(&self) -> casegraph_engine::classify::batch::BatchOptions {
        casegraph_engine::classify::batch::BatchOptions {
            max_batch: self.batch_size,
            max_wait_ms: self.batch_window.as_millis() as u64,
            workers: self.sessions,
            ..Default::default()
        }
    }
}

/// Human tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskOptions {
    /// How soon the queue task of a case routing marked `priority: "high"` (a frustrated
    /// repeat customer, a churn risk) is due after it opens; the inbox lists such tasks
    /// first. Queue tasks of other cases have no SLA. Default one hour.
    #[serde(with = "duration")]
    pub priority_sla: Duration,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            priority_sla: casegraph_engine::runner::DEFAULT_PRIORITY_SLA,
        }
    }
}

/// Durations as humane strings (`"30s"`, `"2m"`, `"1h 30m"`).
pub(super) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_settings_map_onto_the_engine_options() {
        let i = InferenceOptions {
            threads: 2,
            sessions: 3,
            batch_size: 32,
            batch_window: Duration::from_millis(5),
            ..InferenceOptions::default()
        };
        let s = i.session_options();
        assert_eq!((s.intra_threads, s.sessions), (2, 3));
        let b = i.batch_options();
        assert_eq!((b.max_batch, b.max_wait_ms, b.workers), (32, 5, 3));
        assert!(
            i.model_dir(std::path::Path::new("models"))
                .ends_with("intent-e5-de-en")
        );
    }
}
