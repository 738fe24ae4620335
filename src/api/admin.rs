//! `GET /v1/admin/settings`: the effective settings (admins only).

use axum::extract::State;
use serde_json::{Value, json};

use super::{AppError, AppState, Caller, Json};

/// The configuration after every layer, the firmware profile and how it fits this
/// machine, and resident memory against the budget.
#[utoipa::path(get, path = "/v1/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Effective settings", body = Object),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, AppError> {
    // Admins only: the settings describe the box (addresses, limits, hosts it may call).
    caller.require(&[])?;
    let mut v =
        serde_json::to_value(&*state.settings).map_err(|e| AppError::internal("settings", e))?;
    let m = &state.memory;
    v["memory"] = json!({
        "resident_bytes": m.resident(),
        "budget_bytes": m.budget(),
        "shedding": m.over(),
        "shed_requests": m.sheds(),
    });
    Ok(Json(v))
}
