//! Letters arrive as OCR text of a scanned page. The body is what the customer wants; the
//! rest of the page (sender and recipient address blocks, place and date, subject line,
//! salutation, closing, signature) is dropped. Words hyphenated across a line break are
//! joined; the caller collapses the remaining hard line breaks.

use std::sync::LazyLock;

use regex::Regex;

static HYPHEN_LOWER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\p{L})[-\u{00AD}]\s*\n\s*(\p{Ll})").expect("hyphen pattern compiles")
});
static HYPHEN_UPPER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\p{L})-\s*\n\s*(\p{Lu})").expect("hyphen pattern compiles"));
static SALUTATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(sehr geehrte[rs]?\b|liebe[rs]?\b|hallo\b|guten tag\b|moin\b|servus\b|dear\b|to whom it may concern|hello\b|hi\b|good (?:morning|afternoon|evening)\b)[^,!:\n]{0,60}[,!:]?\s*(.*)$",
    )
    .expect("salutation pattern compiles")
});
static CLOSING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(mit (?:den )?(?:freundlichen|besten|herzlichen) grü(?:ß|ss)en|mit freundlichem gru(?:ß|ss)|freundliche grü(?:ß|ss)e|viele grü(?:ß|ss)e|beste grü(?:ß|ss)e|herzliche grü(?:ß|ss)e|liebe grü(?:ß|ss)e|hochachtungsvoll|mfg\b|yours (?:sincerely|faithfully|truly)|sincerely|kind(?:est)? regards|best regards|warm regards|regards\b|best wishes|thanks and regards)",
    )
    .expect("closing pattern compiles")
});
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:betreff|betr\.|subject|re|bezug|reference|ref\.)\s*:\s*(.+)$")
        .expect("subject pattern compiles")
});
static HEADER_HINT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        \b\d{4,5}\s+\p{Lu}                                   # postal code + town
        | (?:stra(?:ß|ss)e|str\.|weg|allee|platz|gasse|ring|street|road|avenue|lane)\b\s*\d*
        | \b\d{1,2}\.\s?\d{1,2}\.\s?\d{2,4}\b                # 14.11.2026
        | \b\d{1,2}\.?\s+(?:januar|februar|märz|april|mai|juni|juli|august|september|oktober|november|dezember|january|february|march|may|june|july|october|december)\b
        | \b(?:january|february|march|april|may|june|july|august|september|october|november|december)\s+\d{1,2},?\s+\d{4}\b
        | ^\s*(?:tel|telefon|phone|fax|e-?mail|kundennummer|kunden-nr|customer\s+(?:no|number)|iban|postfach|p\.?o\.?\s+box)\b
        | ^\s*(?:herrn?|frau|mr|mrs|ms|dr)\.?\s+\p{Lu}",
    )
    .expect("header pattern compiles")
});

/// A letter split into the parts the model and the case need.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub body: String,
    pub subject: Option<String>,
}

/// Isolates the body (see the module doc).
pub fn body(ocr: &str) -> Letter {
    let text = ocr.replace("\r\n", "\n").replace('\r', "\n");
    let text = HYPHEN_LOWER.replace_all(&text, "$1$2");
    let text = HYPHEN_UPPER.replace_all(&text, "$1-$2");
    let lines: Vec<&str> = text.lines().collect();

    let mut subject = None;
    let salutation = lines.iter().position(|l| SALUTATION.is_match(l));
    let header_end = salutation.unwrap_or_else(|| header_len(&lines));
    for l in &lines[..header_end] {
        if let Some(c) = SUBJECT.captures(l) {
            subject = Some(c[1].trim().to_string());
        }
    }
    let mut body: Vec<String> = Vec::new();
    let start = match salutation {
        Some(i) => {
            // "Dear Sir or Madam, I am writing ..." on one line keeps its tail
            if let Some(rest) = SALUTATION
                .captures(lines[i])
                .and_then(|c| c.get(2))
                .map(|m| m.as_str().trim())
                .filter(|r| !r.is_empty())
            {
                body.push(rest.to_string());
            }
            i + 1
        }
        None => header_end,
    };
    for l in &lines[start..] {
        if CLOSING.is_match(l) {
            break;
        }
        body.push(l.trim().to_string());
    }
    // a page without any structure: keep everything rather than nothing
    if body.iter().all(|l| l.is_empty()) {
        body = lines.iter().map(|l| l.trim().to_string()).collect();
    }
    Letter {
        body: body.join("\n").trim().to_string(),
        subject,
    }
}

/// Number of leading lines that form the letterhead: blocks (separated by blank lines) of
/// short lines with address, date or subject hints.
fn header_len(lines: &[&str]) -> usize {
    let mut i = 0;
    while i < lines.len() {
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        let start = i;
        let mut end = i;
        while end < lines.len() && !lines[end].trim().is_empty() {
            end += 1;
        }
        let block = &lines[start..end];
        let looks_like_header = !block.is_empty()
            && block.len() <= 7
            && block.iter().all(|l| l.chars().count() <= 70)
            && block
                .iter()
                .any(|l| HEADER_HINT.is_match(l) || SUBJECT.is_match(l));
        if !looks_like_header {
            return start;
        }
        i = end;
    }
    lines.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_letter_without_blank_lines_around_the_closing() {
        let l = "Jane Smith\n42 Baker Street\nLondon NW1 6XE\n\n3 November 2026\n\nSubject: Refund not received\n\nDear Sir or Madam,\nI returned a jacket to an online shop on 12 Oct-\nober and they confirmed the refund, but it has not\nshown up in my account.\nYours faithfully,\nJane Smith";
        let b = body(l);
        assert_eq!(
            b.body,
            "I returned a jacket to an online shop on 12 October and they confirmed the refund, but it has not\nshown up in my account."
        );
        assert_eq!(b.subject.as_deref(), Some("Refund not received"));
    }

    #[test]
    fn letter_without_salutation_drops_the_letterhead() {
        let l = "Erika Musterfrau\nHauptstr. 5\n80331 München\n\nMünchen, 2. Oktober 2026\n\nmeine Karte wurde am Automaten eingezogen. Bitte senden Sie mir eine neue.\n\nMit freundlichem Gruß\nErika Musterfrau";
        assert_eq!(
            body(l).body,
            "meine Karte wurde am Automaten eingezogen. Bitte senden Sie mir eine neue."
        );
    }

    #[test]
    fn salutation_with_text_on_the_same_line() {
        let l = "Hallo, meine PIN ist gesperrt.\nViele Grüße\nTom";
        assert_eq!(body(l).body, "meine PIN ist gesperrt.");
    }

    #[test]
    fn hyphenated_compounds_keep_their_hyphen() {
        let l = "Sehr geehrte Damen und Herren,\nbitte ändern Sie meine E-\nMail-Adresse.\nMfG";
        assert_eq!(body(l).body, "bitte ändern Sie meine E-Mail-Adresse.");
    }
}
