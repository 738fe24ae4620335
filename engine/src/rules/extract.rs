//! Extraction of identifiers business rules look for in customer text: IBANs (checksum
//! verified), customer and contract numbers, e-mail addresses, the last digits of a card.

use std::sync::LazyLock;

use regex::Regex;
use rhai::{Array, Dynamic, Engine};

static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{1,4}){3,8}\b").expect("iban pattern compiles")
});

static CUSTOMER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:kunden-?(?:nummer|nr\.?)|kd\.?-?nr\.?|customer\s+(?:number|no\.?|id|#))\s*(?:[:#]|is)?\s*([A-Z]{0,3}-?\d{5,12})\b",
    )
    .expect("customer pattern compiles")
});

static CONTRACT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:vertrags-?(?:nummer|nr\.?)|contract\s+(?:number|no\.?|id))\s*(?:[:#]|is)?\s*([A-Z0-9][A-Z0-9-]{3,19})\b",
    )
    .expect("contract pattern compiles")
});

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
        .expect("email pattern compiles")
});

static CARD_LAST4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:ending\s+(?:in|with)|ends\s+(?:in|with)|endet\s+(?:auf|mit)|endung|[*x•]{4}[\s-]?|karte\s*(?:\.{2,}|…))\s*:?\s*(\d{4})\b",
    )
    .expect("card pattern compiles")
});

/// ISO 13616 check: move the first four characters to the end, letters to numbers,
/// remainder modulo 97 must be 1.
pub(crate) fn is_valid_iban(candidate: &str) -> bool {
    let s: String = candidate
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    if !(15..=34).contains(&s.len())
        || !s.chars().all(|c| c.is_ascii_alphanumeric())
        || !s[..2].chars().all(|c| c.is_ascii_alphabetic())
        || !s[2..4].chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let rearranged = s[4..].chars().chain(s[..4].chars());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = c.to_digit(36).unwrap_or(0);
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Every valid IBAN in `text`, spaces removed. A match that fails the checksum is tried
/// with trailing groups dropped (the pattern may have run into the following word).
pub(crate) fn extract_ibans(text: &str) -> Vec<String> {
    let upper = text.to_uppercase();
    IBAN.find_iter(&upper)
        .filter_map(|m| {
            let mut s: String = m.as_str().chars().filter(|c| *c != ' ').collect();
            while s.len() >= 15 {
                if is_valid_iban(&s) {
                    return Some(s);
                }
                s.pop();
            }
            None
        })
        .collect()
}

fn first_group(re: &Regex, text: &str) -> Option<String> {
    re.captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_uppercase())
}

pub(crate) fn extract_customer_number(text: &str) -> Option<String> {
    first_group(&CUSTOMER, text)
}

pub(crate) fn extract_contract_number(text: &str) -> Option<String> {
    first_group(&CONTRACT, text)
}

pub(crate) fn extract_emails(text: &str) -> Vec<String> {
    EMAIL
        .find_iter(text)
        .map(|m| m.as_str().to_lowercase())
        .collect()
}

pub(crate) fn extract_card_last4(text: &str) -> Option<String> {
    first_group(&CARD_LAST4, text)
}

fn opt(v: Option<String>) -> Dynamic {
    v.map(Dynamic::from).unwrap_or(Dynamic::UNIT)
}

fn strings(v: Vec<String>) -> Array {
    v.into_iter().map(Dynamic::from).collect()
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("extract_iban", |t: &str| {
            opt(extract_ibans(t).into_iter().next())
        })
        .register_fn("extract_ibans", |t: &str| strings(extract_ibans(t)))
        .register_fn("is_valid_iban", is_valid_iban)
        .register_fn("extract_customer_number", |t: &str| {
            opt(extract_customer_number(t))
        })
        .register_fn("extract_contract_number", |t: &str| {
            opt(extract_contract_number(t))
        })
        .register_fn("extract_email", |t: &str| {
            opt(extract_emails(t).into_iter().next())
        })
        .register_fn("extract_emails", |t: &str| strings(extract_emails(t)))
        .register_fn("extract_card_last4", |t: &str| opt(extract_card_last4(t)));
    // A missing text field reads as `()`; every extractor then finds nothing.
    for name in [
        "extract_iban",
        "extract_customer_number",
        "extract_contract_number",
        "extract_email",
        "extract_card_last4",
    ] {
        engine.register_fn(name, |_: ()| Dynamic::UNIT);
    }
    engine
        .register_fn("extract_ibans", |_: ()| Array::new())
        .register_fn("extract_emails", |_: ()| Array::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_are_checksum_verified() {
        assert!(is_valid_iban("DE89 3704 0044 0532 0130 00"));
        assert!(!is_valid_iban("DE89 3704 0044 0532 0130 01"));
        assert!(is_valid_iban("GB82WEST12345698765432"));
        let text = "Bitte überweisen Sie auf DE89 3704 0044 0532 0130 00 und nicht auf DE89 3704 0044 0532 0130 01.";
        assert_eq!(
            extract_ibans(text),
            vec!["DE89370400440532013000".to_string()]
        );
        assert_eq!(
            extract_ibans("my iban is gb82 west 1234 5698 7654 32 thanks"),
            vec!["GB82WEST12345698765432".to_string()]
        );
    }

    #[test]
    fn customer_and_contract_numbers_follow_their_labels() {
        assert_eq!(
            extract_customer_number("Kundennummer: 10023456").as_deref(),
            Some("10023456")
        );
        assert_eq!(
            extract_customer_number("Ihre Kd.-Nr. C-1002345 ist").as_deref(),
            Some("C-1002345")
        );
        assert_eq!(
            extract_customer_number("my customer number is c-7788990").as_deref(),
            Some("C-7788990")
        );
        assert_eq!(extract_customer_number("call 0301234567"), None);
        assert_eq!(
            extract_contract_number("Vertragsnummer GK-2024-118").as_deref(),
            Some("GK-2024-118")
        );
        assert_eq!(
            extract_contract_number("contract no. 88-1234").as_deref(),
            Some("88-1234")
        );
    }

    #[test]
    fn emails_and_card_digits() {
        assert_eq!(
            extract_emails("Neue Adresse: Max.Muster@Beispiel.de, alt: a@b.com"),
            vec!["max.muster@beispiel.de", "a@b.com"]
        );
        assert_eq!(
            extract_card_last4("my card ending in 4821 was stolen").as_deref(),
            Some("4821")
        );
        assert_eq!(
            extract_card_last4("Karte endet auf 1234").as_deref(),
            Some("1234")
        );
        assert_eq!(extract_card_last4("**** 9876").as_deref(), Some("9876"));
        assert_eq!(extract_card_last4("I lost my card"), None);
    }
}
