//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppError, AppState, Caller, Json, blocking};
use crate::auth::Role;
use crate::metrics::QueueLabels;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Alive", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve, i.e. accepting *and* processing: store open, workflows and the intent
/// model loaded (the service does not start listening before the model is), and case
/// workers running. Cases left from the last run do not hold readiness: the workers run
/// them alongside new requests, and `checks.recovery_pending` counts those still to run.
/// While the disk refuses writes (below the hard storage mark, or after a failed write
/// until one succeeds) `checks.store` is `false` and the box is not ready; below the soft
/// mark it stays ready (reads and task completions work) with `checks.storage: "pressure"`.
/// With `[fleet]` set, `checks.fleet` is `degraded` (the box stays ready) while NATS is
/// unreachable or the relay's backlog has not been acknowledged for a while
/// (`checks.fleet_problem` says which, `checks.fleet_backlog` counts the records); `off`
/// without a fleet.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready yet", body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let workers = state.workers.alive();
    let recovery_pending = state.workers.recovery_pending();
    let workflows = state.runner.catalog().workflows().count();
    let runner = state.runner.clone();
    let fleet_metrics = state.metrics.fleet.clone();
    let readable = blocking("readyz", move || {
        fleet_metrics.refresh(runner.store());
        Ok(runner.store().probe().is_ok())
    })
    .await?;
    let storage = state.storage.level();
    let store_ok = readable && storage.writable();
    // The fleet relay never makes the box unready: it works on while NATS is away.
    let (fleet, fleet_problem) = state.metrics.fleet.check();
    let checks = json!({
        "store": store_ok,
        "storage": storage.as_str(),
        "workflows": workflows,
        "workers": workers,
        "recovered": recovery_pending == 0,
        "recovery_pending": recovery_pending,
        "model": state.model,
        "simulated_backoffice": state.simulated_backoffice,
        "fleet": fleet,
        "fleet_problem": fleet_problem,
        "fleet_backlog": state.metrics.fleet.backlog.get(),
    });
    if store_ok && workers > 0 && workflows > 0 {
        Ok(Json(json!({ "status": "ready", "checks": checks })))
    } else {
        Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the box is starting (or its store is unavailable, or no case worker runs)",
        )
        .details(checks)
        .retry_after(state.retry_after_secs))
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus / OpenMetrics text format", content_type = "application/openmetrics-text", body = String),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(&[Role::Auditor])?;
    let s = state.clone();
    let text = blocking("metrics", move || {
        let m = &s.metrics;
        let stats = s.runner.store().stats();
        m.store_commits.set(stats.commits as i64);
        m.store_syncs.set(stats.syncs as i64);
        m.store_disk_bytes.set(s.runner.store().disk_bytes() as i64);
        m.intake_queue.set(s.workers.queued() as i64);
        s.memory.sample();
        m.resident_bytes.set(s.memory.resident() as i64);
        m.memory_budget_bytes.set(s.memory.budget() as i64);
        s.storage.export(&m.storage);
        m.fleet.refresh(s.runner.store());
        m.fleet.sample();
        if let Ok(pending) = s.runner.pending_count() {
            m.pending_cases.set(pending as i64);
        }
        if let Ok(n) = s.runner.notifications_pending() {
            m.pending_notifications.set(n as i64);
        }
        // counted a chunk at a time: a scrape holds no list of every open task
        if let Ok(by_queue) = s.runner.open_tasks_by_queue() {
            m.open_tasks.clear();
            for (queue, q) in by_queue {
                m.open_tasks
                    .get_or_create(&QueueLabels { queue })
                    .set(q.open as i64);
            }
        }
        Ok(m.encode())
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
