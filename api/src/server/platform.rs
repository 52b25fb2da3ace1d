//! `/v1/platform/health`: SOTP watching itself (docs/PLATFORM.md) — the platform tenant's
//! built-in probes of SOTP's sign-in page and API, and the web UI's latency as its browsers
//! measured it. For the platform admin and the platform tenant's own tokens only.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use sotp_runtime::platform::Health;

pub async fn health(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Health>> {
    if !state.runtime.may_see_platform(&caller.principal) {
        return Err(ApiError::forbidden(
            "the platform's health is for the platform admin token and the platform tenant's tokens with the read scope",
        ));
    }
    Ok(Json(state.runtime.platform_health().await?))
}
