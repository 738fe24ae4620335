//! `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{id}`: token management by an
//! admin while the box runs. Every other role gets `403`, no token `401`.
//!
//! Limits: a name is 1–64 of `[A-Za-z0-9._-]` (`auth::check_name`); roles and capabilities
//! are closed enums (anything else is `422`); the last admin token cannot be revoked
//! (`409 last_admin`). Changes go through the locked token file that the CLI uses too, so a
//! token revoked by either is refused from the next request on. Hostile tests:
//! `tests/hostile/auth.rs`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Caller, Json, Path, blocking};
use crate::auth::{Capability, Role, TokenEntry};

/// A token to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub role: Role,
    /// Unique client name; defaults to the token id.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<String>,
    /// What the token may do beyond its role (submitter tokens): `state_intent` lets it
    /// state a request's classification in `metadata.intent`; `send_events` lets it post
    /// business events; `manage_consents` lets it record customers' consents.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
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
    let tokens = state.tokens.clone();
    let by = caller.0.name.clone();
    let (entry, token) = blocking("token create", move || {
        Ok(tokens.create_with(&crate::auth::NewToken {
            role: body.role,
            name: body.name.as_deref(),
            capabilities: &body.capabilities,
        })?)
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
    let tokens = state.tokens.clone();
    blocking("token list", move || Ok(Json(tokens.list()))).await
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "The token's id (`t-…`), as listed")),
    responses((status = 200, description = "Revoked; refused from the next request on", body = TokenEntry),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "`last_admin`: the box keeps one admin token", body = super::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenEntry>, AppError> {
    caller.require(&[])?;
    let tokens = state.tokens.clone();
    let by = caller.0.name.clone();
    let removed = blocking("token revoke", move || {
        tokens
            .revoke_id(&id)?
            .ok_or_else(|| AppError::not_found("token", &id))
    })
    .await?;
    tracing::info!(token = %removed.id, by = %by, "token revoked");
    Ok(Json(removed))
}
