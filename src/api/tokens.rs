//! `GET /v1/tokens`, `POST /v1/tokens`: token management by an admin while the box runs.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Caller, Json, blocking};
use crate::auth::{Role, TokenEntry};

/// A token to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub role: Role,
    /// Unique client name; defaults to the token id.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<String>,
}

/// A created token: `token` is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub entry: TokenEntry,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedToken), (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    caller.require(&[])?;
    if let Some(n) = &body.name
        && (n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err(AppError::invalid(
            "`name` must be 1–64 characters of letters, digits, `.`, `_` and `-`",
        ));
    }
    let tokens = state.tokens.clone();
    let by = caller.0.name.clone();
    let (entry, token) = blocking("token create", move || {
        tokens
            .create(body.role, body.name.as_deref())
            .map_err(|e| match e {
                crate::auth::Error::NameTaken(_) => {
                    AppError::new(StatusCode::CONFLICT, "name_taken", e.to_string())
                }
                other => AppError::internal("token create", other),
            })
    })
    .await?;
    tracing::info!(token = %entry.id, role = entry.role.as_str(), by = %by, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, entry })))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenEntry>), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenEntry>>, AppError> {
    caller.require(&[])?;
    Ok(Json(state.tokens.list()))
}
