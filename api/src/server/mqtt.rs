//! `/v1/mqtt`: the tenant's broker (host, port, TLS, credentials from a secret) and the
//! state of SOTP's session with it.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::mqtt::MqttSettings;

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<MqttSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Admin)?.to_string();
    let Json(settings) = body.map_err(json_error)?;
    let status = state
        .blocking(move |rt| {
            rt.set_mqtt(&tenant, Some(settings))?;
            rt.mqtt_status(&tenant)
        })
        .await?;
    Ok(Json(json!(status)))
}

pub async fn get(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?;
    Ok(Json(json!(state.runtime.mqtt_status(tenant)?)))
}

pub async fn delete(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Admin)?.to_string();
    state.blocking(move |rt| rt.set_mqtt(&tenant, None)).await?;
    Ok(StatusCode::NO_CONTENT)
}
