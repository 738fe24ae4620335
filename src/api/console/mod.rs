//! The web console: its pages ([`assets`]) and what it needs beyond the resource API, one
//! file per resource under `/v1/console/`: who the token belongs to ([`me`]), case search
//! ([`cases`]), box status figures ([`status`]), a workflow's structure and files
//! ([`definition`]) and its versions ([`versions`]), fixture runs of the served version
//! ([`fixtures`]), checks of a version that is not published ([`check`]) and a dry run
//! that creates no case ([`dry_run`]).
//!
//! Every route here only reads the store or works on copies under `<data_dir>/catalog/`
//! (removed when the request is done, and at the next start after a crash); nothing is
//! written to the store. Checks and fixture runs are admitted `limits.max_compiles` at a
//! time with publishes, dry runs `limits.max_classify` at a time with `/v1/classify`. Role
//! checks follow the resource API: authors work on workflows, reviewers and auditors read
//! cases, admins may do everything. The hostile tests are in `tests/hostile/surface.rs`
//! (bodies, paths, queries, shedding), `tests/hostile/bundle.rs` (files an author sends
//! and what other roles may read) and `tests/hostile/edges.rs` (searches over a large
//! store, bodies too large).

mod assets;
pub(crate) use assets::routes as pages;
pub(super) mod cases;
pub(super) mod check;
pub(super) mod definition;
pub(super) mod dry_run;
pub(super) mod fixtures;
pub(super) mod me;
pub(super) mod status;
pub(super) mod versions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use casegraph_engine::workflow::{Catalog, Workflow};
use serde::Serialize;

use super::{AppError, AppState, Caller};
use crate::auth::Role;

/// The console's pages and every `/v1/console/…` route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(assets::routes())
        .route("/v1/console/me", get(me::me))
        .route("/v1/console/cases", get(cases::cases))
        .route("/v1/console/status", get(status::status))
        .route("/v1/console/dry-run", post(dry_run::dry_run))
        .route("/v1/console/workflows/check", post(check::check))
        .route(
            "/v1/console/workflows/{id}/definition",
            get(definition::definition),
        )
        .route(
            "/v1/console/workflows/{id}/versions",
            get(versions::versions),
        )
        .route(
            "/v1/console/workflows/{id}/fixtures",
            post(fixtures::fixtures),
        )
}

/// A workflow version by id and number.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionRef {
    pub id: String,
    pub version: u32,
}

impl VersionRef {
    fn of(wf: &Workflow) -> VersionRef {
        VersionRef {
            id: wf.id.clone(),
            version: wf.version,
        }
    }
}

/// The served catalog and its workflow `id`; `404` when it serves none by that id.
fn served(state: &AppState, id: &str) -> Result<(Arc<Catalog>, Arc<Workflow>), AppError> {
    let catalog = state.runner.catalog();
    let wf = catalog
        .get(id)
        .cloned()
        .ok_or_else(|| AppError::not_found("workflow", id))?;
    Ok((catalog, wf))
}

/// Whether `caller` may read a workflow's files (rule scripts, templates, schemas,
/// fixtures): those who write and run the box do; submitters, reviewers and auditors see
/// the graph and the summary, not the rules that decide about them.
fn may_read_source(caller: &Caller) -> bool {
    matches!(caller.0.role, Role::Author | Role::Admin)
}
