//! `POST /v1/console/workflows/check`: what publishing a set of workflow files would say
//! (diagnostics, the version check, fixture results), in a scratch copy of the served
//! catalog; nothing is published. Admitted `limits.max_compiles` at a time with publishes;
//! authors only. The hostile cases (file names leaving the folder) are tested below and in
//! `tests/hostile/bundle.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::extract::State;
use casegraph_engine::fixture;
use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::Catalog;
use serde::{Deserialize, Serialize};

use super::super::{AppError, AppState, Caller, Json, blocking};
use super::fixtures::{FixtureResult, outcomes};
use crate::auth::Role;
use crate::library::{self, copy_dir};

/// A workflow version to check: its directory's files by name, as for a publish.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The workflow id (its directory name).
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    id: String,
    /// `workflow.yaml`, `*.rhai`, `input.schema.json`, `tests/*.yaml` → content.
    files: BTreeMap<String, String>,
}

fn plain_name(name: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    match name.split_once('/') {
        None => ok(name),
        Some(("tests", f)) => ok(f),
        Some(_) => false,
    }
}

/// What a publish of the files would say.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    /// The version compiles beside the served workflows, is newer than the served one, and
    /// its fixtures pass: a publish would take it.
    pub valid: bool,
    /// Present (`true`) once the files compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiles: Option<bool>,
    /// The version the files declare, once they compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub diagnostics: Vec<Problem>,
    pub fixtures: Vec<FixtureResult>,
}

impl CheckReport {
    fn refused(diagnostics: Vec<Problem>) -> CheckReport {
        CheckReport {
            valid: false,
            compiles: None,
            version: None,
            diagnostics,
            fixtures: Vec::new(),
        }
    }
}

/// One problem, with where it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable code (`yaml`, `unknown_node`, `version_not_newer`, …).
    pub code: String,
    /// The file, relative to the catalog (`<id>/workflow.yaml`).
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub node: Option<String>,
    pub message: String,
}

impl Problem {
    /// A problem of the workflow as a whole, reported against its `workflow.yaml`.
    fn of_workflow(code: &str, file: String, message: String) -> Problem {
        Problem {
            code: code.into(),
            file,
            line: 0,
            column: 0,
            node: None,
            message,
        }
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles `files` as workflow `id` beside every other served workflow and runs its
/// fixtures, in a scratch copy of the served catalog: what a publish would say, without
/// publishing.
fn check_version(
    catalog: &Catalog,
    rules: &Rules,
    scratch: &Path,
    id: &str,
    files: &BTreeMap<String, String>,
) -> Result<CheckReport, AppError> {
    if !files.contains_key("workflow.yaml") {
        return Err(AppError::invalid("`files` must contain `workflow.yaml`"));
    }
    if let Some(bad) = files.keys().find(|n| !plain_name(n)) {
        return Err(AppError::invalid(format!(
            "file name `{bad}` is not allowed; use `name.ext` or `tests/name.ext`"
        )));
    }
    if id.is_empty()
        || id == "routing"
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(AppError::invalid(
            "`id` must be a-z, 0-9 and `_` (and not `routing`)",
        ));
    }
    let io = |e: std::io::Error| AppError::internal("check", e);
    copy_dir(&catalog.dir, scratch).map_err(io)?;
    let target = scratch.join(id);
    let _ = std::fs::remove_dir_all(&target);
    for (name, content) in files {
        let path = target.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, content).map_err(io)?;
    }
    let checked = match Catalog::load(scratch, rules) {
        Err(d) => {
            let diagnostics =
                d.0.into_iter()
                    .map(|d| Problem {
                        code: d.code.as_str().into(),
                        file: d
                            .file
                            .strip_prefix(scratch)
                            .unwrap_or(&d.file)
                            .display()
                            .to_string(),
                        line: d.line,
                        column: d.column,
                        node: d.node,
                        message: d.message,
                    })
                    .collect();
            return Ok(CheckReport::refused(diagnostics));
        }
        Ok(c) => c,
    };
    let Some(wf) = checked.get(id) else {
        return Ok(CheckReport::refused(vec![Problem::of_workflow(
            "id",
            "workflow.yaml".into(),
            format!("workflow.yaml does not define workflow `{id}`"),
        )]));
    };
    let mut problems = Vec::new();
    if let Some(old) = catalog.get(id)
        && wf.version <= old.version
    {
        problems.push(Problem::of_workflow(
            "version_not_newer",
            format!("{id}/workflow.yaml"),
            format!(
                "version {} is not higher than the served version {}",
                wf.version, old.version
            ),
        ));
    }
    let results = outcomes(
        fixture::run_workflow(&checked, wf, rules),
        &scratch.join(id),
    );
    let fixtures_ok = results.iter().all(|r| r.passed);
    Ok(CheckReport {
        valid: problems.is_empty() && fixtures_ok,
        compiles: Some(true),
        version: Some(wf.version),
        diagnostics: problems,
        fixtures: results,
    })
}

/// What publishing these files would say; publishes nothing.
#[utoipa::path(post, path = "/v1/console/workflows/check", tag = "console", security(("bearer" = [])),
    request_body = CheckBody,
    responses((status = 200, body = CheckReport),
        (status = 400, body = super::super::error::ErrorBody), (status = 401, body = super::super::error::ErrorBody),
        (status = 403, body = super::super::error::ErrorBody), (status = 413, body = super::super::error::ErrorBody),
        (status = 415, body = super::super::error::ErrorBody), (status = 422, body = super::super::error::ErrorBody),
        (status = 503, description = "Too many compiles at once", body = super::super::error::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CheckBody>,
) -> Result<Json<CheckReport>, AppError> {
    caller.require(&[Role::Author])?;
    let catalog = state.runner.catalog();
    let rules = state.library.rules().clone();
    let compile = state.admit_compile()?;
    // Created and removed outside the compile thread: a panic in it still removes the copy.
    let scratch = Scratch(state.library.scratch_dir());
    blocking("check", move || {
        let _compile = compile;
        let dir = scratch.0.clone();
        let checked = library::isolated("check", move || {
            check_version(&catalog, &rules, &dir, &body.id, &body.files)
        });
        drop(scratch);
        checked?.map(Json)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn file_names_stay_inside_the_workflow_directory() {
        assert!(plain_name("workflow.yaml"));
        assert!(plain_name("tests/a-b_1.yaml"));
        for bad in [
            "../x",
            "/etc/passwd",
            "a/b.yaml",
            "tests/../x",
            ".hidden",
            "",
        ] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
