//! `GET /v1/cases/{id}` and `GET /v1/cases/{id}/audit`.
//!
//! Who sees what: a submitter sees the cases it submitted (others are `404`, so ids do not
//! leak); reviewers and admins see everything; auditors see everything but personal data
//! (request, case data, reply text), which is replaced by `"masked": true`.

use axum::extract::State;
use casegraph_engine::audit;
use casegraph_engine::exec::Waiting;
use casegraph_engine::runner;
use casegraph_engine::store::{CaseRecord, CaseStatus, PersonalRecord, QueueReason};
use serde::Serialize;
use serde_json::{Value, json};

use super::{AppError, AppState, Caller, Json, Path, blocking};
use crate::auth::{Principal, Role};

/// A case as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseView {
    pub case_id: String,
    /// accepted | running | waiting | completed | failed | escalated
    pub status: String,
    pub channel: String,
    pub language: String,
    /// The customer's pseudonym on this box.
    pub customer: Option<String>,
    /// Intent, confidence, top-k and model version.
    #[schema(value_type = Object, nullable = true)]
    pub classification: Option<Value>,
    /// Where routing sent the case and the rule that fired.
    #[schema(value_type = Object, nullable = true)]
    pub route: Option<Value>,
    /// Why this route: `{policy_version, rule, priority, scores, signals: {intent,
    /// confidence, out_of_scope, sentiment, frustration, customer}}` (labels and counts,
    /// never text). Absent on cases routed before it was recorded.
    #[schema(value_type = Object, nullable = true)]
    pub why: Option<Value>,
    /// `{id, version, digest}` of the workflow version the case runs on.
    #[schema(value_type = Object, nullable = true)]
    pub workflow: Option<Value>,
    pub current_node: Option<String>,
    /// What the case waits for and why: a task (`task_id`, `queue`, `decisions`, `sla_due`,
    /// `reason`) or a timer (`due`, `reason`). A triage task's `reason` is
    /// `{"code": "routed", "rule"}` or `{"code": "input_invalid", "workflow", "fields"}`.
    #[schema(value_type = Object, nullable = true)]
    pub waiting: Option<Value>,
    pub outcome: Option<String>,
    /// `{template, language, text}`; `text` is masked for auditors.
    #[schema(value_type = Object, nullable = true)]
    pub reply: Option<Value>,
    /// Why a failed case failed; set on every failed case. The full message (it may quote
    /// the case's data) for callers who see personal data while it is not erased; the
    /// reason without values (node, file and line, field paths) otherwise.
    pub error: Option<String>,
    pub path: Vec<String>,
    pub accepted_at: String,
    pub updated_at: String,
    /// The request as accepted (personal data).
    #[schema(value_type = Object, nullable = true)]
    pub request: Option<Value>,
    /// The case data scripts work on (personal data).
    #[schema(value_type = Object, nullable = true)]
    pub data: Option<Value>,
    /// Personal data is left out for this caller.
    pub masked: bool,
    /// The customer's personal data was erased.
    pub erased: bool,
    /// The printed case reference (`CG-7K3F-9Q2D`) the customer quotes when answering.
    pub reference: String,
    /// The earlier, finished case whose reference the request quoted.
    pub linked_case: Option<String>,
    /// The conversation in order: the questions the case sent (`out`) and the customer's
    /// messages (`in`, with `node` once an `ask` node took it as its answer). `text` and
    /// `fields` are masked for auditors and gone once erased.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
}

/// A case's audit records and whether the box's chain verifies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub case_id: String,
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<audit::Record>,
    /// Every record of this case matches its own hash.
    pub records_intact: bool,
    /// The box's chain verifies from the first record to the head: the records appended
    /// since the last verification were checked now, those before by earlier ones.
    pub chain_verified: bool,
    /// `{records, head, checked}` when verified (`checked`: records this request
    /// verified), `{problem}` otherwise.
    #[schema(value_type = Object)]
    pub chain: Value,
}

fn may_read(caller: &Principal, rec: &CaseRecord) -> bool {
    match caller.role {
        Role::Admin | Role::Reviewer | Role::Auditor => true,
        Role::Submitter => rec.submitted_by.as_deref() == Some(caller.name.as_str()),
        Role::Author => false,
    }
}

pub fn view(rec: CaseRecord, personal: Option<PersonalRecord>, masked: bool) -> CaseView {
    let state = rec.state.as_ref();
    let waiting = match state.and_then(|s| s.waiting.as_ref()) {
        Some(Waiting::Task {
            task_id,
            node,
            queue,
            task,
            decisions,
            sla_due,
            ..
        }) => Some(
            json!({ "kind": "task", "task_id": task_id, "node": node, "queue": queue,
            "title": task, "decisions": decisions, "sla_due": sla_due,
            "reason": { "code": "human_node", "node": node } }),
        ),
        Some(Waiting::Timer {
            node,
            due,
            retry_attempt,
        }) => {
            let reason = match retry_attempt {
                Some(attempt) => json!({ "code": "call_retry", "node": node, "attempt": attempt }),
                None => json!({ "code": "wait_node", "node": node }),
            };
            Some(json!({ "kind": "timer", "node": node, "due": due, "reason": reason }))
        }
        Some(Waiting::Answer {
            node,
            due,
            asked_at,
        }) => Some(json!({ "kind": "answer", "node": node, "due": due,
            "reference": casegraph_engine::reference::of(&rec.id),
            "asked_at": asked_at, "reason": { "code": "ask_node", "node": node } })),
        None => rec.queue_task.as_ref().map(|t| {
            let queue = match (&rec.route, &rec.queue_reason) {
                (_, Some(QueueReason::InputInvalid { .. })) => Some(runner::TRIAGE_QUEUE.into()),
                (Some(casegraph_engine::routing::Route::Queue { queue, .. }), _) => {
                    Some(queue.clone())
                }
                _ => None,
            };
            // Cases parked before reasons were stored: routing's rule is the reason.
            let reason = rec.queue_reason.clone().or_else(|| match &rec.route {
                Some(casegraph_engine::routing::Route::Queue { rule, .. }) => {
                    Some(QueueReason::Routed { rule: rule.clone() })
                }
                _ => None,
            });
            json!({ "kind": "task", "task_id": t, "queue": queue, "reason": reason })
        }),
    };
    // Every failed case says why: the full message to callers who may see personal data
    // (while it exists), the reason without values to everyone else.
    let error = match (&personal, masked) {
        (Some(p), false) if p.error.is_some() && rec.status == CaseStatus::Failed => {
            p.error.clone()
        }
        _ => state
            .and_then(|s| s.error.clone())
            .or_else(|| rec.error.clone()),
    };
    let reply_text = personal.as_ref().and_then(|p| p.reply_text.clone());
    let reply = state.and_then(|s| s.reply.as_ref()).map(|r| {
        json!({ "template": r.template, "language": r.language,
            "text": if masked { None } else { reply_text.clone() } })
    });
    let (request, data) = match (&personal, masked) {
        (Some(p), false) => (Some(p.request.clone()), Some(p.data.clone())),
        _ => (None, None),
    };
    let messages = personal
        .as_ref()
        .map(|p| {
            p.messages
                .iter()
                .map(|m| {
                    json!({ "message_id": m.message_id, "direction": m.direction,
                        "channel": m.channel, "language": m.language, "at": m.at,
                        "node": m.node, "via": m.via,
                        "text": if masked { None } else { Some(&m.text) },
                        "fields": if masked { None } else { Some(&m.fields) } })
                })
                .collect()
        })
        .unwrap_or_default();
    CaseView {
        reference: casegraph_engine::reference::of(&rec.id),
        linked_case: rec.linked_case.clone(),
        messages,
        case_id: rec.id.clone(),
        status: rec.status.as_str().into(),
        channel: rec.channel.clone(),
        language: rec.language.clone(),
        customer: rec.customer.clone(),
        classification: rec.classification.clone(),
        route: rec
            .route
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok()),
        why: rec.why.as_ref().and_then(|w| serde_json::to_value(w).ok()),
        workflow: rec
            .workflow
            .as_ref()
            .map(|w| json!({ "id": w.id, "version": w.version, "digest": w.digest })),
        current_node: state.map(|s| s.current.clone()),
        waiting,
        outcome: state.and_then(|s| s.outcome.clone()),
        reply,
        error,
        path: state.map(|s| s.path.clone()).unwrap_or_default(),
        accepted_at: rec.accepted_at.to_string(),
        updated_at: rec.updated_at.to_string(),
        request,
        data,
        masked,
        erased: rec.erased,
    }
}

#[utoipa::path(get, path = "/v1/cases/{id}", tag = "cases", security(("bearer" = [])),
    params(("id" = String, Path, description = "Case id")),
    responses((status = 200, body = CaseView), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CaseView>, AppError> {
    let who = caller
        .require(&[Role::Submitter, Role::Reviewer, Role::Auditor])?
        .clone();
    let runner = state.runner.clone();
    let lookup = id.clone();
    let found = blocking("case", move || {
        runner
            .case(&lookup)
            .map_err(|e| AppError::runner("case read", e))
    })
    .await?;
    match found {
        Some((rec, personal)) if may_read(&who, &rec) => {
            Ok(Json(view(rec, personal, who.role == Role::Auditor)))
        }
        _ => Err(AppError::not_found("case", &id)),
    }
}

#[utoipa::path(get, path = "/v1/cases/{id}/audit", tag = "cases", security(("bearer" = [])),
    params(("id" = String, Path, description = "Case id")),
    responses((status = 200, body = AuditView), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AuditView>, AppError> {
    caller.require(&[Role::Auditor])?;
    let runner = state.runner.clone();
    blocking("audit", move || {
        if runner
            .case(&id)
            .map_err(|e| AppError::runner("case read", e))?
            .is_none()
        {
            return Err(AppError::not_found("case", &id));
        }
        let records = runner
            .case_audit(&id)
            .map_err(|e| AppError::runner("audit read", e))?;
        let records_intact = records.iter().all(|r| r.computed_hash() == r.hash);
        // Only what was appended since the last request is checked (the verified-prefix
        // mark); `casegraph audit verify` checks everything.
        let verdict = runner
            .store()
            .audit_verify_incremental()
            .map_err(|e| AppError::store("audit verify", &e))?;
        let (chain_verified, chain) = match verdict {
            Ok(v) => (
                true,
                json!({ "records": v.records, "head": v.head, "checked": v.checked }),
            ),
            Err(p) => (false, json!({ "problem": p.to_string() })),
        };
        Ok(Json(AuditView {
            case_id: id,
            records,
            records_intact,
            chain_verified,
            chain,
        }))
    })
    .await
}
