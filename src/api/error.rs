//! The one error shape of the API, `{"error": {"code", "message", "details"}}`, and the
//! extractors whose rejections use it too (a malformed body, a wrong content type or a bad
//! query string get the same shape as everything else).
//!
//! Codes are stable snake_case strings (the table is in `docs/api.md`). User errors say what
//! to fix; internal errors are logged with an incident id and the client gets only that id.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Characters of a client's id an error message repeats.
const ECHOED_ID: usize = 80;

/// An error answer.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for `Retry-After` (back-pressure, busy cases).
    pub retry_after: Option<u64>,
}

/// The error body, for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_request`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Structured specifics (field errors, diagnostics, allowed values), or null.
    #[schema(value_type = Object, nullable = true)]
    pub details: Value,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn details(mut self, details: Value) -> AppError {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> AppError {
        self.retry_after = Some(secs);
        self
    }

    pub fn invalid(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// `404`, naming the id asked for: at most [`ECHOED_ID`] characters of it, so a
    /// path parameter of kilobytes is not sent back whole.
    pub fn not_found(what: &str, id: &str) -> AppError {
        let shown: String = id.chars().take(ECHOED_ID).collect();
        let more = if shown.len() < id.len() { "…" } else { "" };
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} `{}{more}`", shown.escape_debug()),
        )
    }

    /// `503 busy`: as many `what` run as the box allows at once; try again shortly.
    pub fn busy(what: &str, retry_after_secs: u64) -> AppError {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("the box runs as many {what} at once as it allows; try again shortly"),
        )
        .retry_after(retry_after_secs)
    }

    /// `429 queue_full`: the workers' queue has no place for another case.
    pub fn queue_full(retry_after_secs: u64) -> AppError {
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            "the box has too many cases waiting to run; try again shortly",
        )
        .retry_after(retry_after_secs)
    }

    /// A failure that is not the client's: logged in full, answered with an incident id.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> AppError {
        let incident = crate::incident::id();
        tracing::error!(incident = %incident, "{context}: {e}");
        AppError::incident(&incident)
    }

    /// A store failure: the disk's own is answered as such (`507 storage_full` when it is
    /// full, `503 storage_unavailable` on an I/O error, both with Retry-After: nothing of
    /// the write landed and it may be tried again), anything else as [`AppError::internal`].
    pub fn store(context: &str, e: &casegraph_engine::store::Error) -> AppError {
        use casegraph_engine::store::Error;
        let retry = crate::storage::RETRY_AFTER_SECS;
        match e {
            Error::Full { .. } => {
                tracing::error!("{context}: {e}");
                AppError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the box's disk is full: nothing was stored; try again once space is freed",
                )
                .retry_after(retry)
            }
            Error::Io { .. } => {
                tracing::error!("{context}: {e}");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the box's disk failed the write: nothing was stored; try again shortly",
                )
                .retry_after(retry)
            }
            _ => AppError::internal(context, e),
        }
    }

    /// A runner failure that is not the client's: the store's as [`AppError::store`],
    /// anything else as [`AppError::internal`].
    pub fn runner(context: &str, e: casegraph_engine::runner::Error) -> AppError {
        match &e {
            casegraph_engine::runner::Error::Store(s) => AppError::store(context, s),
            _ => AppError::internal(context, e),
        }
    }

    /// `500 internal` for an incident already logged under `incident`.
    pub fn incident(incident: &str) -> AppError {
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error (incident {incident}); the box's log has the details"),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "code": self.code,
            "message": self.message,
            "details": self.details,
        }});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> AppError {
        let (status, code) = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "bad_body"),
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than the box accepts".to_string()
            }
            // serde's messages name the field and what was expected; they hold no internals.
            _ => r.body_text(),
        };
        AppError::new(status, code, message)
    }
}

impl From<crate::auth::Error> for AppError {
    fn from(e: crate::auth::Error) -> AppError {
        use crate::auth::Error;
        match &e {
            Error::NameTaken(_) => AppError::new(StatusCode::CONFLICT, "name_taken", e.to_string()),
            Error::LastAdmin(_) => AppError::new(StatusCode::CONFLICT, "last_admin", e.to_string()),
            Error::InvalidName => {
                AppError::invalid(e.to_string()).details(json!({ "field": "name" }))
            }
            Error::CapabilityNotForRole { .. } => {
                AppError::invalid(e.to_string()).details(json!({ "field": "capabilities" }))
            }
            // The token file's path and the OS's words are for the log, not the client.
            _ => AppError::internal("token file", e),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

/// `axum::Json`, with rejections as [`AppError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(v))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "invalid_path", r.body_text())
    }
}

/// `axum::extract::Path`, with rejections as [`AppError`].
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(v))
    }
}

/// `axum::extract::Query`, with rejections as [`AppError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

/// Answer for unknown paths.
pub async fn not_found() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json",
    )
}

/// Answer for a known path with the wrong method.
pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// A refused publish: the one place its kinds become HTTP answers.
impl From<crate::library::Error> for AppError {
    fn from(e: crate::library::Error) -> AppError {
        use crate::library::Error;
        match e {
            Error::BadRequest(m) => AppError::invalid(m),
            Error::Invalid(d) => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "workflow_invalid",
                format!(
                    "the workflow does not compile: {} problem(s); nothing was published",
                    d.len()
                ),
            )
            .details(json!({ "diagnostics": d })),
            Error::FixturesFailed(f) => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "fixtures_failed",
                format!("{} fixture(s) failed; nothing was published", f.len()),
            )
            .details(json!({ "fixtures": f })),
            e @ Error::VersionNotNewer { .. } => {
                AppError::new(StatusCode::CONFLICT, "version_not_newer", e.to_string())
            }
            e @ (Error::Io(_) | Error::Panicked(_)) => AppError::internal("publish", e),
        }
    }
}
