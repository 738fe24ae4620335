//! The intent model: what a request is about, how sure the model is, and whether it is
//! something this box handles at all.
//!
//! A request is classified by a [`Service`] (the runner, the API and the CLI call it), which
//! answers a typed [`Classification`]; the box's service is [`service::Model`]: the
//! metadata rule, the cascade and the micro-batcher over the model's sessions.
//!
//! The domain side is inference-free: the [`Classifier`] trait (one text in, one
//! [`Prediction`] out), the model card ([`card`]), temperature calibration and the out-of-scope rule
//! ([`calibrate`]), and dynamic micro-batching over any classifier ([`batch`]). The ONNX
//! Runtime adapter ([`onnx`]: `ort` + `tokenizers`) sits behind the `onnx` cargo feature, so
//! the rest of the engine builds and tests without an inference stack.

pub mod batch;
pub mod calibrate;
pub mod card;
mod classification;
pub mod graph;
pub mod ngrams;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "onnx")]
pub mod runtime;
pub mod service;
pub mod signals;
#[cfg(feature = "onnx")]
pub mod unigram;

use serde::{Deserialize, Serialize};

pub use calibrate::{Calibration, Cascade};
pub use card::ModelCard;
pub use classification::{
    Alternative, Classification, Correction, FRUSTRATION, Hint, METADATA_MODEL, SENTIMENT, Service,
    Source, UNAVAILABLE_MODEL, check_stated_signal,
};

/// How much of a model file one read takes: a MiB, not std's 8 KiB, so loading a model costs
/// thousands fewer system calls, and no buffer the size of a file stays resident.
const READ_PIECE: usize = 1 << 20;

/// One intent with its calibrated confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub intent: String,
    pub confidence: f32,
}

/// The model's answer for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The most likely in-scope intent, also when `out_of_scope` is set (a reviewer sees
    /// what the model would have chosen).
    pub intent: String,
    /// Calibrated probability of `intent` (temperature-scaled softmax).
    pub confidence: f32,
    /// The best in-scope intents, most likely first (`intent` is `top[0]`).
    pub top: Vec<Scored>,
    /// The request is not one the box handles (off-topic, or the model is too unsure):
    /// it goes to a human.
    pub out_of_scope: bool,
    /// Name, version and the first hex digits of the model file's sha256.
    pub model: String,
    /// Which part of the model decided.
    #[serde(default)]
    pub stage: Stage,
    /// Sentiment and frustration, when the model has the heads (card `[signals]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<signals::Signals>,
}

/// Which part of the model decided a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The n-gram half alone: its own probability reached the card's `[cascade]
    /// lexical_exit`, so the encoder was not run.
    Lexical,
    /// The encoder and the n-gram half together.
    #[default]
    Full,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lexical => "lexical",
            Stage::Full => "full",
        }
    }
}

/// One text with the per-request work done that needs no model session (token ids, n-gram
/// features), so that it can happen on the caller's thread rather than a session's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    pub text: String,
    /// Token ids as the model's tokenizer makes them (empty when the classifier has none).
    pub token_ids: Vec<i64>,
    /// The text's n-gram features, when the model has a lexical half.
    pub ngrams: Option<ngrams::Sparse>,
    /// The request's language (stated or detected), for a calibration fitted per language.
    pub language: Option<String>,
}

/// Classifies request texts. Implementations are thread-safe; a batch is answered in order.
pub trait Classifier: Send + Sync {
    fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, Error>;

    /// Everything about one text that does not need a session. [`batch::Batcher`] calls it
    /// on the caller's thread, so its workers only run the model.
    fn prepare(&self, text: &str) -> Result<Prepared, Error> {
        Ok(Prepared {
            text: text.to_string(),
            ..Prepared::default()
        })
    }

    /// The answer for a prepared text when a cheap part of the model is sure enough to
    /// decide alone (see [`calibrate::Cascade`]); `None` means the full model must run.
    fn decide_early(&self, _prepared: &Prepared) -> Option<Prediction> {
        None
    }

    /// Runs the whole model on texts [`Classifier::prepare`] made ready and
    /// [`Classifier::decide_early`] left undecided ([`batch::Batcher`] asks that on the
    /// caller's thread, so the session's thread does not ask again).
    fn classify_prepared(&self, batch: &[Prepared]) -> Result<Vec<Prediction>, Error> {
        let texts: Vec<&str> = batch.iter().map(|p| p.text.as_str()).collect();
        self.classify_batch(&texts)
    }

    fn classify(&self, text: &str) -> Result<Prediction, Error> {
        self.classify_batch(&[text])?
            .pop()
            .ok_or_else(|| Error::Inference("the model returned no prediction".into()))
    }

    /// The model version reported in every prediction.
    fn model(&self) -> &str;
}

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library is not where it should be.
    #[error(
        "ONNX Runtime (libonnxruntime.so, version 1.31) was not found; looked at: {looked}. \
         Install it with `scripts/setup.sh` (puts the library of PyPI's onnxruntime==1.31.1 \
         wheel into .local/onnxruntime/lib/ of the project), or set ORT_DYLIB_PATH to the \
         path of a libonnxruntime.so 1.31"
    )]
    RuntimeMissing { looked: String },
    #[error("ONNX Runtime at {path} could not be loaded: {reason}")]
    RuntimeLoad { path: String, reason: String },
    #[error("model {dir}: {reason}")]
    Model { dir: String, reason: String },
    #[error(
        "model file {file} does not match the model card: sha256 {actual}, card says {expected}"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("inference failed: {0}")]
    Inference(String),
}
