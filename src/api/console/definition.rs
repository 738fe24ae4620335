//! `GET /v1/console/workflows/{id}/definition`: a served workflow's nodes with their kinds
//! and settings, its edges with their conditions, and (for authors and admins) its files,
//! which the console draws and shows beside each other. Any valid token; the files only to
//! those [`may_read_source`] lets read them (`tests/hostile/bundle.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::State;
use casegraph_engine::rules::Script;
use casegraph_engine::workflow::{Edge, StepDetails, files};
use serde::Serialize;

use super::super::{AppError, AppState, Caller, Json, Path as PathParam, blocking};
use super::{may_read_source, served};
use crate::auth::Role;

/// A served workflow as the console draws it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Definition {
    pub id: String,
    pub version: u32,
    pub title: Option<String>,
    pub digest: String,
    pub intents: Vec<String>,
    pub languages: Vec<String>,
    /// The id of the start node.
    pub start: String,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// The workflow directory's files by relative name (`tests/…` included); empty unless
    /// `source_visible`.
    pub files: BTreeMap<String, String>,
    /// Whether the caller may read the files (authors and admins).
    pub source_visible: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: String,
    /// The kind as written in `workflow.yaml` (`rule`, `decision`, `call`, …).
    pub kind: &'static str,
    /// Line of the node in `workflow.yaml`.
    pub line: usize,
    pub description: Option<String>,
    pub details: StepDetails,
    /// Where the node's script is (rule, call payload, wait until, checkpoint assert).
    pub script: Option<ScriptOrigin>,
}

/// A script's place: file (relative to the workflow directory), line and digest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScriptOrigin {
    pub file: String,
    pub line: usize,
    /// sha256 of the source, hex.
    pub digest: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    /// `next`, `when`, `otherwise`, `failure`, `decision` or `escalation`.
    pub kind: &'static str,
    pub label: String,
    /// A `when` edge's condition as written.
    pub condition: Option<String>,
}

fn origin(script: &Script, dir: &Path) -> ScriptOrigin {
    let file = script
        .origin
        .file
        .strip_prefix(dir)
        .unwrap_or(&script.origin.file);
    ScriptOrigin {
        file: file.display().to_string(),
        line: script.origin.line,
        digest: script.digest.clone(),
    }
}

fn edge_kind(e: &Edge) -> &'static str {
    match e {
        Edge::Next => "next",
        Edge::When { .. } => "when",
        Edge::Otherwise => "otherwise",
        Edge::Failure => "failure",
        Edge::Decision(_) => "decision",
        Edge::Escalation => "escalation",
        Edge::Answer => "answer",
        Edge::Timeout => "timeout",
    }
}

#[utoipa::path(get, path = "/v1/console/workflows/{id}/definition", tag = "console", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workflow id")),
    responses((status = 200, body = Definition), (status = 401, body = super::super::error::ErrorBody),
        (status = 404, body = super::super::error::ErrorBody)))]
pub async fn definition(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Definition>, AppError> {
    caller.require(&Role::ALL)?;
    let source = may_read_source(&caller);
    let (_, wf) = served(&state, &id)?;
    blocking("workflow definition", move || {
        let nodes = wf
            .nodes()
            .map(|n| NodeView {
                id: n.id.clone(),
                kind: n.step.kind(),
                line: n.line,
                description: n.description.clone(),
                details: n.step.details(),
                script: n.step.script().map(|s| origin(s, &wf.dir)),
            })
            .collect();
        let edges = wf
            .nodes()
            .flat_map(|n| {
                wf.edges_from(&n.id)
                    .into_iter()
                    .map(|(e, to)| EdgeView {
                        from: n.id.clone(),
                        to: to.id.clone(),
                        kind: edge_kind(e),
                        label: e.label(),
                        condition: match e {
                            Edge::When { source, .. } => Some(source.clone()),
                            _ => None,
                        },
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Json(Definition {
            id: wf.id.clone(),
            version: wf.version,
            title: wf.title.clone(),
            digest: wf.digest.clone(),
            intents: wf.intents.clone(),
            languages: wf.languages.clone(),
            start: wf.start().id.clone(),
            nodes,
            edges,
            files: if source {
                files::all(&wf.dir)
            } else {
                BTreeMap::new()
            },
            source_visible: source,
        }))
    })
    .await
}
