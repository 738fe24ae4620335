//! `POST /v1/cases/{id}/messages`: the customer's message to a case (an answer to its
//! question, or anything else they write while it runs), on any channel.
//!
//! Who may post: the submitter that posted the case and admins; everyone else gets `404`,
//! as for the case itself, so case ids do not leak. The message is durable before the
//! `202` (`runner::Runner::post_message`); with `Idempotency-Key` a retry answers the same
//! message. A case waiting for an answer is queued to the workers; any other live case
//! keeps the message for its next question and shows it to the reviewer; a finished case
//! answers `409 case_finished`.

use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode};
use casegraph_engine::intake::Channel;
use casegraph_engine::runner::{self, NewMessage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::requests::{Language, idempotency_key, limits};
use super::{AppError, AppState, Caller, Json, Path, blocking};
use crate::auth::Role;

/// A customer's message to a case.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The channel the message came on.
    pub channel: Channel,
    /// What the customer wrote (an OCR'd letter, a chat turn, a form's free text).
    #[schema(max_length = 20000)]
    pub text: String,
    /// Form fields sent with the message.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Detected from the text when not given.
    pub language: Option<Language>,
}

/// The message is stored on the case.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostedBody {
    pub message_id: String,
    pub case_id: String,
    /// The case's status after the message was stored: `running` when it was the answer
    /// the case waited for, else what the case was doing.
    pub status: String,
    /// The idempotency key was used before with the same body: this is that message.
    pub duplicate: bool,
}

#[utoipa::path(post, path = "/v1/cases/{id}/messages", tag = "cases", request_body = MessageBody,
    params(("id" = String, Path, description = "Case id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[!-~]+$",
        description = "Same key + same body answers the same message; same key + different body is 409")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Durable; stored on the case", body = PostedBody),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<PostedBody>), AppError> {
    let who = caller.require(&[Role::Submitter])?.clone();
    let key = idempotency_key(&headers)?;
    // As intake does: a queue place before the body is read, held up to `limits.queue_wait`.
    let slot = state.admit_case().await?;
    let Json(body) = Json::<MessageBody>::from_request(req, &state).await?;
    if body.text.trim().is_empty() && body.fields.is_empty() {
        return Err(AppError::invalid("a message needs `text` or `fields`")
            .details(json!({ "field": "text" })));
    }
    limits::text_and_fields(&body.text, &body.fields)?;
    let runner = state.runner.clone();
    let admin = who.role == Role::Admin;
    let name = who.name.clone();
    let language = body
        .language
        .map(|l| l.code().to_string())
        .or_else(|| detected(body.channel, &body.text));
    let new = NewMessage {
        channel: body.channel,
        text: body.text,
        fields: body.fields,
        language,
        idempotency_key: key.map(|k| format!("{name}:{k}")),
        by: Some(name.clone()),
        via: "api",
    };
    let lookup = id.clone();
    let posted = blocking("post message", move || {
        // Only the case's submitter (and admins) may write to it; others learn nothing.
        let own = runner
            .case(&lookup)
            .map_err(|e| AppError::runner("case read", e))?
            .is_some_and(|(rec, _)| admin || rec.submitted_by.as_deref() == Some(name.as_str()));
        if !own {
            return Err(AppError::not_found("case", &lookup));
        }
        let posted = runner.post_message(&lookup, new).map_err(|e| match e {
            runner::Error::NoCase(_) => AppError::not_found("case", &lookup),
            runner::Error::CaseFinished { status, .. } => AppError::new(
                StatusCode::CONFLICT,
                "case_finished",
                format!(
                    "the case has ended ({}); send the message as a new request (it may quote the case reference)",
                    status.as_str()
                ),
            )
            .details(json!({ "case_id": lookup, "status": status.as_str() })),
            runner::Error::TooManyMessages { limit, .. } => AppError::new(
                StatusCode::CONFLICT,
                "too_many_messages",
                format!("the case already holds {limit} messages from the customer"),
            )
            .details(json!({ "case_id": lookup, "limit": limit })),
            runner::Error::KeyReused { .. } => AppError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different message",
            ),
            other => AppError::runner("post message", other),
        })?;
        if posted.triggered {
            slot.send(posted.case_id.clone());
        }
        Ok(posted)
    })
    .await?;
    tracing::info!(case = %posted.case_id, message = %posted.message_id, by = %who.name,
        answer = posted.triggered, "message accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(PostedBody {
            message_id: posted.message_id,
            case_id: posted.case_id,
            status: posted.status.as_str().into(),
            duplicate: posted.duplicate,
        }),
    ))
}

/// The language the intake reads in the text, when it reads one.
fn detected(channel: Channel, text: &str) -> Option<String> {
    let request = casegraph_engine::intake::Request::text(channel, text);
    match request.normalize().language.as_str() {
        "de" => Some("de".into()),
        "en" => Some("en".into()),
        _ => None,
    }
}
