//! `GET /v1/console/workflows/{id}/versions`: every version of a served workflow the box
//! can show, with its files, for the console's diff: the served one, the shipped one, and
//! those cases ran on (kept in the store). Any valid token; the files only to those
//! [`may_read_source`] lets read them (`tests/hostile/bundle.rs`).

use std::collections::BTreeMap;

use axum::extract::State;
use casegraph_engine::workflow::files;
use serde::Serialize;

use super::super::{AppError, AppState, Caller, Json, Path as PathParam, blocking};
use super::{may_read_source, served};
use crate::auth::Role;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Versions {
    pub id: String,
    /// Whether the caller may read the files (authors and admins).
    pub source_visible: bool,
    /// Lowest version first.
    pub versions: Vec<VersionFiles>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionFiles {
    pub version: u32,
    /// `null` for the shipped version (its digest is known once it is loaded).
    pub digest: Option<String>,
    pub source: VersionSource,
    /// File name → content; empty unless `source_visible`.
    pub files: BTreeMap<String, String>,
}

/// Where a version comes from.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    /// A version cases ran on, kept in the store.
    Stored,
    /// The version shipped with the box (`workflows/` of the release).
    Shipped,
    /// The served version.
    Current,
}

#[utoipa::path(get, path = "/v1/console/workflows/{id}/versions", tag = "console", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Versions), (status = 401, body = super::super::error::ErrorBody),
        (status = 404, body = super::super::error::ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Versions>, AppError> {
    caller.require(&Role::ALL)?;
    let source = may_read_source(&caller);
    let (_, wf) = served(&state, &id)?;
    let s = state.clone();
    blocking("workflow versions", move || {
        let mut out: BTreeMap<u32, VersionFiles> = BTreeMap::new();
        let stored = s
            .runner
            .store()
            .workflow_versions()
            .of(&wf.id)
            .map_err(|e| AppError::internal("workflow versions", e))?;
        for b in stored {
            out.insert(
                b.version,
                VersionFiles {
                    version: b.version,
                    digest: Some(b.digest),
                    source: VersionSource::Stored,
                    files: b.files,
                },
            );
        }
        let shipped = s.library.shipped().join(&wf.id);
        if shipped.join("workflow.yaml").is_file() {
            let files = files::all(&shipped);
            let version = files
                .get("workflow.yaml")
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("version:"))
                        .and_then(|v| v.trim().parse::<u32>().ok())
                })
                .unwrap_or(0);
            if version != wf.version {
                out.insert(
                    version,
                    VersionFiles {
                        version,
                        digest: None,
                        source: VersionSource::Shipped,
                        files,
                    },
                );
            }
        }
        out.insert(
            wf.version,
            VersionFiles {
                version: wf.version,
                digest: Some(wf.digest.clone()),
                source: VersionSource::Current,
                files: files::all(&wf.dir),
            },
        );
        let mut versions: Vec<VersionFiles> = out.into_values().collect();
        if !source {
            for v in &mut versions {
                v.files.clear();
            }
        }
        Ok(Json(Versions {
            id: wf.id.clone(),
            source_visible: source,
            versions,
        }))
    })
    .await
}
