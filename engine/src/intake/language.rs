//! Language of a request. whatlang's trigram model, limited to the languages a European
//! customer-care box meets, with a word-list tie-break between German and English for the
//! short texts where trigrams are unreliable.

use whatlang::{Detector, Lang};

const LANGS: &[(Lang, &str)] = &[
    (Lang::Deu, "de"),
    (Lang::Eng, "en"),
    (Lang::Fra, "fr"),
    (Lang::Spa, "es"),
    (Lang::Ita, "it"),
    (Lang::Nld, "nl"),
    (Lang::Por, "pt"),
    (Lang::Pol, "pl"),
    (Lang::Tur, "tr"),
];

const DE_WORDS: &[&str] = &[
    "ich", "und", "nicht", "die", "der", "das", "meine", "mein", "ist", "wurde", "habe", "bitte",
    "wie", "warum", "kann", "karte", "konto", "geld", "mit", "auf", "noch", "eine", "ein", "zu",
];
const EN_WORDS: &[&str] = &[
    "i", "and", "not", "the", "my", "is", "was", "have", "please", "how", "why", "can", "card",
    "account", "money", "with", "on", "still", "a", "to", "it", "do", "what",
];

/// ISO 639-1 code of the text's language, or `und`.
pub fn detect(text: &str) -> &'static str {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return "und";
    }
    let de = words
        .iter()
        .filter(|w| DE_WORDS.contains(&w.as_str()))
        .count()
        + text.chars().filter(|c| "äöüßÄÖÜ".contains(*c)).count();
    let en = words
        .iter()
        .filter(|w| EN_WORDS.contains(&w.as_str()))
        .count();
    let detector = Detector::with_allowlist(LANGS.iter().map(|(l, _)| *l).collect());
    if let Some(info) = detector.detect(text) {
        let code = LANGS
            .iter()
            .find(|(l, _)| *l == info.lang())
            .map_or("und", |(_, c)| *c);
        if info.is_reliable() || words.len() >= 8 && de == en {
            return code;
        }
        if de != en {
            return if de > en { "de" } else { "en" };
        }
        return code;
    }
    match de.cmp(&en) {
        std::cmp::Ordering::Greater => "de",
        std::cmp::Ordering::Less => "en",
        std::cmp::Ordering::Equal => "und",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_and_english_requests() {
        assert_eq!(detect("Meine Karte ist noch nicht angekommen"), "de");
        assert_eq!(detect("karte weg"), "de");
        assert_eq!(detect("My card still hasn't arrived"), "en");
        assert_eq!(detect("Why was I charged twice?"), "en");
        assert_eq!(
            detect("Hiermit kündige ich mein Konto fristgerecht zum nächstmöglichen Zeitpunkt."),
            "de"
        );
        assert_eq!(
            detect("Je voudrais fermer mon compte bancaire, s'il vous plaît."),
            "fr"
        );
        assert_eq!(detect("1234 5678"), "und");
    }
}
