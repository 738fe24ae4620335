//! From raw logits to a [`Prediction`]: temperature scaling, top-k, the out-of-scope rule.
//!
//! The model has one logit per intent plus one for the `oos` ("not for us") class. A request
//! is out of scope when `oos` is the most likely class, or when the best intent's calibrated
//! confidence is below the threshold chosen on the validation split (model card).

use super::ngrams::{LexicalHead, Sparse};
use super::signals::LexicalSignals;
use super::{Prediction, Scored, Stage};

/// Calibration and decision parameters, from the model card's `[calibration]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Softmax temperature fitted on validation (negative log-likelihood); > 0.
    pub temperature: f32,
    /// Temperatures fitted on one language's validation requests alone, for languages
    /// whose confidence the shared temperature leaves off (model card
    /// `temperature_by_language`); any other language uses `temperature`.
    pub by_language: std::collections::BTreeMap<String, f32>,
    /// Below this confidence the best intent is not trusted: out of scope.
    pub threshold: f32,
    /// Index of the `oos` class among the labels, if the model has one.
    pub oos_index: Option<usize>,
    /// How many intents `top` lists.
    pub top_k: usize,
}

/// Temperature-scaled softmax, numerically stable.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&z| ((z - max) / t).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

impl Calibration {
    /// The temperature for a request in `language` (its own when the card fitted one).
    pub fn temperature_for(&self, language: Option<&str>) -> f32 {
        language
            .and_then(|l| self.by_language.get(l))
            .copied()
            .unwrap_or(self.temperature)
    }

    /// Turns one row of logits (one per label) of a request in `language` into a prediction.
    pub fn decide(
        &self,
        logits: &[f32],
        language: Option<&str>,
        labels: &[String],
        model: &str,
    ) -> Prediction {
        let probs = softmax(logits, self.temperature_for(language));
        let argmax = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        let mut ranked: Vec<(usize, f32)> = probs
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.oos_index)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<Scored> = ranked
            .iter()
            .take(self.top_k.max(1))
            .map(|&(i, p)| Scored {
                intent: labels.get(i).cloned().unwrap_or_default(),
                confidence: p,
            })
            .collect();
        let (intent, confidence) = top
            .first()
            .map(|s| (s.intent.clone(), s.confidence))
            .unwrap_or_default();
        let out_of_scope =
            (argmax.is_some() && argmax == self.oos_index) || confidence < self.threshold;
        Prediction {
            intent,
            confidence,
            top,
            out_of_scope,
            model: model.to_string(),
            stage: Stage::Full,
            signals: None,
        }
    }
}

/// The lexical cascade: the n-gram head decides alone when its own probability for its
/// best class is at least `exit`; its probabilities are used as they are (temperature 1),
/// with the model's out-of-scope rule. When the model has sentiment and frustration heads,
/// their n-gram twin gives a lexical decision its signals, and a message that may be
/// frustrated is left to the encoder.
#[derive(Debug)]
pub struct Cascade {
    pub head: LexicalHead,
    pub exit: f32,
    pub calibration: Calibration,
    pub signals: Option<LexicalSignals>,
}

impl Cascade {
    /// The n-gram head's prediction for these features, if it is sure enough.
    pub fn decide(&self, features: &Sparse, labels: &[String], model: &str) -> Option<Prediction> {
        let logits = self.head.logits(features);
        let best = softmax(&logits, 1.0).into_iter().fold(0.0, f32::max);
        if best < self.exit {
            return None;
        }
        let signals = match &self.signals {
            Some(twin) => Some(twin.read(features)?),
            None => None,
        };
        Some(Prediction {
            stage: Stage::Lexical,
            signals,
            ..self.calibration.decide(&logits, None, labels, model)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["card_arrival", "change_pin", "oos"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn cal(t: f32, th: f32) -> Calibration {
        Calibration {
            temperature: t,
            by_language: Default::default(),
            threshold: th,
            oos_index: Some(2),
            top_k: 2,
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[2.0, 1.0, -3.0], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[1] && p[1] > p[2]);
        // large logits do not overflow
        let q = softmax(&[1000.0, 999.0], 1.0);
        assert!(q.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn higher_temperature_lowers_confidence() {
        let sharp = cal(0.5, 0.0).decide(&[3.0, 1.0, 0.0], None, &labels(), "m");
        let plain = cal(1.0, 0.0).decide(&[3.0, 1.0, 0.0], None, &labels(), "m");
        let soft = cal(2.0, 0.0).decide(&[3.0, 1.0, 0.0], None, &labels(), "m");
        assert!(sharp.confidence > plain.confidence && plain.confidence > soft.confidence);
        assert_eq!(plain.intent, "card_arrival");
        // exact value: e^3 / (e^3 + e^1 + e^0)
        let e = std::f32::consts::E;
        let want = e.powi(3) / (e.powi(3) + e + 1.0);
        assert!((plain.confidence - want).abs() < 1e-5);
    }

    #[test]
    fn a_language_with_its_own_temperature_uses_it_and_others_the_shared_one() {
        let c = Calibration {
            by_language: [("de".to_string(), 0.5)].into(),
            ..cal(1.0, 0.0)
        };
        let logits = [3.0, 1.0, 0.0];
        let shared = cal(1.0, 0.0).decide(&logits, None, &labels(), "m");
        let german = c.decide(&logits, Some("de"), &labels(), "m");
        assert!(german.confidence > shared.confidence, "0.5 sharpens");
        assert_eq!(german.intent, shared.intent, "the ranking never changes");
        for other in [None, Some("en"), Some("und")] {
            assert_eq!(c.decide(&logits, other, &labels(), "m"), shared);
        }
    }

    #[test]
    fn top_k_lists_in_scope_intents_only() {
        let p = cal(1.0, 0.0).decide(&[1.0, 2.0, 5.0], None, &labels(), "m");
        assert_eq!(p.top.len(), 2);
        assert_eq!(p.top[0].intent, "change_pin");
        assert_eq!(p.top[1].intent, "card_arrival");
        assert!(p.top.iter().all(|s| s.intent != "oos"));
        assert!(p.out_of_scope, "oos has the largest logit");
    }

    #[test]
    fn low_confidence_is_out_of_scope() {
        let logits = [1.0, 0.9, 0.0];
        assert!(
            cal(1.0, 0.6)
                .decide(&logits, None, &labels(), "m")
                .out_of_scope
        );
        assert!(
            !cal(1.0, 0.3)
                .decide(&logits, None, &labels(), "m")
                .out_of_scope
        );
    }

    #[test]
    fn the_cascade_decides_only_when_the_lexical_head_is_sure() {
        // 2 grams × 3 labels: gram 0 says card_arrival strongly, gram 1 is torn
        let mut bytes = Vec::new();
        for w in [8.0f32, 0.0, 0.0, 1.0, 1.0, 0.0] {
            bytes.extend(half::f16::from_f32(w).to_le_bytes());
        }
        bytes.extend([0u8; 12]);
        let cascade = Cascade {
            head: LexicalHead::from_bytes(&bytes, 2, 3).expect("head"),
            exit: 0.9,
            calibration: cal(1.0, 0.4),
            signals: None,
        };
        let sure = cascade
            .decide(&vec![(0, 1.0)], &labels(), "m")
            .expect("sure enough");
        assert_eq!(sure.intent, "card_arrival");
        assert_eq!(sure.stage, Stage::Lexical);
        assert!(sure.confidence >= 0.9 && !sure.out_of_scope);
        assert_eq!(cascade.decide(&vec![(1, 1.0)], &labels(), "m"), None);
    }
}
