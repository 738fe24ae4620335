//! The classifier the service and `casegraph run` use: the request's channel intake
//! (letter body, a chat's customer turns, a form's labelled fields), then the ONNX intent
//! model through the micro-batcher.
//!
//! A back-office system that already knows a request's intent may say so in
//! `metadata.intent` (and `metadata.confidence`, default 1.0); the model is then not asked,
//! and the classification says `"source": "metadata"` so that the audit trail shows who
//! decided. Over HTTP only a token with the `state_intent` capability (or an admin's) may
//! do that: for every other sender the API turns the stated intent into
//! `metadata.intent_hint` ([`demote_stated_intent`]), the model decides, and its
//! classification carries the hint (`"hint"`) beside its own answer. Everything else is classified by the model (`"source": "model"`), whose
//! `"stage"` says whether its n-gram half alone was sure enough (`"lexical"`, the encoder
//! was not run; the card's `[cascade]`) or the whole model decided (`"full"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use casegraph_engine::classify::batch::Batcher;
use casegraph_engine::classify::onnx::OnnxClassifier;
use casegraph_engine::intake::{self, Channel};
use casegraph_engine::runner::Classifier;
use serde_json::{Value, json};

use crate::config::{DEFAULT_MODELS_DIR, InferenceOptions, Variant};

/// Where a stated intent is kept when its sender may not decide the classification.
pub const HINT_KEY: &str = "intent_hint";

/// Longest hint (in bytes) that is recorded as text: an intent label is short.
const MAX_HINT: usize = 64;

/// What a classification made from `metadata.intent` reports as its model.
pub const METADATA_MODEL: &str = "request-metadata";

/// The intent model behind the micro-batcher, with the request's intake in front of it.
#[derive(Debug)]
pub struct ModelClassifier {
    batcher: Batcher,
    model: String,
    /// The model's labels (intents and its out-of-scope label).
    labels: Vec<String>,
    /// How long loading took (files verified, sessions built).
    pub load_time: Duration,
}

impl ModelClassifier {
    /// Loads `<models_dir>/<options.model>` with the sessions and batching `options` ask
    /// for. The files are verified against the model card first.
    pub fn load(models_dir: &Path, options: &InferenceOptions) -> anyhow::Result<ModelClassifier> {
        let started = Instant::now();
        let dir = options.model_dir(models_dir);
        if options.variant != Variant::Int8 {
            anyhow::bail!(
                "inference.variant = \"{}\": the model {} ships int8 weights only (model.onnx); \
                 set inference.variant = \"int8\"",
                options.variant.as_str(),
                dir.display()
            );
        }
        let onnx = OnnxClassifier::load(&dir, &options.session_options())?;
        let model = casegraph_engine::classify::Classifier::model(&onnx).to_string();
        let labels = onnx.labels().to_vec();
        let batcher = Batcher::start(Arc::new(onnx), &options.batch_options())?;
        Ok(ModelClassifier {
            batcher,
            model,
            labels,
            load_time: started.elapsed(),
        })
    }

    /// The model version every prediction carries.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl Classifier for ModelClassifier {
    fn classify(&self, request: &Value) -> Result<Value, String> {
        let norm = normalize(request)?;
        let language = stated_language(request).unwrap_or(norm.language.as_str());
        if let Some(given) = from_metadata(request, language) {
            return Ok(given);
        }
        let mut answer = self.by_model(&norm.text, language)?;
        if let (Some(hint), Value::Object(a)) = (hint(request, &self.labels), &mut answer) {
            a.insert("hint".into(), hint);
        }
        Ok(answer)
    }

    fn labels(&self) -> Option<&[String]> {
        Some(&self.labels)
    }
}

impl ModelClassifier {
    fn by_model(&self, text: &str, language: &str) -> Result<Value, String> {
        if text.is_empty() {
            // Nothing to read (e.g. a form of unlabelled numbers): a human decides.
            return Ok(json!({
                "intent": null, "confidence": 0.0, "top": [], "out_of_scope": true,
                "language": language, "model": self.model, "source": "model",
                "reason": "no text to classify",
            }));
        }
        let p = self.batcher.classify(text).map_err(|e| e.to_string())?;
        Ok(json!({
            "intent": p.intent,
            "confidence": round(p.confidence),
            "top": p.top.iter().map(|s| json!({"intent": s.intent, "confidence": round(s.confidence)})).collect::<Vec<_>>(),
            "out_of_scope": p.out_of_scope,
            "language": language,
            "model": p.model,
            "source": "model",
            "stage": p.stage.as_str(),
        }))
    }
}

/// Confidences to four places: the audit trail and API answers do not need float noise.
fn round(c: f32) -> f64 {
    (f64::from(c) * 10_000.0).round() / 10_000.0
}

/// The request's text made ready for the model by its channel's intake.
pub fn normalize(request: &Value) -> Result<intake::Normalized, String> {
    let channel = match request.get("channel").and_then(Value::as_str) {
        Some("letter") => Channel::Letter,
        Some("form") => Channel::Form,
        Some("chat") | None => Channel::Chat,
        Some(other) => return Err(format!("unknown channel `{other}`")),
    };
    let text = request.get("text").and_then(Value::as_str).unwrap_or("");
    let fields = request.get("fields").and_then(Value::as_object);
    Ok(normalize_parts(channel, text, fields.into_iter().flatten()))
}

/// [`normalize`] for a request already taken apart; form values that are not strings are
/// read as their JSON text (`null` as empty).
pub fn normalize_parts<'a>(
    channel: Channel,
    text: &str,
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> intake::Normalized {
    let fields: BTreeMap<String, String> = fields
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    intake::normalize(channel, text, &fields)
}

fn stated_language(request: &Value) -> Option<&str> {
    request
        .get("language")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
}

/// The classification a request brings along in `metadata.intent`, if any.
fn from_metadata(request: &Value, language: &str) -> Option<Value> {
    let metadata = request.get("metadata")?;
    let intent = metadata
        .get("intent")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let confidence = metadata
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
        .unwrap_or(1.0);
    Some(json!({
        "intent": intent,
        "confidence": confidence,
        "top": [{ "intent": intent, "confidence": confidence }],
        "out_of_scope": false,
        "language": language,
        "model": METADATA_MODEL,
        "source": "metadata",
    }))
}

/// Turns a stated classification (`metadata.intent`, `metadata.confidence`) into a hint,
/// `metadata.intent_hint: {"intent", "confidence"}`, which the model's answer records but
/// does not follow. The API calls it for senders without the `state_intent` capability.
pub fn demote_stated_intent(request: &mut Value) {
    let Some(m) = request.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let intent = m.remove("intent");
    let confidence = m.remove("confidence");
    if intent.is_some() || confidence.is_some() {
        m.insert(
            HINT_KEY.into(),
            json!({ "intent": intent, "confidence": confidence }),
        );
    }
}

/// The hint a request carries, as the classification records it. Only a label of the
/// model is recorded as text: the classification goes into the audit chain, which erasure
/// cannot change, and a free-form hint may hold anything (a name, an account number).
fn hint(request: &Value, labels: &[String]) -> Option<Value> {
    let h = request.get("metadata")?.get(HINT_KEY)?;
    let stated = h.get("intent").and_then(Value::as_str)?;
    let known = stated.len() <= MAX_HINT && labels.iter().any(|l| l == stated);
    let confidence = h
        .get("confidence")
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c));
    Some(json!({
        "intent": known.then_some(stated),
        "known": known,
        "confidence": confidence,
        "source": "metadata",
    }))
}

/// Where the models are: `models/` under the working directory or one of its parents,
/// beside the executable's project, or in the source tree this binary was built from.
pub fn default_models_dir() -> PathBuf {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let default = InferenceOptions::default().model;
    roots
        .iter()
        .map(|r| r.join(DEFAULT_MODELS_DIR))
        .find(|d| d.join(&default).join("model.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stated_intent_is_taken_from_metadata_and_says_so() {
        let r = from_metadata(
            &json!({"metadata": {"intent": "request_refund", "confidence": 0.8}}),
            "de",
        )
        .expect("given");
        assert_eq!(r["intent"], "request_refund");
        assert_eq!(r["confidence"], 0.8);
        assert_eq!(r["source"], "metadata");
        assert_eq!(r["language"], "de");
        assert!(from_metadata(&json!({"metadata": {"intent": ""}}), "en").is_none());
        assert!(from_metadata(&json!({"text": "hello"}), "en").is_none());
    }

    #[test]
    fn a_demoted_intent_is_a_hint_that_names_only_known_labels() {
        let mut r =
            json!({"metadata": {"intent": "request_refund", "confidence": 1.0, "crm": "x"}});
        demote_stated_intent(&mut r);
        assert!(from_metadata(&r, "en").is_none(), "the model decides: {r}");
        assert_eq!(r["metadata"]["crm"], "x");
        let labels = ["request_refund".to_string(), "card_arrival".to_string()];
        let h = hint(&r, &labels).expect("hint");
        assert_eq!(h["intent"], "request_refund");
        assert_eq!(h["known"], true);
        assert_eq!(h["confidence"], 1.0);
        let mut r = json!({"metadata": {"intent": "anna.schmidt.1985"}});
        demote_stated_intent(&mut r);
        let h = hint(&r, &labels).expect("hint");
        assert_eq!(
            h["intent"],
            Value::Null,
            "free text stays out of the audit chain"
        );
        assert_eq!(h["known"], false);
        let mut untouched = json!({"metadata": {"crm": "x"}});
        demote_stated_intent(&mut untouched);
        assert_eq!(untouched, json!({"metadata": {"crm": "x"}}));
        assert!(hint(&untouched, &labels).is_none());
    }

    #[test]
    fn a_letter_is_reduced_to_its_body_and_a_form_to_its_labelled_fields() {
        let n = normalize(&json!({"channel": "letter", "text":
            "Erika Mustermann\nHauptstr. 1\n12345 Berlin\n\nBetreff: Karte\n\nSehr geehrte Damen und Herren,\nmeine Karte ist nicht angekommen.\nMit freundlichen Grüßen\nErika Mustermann"}))
        .expect("normalized");
        assert!(n.text.contains("Karte ist nicht angekommen"), "{}", n.text);
        assert!(!n.text.contains("Hauptstr"), "{}", n.text);
        let n = normalize(&json!({"channel": "form", "text": "", "fields": {"reason": "card not arrived", "amount": 12}}))
            .expect("normalized");
        assert!(n.text.contains("card not arrived"), "{}", n.text);
        assert!(normalize(&json!({"channel": "fax", "text": "x"})).is_err());
    }
}
