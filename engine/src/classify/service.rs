//! The classification service the box runs: the request's intake (made once, carried by
//! [`Received`]), then the intent model through the micro-batcher ([`Batcher`]) over its
//! sessions, whose n-gram half may decide alone (the card's `[cascade]`).
//!
//! A back-office system that already knows a request's intent may say so in
//! `metadata.intent` (and `metadata.confidence`, default 1.0); the model is then not asked,
//! and the classification says `"source": "metadata"` so that the audit trail shows who
//! decided. Over HTTP only a token with the `state_intent` capability (or an admin's) may
//! do that: for every other sender the API turns the stated intent into
//! `metadata.intent_hint` ([`crate::intake::Request::demote_stated_intent`]), the model
//! decides, and its classification carries the hint beside its own answer.

use std::sync::Arc;

use super::batch::{BatchOptions, Batcher};
use super::classification::{
    Alternative, Classification, FRUSTRATION, Hint, METADATA_MODEL, SENTIMENT, Source,
    check_stated_signal,
};
use super::{Classifier, Error};
use crate::intake::{HINT_KEY, Received, Request};

/// Longest hint (in bytes) that is recorded as text: an intent label is short.
const MAX_HINT: usize = 64;

/// The intent model behind the micro-batcher, with the metadata rule in front of it.
#[derive(Debug)]
pub struct Model {
    batcher: Batcher,
    model: String,
    /// The model's labels (intents and its out-of-scope label).
    labels: Vec<String>,
}

impl Model {
    /// Serves `classifier` through a batcher with `options`; `labels` are the ones a
    /// reviewer's correction may name.
    pub fn start(
        classifier: Arc<dyn Classifier>,
        labels: Vec<String>,
        options: &BatchOptions,
    ) -> Result<Model, Error> {
        let model = classifier.model().to_string();
        let batcher = Batcher::start(classifier, options)?;
        Ok(Model {
            batcher,
            model,
            labels,
        })
    }

    /// Loads the verified model directory `dir` with `sessions` and serves it.
    #[cfg(feature = "onnx")]
    pub fn load(
        dir: &std::path::Path,
        sessions: &super::onnx::Options,
        batching: &BatchOptions,
    ) -> Result<Model, Error> {
        let onnx = super::onnx::OnnxClassifier::load(dir, sessions)?;
        let labels = onnx.labels().to_vec();
        Model::start(Arc::new(onnx), labels, batching)
    }

    /// The model version every prediction carries.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn by_model(&self, text: &str, language: &str) -> Result<Classification, Error> {
        if text.is_empty() {
            // Nothing to read (e.g. a form of unlabelled numbers): a human decides.
            return Ok(Classification {
                top: Some(Vec::new()),
                out_of_scope: true,
                language: Some(language.to_string()),
                model: Some(self.model.clone()),
                source: Some(Source::Model),
                reason: Some("no text to classify".into()),
                ..Classification::new(None, 0.0)
            });
        }
        let p = self.batcher.classify(text, Some(language))?;
        Ok(Classification::predicted(p, language))
    }
}

impl super::Service for Model {
    fn classify(&self, received: &Received) -> Result<Classification, Error> {
        let language = received.language();
        if let Some(given) = from_metadata(&received.request, language) {
            return Ok(given);
        }
        let mut answer = self.by_model(&received.intake.text, language)?;
        answer.hint = hint(&received.request, &self.labels);
        Ok(answer)
    }

    fn labels(&self) -> Option<&[String]> {
        Some(&self.labels)
    }
}

/// The classification a request brings along in `metadata.intent`, if any.
fn from_metadata(request: &Request, language: &str) -> Option<Classification> {
    let intent = request
        .metadata("intent")?
        .as_str()
        .filter(|s| !s.is_empty())?;
    let confidence = request
        .metadata("confidence")
        .and_then(serde_json::Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
        .unwrap_or(1.0);
    let mut stated = Classification {
        top: Some(vec![Alternative {
            intent: intent.to_string(),
            confidence,
        }]),
        language: Some(language.to_string()),
        model: Some(METADATA_MODEL.into()),
        source: Some(Source::Metadata),
        ..Classification::new(Some(intent.to_string()), confidence)
    };
    // The sender may state the customer's mood too; only the agreed shapes are kept.
    for signal in [SENTIMENT, FRUSTRATION] {
        if let Some(v) = request
            .metadata(signal)
            .filter(|v| check_stated_signal(signal, v).is_ok())
        {
            stated.signals.insert(signal.into(), v.clone());
        }
    }
    Some(stated)
}

/// The hint a request carries, as the classification records it. Only a label of the
/// model is recorded as text: a free-form hint may hold anything (a name, an account
/// number).
fn hint(request: &Request, labels: &[String]) -> Option<Hint> {
    let h = request.metadata(HINT_KEY)?;
    let stated = h.get("intent").and_then(serde_json::Value::as_str)?;
    let known = stated.len() <= MAX_HINT && labels.iter().any(|l| l == stated);
    let confidence = h
        .get("confidence")
        .and_then(serde_json::Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c));
    Some(Hint {
        intent: known.then(|| stated.to_string()),
        known,
        confidence,
        source: Source::Metadata,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Prediction, Scored, Service, Stage};
    use super::*;
    use crate::intake::Channel;

    /// Answers every text with `card_arrival`, and counts the texts it was asked.
    #[derive(Debug, Default)]
    struct Fixed(std::sync::Mutex<Vec<String>>);

    impl Classifier for Fixed {
        fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Prediction>, Error> {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            seen.extend(texts.iter().map(|t| t.to_string()));
            Ok(texts
                .iter()
                .map(|_| Prediction {
                    intent: "card_arrival".into(),
                    confidence: 0.812_345,
                    top: vec![Scored {
                        intent: "card_arrival".into(),
                        confidence: 0.812_345,
                    }],
                    out_of_scope: false,
                    model: "fixed@1".into(),
                    stage: Stage::Full,
                    signals: None,
                })
                .collect())
        }

        fn model(&self) -> &str {
            "fixed@1"
        }
    }

    fn service() -> (Model, Arc<Fixed>) {
        let fixed = Arc::new(Fixed::default());
        let labels = vec!["card_arrival".to_string(), "request_refund".to_string()];
        let model = Model::start(fixed.clone(), labels, &BatchOptions::default()).expect("starts");
        (model, fixed)
    }

    fn request(value: serde_json::Value) -> Received {
        Received::new(serde_json::from_value(value).expect("a request"))
    }

    #[test]
    fn the_model_reads_the_intake_text_and_answers_in_the_stored_shape() {
        let (model, fixed) = service();
        let r = request(json!({"channel": "chat", "language": "en",
            "text": "Agent: Hello\nCustomer: where is my card?", "fields": {}}));
        let c = model.classify(&r).expect("classified");
        assert_eq!(
            fixed.0.lock().expect("lock").as_slice(),
            ["where is my card?"],
            "the model reads the customer's turns only"
        );
        assert_eq!(
            c.to_json(),
            json!({"intent": "card_arrival", "confidence": 0.8123,
                "top": [{"intent": "card_arrival", "confidence": 0.8123}], "out_of_scope": false,
                "language": "en", "model": "fixed@1", "source": "model", "stage": "full"})
        );
    }

    #[test]
    fn a_stated_intent_is_taken_from_metadata_and_says_so() {
        let (model, fixed) = service();
        let r = request(json!({"channel": "chat", "language": "de", "text": "x",
            "metadata": {"intent": "request_refund", "confidence": 0.8}}));
        let c = model.classify(&r).expect("classified");
        assert!(
            fixed.0.lock().expect("lock").is_empty(),
            "the model is not asked"
        );
        assert_eq!(c.intent.as_deref(), Some("request_refund"));
        assert_eq!(c.confidence, Some(0.8));
        assert_eq!(c.source, Some(Source::Metadata));
        assert_eq!(c.language.as_deref(), Some("de"));
        let mut empty = Request::text(Channel::Chat, "hello");
        empty.metadata = json!({"intent": ""}).as_object().cloned();
        assert!(from_metadata(&empty, "en").is_none());
    }

    #[test]
    fn a_demoted_intent_is_a_hint_that_names_only_known_labels() {
        let (model, _) = service();
        let mut r = Request::text(Channel::Chat, "my card");
        r.metadata = json!({"intent": "request_refund", "confidence": 1.0})
            .as_object()
            .cloned();
        r.demote_stated_intent();
        let c = model.classify(&Received::new(r)).expect("classified");
        assert_eq!(c.source, Some(Source::Model), "the model decides");
        let h = c.hint.expect("a hint");
        assert_eq!(h.intent.as_deref(), Some("request_refund"));
        assert!(h.known);
        assert_eq!(h.confidence, Some(1.0));
        let mut r = Request::text(Channel::Chat, "my card");
        r.metadata = json!({"intent": "anna.schmidt.1985"}).as_object().cloned();
        r.demote_stated_intent();
        let h = model
            .classify(&Received::new(r))
            .expect("classified")
            .hint
            .expect("a hint");
        assert_eq!(h.intent, None, "free text stays out of the audit chain");
        assert!(!h.known);
    }

    #[test]
    fn a_request_without_text_goes_to_a_human_without_the_model() {
        let (model, fixed) = service();
        let r = request(json!({"channel": "form", "language": "en", "fields": {}}));
        let c = model.classify(&r).expect("classified");
        assert!(fixed.0.lock().expect("lock").is_empty());
        assert!(c.out_of_scope);
        assert_eq!(c.reason.as_deref(), Some("no text to classify"));
    }
}
