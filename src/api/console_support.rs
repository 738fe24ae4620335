//! What the web console needs beyond the resource API: who the token belongs to, case
//! search, a workflow's structure and files, fixture runs and checks of a version that is
//! not published, a dry run that creates no case, and box status figures.
//!
//! Every route here only reads the store or works on copies under `<data_dir>/catalog/`
//! (removed when the request is done, and at the next start after a crash); nothing is
//! written to the store. Checks and fixture runs are admitted `limits.max_compiles` at a
//! time with publishes, dry runs `limits.max_classify` at a time with `/v1/classify`. Role checks follow the resource API: authors work on
//! workflows, reviewers and auditors read cases, admins may do everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::library::{self, copy_dir};
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use casegraph_engine::exec::{CallError, CallRequest, Connector, Executor, ManualClock, Waiting};
use casegraph_engine::fixture;
use casegraph_engine::pipeline::{self, Pipeline, Received, Request, Start};
use casegraph_engine::rules::{Rules, Script};
use casegraph_engine::store::{CaseRecord, Table, WorkflowBundle};
use casegraph_engine::workflow::{Catalog, Edge, Step, WaitFor, Workflow, files};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::requests::{Channel, Language};
use super::{AppError, AppState, Caller, Json, Path as PathParam, Query, blocking};
use crate::auth::Role;

/// Cases one search answers without `limit`, and the most `limit` may ask for.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 200;
/// Stored cases one search examines at most. A filter that matches rarely answers what it
/// found in them with a cursor to go on from: each request costs bounded work and memory,
/// however many cases the box holds.
const SCAN_BUDGET: usize = 20_000;
/// Stored cases read per store call.
const CHUNK: usize = 512;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/console/me", get(me))
        .route("/v1/console/cases", get(cases))
        .route("/v1/console/status", get(status))
        .route("/v1/console/dry-run", post(dry_run))
        .route("/v1/console/workflows/check", post(check))
        .route("/v1/console/workflows/{id}/definition", get(definition))
        .route("/v1/console/workflows/{id}/versions", get(versions))
        .route("/v1/console/workflows/{id}/fixtures", post(fixtures))
}

/// `GET /v1/console/me`: the token's name and role, so the console shows what it may do.
async fn me(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.0.name, "role": caller.0.role }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSearch {
    /// Part of the case id.
    id: Option<String>,
    status: Option<String>,
    intent: Option<String>,
    /// Accepted on or after this date (`YYYY-MM-DD` or RFC 3339).
    from: Option<String>,
    /// Accepted on or before this date.
    to: Option<String>,
    /// Cases per page: 1 to [`PAGE_MAX`], [`PAGE_DEFAULT`] when absent.
    limit: Option<usize>,
    /// The `next` of the previous page: only cases older than it.
    cursor: Option<String>,
}

impl CaseSearch {
    fn matches(&self, r: &CaseRecord) -> bool {
        let id = self
            .id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty() || r.id.contains(id.trim()));
        let status = self
            .status
            .as_deref()
            .is_none_or(|st| st.is_empty() || r.status.as_str() == st);
        let intent = self
            .intent
            .as_deref()
            .is_none_or(|i| i.is_empty() || intent_of(r).as_deref() == Some(i));
        let at = r.accepted_at.to_string();
        let after = self
            .from
            .as_deref()
            .is_none_or(|f| f.is_empty() || at.as_str() >= f);
        // A bare date includes the whole day.
        let before = self
            .to
            .as_deref()
            .is_none_or(|t| t.is_empty() || at.as_str() <= t || at.starts_with(t));
        id && status && intent && after && before
    }
}

/// Stored cases, a chunk at a time in key order, each handed to `f` without keeping them:
/// memory stays at one chunk however many cases are stored.
fn each_case(state: &AppState, mut f: impl FnMut(CaseRecord)) -> Result<(), AppError> {
    let backend = state.runner.store().backend();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let chunk = backend
            .range(Table::Cases, &from, None, CHUNK)
            .map_err(|e| AppError::internal("case scan", e))?;
        let full = chunk.len() == CHUNK;
        let Some((last, _)) = chunk.last() else {
            return Ok(());
        };
        // The smallest key after `last`.
        from = last.clone();
        from.push(0);
        for (_, v) in chunk {
            if let Ok(r) = serde_json::from_slice::<CaseRecord>(&v) {
                f(r);
            }
        }
        if !full {
            return Ok(());
        }
    }
}

fn intent_of(rec: &CaseRecord) -> Option<String> {
    rec.classification
        .as_ref()
        .and_then(|c| c.get("intent"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn summary(r: &CaseRecord) -> Value {
    json!({
        "case_id": r.id,
        "status": r.status.as_str(),
        "channel": r.channel,
        "language": r.language,
        "intent": intent_of(r),
        "confidence": r.classification.as_ref().and_then(|c| c.get("confidence")),
        "route": r.route,
        "workflow": r.workflow.as_ref().map(|w| json!({"id": w.id, "version": w.version})),
        "outcome": r.state.as_ref().and_then(|s| s.outcome.clone()),
        "accepted_at": r.accepted_at.to_string(),
        "updated_at": r.updated_at.to_string(),
    })
}

/// `GET /v1/console/cases`: newest first (case ids begin with their acceptance time), a
/// page at a time; no personal data in the answer. `total` counts the matches among the
/// cases examined (at most [`SCAN_BUDGET`] from the cursor on), `total_exact` says whether
/// that was all of them, `next` is the cursor of the next page (`null`: no more).
async fn cases(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CaseSearch>,
) -> Result<Json<Value>, AppError> {
    caller.require(&[Role::Reviewer, Role::Auditor])?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(
            AppError::invalid(format!("`limit` must be 1 to {PAGE_MAX}"))
                .details(json!({ "field": "limit" })),
        );
    }
    if q.cursor.as_ref().is_some_and(|c| c.len() > 128) {
        return Err(AppError::invalid("`cursor` is not one this box gave")
            .details(json!({ "field": "cursor" })));
    }
    let s = state.clone();
    blocking("case search", move || {
        let backend = s.runner.store().backend();
        let mut to: Option<Vec<u8>> = q.cursor.as_ref().map(|c| c.as_bytes().to_vec());
        let (mut page, mut total, mut scanned) = (Vec::new(), 0usize, 0usize);
        let mut last_seen: Option<String> = None;
        let mut end = false;
        while scanned < SCAN_BUDGET {
            let chunk = backend
                .range_back(
                    Table::Cases,
                    b"",
                    to.as_deref(),
                    CHUNK.min(SCAN_BUDGET - scanned),
                )
                .map_err(|e| AppError::internal("case scan", e))?;
            let Some((oldest, _)) = chunk.last() else {
                end = true;
                break;
            };
            to = Some(oldest.clone());
            scanned += chunk.len();
            for (k, v) in chunk {
                last_seen = Some(String::from_utf8_lossy(&k).into_owned());
                let Ok(r) = serde_json::from_slice::<CaseRecord>(&v) else {
                    continue;
                };
                if q.matches(&r) {
                    total += 1;
                    if page.len() < limit {
                        page.push(r);
                    }
                }
            }
        }
        let next = if page.len() == limit {
            // More matches seen, or cases not yet examined: go on after this page.
            (total > limit || !end)
                .then(|| page.last().map(|r| r.id.clone()))
                .flatten()
        } else if !end {
            // The budget ran out before the page filled: go on after the last case examined.
            last_seen
        } else {
            None
        };
        let cases: Vec<Value> = page.iter().map(summary).collect();
        Ok(Json(json!({
            "total": total,
            "total_exact": end,
            "cases": cases,
            "next": next,
        })))
    })
    .await
}

/// `GET /v1/console/status`: figures for the box status page.
async fn status(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, AppError> {
    caller.require(&[])?;
    let s = state.clone();
    blocking("status", move || {
        let now = s.runner.now().as_second();
        let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_intent: BTreeMap<String, u64> = BTreeMap::new();
        let (mut last_minute, mut last_hour, mut finished_last_hour) = (0u64, 0u64, 0u64);
        let mut total = 0u64;
        each_case(&s, |r| {
            total += 1;
            *by_status.entry(r.status.as_str()).or_default() += 1;
            *by_intent
                .entry(intent_of(&r).unwrap_or_else(|| "(out of scope)".into()))
                .or_default() += 1;
            let age = now - r.accepted_at.as_second();
            if age <= 60 {
                last_minute += 1;
            }
            if age <= 3600 {
                last_hour += 1;
            }
            let done = matches!(r.status.as_str(), "completed" | "failed" | "escalated");
            if done && now - r.updated_at.as_second() <= 3600 {
                finished_last_hour += 1;
            }
        })?;
        let mut queues: BTreeMap<String, Value> = BTreeMap::new();
        let tasks = s
            .runner
            .tasks(None)
            .map_err(|e| AppError::internal("tasks read", e))?;
        for t in &tasks {
            let q = queues
                .entry(t.queue.clone())
                .or_insert_with(|| json!({ "open": 0, "oldest": t.created_at.to_string() }));
            q["open"] = json!(q["open"].as_u64().unwrap_or(0) + 1);
            if q["oldest"].as_str().is_some_and(|o| t.created_at.to_string().as_str() < o) {
                q["oldest"] = json!(t.created_at.to_string());
            }
        }
        let catalog = s.runner.catalog();
        let backend = s.runner.store().backend();
        Ok(Json(json!({
            "cases": { "total": total, "by_status": by_status, "by_intent": by_intent },
            "throughput": {
                "accepted_last_minute": last_minute,
                "accepted_last_hour": last_hour,
                "finished_last_hour": finished_last_hour,
            },
            "queues": queues,
            "intake_queue": s.workers.queued(),
            "store": { "backend": backend.name(), "disk_bytes": backend.disk_bytes() },
            "model": s.model,
            "profile": s.settings.profile.as_ref().map(|p| json!({"name": p.name, "fits": p.fits})),
            "workflows": catalog.workflows().map(|w| json!({"id": w.id, "version": w.version})).collect::<Vec<_>>(),
            "routing_version": catalog.routing.version,
            "limits": {
                "body_limit_bytes": s.body_limit_bytes,
                "request_timeout_ms": s.request_timeout.as_millis() as u64,
                "intake_permits_free": s.intake.available_permits(),
            },
            "simulated_backoffice": s.simulated_backoffice,
            "recovered": s.workers.recovery_pending() == 0,
            "recovery_pending": s.workers.recovery_pending(),
        })))
    })
    .await
}

fn served(state: &AppState, id: &str) -> Result<(Arc<Catalog>, Arc<Workflow>), AppError> {
    let catalog = state.runner.catalog();
    let wf = catalog
        .get(id)
        .cloned()
        .ok_or_else(|| AppError::not_found("workflow", id))?;
    Ok((catalog, wf))
}

fn origin(script: &Script, dir: &Path) -> Value {
    let file = script
        .origin
        .file
        .strip_prefix(dir)
        .unwrap_or(&script.origin.file);
    json!({ "file": file.display().to_string(), "line": script.origin.line, "digest": script.digest })
}

fn details(step: &Step, dir: &Path) -> (Value, Option<Value>) {
    match step {
        Step::Rule { script } => (json!({}), Some(origin(script, dir))),
        Step::Decision => (json!({}), None),
        Step::Call {
            connector,
            operation,
            payload,
            result,
            max_attempts,
            backoff,
        } => (
            json!({ "connector": connector, "operation": operation, "result": result,
                "max_attempts": max_attempts, "backoff_secs": backoff.as_secs() }),
            payload.as_ref().map(|p| origin(p, dir)),
        ),
        Step::Human {
            queue,
            task,
            sla,
            decisions,
        } => (
            json!({ "queue": queue, "task": task, "sla_secs": sla.map(|d| d.as_secs()),
                "decisions": decisions }),
            None,
        ),
        Step::Wait(WaitFor::Duration(d)) => (json!({ "duration_secs": d.as_secs() }), None),
        Step::Wait(WaitFor::Until(script)) => (json!({ "until": true }), Some(origin(script, dir))),
        Step::Checkpoint {
            name,
            assert,
            evidence,
        } => (
            json!({ "checkpoint": name, "evidence": evidence }),
            Some(origin(assert, dir)),
        ),
        Step::Reply { template } => (json!({ "template": template }), None),
        Step::End { outcome, escalated } => {
            (json!({ "outcome": outcome, "escalated": escalated }), None)
        }
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
    }
}

/// A workflow directory's files by relative name (`tests/…` included), each confined to
/// the folder (see `workflow::files`).
fn read_files(dir: &Path) -> BTreeMap<String, String> {
    files::all(dir)
}

/// Whether `caller` may read a workflow's files (rule scripts, templates, schemas,
/// fixtures): those who write and run the box do; submitters, reviewers and auditors see
/// the graph and the summary, not the rules that decide about them.
fn may_read_source(caller: &Caller) -> bool {
    matches!(caller.0.role, Role::Author | Role::Admin)
}

/// `GET /v1/console/workflows/{id}/definition`: nodes with kinds, edges with conditions,
/// and the served version's files.
async fn definition(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, AppError> {
    caller.require(&Role::ALL)?;
    let source = may_read_source(&caller);
    let (_, wf) = served(&state, &id)?;
    blocking("workflow definition", move || {
        let nodes: Vec<Value> = wf
            .nodes()
            .map(|n| {
                let (details, script) = details(&n.step, &wf.dir);
                json!({ "id": n.id, "kind": n.step.kind(), "line": n.line,
                    "description": n.description, "details": details, "script": script })
            })
            .collect();
        let edges: Vec<Value> = wf
            .nodes()
            .flat_map(|n| {
                wf.edges_from(&n.id)
                    .into_iter()
                    .map(|(e, to)| {
                        let condition = match e {
                            Edge::When { source, .. } => Some(source.clone()),
                            _ => None,
                        };
                        json!({ "from": n.id, "to": to.id, "kind": edge_kind(e),
                            "label": e.label(), "condition": condition })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Json(json!({
            "id": wf.id, "version": wf.version, "title": wf.title, "digest": wf.digest,
            "intents": wf.intents, "languages": wf.languages, "start": wf.start().id,
            "nodes": nodes, "edges": edges,
            "files": if source { read_files(&wf.dir) } else { BTreeMap::new() },
            "source_visible": source,
        })))
    })
    .await
}

/// `GET /v1/console/workflows/{id}/versions`: every version the box can show with its
/// files: the served one, the shipped one, and those cases ran on (kept in the store).
async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, AppError> {
    caller.require(&Role::ALL)?;
    let source = may_read_source(&caller);
    let (_, wf) = served(&state, &id)?;
    let s = state.clone();
    blocking("workflow versions", move || {
        let mut out: BTreeMap<u32, Value> = BTreeMap::new();
        let stored = s
            .runner
            .store()
            .backend()
            .range(Table::Workflows, b"", None, 100_000)
            .map_err(|e| AppError::internal("workflow versions", e))?;
        for b in stored
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<WorkflowBundle>(&v).ok())
            .filter(|b| b.id == wf.id)
        {
            out.insert(
                b.version,
                json!({ "version": b.version, "digest": b.digest, "source": "stored", "files": b.files }),
            );
        }
        let shipped = s.library.shipped().join(&wf.id);
        if shipped.join("workflow.yaml").is_file() {
            let files = read_files(&shipped);
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
                    json!({ "version": version, "digest": null, "source": "shipped", "files": files }),
                );
            }
        }
        out.insert(
            wf.version,
            json!({ "version": wf.version, "digest": wf.digest, "source": "current",
                "files": read_files(&wf.dir) }),
        );
        let mut versions: Vec<Value> = out.into_values().collect();
        if !source {
            for v in &mut versions {
                v["files"] = json!({});
            }
        }
        Ok(Json(json!({ "id": wf.id, "source_visible": source, "versions": versions })))
    })
    .await
}

fn outcomes(results: Vec<fixture::Outcome>, dir: &Path) -> Vec<Value> {
    results
        .into_iter()
        .map(|o| {
            let file = o
                .file
                .strip_prefix(dir)
                .unwrap_or(&o.file)
                .display()
                .to_string();
            json!({ "name": o.name, "file": file, "passed": o.failures.is_empty(),
                "failures": o.failures })
        })
        .collect()
}

/// `POST /v1/console/workflows/{id}/fixtures`: runs the served version's fixtures.
async fn fixtures(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, AppError> {
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
        let results = outcomes(results, &wf.dir);
        let passed = results.iter().filter(|r| r["passed"] == true).count();
        Ok(Json(json!({
            "id": wf.id, "version": wf.version, "passed": passed,
            "failed": results.len() - passed, "fixtures": results,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    id: String,
    files: BTreeMap<String, String>,
}

fn plain_name(name: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    match name.split_once('/') {
        None => ok(name),
        Some(("tests", f)) => ok(f),
        Some(_) => false,
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles `files` as workflow `id` beside every other served workflow and runs its
/// fixtures, in a scratch copy of the served catalog: what a publish would say, without
/// publishing.
fn check_version(
    catalog: &Catalog,
    rules: &Rules,
    scratch: &Path,
    id: &str,
    files: &BTreeMap<String, String>,
) -> Result<Value, AppError> {
    if !files.contains_key("workflow.yaml") {
        return Err(AppError::invalid("`files` must contain `workflow.yaml`"));
    }
    if let Some(bad) = files.keys().find(|n| !plain_name(n)) {
        return Err(AppError::invalid(format!(
            "file name `{bad}` is not allowed; use `name.ext` or `tests/name.ext`"
        )));
    }
    if id.is_empty()
        || id == "routing"
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(AppError::invalid(
            "`id` must be a-z, 0-9 and `_` (and not `routing`)",
        ));
    }
    let io = |e: std::io::Error| AppError::internal("check", e);
    copy_dir(&catalog.dir, scratch).map_err(io)?;
    let target = scratch.join(id);
    let _ = std::fs::remove_dir_all(&target);
    for (name, content) in files {
        let path = target.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, content).map_err(io)?;
    }
    let checked = match Catalog::load(scratch, rules) {
        Err(d) => {
            let diagnostics: Vec<Value> =
                d.0.iter()
                    .map(|d| {
                        let file = d.file.strip_prefix(scratch).unwrap_or(&d.file);
                        json!({ "code": d.code, "file": file.display().to_string(), "line": d.line,
                        "column": d.column, "node": d.node, "message": d.message })
                    })
                    .collect();
            return Ok(json!({ "valid": false, "diagnostics": diagnostics, "fixtures": [] }));
        }
        Ok(c) => c,
    };
    let Some(wf) = checked.get(id) else {
        return Ok(
            json!({ "valid": false, "diagnostics": [{ "code": "id", "file": "workflow.yaml",
            "line": 0, "column": 0, "node": null,
            "message": format!("workflow.yaml does not define workflow `{id}`") }], "fixtures": [] }),
        );
    };
    let mut problems = Vec::new();
    if let Some(old) = catalog.get(id)
        && wf.version <= old.version
    {
        problems.push(json!({ "code": "version_not_newer", "file": format!("{id}/workflow.yaml"),
            "line": 0, "column": 0, "node": null,
            "message": format!("version {} is not higher than the served version {}", wf.version, old.version) }));
    }
    let results = outcomes(
        fixture::run_workflow(&checked, wf, rules),
        &scratch.join(id),
    );
    let fixtures_ok = results.iter().all(|r| r["passed"] == true);
    Ok(json!({
        "valid": problems.is_empty() && fixtures_ok,
        "compiles": true,
        "version": wf.version,
        "diagnostics": problems,
        "fixtures": results,
    }))
}

/// `POST /v1/console/workflows/check`: what publishing these files would say; publishes
/// nothing.
async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CheckBody>,
) -> Result<Json<Value>, AppError> {
    caller.require(&[Role::Author])?;
    let catalog = state.runner.catalog();
    let rules = state.library.rules().clone();
    let compile = state.admit_compile()?;
    // Created and removed outside the compile thread: a panic in it still removes the copy.
    let scratch = Scratch(state.library.scratch_dir());
    blocking("check", move || {
        let _compile = compile;
        let dir = scratch.0.clone();
        let checked = library::isolated("check", move || {
            check_version(&catalog, &rules, &dir, &body.id, &body.files)
        });
        drop(scratch);
        checked?.map(Json)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    channel: Channel,
    language: Option<Language>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    fields: Map<String, Value>,
    customer_id: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// The connector of a dry run: calls nothing and answers success with an empty result.
struct NoCalls;

impl Connector for NoCalls {
    fn call(&self, _request: &CallRequest) -> Result<Value, CallError> {
        Ok(json!({ "dry_run": true }))
    }
}

/// Most timers a dry run lets pass before it stops.
const DRY_RUN_TIMERS: usize = 20;

/// `POST /v1/console/dry-run`: classification, routing decision and the path the workflow
/// would take (until a human task), all in memory: no case, no audit record, no call.
async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<DryRunBody>,
) -> Result<Json<Value>, AppError> {
    caller.require(&[Role::Author])?;
    // The intake's bounds: text and form fields together, as at `POST /v1/requests`.
    super::requests::limits::text_and_fields(&body.text, &body.fields)?;
    if let Some(m) = &body.metadata {
        super::requests::limits::metadata(m)?;
    }
    let mut request = Request::text(body.channel, body.text);
    request.text = request.text.filter(|t| !t.is_empty());
    request.language = Some(body.language.unwrap_or(Language::En).code().to_string());
    request.fields = body.fields;
    request.customer_id = body.customer_id.filter(|c| !c.is_empty());
    request.metadata = body.metadata;
    let s = state.clone();
    let call = state.admit_model_call()?;
    blocking("dry run", move || {
        let _call = call;
        let received = Received::new(request);
        let classification = s.classifier.classify(&received).map_err(|e| {
            tracing::warn!("classification failed: {e}");
            AppError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "classifier_unavailable",
                "the intent model could not classify the text",
            )
        })?;
        let catalog = s.runner.catalog();
        let rules = s.library.rules().clone();
        let mut answer = json!({
            "classification": classification.to_json(),
            "routing_version": catalog.routing.version,
            "created_case": false,
        });
        let clock = ManualClock::new(s.runner.now());
        let exec = Executor::new(&rules, &clock, &NoCalls);
        let pipeline = Pipeline {
            catalog: &catalog,
            rules: &rules,
        };
        let (route, start) =
            match pipeline.start(&exec, "dry-run", &received.request, &classification) {
                Ok(routed) => routed,
                Err(e) => {
                    answer["route_error"] = json!(e.to_string());
                    return Ok(Json(answer));
                }
            };
        answer["route"] = serde_json::to_value(&route).unwrap_or(Value::Null);
        let (wf, mut case) = match start {
            Start::Queued { .. } | Start::NotLoaded { .. } => return Ok(Json(answer)),
            Start::Refused { workflow, error } => {
                answer["workflow"] = json!({ "id": workflow.id, "version": workflow.version });
                answer["run_error"] = json!(error.to_string());
                return Ok(Json(answer));
            }
            Start::Started { workflow, case, .. } => (workflow, case),
        };
        answer["workflow"] = json!({ "id": wf.id, "version": wf.version });
        pipeline::fast_forward(&exec, &clock, &wf, &mut case, DRY_RUN_TIMERS);
        let waiting = match &case.waiting {
            Some(Waiting::Task {
                node,
                queue,
                decisions,
                ..
            }) => json!({ "kind": "task", "node": node, "queue": queue, "decisions": decisions }),
            Some(Waiting::Timer { node, due, .. }) => {
                json!({ "kind": "timer", "node": node, "due": due.to_string() })
            }
            None => Value::Null,
        };
        answer["run"] = json!({
            "status": case.status.as_str(),
            "path": case.path,
            "waiting": waiting,
            "outcome": case.outcome,
            "error": case.error,
            "reply": case.reply.as_ref().map(|r| json!({"template": r.template, "language": r.language, "text": r.text})),
        });
        Ok(Json(answer))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn file_names_stay_inside_the_workflow_directory() {
        assert!(plain_name("workflow.yaml"));
        assert!(plain_name("tests/a-b_1.yaml"));
        for bad in [
            "../x",
            "/etc/passwd",
            "a/b.yaml",
            "tests/../x",
            ".hidden",
            "",
        ] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
