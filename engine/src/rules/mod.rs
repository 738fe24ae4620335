//! Sandboxed rhai business rules: one configured engine, compiled scripts cached by content
//! hash, and the standard library business rules need.
//!
//! Scripts see the case data as `case` and nothing of the host: no modules, no files, no
//! `eval`, no way to block. Every run is bounded by [`Limits`]. This module knows nothing
//! of workflows; callers say where a script came from through [`Origin`].

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

/// Bounds on every script run. Exceeding one stops the script with [`Error::Runtime`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Abstract operations one run may perform (stops endless loops).
    pub max_operations: u64,
    /// Nesting of function calls (stops runaway recursion).
    pub max_call_depth: usize,
    /// Nesting of expressions, at compile time and in functions.
    pub max_expr_depth: usize,
    /// Length of any string a script builds, in bytes.
    pub max_string_size: usize,
    /// Elements of any array a script builds.
    pub max_array_size: usize,
    /// Entries of any object map a script builds.
    pub max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
        }
    }
}

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
#[derive(Debug)]
pub struct Rules {
    engine: rhai::Engine,
    limits: Limits,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(Limits::default())
    }
}

impl Rules {
    pub fn new(limits: Limits) -> Self {
        let mut engine = rhai::Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_depth)
            .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size);
        engine.disable_symbol("eval");
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
        Rules { engine, limits }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a whole script (statements). Equal sources share one AST.
    pub fn compile(&self, source: &str, origin: Origin) -> Result<Arc<Script>, Error> {
        let ast = self
            .engine
            .compile(source)
            .map_err(|e| compile_error(&e, &origin))?;
        Ok(Arc::new(Script {
            ast: Arc::new(ast),
            digest: digest(source),
            origin,
        }))
    }

    /// Compiles a single expression (conditions, payloads, `until`).
    pub fn compile_expression(&self, source: &str, origin: Origin) -> Result<Arc<Script>, Error> {
        let ast = self
            .engine
            .compile_expression(source)
            .map_err(|e| compile_error(&e, &origin))?;
        Ok(Arc::new(Script {
            ast: Arc::new(ast),
            digest: digest(source),
            origin,
        }))
    }

    /// Runs a script with `case` bound mutably to `data`; returns the script's value.
    pub fn run(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        data: &mut Value,
    ) -> Result<Value, Error> {
        let mut scope = rhai::Scope::new();
        let case = rhai::serde::to_dynamic(&*data).map_err(|e| runtime_error(&e, script, ctx))?;
        scope.push_dynamic("case", case);
        let out: rhai::Dynamic = self
            .engine
            .eval_ast_with_scope(&mut scope, &script.ast)
            .map_err(|e| runtime_error(&e, script, ctx))?;
        if let Some(case) = scope.get_value::<rhai::Dynamic>("case") {
            *data = rhai::serde::from_dynamic(&case).map_err(|e| runtime_error(&e, script, ctx))?;
        }
        rhai::serde::from_dynamic(&out).map_err(|e| runtime_error(&e, script, ctx))
    }

    /// Evaluates a script with read-only bindings; returns its value.
    pub fn eval(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        bindings: &[(&str, &Value)],
    ) -> Result<Value, Error> {
        let mut scope = rhai::Scope::new();
        for (name, value) in bindings {
            let v = rhai::serde::to_dynamic(*value).map_err(|e| runtime_error(&e, script, ctx))?;
            scope.push_constant_dynamic(name.to_string(), v);
        }
        let out: rhai::Dynamic = self
            .engine
            .eval_ast_with_scope(&mut scope, &script.ast)
            .map_err(|e| runtime_error(&e, script, ctx))?;
        rhai::serde::from_dynamic(&out).map_err(|e| runtime_error(&e, script, ctx))
    }

    /// Evaluates a boolean expression over `case`; anything but a bool is an error.
    pub fn eval_bool(
        &self,
        script: &Script,
        ctx: &Context<'_>,
        data: &Value,
    ) -> Result<bool, Error> {
        match self.eval(script, ctx, &[("case", data)])? {
            Value::Bool(b) => Ok(b),
            other => Err(Error::Runtime {
                file: script.origin.file.clone(),
                line: script.origin.line,
                node: script.origin.node.clone(),
                case_id: ctx.case_id.to_string(),
                message: format!("condition must be true or false, got {other}"),
            }),
        }
    }
}

fn digest(source: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(source.as_bytes()))
}

fn compile_error(e: &rhai::ParseError, origin: &Origin) -> Error {
    let (line, column) = (e.1.line().unwrap_or(1), e.1.position().unwrap_or(0));
    Error::Compile {
        file: origin.file.clone(),
        line: origin.line + line - 1,
        column,
        node: origin.node.clone(),
        message: e.0.to_string(),
    }
}

fn runtime_error(e: &rhai::EvalAltResult, script: &Script, ctx: &Context<'_>) -> Error {
    let line = e.position().line().unwrap_or(1);
    Error::Runtime {
        file: script.origin.file.clone(),
        line: script.origin.line + line - 1,
        node: script
            .origin
            .node
            .clone()
            .or_else(|| Some(ctx.node.to_string())),
        case_id: ctx.case_id.to_string(),
        message: e.to_string(),
    }
}
