//! `POST /v1/console/workflows/{id}/fixtures`: runs the served version's fixtures (its
//! `tests/*.yaml`) and answers each one's result. Authors only; admitted
//! `limits.max_compiles` at a time with checks and publishes, in an isolated thread
//! (`tests/hostile/surface.rs` sheds and refuses it).

use std::path::Path;

use axum::extract::State;
use casegraph_engine::fixture;
use serde::Serialize;

use super::super::{AppError, AppState, Caller, Json, Path as PathParam, blocking};
use super::served;
use crate::auth::Role;
use crate::library;

/// The fixture results of a served workflow version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FixtureRun {
    pub id: String,
    pub version: u32,
    pub passed: usize,
    pub failed: usize,
    pub fixtures: Vec<FixtureResult>,
}

/// One fixture's result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FixtureResult {
    pub name: String,
    /// The fixture file, relative to the workflow directory.
    pub file: String,
    pub passed: bool,
    /// Each mismatch as readable text; empty when it passed.
    pub failures: Vec<String>,
}

/// Each outcome with its file named relative to `dir`.
pub(super) fn outcomes(results: Vec<fixture::Outcome>, dir: &Path) -> Vec<FixtureResult> {
    results
        .into_iter()
        .map(|o| FixtureResult {
            file: o
                .file
                .strip_prefix(dir)
                .unwrap_or(&o.file)
                .display()
                .to_string(),
            passed: o.failures.is_empty(),
            name: o.name,
            failures: o.failures,
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/console/workflows/{id}/fixtures", tag = "console", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = FixtureRun), (status = 401, body = super::super::error::ErrorBody),
        (status = 403, body = super::super::error::ErrorBody), (status = 404, body = super::super::error::ErrorBody),
        (status = 503, description = "Too many compiles at once", body = super::super::error::ErrorBody)))]
pub async fn fixtures(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<FixtureRun>, AppError> {
    caller.require(&[Role::Author])?;
    let (catalog, wf) = served(&state, &id)?;
    let rules = state.library.rules().clone();
    let compile = state.admit_compile()?;
    blocking("fixtures", move || {
        let _compile = compile;
        let run = wf.clone();
        let results = library::isolated("fixtures", move || {
            fixture::run_workflow(&catalog, &run, &rules)
        })?;
        let fixtures = outcomes(results, &wf.dir);
        let passed = fixtures.iter().filter(|r| r.passed).count();
        Ok(Json(FixtureRun {
            id: wf.id.clone(),
            version: wf.version,
            passed,
            failed: fixtures.len() - passed,
            fixtures,
        }))
    })
    .await
}
