//! How a rule reads the customer's answer to a confirming question: `confirmed(answer)` and
//! `declined(answer)`, for the `ask` node an irreversible workflow passes before it acts.
//!
//! `answer` is what an `ask` node keeps at `case.answers.<node>` (a form's `confirm` field,
//! else the text), or `()` when nobody answered. The reading is deliberately narrow: a
//! clear yes that no "no" word contradicts is `confirmed`; any "no" word is `declined`;
//! everything else is neither, and the workflow asks a person. "Yes, but not the card
//! ending 1234" is declined, never confirmed: an irreversible action waits for a clear yes.
//!
//! The publish-time confirmation rule (`workflow::confirm`) recognises a decision branch
//! whose `when` calls `confirmed(...)` as the customer's consent to the action behind it.

use rhai::{Dynamic, Engine, Map};

use super::text::contains_any;

/// Words (folded, so "Bestätige" reads `bestaetige`) that say yes in English or German.
const YES: &[&str] = &[
    "yes",
    "yep",
    "yeah",
    "y",
    "ok",
    "okay",
    "confirm",
    "confirmed",
    "i confirm",
    "correct",
    "please do",
    "go ahead",
    "ja",
    "jawohl",
    "bestaetige",
    "bestaetigt",
    "ich bestaetige",
    "richtig",
    "genau",
    "einverstanden",
];

/// Words that say no, or take a yes back, in English or German.
const NO: &[&str] = &[
    "no", "nope", "not", "don t", "dont", "do not", "never", "stop", "wait", "nein", "nicht",
    "kein", "keine", "niemals", "warten", "halt",
];

/// `yes`, `no` or `unclear` for an answer map (`fields.confirm`, else `text`) or `()`.
fn reading(answer: &Dynamic) -> &'static str {
    let Some(map) = answer.read_lock::<Map>() else {
        return "unclear";
    };
    let field = map
        .get("fields")
        .and_then(|f| f.read_lock::<Map>().and_then(|f| f.get("confirm").cloned()));
    if let Some(v) = field {
        if let Ok(b) = v.as_bool() {
            return if b { "yes" } else { "no" };
        }
        if let Ok(s) = v.into_string() {
            return text_reading(&s);
        }
    }
    let text = map
        .get("text")
        .and_then(|t| t.clone().into_string().ok())
        .unwrap_or_default();
    text_reading(&text)
}

fn text_reading(text: &str) -> &'static str {
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    if contains_any(text, &words(NO)) {
        "no"
    } else if contains_any(text, &words(YES)) {
        "yes"
    } else {
        "unclear"
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("confirmed", |a: Dynamic| reading(&a) == "yes")
        .register_fn("declined", |a: Dynamic| reading(&a) == "no");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Dynamic {
        let mut m = Map::new();
        m.insert("text".into(), text.into());
        m.insert("fields".into(), Map::new().into());
        m.into()
    }

    #[test]
    fn a_clear_yes_confirms_and_any_no_declines() {
        for yes in [
            "Yes",
            "ja, bitte",
            "Ich bestätige.",
            "OK go ahead",
            "yes please do",
        ] {
            assert_eq!(reading(&answer(yes)), "yes", "{yes}");
        }
        for no in [
            "no",
            "Nein!",
            "yes, but not the old card",
            "Ja, aber nicht heute",
            "don't",
            "wait, I found it",
        ] {
            assert_eq!(reading(&answer(no)), "no", "{no}");
        }
        for unclear in ["", "what do you mean?", "Wer sind Sie?", "1234"] {
            assert_eq!(reading(&answer(unclear)), "unclear", "{unclear}");
        }
        assert_eq!(reading(&Dynamic::UNIT), "unclear", "nobody answered");
    }

    #[test]
    fn a_form_field_wins_over_the_text() {
        let mut fields = Map::new();
        fields.insert("confirm".into(), false.into());
        let mut m = Map::new();
        m.insert("text".into(), "yes".into());
        m.insert("fields".into(), fields.into());
        assert_eq!(reading(&m.into()), "no");
    }
}
