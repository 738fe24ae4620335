//! What arrived: a customer's request as every entry point hands it over (the HTTP intake,
//! `casegraph run`, the console's dry run, workflow fixtures), and [`Received`], the request
//! with its intake made once, which is what the classifier reads.
//!
//! [`Request`] is also the stored shape (`case.request`, the personal record): its JSON is
//! the one the service has always written, so stored cases read back unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Channel, Normalized};

/// Where a stated classification is kept when its sender may not decide it.
pub const HINT_KEY: &str = "intent_hint";

/// A customer's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub channel: Channel,
    /// ISO 639-1 code. The service always states one (given or detected); absent, the
    /// classifier reports the language it detects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A form's labelled values.
    #[serde(default)]
    pub fields: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// URL notified when the case ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The case reference (`CG-7K3F-9Q2D`) of the question this request answers: the
    /// request then goes to that case as a message (a reference in the text does too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Free-form context from the sending system; `intent` (and `confidence`) state a
    /// classification, `intent_hint` records one the sender may not decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Request {
    /// A request of `channel` with `text` and nothing else.
    pub fn text(channel: Channel, text: impl Into<String>) -> Request {
        Request {
            channel,
            language: None,
            text: Some(text.into()),
            fields: Map::new(),
            customer_id: None,
            reply_to: None,
            in_reply_to: None,
            metadata: None,
        }
    }

    /// The request made ready for the model by its channel's intake. Form values that are
    /// not strings are read as their JSON text (`null` as empty). A stated language is
    /// taken as it is; only an unstated one is detected in the text.
    pub fn normalize(&self) -> Normalized {
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        super::normalize_in(
            self.channel,
            self.text.as_deref().unwrap_or(""),
            &fields,
            self.stated_language(),
        )
    }

    /// The stated language, if any (an empty one is none).
    pub fn stated_language(&self) -> Option<&str> {
        self.language.as_deref().filter(|l| !l.is_empty())
    }

    /// A value of `metadata`, if given.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.metadata.as_ref()?.get(key)
    }

    /// Turns a stated classification (`metadata.intent`, `metadata.confidence`) into a
    /// hint, `metadata.intent_hint: {"intent", "confidence"}`, which the model's answer
    /// records but does not follow. The API calls it for senders without the
    /// `state_intent` capability.
    pub fn demote_stated_intent(&mut self) {
        let Some(m) = &mut self.metadata else {
            return;
        };
        let intent = m.remove("intent");
        let confidence = m.remove("confidence");
        if intent.is_some() || confidence.is_some() {
            m.insert(
                HINT_KEY.into(),
                serde_json::json!({ "intent": intent, "confidence": confidence }),
            );
        }
    }

    /// The request as JSON: `case.request`, and what is stored and digested.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A request with its intake made once: what the classifier reads, the language it
/// detected, the personal data it found. Built where a request enters the pipeline and
/// carried with it, so no later step normalizes the text again.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: Request,
    pub intake: Normalized,
}

impl Received {
    pub fn new(request: Request) -> Received {
        let intake = request.normalize();
        Received { request, intake }
    }

    /// The stated language, else the one detected in the text.
    pub fn language(&self) -> &str {
        self.request
            .stated_language()
            .unwrap_or(self.intake.language.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_stored_shape_reads_back_unchanged() {
        let stored = json!({"channel": "form", "language": "en", "text": "",
            "fields": {"amount": 12, "note": null}, "customer_id": "C-1",
            "reply_to": "https://crm.example/hook", "metadata": {"crm": "x"}});
        let r: Request = serde_json::from_value(stored.clone()).expect("a request");
        assert_eq!(r.to_json(), stored);
        let bare = json!({"channel": "chat", "text": "hi", "fields": {}});
        let r: Request = serde_json::from_value(bare.clone()).expect("a request");
        assert_eq!(r.to_json(), bare);
        assert!(serde_json::from_value::<Request>(json!({"channel": "fax"})).is_err());
        assert!(
            serde_json::from_value::<Request>(json!({"channel": "chat", "txt": "typo"})).is_err(),
            "a misspelt field is named, not dropped"
        );
    }

    #[test]
    fn a_letter_is_reduced_to_its_body_and_a_form_to_its_labelled_fields() {
        let letter = Request::text(
            Channel::Letter,
            "Erika Mustermann\nHauptstr. 1\n12345 Berlin\n\nBetreff: Karte\n\nSehr geehrte Damen und Herren,\nmeine Karte ist nicht angekommen.\nMit freundlichen Grüßen\nErika Mustermann",
        );
        let n = letter.normalize();
        assert!(n.text.contains("Karte ist nicht angekommen"), "{}", n.text);
        assert!(!n.text.contains("Hauptstr"), "{}", n.text);
        let form: Request = serde_json::from_value(
            json!({"channel": "form", "text": "", "fields": {"reason": "card not arrived", "amount": 12}}),
        )
        .expect("a request");
        let n = Received::new(form);
        assert!(
            n.intake.text.contains("card not arrived"),
            "{}",
            n.intake.text
        );
        assert!(n.intake.text.contains("amount: 12"), "{}", n.intake.text);
    }

    #[test]
    fn a_stated_language_is_taken_and_only_an_unstated_one_is_detected() {
        let mut r = Request::text(Channel::Chat, "My card still hasn't arrived");
        assert_eq!(r.normalize().language, "en");
        r.language = Some("de".into());
        assert_eq!(r.normalize().language, "de");
        assert_eq!(Received::new(r).language(), "de");
    }

    #[test]
    fn a_demoted_intent_is_a_hint_and_the_rest_of_metadata_stays() {
        let mut r = Request::text(Channel::Chat, "hi");
        r.metadata = json!({"intent": "request_refund", "confidence": 1.0, "crm": "x"})
            .as_object()
            .cloned();
        r.demote_stated_intent();
        assert_eq!(
            r.metadata,
            json!({"crm": "x", "intent_hint": {"intent": "request_refund", "confidence": 1.0}})
                .as_object()
                .cloned()
        );
        let mut untouched = Request::text(Channel::Chat, "hi");
        untouched.metadata = json!({"crm": "x"}).as_object().cloned();
        let before = untouched.clone();
        untouched.demote_stated_intent();
        assert_eq!(untouched, before);
    }
}
