//! The stand-in classifier the service uses until the ONNX intent model is wired in.
//!
//! It does not read the text. A request may say its own intent in `metadata.intent` (and
//! `metadata.confidence`, default 1.0), as back-office systems that already know it do and
//! as tests do; anything else is answered out of scope, so routing sends it to a human
//! queue (`triage`). The model replaces this file by implementing the same
//! [`Classifier`] trait.

use casegraph_engine::runner::Classifier;
use serde_json::{Value, json};

/// The name this classifier reports as its model version.
pub const MODEL: &str = "stand-in:metadata";

/// Reads the intent from `metadata`; out of scope otherwise.
#[derive(Debug, Default, Clone, Copy)]
pub struct MetadataClassifier;

impl Classifier for MetadataClassifier {
    fn classify(&self, request: &Value) -> Result<Value, String> {
        let metadata = request.get("metadata");
        let language = request.get("language").cloned().unwrap_or(Value::Null);
        let intent = metadata
            .and_then(|m| m.get("intent"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        Ok(match intent {
            Some(intent) => {
                let confidence = metadata
                    .and_then(|m| m.get("confidence"))
                    .and_then(Value::as_f64)
                    .filter(|c| (0.0..=1.0).contains(c))
                    .unwrap_or(1.0);
                json!({
                    "intent": intent,
                    "confidence": confidence,
                    "top": [{ "intent": intent, "confidence": confidence }],
                    "out_of_scope": false,
                    "language": language,
                    "model": MODEL,
                })
            }
            None => json!({
                "intent": null,
                "confidence": 0.0,
                "top": [],
                "out_of_scope": true,
                "language": language,
                "model": MODEL,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_intent_is_used_and_anything_else_is_out_of_scope() {
        let c = MetadataClassifier;
        let r = c
            .classify(&json!({"metadata": {"intent": "request_refund", "confidence": 0.8}}))
            .expect("answer");
        assert_eq!(r["intent"], "request_refund");
        assert_eq!(r["confidence"], 0.8);
        let r = c.classify(&json!({"text": "hello"})).expect("answer");
        assert_eq!(r["out_of_scope"], true);
    }
}
