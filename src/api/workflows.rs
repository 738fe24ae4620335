//! Workflows: list, versions, diagrams and publishing a new version.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use casegraph_engine::workflow::{Format, Risk, Workflow};
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Caller, Json, Path, Query, blocking};
use crate::auth::Role;
use crate::library;

/// A served workflow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    pub id: String,
    pub version: u32,
    pub title: Option<String>,
    pub digest: String,
    pub intents: Vec<String>,
    pub languages: Vec<String>,
    /// What starting the workflow on a misread request could do; routing asks for more
    /// confidence the higher it is.
    pub risk: Risk,
    /// The version of the workflow's knowledge base, when it answers from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_version: Option<u32>,
    /// What starts the workflow besides intents (absent when only routing does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<TriggersView>,
}

/// A workflow's events and schedule, with the schedule's next occurrences.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriggersView {
    pub events: Vec<String>,
    /// The consent purpose its replies are contacts for.
    pub purpose: Option<String>,
    pub once_per: Option<String>,
    pub schedule: Option<ScheduleView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub cron: String,
    pub timezone: String,
    pub catch_up: bool,
    /// `connector.operation` of the subjects query.
    pub subjects: String,
    /// The next five occurrences (RFC 3339, UTC).
    pub next: Vec<String>,
}

/// A workflow and the versions the box knows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub current: WorkflowSummary,
    pub nodes: Vec<String>,
    /// Every version cases have run on, plus the served one (`current: true`).
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub digest: String,
    pub current: bool,
}

/// A new workflow version: its directory's files by name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// The workflow id (its directory name; must match `id:` in workflow.yaml).
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    pub id: String,
    /// `workflow.yaml`, `*.rhai`, `input.schema.json`, `tests/*.yaml` → content.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// `mermaid` (default) or `dot`.
    pub format: Option<GraphFormat>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

fn summary(w: &Workflow) -> WorkflowSummary {
    summary_at(w, jiff::Timestamp::now())
}

/// The summary with the schedule's occurrences after `now`.
fn summary_at(w: &Workflow, now: jiff::Timestamp) -> WorkflowSummary {
    let t = &w.triggers;
    let triggers = (!t.is_empty()).then(|| TriggersView {
        events: t.events.clone(),
        purpose: t.purpose.clone(),
        once_per: t.once_per.clone(),
        schedule: t.schedule.as_ref().map(|s| ScheduleView {
            cron: s.pattern.clone(),
            timezone: s.timezone.clone(),
            catch_up: s.catch_up,
            subjects: format!("{}.{}", s.connector, s.operation),
            next: s.upcoming(now, 5).iter().map(ToString::to_string).collect(),
        }),
    });
    WorkflowSummary {
        id: w.id.clone(),
        version: w.version,
        title: w.title.clone(),
        digest: w.digest.clone(),
        intents: w.intents.clone(),
        languages: w.languages.clone(),
        risk: w.risk,
        knowledge_version: w.knowledge.as_ref().map(|k| k.version),
        triggers,
    }
}

fn find(state: &AppState, id: &str) -> Result<Arc<Workflow>, AppError> {
    state
        .runner
        .catalog()
        .get(id)
        .cloned()
        .ok_or_else(|| AppError::not_found("workflow", id))
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = Vec<WorkflowSummary>), (status = 401, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WorkflowSummary>>, AppError> {
    caller.require(&crate::auth::Role::ALL)?;
    Ok(Json(
        state
            .runner
            .catalog()
            .workflows()
            .map(|w| summary_at(w, state.runner.now()))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowDetail), (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowDetail>, AppError> {
    caller.require(&crate::auth::Role::ALL)?;
    let wf = find(&state, &id)?;
    let runner = state.runner.clone();
    let wanted = id.clone();
    let mut versions = blocking("workflow versions", move || {
        let stored = runner
            .store()
            .workflow_versions()
            .of(&wanted)
            .map_err(|e| AppError::internal("workflow versions", e))?;
        Ok(stored
            .into_iter()
            .map(|b| VersionView {
                version: b.version,
                digest: b.digest,
                current: false,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    versions.retain(|v| v.digest != wf.digest);
    versions.push(VersionView {
        version: wf.version,
        digest: wf.digest.clone(),
        current: true,
    });
    versions.sort_by_key(|v| v.version);
    Ok(Json(WorkflowDetail {
        current: summary_at(&wf, state.runner.now()),
        nodes: wf.nodes().map(|n| n.id.clone()).collect(),
        versions,
    }))
}

#[utoipa::path(get, path = "/v1/workflows/{id}/graph", tag = "workflows", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id"), GraphQuery),
    responses((status = 200, description = "Mermaid or Graphviz dot text", content_type = "text/plain", body = String),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn graph(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, AppError> {
    caller.require(&crate::auth::Role::ALL)?;
    let format = match q.format.unwrap_or(GraphFormat::Mermaid) {
        GraphFormat::Mermaid => Format::Mermaid,
        GraphFormat::Dot => Format::Dot,
    };
    let wf = find(&state, &id)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        wf.diagram(format),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])),
    request_body = PublishBody,
    responses((status = 201, body = WorkflowSummary), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody),
        (status = 422, description = "Does not compile (`workflow_invalid`, every diagnostic: a path out of the folder is `path_outside_workflow`, a file too large or nested too deep `limit_exceeded`) or fixtures fail (`fixtures_failed`)", body = super::error::ErrorBody),
        (status = 500, description = "The compiler failed (`internal`); details are in the box's log", body = super::error::ErrorBody),
        (status = 503, description = "`limits.max_compiles` checks, fixture runs and publishes are running (`busy`, with Retry-After)", body = super::error::ErrorBody)))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PublishBody>,
) -> Result<(StatusCode, Json<WorkflowSummary>), AppError> {
    let who = caller.require(&[Role::Author])?.clone();
    let wf = publish_version(&state, body.id, body.files).await?;
    tracing::info!(workflow = %wf.id, version = wf.version, by = %who.name, "workflow published");
    Ok((StatusCode::CREATED, Json(summary(&wf))))
}

/// Why a new version was not published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `limits.max_compiles` compiles are running; nothing was looked at.
    #[error("workflow compiles are busy (limits.max_compiles); try again in {retry_after_secs}s")]
    Busy { retry_after_secs: u64 },
    /// Validation, fixtures or the version rule refused it, or the compiler failed.
    #[error(transparent)]
    Publish(#[from] library::Error),
}

impl From<Refusal> for AppError {
    fn from(r: Refusal) -> AppError {
        match r {
            Refusal::Busy { retry_after_secs } => {
                AppError::busy("workflow compiles", retry_after_secs)
            }
            Refusal::Publish(e) => e.into(),
        }
    }
}

/// Publishes a new version of workflow `id`: the one path for `POST /v1/workflows` and a
/// fleet rollout (`fleet::rollout`). A place among `limits.max_compiles`, one publish at a
/// time, compile + fixtures + version rule in [`library::Library::publish`], then the
/// served catalog is swapped. Returns the served workflow.
pub async fn publish_version(
    state: &AppState,
    id: String,
    files: BTreeMap<String, String>,
) -> Result<Arc<Workflow>, Refusal> {
    let compile = state
        .compiles
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::Busy {
            retry_after_secs: state.retry_after_secs,
        })?;
    let _one_at_a_time = state.publish_lock.lock().await;
    let library = state.library.clone();
    let runner = state.runner.clone();
    let published = tokio::task::spawn_blocking(move || {
        let _compile = compile;
        let current = runner.catalog();
        let wanted = id.clone();
        let catalog = library::isolated("publish", move || library.publish(&id, &files, &current))
            .and_then(|published| published)?;
        let catalog = Arc::new(catalog);
        let wf = catalog.get(&wanted).cloned().ok_or_else(|| {
            library::Error::Panicked(format!("published workflow `{wanted}` missing"))
        })?;
        runner.set_catalog(catalog);
        Ok::<_, library::Error>(wf)
    })
    .await
    .map_err(|e| library::Error::Panicked(format!("publish: {e}")))??;
    Ok(published)
}
