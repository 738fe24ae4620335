//! `POST /v1/requests`: intake. The answer `202` is sent only after the runner's `accept`
//! returned, i.e. after the case is on disk; then the case is queued for a worker.

use std::time::Instant;

use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode};
use casegraph_engine::classify;
use casegraph_engine::intake::Request;
use casegraph_engine::runner::{self, NewRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{AppError, AppState, Caller, Json, blocking};
use crate::auth::{Capability, Role};

pub mod limits;

/// The engine's channel: one type from the HTTP body to the stored case.
pub use casegraph_engine::intake::Channel;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    De,
    En,
}

impl Language {
    /// The ISO 639-1 code, as requests carry it.
    pub fn code(self) -> &'static str {
        match self {
            Language::De => "de",
            Language::En => "en",
        }
    }
}

/// Whether this box may call `url` (its host and port listed in `webhooks.allowed_hosts`,
/// resolving to addresses the box may connect to): the notifier's check, a DNS lookup, on
/// the blocking pool. A refusal becomes `refused(why)`. A request's `reply_to` and an
/// event's `replyto` both go through it.
pub(super) async fn check_callable(
    state: &AppState,
    url: String,
    refused: impl FnOnce(String) -> AppError + Send + 'static,
) -> Result<(), AppError> {
    let notifier = state.notifier.clone();
    blocking("reply_to check", move || {
        notifier.check(&url).map_err(|why| refused(why.to_string()))
    })
    .await
}

/// A customer's request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub channel: Channel,
    /// Required for letters and chats; a form needs `text` or `fields`.
    #[schema(max_length = 20000, pattern = "\\S")]
    pub text: Option<String>,
    /// Form fields.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// The bank's customer number, when known.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub customer_id: Option<String>,
    /// Detected from the text when not given (`en` when the text says too little).
    pub language: Option<Language>,
    /// URL notified when the case ends; its host and port must be in
    /// `webhooks.allowed_hosts` and resolve to addresses the box may call.
    pub reply_to: Option<String>,
    /// The case reference (`CG-7K3F-9Q2D`) of a question this request answers. A request
    /// whose `in_reply_to` or text quotes the reference of a live case of the same
    /// submitter and customer goes to that case as a message (`attached: true`); one of a
    /// finished case starts a new case linked to it.
    #[schema(max_length = 64)]
    pub in_reply_to: Option<String>,
    /// Free-form context from the sending system. A known `intent` (and `confidence`)
    /// decides the classification only for tokens with the `state_intent` capability;
    /// from others it is kept as `intent_hint` and the model decides.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// The request was stored; the case will run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedBody {
    pub case_id: String,
    /// Always `accepted`: the case is durable. Follow `links.case` for its progress.
    pub status: String,
    /// The idempotency key was used before with the same body: this is that case.
    pub duplicate: bool,
    /// The request quoted the reference of a live case of this submitter and customer and
    /// went to it as a message (`message_id`) instead of starting a new case.
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[schema(value_type = Object)]
    pub links: Value,
}

impl RequestBody {
    /// The request's own rules (what a schema cannot say): text where the channel needs
    /// it, the bounds of [`limits`] on text, fields, metadata and `reply_to`, the customer
    /// number's shape. The same rules hold for `casegraph run` input.
    pub fn validate(&self) -> Result<(), AppError> {
        let bad = |field: &str, message: String| {
            AppError::invalid(message).details(json!({ "field": field }))
        };
        let text = self.text.as_deref().unwrap_or("");
        let has_text = !text.trim().is_empty();
        match self.channel {
            Channel::Letter | Channel::Chat if !has_text => {
                return Err(bad(
                    "text",
                    "`text` is required (and must not be blank) for letters and chats".into(),
                ));
            }
            Channel::Form if !has_text && self.fields.is_empty() => {
                return Err(bad("text", "a form needs `text` or `fields`".into()));
            }
            _ => {}
        }
        limits::text_and_fields(text, &self.fields)?;
        if let Some(m) = &self.metadata {
            limits::metadata(m)?;
        }
        if let Some(c) = &self.customer_id
            && (c.is_empty()
                || c.len() > 64
                || !c
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(bad(
                "customer_id",
                "`customer_id` must be 1–64 characters of letters, digits, `-`, `_` and `.`".into(),
            ));
        }
        if let Some(url) = &self.reply_to {
            limits::reply_to(url)?;
        }
        if let Some(r) = &self.in_reply_to
            && (r.is_empty() || r.len() > 64)
        {
            return Err(bad(
                "in_reply_to",
                "`in_reply_to` must be a case reference such as CG-7K3F-9Q2D (1–64 characters)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// [`RequestBody::validate`], and `reply_to` names a host and port this box may call,
    /// resolving to addresses it may connect to (a DNS lookup, on the blocking pool).
    async fn check(&self, state: &AppState) -> Result<(), AppError> {
        self.validate()?;
        if let Some(url) = self.reply_to.clone() {
            check_callable(state, url, |why| {
                AppError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "reply_to_not_allowed",
                    format!("{why}; this box may not call it"),
                )
                .details(json!({ "field": "reply_to" }))
            })
            .await?;
        }
        Ok(())
    }

    /// The request as workflows see it (`case.request`), in the language stated, or the
    /// one the customer wrote in: detected from what the intake keeps of the request (a
    /// letter's body without its address blocks, a chat's customer turns, a form's text
    /// and labelled values), as the model reads it.
    pub fn normalized(&self) -> Request {
        let mut request = Request {
            channel: self.channel,
            language: None,
            text: self.text.clone(),
            fields: self.fields.clone(),
            customer_id: self.customer_id.clone(),
            reply_to: self.reply_to.clone(),
            in_reply_to: self.in_reply_to.clone(),
            metadata: self.metadata.clone(),
        };
        let language =
            self.language
                .unwrap_or_else(|| match request.normalize().language.as_str() {
                    "de" => Language::De,
                    _ => Language::En,
                });
        request.language = Some(language.code().to_string());
        request
    }
}

/// A stated `metadata.intent` becomes the case's classification, which the audit chain
/// keeps past erasure: it must be an intent label (the shape a reviewer's correction
/// has), and one the model or the routing policy knows, never free text that could hold a
/// personal datum. The value is not repeated in the answer.
fn stated_intent(state: &AppState, request: &Request) -> Result<(), AppError> {
    let Some(given) = request.metadata("intent").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let bad = |why: &str| {
        AppError::invalid(format!("`metadata.intent` {why}"))
            .details(json!({ "field": "metadata.intent" }))
    };
    let Some(label) = given.as_str().filter(|s| runner::is_intent_label(s)) else {
        return Err(bad(
            "must be an intent label: 1–64 ASCII letters, digits, `_`, `-` and `?`",
        ));
    };
    let known = match state.classifier.labels() {
        Some(labels) => {
            labels.iter().any(|l| l == label)
                || state.runner.catalog().intent_map().contains_key(label)
        }
        None => true,
    };
    if !known {
        return Err(bad(
            "is not an intent of the model or of the routing policy (see GET /v1/workflows)",
        ));
    }
    // A stated mood joins the stated intent in the audit chain: its shape is checked too.
    for signal in [classify::SENTIMENT, classify::FRUSTRATION] {
        if let Some(v) = request.metadata(signal).filter(|v| !v.is_null()) {
            classify::check_stated_signal(signal, v).map_err(|why| {
                AppError::invalid(format!("`metadata.{signal}`: {why}"))
                    .details(json!({ "field": format!("metadata.{signal}") }))
            })?;
        }
    }
    Ok(())
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 200 && k.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "`Idempotency-Key` must be 1–200 visible ASCII characters",
        )),
    }
}

#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = RequestBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[!-~]+$",
        description = "1–200 visible ASCII characters. Same key + same body answers the same case; same key + different body is 409")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Durable; the case runs", body = AcceptedBody),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<AcceptedBody>), AppError> {
    let who = caller.require(&[Role::Submitter])?.clone();
    let key = idempotency_key(&headers)?;
    // Back-pressure before anything is read or stored: a queue place for the case (held
    // for one up to `limits.queue_wait`), so a refusal costs the box no body to parse;
    // then a permit to write it.
    let slot = state.admit_case().await?;
    let Json(body) = Json::<RequestBody>::from_request(req, &state).await?;
    body.check(&state).await?;
    let mut request = body.normalized();
    // Only a token allowed to state a classification skips the model; for the others the
    // stated intent is a recorded hint (see `Request::demote_stated_intent`).
    if who.may(Capability::StateIntent) {
        stated_intent(&state, &request)?;
    } else {
        request.demote_stated_intent();
    }
    let Ok(permit) = state.intake.clone().try_acquire_owned() else {
        state
            .metrics
            .intake_rejected
            .get_or_create(&crate::metrics::StatusLabels {
                status: "503".into(),
            })
            .inc();
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the box is storing as many requests as it can; try again shortly",
        )
        .retry_after(state.retry_after_secs));
    };
    let runner = state.runner.clone();
    let started = Instant::now();
    // Keys are per client, so two systems cannot collide on the same key.
    let new = NewRequest {
        request,
        idempotency_key: key.map(|k| format!("{}:{k}", who.name)),
        submitted_by: Some(who.name.clone()),
    };
    // The request is prepared on a blocking thread, which does not wait for the sync: the
    // commit thread queues the case once it is durable, so a client that goes away (or a
    // timeout) after the commit cannot leave a stored case unqueued, and only then answers.
    let (answer, accepted) = tokio::sync::oneshot::channel();
    blocking("accept", move || {
        runner.accept_then(new, move |r| {
            drop(permit);
            if let Ok(a) = &r
                && a.run
            {
                slot.send(a.case_id.clone());
            }
            let _ = answer.send(r);
        });
        Ok(())
    })
    .await?;
    let accepted = accepted
        .await
        .map_err(|e| AppError::internal("accept", e))?
        .map_err(|e| match e {
            runner::Error::KeyReused { case_id, .. } => AppError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            )
            .details(json!({ "case_id": case_id })),
            other => AppError::runner("accept", other),
        })?;
    state
        .metrics
        .accept_duration
        .observe(started.elapsed().as_secs_f64());
    if !accepted.duplicate {
        tracing::info!(case = %accepted.case_id, by = %who.name,
            attached = accepted.message_id.is_some(), "request accepted");
    }
    let links = json!({ "case": format!("/v1/cases/{}", accepted.case_id) });
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedBody {
            case_id: accepted.case_id,
            status: "accepted".into(),
            duplicate: accepted.duplicate,
            attached: accepted.message_id.is_some(),
            message_id: accepted.message_id,
            links,
        }),
    ))
}
