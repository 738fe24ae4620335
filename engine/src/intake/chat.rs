//! Chat transcripts: only what the customer wrote counts.
//!
//! A line that starts with a speaker label (optionally after a `[12:03]` time stamp) opens a
//! turn; unlabelled lines continue the current turn. Without any labels the whole text is
//! the customer's.

use std::sync::LazyLock;

use regex::Regex;

static SPEAKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:\[?\d{1,2}:\d{2}(?::\d{2})?\]?\s*)?([\p{L} ]{2,20}?)\s*:\s?(.*)$")
        .expect("speaker pattern compiles")
});

const CUSTOMER: &[&str] = &[
    "customer", "client", "user", "me", "you", "kunde", "kundin", "ich", "nutzer",
];
const STAFF: &[&str] = &[
    "agent",
    "bot",
    "support",
    "assistant",
    "advisor",
    "staff",
    "system",
    "mitarbeiter",
    "mitarbeiterin",
    "berater",
    "beraterin",
    "service",
    "kundenservice",
    "casegraph",
];

#[derive(PartialEq)]
enum Who {
    Customer,
    Staff,
}

fn speaker(label: &str) -> Option<Who> {
    let l = label.trim().to_lowercase();
    if CUSTOMER.contains(&l.as_str()) {
        Some(Who::Customer)
    } else if STAFF.contains(&l.as_str()) || STAFF.iter().any(|s| l.starts_with(s)) {
        Some(Who::Staff)
    } else {
        None
    }
}

/// The customer's turns, joined with line breaks.
pub fn customer_turns(transcript: &str) -> String {
    let mut turns: Vec<String> = Vec::new();
    let mut current: Option<Who> = None;
    let mut labelled = false;
    for line in transcript.lines() {
        if let Some((c, who)) = SPEAKER
            .captures(line)
            .and_then(|c| speaker(&c[1]).map(|w| (c, w)))
        {
            labelled = true;
            if who == Who::Customer {
                turns.push(c[2].trim().to_string());
            }
            current = Some(who);
            continue;
        }
        if current == Some(Who::Customer)
            && let Some(last) = turns.last_mut()
        {
            last.push('\n');
            last.push_str(line.trim());
        }
    }
    if labelled {
        turns.join("\n")
    } else {
        transcript.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_transcript_with_timestamps() {
        let t = "[09:14] Berater: Guten Tag, wie kann ich helfen?\n[09:15] Kunde: Meine Überweisung\nist immer noch nicht angekommen\n[09:15] Berater: Seit wann?\n[09:16] Kunde: seit Montag";
        assert_eq!(
            customer_turns(t),
            "Meine Überweisung\nist immer noch nicht angekommen\nseit Montag"
        );
    }

    #[test]
    fn unlabelled_text_is_kept_whole() {
        assert_eq!(
            customer_turns("my card was declined"),
            "my card was declined"
        );
        // a colon inside the message is not a speaker
        assert_eq!(
            customer_turns("Problem: my card was declined"),
            "Problem: my card was declined"
        );
    }
}
