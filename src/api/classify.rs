//! `POST /v1/classify`: what the intent model says about a text, without creating a case.

use axum::extract::State;
use casegraph_engine::intake::{Received, Request};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::requests::{Channel, Language};
use super::{AppError, AppState, Caller, Json, blocking};
use crate::auth::Role;

/// A text to classify.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyBody {
    /// Not blank.
    #[schema(max_length = 20000, pattern = "\\S")]
    pub text: String,
    pub language: Option<Language>,
    pub channel: Option<Channel>,
    /// A stated `intent` (and `confidence`) is answered as given, without the model.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[utoipa::path(post, path = "/v1/classify", tag = "classify", request_body = ClassifyBody,
    security(("bearer" = [])),
    responses((status = 200, description = "intent, confidence, top, out_of_scope, model; from a model with sentiment and frustration heads also `sentiment` (schema Sentiment) and `frustration` (schema Frustration)", body = Object),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
        (status = 503, description = "`limits.max_classify` classifications and dry runs are running (`busy`, with Retry-After), or the model failed (`classifier_unavailable`)", body = super::error::ErrorBody)))]
pub async fn classify(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ClassifyBody>,
) -> Result<Json<Value>, AppError> {
    caller.require(&[Role::Author, Role::Reviewer])?;
    if body.text.chars().count() > 20_000 {
        return Err(AppError::invalid("`text` is longer than 20000 characters"));
    }
    if body.text.trim().is_empty() {
        return Err(AppError::invalid("`text` must not be blank"));
    }
    // The intake's bound: context, not a second request.
    if let Some(m) = &body.metadata {
        super::requests::limits::metadata(m)?;
    }
    let mut request = Request::text(body.channel.unwrap_or(Channel::Chat), body.text);
    // absent: the classifier reports the language it detects
    request.language = body.language.map(|l| l.code().to_string());
    request.metadata = body.metadata;
    let classifier = state.classifier.clone();
    let call = state.admit_model_call()?;
    blocking("classify", move || {
        let _call = call;
        let received = Received::new(request);
        let answer = classifier.classify(&received);
        answer.map(|c| Json(c.to_json())).map_err(|e| {
            tracing::warn!("classification failed: {e}");
            AppError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "classifier_unavailable",
                "the intent model could not classify the text",
            )
        })
    })
    .await
}
