//! `GET /v1/console/cases`: case search for reviewers and auditors, newest first (case ids
//! begin with their acceptance time), a page at a time, with no personal data in the
//! answer. Bounded: at most [`PAGE_MAX`] cases per page and [`SCAN_BUDGET`] stored cases
//! examined per request (`tests/hostile/edges.rs` searches a large store).

use axum::extract::State;
use casegraph_engine::routing::Route;
use casegraph_engine::store::CaseRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::{AppError, AppState, Caller, Json, Query, blocking};
use super::VersionRef;
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

/// What to search for; every filter is optional, an empty one matches everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CaseSearch {
    /// Part of the case id.
    id: Option<String>,
    /// The case's status (`waiting`, `completed`, …).
    status: Option<String>,
    /// The classified intent.
    intent: Option<String>,
    /// Accepted on or after this date (`YYYY-MM-DD` or RFC 3339).
    from: Option<String>,
    /// Accepted on or before this date.
    to: Option<String>,
    /// Cases per page: 1 to 200, 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// The `next` of the previous page: only cases older than it.
    #[param(max_length = 128)]
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

/// One page of matches.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CasePage {
    /// Matches among the cases examined (at most 20000 from the cursor on).
    pub total: usize,
    /// Whether the cases examined were all there are.
    pub total_exact: bool,
    pub cases: Vec<CaseSummary>,
    /// The cursor of the next page; `null`: no more.
    pub next: Option<String>,
}

/// A case as the search lists it: ids, status and routing, no personal data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseSummary {
    pub case_id: String,
    pub status: &'static str,
    pub channel: String,
    pub language: String,
    /// The classified intent; `null` when out of scope or not yet classified.
    pub intent: Option<String>,
    /// The model's confidence in `intent`.
    pub confidence: Option<f64>,
    /// Where routing sent the case and which rule fired.
    #[schema(value_type = Option<Object>)]
    pub route: Option<Route>,
    pub workflow: Option<VersionRef>,
    pub outcome: Option<String>,
    pub accepted_at: String,
    pub updated_at: String,
}

/// The classified intent of a case, if any.
pub(super) fn intent_of(rec: &CaseRecord) -> Option<String> {
    rec.classification
        .as_ref()
        .and_then(|c| c.get("intent"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl From<CaseRecord> for CaseSummary {
    fn from(r: CaseRecord) -> CaseSummary {
        CaseSummary {
            intent: intent_of(&r),
            confidence: r
                .classification
                .as_ref()
                .and_then(|c| c.get("confidence"))
                .and_then(Value::as_f64),
            status: r.status.as_str(),
            workflow: r.workflow.map(|w| VersionRef {
                id: w.id,
                version: w.version,
            }),
            outcome: r.state.and_then(|s| s.outcome),
            accepted_at: r.accepted_at.to_string(),
            updated_at: r.updated_at.to_string(),
            case_id: r.id,
            channel: r.channel,
            language: r.language,
            route: r.route,
        }
    }
}

/// Newest first, a page at a time. `total` counts the matches among the cases examined (at
/// most [`SCAN_BUDGET`] from the cursor on), `total_exact` says whether that was all of
/// them, `next` is the cursor of the next page (`null`: no more).
#[utoipa::path(get, path = "/v1/console/cases", tag = "console", security(("bearer" = [])),
    params(CaseSearch),
    responses((status = 200, body = CasePage), (status = 400, body = super::super::error::ErrorBody), (status = 422, body = super::super::error::ErrorBody),
        (status = 401, body = super::super::error::ErrorBody), (status = 403, body = super::super::error::ErrorBody)))]
pub async fn cases(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CaseSearch>,
) -> Result<Json<CasePage>, AppError> {
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
        let stored = s.runner.store().cases();
        let mut before: Option<String> = q.cursor.clone();
        let (mut page, mut total, mut scanned) = (Vec::new(), 0usize, 0usize);
        let mut last_seen: Option<String> = None;
        let mut end = false;
        while scanned < SCAN_BUDGET {
            let chunk = stored
                .newest_first(before.as_deref(), CHUNK.min(SCAN_BUDGET - scanned))
                .map_err(|e| AppError::internal("case scan", e))?;
            let Some(oldest) = chunk.last() else {
                end = true;
                break;
            };
            before = Some(oldest.id.clone());
            scanned += chunk.len();
            for listed in chunk {
                last_seen = Some(listed.id);
                let Ok(r) = listed.record else {
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
        Ok(Json(CasePage {
            total,
            total_exact: end,
            cases: page.into_iter().map(CaseSummary::from).collect(),
            next,
        }))
    })
    .await
}
