//! Channel intake: from what arrived (a web form, an OCR'd letter, a chat transcript) to the
//! text the intent model reads, its language, and the personal data it contains.
//!
//! [`Request`] is what arrives at every entry point; [`Received`] carries it with its
//! intake, made once. Pure text processing, no I/O. Logs and audit records carry [`Normalized::redacted`],
//! never the raw text.

mod chat;
mod form;
mod language;
mod letter;
pub mod pii;
mod request;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use language::detect as detect_language;
pub use pii::{Kind as PiiKind, Pii};
pub use request::{HINT_KEY, Received, Request};

/// Where a request came from: the one channel type of the API, the CLI and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Form,
    Letter,
    Chat,
}

impl Channel {
    /// The channel's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Form => "form",
            Channel::Letter => "letter",
            Channel::Chat => "chat",
        }
    }
}

/// A request's text made ready for the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalized {
    pub channel: Channel,
    /// What the customer wrote, cleaned: one line, single spaces.
    pub text: String,
    /// ISO 639-1 code (`de`, `en`, …) or `und` when undetermined.
    pub language: String,
    /// A letter's subject line, kept apart from the body.
    pub subject: Option<String>,
    /// Personal data found in `text`, as byte ranges of `text`.
    pub pii: Vec<Pii>,
    /// `text` with every personal datum replaced by its kind, e.g. `[IBAN]`.
    pub redacted: String,
}

/// Longest normalized text, in characters; the rest is cut. The service bounds a request's
/// text and fields together at 20,000 characters; this bound holds for every caller (the
/// CLI, fixtures) and keeps the model's input and the PII scan bounded whatever arrives.
pub const MAX_CHARS: usize = 32_768;

/// Normalizes a request. `fields` are a form's labelled values (ignored for other channels).
pub fn normalize(channel: Channel, text: &str, fields: &BTreeMap<String, String>) -> Normalized {
    normalize_in(channel, text, fields, None)
}

/// Normalizes a request whose sender may have stated its language: a stated language is
/// taken as it is, and only an unstated one is detected in the text.
pub(crate) fn normalize_in(
    channel: Channel,
    text: &str,
    fields: &BTreeMap<String, String>,
    stated_language: Option<&str>,
) -> Normalized {
    let (body, subject) = match channel {
        Channel::Letter => {
            let l = letter::body(text);
            (l.body, l.subject.map(|s| truncate(&s, MAX_CHARS)))
        }
        Channel::Chat => (chat::customer_turns(text), None),
        Channel::Form => (form::text(text, fields), None),
    };
    // Cut after collapsing, then trimmed again: the cut may fall just after a space.
    let text = truncate(&collapse_whitespace(&body), MAX_CHARS)
        .trim_end()
        .to_string();
    let pii = pii::find(&text);
    let redacted = pii::redact(&text, &pii);
    let language = match stated_language {
        Some(l) => l.to_string(),
        None => language::detect(&text).to_string(),
    };
    Normalized {
        channel,
        text,
        language,
        subject,
        pii,
        redacted,
    }
}

/// The first `max` characters of `s`.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

/// Unicode whitespace runs (line breaks included) become one space; ends are trimmed.
pub fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_german_letter_becomes_its_redacted_body() {
        let letter = "Max Mustermann\nLindenstraße 12\n10115 Berlin\n\nSparkasse Beispielstadt\nKundenservice\nPostfach 1234\n20095 Hamburg\n\nBerlin, den 14.11.2026\n\nBetreff: Kündigung meines Kontos, Kundennummer 4711-0815\n\nSehr geehrte Damen und Herren,\n\nhiermit kündige ich mein Konto mit der IBAN DE89 3704 0044 0532 0130 00 zum nächst-\nmöglichen Zeitpunkt. Bitte überweisen Sie das Restguthaben auf mein\nneues Konto.\n\nMit freundlichen Grüßen\n\nMax Mustermann\n";
        let n = normalize(Channel::Letter, letter, &BTreeMap::new());
        assert_eq!(
            n.text,
            "hiermit kündige ich mein Konto mit der IBAN DE89 3704 0044 0532 0130 00 zum nächstmöglichen Zeitpunkt. Bitte überweisen Sie das Restguthaben auf mein neues Konto."
        );
        assert_eq!(n.language, "de");
        assert_eq!(
            n.subject.as_deref(),
            Some("Kündigung meines Kontos, Kundennummer 4711-0815")
        );
        assert!(n.redacted.contains("[IBAN]"), "{}", n.redacted);
        assert!(!n.redacted.contains("3704"));
    }

    #[test]
    fn an_english_chat_keeps_the_customer_turns() {
        let chat = "Agent: Hello, how can I help you today?\nCustomer: hi, my card got swallowed by the ATM\nAgent: I'm sorry to hear that. Which ATM?\nCustomer: the one at the station, my email is jane.doe@example.com";
        let n = normalize(Channel::Chat, chat, &BTreeMap::new());
        assert_eq!(
            n.text,
            "hi, my card got swallowed by the ATM the one at the station, my email is jane.doe@example.com"
        );
        assert_eq!(n.language, "en");
        assert!(
            n.redacted.ends_with("my email is [EMAIL]"),
            "{}",
            n.redacted
        );
    }

    #[test]
    fn a_form_joins_free_text_and_labelled_fields() {
        let mut fields = BTreeMap::new();
        fields.insert("card_last_digits".to_string(), "4242".to_string());
        fields.insert("phone".to_string(), "+49 170 1234567".to_string());
        let n = normalize(
            Channel::Form,
            "Ich habe eine Abbuchung, die ich nicht kenne.",
            &fields,
        );
        assert_eq!(
            n.text,
            "Ich habe eine Abbuchung, die ich nicht kenne. card last digits: 4242; phone: +49 170 1234567"
        );
        assert!(n.redacted.contains("phone: [PHONE]"), "{}", n.redacted);
        assert_eq!(n.language, "de");
    }
}
