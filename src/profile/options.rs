//! The configuration parts a firmware profile adds to the service: threads of the HTTP
//! runtime, the intent model's inference settings, the memory budget and the log level.
//!
//! They are ordinary configuration sections (`[runtime]`, `[inference]`, `[memory]`,
//! `[log]`): a profile sets them for its box class, a configuration file, the environment
//! or flags override them like any other key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            http_threads: 0,
            blocking_threads: 512,
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
    /// Most requests classified in one run of the model.
    pub batch_size: usize,
    /// How long a request may wait for others to fill its batch; zero runs at once.
    #[serde(with = "crate::profile::duration")]
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
            batch_window: Duration::from_millis(2),
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
    #[serde(with = "crate::profile::duration")]
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
