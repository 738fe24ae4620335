//! What the rules engine refuses before or while a script runs, beyond rhai's own limits:
//! calls of functions the sandbox does not offer (checked when a script compiles, so a
//! workflow calling `sleep` never publishes), and library functions whose single call
//! could build a value far past `max_string_size` before rhai measures it.

use std::collections::HashSet;

use rhai::{Engine, EvalAltResult, ImmutableString};

use super::{Error, Limits, Script};

/// Names rhai resolves itself rather than through registered functions.
const INTRINSICS: &[&str] = &[
    "Fn",
    "call",
    "curry",
    "is_def_fn",
    "is_def_var",
    "is_shared",
    "type_of",
    "print",
    "debug",
    "eval",
];

/// Every function name the engine offers, in any arity.
pub(super) fn function_names(engine: &Engine) -> HashSet<String> {
    let mut names: HashSet<String> = engine
        .collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true)
        .into_iter()
        .collect();
    names.extend(INTRINSICS.iter().map(|s| s.to_string()));
    names
}

/// Refuses a script that calls, as a function or a method, a name that neither the
/// sandbox nor the script itself defines. Operators and property access are not calls by
/// name and are left to rhai.
pub(super) fn calls(script: &Script, known: &HashSet<String>) -> Result<(), Error> {
    let own: HashSet<&str> = script.ast.iter_functions().map(|f| f.name).collect();
    let mut unknown: Option<(String, rhai::Position)> = None;
    script.ast.walk(&mut |path| {
        let (call, pos) = match path.last() {
            Some(rhai::ASTNode::Expr(
                rhai::Expr::FnCall(call, pos) | rhai::Expr::MethodCall(call, pos),
            ))
            | Some(rhai::ASTNode::Stmt(rhai::Stmt::FnCall(call, pos))) => (call, pos),
            _ => return true,
        };
        let name = call.name.as_str();
        let by_name = name.starts_with(|c: char| c.is_alphabetic() || c == '_');
        if call.is_operator_call() || !by_name || known.contains(name) || own.contains(name) {
            return true;
        }
        unknown = Some((name.to_string(), *pos));
        false
    });
    let Some((name, pos)) = unknown else {
        return Ok(());
    };
    let why = match name.as_str() {
        "sleep" => "business rules cannot block a case worker",
        "timestamp" => "business rules read the executor's clock through `now()` and `today()`",
        _ => "the rules sandbox offers no function of that name",
    };
    let origin = &script.origin;
    Err(Error::Compile {
        file: origin.file.clone(),
        line: origin.line + pos.line().unwrap_or(1) - 1,
        column: pos.position().unwrap_or(0),
        node: origin.node.clone(),
        message: format!("function not found: `{name}` is not available: {why}"),
    })
}

/// Replaces rhai's `replace` with one that measures the result first: `"x…".replace("",
/// big)` would otherwise allocate (length × size of `big`) bytes in one operation, gigabytes
/// from two strings within `max_string_size`, before rhai checks the result.
pub(super) fn register_bounded(engine: &mut Engine, limits: &Limits) {
    let max = limits.max_string_size;
    engine
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: &str, with: &str| replace(s, find, with, max),
        )
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: &str, with: char| {
                replace(s, find, with.encode_utf8(&mut [0; 4]), max)
            },
        )
        .register_fn(
            "replace",
            move |s: &mut ImmutableString, find: char, with: &str| {
                replace(s, find.encode_utf8(&mut [0; 4]), with, max)
            },
        );
}

fn replace(
    s: &mut ImmutableString,
    find: &str,
    with: &str,
    max: usize,
) -> Result<(), Box<EvalAltResult>> {
    if s.is_empty() {
        return Ok(());
    }
    // `str::replace` with an empty pattern inserts at every character boundary.
    let count = if find.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(find).count()
    };
    let grown = count
        .checked_mul(with.len())
        .and_then(|added| (s.len() - count * find.len()).checked_add(added));
    match grown {
        Some(len) if len <= max => {
            *s = s.replace(find, with).into();
            Ok(())
        }
        _ => Err(Box::new(EvalAltResult::ErrorDataTooLarge(
            "Length of string".into(),
            rhai::Position::NONE,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_measures_before_it_builds() {
        let mut s = ImmutableString::from("abcabc");
        replace(&mut s, "b", "XY", 100).expect("fits");
        assert_eq!(s.as_str(), "aXYcaXYc");
        let mut s = ImmutableString::from("ab");
        replace(&mut s, "", "-", 100).expect("fits");
        assert_eq!(
            s.as_str(),
            "-a-b-",
            "the empty pattern matches every boundary"
        );
        let mut s = ImmutableString::from("x".repeat(1000));
        assert!(replace(&mut s, "", &"y".repeat(1000), 64 * 1024).is_err());
        assert_eq!(
            s.len(),
            1000,
            "a refused replace leaves the string as it was"
        );
    }
}
