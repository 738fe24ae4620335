//! Personal data in request text: IBANs, payment card numbers (Luhn-checked), e-mail
//! addresses, phone numbers and customer/contract numbers. Found as byte ranges so that the
//! text can be redacted for logs and audit records.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What kind of personal datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Iban,
    CardNumber,
    Email,
    Phone,
    CustomerNumber,
}

impl Kind {
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Iban => "[IBAN]",
            Kind::CardNumber => "[CARD]",
            Kind::Email => "[EMAIL]",
            Kind::Phone => "[PHONE]",
            Kind::CustomerNumber => "[CUSTOMER_NO]",
        }
    }
}

/// One personal datum: its kind and byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pii {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
        .expect("iban pattern compiles")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card pattern compiles"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
        .expect("email pattern compiles")
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+|\b00)\d{1,3}[ /.-]?(?:\(0\))?[ /.-]?\d{2,5}(?:[ /.-]?\d{2,8}){1,3}\b|\b0\d{2,5}[ /-]\d{3,8}(?:[ -]\d{1,5})?\b")
        .expect("phone pattern compiles")
});
static CUSTOMER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:kunden-?nr\.?|kundennummer|kunden-?id|vertragsnummer|vertrags-?nr\.?|mitgliedsnummer|customer\s+(?:no\.?|number|id)|account\s+(?:no\.?|number)|contract\s+(?:no\.?|number)|reference\s+number)\s*[:#]?\s*([A-Z0-9][A-Z0-9/-]{3,19})|\bC-\d{5,}\b",
    )
    .expect("customer number pattern compiles")
});

fn luhn(digits: &str) -> bool {
    let ds: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Every personal datum in `text`, in order, without overlaps (the first kind found wins:
/// IBAN, e-mail, card, customer number, phone).
pub fn find(text: &str) -> Vec<Pii> {
    let mut found: Vec<Pii> = Vec::new();
    let mut add = |kind: Kind, start: usize, end: usize| {
        if !found.iter().any(|p| start < p.end && p.start < end) {
            found.push(Pii { kind, start, end });
        }
    };
    for m in IBAN.find_iter(text) {
        add(Kind::Iban, m.start(), m.end());
    }
    for m in EMAIL.find_iter(text) {
        add(Kind::Email, m.start(), m.end());
    }
    for m in CARD.find_iter(text) {
        if luhn(m.as_str()) {
            add(Kind::CardNumber, m.start(), m.end());
        }
    }
    for c in CUSTOMER.captures_iter(text) {
        let m = c.get(1).or_else(|| c.get(0));
        if let Some(m) = m {
            add(Kind::CustomerNumber, m.start(), m.end());
        }
    }
    for m in PHONE.find_iter(text) {
        add(Kind::Phone, m.start(), m.end());
    }
    found.sort_by_key(|p| p.start);
    found
}

/// `text` with each datum replaced by its placeholder.
pub fn redact(text: &str, found: &[Pii]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for p in found {
        out.push_str(&text[at..p.start]);
        out.push_str(p.kind.placeholder());
        at = p.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        find(text).into_iter().map(|p| p.kind).collect()
    }

    #[test]
    fn german_letter_data() {
        let t = "Meine IBAN lautet DE89 3704 0044 0532 0130 00, Kundennummer: 4711-0815, erreichbar unter 030 1234567 oder max.mustermann@web.de.";
        assert_eq!(
            kinds(t),
            [Kind::Iban, Kind::CustomerNumber, Kind::Phone, Kind::Email]
        );
        assert_eq!(
            redact(t, &find(t)),
            "Meine IBAN lautet [IBAN], Kundennummer: [CUSTOMER_NO], erreichbar unter [PHONE] oder [EMAIL]."
        );
    }

    #[test]
    fn card_numbers_need_a_valid_luhn_digit() {
        assert_eq!(
            kinds("card 4111 1111 1111 1111 was charged"),
            [Kind::CardNumber]
        );
        assert!(kinds("order 4111 1111 1111 1112 arrived").is_empty());
    }

    #[test]
    fn english_phone_and_customer_id() {
        let t = "Call me on +44 20 7946 0958, customer number AB123456.";
        assert_eq!(kinds(t), [Kind::Phone, Kind::CustomerNumber]);
        assert_eq!(kinds("my id is C-1002345"), [Kind::CustomerNumber]);
    }

    #[test]
    fn amounts_and_dates_are_not_personal_data() {
        assert!(kinds("I was charged 1.250,00 EUR on 14.11.2026 at 10:32").is_empty());
        assert!(kinds("I withdrew 200 but got 150").is_empty());
    }
}
