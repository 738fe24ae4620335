//! The hub's HTTP API: the fleet view, the console's pages and `me`.
//!
//! | route | roles | limits |
//! |---|---|---|
//! | `GET /v1/fleet/branches?after=&limit=` | admin, auditor | pages of at most [`MAX_PAGE`] branches |
//! | `GET /v1/fleet/branches/{name}` | admin, auditor | [`MAX_ROLLOUTS`] reports, the problems kept |
//! | `GET /v1/fleet/ingest` | admin, auditor | — |
//! | `GET /v1/console/me` | any token | — |
//!
//! Every route but the pages needs a token of the hub's own token file (`401` without,
//! `403` for other roles). At most [`MAX_IN_FLIGHT`] API requests run at once (more are
//! answered `503 busy` with Retry-After), each within [`REQUEST_TIMEOUT`]; every message
//! the view is built from was bounded at ingest (`ingest::MAX_NAME`, `MAX_ENTRIES`), so
//! an entry is bounded and so is a page. No request body is read anywhere. The hostile
//! tests are in `tests/hostile/fleet_hub.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::branches::Branches;
use super::store::{BranchState, Store};
use super::stream::Stats;
use crate::api::{AppError, Authority, Caller, Json, Path, Query};
use crate::auth::{Role, Tokens};
use crate::fleet::wire::{Health, RolloutReport};

/// Most branches on one page of the list.
pub const MAX_PAGE: usize = 100;
/// Most rollout reports in a branch's detail.
pub const MAX_ROLLOUTS: usize = 50;
/// API requests answered at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_AFTER_SECS: u64 = 1;

/// What the handlers share.
#[derive(Debug)]
pub struct Hub {
    pub store: Arc<Store>,
    pub tokens: Arc<Tokens>,
    pub branches: Arc<Branches>,
    pub stats: Arc<Stats>,
    /// A branch further behind than this many records is flagged.
    pub lag_alert: u64,
    pub in_flight: Arc<Semaphore>,
    pub auth_failures: AtomicU64,
}

pub type HubState = Arc<Hub>;

impl Authority for HubState {
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Who reads the fleet view.
const READERS: &[Role] = &[Role::Auditor];

pub fn app(state: HubState) -> Router {
    Router::new()
        .route("/v1/fleet/branches", get(list))
        .route("/v1/fleet/branches/{name}", get(detail))
        .route("/v1/fleet/ingest", get(ingest))
        .route("/v1/console/me", get(me))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .merge(crate::api::console_pages())
        .fallback(crate::api::not_found)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .with_state(state)
}

/// At most [`MAX_IN_FLIGHT`] requests at once, each within [`REQUEST_TIMEOUT`].
async fn admit(State(hub): State<HubState>, req: Request, next: Next) -> Response {
    let Ok(_permit) = hub.in_flight.clone().try_acquire_owned() else {
        return AppError::busy("fleet requests", RETRY_AFTER_SECS).into_response();
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the hub allows; try again",
        )
        .retry_after(RETRY_AFTER_SECS)
        .into_response(),
    }
}

/// The JetStream domain and chain state of a branch, its versions and counts.
#[derive(Debug, Serialize)]
pub struct BranchView {
    pub branch: String,
    /// The JetStream domain its stream is sourced from; `None` when the branch is no
    /// longer listed (what the hub holds of it is still shown).
    pub domain: Option<String>,
    /// The latest time any of its messages carries.
    pub last_seen: Option<Timestamp>,
    /// Records the box committed that the hub has not applied (its head from the last
    /// health snapshot minus the hub's); `None` before the first snapshot.
    pub lag: Option<u64>,
    /// The seq of the last record the hub applied, and how many it holds.
    pub applied: u64,
    pub records: u64,
    /// Cases by status, from the summaries the hub holds.
    pub cases: BTreeMap<String, u64>,
    /// Open human tasks by queue, from the last health snapshot.
    pub open_tasks: BTreeMap<String, u64>,
    /// `verified`, or the first problem the hub found with the branch's chain.
    pub chain: String,
    /// The box's own check of its chain, when it reports a problem.
    pub box_chain: Option<String>,
    pub versions: Versions,
    /// Audit records the box committed but JetStream has not acknowledged.
    pub backlog: Option<u64>,
    pub queue_depth: Option<u64>,
    pub last_rollout: Option<RolloutReport>,
    /// Messages the hub could not use.
    pub rejected: u64,
    /// Why the branch is shown red (empty: all well).
    pub flags: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Versions {
    pub engine: Option<String>,
    pub model: Option<String>,
    pub routing: Option<u32>,
    pub workflows: BTreeMap<String, u32>,
}

/// One branch in full.
#[derive(Debug, Serialize)]
pub struct BranchDetail {
    #[serde(flatten)]
    pub view: BranchView,
    /// Every problem kept (the first [`super::store::MAX_PROBLEMS`]) and how many more.
    pub problems: Vec<String>,
    pub problems_dropped: u64,
    pub last_rejected: Option<String>,
    pub rollouts: Vec<RolloutReport>,
    pub health: Option<Health>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub branches: Vec<BranchView>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The last branch of the previous page.
    after: Option<String>,
    /// Branches per page, 1 to [`MAX_PAGE`] (default).
    limit: Option<usize>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, super::store::Error> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal("fleet view", e))?
        .map_err(|e| AppError::internal("fleet view", e))
}

/// `GET /v1/fleet/branches`: listed branches and any the hub holds messages of, by name.
async fn list(
    State(hub): State<HubState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page>, AppError> {
    caller.require(READERS)?;
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            AppError::invalid(format!("limit must be 1 to {MAX_PAGE}, not {limit}"))
                .details(serde_json::json!({ "field": "limit" })),
        );
    }
    let after = q.after;
    let page = blocking(move || {
        // Names in order: the listed ones and those only the store knows.
        let held = hub.store.branches(after.as_deref(), limit + 1)?;
        let mut names: Vec<String> = hub
            .branches
            .0
            .iter()
            .map(|b| b.name.clone())
            .filter(|n| after.as_deref().is_none_or(|a| n.as_str() > a))
            .chain(held.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let next = (names.len() > limit).then(|| names[limit - 1].clone());
        names.truncate(limit);
        let held: BTreeMap<String, BranchState> = held.into_iter().collect();
        let mut branches = Vec::with_capacity(names.len());
        for name in names {
            let state = match held.get(&name) {
                Some(s) => s.clone(),
                None => hub.store.branch(&name)?.unwrap_or_default(),
            };
            branches.push(view(&hub, &name, &state)?);
        }
        Ok(Page { branches, next })
    })
    .await?;
    Ok(Json(page))
}

/// `GET /v1/fleet/branches/{name}`.
async fn detail(
    State(hub): State<HubState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<BranchDetail>, AppError> {
    caller.require(READERS)?;
    let found = blocking(move || {
        let state = hub.store.branch(&name)?;
        if state.is_none() && hub.branches.get(&name).is_none() {
            return Ok(Err(name));
        }
        let state = state.unwrap_or_default();
        Ok(Ok(BranchDetail {
            view: view(&hub, &name, &state)?,
            problems: state.problems,
            problems_dropped: state.problems_dropped,
            last_rejected: state.last_rejected,
            rollouts: hub.store.rollouts(&name, MAX_ROLLOUTS)?,
            health: hub.store.health(&name)?,
        }))
    })
    .await?;
    found
        .map(Json)
        .map_err(|name| AppError::not_found("branch", &name))
}

fn view(hub: &Hub, name: &str, s: &BranchState) -> Result<BranchView, super::store::Error> {
    let health = hub.store.health(name)?;
    let last_rollout = match &s.last_rollout {
        Some(id) => hub
            .store
            .rollouts(name, MAX_ROLLOUTS)?
            .into_iter()
            .find(|r| &r.rollout_id == id),
        None => None,
    };
    let lag = health.as_ref().map(|h| {
        h.audit_head
            .as_ref()
            .map_or(0, |head| head.seq.saturating_sub(s.applied))
    });
    let chain = s
        .problems
        .first()
        .cloned()
        .unwrap_or_else(|| "verified".to_string());
    let box_chain = health.as_ref().and_then(|h| h.chain_problem.clone());
    let mut flags = Vec::new();
    if let Some(p) = s.problems.first() {
        flags.push(format!("chain: {p}"));
    }
    if let Some(p) = &box_chain {
        flags.push(format!("the box's own check: {p}"));
    }
    if let Some(l) = lag.filter(|l| *l > hub.lag_alert) {
        flags.push(format!("{l} records behind"));
    }
    if s.rejected > 0 {
        flags.push(format!("{} messages rejected", s.rejected));
    }
    Ok(BranchView {
        branch: name.to_string(),
        domain: hub.branches.get(name).map(|b| b.domain().to_string()),
        last_seen: s.last_seen,
        lag,
        applied: s.applied,
        records: s.records,
        cases: s.cases.clone(),
        open_tasks: health
            .as_ref()
            .map(|h| h.open_tasks.clone())
            .unwrap_or_default(),
        chain,
        box_chain,
        versions: health
            .as_ref()
            .map(|h| Versions {
                engine: Some(h.engine_version.clone()),
                model: h.model_version.clone(),
                routing: h.routing_version,
                workflows: h.workflows.clone(),
            })
            .unwrap_or_default(),
        backlog: health.as_ref().map(|h| h.backlog),
        queue_depth: health.as_ref().map(|h| h.queue_depth),
        last_rollout,
        rejected: s.rejected,
        flags,
    })
}

/// What the ingest did since the hub started.
#[derive(Debug, Serialize)]
pub struct IngestView {
    pub messages: u64,
    pub records: u64,
    pub batches: u64,
    /// Milliseconds from a record's `at` to its commit at the hub, over the recent records.
    pub lag_p50_ms: Option<u64>,
    pub lag_p99_ms: Option<u64>,
}

/// `GET /v1/fleet/ingest`.
async fn ingest(State(hub): State<HubState>, caller: Caller) -> Result<Json<IngestView>, AppError> {
    caller.require(READERS)?;
    let s = &hub.stats;
    Ok(Json(IngestView {
        messages: s.messages.load(Ordering::Relaxed),
        records: s.records.load(Ordering::Relaxed),
        batches: s.batches.load(Ordering::Relaxed),
        lag_p50_ms: s.lag_percentile(50.0),
        lag_p99_ms: s.lag_percentile(99.0),
    }))
}

#[derive(Debug, Serialize)]
pub struct Me {
    pub name: String,
    pub role: Role,
    /// The console shows the fleet screens only.
    pub hub: bool,
}

/// `GET /v1/console/me`: who the token belongs to, on the hub.
async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        name: caller.0.name,
        role: caller.0.role,
        hub: true,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn beyond_the_requests_in_flight_the_hub_answers_busy() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Arc::new(Tokens::open(dir.path()).unwrap());
        let (_, admin) = tokens.create(Role::Admin, Some("admin")).unwrap();
        let hub = Arc::new(Hub {
            store: Arc::new(Store::open(dir.path()).unwrap()),
            tokens,
            branches: Arc::new(Branches::default()),
            stats: Arc::new(Stats::default()),
            lag_alert: 1000,
            // Every place taken.
            in_flight: Arc::new(Semaphore::new(0)),
            auth_failures: AtomicU64::new(0),
        });
        let resp = app(hub)
            .oneshot(
                Request::get("/v1/fleet/branches")
                    .header("Authorization", format!("Bearer {admin}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "1");
    }
}
