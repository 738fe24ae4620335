//! `POST /v1/events`: business events in CloudEvents 1.0 structured JSON mode
//! (`Content-Type: application/cloudevents+json` or `application/json`).
//!
//! Role: a submitter token with the `send_events` capability (or an admin). Limits: the
//! body is at most [`MAX_EVENT_BYTES`]; `id` and `source` at most 256 and 1024 characters;
//! `subject` a customer number; `data` a JSON value (no `data_base64`). Each attribute is
//! checked by name first, so a malformed event is answered `400`/`422` naming the attribute;
//! then `cloudevents-sdk` reads it. The answer `202 {"event_id", "cases"}` is sent only after
//! the event and the cases it starts are on disk (`Runner::accept_event`); the same
//! `(source, id)` again answers the same body and starts nothing; with another body it is
//! `409`. Hostile tests: `tests/hostile/events.rs`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use casegraph_engine::runner::{self, NewEvent};
use casegraph_engine::workflow::is_event_type;
use serde::Serialize;
use serde_json::{Value, json};

use super::{AppError, AppState, Caller, Json, blocking};
use crate::auth::{Capability, Role};

/// Largest event body accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
const MAX_ID: usize = 256;
const MAX_SOURCE: usize = 1024;

/// The event is stored; `cases` are the cases it started (possibly none).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventAcceptedBody {
    pub event_id: String,
    pub cases: Vec<String>,
}

/// A CloudEvents 1.0 event, structured JSON mode.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body for openapi.json; the handler reads JSON"
)]
pub struct EventBody {
    /// `1.0`.
    pub specversion: String,
    /// Unique per `source`; 1–256 characters.
    #[schema(max_length = 256)]
    pub id: String,
    /// The sending system, a URI reference (`crm`, `/warranty/service`).
    #[schema(max_length = 1024)]
    pub source: String,
    /// `warranty.expiring`, `delivery.confirmed`, `consent.changed`, …
    #[serde(rename = "type")]
    pub event_type: String,
    /// The customer number the event is about.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub subject: Option<String>,
    /// RFC 3339.
    pub time: Option<String>,
    /// `application/json` when given.
    pub datacontenttype: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
}

fn bad(status: StatusCode, attribute: &str, message: impl Into<String>) -> AppError {
    let code = if status == StatusCode::BAD_REQUEST {
        "malformed_event"
    } else {
        "invalid_event"
    };
    AppError::new(status, code, message).details(json!({ "attribute": attribute }))
}

/// Reads and checks the event, attribute by attribute.
fn parse(headers: &HeaderMap, body: &[u8], sent_by: &str) -> Result<NewEvent, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(media, "application/cloudevents+json" | "application/json") {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the event in CloudEvents structured mode: `Content-Type: application/cloudevents+json`",
        ));
    }
    if body.len() > MAX_EVENT_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("an event is at most {MAX_EVENT_BYTES} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the event is not JSON: {e}"),
        )
    })?;
    let Value::Object(map) = &value else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "(event)",
            "an event is a JSON object",
        ));
    };
    let text = |name: &str, max: usize| -> Result<Option<&str>, AppError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(Some(s)),
            Some(Value::String(_)) => Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                name,
                format!("`{name}` must be 1–{max} characters"),
            )),
            Some(_) => Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                name,
                format!("`{name}` must be a string"),
            )),
        }
    };
    let required = |name: &str, max: usize| -> Result<&str, AppError> {
        text(name, max)?.ok_or_else(|| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                name,
                format!("`{name}` is required"),
            )
        })
    };
    let spec = required("specversion", 16)?;
    if spec != "1.0" {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "specversion",
            format!("`specversion` must be \"1.0\", not {spec:?}"),
        ));
    }
    let id = required("id", MAX_ID)?.to_string();
    let source = required("source", MAX_SOURCE)?.to_string();
    let event_type = required("type", 128)?.to_string();
    if !is_event_type(&event_type) {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "type",
            "`type` must be 1–128 letters, digits, `.`, `_` and `-` (`warranty.expiring`)",
        ));
    }
    let subject = text("subject", 64)?.map(str::to_string);
    if let Some(s) = &subject
        && !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "subject",
            "`subject` must be a customer number: 1–64 letters, digits, `-`, `_` and `.`",
        ));
    }
    let time = match text("time", 64)? {
        None => None,
        Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "time",
                format!("`time` must be an RFC 3339 timestamp: {e}"),
            )
        })?),
    };
    if let Some(ct) = text("datacontenttype", 128)?
        && ct.split(';').next().map(str::trim) != Some("application/json")
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "datacontenttype",
            "`datacontenttype` must be `application/json`: the box reads `data` as JSON",
        ));
    }
    // The extension `replyto`: where the cases this event starts send their replies and
    // questions, checked like a request's `reply_to` (and, in `create`, against the box's
    // allowed hosts).
    let reply_to = text("replyto", 4096)?.map(str::to_string);
    if let Some(url) = &reply_to
        && let Err(e) = super::requests::limits::reply_to(url)
    {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "replyto",
            e.message.replace("`reply_to`", "`replyto`"),
        ));
    }
    if map.contains_key("data_base64") {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "data_base64",
            "binary `data_base64` is not accepted; send `data` as JSON",
        ));
    }
    // The SDK's own reading: whatever it refuses that the checks above let through (a
    // `source` that is not a URI reference, a malformed extension) is named by it.
    let event: cloudevents::Event = serde_json::from_value(value.clone()).map_err(|e| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "(event)",
            format!("not a CloudEvents 1.0 event: {e}"),
        )
    })?;
    let data = match event.data() {
        None => Value::Null,
        Some(cloudevents::Data::Json(v)) => v.clone(),
        Some(_) => {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "data",
                "`data` must be JSON",
            ));
        }
    };
    Ok(NewEvent {
        source,
        id,
        event_type,
        subject,
        time,
        data,
        reply_to,
        sent_by: sent_by.to_string(),
    })
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body(content = EventBody,
        content_type = "application/cloudevents+json"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Durable; the cases it started run", body = EventAcceptedBody),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<EventAcceptedBody>), AppError> {
    let who = caller.require(&[Role::Submitter])?.clone();
    if !who.may(Capability::SendEvents) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not send events; it needs the `send_events` capability",
        )
        .details(json!({ "capability": "send_events" })));
    }
    let event = parse(&headers, &body, &who.name)?;
    if let Some(url) = event.reply_to.clone() {
        super::requests::check_callable(&state, url, |why| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "replyto",
                format!("`replyto`: {why}; this box may not call it"),
            )
        })
        .await?;
    }
    let Ok(permit) = state.intake.clone().try_acquire_owned() else {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the box is storing as many requests as it can; try again shortly",
        )
        .retry_after(state.retry_after_secs));
    };
    let runner = state.runner.clone();
    let workers = state.workers.clone();
    let cases = state.cases.clone();
    let accepted = blocking("event", move || {
        let r = runner.accept_event(event);
        drop(permit);
        // Queued inside the blocking task, so a client that goes away after the commit
        // cannot leave a stored case unqueued. A case the queue has no place for runs here,
        // before the answer: the sender is slowed down, nothing is dropped.
        if let Ok(a) = &r
            && !a.duplicate
        {
            for id in &a.cases {
                match workers.admit() {
                    Some(slot) => slot.send(id.clone()),
                    None => {
                        cases.process(id);
                    }
                }
            }
        }
        r.map_err(|e| match e {
            runner::Error::EventReused { .. } => AppError::new(
                StatusCode::CONFLICT,
                "event_reused",
                "an event with this `source` and `id` was already accepted with a different body",
            )
            .details(json!({ "attribute": "id" })),
            runner::Error::InvalidEvent { attribute, message } => {
                bad(StatusCode::UNPROCESSABLE_ENTITY, &attribute, message)
            }
            runner::Error::InvalidConsent(message) => {
                bad(StatusCode::UNPROCESSABLE_ENTITY, "data", message)
            }
            other => AppError::runner("event", other),
        })
    })
    .await?;
    if !accepted.duplicate {
        tracing::info!(event = %accepted.event_id, by = %who.name, cases = accepted.cases.len(), "event accepted");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAcceptedBody {
            event_id: accepted.event_id,
            cases: accepted.cases,
        }),
    ))
}
