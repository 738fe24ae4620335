//! How the customer sounds: sentiment and frustration, from two small heads on the same
//! encoder as the intent (one forward pass), or from their n-gram twin when the lexical
//! cascade decides a request without the encoder (`docs/adr/0016-frustration-from-the-encoder.md`).
//!
//! A classification carries them as `"sentiment": {"label", "confidence"}` and
//! `"frustration": {"score", "flagged"}` in [`super::Classification::signals`]; older
//! stored cases and models without the heads have neither.

use serde::{Deserialize, Serialize};

use super::calibrate::softmax;
use super::ngrams::{LexicalHead, Sparse};

/// The key of the sentiment in a classification's signals.
pub const SENTIMENT_KEY: &str = "sentiment";
/// The key of the frustration in a classification's signals.
pub const FRUSTRATION_KEY: &str = "frustration";

/// The tone of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    Negative,
    Neutral,
    Positive,
}

impl Tone {
    pub const ALL: [Tone; 3] = [Tone::Negative, Tone::Neutral, Tone::Positive];

    pub fn as_str(self) -> &'static str {
        match self {
            Tone::Negative => "negative",
            Tone::Neutral => "neutral",
            Tone::Positive => "positive",
        }
    }

    pub fn parse(s: &str) -> Option<Tone> {
        Tone::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The message's sentiment: the most likely tone and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sentiment {
    pub label: Tone,
    /// Probability of `label`, 0..1.
    pub confidence: f64,
}

/// Whether the customer is fed up: angry, threatening to leave or to go to a lawyer or a
/// regulator, complaining about repeated contact or waiting. A calm report of a problem is
/// negative, not frustrated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Frustration {
    /// Probability that the message is frustrated, 0..1.
    pub score: f64,
    /// `score` reached the model card's `[signals] frustration_flag_at`.
    pub flagged: bool,
}

/// Both signals of one message.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    pub sentiment: Sentiment,
    pub frustration: Frustration,
}

/// How the heads' raw outputs become [`Signals`] (the card's `[signals]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The tone of each sentiment output, in output order.
    pub tones: [Tone; 3],
    /// A frustration score at or above this is flagged.
    pub flag_at: f32,
}

impl Reading {
    /// Signals from three sentiment logits and one frustration logit.
    pub fn read(&self, sentiment: &[f32], frustration: f32) -> Signals {
        let probs = softmax(sentiment, 1.0);
        let (best, p) = probs
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((1, 1.0));
        let score = 1.0 / (1.0 + (-frustration).exp());
        Signals {
            sentiment: Sentiment {
                label: self.tones.get(best).copied().unwrap_or(Tone::Neutral),
                confidence: round(p),
            },
            frustration: Frustration {
                score: round(score),
                flagged: score >= self.flag_at,
            },
        }
    }
}

/// The n-gram twin of the heads, for requests the cascade decides without the encoder:
/// one [`LexicalHead`] with four outputs (three sentiment logits, one frustration logit).
#[derive(Debug)]
pub struct LexicalSignals {
    pub head: LexicalHead,
    pub reading: Reading,
    /// The lexical exit is only taken when this head's frustration score is below `guard`:
    /// a message that may be frustrated goes through the encoder.
    pub guard: f32,
}

impl LexicalSignals {
    /// The signals of these features, or `None` when the message may be frustrated and
    /// the encoder must judge it.
    pub fn read(&self, features: &Sparse) -> Option<Signals> {
        let z = self.head.logits(features);
        let signals = self.reading.read(&z[..3], z[3]);
        (signals.frustration.score < f64::from(self.guard)).then_some(signals)
    }
}

/// Probabilities to four places, as the classification's confidences.
fn round(p: f32) -> f64 {
    (f64::from(p) * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            tones: Tone::ALL,
            flag_at: 0.5,
        }
    }

    #[test]
    fn logits_become_a_tone_with_its_probability_and_a_flag() {
        let s = reading().read(&[3.0, 0.0, -1.0], 2.0);
        assert_eq!(s.sentiment.label, Tone::Negative);
        let e = std::f64::consts::E;
        let want = e.powi(3) / (e.powi(3) + 1.0 + e.powi(-1));
        assert!((s.sentiment.confidence - want).abs() < 1e-4);
        assert!(s.frustration.flagged);
        assert!((s.frustration.score - 0.8808).abs() < 1e-4);
        let calm = reading().read(&[0.0, 0.0, 4.0], -3.0);
        assert_eq!(calm.sentiment.label, Tone::Positive);
        assert!(!calm.frustration.flagged && calm.frustration.score < 0.05);
    }

    #[test]
    fn the_lexical_twin_leaves_a_possibly_frustrated_message_to_the_encoder() {
        // 2 grams × 4 outputs: gram 0 sounds calm and positive, gram 1 sounds angry
        let mut bytes = Vec::new();
        for w in [0.0f32, 0.0, 3.0, -4.0, 3.0, 0.0, 0.0, 4.0] {
            bytes.extend(half::f16::from_f32(w).to_le_bytes());
        }
        bytes.extend([0u8; 16]);
        let twin = LexicalSignals {
            head: LexicalHead::from_bytes(&bytes, 2, 4).expect("head"),
            reading: reading(),
            guard: 0.3,
        };
        let calm = twin.read(&vec![(0, 1.0)]).expect("sure it is calm");
        assert_eq!(calm.sentiment.label, Tone::Positive);
        assert_eq!(twin.read(&vec![(1, 1.0)]), None);
    }

    #[test]
    fn the_json_is_the_agreed_contract() {
        let s = reading().read(&[3.0, 0.0, -1.0], 2.0);
        assert_eq!(
            serde_json::to_value(s).expect("json"),
            serde_json::json!({"sentiment": {"label": "negative", "confidence": 0.9362},
                               "frustration": {"score": 0.8808, "flagged": true}})
        );
    }
}
