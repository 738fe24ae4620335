//! Reading YAML with positions: every file the product reads from a process owner
//! (workflows, fixtures, routing) goes through here, so every problem can name its line.

use std::path::Path;

use marked_yaml::{LoadError, Node, Span, Spanned};
use serde::de::DeserializeOwned;
use yaml_rust2::Event;

use crate::diagnostic::{Code, Diagnostic};

/// Line and column (1-based) of a span's start; (0, 0) when unknown.
pub(crate) fn pos(span: &Span) -> (usize, usize) {
    span.start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

/// Line of a spanned value.
pub(crate) fn line_of<T>(value: &Spanned<T>) -> usize {
    pos(value.span()).0
}

/// Deepest nesting of collections a YAML file (or a JSON Schema) may have. The tree of a
/// document is built, converted and dropped by recursion, one stack frame per level or
/// more; the format needs about six levels and a fixture's free-form request a few more.
pub const MAX_DEPTH: usize = 64;

/// Largest YAML file that is parsed, in bytes (1 MiB).
pub const MAX_BYTES: usize = 1024 * 1024;

/// Refuses a text that is too large or nested deeper than [`MAX_DEPTH`], by walking the
/// parser's event stream, which keeps its state on the heap, before any tree is built
/// (the tree builder recurses per level, and ~12,000 levels overflow a thread's stack).
/// A syntax error ends the walk: the real parse reports it, after at most the same depth.
fn check_limits(file: &Path, text: &str) -> Result<(), Diagnostic> {
    if text.len() > MAX_BYTES {
        let msg = format!("the file is larger than {MAX_BYTES} bytes");
        return Err(Diagnostic::new(Code::Limit, file, 0, msg));
    }
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut depth = 0usize;
    let too_deep = |mark: &yaml_rust2::scanner::Marker| {
        let (line, column) = (mark.line(), mark.col() + 1);
        let msg = format!("collections are nested deeper than {MAX_DEPTH} levels");
        Diagnostic::new(Code::Limit, file, line, msg).at(line, column)
    };
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // The scanner has a flow-nesting limit of its own; say it in the same words.
            Err(e) if e.info().contains("recursion limit") => return Err(too_deep(e.marker())),
            Err(_) => break,
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(&mark));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::DocumentEnd | Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(())
}

/// The depth limit a JSON value exceeds, if it does; measured without recursion.
pub(crate) fn json_too_deep(value: &serde_json::Value) -> Option<usize> {
    use serde_json::Value;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Some(MAX_DEPTH);
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    None
}

/// Parses a YAML document whose top level is a mapping; duplicate keys are an error.
/// Files over [`MAX_BYTES`] or nested deeper than [`MAX_DEPTH`] are refused first.
pub(crate) fn parse(file: &Path, text: &str) -> Result<Node, Diagnostic> {
    check_limits(file, text)?;
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| {
        let (line, column) = match &e {
            LoadError::TopLevelMustBeMapping(m)
            | LoadError::TopLevelMustBeSequence(m)
            | LoadError::UnexpectedAnchor(m)
            | LoadError::MappingKeyMustBeScalar(m)
            | LoadError::UnexpectedTag(m)
            | LoadError::ScanError(m, _) => (m.line(), m.column()),
            LoadError::DuplicateKey(inner) => pos(inner.key.span()),
        };
        // The loader's message repeats the position; keep only what follows it.
        let message = e.to_string();
        let message = match message.split_once(": ") {
            Some((head, rest)) if head.chars().all(|c| c.is_ascii_digit() || c == ':') => {
                rest.to_string()
            }
            _ => message,
        };
        Diagnostic::new(Code::Syntax, file, line, message).at(line, column)
    })
}

/// Deserializes one value, turning a failure into a diagnostic at the offending place.
pub(crate) fn from_node<T: DeserializeOwned>(
    node: &Node,
    file: &Path,
    what: &str,
) -> Result<T, Diagnostic> {
    marked_yaml::from_node(node).map_err(|e| {
        let (line, column) = e
            .start_mark()
            .map(|m| (m.line(), m.column()))
            .or_else(|| match &*e {
                // The loader does not say where an unknown field is; point at its key.
                marked_yaml::Error::UnknownFieldError(field, ..) => {
                    key_named(node, field).map(|k| pos(k.span()))
                }
                _ => None,
            })
            .unwrap_or_else(|| pos(node.span()));
        let code = match &*e {
            marked_yaml::Error::UnknownFieldError(..) => Code::UnknownField,
            marked_yaml::Error::Other(msg, _) if msg.starts_with("missing field") => {
                Code::MissingField
            }
            _ => Code::InvalidValue,
        };
        let path = e.path().map(|p| format!(" at `{p}`")).unwrap_or_default();
        Diagnostic::new(
            code,
            file,
            line,
            format!("{what}{path}: {}", inner_message(&e)),
        )
        .at(line, column)
    })
}

/// The first mapping key called `name` in `node`: its own keys first, then nested ones.
fn key_named<'n>(node: &'n Node, name: &str) -> Option<&'n marked_yaml::types::MarkedScalarNode> {
    match node {
        Node::Mapping(map) => map
            .keys()
            .find(|k| k.as_str() == name)
            .or_else(|| map.values().find_map(|v| key_named(v, name))),
        Node::Sequence(seq) => seq.iter().find_map(|v| key_named(v, name)),
        Node::Scalar(_) => None,
    }
}

fn inner_message(e: &marked_yaml::FromNodeError) -> String {
    match &**e {
        marked_yaml::Error::UnknownFieldError(field, expected, _) => {
            format!(
                "unknown field `{field}`, expected one of: {}",
                expected.join(", ")
            )
        }
        marked_yaml::Error::Other(msg, _) => msg.clone(),
        marked_yaml::Error::NotBoolean(_) => "expected true or false".to_string(),
        marked_yaml::Error::IntegerParseFailure(err, _) => format!("expected an integer ({err})"),
        marked_yaml::Error::FloatParseFailure(err, _) => format!("expected a number ({err})"),
    }
}

/// Converts a YAML tree to JSON with typed scalars (YAML 1.2 core schema: `null`, `true`,
/// integers and decimals unquoted; anything quoted stays a string). Used for free-form
/// values such as a fixture's request, where the type of a scalar matters.
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !s.may_coerce() {
                return Value::String(text.to_string());
            }
            match text {
                "null" | "Null" | "NULL" | "~" | "" => Value::Null,
                "true" | "True" | "TRUE" => Value::Bool(true),
                "false" | "False" | "FALSE" => Value::Bool(false),
                _ => {
                    if let Ok(i) = text.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(n) = text
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && text.chars().any(|c| c.is_ascii_digit()))
                        .and_then(serde_json::Number::from_f64)
                    {
                        Value::Number(n)
                    } else {
                        Value::String(text.to_string())
                    }
                }
            }
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// Deserializes free-form YAML through typed JSON (see [`to_json`]); an error names the
/// line of the field it is about when it can be found.
pub(crate) fn from_json_node<T: DeserializeOwned>(
    node: &Node,
    file: &Path,
    text: &str,
    what: &str,
) -> Result<T, Diagnostic> {
    serde_json::from_value(to_json(node)).map_err(|e| {
        let message = e.to_string();
        // serde names the field in backticks: find the line that writes it.
        let line = message
            .split('`')
            .nth(1)
            .and_then(|field| {
                let key = format!("{field}:");
                text.lines()
                    .position(|l| l.trim_start().trim_start_matches("- ").starts_with(&key))
            })
            .map(|i| i + 1)
            .unwrap_or(1);
        let code = if message.starts_with("unknown field") {
            Code::UnknownField
        } else if message.starts_with("missing field") {
            Code::MissingField
        } else {
            Code::InvalidValue
        };
        Diagnostic::new(code, file, line, format!("{what}: {message}"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_become_typed_json_values() {
        let file = Path::new("f.yaml");
        let root = parse(
            file,
            "a: 120\nb: 12.50\nc: \"120\"\nd: true\ne: text\nf: [1, x]\ng: null\n",
        )
        .unwrap();
        let v = to_json(&root);
        assert_eq!(
            v,
            json!({"a": 120, "b": 12.5, "c": "120", "d": true, "e": "text", "f": [1, "x"], "g": null})
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let d = parse(Path::new("f.yaml"), "a: 1\nb: [unclosed\n").unwrap_err();
        assert_eq!(d.code, Code::Syntax);
        assert!(d.line >= 2, "{d}");
        let d = parse(Path::new("f.yaml"), "a: 1\na: 2\n").unwrap_err();
        assert_eq!(d.line, 2, "{d}");
    }

    #[test]
    fn deep_nesting_is_refused_before_a_tree_is_built() {
        let file = Path::new("f.yaml");
        let n = 20_000;
        for text in [
            format!("x:\n{}1\n", "- ".repeat(n)),
            format!("x: {}{}\n", "[".repeat(n), "]".repeat(n)),
            format!("x: {}1{}\n", "{a: ".repeat(n), "}".repeat(n)),
            // Unclosed: the limit still comes first.
            format!("x: {}", "[".repeat(n)),
        ] {
            let d = parse(file, &text).unwrap_err();
            assert_eq!(d.code, Code::Limit, "{d}");
            assert!(d.message.contains("nested deeper than 64"), "{d}");
        }
        let ok = format!(
            "x: {}1{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(file, &ok).is_ok());
        let big = format!("x: \"{}\"\n", "a".repeat(MAX_BYTES));
        assert_eq!(parse(file, &big).unwrap_err().code, Code::Limit);
    }

    #[test]
    fn deep_json_is_measured_without_recursion() {
        let mut v = json!(1);
        for _ in 0..100_000 {
            v = serde_json::Value::Array(vec![v]);
        }
        assert_eq!(json_too_deep(&v), Some(MAX_DEPTH));
        // Dropping it recursively would overflow; take it apart by hand.
        while let serde_json::Value::Array(mut a) = v {
            v = a.pop().unwrap_or_default();
        }
        assert_eq!(json_too_deep(&json!({"a": [1, {"b": 2}]})), None);
    }
}
