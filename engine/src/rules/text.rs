//! Text normalisation for keyword rules: Unicode-normalised, lower-case, whitespace
//! collapsed; `fold` also spells out umlauts and drops punctuation, so "Kündigung",
//! "KUENDIGUNG" and "kündigung!" all read `kuendigung`.

use rhai::{Array, Engine};
use unicode_normalization::UnicodeNormalization;

pub(crate) fn normalize(s: &str) -> String {
    let lower: String = s.nfkc().collect::<String>().to_lowercase();
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in normalize(s).chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            c if c.is_alphanumeric() => out.push(c),
            _ => out.push(' '),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether any of `words` (each one word or a phrase) occurs as whole words in `text`,
/// both folded.
pub(crate) fn contains_any(text: &str, words: &[String]) -> bool {
    let hay = format!(" {} ", fold(text));
    words.iter().any(|w| {
        let w = fold(w);
        !w.is_empty() && hay.contains(&format!(" {w} "))
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("normalize", |s: &str| normalize(s))
        .register_fn("normalize", |_: ()| String::new())
        .register_fn("fold", |s: &str| fold(s))
        .register_fn("fold", |_: ()| String::new())
        .register_fn("contains_any", |s: &str, words: Array| {
            let words: Vec<String> = words.into_iter().map(|w| w.to_string()).collect();
            contains_any(s, &words)
        })
        .register_fn("contains_any", |_: (), _: Array| false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_makes_spellings_meet() {
        assert_eq!(normalize("  Sehr   geehrte\nDamen "), "sehr geehrte damen");
        assert_eq!(fold("Kündigung!"), "kuendigung");
        assert_eq!(fold("KÜNDIGUNG, bitte"), "kuendigung bitte");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ﬁle"), "file", "NFKC splits ligatures");
    }

    #[test]
    fn contains_any_matches_whole_words() {
        let words = vec!["kündigen".to_string(), "close my account".to_string()];
        assert!(contains_any("Ich möchte mein Konto KÜNDIGEN.", &words));
        assert!(contains_any("Please close my account today", &words));
        assert!(!contains_any(
            "I want to disclose my account balance",
            &["close".to_string()]
        ));
    }
}
