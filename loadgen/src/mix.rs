//! The request mix: the shipped sample requests (forms, letters and chats in German and
//! English, posted as a back-office system would, so the box's intent model classifies
//! every one), letters with OCR noise, and off-topic requests that no workflow serves and
//! routing sends to a reviewer. Deterministic for a seed.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

/// A small, fast, seedable generator (xorshift64*); the mix needs no cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: f64) -> bool {
        (self.below(1_000_000) as f64) < percent * 10_000.0
    }
}

/// Requests no workflow serves: the model flags them out of scope and routing sends them
/// to the `triage` queue.
const OFF_TOPIC: &[(&str, &str, &str)] = &[
    (
        "chat",
        "en",
        "Do you know a good restaurant near the main station?",
    ),
    (
        "chat",
        "de",
        "Wie wird das Wetter am Wochenende in Hamburg?",
    ),
    (
        "letter",
        "en",
        "Dear Sir or Madam,\nplease find enclosed the minutes of our residents' association meeting.\nKind regards",
    ),
    (
        "letter",
        "de",
        "Sehr geehrte Damen und Herren,\nanbei sende ich Ihnen mein Gedicht für den Wettbewerb.\nMit freundlichen Grüßen",
    ),
    (
        "form",
        "en",
        "I would like to subscribe to your newsletter about gardening.",
    ),
    ("chat", "en", "hello?? is anyone there"),
];

/// Character confusions of OCR on scanned letters.
const OCR: &[(&str, &str)] = &[
    ("rn", "m"),
    ("m", "rn"),
    ("l", "1"),
    ("O", "0"),
    ("e", "c"),
    ("i", "l"),
    ("ü", "u"),
    ("ß", "B"),
    (" ", ""),
    (",", "."),
];

/// The sample requests to draw from.
#[derive(Debug, Clone)]
pub struct Mix {
    samples: Vec<Value>,
    off_topic_percent: f64,
    ocr_percent: f64,
    /// Post each sample's `metadata` too (a stated intent, for a token with the
    /// `state_intent` capability); by default it is dropped and the model classifies.
    pub keep_metadata: bool,
}

/// One request of the mix, ready to send.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub body: String,
    /// `form`, `letter` or `chat`, and whether it is off topic (for the report).
    pub kind: &'static str,
}

impl Mix {
    /// Reads the samples (JSON lines, as in `workflows/samples/requests.jsonl`).
    pub fn load(path: &Path, off_topic_percent: f64, ocr_percent: f64) -> anyhow::Result<Mix> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the request mix {}", path.display()))?;
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .with_context(|| format!("{} is not JSON lines", path.display()))?;
        anyhow::ensure!(!samples.is_empty(), "{} holds no requests", path.display());
        Ok(Mix {
            samples,
            off_topic_percent,
            ocr_percent,
            keep_metadata: false,
        })
    }

    /// Draws one request.
    pub fn draw(&self, rng: &mut Rng) -> Drawn {
        let customer = format!("C-{:07}", rng.below(10_000_000));
        if rng.chance(self.off_topic_percent) {
            let (channel, language, text) = OFF_TOPIC[rng.below(OFF_TOPIC.len() as u64) as usize];
            let body = json!({
                "channel": channel, "language": language, "text": text, "customer_id": customer,
            });
            return Drawn {
                body: body.to_string(),
                kind: "off_topic",
            };
        }
        let s = &self.samples[rng.below(self.samples.len() as u64) as usize];
        let channel = s["channel"].as_str().unwrap_or("chat");
        let mut body = Map::new();
        body.insert("channel".into(), json!(channel));
        body.insert("language".into(), s["language"].clone());
        let mut text = s["text"].as_str().unwrap_or("").to_string();
        if channel == "letter" && !text.is_empty() {
            text = ocr_noise(&text, self.ocr_percent, rng);
        }
        if !text.trim().is_empty() {
            body.insert("text".into(), json!(text));
        }
        if let Some(f) = s.get("fields").filter(|f| f.is_object()) {
            body.insert("fields".into(), f.clone());
        }
        if self.keep_metadata
            && let Some(m) = s.get("metadata").filter(|m| m.is_object())
        {
            body.insert("metadata".into(), m.clone());
        }
        body.insert("customer_id".into(), json!(customer));
        Drawn {
            body: Value::Object(body).to_string(),
            kind: match channel {
                "form" => "form",
                "letter" => "letter",
                _ => "chat",
            },
        }
    }
}

/// Applies OCR confusions at about `percent` of the positions.
pub fn ocr_noise(text: &str, percent: f64, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let hit = rng
            .chance(percent)
            .then(|| OCR.iter().find(|(from, _)| rest.starts_with(from)))
            .flatten();
        match hit {
            Some((from, to)) => {
                out.push_str(to);
                rest = &rest[from.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap_or(' ');
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix() -> Mix {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/samples/requests.jsonl");
        Mix::load(&path, 10.0, 5.0).expect("shipped samples")
    }

    #[test]
    fn the_mix_has_every_channel_both_languages_and_off_topic_requests() {
        let mix = mix();
        let mut rng = Rng::new(7);
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        let mut languages = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let d = mix.draw(&mut rng);
            *kinds.entry(d.kind).or_default() += 1;
            let v: Value = serde_json::from_str(&d.body).expect("json");
            languages.insert(v["language"].as_str().unwrap_or("").to_string());
            assert!(v.get("metadata").is_none(), "the model classifies: {v}");
        }
        assert_eq!(
            kinds.keys().copied().collect::<Vec<_>>(),
            ["chat", "form", "letter", "off_topic"]
        );
        let off = kinds["off_topic"] as f64 / 2000.0;
        assert!((0.05..0.15).contains(&off), "{off}");
        assert!(languages.contains("de") && languages.contains("en"));
    }

    #[test]
    fn ocr_noise_changes_letters_but_keeps_them_readable() {
        let mut rng = Rng::new(3);
        let text = "Sehr geehrte Damen und Herren, meine Karte ist nicht angekommen.";
        let noisy = ocr_noise(text, 20.0, &mut rng);
        assert_ne!(noisy, text);
        assert!(noisy.len() > text.len() / 2);
        assert_eq!(ocr_noise(text, 0.0, &mut rng), text);
    }
}
