//! `GET /v1/console/me`: the token's name and role, so the console shows what it may do.
//! Any valid token; no input beyond it.

use super::super::{Caller, Json};
use crate::auth::Role;

/// Who the token belongs to.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The token's name.
    pub name: String,
    pub role: Role,
}

#[utoipa::path(get, path = "/v1/console/me", tag = "console", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = super::super::error::ErrorBody)))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        name: caller.0.name,
        role: caller.0.role,
    })
}
