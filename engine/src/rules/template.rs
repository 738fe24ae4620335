//! The reply-template sandbox: the minijinja environment every workflow's replies compile
//! into, the checks a template passes before it is accepted, and rendering under
//! [`Limits`].
//!
//! A template's author is trusted to write a letter, not to run a program. What keeps a
//! rendering small and short:
//! - the source is at most `max_template_bytes`;
//! - no assignment (`set`, `with`, `{% filter %}` blocks, `do`): a value cannot be fed back
//!   into itself, so `a ~ a` cannot double 40 times; and a `for` loop may not iterate over
//!   a value built with `~`, `+` or `*`, for the same reason;
//! - no `*` or `**` (`"x" * 100000000` is one instruction and 100 MB) — arithmetic belongs
//!   in rules;
//! - no filter that makes one value many times larger in one call (`indent`, `format`,
//!   `batch`, `slice`, `pprint`), and `join` and `replace` measure their result first;
//! - fuel (`template_fuel`) bounds the instructions, so loops that write nothing end;
//! - the output goes to a writer that fails past `max_reply_bytes` or after `max_run_ms`;
//! - minijinja's own parser bound on nesting stays in place.
//!
//! Compile-time checks go through minijinja's `unstable_machinery` parser; the dependency
//! is pinned in `Cargo.lock`, and an upgrade must keep [`check`] compiling and its tests green.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};
use minijinja::{Environment, ErrorKind, Value};

use super::Limits;

/// Filters minijinja offers that are not available in replies, with why.
const REFUSED_FILTERS: &[(&str, &str)] = &[
    ("indent", "its width repeats spaces without bound"),
    ("format", "its padding widths are unbounded"),
    ("batch", "its size argument allocates up front"),
    ("slice", "its count argument allocates up front"),
    ("pprint", "replies are letters, not dumps"),
];

/// Globals minijinja offers that replies have no use for.
const REFUSED_GLOBALS: &[&str] = &["namespace", "debug"];

thread_local! {
    /// The running rendering's deadline and output bound, for the bounded filters.
    static RENDERING: Cell<Option<(Instant, usize)>> = const { Cell::new(None) };
}

/// A reply that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the reply grew past {limit} bytes (limit max_reply_bytes)")]
    TooLong { limit: usize },
    #[error(
        "the template ran out of fuel after {limit} instructions (limit template_fuel); does it loop too long?"
    )]
    OutOfFuel { limit: u64 },
    #[error("the template was stopped after rendering for {limit_ms} ms (limit max_run_ms)")]
    Deadline { limit_ms: u64 },
    #[error("{0}")]
    Render(String),
}

impl Error {
    /// The error without anything the case could have put into it: the limits' messages
    /// name limits only; minijinja's own message may quote a value, so only its kind stays.
    pub fn kind(&self) -> String {
        match self {
            Error::Render(_) => "rendering failed".into(),
            limit => limit.to_string(),
        }
    }
}

/// The environment every reply template of a workflow is added to.
pub fn environment(limits: &Limits) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.template_fuel));
    for (name, _) in REFUSED_FILTERS {
        env.remove_filter(name);
    }
    for name in REFUSED_GLOBALS {
        env.remove_global(name);
    }
    env.add_filter("join", join);
    env.add_filter("replace", replace);
    env
}

/// A template refused before it is added: the 1-based line within the template and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub message: String,
}

/// Checks a template's source against the sandbox's rules. Parse errors are left to
/// minijinja when the template is added (`Ok` here), so they keep minijinja's wording.
pub fn check(source: &str, limits: &Limits) -> Result<(), Refusal> {
    if source.len() > limits.max_template_bytes {
        return Err(Refusal {
            line: 1,
            message: format!(
                "is {} bytes long; the limit is {} (rules.max_template_bytes)",
                source.len(),
                limits.max_template_bytes
            ),
        });
    }
    let Ok(tree) =
        minijinja::machinery::parse(source, "<reply>", Default::default(), Default::default())
    else {
        return Ok(());
    };
    stmt(&tree).map_err(|(span, message)| Refusal {
        line: usize::from(span.start_line.max(1)),
        message,
    })
}

type Refused = (minijinja::machinery::Span, String);

fn stmts(list: &[Stmt<'_>]) -> Result<(), Refused> {
    list.iter().try_for_each(stmt)
}

fn stmt(s: &Stmt<'_>) -> Result<(), Refused> {
    let refuse = |span, what: &str| {
        Err((
            span,
            format!(
                "uses {what}, which reply templates do not offer: a reply may not assign values (compute them in a rule)"
            ),
        ))
    };
    match s {
        Stmt::Template(t) => stmts(&t.children),
        Stmt::EmitExpr(e) => expr(&e.expr, false),
        Stmt::EmitRaw(_) => Ok(()),
        Stmt::ForLoop(f) => {
            expr(&f.iter, true)?;
            if let Some(filter) = &f.filter_expr {
                expr(filter, false)?;
            }
            stmts(&f.body)?;
            stmts(&f.else_body)
        }
        Stmt::IfCond(c) => {
            expr(&c.expr, false)?;
            stmts(&c.true_body)?;
            stmts(&c.false_body)
        }
        Stmt::AutoEscape(a) => {
            expr(&a.enabled, false)?;
            stmts(&a.body)
        }
        Stmt::Set(x) => refuse(x.span(), "`{% set %}`"),
        Stmt::SetBlock(x) => refuse(x.span(), "`{% set %}`"),
        Stmt::WithBlock(x) => refuse(x.span(), "`{% with %}`"),
        Stmt::FilterBlock(x) => refuse(x.span(), "`{% filter %}`"),
        Stmt::Do(x) => refuse(x.span(), "`{% do %}`"),
        #[allow(
            unreachable_patterns,
            reason = "kinds of minijinja features not compiled in"
        )]
        _ => Err((
            Default::default(),
            "uses a statement reply templates do not offer".into(),
        )),
    }
}

/// Checks an expression; `bound` when its value is iterated by a `for` loop.
fn expr(e: &Expr<'_>, bound: bool) -> Result<(), Refused> {
    match e {
        Expr::Var(_) | Expr::Const(_) => Ok(()),
        Expr::BinOp(b) => {
            match b.op {
                BinOpKind::Mul | BinOpKind::Pow => {
                    return Err((
                        b.span(),
                        "uses `*` or `**`, which reply templates do not offer (compute numbers in a rule)".into(),
                    ));
                }
                BinOpKind::Concat | BinOpKind::Add if bound => {
                    return Err((
                        b.span(),
                        "loops over a value built with `~` or `+`; a `for` loop may only go over data or `range`".into(),
                    ));
                }
                _ => {}
            }
            expr(&b.left, bound)?;
            expr(&b.right, bound)
        }
        Expr::UnaryOp(u) => expr(&u.expr, bound),
        Expr::Slice(s) => {
            expr(&s.expr, bound)?;
            [&s.start, &s.stop, &s.step]
                .into_iter()
                .flatten()
                .try_for_each(|e| expr(e, bound))
        }
        Expr::Compare(c) => {
            expr(&c.expr, bound)?;
            c.ops.iter().try_for_each(|op| expr(&op.expr, bound))
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr, bound)?;
            expr(&i.true_expr, bound)?;
            i.false_expr.iter().try_for_each(|e| expr(e, bound))
        }
        Expr::Filter(f) => {
            if let Some((name, why)) = REFUSED_FILTERS.iter().find(|(n, _)| *n == f.name) {
                return Err((
                    f.span(),
                    format!("uses the filter `{name}`, which reply templates do not offer: {why}"),
                ));
            }
            f.expr.iter().try_for_each(|e| expr(e, bound))?;
            args(&f.args, bound)
        }
        Expr::Test(t) => {
            expr(&t.expr, bound)?;
            args(&t.args, bound)
        }
        Expr::GetAttr(g) => expr(&g.expr, bound),
        Expr::GetItem(g) => {
            expr(&g.expr, bound)?;
            expr(&g.subscript_expr, bound)
        }
        Expr::Call(c) => {
            expr(&c.expr, bound)?;
            args(&c.args, bound)
        }
        Expr::List(l) => l.items.iter().try_for_each(|e| expr(e, bound)),
        Expr::Map(m) => m
            .keys
            .iter()
            .chain(m.values.iter())
            .try_for_each(|e| expr(e, bound)),
    }
}

fn args(list: &[CallArg<'_>], bound: bool) -> Result<(), Refused> {
    list.iter().try_for_each(|a| match a {
        CallArg::Pos(e) | CallArg::Kwarg(_, e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
            expr(e, bound)
        }
    })
}

/// Renders `template` with `context` under `limits`.
pub fn render(
    template: &minijinja::Template<'_, '_>,
    context: &serde_json::Value,
    limits: &Limits,
) -> Result<String, Error> {
    let deadline = Instant::now()
        .checked_add(limits.run_time())
        .unwrap_or_else(Instant::now);
    let mut out = Capped {
        buf: Vec::new(),
        max: limits.max_reply_bytes,
        deadline,
        stopped: None,
    };
    RENDERING.with(|r| r.set(Some((deadline, limits.max_reply_bytes))));
    let rendered = template.render_captured_to(context, &mut out);
    RENDERING.with(|r| r.set(None));
    if let Some(stop) = out.stopped {
        return Err(stop.into_error(limits));
    }
    match rendered {
        Ok(_) => String::from_utf8(out.buf).map_err(|e| Error::Render(e.to_string())),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::OutOfFuel {
            limit: limits.template_fuel,
        }),
        Err(e) => match stop_of(&e) {
            Some(stop) => Err(stop.into_error(limits)),
            None => Err(Error::Render(e.to_string())),
        },
    }
}

/// Why a rendering was stopped by the sandbox rather than by the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TooLong,
    Deadline,
}

impl Stop {
    fn into_error(self, limits: &Limits) -> Error {
        match self {
            Stop::TooLong => Error::TooLong {
                limit: limits.max_reply_bytes,
            },
            Stop::Deadline => Error::Deadline {
                limit_ms: limits.max_run_ms,
            },
        }
    }

    fn message(self) -> &'static str {
        match self {
            Stop::TooLong => "casegraph: reply too long",
            Stop::Deadline => "casegraph: deadline",
        }
    }
}

/// A stop raised inside a bounded filter, recognised by its message.
fn stop_of(e: &minijinja::Error) -> Option<Stop> {
    let detail = e.detail()?;
    [Stop::TooLong, Stop::Deadline]
        .into_iter()
        .find(|s| detail == s.message())
}

/// The output of one rendering: fails a write past `max` bytes or after `deadline`.
struct Capped {
    buf: Vec<u8>,
    max: usize,
    deadline: Instant,
    stopped: Option<Stop>,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            self.stopped = Some(Stop::TooLong);
        } else if Instant::now() >= self.deadline {
            self.stopped = Some(Stop::Deadline);
        }
        if let Some(stop) = self.stopped {
            return Err(io::Error::other(stop.message()));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fails when the running rendering passed its deadline or `len` is past its output bound.
fn within_bounds(len: usize) -> Result<(), minijinja::Error> {
    let Some((deadline, max)) = RENDERING.with(Cell::get) else {
        return Ok(());
    };
    let stop = if len > max {
        Stop::TooLong
    } else if Instant::now() >= deadline {
        Stop::Deadline
    } else {
        return Ok(());
    };
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        stop.message(),
    ))
}

/// `join` that stops as soon as the result passes the reply bound: `range(100000)|join(s)`
/// would otherwise build 100,000 copies of `s` in one call.
fn join(value: &Value, joiner: Option<&str>) -> Result<String, minijinja::Error> {
    let joiner = joiner.unwrap_or("");
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(joiner);
        }
        match item.as_str() {
            Some(s) => out.push_str(s),
            None => out.push_str(&item.to_string()),
        }
        within_bounds(out.len())?;
    }
    Ok(out)
}

/// `replace` that measures its result before building it.
fn replace(value: &str, from: &str, to: &str) -> Result<String, minijinja::Error> {
    let count = if from.is_empty() {
        value.chars().count() + 1
    } else {
        value.matches(from).count()
    };
    let len = count
        .saturating_mul(to.len())
        .saturating_add(value.len() - count * from.len());
    within_bounds(len)?;
    Ok(value.replace(from, to))
}

#[cfg(test)]
mod tests;
