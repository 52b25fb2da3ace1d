//! Operational endpoints: liveness, readiness, the runtime's metrics and the OpenAPI document.

use super::AppState;
use super::auth::Caller;
use super::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.runtime.is_ready() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting", "detail": "restoring components" })),
        )
    }
}

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every series, labelled by tenant: the platform admin token only (Prometheus sends it with
/// `authorization: {credentials: ...}`), or the operator listener (`server.metrics_listen`).
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    Ok(operator_metrics(State(state)).await)
}

/// The operator view without authentication, for `server.metrics_listen` only.
pub async fn operator_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text =
        sotp_runtime::metrics::render(&state.runtime, sotp_runtime::metrics::View::Operator);
    text.push_str(&format!(
        "# HELP sotp_ui_sessions Web UI sign-in sessions held (at most {}).\n# TYPE sotp_ui_sessions gauge\nsotp_ui_sessions {}\n",
        super::ui::MAX_SESSIONS,
        state.sessions.len()
    ));
    ([(header::CONTENT_TYPE, METRICS_TYPE)], text)
}

/// `/v1/metrics`: the caller's tenant's series only (its components and flows).
pub async fn tenant_metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let tenant = caller.tenant(sotp_runtime::Scope::Read)?;
    let text =
        sotp_runtime::metrics::render(&state.runtime, sotp_runtime::metrics::View::Tenant(tenant));
    Ok(([(header::CONTENT_TYPE, METRICS_TYPE)], text))
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
