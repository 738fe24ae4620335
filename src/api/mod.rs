//! The HTTP API (axum): [`app`] builds the router over an [`AppState`]; one file per
//! resource. Handlers check the caller's role, parse and validate at the edge, and run
//! blocking engine work (store reads and commits, rules) on the blocking pool, never on the
//! async workers. Every error leaves as [`AppError`]'s one shape.

mod admin;
mod auth;
mod cases;
mod classify;
mod consents;
mod console;
mod error;
mod events;
mod messages;
mod openapi;
pub mod requests;
mod shedding;
mod system;
mod tasks;
mod tokens;
pub mod workflows;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use casegraph_engine::classify::Service as ClassifyService;
use casegraph_engine::runner::Runner;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use auth::{Authority, Caller};
/// The console's pages, for the fleet hub too.
pub(crate) use console::pages as console_pages;
pub use error::{AppError, Json, Path, Query};
pub(crate) use error::{method_not_allowed, not_found};
pub use openapi::ApiDoc;

use crate::auth::Tokens;
use crate::library::Library;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};
use crate::workers::{CaseRunner, Workers};

/// What the handlers share.
pub struct Inner {
    pub runner: Arc<Runner>,
    /// The same classifier the runner uses, for `POST /v1/classify`.
    pub classifier: Arc<dyn ClassifyService>,
    /// The intent model's version (`name@version+sha256:…`).
    pub model: String,
    pub tokens: Arc<Tokens>,
    pub library: Arc<Library>,
    /// One publish at a time: each builds on the catalog the previous one left.
    pub publish_lock: tokio::sync::Mutex<()>,
    pub workers: Arc<Workers>,
    /// Runs task completions and timers the same way the workers run cases.
    pub cases: CaseRunner,
    /// Bounds requests being made durable at once.
    pub intake: Arc<Semaphore>,
    /// Bounds author work that compiles a bundle (checks, fixture runs, publishes): each
    /// copies the catalog to disk and holds a compile thread (`limits.max_compiles`).
    pub compiles: Arc<Semaphore>,
    /// Bounds model calls asked for over HTTP (classify, dry runs): they share the one
    /// inference queue with the workers (`limits.max_classify`).
    pub model_calls: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub retry_after_secs: u64,
    /// How long intake holds a request for a queue place (`limits.queue_wait`).
    pub queue_wait: Duration,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Connectors go to the built-in simulated back office (shipped defaults).
    pub simulated_backoffice: bool,
    /// Hosts `reply_to` may name.
    pub notifier: crate::webhook::Notifier,
    /// The effective settings, for `GET /v1/admin/settings`.
    pub settings: Arc<crate::settings::Effective>,
    /// Resident memory against the budget: work-adding requests are shed near it.
    pub memory: Arc<crate::memory::Guard>,
    /// The disk against the `[storage]` marks: writes are refused near them.
    pub storage: Arc<crate::storage::Guard>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

pub type AppState = Arc<Inner>;

/// The whole API.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/requests", post(requests::create))
        .route("/v1/events", post(events::create))
        .route("/v1/customers/{id}/consents", get(consents::list))
        .route("/v1/customers/{id}/consents/{purpose}", put(consents::put))
        .route("/v1/cases/{id}", get(cases::show))
        .route("/v1/cases/{id}/audit", get(cases::audit))
        .route("/v1/cases/{id}/messages", post(messages::post))
        .route("/v1/tasks", get(tasks::list))
        .route("/v1/tasks/queues", get(tasks::queues))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route(
            "/v1/workflows",
            get(workflows::list).post(workflows::publish),
        )
        .route("/v1/workflows/{id}", get(workflows::show))
        .route("/v1/workflows/{id}/graph", get(workflows::graph))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/admin/settings", get(admin::settings))
        .route("/metrics", get(system::metrics));
    Router::new()
        .merge(v1)
        .merge(console::routes())
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            shedding::shed,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.body_limit_bytes))
        .with_state(state)
}

/// Per-request timeout, metrics and a log line (method, route, status; never bodies).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = crate::metrics::method_label(req.method()).to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the box allows; try again",
        )
        .retry_after(state.retry_after_secs)
        .into_response(),
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "http");
    resp
}

impl Inner {
    /// A place for one compile; `503 busy` when `limits.max_compiles` are taken. The
    /// permit goes into the blocking work, so a request that times out keeps counting
    /// until its compile thread has finished.
    pub fn admit_compile(&self) -> Result<OwnedSemaphorePermit, AppError> {
        self.compiles
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::busy("workflow compiles", self.retry_after_secs))
    }

    /// A queue place for the case a request or message will run, taken before its body is
    /// read and held for one up to `limits.queue_wait`; then `429 queue_full`, counted.
    pub async fn admit_case(&self) -> Result<crate::workers::Slot, AppError> {
        match self.workers.admit_within(self.queue_wait).await {
            Some(slot) => Ok(slot),
            None => {
                self.metrics
                    .intake_rejected
                    .get_or_create(&crate::metrics::StatusLabels {
                        status: "429".into(),
                    })
                    .inc();
                Err(AppError::queue_full(self.retry_after_secs))
            }
        }
    }

    /// A place for one model call asked for over HTTP; `503 busy` beyond
    /// `limits.max_classify`.
    pub fn admit_model_call(&self) -> Result<OwnedSemaphorePermit, AppError> {
        self.model_calls
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::busy("classifications", self.retry_after_secs))
    }
}

/// Runs blocking engine work off the async workers.
pub async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, AppError>
where
    F: FnOnce() -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal(what, e))?
}
