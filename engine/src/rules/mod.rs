//! Sandboxed rhai business rules: one configured engine, compiled scripts cached by content
//! hash, and the standard library business rules need.
//!
//! Scripts see the case data as `case` and nothing of the host: no modules, no files, no
//! `eval`, no `sleep`, no system clock. Every run is bounded by [`Limits`]: operations, a
//! wall-clock deadline, call and expression depth, and the size of every value. Reply
//! templates run in a sandbox of their own ([`template`]) under the same [`Limits`]. This
//! module knows nothing of workflows; callers say where a script came from through
//! [`Origin`].

mod check;
mod confirm;
mod customer;
mod dates;
mod extract;
mod limits;
mod money;
mod quiet;
pub mod template;
mod text;

pub use limits::Limits;
pub use quiet::QuietHours;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Where a script's source comes from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file holding the source (a `.rhai` file, or the YAML file of an inline expression).
    pub file: PathBuf,
    /// 1-based line in `file` where the source starts (1 for a whole `.rhai` file).
    pub line: usize,
    /// The workflow node the script belongs to, if any.
    pub node: Option<String>,
}

/// What is running a script, for error messages and deterministic time.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub case_id: &'a str,
    pub node: &'a str,
    /// "Now" as the executor's clock sees it; `today()` and `now()` in scripts read this.
    pub now: jiff::Timestamp,
}

/// A compiled script or expression. The AST is shared between scripts with equal source.
#[derive(Debug, Clone)]
pub struct Script {
    ast: Arc<rhai::AST>,
    /// sha256 of the source, hex; the script's version in step records.
    pub digest: String,
    pub origin: Origin,
}

/// A script that did not compile or failed while running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}:{line}:{column}: {}{message}", file.display(), node_prefix(node))]
    Compile {
        file: PathBuf,
        line: usize,
        column: usize,
        node: Option<String>,
        message: String,
    },
    #[error("{}:{line}: {}case `{case_id}`: {message}", file.display(), node_prefix(node))]
    Runtime {
        file: PathBuf,
        line: usize,
        node: Option<String>,
        case_id: String,
        message: String,
    },
}

fn node_prefix(node: &Option<String>) -> String {
    node.as_ref()
        .map(|n| format!("node `{n}`, "))
        .unwrap_or_default()
}

/// The configured rhai engine and the compiled-script cache.
pub struct Rules {
    engine: rhai::Engine,
    limits: Limits,
    /// Names of every function the engine offers, for the compile-time check that a
    /// script calls only functions that exist.
    functions: std::collections::HashSet<String>,
    /// Compiled ASTs by kind and sha256 of the source: equal sources compile once.
    cache: Mutex<HashMap<String, Arc<rhai::AST>>>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(Limits::default())
    }
}

/// The script running on this thread: what `print`/`debug` log and when it must stop.
#[derive(Default)]
struct Running {
    case_id: String,
    node: String,
    /// The run's wall-clock deadline, read by the `on_progress` callback.
    deadline: Option<std::time::Instant>,
    /// Lines `print`/`debug` logged in this run; past [`MAX_LOG_LINES`] they are dropped.
    logged: usize,
    /// Operations seen by the `on_progress` callback in this run.
    ticks: u64,
}

thread_local! {
    static RUNNING: RefCell<Running> = RefCell::new(Running::default());
}

/// Lines one run may log through `print`/`debug`, and bytes per line: a looping script must
/// not fill the disk with its log.
const MAX_LOG_LINES: usize = 100;
const MAX_LOG_BYTES: usize = 1024;

/// How often (in operations) the `on_progress` callback reads the clock: often enough that
/// the deadline is met within a few milliseconds, rarely enough not to slow scripts down.
const CLOCK_EVERY: u64 = 32;

/// The value a script is terminated with when its deadline passed.
const DEADLINE_TOKEN: &str = "casegraph: deadline";

/// Marks a script run on this thread: its case, node, deadline and "now"; undone on drop.
struct RunGuard(#[allow(dead_code, reason = "held for its Drop")] dates::NowGuard);

impl RunGuard {
    fn enter(ctx: &Context<'_>, limits: &Limits) -> Self {
        RUNNING.with(|r| {
            *r.borrow_mut() = Running {
                case_id: ctx.case_id.to_string(),
                node: ctx.node.to_string(),
                deadline: std::time::Instant::now().checked_add(limits.run_time()),
                logged: 0,
                ticks: 0,
            }
        });
        RunGuard(dates::NowGuard::set(ctx.now))
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| *r.borrow_mut() = Running::default());
    }
}

/// Logs one `print`/`debug` line of the running script, within the per-run bounds. A
/// script may print what a customer wrote: line breaks and other control characters are
/// escaped (`\n`, `\u{1b}`), so one call is one log line and cannot forge others.
fn log_line(text: &str, log: impl FnOnce(&str, &str, &str)) {
    RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        r.logged += 1;
        if r.logged > MAX_LOG_LINES {
            return;
        }
        let mut end = text.len().min(MAX_LOG_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = if r.logged == MAX_LOG_LINES {
            "(further lines of this run are dropped)".to_string()
        } else {
            one_line(&text[..end])
        };
        log(&r.case_id, &r.node, &text);
    });
}

/// `text` with every control character escaped as Rust writes it (`\n`, `\t`,
/// `\u{1b}`); other characters, quotes and backslashes included, as they are.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Rules {
    /// Builds the sandboxed engine.
    ///
    /// `Engine::new_raw` plus only the packages rules need: the standard set minus
    /// `LanguageCorePackage` (its `sleep` blocks the case worker; the rest — `exit`, `take`,
    /// tags, `parse_json`, reflection — rules do not need), minus `BasicTimePackage` (its
    /// `timestamp()` reads the system clock, which would make runs non-deterministic; rules
    /// use `now()`/`today()` instead) and minus the debugging package. `no_module` (a
    /// crate feature) removes `import` and every file access.
    pub fn new(limits: Limits) -> Self {
        use rhai::packages::{
            ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage,
            BasicMapPackage, BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage,
            MoreStringPackage, Package,
        };
        let mut engine = rhai::Engine::new_raw();
        for module in [
            ArithmeticPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_variables(1_000)
            .set_max_functions(100);
        engine.disable_symbol("eval");
        // The deadline: rhai calls this before every operation; the clock is read every
        // CLOCK_EVERY operations. Returning a value terminates the script.
        // rhai's own count restarts inside closures that library functions call (`map`,
        // `filter`, …), so the run keeps its own.
        engine.on_progress(|_| {
            let deadline = RUNNING.with(|r| {
                let mut r = r.borrow_mut();
                r.ticks = r.ticks.wrapping_add(1);
                if r.ticks % CLOCK_EVERY == 0 {
                    r.deadline
                } else {
                    None
                }
            })?;
            (std::time::Instant::now() >= deadline).then(|| DEADLINE_TOKEN.into())
        });
        // rhai reserves `case` for a future `switch` syntax; business rules name the case
        // data `case` (DESIGN.md), so the token is handed to the parser as an identifier.
        #[allow(
            deprecated,
            reason = "on_parse_token is stable in use, only flagged volatile"
        )]
        engine.on_parse_token(|token, _, _| match token {
            rhai::Token::Reserved(s) if &*s == "case" => rhai::Token::Identifier(s),
            other => other,
        });
        engine.on_print(|text| {
            log_line(text, |case, node, text| {
                tracing::info!(target: "casegraph::rules", case = %case, node = %node, "print: {text}");
            });
        });
        engine.on_debug(|text, _, pos| {
            let line = pos.line().unwrap_or(0);
            log_line(text, |case, node, text| {
                tracing::debug!(target: "casegraph::rules", case = %case, node = %node, line, "debug: {text}");
            });
        });
        money::register(&mut engine);
        dates::register(&mut engine);
        extract::register(&mut engine);
        text::register(&mut engine);
        customer::register(&mut engine);
        confirm::register(&mut engine);
        check::register_bounded(&mut engine, &limits);
        let functions = check::function_names(&engine);
        Rules {
            engine,
            limits,
            functions,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of distinct compiled sources held in the cache.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn compile_cached(
        &self,
        kind: &str,
        source: &str,
        origin: Origin,
        compile: impl FnOnce(&rhai::Engine) -> Result<rhai::AST, rhai::ParseError>,
    ) -> Result<Arc<Script>, Error> {
        let digest = digest(source);
        let key = format!("{kind}:{digest}");
        let cached = self.cache.lock().ok().and_then(|c| c.get(&key).cloned());
        let ast = match cached {
            Some(ast) => ast,
            None => {
                let ast = Arc::new(compile(&self.engine).map_err(|e| compile_error(&e, &origin))?);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, ast.clone());
                }
                ast
            }
        };
        Ok(Arc::new(Script {
            ast,
            digest,
            origin,
        }))
    }

    /// Compiles a whole script (statements). Equal sources share one AST. A call of a
    /// function the sandbox does not offer (`sleep`, `timestamp`, a typo) is refused here.
    pub fn compile(&self, source: &str, origin: Origin) -> Result<Arc<Script>, Error> {
        let script = self.compile_cached("program", source, origin, |e| e.compile(source))?;
        check::calls(&script, &self.functions)?;
        Ok(script)
    }

    /// Compiles a single expression (conditions, payloads, `until`).
    pub fn compile_expression(&self, source: &str, origin: Origin) -> Result<Arc<Script>, Error> {
        let script = self.compile_cached("expression", source, origin, |e| {
            e.compile_expression(source)
        })?;
        check::calls(&script, &self.functions)?;
        Ok(script)
    }

    /// Runs a script with `case` bound mutably to `data`; returns the script's value.
    /// On error `data` is left as it was.
    pub fn run(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        data: &mut Value,
    ) -> Result<Value, Error> {
        let _guard = RunGuard::enter(ctx, &self.limits);
        let _customer = customer::CustomerGuard::set(Some(data));
        let mut scope = rhai::Scope::new();
        let case =
            rhai::serde::to_dynamic(&*data).map_err(|e| self.runtime_error(&e, script, ctx))?;
        scope.push_dynamic("case", case);
        let out: rhai::Dynamic = self
            .engine
            .eval_ast_with_scope(&mut scope, &script.ast)
            .map_err(|e| self.runtime_error(&e, script, ctx))?;
        let case = scope.get_value::<rhai::Dynamic>("case").unwrap_or_default();
        let new_data: Value =
            rhai::serde::from_dynamic(&case).map_err(|e| self.runtime_error(&e, script, ctx))?;
        if !new_data.is_object() {
            return Err(Error::Runtime {
                file: script.origin.file.clone(),
                line: script.origin.line,
                node: script.origin.node.clone(),
                case_id: ctx.case_id.to_string(),
                message: "the script replaced `case` with something that is not a map".into(),
            });
        }
        let out =
            rhai::serde::from_dynamic(&out).map_err(|e| self.runtime_error(&e, script, ctx))?;
        *data = new_data;
        Ok(out)
    }

    /// Evaluates a script with read-only bindings; returns its value.
    pub fn eval(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        bindings: &[(&str, &Value)],
    ) -> Result<Value, Error> {
        let out = self.eval_dynamic(script, ctx, bindings)?;
        rhai::serde::from_dynamic(&out).map_err(|e| self.runtime_error(&e, script, ctx))
    }

    fn eval_dynamic(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        bindings: &[(&str, &Value)],
    ) -> Result<rhai::Dynamic, Error> {
        let _guard = RunGuard::enter(ctx, &self.limits);
        let case = bindings.iter().find(|(n, _)| *n == "case").map(|(_, v)| *v);
        let _customer = customer::CustomerGuard::set(case);
        let mut scope = rhai::Scope::new();
        for (name, value) in bindings {
            let v =
                rhai::serde::to_dynamic(*value).map_err(|e| self.runtime_error(&e, script, ctx))?;
            scope.push_constant_dynamic(name.to_string(), v);
        }
        self.engine
            .eval_ast_with_scope(&mut scope, &script.ast)
            .map_err(|e| self.runtime_error(&e, script, ctx))
    }

    /// Evaluates a boolean expression over `case`; anything but a bool is an error.
    pub fn eval_bool(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        data: &Value,
    ) -> Result<bool, Error> {
        let out = self.eval_dynamic(script, ctx, &[("case", data)])?;
        condition_value(out, script, ctx)
    }

    /// The index of the first of `conditions` that holds over `case`, `None` when none
    /// does: each is evaluated as [`Rules::eval_bool`] would (its own deadline), in order,
    /// and `case` is converted for rhai once for all of them. On an error, the index of
    /// the condition that failed with it.
    pub fn first_holding(
        &self,
        conditions: &[&Script],
        ctx: &Context<'_>,
        data: &Value,
    ) -> Result<Option<usize>, (usize, Error)> {
        let Some(first) = conditions.first() else {
            return Ok(None);
        };
        let _customer = customer::CustomerGuard::set(Some(data));
        let case =
            rhai::serde::to_dynamic(data).map_err(|e| (0, self.runtime_error(&e, first, ctx)))?;
        // A constant the expressions cannot change (and, being expressions, cannot add to
        // the scope), so one scope serves them all.
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic("case", case);
        for (i, script) in conditions.iter().enumerate() {
            let _guard = RunGuard::enter(ctx, &self.limits);
            let out = self
                .engine
                .eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &script.ast)
                .map_err(|e| (i, self.runtime_error(&e, script, ctx)))?;
            if condition_value(out, script, ctx).map_err(|e| (i, e))? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

/// A condition's value: true or false; anything else is the condition's error.
fn condition_value(out: rhai::Dynamic, script: &Script, ctx: &Context<'_>) -> Result<bool, Error> {
    out.as_bool().map_err(|type_name| Error::Runtime {
        file: script.origin.file.clone(),
        line: script.origin.line,
        node: script.origin.node.clone(),
        case_id: ctx.case_id.to_string(),
        message: format!("a condition must be true or false, but this one gave a value of type {type_name}: {out}"),
    })
}

fn digest(source: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(source.as_bytes()))
}

fn compile_error(e: &rhai::ParseError, origin: &Origin) -> Error {
    let (line, column) = (e.1.line().unwrap_or(1), e.1.position().unwrap_or(0));
    let message = match &*e.0 {
        rhai::ParseErrorType::Reserved(word) if word == "import" || word == "export" => {
            format!("`{word}` is not available: business rules cannot load modules or files")
        }
        other if other.to_string().contains("'eval'") => {
            "`eval` is not available: business rules cannot run code built at run time".into()
        }
        rhai::ParseErrorType::ExprTooDeep => format!(
            "expression nested too deeply (the limit is max_expr_depth); {}",
            e.0
        ),
        other => other.to_string(),
    };
    Error::Compile {
        file: origin.file.clone(),
        line: origin.line + line - 1,
        column,
        node: origin.node.clone(),
        message,
    }
}

/// The error that stopped the script, under any function-call wrappers.
fn innermost(e: &rhai::EvalAltResult) -> &rhai::EvalAltResult {
    match e {
        rhai::EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

impl Rules {
    fn runtime_error(&self, e: &rhai::EvalAltResult, script: &Script, ctx: &Context<'_>) -> Error {
        use rhai::EvalAltResult as E;
        let line = e
            .position()
            .line()
            .or_else(|| innermost(e).position().line())
            .unwrap_or(1);
        let message = match innermost(e) {
        E::ErrorTooManyOperations(_) => format!(
            "the script was stopped after {} operations (limit max_operations); does it loop forever?",
            self.limits.max_operations
        ),
        E::ErrorStackOverflow(_) => "the script was stopped: calls nested too deeply (limit max_call_depth); does it recurse without end?".into(),
        E::ErrorDataTooLarge(what, _) => {
            let limit = if what.contains("string") || what.contains("String") {
                "max_string_size"
            } else if what.contains("array") || what.contains("Array") {
                "max_array_size"
            } else {
                "max_map_size"
            };
            format!("the script was stopped: {what} grew past its limit ({limit})")
        }
        E::ErrorTooManyVariables(_) => "the script was stopped: too many variables".into(),
        E::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => format!(
            "the script was stopped after running {} ms (limit max_run_ms); does it loop or build too much?",
            self.limits.max_run_ms
        ),
        E::ErrorFunctionNotFound(sig, _) if sig.starts_with("sleep") => {
            "function not found: `sleep` is not available: business rules cannot block a case worker".into()
        }
        E::ErrorFunctionNotFound(sig, _) if sig.starts_with("eval") => {
            "`eval` is not available: business rules cannot run code built at run time".into()
        }
        _ => e.to_string(),
    };
        Error::Runtime {
            file: script.origin.file.clone(),
            line: script.origin.line + line - 1,
            node: script
                .origin
                .node
                .clone()
                .or_else(|| Some(ctx.node.to_string())),
            case_id: ctx.case_id.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_line;

    #[test]
    fn a_printed_line_cannot_forge_log_lines() {
        let printed =
            "refund please\n2026-12-06T10:00:00Z  INFO request accepted case=x\r\u{1b}[2J";
        let mut logged = String::new();
        log_line(printed, |_, _, text| logged = text.to_string());
        assert!(!logged.chars().any(char::is_control), "{logged:?}");
        assert!(logged.contains("refund please\\n2026-12-06"), "{logged}");
        assert!(logged.contains("\\r\\u{1b}[2J"), "{logged}");
    }
}
