//! The human task inbox: `GET /v1/tasks?queue=`, `GET /v1/tasks/queues` and `POST
//! /v1/tasks/{id}/complete`.
//! Completing a task stores the decision durably and runs the case on to its next
//! checkpoint before answering.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::State;
use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use casegraph_engine::exec::TaskCompletion;
use casegraph_engine::runner;
use casegraph_engine::store::{Place, TaskEntry};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AppError, AppState, Caller, Json, Path, Query, blocking};
use crate::auth::Role;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only this queue's tasks.
    pub queue: Option<String>,
    /// At most this many (1–10000, 10000 when absent): high priority first, then the
    /// soonest due, then the oldest. When more follow, the answer's `Link` header names the
    /// next page (`rel="next"`).
    pub limit: Option<usize>,
    /// The cursor of the next page, as the previous page's `Link` header gives it: the
    /// listing goes on after that page's last task (still good when that task was
    /// completed meanwhile).
    pub after: Option<String>,
}

/// The most tasks one `GET /v1/tasks` answers (`limit`, and the page when it is absent).
pub const MAX_TASK_LIMIT: usize = 10_000;

/// The longest cursor `after` may be (a place holds a task id, itself bounded).
const MAX_CURSOR_CHARS: usize = 2_000;

/// An open task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub task_id: String,
    pub case_id: String,
    pub queue: String,
    pub node: String,
    pub title: Option<String>,
    pub decisions: Vec<String>,
    pub created_at: String,
    pub sla_due: Option<String>,
    /// Why a triage task was opened: `{"code": "routed", "rule"}` or
    /// `{"code": "input_invalid", "workflow", "fields": ["/customer_id: pattern"]}` (field
    /// paths and schema keywords, never values). Absent on a workflow's own tasks.
    #[schema(value_type = Object, nullable = true)]
    pub reason: Option<Value>,
    /// `high` or `normal`, as routing gave the case; the inbox lists `high` first.
    pub priority: String,
    /// Why this route: `{policy_version, rule, priority, scores, signals: {intent,
    /// confidence, out_of_scope, sentiment, frustration, customer}}` (labels and counts,
    /// never text). Absent on cases routed before it was recorded.
    #[schema(value_type = Object, nullable = true)]
    pub why: Option<Value>,
}

impl From<TaskEntry> for TaskView {
    fn from(t: TaskEntry) -> TaskView {
        TaskView {
            task_id: t.task_id,
            case_id: t.case_id,
            queue: t.queue,
            node: t.node,
            title: t.title,
            decisions: t.decisions,
            created_at: t.created_at.to_string(),
            sla_due: t.sla_due.map(|d| d.to_string()),
            reason: t.reason.and_then(|r| serde_json::to_value(r).ok()),
            priority: t.priority.as_str().into(),
            why: t.why.and_then(|w| serde_json::to_value(w).ok()),
        }
    }
}

/// A reviewer's decision.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// One of the task's `decisions`.
    pub decision: String,
    /// Data the reviewer adds to the case (available to the workflow). On a triage task:
    /// `intent` (the true intent, a training label), `sentiment` (`negative`, `neutral`,
    /// `positive`) and `frustrated` (true/false), the reviewer's reading of the customer's
    /// mood (training labels too), and `request` (corrections of `customer_id`, `language`
    /// and `fields` before the chosen workflow starts; anything else, or a mood that is not
    /// one of those values, is refused with `422 invalid_correction`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Value,
    pub comment: Option<String>,
}

/// Where the case stands after the decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Completed {
    pub task_id: String,
    pub case_id: String,
    pub status: String,
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), params(TaskQuery),
    responses((status = 200, body = Vec<TaskView>, headers(("Link" = String,
            description = "`</v1/tasks?limit=…&after=…>; rel=\"next\"` when more tasks follow"))),
        (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TaskQuery>,
) -> Result<(HeaderMap, Json<Vec<TaskView>>), AppError> {
    caller.require(&[Role::Reviewer])?;
    let bad = |field: &str, message: String| {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
            .details(json!({ "field": field }))
    };
    if let Some(limit) = q.limit
        && !(1..=MAX_TASK_LIMIT).contains(&limit)
    {
        return Err(bad(
            "limit",
            format!("`limit` must be between 1 and {MAX_TASK_LIMIT}, got {limit}"),
        ));
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(c) => Some(
            (c.len() <= MAX_CURSOR_CHARS)
                .then(|| Place::from_cursor(c))
                .flatten()
                .ok_or_else(|| {
                    bad(
                        "after",
                        "`after` is not a cursor of this listing: pass the one the previous page's `Link` header gives".into(),
                    )
                })?,
        ),
    };
    let limit = q.limit.unwrap_or(MAX_TASK_LIMIT);
    let runner = state.runner.clone();
    let queue = q.queue.clone();
    // one more than the page, to know whether another page follows
    let mut tasks = blocking("tasks", move || {
        runner
            .tasks_after(queue.as_deref(), after.as_ref(), limit + 1)
            .map_err(|e| AppError::runner("tasks read", e))
    })
    .await?;
    let mut headers = HeaderMap::new();
    if tasks.len() > limit {
        tasks.truncate(limit);
        if let Some(last) = tasks.last() {
            let next = next_page(q.queue.as_deref(), limit, &last.place().cursor());
            if let Ok(link) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
                headers.insert(LINK, link);
            }
        }
    }
    Ok((
        headers,
        Json(tasks.into_iter().map(TaskView::from).collect()),
    ))
}

/// The path of the page after `cursor`, with the same queue and limit.
fn next_page(queue: Option<&str>, limit: usize, cursor: &str) -> String {
    let limit = limit.to_string();
    let mut params = vec![("limit", limit.as_str()), ("after", cursor)];
    if let Some(q) = queue {
        params.insert(0, ("queue", q));
    }
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    format!("/v1/tasks?{query}")
}

/// The open tasks of one queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    pub queue: String,
    pub open: usize,
    /// When the queue's oldest open task was created.
    pub oldest: String,
}

/// How many tasks are open, in all and per queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queues {
    pub open: usize,
    /// By queue name.
    pub queues: Vec<QueueView>,
}

/// `GET /v1/tasks/queues` takes no parameters; any is refused (`400 invalid_query`) as on
/// `GET /v1/tasks`, so a client's misspelt filter is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// The inbox's size per queue without listing a task: what a reviewer's console shows
/// beside the first page (the store holds the counts, so a backlog of thousands costs no
/// more than an empty inbox).
#[utoipa::path(get, path = "/v1/tasks/queues", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = Queues), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn queues(
    State(state): State<AppState>,
    caller: Caller,
    Query(NoQuery {}): Query<NoQuery>,
) -> Result<Json<Queues>, AppError> {
    caller.require(&[Role::Reviewer])?;
    let runner = state.runner.clone();
    let by_queue = blocking("task queues", move || {
        runner
            .open_tasks_by_queue()
            .map_err(|e| AppError::runner("tasks read", e))
    })
    .await?;
    let queues: Vec<QueueView> = by_queue
        .into_iter()
        .map(|(queue, q)| QueueView {
            queue,
            open: q.open,
            oldest: q.oldest.to_string(),
        })
        .collect();
    Ok(Json(Queues {
        open: queues.iter().map(|q| q.open).sum(),
        queues,
    }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Task id")), request_body = Completion,
    responses((status = 200, body = Completed), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Completion>,
) -> Result<Json<Completed>, AppError> {
    let who = caller.require(&[Role::Reviewer])?.clone();
    if !(body.data.is_object() || body.data.is_null()) {
        return Err(
            AppError::invalid("`data` must be an object").details(json!({ "field": "data" }))
        );
    }
    if body.comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        return Err(AppError::invalid("`comment` is longer than 10000 bytes"));
    }
    let cases = state.cases.clone();
    let retry = state.retry_after_secs;
    blocking("complete task", move || {
        let runner = &cases.runner;
        let refused = |e: runner::Error| match e {
            runner::Error::NoTask(_) => AppError::not_found("open task", &id),
            runner::Error::TaskAlreadyCompleted {
                case_id,
                status,
                reason,
                ..
            } => AppError::new(
                StatusCode::CONFLICT,
                "task_already_completed",
                format!("the task is no longer open: {reason}; nothing was changed"),
            )
            .details(json!({ "task_id": id, "case_id": case_id, "status": status.as_str() })),
            runner::Error::UnknownDecision { allowed, .. } => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_decision",
                format!("`decision` must be one of: {}", allowed.join(", ")),
            )
            .details(json!({ "field": "decision", "allowed": allowed })),
            runner::Error::InvalidIntent {
                reason, allowed, ..
            } => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_intent",
                format!("`data.intent` {reason}"),
            )
            .details(json!({ "field": "data.intent", "allowed": allowed })),
            runner::Error::InvalidCorrection { reason, .. } => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_correction",
                reason,
            ),
            runner::Error::Busy(_) => AppError::new(
                StatusCode::CONFLICT,
                "case_busy",
                "the case is still busy with earlier work; try again",
            )
            .retry_after(retry),
            other => AppError::runner("complete task", other),
        };
        let case_id = runner.task(&id).map_err(refused)?.case_id;
        let started = Instant::now();
        let completion = TaskCompletion {
            task_id: id.clone(),
            decision: body.decision,
            data: body.data,
            comment: body.comment,
            by: who.name.clone(),
        };
        // The segment the completion starts runs here, not on a worker: a panic in it
        // fails the case (as on a worker) instead of leaving it to panic at every start.
        let status =
            match std::panic::catch_unwind(AssertUnwindSafe(|| runner.complete_task(completion))) {
                Ok(r) => r.map_err(refused)?,
                Err(panic) => {
                    // One incident: the log line with the panic is the one the reviewer's
                    // answer names.
                    let incident = crate::incident::id();
                    cases.panicked(&case_id, panic.as_ref(), started, &incident);
                    return Err(AppError::incident(&incident));
                }
            };
        tracing::info!(case = %case_id, task = %id, by = %who.name, "task completed");
        cases.finished(&case_id, status, started);
        Ok(Json(Completed {
            task_id: id,
            case_id,
            status: status.as_str().into(),
        }))
    })
    .await
}
