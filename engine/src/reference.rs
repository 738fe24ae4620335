//! The printed case reference: what a customer quotes when they answer a question, on any
//! channel (`CG-7K3F-9Q2D`).
//!
//! A reference is derived from the case id, so the executor, fixtures and the CLI print the
//! same one the service stores; it is seven characters of Crockford's base-32 alphabet (no
//! I, L, O, U) and a check character (Luhn mod 32), which catches every single wrong
//! character. Read back from an OCR'd letter a reference may carry one confused character;
//! [`candidates`] then lists the references one substitution away that pass the check,
//! and the caller keeps the one that names a known case. Depends on nothing but sha2.

use std::sync::OnceLock;

use regex::Regex;
use sha2::{Digest, Sha256};

/// Crockford's base-32 digits, in value order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a reference without its `CG-` prefix and dash: seven data, one check.
const LEN: usize = 8;

/// The reference of a case: `CG-XXXX-XXXC`, `C` the check character.
pub fn of(case_id: &str) -> String {
    let hash = Sha256::digest(format!("casegraph case reference\0{case_id}").as_bytes());
    let mut bits = u64::from_be_bytes(hash[..8].try_into().unwrap_or([0; 8]));
    let mut code = [0u8; LEN];
    for c in code.iter_mut().take(LEN - 1) {
        *c = ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    code[LEN - 1] = check(&code[..LEN - 1]);
    format(&code)
}

/// The references a text names, in the order they appear: each as written when its check
/// character holds, else every reference one character away that passes the check (at most
/// `8 × 31 / 32 + 1` of them). The caller keeps those that name a known case.
pub fn candidates(text: &str) -> Vec<Vec<String>> {
    static FIND: OnceLock<Regex> = OnceLock::new();
    let find = FIND.get_or_init(|| {
        Regex::new(r"(?i)\bC[G6]\s?[-–—:.]?\s?([0-9A-Z]{4})\s?[-–—.]?\s?([0-9A-Z]{4})\b")
            .expect("the reference pattern compiles")
    });
    find.captures_iter(text)
        .take(4)
        .filter_map(|c| {
            let raw = format!("{}{}", &c[1], &c[2]);
            let code = normalize(&raw)?;
            Some(if valid(&code) {
                vec![format(&code)]
            } else {
                one_away(&code)
            })
        })
        .collect()
}

/// `true` when `reference` (as printed, any case, with or without dashes) passes its check.
pub fn is_valid(reference: &str) -> bool {
    let raw: String = reference
        .trim()
        .trim_start_matches(|c: char| c.eq_ignore_ascii_case(&'c'))
        .trim_start_matches(|c: char| c.eq_ignore_ascii_case(&'g'))
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    raw.len() == LEN && normalize(&raw).is_some_and(|c| valid(&c))
}

/// Upper case, with the letters Crockford's alphabet leaves out read as the digits they
/// look like; `None` for any other character.
fn normalize(raw: &str) -> Option<[u8; LEN]> {
    let bytes = raw.as_bytes();
    if bytes.len() != LEN {
        return None;
    }
    let mut code = [0u8; LEN];
    for (out, &b) in code.iter_mut().zip(bytes) {
        *out = match b.to_ascii_uppercase() {
            b'O' => b'0',
            b'I' | b'L' => b'1',
            b'U' => b'V',
            c if ALPHABET.contains(&c) => c,
            _ => return None,
        };
    }
    Some(code)
}

fn value(c: u8) -> u32 {
    ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u32
}

/// The Luhn mod 32 check character of `data`.
fn check(data: &[u8]) -> u8 {
    let mut factor = 2;
    let mut sum = 0;
    for &c in data.iter().rev() {
        let addend = factor * value(c);
        sum += addend / 32 + addend % 32;
        factor = if factor == 2 { 1 } else { 2 };
    }
    ALPHABET[((32 - sum % 32) % 32) as usize]
}

fn valid(code: &[u8; LEN]) -> bool {
    check(&code[..LEN - 1]) == code[LEN - 1]
}

/// Every reference that differs from `code` in one character and passes the check.
fn one_away(code: &[u8; LEN]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..LEN {
        for &c in ALPHABET {
            if c == code[i] {
                continue;
            }
            let mut alt = *code;
            alt[i] = c;
            if valid(&alt) {
                out.push(format(&alt));
            }
        }
    }
    out
}

fn format(code: &[u8; LEN]) -> String {
    let s = std::str::from_utf8(code).unwrap_or_default();
    format!("CG-{}-{}", &s[..4], &s[4..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_reference_is_stable_per_case_and_passes_its_check() {
        let r = of("c-0192f1a2b3c-a1b2c3d4e5f6");
        assert_eq!(r, of("c-0192f1a2b3c-a1b2c3d4e5f6"));
        assert_ne!(r, of("c-0192f1a2b3c-a1b2c3d4e5f7"));
        assert_eq!(r.len(), 12);
        assert!(r.starts_with("CG-"));
        assert!(is_valid(&r), "{r}");
        assert!(is_valid(&r.to_lowercase().replace('-', " ")));
    }

    #[test]
    fn every_single_wrong_character_fails_the_check() {
        for n in 0..50 {
            let r = of(&format!("c-{n}"));
            let code = normalize(&r[3..].replace('-', "")).unwrap();
            for i in 0..LEN {
                for &c in ALPHABET {
                    if c != code[i] {
                        let mut alt = code;
                        alt[i] = c;
                        assert!(!valid(&alt), "{r}: position {i} as {}", c as char);
                    }
                }
            }
        }
    }

    #[test]
    fn a_letter_quoting_the_reference_is_found_with_ocr_noise() {
        let r = of("c-letter");
        let raw = r[3..].replace('-', "");
        let text = format!("Sehr geehrte Damen und Herren,\nIhr Zeichen: {r}\nEs waren 42,50 EUR.");
        assert_eq!(candidates(&text), vec![vec![r.clone()]]);
        // lower case, spaces instead of dashes, 0 read as O
        let noisy = format!("ihr zeichen cg {} {}", &raw[..4], &raw[4..]).replace('0', "o");
        assert_eq!(candidates(&noisy), vec![vec![r.clone()]]);
        // one character confused: the right reference is among the few candidates
        let mut wrong = raw.clone().into_bytes();
        wrong[2] = if wrong[2] == b'8' { b'B' } else { b'8' };
        let wrong = String::from_utf8(wrong).unwrap();
        let found = candidates(&format!("CG-{}-{}", &wrong[..4], &wrong[4..]));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains(&r), "{r} in {:?}", found[0]);
        assert!(found[0].len() <= 9, "{:?}", found[0]);
    }

    #[test]
    fn text_without_a_reference_names_none() {
        assert!(candidates("Card CGX-1 arrived, IBAN DE44500105175407324931").is_empty());
        assert!(!is_valid("CG-1234"));
    }
}
