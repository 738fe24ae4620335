//! Load shedding near the memory budget and the disk's marks: work-adding requests are
//! refused with `503 memory_pressure` + `Retry-After` while [`crate::memory::Guard`] says
//! so, and writes with `507 storage_pressure` / `507 storage_full` / `503
//! storage_unavailable` while [`crate::storage::Guard`] says so.
//!
//! Only work that would *add* memory is shed: new requests, classification, publishing and
//! the console's checks, fixture runs and dry runs. Reads,
//! task completions, health and metrics keep being answered, so the box can drain what it
//! holds. Shedding happens before the body is read, so a shed request costs no more than
//! its headers. What a shed request would have done is simply not started: a request is
//! either answered `202` (and durable) or refused, never half-taken.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::{AppError, AppState};
use crate::metrics::StatusLabels;
use crate::storage::{RETRY_AFTER_SECS, Write};

/// Requests that add work (and memory) to the box: refused while memory is near the budget.
/// The console's checks, fixture runs and dry runs compile or run workflows too.
fn adds_work(method: &Method, path: &str) -> bool {
    method == Method::POST
        && (matches!(
            path,
            "/v1/requests"
                | "/v1/events"
                | "/v1/classify"
                | "/v1/workflows"
                | "/v1/console/workflows/check"
                | "/v1/console/dry-run"
        ) || (path.starts_with("/v1/console/workflows/") && path.ends_with("/fixtures"))
            || is_message(path))
}

/// `/v1/cases/{id}/messages`: a customer's message adds a case's work like a request.
fn is_message(path: &str) -> bool {
    path.strip_prefix("/v1/cases/")
        .and_then(|rest| rest.strip_suffix("/messages"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Requests that write to the disk, and which mark refuses them (see [`crate::storage`]).
/// Task completions and token revocations are never refused for disk space: they finish
/// or secure what is already there, and fail only if the disk itself refuses them.
fn writes(method: &Method, path: &str) -> Option<Write> {
    match (method, path) {
        (&Method::POST, "/v1/requests" | "/v1/events") => Some(Write::Intake),
        (&Method::POST, p) if is_message(p) => Some(Write::Intake),
        (&Method::POST, "/v1/workflows" | "/v1/tokens") => Some(Write::Other),
        _ => None,
    }
}

/// Middleware: `503 memory_pressure` + Retry-After for work-adding requests while resident
/// memory is at or above the shedding mark; `507`/`503 storage_*` for writes while the
/// disk is past a mark; everything else passes.
pub async fn shed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(write) = writes(req.method(), req.uri().path())
        && let Some(refusal) = state.storage.refusal(write)
    {
        let status =
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INSUFFICIENT_STORAGE);
        state
            .metrics
            .intake_rejected
            .get_or_create(&StatusLabels {
                status: status.as_u16().to_string(),
            })
            .inc();
        return AppError::new(status, refusal.code(), refusal.message())
            .details(serde_json::to_value(state.storage.status()).unwrap_or_default())
            .retry_after(state.retry_after_secs.max(RETRY_AFTER_SECS))
            .into_response();
    }
    let guard = &state.memory;
    if adds_work(req.method(), req.uri().path()) && guard.must_shed(state.workers.queued()) {
        guard.shed();
        state
            .metrics
            .intake_rejected
            .get_or_create(&StatusLabels {
                status: "503".into(),
            })
            .inc();
        return AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_pressure",
            "the box is near its memory budget; try again shortly",
        )
        .details(serde_json::json!({
            "resident_bytes": guard.resident(),
            "budget_bytes": guard.budget(),
        }))
        .retry_after(state.retry_after_secs)
        .into_response();
    }
    next.run(req).await
}
