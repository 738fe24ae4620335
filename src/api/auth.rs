//! The caller, from the `Authorization: Bearer <token>` header: `401` without a valid
//! token, `403` when the token's role may not do what is asked.

use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use serde_json::json;

use super::{AppError, AppState};
use crate::auth::{Principal, Role, Tokens};

/// What the [`Caller`] extractor needs of a server's state: the token file, and where a
/// failed attempt is counted. The box's API and the fleet hub's both authenticate so.
pub trait Authority {
    fn tokens(&self) -> &Tokens;
    fn auth_failed(&self);
}

impl Authority for AppState {
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    fn auth_failed(&self) {
        self.metrics.auth_failures.inc();
    }
}

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

/// Longest `Authorization` value looked at. A token is `cg_` and 48 hex digits; anything
/// much longer is refused before it is hashed or copied.
const MAX_AUTHORIZATION: usize = 256;

impl<S: Authority + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    /// Never echoes what was presented: a wrong token may be a right token of another box,
    /// pasted into the wrong place, and error bodies end up in client logs.
    ///
    /// Failed attempts are not slowed down per peer: a token has 192 random bits, so
    /// guessing is hopeless at any rate, and a per-address limit would lock out honest
    /// clients behind the same proxy. A failure costs one `stat` and one sha256.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let unauthorized = |m: &str| {
            state.auth_failed();
            AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("send a token: `Authorization: Bearer <token>`"))?;
        if value.len() > MAX_AUTHORIZATION {
            return Err(unauthorized(
                "the Authorization header is longer than any token",
            ));
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        // Inline on the async worker: one `stat` of the token file, and a read of a few KB
        // only after it changed, cost less than a hop to the blocking pool (which may be
        // queued behind store commits).
        state
            .tokens()
            .authenticate(token)
            .map(Caller)
            .ok_or_else(|| unauthorized("the token is not valid (unknown or revoked)"))
    }
}
