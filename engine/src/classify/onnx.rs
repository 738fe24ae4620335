//! The ONNX Runtime adapter: a verified model directory run through `ort` sessions, with the
//! model's SentencePiece tokenizer (`tokenizers`).
//!
//! One graph holds encoder and head: `input_ids`, `attention_mask` [batch, seq] (int64) →
//! `logits` [batch, labels]; a graph with the card's `[signals]` also gives sentiment
//! [batch, 3] and frustration [batch, 1] logits from the same forward pass. Sessions are sized from [`Options`]; a batch takes whichever
//! session is free. Calls block: async callers run them on a blocking thread (or through
//! [`super::batch::Batcher`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use half::f16;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor};
use serde::Deserialize;

use super::card::{Checked, LEXICAL_HEAD_FILE, ModelCard, SignalsSection, Verified};
use super::graph;
use super::ngrams::{LexicalHead, Ngrams, Sparse, Weights};
use super::signals::{LexicalSignals, Reading, Signals};
use super::unigram::{PackedTokenizer, PackedUnigram};
use super::{Calibration, Cascade, Classifier, Error, Prediction, Prepared, runtime};

/// How the model runs on this box (a firmware profile sets these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Threads one inference may use (ONNX Runtime intra-op threads).
    pub intra_threads: usize,
    /// Independent sessions, so that this many batches can run at once.
    pub sessions: usize,
    /// How many intents `top` lists.
    pub top_k: usize,
    /// Let the n-gram half decide alone where the card's `[cascade]` says it is sure
    /// enough; `false` runs the encoder for every request.
    pub cascade: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            intra_threads: 1,
            sessions: 1,
            top_k: 5,
            cascade: true,
        }
    }
}

/// Token ids of one text, ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded(pub Vec<i64>);

/// The model's tokenizer with the card's prefix and length limit.
#[derive(Debug)]
pub struct TextEncoder {
    tokenizer: PackedTokenizer,
    prefix: String,
    max_tokens: usize,
    pad_id: i64,
}

impl TextEncoder {
    pub fn from_file(path: &Path, prefix: &str, max_tokens: usize) -> Result<TextEncoder, Error> {
        let tokenizer = PackedUnigram::tokenizer_from_file(path).map_err(|e| Error::Model {
            dir: path.display().to_string(),
            reason: format!("tokenizer: {e}"),
        })?;
        let pad_id = tokenizer.token_to_id("<pad>").map_or(1, i64::from);
        Ok(TextEncoder {
            tokenizer,
            prefix: prefix.to_string(),
            max_tokens: max_tokens.max(3),
            pad_id,
        })
    }

    /// `<s> prefix+text </s>`, cut to `max_tokens` keeping the closing `</s>`.
    pub fn encode(&self, text: &str) -> Result<Encoded, Error> {
        let input = format!("{}{}", self.prefix, text);
        let enc = self
            .tokenizer
            .encode(input.as_str(), true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        if ids.len() > self.max_tokens {
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        Ok(Encoded(ids))
    }

    /// Pads a batch: (input_ids, attention_mask, seq_len), row-major.
    pub fn pad(&self, batch: &[&[i64]]) -> (Vec<i64>, Vec<i64>, usize) {
        let len = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; batch.len() * len];
        let mut mask = vec![0i64; batch.len() * len];
        for (r, e) in batch.iter().enumerate() {
            ids[r * len..r * len + e.len()].copy_from_slice(e);
            mask[r * len..r * len + e.len()].fill(1);
        }
        (ids, mask, len)
    }

    pub fn tokens(&self, text: &str) -> Result<Vec<String>, Error> {
        let input = format!("{}{}", self.prefix, text);
        let enc = self
            .tokenizer
            .encode(input.as_str(), true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        Ok(enc.get_tokens().to_vec())
    }
}

/// The graph's sentiment and frustration outputs and how to read them.
#[derive(Debug)]
struct SignalOutputs {
    sentiment: String,
    frustration: String,
    reading: Reading,
}

/// What the graph gives for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub logits: Vec<f32>,
    pub signals: Option<Signals>,
}

/// The shipped intent model run through ONNX Runtime.
#[derive(Debug)]
pub struct OnnxClassifier {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    encoder: TextEncoder,
    /// The lexical half of the model, when the graph has `ngram_*` inputs.
    ngrams: Option<Ngrams>,
    /// The n-gram half deciding alone where it is sure (card `[cascade]`).
    cascade: Option<Cascade>,
    /// Sentiment and frustration outputs, when the graph has them (card `[signals]`).
    signals: Option<SignalOutputs>,
    labels: Vec<String>,
    calibration: Calibration,
    version: String,
    /// Names of the graph's initializers the sessions take from a lexical head's buffer.
    shared_weights: Vec<String>,
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Inference(e.to_string())
}

impl OnnxClassifier {
    /// Verifies `dir` against its model card, loads ONNX Runtime and builds the sessions.
    pub fn load(dir: &Path, options: &Options) -> Result<OnnxClassifier, Error> {
        let started = Instant::now();
        let verified = ModelCard::load_verified(dir)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "model files verified against the card"
        );
        Self::from_verified(verified, options)
    }

    pub fn from_verified(mut v: Verified, options: &Options) -> Result<OnnxClassifier, Error> {
        let env = runtime::environment()?;
        let dir = v.dir.display().to_string();
        let model_err = |e: String| Error::Model {
            dir: dir.clone(),
            reason: e,
        };
        let started = Instant::now();
        let graph = v.card.graph_file().to_string();
        let mut file = v.open(&graph)?;
        // The graph is read and unpacked on a thread of its own while this one loads the
        // tokenizer and the n-gram vocabulary (both checked with the small files before
        // this): none needs the others. (This thread keeps the long-lived allocations: a
        // second thread's malloc arena would keep what their parsing freed.)
        let compressed = graph.ends_with(".zst");
        let reader = std::thread::Builder::new()
            .name("read-graph".into())
            .spawn(move || {
                let read = read_graph(&mut file, compressed);
                // a file that is not the one the card lists is named as such, not as a bad
                // graph
                file.finish()
                    .map(|()| (read, started.elapsed().as_millis() as u64))
            })
            .map_err(|e| model_err(format!("cannot start the graph's reader: {e}")))?;
        let encoder = TextEncoder::from_file(
            &v.dir.join("tokenizer.json"),
            &v.card.model.prefix,
            v.card.model.max_tokens,
        );
        let tokenizer_ms = started.elapsed().as_millis() as u64;
        let ngrams = if v.card.files.contains_key("ngrams.json") {
            Some(Ngrams::load(&v.dir.join("ngrams.json")))
        } else {
            None
        };
        let vocabulary_ms = started.elapsed().as_millis() as u64 - tokenizer_ms;
        let (read, read_ms) = reader
            .join()
            .map_err(|_| model_err("the graph's reader panicked".into()))??;
        let bytes = read.map_err(|e| model_err(format!("{graph}: {e}")))?;
        let (encoder, ngrams) = (encoder?, ngrams.transpose()?);
        let beside_ms = started.elapsed().as_millis() as u64;
        let calibration = v.calibration(options.top_k);
        let signals = v
            .card
            .signals
            .as_ref()
            .map(|s| signal_outputs(s).map_err(&model_err))
            .transpose()?;
        // The lexical heads hold numbers the graph holds too; where the graph has them as
        // they are, the sessions use the heads' buffers instead of a copy of their own.
        let mut heads = Heads::new(&bytes);
        let lexical_signals = match (&v.card.signals.clone(), &signals, &ngrams) {
            (Some(section), Some(outputs), Some(n)) => section
                .lexical_head
                .as_ref()
                .map(|file| {
                    Ok::<_, Error>(LexicalSignals {
                        head: heads.load(v.open(file)?, n.len(), 4)?,
                        reading: outputs.reading.clone(),
                        guard: section.lexical_guard.unwrap_or(1.0),
                    })
                })
                .transpose()?,
            _ => None,
        };
        let labels = v.labels.len();
        let cascade = match (&v.card.cascade.clone(), &ngrams) {
            // a model with signals but no n-gram twin for them runs the encoder for every
            // request, so that every request gets its signals
            (Some(c), Some(n))
                if options.cascade && (signals.is_none() || lexical_signals.is_some()) =>
            {
                Some(Cascade {
                    head: heads.load(v.open(LEXICAL_HEAD_FILE)?, n.len(), labels)?,
                    exit: c.lexical_exit,
                    calibration: Calibration {
                        temperature: 1.0,
                        ..calibration.clone()
                    },
                    signals: lexical_signals,
                })
            }
            _ => None,
        };
        let shared = heads.shared;
        v.check_unread()?;
        let heads_ms = started.elapsed().as_millis() as u64 - beside_ms;
        let mut sessions = Vec::new();
        for _ in 0..options.sessions.max(1) {
            let mut builder = session_builder(env, options.intra_threads)
                .map_err(|e| model_err(e.to_string()))?;
            for (name, value) in &shared {
                builder = builder
                    .with_initializer(name, value.clone())
                    .map_err(|e| model_err(format!("{graph}: sharing {name}: {e}")))?;
            }
            let session = builder
                .commit_from_memory(&bytes)
                .map_err(|e| model_err(format!("{graph}: {e}")))?;
            sessions.push(Mutex::new(session));
        }
        drop(bytes);
        let sessions_ms = started.elapsed().as_millis() as u64 - beside_ms - heads_ms;
        tracing::debug!(
            read_ms,
            tokenizer_ms,
            vocabulary_ms,
            heads_ms,
            sessions_ms,
            "model loaded: graph read beside tokenizer and n-gram vocabulary, then lexical \
             heads, sessions"
        );
        if let (Some(s), Some(session)) = (&signals, sessions.first()) {
            let session = session
                .lock()
                .map_err(|_| model_err("session lock poisoned".into()))?;
            for name in [&s.sentiment, &s.frustration] {
                if !session.outputs().iter().any(|o| o.name() == name.as_str()) {
                    return Err(model_err(format!(
                        "model.toml [signals] names the output {name:?}, but model.onnx has no \
                         such output"
                    )));
                }
            }
        }
        Ok(OnnxClassifier {
            sessions,
            next: AtomicUsize::new(0),
            encoder,
            ngrams,
            cascade,
            signals,
            calibration,
            labels: v.labels,
            version: v.version,
            shared_weights: shared.iter().map(|(name, _)| name.clone()).collect(),
        })
    }

    /// The graph's initializers whose numbers the sessions share with a lexical head
    /// (held once, not twice).
    pub fn shared_weights(&self) -> &[String] {
        &self.shared_weights
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// Token ids and n-gram features of one text: the work that needs no session.
    pub fn prepare_text(&self, text: &str) -> Result<Prepared, Error> {
        Ok(Prepared {
            text: text.to_string(),
            token_ids: self.encoder.encode(text)?.0,
            ngrams: self.ngrams.as_ref().map(|n| n.features(text)),
            language: None,
        })
    }

    fn prepare_all(&self, texts: &[&str]) -> Result<Vec<Prepared>, Error> {
        texts.iter().map(|t| self.prepare_text(t)).collect()
    }

    /// Raw logits, one row per text, in order.
    pub fn logits(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let prepared = self.prepare_all(texts)?;
        self.logits_prepared(&prepared.iter().collect::<Vec<_>>())
    }

    /// Raw logits of prepared texts, one row each, in order.
    pub fn logits_prepared(&self, batch: &[&Prepared]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(self
            .outputs_prepared(batch)?
            .into_iter()
            .map(|o| o.logits)
            .collect())
    }

    /// What the graph gives for prepared texts, one each, in order. Each text is its own
    /// model call: the graph quantizes its activations with one scale per call, so texts
    /// that shared a call would move each other's answers (by up to ~1 in a logit), and a
    /// request's answer would depend on what else the box was reading at the time. Alone,
    /// a text gets the same answer in the service, in `casegraph run` and in `classify`;
    /// and a call pads nothing, which on CPU costs less than the calls it saves (ADR 0027).
    pub fn outputs_prepared(&self, batch: &[&Prepared]) -> Result<Vec<Output>, Error> {
        let mut rows = Vec::with_capacity(batch.len());
        for prepared in batch {
            let mut row = self.run(std::slice::from_ref(prepared))?;
            rows.push(
                row.pop()
                    .ok_or_else(|| Error::Inference("the model returned no row".into()))?,
            );
        }
        Ok(rows)
    }

    /// The whole model's predictions for prepared texts, in order.
    fn decide_all(&self, batch: &[&Prepared]) -> Result<Vec<Prediction>, Error> {
        Ok(self
            .outputs_prepared(batch)?
            .into_iter()
            .zip(batch)
            .map(|(o, p)| Prediction {
                signals: o.signals,
                ..self.calibration.decide(
                    &o.logits,
                    p.language.as_deref(),
                    &self.labels,
                    &self.version,
                )
            })
            .collect())
    }

    fn run(&self, batch: &[&Prepared]) -> Result<Vec<Output>, Error> {
        let rows: Vec<&[i64]> = batch.iter().map(|p| p.token_ids.as_slice()).collect();
        let (ids, mask, len) = self.encoder.pad(&rows);
        let shape = [batch.len(), len];
        let ids = Tensor::from_array((shape, ids)).map_err(ort_err)?;
        let mask = Tensor::from_array((shape, mask)).map_err(ort_err)?;
        // take a free session if there is one, else wait for the next in turn
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        let mut guard = (0..n)
            .find_map(|i| self.sessions[(start + i) % n].try_lock().ok())
            .map_or_else(
                || {
                    self.sessions[start % n]
                        .lock()
                        .map_err(|_| ort_err("session lock poisoned"))
                },
                Ok,
            )?;
        let mut inputs = ort::inputs!["input_ids" => ids, "attention_mask" => mask];
        if self.ngrams.is_some() {
            let rows: Vec<&Sparse> = batch
                .iter()
                .map(|p| {
                    p.ngrams.as_ref().ok_or_else(|| {
                        Error::Inference("a request was prepared without its n-grams".into())
                    })
                })
                .collect::<Result<_, _>>()?;
            let (gids, gvals, width) = Ngrams::pad(&rows);
            let gshape = [batch.len(), width];
            inputs.push((
                "ngram_ids".into(),
                Tensor::from_array((gshape, gids)).map_err(ort_err)?.into(),
            ));
            inputs.push((
                "ngram_values".into(),
                Tensor::from_array((gshape, gvals)).map_err(ort_err)?.into(),
            ));
        }
        let outputs = guard.run(inputs).map_err(ort_err)?;
        let (shape, data) = outputs["logits"]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        let width = usize::try_from(shape[1]).map_err(ort_err)?;
        if width != self.labels.len() {
            return Err(Error::Inference(format!(
                "the model has {width} outputs but {} labels",
                self.labels.len()
            )));
        }
        let signals = match &self.signals {
            Some(s) => {
                let sentiment = output_rows(&outputs, &s.sentiment, 3, batch.len())?;
                let frustration = output_rows(&outputs, &s.frustration, 1, batch.len())?;
                sentiment
                    .chunks(3)
                    .zip(frustration)
                    .map(|(z, &f)| Some(s.reading.read(z, f)))
                    .collect()
            }
            None => vec![None; batch.len()],
        };
        Ok(data
            .chunks(width)
            .zip(signals)
            .map(|(row, signals)| Output {
                logits: row.to_vec(),
                signals,
            })
            .collect())
    }
}

/// The card's `[signals]` as the adapter reads them.
fn signal_outputs(s: &SignalsSection) -> Result<SignalOutputs, String> {
    Ok(SignalOutputs {
        sentiment: s.sentiment.clone(),
        frustration: s.frustration.clone(),
        reading: Reading {
            tones: s.tones()?,
            flag_at: s.frustration_flag_at,
        },
    })
}

/// The values of output `name`, which must be [rows, width].
fn output_rows<'a>(
    outputs: &'a ort::session::SessionOutputs<'_>,
    name: &str,
    width: usize,
    rows: usize,
) -> Result<&'a [f32], Error> {
    let value = outputs.get(name).ok_or_else(|| {
        Error::Inference(format!(
            "the model card names output {name:?}, but the graph has no such output"
        ))
    })?;
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
    if data.len() != rows * width {
        return Err(Error::Inference(format!(
            "output {name:?} has shape {shape:?}, expected [{rows}, {width}]"
        )));
    }
    Ok(data)
}

impl OnnxClassifier {
    /// Predictions for texts, each with its request's language (which picks the
    /// calibration, as the server's classifier does), in order.
    pub fn classify_in(
        &self,
        texts: &[&str],
        languages: &[&str],
    ) -> Result<Vec<Prediction>, Error> {
        // Zipping unequal lists would leave the last texts without their language (and
        // their calibration) without a word.
        if texts.len() != languages.len() {
            return Err(Error::Inference(format!(
                "{} texts but {} languages: each text needs its language",
                texts.len(),
                languages.len()
            )));
        }
        let mut prepared = self.prepare_all(texts)?;
        for (p, language) in prepared.iter_mut().zip(languages) {
            p.language = Some(language.to_string());
        }
        self.classify_all(prepared)
    }

    fn classify_all(&self, prepared: Vec<Prepared>) -> Result<Vec<Prediction>, Error> {
        let mut answers: Vec<Option<Prediction>> =
            prepared.iter().map(|p| self.decide_early(p)).collect();
        let rest: Vec<&Prepared> = prepared
            .iter()
            .zip(&answers)
            .filter_map(|(p, a)| a.is_none().then_some(p))
            .collect();
        let mut full = self.decide_all(&rest)?.into_iter();
        for answer in answers.iter_mut().filter(|a| a.is_none()) {
            *answer = full.next();
        }
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| Error::Inference("the model returned too few rows".into())))
            .collect()
    }
}

impl Classifier for OnnxClassifier {
    fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, Error> {
        self.classify_all(self.prepare_all(texts)?)
    }

    fn prepare(&self, text: &str) -> Result<Prepared, Error> {
        self.prepare_text(text)
    }

    fn decide_early(&self, prepared: &Prepared) -> Option<Prediction> {
        let cascade = self.cascade.as_ref()?;
        cascade.decide(prepared.ngrams.as_ref()?, &self.labels, &self.version)
    }

    fn classify_prepared(&self, batch: &[Prepared]) -> Result<Vec<Prediction>, Error> {
        self.decide_all(&batch.iter().collect::<Vec<_>>())
    }

    fn model(&self) -> &str {
        &self.version
    }
}

/// A session builder as every session of the model is made: the graph fully optimized but
/// for [`DISABLED_OPTIMIZERS`], `intra_threads` threads that sleep between operators.
fn session_builder(
    env: &ort::environment::Environment,
    intra_threads: usize,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(intra_threads.max(1))?
        // the box's cores are shared with HTTP, case workers and commits: threads
        // waiting for the next operator sleep instead of spinning
        .with_intra_op_spinning(false)?
        .with_inter_threads(1)?
        .with_config_entry(DISABLED_OPTIMIZERS_KEY, DISABLED_OPTIMIZERS)
        .map_err(Into::into)
}

/// ONNX Runtime's session setting naming graph rewrites it must not make (`;`-separated).
const DISABLED_OPTIMIZERS_KEY: &str = "optimization.disable_specified_optimizers";

/// The rewrites left out (ADR 0029). Fusing each residual `Add` with the `LayerNormalization`
/// after it gives a `SkipLayerNormalization` whose CPU kernel took 45 µs at 22 tokens × 384
/// where the two operators it replaces take ~15: a sixth of the encoder's time, for the
/// short texts a box reads.
const DISABLED_OPTIMIZERS: &str = "SkipLayerNormFusion";

/// The largest graph a compressed model file may unpack to: a corrupt or hostile file
/// (its checksum matched a card someone wrote) cannot fill the memory.
const MAX_GRAPH_BYTES: u64 = 512 << 20;

/// The bytes of a graph file read from `file`, unpacked when it is compressed with zstd.
fn read_graph(file: &mut Checked, compressed: bool) -> Result<Vec<u8>, String> {
    use std::io::{BufRead as _, Read as _};
    if !compressed {
        if file.len > MAX_GRAPH_BYTES {
            return Err(format!("larger than {} MiB", MAX_GRAPH_BYTES >> 20));
        }
        let mut bytes = Vec::with_capacity(file.len as usize);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        return Ok(bytes);
    }
    let mut input = std::io::BufReader::with_capacity(super::READ_PIECE, file);
    // The frame header says how large the graph is (when the packer wrote it): one buffer
    // of that size, not one that doubles past it while it fills.
    let size =
        zstd::zstd_safe::get_frame_content_size(input.fill_buf().map_err(|e| e.to_string())?)
            .ok()
            .flatten()
            .filter(|&n| n <= MAX_GRAPH_BYTES);
    let decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(size.unwrap_or(0) as usize);
    decoder
        .take(MAX_GRAPH_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("not a zstd stream: {e}"))?;
    if bytes.len() as u64 > MAX_GRAPH_BYTES {
        return Err(format!(
            "unpacks to more than {} MiB",
            MAX_GRAPH_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// A lexical head's weights held in a tensor that a session takes as the graph's
/// initializer of the same numbers.
#[derive(Debug)]
struct SessionWeights(Arc<DynValue>);

impl Weights for SessionWeights {
    fn values(&self) -> &[f16] {
        // made from a float16 tensor (`Heads::load`), so the extraction cannot fail
        self.0.try_extract_tensor::<f16>().map_or(&[], |(_, v)| v)
    }
}

/// Loads the lexical heads, sharing each one's weights with the sessions where the graph
/// holds the same numbers (same element type, shape and bytes) as an initializer.
struct Heads<'a> {
    initializers: Vec<graph::Initializer<'a>>,
    /// (initializer name, the tensor the sessions take for it)
    shared: Vec<(String, Arc<DynValue>)>,
}

impl<'a> Heads<'a> {
    fn new(bytes: &'a [u8]) -> Heads<'a> {
        // A graph this reader does not understand shares nothing; ONNX Runtime judges it.
        let initializers = graph::initializers(bytes).unwrap_or_else(|e| {
            tracing::warn!("{e}: the lexical heads keep their own weights");
            Vec::new()
        });
        Heads {
            initializers,
            shared: Vec::new(),
        }
    }

    fn load(
        &mut self,
        mut file: Checked,
        grams: usize,
        labels: usize,
    ) -> Result<LexicalHead, Error> {
        let path = file.path().to_path_buf();
        let err = |reason: String| Error::Model {
            dir: path.display().to_string(),
            reason,
        };
        let len = file.len;
        let read = super::ngrams::read_head(&mut file, len, grams, labels);
        file.finish()?;
        let (weights, bias) = read.map_err(err)?;
        let dims = [grams as i64, labels as i64];
        let same = self.initializers.iter().find(|i| {
            i.data_type == graph::FLOAT16
                && i.dims == dims
                && i.raw.len() == weights.len() * 2
                && i.raw
                    .chunks_exact(2)
                    .zip(&weights)
                    .all(|(b, w)| *b == w.to_le_bytes())
        });
        let Some(initializer) = same else {
            return LexicalHead::with_weights(Box::new(weights), bias).map_err(err);
        };
        let tensor =
            Tensor::from_array(([grams, labels], weights)).map_err(|e| err(e.to_string()))?;
        let value = Arc::new(tensor.into_dyn());
        let shared = SessionWeights(value.clone());
        if shared.values().len() != grams * labels {
            return Err(err("the shared weights lost their shape".into()));
        }
        tracing::debug!(
            head = %path.display(),
            initializer = initializer.name,
            "the lexical head and the graph hold the same weights: held once"
        );
        self.shared.push((initializer.name.to_string(), value));
        LexicalHead::with_weights(Box::new(shared), bias).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> TextEncoder {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en/tokenizer.json");
        TextEncoder::from_file(&path, "query: ", 16).expect("shipped tokenizer loads")
    }

    #[test]
    fn texts_are_wrapped_prefixed_and_cut() {
        let t = shipped();
        let toks = t.tokens("Meine Karte ist weg").expect("tokens");
        assert_eq!(toks.first().map(String::as_str), Some("<s>"));
        assert_eq!(toks.last().map(String::as_str), Some("</s>"));
        // e5's "query: " prefix, as the training pipeline's tokenizer splits it
        assert_eq!(toks[1..4], ["\u{2581}que", "ry", ":"]);
        let long = t.encode(&"Überweisung ".repeat(40)).expect("ids");
        assert_eq!(long.0.len(), 16, "cut to max_tokens");
        let end = t.encode("x").expect("ids");
        assert_eq!(long.0.last(), end.0.last(), "the cut keeps </s>");
    }

    #[test]
    fn german_and_english_words_need_no_unknown_pieces() {
        let t = shipped();
        let unk = t.tokenizer.token_to_id("<unk>").map(i64::from);
        for text in [
            "Die Rückerstattung für meine Überweisung fehlt, Größe €",
            "Why was my top-up reverted?",
        ] {
            let ids = t.encode(text).expect("ids");
            assert!(!ids.0.iter().any(|i| Some(*i) == unk), "{text}: {ids:?}");
        }
    }

    fn shipped_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en")
    }

    /// A copy of the shipped model whose graph is stored plain (`model.onnx`), after
    /// `edit` has had its way with the graph's bytes; the card lists the new checksum.
    fn plain_copy(edit: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(shipped_dir()).expect("shipped model") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n != "model.onnx.zst") {
                std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
        let mut shipped = ModelCard::load_verified(&shipped_dir()).expect("shipped card");
        let mut file = shipped.open("model.onnx.zst").expect("graph");
        let mut bytes = read_graph(&mut file, true).expect("graph");
        file.finish().expect("the shipped graph matches its card");
        edit(&mut bytes);
        std::fs::write(dir.path().join("model.onnx"), &bytes).expect("write graph");
        let sha = super::super::card::sha256_file(&dir.path().join("model.onnx")).expect("sha");
        let card = std::fs::read_to_string(dir.path().join("model.toml")).expect("card");
        let card: String = card
            .lines()
            .map(|l| {
                if l.starts_with("\"model.onnx.zst\"") {
                    format!("\"model.onnx\" = \"{sha}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("model.toml"), card).expect("write card");
        dir
    }

    const TEXT: &str = "My card has not arrived yet, where is it?";

    fn close(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
        a.len() == b.len()
            && a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(x, y)| (x - y).abs() < 1e-3)
    }

    #[test]
    fn texts_and_languages_of_different_lengths_are_refused() {
        let model = OnnxClassifier::load(&shipped_dir(), &Options::default()).expect("loads");
        let err = model
            .classify_in(&[TEXT, TEXT], &["en"])
            .expect_err("one language for two texts");
        assert!(err.to_string().contains("2 texts but 1 languages"), "{err}");
        let answers = model.classify_in(&[TEXT], &["en"]).expect("one each");
        assert_eq!(answers.len(), 1);
    }

    #[test]
    fn the_n_gram_head_is_held_once_and_answers_do_not_change() {
        let shipped = OnnxClassifier::load(&shipped_dir(), &Options::default()).expect("loads");
        assert_eq!(
            shipped.shared_weights(),
            ["ngram_w"],
            "the graph's n-gram weights"
        );
        let plain = plain_copy(|_| {});
        let copy = OnnxClassifier::load(plain.path(), &Options::default()).expect("loads");
        assert_eq!(
            copy.shared_weights(),
            ["ngram_w"],
            "a plain graph shares too"
        );
        // ONNX Runtime's results move in the last bits from one run to the next
        assert!(close(
            &shipped.logits(&[TEXT]).expect("logits"),
            &copy.logits(&[TEXT]).expect("logits")
        ));
        let p = shipped.prepare_text(TEXT).expect("prepared");
        assert!(shipped.decide_early(&p) == copy.decide_early(&p));
    }

    #[test]
    fn a_graph_whose_numbers_differ_from_the_head_keeps_its_own() {
        let shipped = OnnxClassifier::load(&shipped_dir(), &Options::default()).expect("loads");
        let features = shipped
            .prepare_text(TEXT)
            .expect("prepared")
            .ngrams
            .expect("n-grams");
        let labels = shipped.labels().len();
        // the graph's weights of the text's first gram, for its first label, made large
        let changed = plain_copy(|bytes| {
            let base = bytes.as_ptr() as usize;
            let at = graph::initializers(bytes)
                .expect("graph")
                .iter()
                .find(|i| i.name == "ngram_w")
                .map(|i| i.raw.as_ptr() as usize - base)
                .expect("ngram_w");
            let row = at + features[0].0 as usize * labels * 2;
            bytes[row..row + 2].copy_from_slice(&f16::from_f32(8.0).to_le_bytes());
        });
        let copy = OnnxClassifier::load(changed.path(), &Options::default()).expect("loads");
        assert!(
            copy.shared_weights().is_empty(),
            "{:?}",
            copy.shared_weights()
        );
        assert!(
            !close(
                &shipped.logits(&[TEXT]).expect("logits"),
                &copy.logits(&[TEXT]).expect("logits")
            ),
            "the graph computes with its own numbers"
        );
    }

    #[test]
    fn the_graph_runs_without_the_rewrites_the_engine_leaves_out() {
        let env = runtime::environment().expect("ONNX Runtime loads");
        let packed = std::fs::read(shipped_dir().join("model.onnx.zst")).expect("shipped graph");
        let graph = zstd::decode_all(packed.as_slice()).expect("unpacks");
        let dir = tempfile::tempdir().expect("tempdir");
        let optimized = dir.path().join("optimized.onnx");
        session_builder(env, 1)
            .and_then(|b| b.with_optimized_model_path(&optimized).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(&graph))
            .expect("a session");
        let written = std::fs::read(&optimized).expect("the optimized graph");
        let has = |op: &[u8]| written.windows(op.len()).any(|w| w == op);
        assert!(
            !has(b"SkipLayerNormalization"),
            "the residual adds were fused into SkipLayerNormalization"
        );
        assert!(has(b"LayerNormalization") && has(b"DynamicQuantizeMatMul"));
        // the training scripts measure the graph as the engine runs it
        let scripts = include_str!("../../../models/training/engine.py");
        assert!(
            scripts.contains(&format!("DISABLED_OPTIMIZERS = \"{DISABLED_OPTIMIZERS}\"")),
            "models/training/engine.py disables other rewrites than the engine"
        );
    }

    #[test]
    fn a_text_gets_the_same_answer_whatever_else_is_read_beside_it() {
        let model = OnnxClassifier::load(&shipped_dir(), &Options::default()).expect("loads");
        let letter = "Sehr geehrte Damen und Herren, am 3. Mai habe ich eine Überweisung über \
                      250 EUR an meinen Vermieter veranlasst, die bis heute nicht angekommen \
                      ist. Bitte prüfen Sie den Vorgang und teilen Sie mir mit, wo das Geld ist.";
        let texts = [
            letter,
            "card",
            TEXT,
            "I was charged twice for the same coffee",
            "Wo bleibt meine Karte?",
            "hi",
        ];
        let alone: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| model.logits(&[t]).expect("alone").remove(0))
            .collect();
        // in one batch, and in another order with other company
        let together = model.logits(&texts).expect("batch");
        let mut reversed: Vec<&str> = texts.iter().rev().copied().collect();
        reversed.insert(2, "Ich möchte mein Konto kündigen, sofort!");
        let mut other = model.logits(&reversed).expect("other batch");
        other.remove(2);
        other.reverse();
        // (a batch sharing one quantization scale moved these by 0.4 to 0.9; what is left
        // is the last bit of a float)
        let apart = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        for (i, text) in texts.iter().enumerate() {
            assert!(apart(&together[i], &alone[i]) < 1e-4, "{text:?} in a batch");
            assert!(
                apart(&other[i], &alone[i]) < 1e-4,
                "{text:?} in other company"
            );
        }
    }

    #[test]
    fn a_batch_is_padded_with_a_mask() {
        let t = shipped();
        let a = t.encode("card").expect("ids");
        let b = t.encode("my card has not arrived").expect("ids");
        let (ids, mask, len) = t.pad(&[&a.0, &b.0]);
        assert_eq!(len, b.0.len());
        assert_eq!(&ids[..a.0.len()], &a.0[..]);
        assert_eq!(ids[a.0.len()], t.pad_id);
        assert_eq!(mask.iter().sum::<i64>() as usize, a.0.len() + b.0.len());
    }
}
