//! Problems found while loading and compiling workflows, each pointing at the place to fix.
//!
//! The bottom of the loading path: `yaml`, `routing` and `workflow` report through it, so it
//! depends on nothing else in the crate.

use std::fmt;
use std::path::{Path, PathBuf};

/// The class of a problem; its `as_str` form is stable and used by tests and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// A file could not be read.
    Io,
    /// YAML or JSON that does not parse.
    Syntax,
    /// A field the format does not know, or one that does not belong to the node kind.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A field has a value of the wrong type or outside its allowed set.
    InvalidValue,
    /// An edge points at a node that does not exist.
    DanglingEdge,
    /// A node that no path from `start` reaches.
    Unreachable,
    /// A node from which no path leads to an `end` node.
    DeadEnd,
    /// A `decision` node without an `otherwise` edge.
    MissingOtherwise,
    /// A cycle that passes no `wait` or `human` node and has no `max_visits` bound.
    UnboundedCycle,
    /// A rhai script or expression that does not compile.
    Script,
    /// A reply template that does not parse or is missing a language.
    Template,
    /// The input JSON Schema is not a valid schema.
    InputSchema,
    /// An intent served by two workflows.
    DuplicateIntent,
    /// Two workflows with the same id.
    DuplicateWorkflow,
    /// A path in the bundle that leads out of the workflow's folder.
    OutsideBundle,
    /// A file larger, or nested deeper, than the compiler reads.
    Limit,
    /// A workflow started by events or a schedule can contact the customer without
    /// passing a consent check.
    NoConsentCheck,
    /// An irreversible workflow can reach a call that acts without the customer's
    /// confirmation or a reviewer's decision.
    NoConfirmation,
}

impl Code {
    /// Stable snake_case name of the problem class.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::Syntax => "syntax",
            Code::UnknownField => "unknown_field",
            Code::MissingField => "missing_field",
            Code::InvalidValue => "invalid_value",
            Code::DanglingEdge => "dangling_edge",
            Code::Unreachable => "unreachable_node",
            Code::DeadEnd => "dead_end",
            Code::MissingOtherwise => "missing_otherwise",
            Code::UnboundedCycle => "unbounded_cycle",
            Code::Script => "script_error",
            Code::Template => "template_error",
            Code::InputSchema => "invalid_input_schema",
            Code::DuplicateIntent => "duplicate_intent",
            Code::DuplicateWorkflow => "duplicate_workflow",
            Code::OutsideBundle => "path_outside_workflow",
            Code::Limit => "limit_exceeded",
            Code::NoConsentCheck => "no_consent_check",
            Code::NoConfirmation => "no_confirmation",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem: what is wrong and where (file, 1-based line and column, node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub node: Option<String>,
    pub message: String,
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Diagnostic {
    pub fn new(code: Code, file: &Path, line: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            file: file.to_path_buf(),
            line,
            column: 0,
            node: None,
            message: message.into(),
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = line;
        self.column = column;
        self
    }

    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        // Line 0 means the problem concerns the file as a whole (e.g. it cannot be read).
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": {}", self.code)?;
        if let Some(node) = &self.node {
            write!(f, " in node `{node}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one compilation; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
