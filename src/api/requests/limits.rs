//! What one request body may hold, beyond its JSON shape: bounds on every part a sending
//! system controls, so that no part carries more text to the model, the store or a rule
//! than `text` itself may.
//!
//! Invariant: after [`check`] the text the intake reads (free text plus every field value)
//! is at most [`MAX_TEXT`] characters, a form has at most [`MAX_FIELDS`] flat fields, and
//! `metadata` is small and shallow. `body_limit_bytes` bounds the raw body before parsing;
//! these bounds hold whatever it is set to.

use serde_json::{Map, Value, json};

use crate::api::AppError;

/// Longest `text` accepted, in characters (a long letter; the workflows' schemas agree).
/// The same bound holds for the text and all field values together.
pub const MAX_TEXT: usize = 20_000;
/// Most form fields in one request (a long web form has a few dozen).
pub const MAX_FIELDS: usize = 64;
/// Longest field name, in characters.
pub const MAX_FIELD_NAME: usize = 64;
/// Longest single field value, in characters (a free-text box of a form).
pub const MAX_FIELD_VALUE: usize = 5_000;
/// Largest `metadata`, as compact JSON bytes.
pub const MAX_METADATA_BYTES: usize = 4_096;
/// Deepest nesting of `metadata` (the object itself is depth 1).
pub const MAX_METADATA_DEPTH: usize = 4;
/// Longest `reply_to`, in bytes.
pub const MAX_URL: usize = 2_048;

fn bad(field: &str, message: String) -> AppError {
    AppError::invalid(message).details(json!({ "field": field }))
}

/// Checks `text` and `fields` together: each field flat and bounded, their sum bounded.
pub fn text_and_fields(text: &str, fields: &Map<String, Value>) -> Result<(), AppError> {
    let mut total = text.chars().count();
    if total > MAX_TEXT {
        return Err(bad(
            "text",
            format!("`text` is longer than {MAX_TEXT} characters"),
        ));
    }
    if fields.len() > MAX_FIELDS {
        return Err(bad(
            "fields",
            format!(
                "a form has at most {MAX_FIELDS} fields; this one has {}",
                fields.len()
            ),
        ));
    }
    for (name, value) in fields {
        let n = name.chars().count();
        if n == 0 || n > MAX_FIELD_NAME || name.chars().any(char::is_control) {
            return Err(bad(
                "fields",
                format!("field names are 1–{MAX_FIELD_NAME} characters without control characters"),
            ));
        }
        let path = format!("fields.{name}");
        let len = match value {
            Value::String(s) => s.chars().count(),
            Value::Null => 0,
            // Read by the intake as their JSON text: short by construction.
            Value::Bool(_) | Value::Number(_) => value.to_string().len(),
            Value::Array(_) | Value::Object(_) => {
                return Err(bad(
                    &path,
                    format!("`{path}` must be a string, number, boolean or null"),
                ));
            }
        };
        if len > MAX_FIELD_VALUE {
            return Err(bad(
                &path,
                format!("`{path}` is longer than {MAX_FIELD_VALUE} characters"),
            ));
        }
        total += len;
        if total > MAX_TEXT {
            return Err(bad(
                &path,
                format!(
                    "`text` and `fields` together are longer than {MAX_TEXT} characters (at `{path}`)"
                ),
            ));
        }
    }
    Ok(())
}

/// `metadata` is context for rules, not a second request: small and shallow.
pub fn metadata(metadata: &Map<String, Value>) -> Result<(), AppError> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    // serde_json's recursion limit (128) bounds `depth`'s own recursion. Measured in place:
    // this runs on every request, classification and dry run.
    if 1 + metadata.values().map(depth).max().unwrap_or(0) > MAX_METADATA_DEPTH {
        return Err(bad(
            "metadata",
            format!("`metadata` is nested deeper than {MAX_METADATA_DEPTH} levels"),
        ));
    }
    if serde_json::to_vec(metadata).map_or(usize::MAX, |b| b.len()) > MAX_METADATA_BYTES {
        return Err(bad(
            "metadata",
            format!("`metadata` is larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// `reply_to` is an http(s) URL of bounded length without spaces or control characters.
pub fn reply_to(url: &str) -> Result<(), AppError> {
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.len() > MAX_URL
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "reply_to",
            format!(
                "`reply_to` must be an http:// or https:// URL of at most {MAX_URL} characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(name.into(), value);
        m
    }

    fn field_of(e: AppError) -> String {
        e.details["field"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn a_long_field_is_refused_naming_it() {
        let f = field("reason", json!("x".repeat(MAX_FIELD_VALUE + 1)));
        let e = text_and_fields("", &f).expect_err("too long");
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(field_of(e), "fields.reason");
        assert!(text_and_fields("", &field("reason", json!("x".repeat(MAX_FIELD_VALUE)))).is_ok());
    }

    #[test]
    fn text_and_fields_share_one_budget() {
        let mut f = Map::new();
        for i in 0..4 {
            f.insert(format!("f{i}"), json!("y".repeat(MAX_FIELD_VALUE)));
        }
        assert!(text_and_fields("", &f).is_ok());
        let e = text_and_fields("z", &f).expect_err("one over");
        assert_eq!(field_of(e), "fields.f3");
    }

    #[test]
    fn fields_are_flat_few_and_named() {
        let e = text_and_fields("", &field("a", json!({"b": 1}))).expect_err("nested");
        assert_eq!(field_of(e), "fields.a");
        let e = text_and_fields("", &field("a", json!(["b"]))).expect_err("array");
        assert_eq!(field_of(e), "fields.a");
        for bad_name in ["", "a\u{0}b", &"n".repeat(MAX_FIELD_NAME + 1)] {
            let e = text_and_fields("", &field(bad_name, json!("v"))).expect_err(bad_name);
            assert_eq!(field_of(e), "fields");
        }
        let many: Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), json!(i)))
            .collect();
        assert_eq!(
            field_of(text_and_fields("", &many).expect_err("many")),
            "fields"
        );
        let ok = field("amount", json!(12.5));
        assert!(text_and_fields("", &ok).is_ok());
    }

    #[test]
    fn metadata_is_small_and_shallow() {
        assert!(metadata(&field("intent", json!("request_refund"))).is_ok());
        let deep = field("a", json!({"b": {"c": {"d": {"e": 1}}}}));
        assert_eq!(field_of(metadata(&deep).expect_err("deep")), "metadata");
        let big = field("note", json!("n".repeat(MAX_METADATA_BYTES)));
        assert_eq!(field_of(metadata(&big).expect_err("big")), "metadata");
    }

    #[test]
    fn reply_to_is_a_bounded_url() {
        assert!(reply_to("https://crm.example/hooks").is_ok());
        for url in [
            "ftp://crm.example/",
            "https://crm.example/a b",
            "https://crm.example/\r\nX-Evil: 1",
        ] {
            assert!(reply_to(url).is_err(), "{url}");
        }
        let long = format!("https://crm.example/{}", "a".repeat(MAX_URL));
        assert!(reply_to(&long).is_err());
    }

    mod bodies {
        //! Random request bodies through parsing, validation and the intake: never a
        //! panic, and what passes validation reaches the model bounded.
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::{MAX_FIELD_NAME, MAX_FIELDS, MAX_TEXT};
        use crate::api::requests::RequestBody;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::from),
                "\\PC{0,30}".prop_map(Value::from),
                Just(Value::from("\u{0}\r\nKunde: x")),
                (1usize..30_000).prop_map(|n| Value::from("Ä".repeat(n))),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn body() -> impl Strategy<Value = Value> {
            let channel = prop_oneof![
                Just(json!("form")),
                Just(json!("letter")),
                Just(json!("chat")),
                json()
            ];
            let fields = prop_oneof![
                prop::collection::btree_map("\\PC{0,70}", json(), 0..80)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                json(),
            ];
            // Mostly well-typed, so that many bodies get past parsing to the intake.
            let text = prop_oneof![
                3 => "\\PC{1,200}".prop_map(Value::from),
                1 => json(),
            ];
            let language = prop_oneof![
                Just(Value::Null),
                Just(json!("de")),
                Just(json!("en")),
                json()
            ];
            let reply_to = prop_oneof![3 => Just(Value::Null), 1 => json()];
            let metadata = prop_oneof![2 => Just(Value::Null), 1 => json()];
            (channel, text, fields, language, reply_to, metadata).prop_map(
                |(channel, text, fields, language, reply_to, metadata)| {
                    json!({
                        "channel": channel, "text": text, "fields": fields,
                        "language": language, "reply_to": reply_to, "metadata": metadata,
                    })
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn random_bodies_never_panic_and_stay_bounded(v in body()) {
                let Ok(b) = serde_json::from_value::<RequestBody>(v) else {
                    // Refused by the extractor with a 4xx, never a panic.
                    return Ok(());
                };
                if b.validate().is_err() {
                    return Ok(());
                }
                let n = b.normalized().normalize();
                // Text and values within MAX_TEXT, plus a label and separator per field.
                let bound = MAX_TEXT + MAX_FIELDS * (MAX_FIELD_NAME + 4) + 1;
                prop_assert!(n.text.chars().count() <= bound);
            }
        }
    }
}
