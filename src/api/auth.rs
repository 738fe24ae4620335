//! The caller, from the `Authorization: Bearer <token>` header: `401` without a valid
//! token, `403` when the token's role may not do what is asked.

use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use serde_json::json;

use super::{AppError, AppState};
use crate::auth::{Principal, Role};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// `403` unless the caller has one of `roles` (admins may do everything).
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, AppError> {
        if self.0.role == Role::Admin || roles.contains(&self.0.role) {
            return Ok(&self.0);
        }
        let mut allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        allowed.push("admin");
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a `{}` token may not do this; it needs one of: {}",
                self.0.role.as_str(),
                allowed.join(", ")
            ),
        )
        .details(json!({ "role": self.0.role, "allowed": allowed })))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let unauthorized = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("send a token: `Authorization: Bearer <token>`"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        state
            .tokens
            .authenticate(token)
            .map(Caller)
            .ok_or_else(|| unauthorized("the token is not valid (unknown or revoked)"))
    }
}
