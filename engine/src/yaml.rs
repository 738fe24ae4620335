//! Reading YAML with positions: every file the product reads from a process owner
//! (workflows, fixtures, routing) goes through here, so every problem can name its line.

use std::path::Path;

use marked_yaml::{LoadError, Node, Span, Spanned};
use serde::de::DeserializeOwned;

use crate::workflow::{Code, Diagnostic};

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

/// Parses a YAML document whose top level is a mapping; duplicate keys are an error.
pub(crate) fn parse(file: &Path, text: &str) -> Result<Node, Diagnostic> {
    let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
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
