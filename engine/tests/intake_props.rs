//! Property tests of channel intake on what an outsider sends: random unicode, control
//! characters and NULs, mixed scripts, speaker labels, huge and odd form fields. Intake
//! never panics, its output is bounded whatever the input's size, and the personal data it
//! reports are ranges of its own text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use casegraph_engine::intake::{self, Channel, MAX_CHARS};
use proptest::prelude::*;

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Form),
        Just(Channel::Letter),
        Just(Channel::Chat)
    ]
}

/// Text built from pieces intake treats specially, plus anything at all.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        Just("\u{0}".to_string()),
        Just("\r\n".to_string()),
        Just("\u{202e}\u{200b}\u{feff}".to_string()),
        Just("Kunde: ".to_string()),
        Just("[12:03] Agent: ".to_string()),
        Just("Betreff: ".to_string()),
        Just("Mit freundlichen Grüßen\n".to_string()),
        Just("DE89 3704 0044 0532 0130 00 ".to_string()),
        Just("jane.doe@example.com ".to_string()),
        Just("+49 170 1234567 ".to_string()),
        Just("Привет 你好 مرحبا ".to_string()),
        "[a-z ]{0,30}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

fn fields() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(any::<String>(), hostile_text(), 0..8)
}

fn check(n: &intake::Normalized) -> Result<(), TestCaseError> {
    prop_assert!(n.text.chars().count() <= MAX_CHARS);
    // A redaction label (`[EMAIL]`) may be longer than what it replaces, never much.
    prop_assert!(n.redacted.len() <= 2 * n.text.len() + 16);
    prop_assert!(
        n.subject
            .as_ref()
            .is_none_or(|s| s.chars().count() <= MAX_CHARS)
    );
    prop_assert!(
        !n.text.starts_with(char::is_whitespace) && !n.text.ends_with(char::is_whitespace)
    );
    for p in &n.pii {
        prop_assert!(p.start <= p.end && n.text.get(p.start..p.end).is_some());
    }
    prop_assert!(!n.language.is_empty() && n.language.len() <= 3);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn intake_never_panics_and_stays_bounded(c in channel(), text in hostile_text(), f in fields()) {
        check(&intake::normalize(c, &text, &f))?;
    }
}

proptest! {
    // Large inputs are slow to build; fewer cases suffice to cover the sizes.
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn huge_input_gives_bounded_output(c in channel(), unit in "\\PC{1,12}", copies in 1usize..40_000, f in fields()) {
        let text = unit.repeat(copies);
        let mut f = f;
        f.insert("huge".into(), unit.repeat(copies));
        check(&intake::normalize(c, &text, &f))?;
    }
}
