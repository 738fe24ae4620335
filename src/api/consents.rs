//! `PUT /v1/customers/{id}/consents/{purpose}` and `GET /v1/customers/{id}/consents`: a
//! customer's consents per purpose, with their history.
//!
//! Roles: recording a consent needs a submitter token with the `manage_consents`
//! capability (or an admin); reading needs a reviewer, auditor or admin token — an auditor
//! sees purposes, states and times, and the history's sources and recorders masked, like
//! other personal data. Limits: the customer number's shape, a purpose of 1–64
//! lower-case characters, at most `runner::MAX_PURPOSES` purposes per customer and
//! `runner::MAX_HISTORY` changes kept per purpose, `source` 1–64 characters. Hostile
//! tests: `tests/hostile/events.rs`.

use axum::extract::State;
use axum::http::StatusCode;
use casegraph_engine::runner::{self, ConsentChange};
use casegraph_engine::store::ConsentRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppError, AppState, Caller, Json, Path, blocking};
use crate::auth::{Capability, Role};

/// A consent given or withdrawn.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    pub granted: bool,
    /// Where the customer said it: `crm`, `branch`, `app` (1–64 characters).
    #[schema(max_length = 64)]
    pub source: String,
    /// When the customer said it (RFC 3339); default: now.
    pub at: Option<String>,
}

/// One change of a consent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeView {
    pub granted: bool,
    /// `null` for auditors.
    pub source: Option<String>,
    pub at: String,
    /// The token that recorded it; `null` for auditors.
    pub by: Option<String>,
    pub recorded_at: String,
}

/// A customer's consent for one purpose.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub purpose: String,
    pub granted: bool,
    pub current: ChangeView,
    /// Earlier changes, oldest first.
    pub history: Vec<ChangeView>,
}

/// Every purpose of one customer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentsView {
    pub consents: Vec<ConsentView>,
    /// Sources and recorders are hidden (auditor tokens).
    pub masked: bool,
}

pub fn view(r: ConsentRecord, masked: bool) -> ConsentView {
    let change = |c: casegraph_engine::store::ConsentChange| ChangeView {
        granted: c.granted,
        source: (!masked).then_some(c.source),
        at: c.at.to_string(),
        by: (!masked).then_some(c.by),
        recorded_at: c.recorded_at.to_string(),
    };
    ConsentView {
        purpose: r.purpose,
        granted: r.current.granted,
        current: change(r.current),
        history: r.history.into_iter().map(change).collect(),
    }
}

fn customer_id(id: &str) -> Result<(), AppError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(
            AppError::invalid("the customer number must be 1–64 letters, digits, `-`, `_` and `.`")
                .details(json!({ "field": "id" })),
        )
    }
}

#[utoipa::path(put, path = "/v1/customers/{id}/consents/{purpose}", tag = "consents",
    request_body = ConsentBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Customer number"),
        ("purpose" = String, Path, description = "`marketing`, `service`, …")),
    responses((status = 200, body = ConsentView),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, purpose)): Path<(String, String)>,
    Json(body): Json<ConsentBody>,
) -> Result<Json<ConsentView>, AppError> {
    let who = caller.require(&[Role::Submitter])?.clone();
    if !who.may(Capability::ManageConsents) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not record consents; it needs the `manage_consents` capability",
        )
        .details(json!({ "capability": "manage_consents" })));
    }
    customer_id(&id)?;
    if !runner::is_purpose(&purpose) {
        return Err(AppError::invalid(
            "the purpose must be 1–64 lower-case letters, digits and `_`, starting with a letter",
        )
        .details(json!({ "field": "purpose" })));
    }
    if body.source.is_empty() || body.source.chars().count() > 64 {
        return Err(AppError::invalid("`source` must be 1–64 characters")
            .details(json!({ "field": "source" })));
    }
    let at = match &body.at {
        None => None,
        Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
            AppError::invalid(format!("`at` must be an RFC 3339 timestamp: {e}"))
                .details(json!({ "field": "at" }))
        })?),
    };
    let change = ConsentChange {
        purpose,
        granted: body.granted,
        source: body.source,
        at,
        by: who.name.clone(),
    };
    let runner = state.runner.clone();
    let record = blocking("consent", move || {
        runner.change_consent(&id, &change).map_err(|e| match e {
            runner::Error::InvalidConsent(m) => AppError::invalid(m),
            other => AppError::runner("consent", other),
        })
    })
    .await?;
    Ok(Json(view(record, false)))
}

#[utoipa::path(get, path = "/v1/customers/{id}/consents", tag = "consents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Customer number")),
    responses((status = 200, body = ConsentsView),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ConsentsView>, AppError> {
    let who = caller.require(&[Role::Reviewer, Role::Auditor])?.clone();
    customer_id(&id)?;
    let masked = who.role == Role::Auditor;
    let runner = state.runner.clone();
    let records = blocking("consents", move || {
        runner
            .consents(&id)
            .map_err(|e| AppError::runner("consents", e))
    })
    .await?;
    Ok(Json(ConsentsView {
        consents: records.into_iter().map(|r| view(r, masked)).collect(),
        masked,
    }))
}
