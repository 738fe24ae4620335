//! What the classification service says about a request, typed: the seam between the
//! classifier and everything after it (routing, the runner, metrics, the API's answers).
//!
//! Its JSON is the one the audit trail, stored cases and `POST /v1/classify` have always
//! carried: a field that was absent stays absent, and facts this type does not name (from
//! a fixture, or stored by a later version) are kept in [`Classification::signals`] and
//! written back as they came.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signals::{FRUSTRATION_KEY, Frustration, SENTIMENT_KEY, Sentiment, Signals};
use super::{Error, Prediction, Stage};
use crate::intake::Received;

/// What a classification made from `metadata.intent` reports as its model.
pub const METADATA_MODEL: &str = "request-metadata";

/// What a classification reports as its model when the service failed.
pub const UNAVAILABLE_MODEL: &str = "unavailable";

/// The signal of the customer's sentiment in [`Classification::signals`]:
/// `{"label": "negative" | "neutral" | "positive", "confidence": 0..1}`.
pub const SENTIMENT: &str = "sentiment";

/// The signal of the customer's frustration in [`Classification::signals`]:
/// `{"score": 0..1, "flagged": bool}`.
pub const FRUSTRATION: &str = "frustration";

/// Checks a stated [`SENTIMENT`] or [`FRUSTRATION`] signal (a back-office system that may
/// state a request's classification may state these too): exactly the agreed keys, a known
/// label, numbers between 0 and 1. The classification goes into the audit chain, which
/// erasure cannot change, so nothing else may pass. `Err` says what is wrong.
pub fn check_stated_signal(name: &str, value: &Value) -> Result<(), String> {
    let unit = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .is_some_and(|x| (0.0..=1.0).contains(&x))
    };
    let Value::Object(m) = value else {
        return Err(format!("`{name}` must be an object"));
    };
    let fits = match name {
        SENTIMENT => {
            m.len() == 2
                && matches!(
                    m.get("label").and_then(Value::as_str),
                    Some("negative" | "neutral" | "positive")
                )
                && unit(m.get("confidence"))
        }
        FRUSTRATION => {
            m.len() == 2 && unit(m.get("score")) && m.get("flagged").is_some_and(Value::is_boolean)
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else if name == SENTIMENT {
        Err(format!(
            "`{name}` must be {{\"label\": \"negative\" | \"neutral\" | \"positive\", \"confidence\": 0..1}}"
        ))
    } else {
        Err(format!(
            "`{name}` must be {{\"score\": 0..1, \"flagged\": true | false}}"
        ))
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// `null` when nothing could be read or the service failed.
    pub intent: Option<String>,
    /// Calibrated probability of `intent`. Always given by the service; a fixture may
    /// leave it out, and routing then sees `null` (the policy treats that as unsure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The best intents, most likely first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Alternative>>,
    /// The request is not one the box handles: a human decides.
    #[serde(default)]
    pub out_of_scope: bool,
    /// The stated language, else the one the intake detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The model version (or [`METADATA_MODEL`], [`UNAVAILABLE_MODEL`], `given-in-input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Which part of the model decided (model answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Why the model gave no intent (e.g. there was no text to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the service failed; the classification is then out of scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An intent the sender stated but may not decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Hint>,
    /// A reviewer chose the workflow in triage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_by_reviewer: Option<Correction>,
    /// Further signals by name (sentiment, events, …), kept as they came.
    #[serde(flatten)]
    pub signals: BTreeMap<String, Value>,
}

/// One intent with its confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub intent: String,
    pub confidence: f64,
}

/// Who decided the classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The intent model.
    Model,
    /// The sender, in `metadata.intent`.
    Metadata,
    /// A line of `casegraph run` input.
    Input,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Model => "model",
            Source::Metadata => "metadata",
            Source::Input => "input",
        }
    }
}

/// A stated intent recorded beside the model's answer. Only a label of the model is kept
/// as text: the classification goes into the audit chain, which erasure cannot change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    pub intent: Option<String>,
    /// `intent` is a label of the model.
    pub known: bool,
    pub confidence: Option<f64>,
    pub source: Source,
}

/// A reviewer's choice of workflow for a request in triage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    pub workflow: String,
    pub intents: Vec<String>,
    pub by: String,
    /// The intent the model read; the classification's `intent` is then the one the
    /// reviewer's choice means (their `data.intent`, else the workflow's only intent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_intent: Option<String>,
}

impl Classification {
    /// An answer with `intent` and `confidence` and nothing else.
    pub fn new(intent: Option<String>, confidence: f64) -> Classification {
        Classification {
            intent,
            confidence: Some(confidence),
            top: None,
            out_of_scope: false,
            language: None,
            model: None,
            source: None,
            stage: None,
            reason: None,
            error: None,
            hint: None,
            corrected_by_reviewer: None,
            signals: BTreeMap::new(),
        }
    }

    /// The model's prediction for a request in `language`.
    pub fn predicted(p: Prediction, language: &str) -> Classification {
        let mut c = Classification {
            top: Some(
                p.top
                    .iter()
                    .map(|s| Alternative {
                        intent: s.intent.clone(),
                        confidence: round(s.confidence),
                    })
                    .collect(),
            ),
            out_of_scope: p.out_of_scope,
            language: Some(language.to_string()),
            model: Some(p.model),
            source: Some(Source::Model),
            stage: Some(p.stage),
            ..Classification::new(Some(p.intent), round(p.confidence))
        };
        if let Some(s) = p.signals {
            c.set_signals(s);
        }
        c
    }

    /// Records sentiment and frustration under their agreed keys.
    pub fn set_signals(&mut self, s: Signals) {
        let json = |v: serde_json::Result<Value>| v.unwrap_or(Value::Null);
        self.signals.insert(
            SENTIMENT_KEY.into(),
            json(serde_json::to_value(s.sentiment)),
        );
        self.signals.insert(
            FRUSTRATION_KEY.into(),
            json(serde_json::to_value(s.frustration)),
        );
    }

    /// The sentiment, when the classification has one in the agreed shape (older cases
    /// and models without the heads have none).
    pub fn sentiment(&self) -> Option<Sentiment> {
        serde_json::from_value(self.signals.get(SENTIMENT_KEY)?.clone()).ok()
    }

    /// The frustration, when the classification has one in the agreed shape.
    pub fn frustration(&self) -> Option<Frustration> {
        serde_json::from_value(self.signals.get(FRUSTRATION_KEY)?.clone()).ok()
    }

    /// What a request is taken for when the service could not classify it: out of scope,
    /// with the error, so that routing sends it to a human.
    pub fn unavailable(error: &Error) -> Classification {
        Classification {
            out_of_scope: true,
            model: Some(UNAVAILABLE_MODEL.into()),
            error: Some(error.to_string()),
            ..Classification::new(None, 0.0)
        }
    }

    /// The JSON the audit trail and the case record carry.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Confidences to four places: the audit trail and API answers do not need float noise.
fn round(c: f32) -> f64 {
    (f64::from(c) * 10_000.0).round() / 10_000.0
}

/// Classifies requests: the seam the runner, the API and the CLI call. Implementations
/// are thread-safe and block; async callers run them on a blocking thread.
pub trait Service: Send + Sync {
    fn classify(&self, request: &Received) -> Result<Classification, Error>;

    /// The labels the model can answer (its intents and its out-of-scope label), when it
    /// has a fixed set: a reviewer's `data.intent` on a triage task must be one of them.
    fn labels(&self) -> Option<&[String]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_shape_ever_written_reads_back_as_it_was() {
        for stored in [
            json!({"intent": "card_arrival", "confidence": 0.9883, "top": [{"intent": "card_arrival", "confidence": 0.9883}],
                   "out_of_scope": false, "language": "en", "model": "m@1", "source": "model", "stage": "lexical"}),
            json!({"intent": null, "confidence": 0.0, "top": [], "out_of_scope": true, "language": "de",
                   "model": "m@1", "source": "model", "reason": "no text to classify"}),
            json!({"intent": null, "confidence": 0.0, "out_of_scope": true, "error": "inference failed: x", "model": "unavailable"}),
            json!({"intent": "request_refund", "confidence": 0.9, "out_of_scope": false, "model": "m@1", "source": "model",
                   "stage": "full", "top": [], "language": "en",
                   "hint": {"intent": null, "known": false, "confidence": null, "source": "metadata"},
                   "corrected_by_reviewer": {"workflow": "request_refund", "intents": ["request_refund"], "by": "ann"}}),
            json!({"intent": "card_arrival", "confidence": 0.55, "out_of_scope": false}),
            json!({"intent": "x", "confidence": 1.0, "out_of_scope": false, "sentiment": {"score": -0.5}}),
            json!({"intent": "card_arrival", "out_of_scope": false}),
        ] {
            let c: Classification = serde_json::from_value(stored.clone()).expect("reads");
            assert_eq!(c.to_json(), stored);
        }
    }

    #[test]
    fn a_stated_mood_has_exactly_the_agreed_shape() {
        for ok in [
            (SENTIMENT, json!({"label": "neutral", "confidence": 0.5})),
            (FRUSTRATION, json!({"score": 0.0, "flagged": false})),
        ] {
            assert_eq!(check_stated_signal(ok.0, &ok.1), Ok(()), "{}", ok.1);
        }
        for bad in [
            (SENTIMENT, json!({"label": "angry", "confidence": 0.5})),
            (SENTIMENT, json!({"label": "neutral"})),
            (SENTIMENT, json!({"label": "neutral", "confidence": 1.5})),
            (FRUSTRATION, json!({"score": 0.5, "flagged": 1})),
            (
                FRUSTRATION,
                json!({"score": 0.5, "flagged": true, "why": "Herr M."}),
            ),
            (FRUSTRATION, json!(true)),
            ("mood", json!({"score": 0.5, "flagged": true})),
        ] {
            assert!(check_stated_signal(bad.0, &bad.1).is_err(), "{}", bad.1);
        }
    }

    #[test]
    fn signals_are_written_under_the_agreed_keys_and_read_back_typed() {
        use super::super::signals::{Reading, Tone};
        let p = Prediction {
            intent: "terminate_account".into(),
            confidence: 0.9,
            top: vec![],
            out_of_scope: false,
            model: "m@1".into(),
            stage: Stage::Full,
            signals: Some(
                Reading {
                    tones: Tone::ALL,
                    flag_at: 0.5,
                }
                .read(&[2.0, 0.0, 0.0], 1.0),
            ),
        };
        let c = Classification::predicted(p, "de");
        let json = c.to_json();
        assert_eq!(
            json["sentiment"],
            json!({"label": "negative", "confidence": 0.7870})
        );
        assert_eq!(
            json["frustration"],
            json!({"score": 0.7311, "flagged": true})
        );
        assert_eq!(c.sentiment().map(|s| s.label), Some(Tone::Negative));
        assert_eq!(c.frustration().map(|f| f.flagged), Some(true));
        let old: Classification =
            serde_json::from_value(json!({"intent": "x", "out_of_scope": false})).expect("reads");
        assert_eq!((old.sentiment(), old.frustration()), (None, None));
    }

    #[test]
    fn a_failed_service_classifies_out_of_scope_with_its_error() {
        let c = Classification::unavailable(&Error::Inference("no session".into()));
        assert_eq!(
            c.to_json(),
            json!({"intent": null, "confidence": 0.0, "out_of_scope": true,
                   "error": "inference failed: no session", "model": "unavailable"})
        );
    }
}
