//! `GET /v1/console/status`: figures for the box status page (cases by status and intent,
//! throughput, open tasks per queue, store, model, limits, recovery). Admins only; it
//! reads every stored case a chunk at a time, so memory stays at one chunk.

use std::collections::BTreeMap;

use axum::extract::State;
use casegraph_engine::routing::Route;
use casegraph_engine::store::{CaseRecord, CaseStatus};
use casegraph_engine::workflow::Catalog;
use serde::Serialize;

use super::super::{AppError, AppState, Caller, Json, blocking};
use super::VersionRef;
use super::cases::intent_of;

/// The box at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BoxStatus {
    pub cases: CaseCounts,
    pub throughput: Throughput,
    /// Open human tasks by queue.
    pub queues: BTreeMap<String, QueueFigures>,
    /// Requests accepted and waiting for a case worker.
    pub intake_queue: usize,
    pub store: StoreFigures,
    /// The disk against the storage marks (`[storage]`).
    pub storage: crate::storage::Status,
    /// Archived cases, the last archive run and compaction (`[retention]`).
    pub retention: crate::retention::Status,
    /// The intent model's version (`name@version+sha256:…`).
    pub model: String,
    /// The hardware profile the settings were built on, if any.
    pub profile: Option<ProfileRef>,
    /// The served workflows.
    pub workflows: Vec<VersionRef>,
    pub routing_version: u32,
    pub limits: LimitFigures,
    /// Connectors go to the built-in simulated back office.
    pub simulated_backoffice: bool,
    /// No case left from the last run is still to be resumed.
    pub recovered: bool,
    pub recovery_pending: usize,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CaseCounts {
    pub total: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    /// `(out of scope)` counts cases without an intent.
    pub by_intent: BTreeMap<String, u64>,
    /// How the cases of each intent were handled (`all`: every intent together).
    pub automation: BTreeMap<String, Automation>,
}

/// How the stored cases of one intent were handled: the automation rate of the box.
#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Automation {
    /// Completed by their workflow without a person: no queue, no human task.
    pub without_person: u64,
    /// Finished after a person decided (a queue, a human task, an escalation), or waiting
    /// for one now.
    pub with_person: u64,
    /// Waiting for the customer's answer to a question.
    pub waiting_for_customer: u64,
    pub failed: u64,
}

/// How a stored case was handled, for [`Automation`]: `None` while it is still running.
fn handled(rec: &CaseRecord, catalog: &Catalog) -> Option<fn(&mut Automation) -> &mut u64> {
    use casegraph_engine::exec::Waiting;
    let by_person = matches!(rec.route, Some(Route::Queue { .. }))
        || rec.queue_task.is_some()
        || rec.state.as_ref().is_some_and(|s| {
            // A node where a person decided: a human node of the case's workflow (as the
            // box serves it now; node ids keep their kind across versions in practice).
            catalog.get(&s.workflow).is_some_and(|wf| {
                s.path
                    .iter()
                    .any(|n| wf.node(n).is_some_and(|n| n.step.kind() == "human"))
            })
        });
    let waiting = rec.state.as_ref().and_then(|s| s.waiting.as_ref());
    Some(match rec.status {
        CaseStatus::Failed => |a| &mut a.failed,
        CaseStatus::Escalated => |a| &mut a.with_person,
        CaseStatus::Completed if by_person => |a| &mut a.with_person,
        CaseStatus::Completed => |a| &mut a.without_person,
        CaseStatus::Waiting if matches!(waiting, Some(Waiting::Answer { .. })) => {
            |a| &mut a.waiting_for_customer
        }
        CaseStatus::Waiting => |a| &mut a.with_person,
        _ => return None,
    })
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Throughput {
    pub accepted_last_minute: u64,
    pub accepted_last_hour: u64,
    /// Cases that became completed, failed or escalated in the last hour.
    pub finished_last_hour: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueFigures {
    pub open: u64,
    /// When the oldest open task was created.
    pub oldest: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreFigures {
    /// `redb` or `sled`.
    pub backend: &'static str,
    pub disk_bytes: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileRef {
    pub name: String,
    /// Whether this machine meets the profile.
    pub fits: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitFigures {
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    /// Requests that may still be made durable at once.
    pub intake_permits_free: usize,
}

#[utoipa::path(get, path = "/v1/console/status", tag = "console", security(("bearer" = [])),
    responses((status = 200, body = BoxStatus), (status = 401, body = super::super::error::ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<BoxStatus>, AppError> {
    caller.require(&[])?;
    let s = state.clone();
    blocking("status", move || {
        let now = s.runner.now().as_second();
        let store = s.runner.store();
        let (mut cases, mut throughput) = (CaseCounts::default(), Throughput::default());
        let catalog = s.runner.catalog();
        store
            .cases()
            .for_each(|r| {
                cases.total += 1;
                *cases.by_status.entry(r.status.as_str()).or_default() += 1;
                let intent = intent_of(&r).unwrap_or_else(|| "(out of scope)".into());
                if let Some(field) = handled(&r, &catalog) {
                    *field(cases.automation.entry(intent.clone()).or_default()) += 1;
                    *field(cases.automation.entry("all".into()).or_default()) += 1;
                }
                *cases.by_intent.entry(intent).or_default() += 1;
                let age = now - r.accepted_at.as_second();
                if age <= 60 {
                    throughput.accepted_last_minute += 1;
                }
                if age <= 3600 {
                    throughput.accepted_last_hour += 1;
                }
                if r.status.is_final() && now - r.updated_at.as_second() <= 3600 {
                    throughput.finished_last_hour += 1;
                }
            })
            .map_err(|e| AppError::internal("case scan", e))?;
        let queues: BTreeMap<String, QueueFigures> = s
            .runner
            .open_tasks_by_queue()
            .map_err(|e| AppError::runner("tasks read", e))?
            .into_iter()
            .map(|(queue, q)| {
                let figures = QueueFigures {
                    open: q.open as u64,
                    oldest: q.oldest.to_string(),
                };
                (queue, figures)
            })
            .collect();
        let catalog = s.runner.catalog();
        Ok(Json(BoxStatus {
            cases,
            throughput,
            queues,
            intake_queue: s.workers.queued(),
            store: StoreFigures {
                backend: store.backend_name(),
                disk_bytes: store.disk_bytes(),
            },
            storage: s.storage.status(),
            retention: s.metrics.retention.status(),
            model: s.model.clone(),
            profile: s.settings.profile.as_ref().map(|p| ProfileRef {
                name: p.name.clone(),
                fits: p.fits,
            }),
            workflows: catalog.workflows().map(|w| VersionRef::of(w)).collect(),
            routing_version: catalog.routing.version,
            limits: LimitFigures {
                body_limit_bytes: s.body_limit_bytes,
                request_timeout_ms: s.request_timeout.as_millis() as u64,
                intake_permits_free: s.intake.available_permits(),
            },
            simulated_backoffice: s.simulated_backoffice,
            recovered: s.workers.recovery_pending() == 0,
            recovery_pending: s.workers.recovery_pending(),
        }))
    })
    .await
}
