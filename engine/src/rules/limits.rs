//! The bounds of the sandbox, one set per box: every script run and every reply rendering
//! is held to them. They are the `[rules]` section of the configuration.

/// Bounds on every script run and every reply rendering (the `[rules]` section of the
/// configuration). Exceeding one stops the script with [`Error::Runtime`] or the rendering
/// with a [`template::Error`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Abstract operations one run may perform (stops endless loops).
    pub max_operations: u64,
    /// Wall-clock milliseconds one run of a script or condition, or one reply rendering,
    /// may take. The operations limit alone does not bound time: one operation can be a
    /// slow library call. A case worker is never held longer than this per node.
    pub max_run_ms: u64,
    /// Wall-clock milliseconds a case may run without waiting (one segment: from a start,
    /// a task's completion, a timer or a call's answer to its next wait or its end). The
    /// per-run deadline bounds one node; this bounds the nodes in a row (`max_steps` of
    /// them may each take almost `max_run_ms`), so a worker is held at most this long.
    pub max_segment_ms: u64,
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
    /// Bytes of one reply template's source (checked when the workflow compiles).
    pub max_template_bytes: usize,
    /// Bytes of one rendered reply; a template that writes more fails.
    pub max_reply_bytes: usize,
    /// minijinja fuel of one rendering: roughly the template instructions it may execute
    /// (stops loops that write nothing).
    pub template_fuel: u64,
}

impl Limits {
    /// The wall-clock budget of one run.
    pub fn run_time(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_run_ms)
    }

    /// The wall-clock budget of one segment of a case.
    pub fn segment_time(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_segment_ms)
    }

    /// Checks the bounds that would make every script or every reply fail; `Err` names the
    /// key.
    pub fn validate(&self) -> Result<(), String> {
        let zero = [
            ("max_operations", self.max_operations == 0),
            ("max_run_ms", self.max_run_ms == 0),
            ("max_segment_ms", self.max_segment_ms == 0),
            ("max_call_depth", self.max_call_depth == 0),
            ("max_expr_depth", self.max_expr_depth == 0),
            ("max_string_size", self.max_string_size == 0),
            ("max_array_size", self.max_array_size == 0),
            ("max_map_size", self.max_map_size == 0),
            ("max_template_bytes", self.max_template_bytes == 0),
            ("max_reply_bytes", self.max_reply_bytes == 0),
            ("template_fuel", self.template_fuel == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            // rhai and minijinja read 0 as "unlimited": a zero here would switch a bound off.
            Some((key, _)) => Err(format!(
                "rules.{key} must be at least 1 (0 would mean unlimited)"
            )),
            None => Ok(()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 100_000,
            max_run_ms: 1_000,
            max_segment_ms: 30_000,
            max_call_depth: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_template_bytes: 16 * 1024,
            max_reply_bytes: 64 * 1024,
            template_fuel: 50_000,
        }
    }
}
