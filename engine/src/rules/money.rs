//! Money for business rules: amounts are exact decimals, read in German and English
//! notation, rounded commercially and written back in the customer's language.

use std::sync::LazyLock;

use regex::Regex;
use rhai::{Array, Dynamic, Engine};
use rust_decimal::{Decimal, RoundingStrategy};

/// A number with optional thousands separators and decimals, with an optional currency
/// marker before or after it. Separators are resolved in [`parse_number`].
static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?xi)
        (?P<pre>€|\$|£|\b(?:eur|usd|gbp)\b)?\s?
        (?P<num>-?\d{1,3}(?:[.,'\x20]\d{3})+(?:[.,]\d{1,2})?|-?\d+(?:[.,]\d{1,2})?)
        (?:\s?(?P<post>€|\$|£|\b(?:eur|euro|euros|usd|gbp)\b))?",
    )
    .expect("amount pattern compiles")
});

/// Reads "1.234,56", "1,234.56", "12,50", "12.5", "1 234", "-3" as a decimal.
///
/// With both separators the later one is the decimal mark; with one kind only, its last
/// occurrence is a decimal mark when one or two digits follow it, and every other one a
/// thousands separator ("1.249.90", an OCR'd "1.249,90", is 1249.90; "1.234" is 1234).
pub(crate) fn parse_number(raw: &str) -> Option<Decimal> {
    let s: String = raw.chars().filter(|c| !matches!(c, ' ' | '\'')).collect();
    let last_dot = s.rfind('.');
    let last_comma = s.rfind(',');
    let normalized = match (last_dot, last_comma) {
        (Some(d), Some(c)) => {
            let (thousands, decimal) = if d > c { (',', '.') } else { ('.', ',') };
            s.replace(thousands, "").replace(decimal, ".")
        }
        (Some(i), None) | (None, Some(i)) => {
            let sep = s.as_bytes()[i] as char;
            let digits_after = s.len() - i - 1;
            if digits_after <= 2 {
                format!("{}.{}", s[..i].replace(sep, ""), &s[i + 1..])
            } else {
                s.replace(sep, "")
            }
        }
        (None, None) => s,
    };
    normalized.parse().ok()
}

/// The first amount in `text`, preferring one next to a currency marker.
pub(crate) fn extract_amount(text: &str) -> Option<Decimal> {
    let mut first = None;
    for cap in AMOUNT.captures_iter(text) {
        let value = cap.name("num").and_then(|m| parse_number(m.as_str()));
        if value.is_none() {
            continue;
        }
        if cap.name("pre").is_some() || cap.name("post").is_some() {
            return value;
        }
        first = first.or(value);
    }
    first
}

/// Every amount in `text`, in order.
pub(crate) fn extract_amounts(text: &str) -> Vec<Decimal> {
    AMOUNT
        .captures_iter(text)
        .filter_map(|c| c.name("num").and_then(|m| parse_number(m.as_str())))
        .collect()
}

/// Two decimal places, half away from zero (commercial rounding).
pub(crate) fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// "1.234,56 €" for German, "€1,234.56" otherwise.
pub(crate) fn format_money(d: Decimal, lang: &str) -> String {
    let rounded = round_money(d);
    let negative = rounded.is_sign_negative();
    let text = format!("{:.2}", rounded.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, "00"));
    let (group, mark) = if lang == "de" { ('.', ',') } else { (',', '.') };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(group);
        }
        grouped.push(c);
    }
    let sign = if negative { "-" } else { "" };
    if lang == "de" {
        format!("{sign}{grouped}{mark}{frac} €")
    } else {
        format!("{sign}€{grouped}{mark}{frac}")
    }
}

fn unit_or<T: Into<Dynamic>>(v: Option<T>) -> Dynamic {
    v.map(Into::into).unwrap_or(Dynamic::UNIT)
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("parse_amount", |s: &str| {
            let s = s
                .trim()
                .trim_start_matches(['€', '$', '£'])
                .trim_end_matches(['€', '$', '£']);
            let s = s.trim_start_matches("EUR").trim_end_matches("EUR").trim();
            unit_or(parse_number(s))
        })
        .register_fn("parse_amount", |_: ()| Dynamic::UNIT)
        .register_fn("extract_amount", |s: &str| unit_or(extract_amount(s)))
        .register_fn("extract_amount", |_: ()| Dynamic::UNIT)
        .register_fn("extract_amounts", |s: &str| -> Array {
            extract_amounts(s)
                .into_iter()
                .map(Dynamic::from_decimal)
                .collect()
        })
        .register_fn("round_money", round_money)
        .register_fn("round_money", |i: i64| Decimal::from(i))
        .register_fn("format_money", |d: Decimal, lang: &str| {
            format_money(d, lang)
        })
        .register_fn("format_money", |i: i64, lang: &str| {
            format_money(Decimal::from(i), lang)
        })
        .register_fn("to_decimal", |i: i64| Decimal::from(i))
        .register_fn("to_decimal", |d: Decimal| d)
        .register_fn("to_decimal", |s: &str| unit_or(parse_number(s.trim())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("test decimal")
    }

    #[test]
    fn german_and_english_notation() {
        assert_eq!(parse_number("1.234,56"), Some(d("1234.56")));
        assert_eq!(parse_number("1,234.56"), Some(d("1234.56")));
        assert_eq!(parse_number("12,50"), Some(d("12.50")));
        assert_eq!(parse_number("12.5"), Some(d("12.5")));
        assert_eq!(parse_number("1.234"), Some(d("1234")));
        assert_eq!(parse_number("1 234 567,8"), Some(d("1234567.8")));
        // OCR turned the decimal comma into a dot: the last mark is still the decimal one.
        assert_eq!(parse_number("1.249.90"), Some(d("1249.90")));
        assert_eq!(parse_number("1,249,9"), Some(d("1249.9")));
        assert_eq!(parse_number("1.234.567"), Some(d("1234567")));
        assert_eq!(parse_number("abc"), None);
    }

    #[test]
    fn amounts_in_free_text_prefer_a_currency() {
        let de = "Am 12.03. wurden mir für Bestellung 4711 insgesamt 1.249,90 € abgebucht.";
        assert_eq!(extract_amount(de), Some(d("1249.90")));
        assert_eq!(
            extract_amount("I was charged EUR 35.20 twice"),
            Some(d("35.20"))
        );
        assert_eq!(
            extract_amount("refund $1,020.00 please"),
            Some(d("1020.00"))
        );
        assert_eq!(extract_amount("order 123 was 45,00 Euro"), Some(d("45.00")));
        assert_eq!(extract_amount("no money here"), None);
        assert_eq!(
            extract_amount("wurden mir 1.249.90 € abgebucht"),
            Some(d("1249.90"))
        );
        assert_eq!(extract_amounts("5 € and 7,50 €"), vec![d("5"), d("7.50")]);
    }

    #[test]
    fn rounding_and_formatting() {
        assert_eq!(round_money(d("2.345")), d("2.35"));
        assert_eq!(round_money(d("-2.345")), d("-2.35"));
        assert_eq!(format_money(d("1234.5"), "de"), "1.234,50 €");
        assert_eq!(format_money(d("1234.5"), "en"), "€1,234.50");
        assert_eq!(format_money(d("0.5"), "de"), "0,50 €");
        assert_eq!(format_money(d("-1000000"), "en"), "-€1,000,000.00");
    }
}
