//! `/v1/alerts`: the alert intake — Alertmanager's webhook (`POST /v1/alerts/webhook`, payload
//! version 4) and a plain JSON list of alerts in the shape Alertmanager's own API takes
//! (`POST /v1/alerts`) — the tenant's alerts with the device each is about, the recorded
//! intakes, and the label mapping.
//!
//! Pushing needs `ingest` (a token that can do nothing else, not even read: it sits in an
//! Alertmanager's configuration as `http_config.authorization.credentials`); reading needs
//! `read`; the mapping is part of what a tenant deploys (`deploy`). An intake is answered 2xx
//! only once it is durable; a malformed one is a 400 naming what is wrong (Alertmanager does
//! not retry 4xx), a store failure a 5xx (it retries; redelivery changes nothing).

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::correlation::{AlertSettings, AlertStatus};

pub async fn webhook(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    ingest(state, caller, body, true).await
}

pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    ingest(state, caller, body, false).await
}

async fn ingest(
    state: AppState,
    caller: Caller,
    body: Bytes,
    webhook: bool,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Ingest)?.to_string();
    let outcome = state
        .runtime
        .ingest_alerts(&tenant, body.to_vec(), webhook)
        .await?;
    Ok(Json(json!(outcome)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    device: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let status = match q.status.as_deref() {
        None => None,
        Some("firing") => Some(AlertStatus::Firing),
        Some("resolved") => Some(AlertStatus::Resolved),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("status: `{other}` is not firing or resolved"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let alerts = state
        .blocking(move |rt| rt.alerts(&tenant, status, q.device.as_deref(), limit))
        .await?;
    Ok(Json(json!({ "alerts": alerts })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<usize>,
}

pub async fn intakes(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let limit = q.limit.unwrap_or(100).min(10_000);
    let intakes = state
        .blocking(move |rt| rt.alert_intakes(&tenant, limit))
        .await?;
    Ok(Json(json!({ "intakes": intakes })))
}

pub async fn get_settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let settings = state.blocking(move |rt| rt.alert_settings(&tenant)).await?;
    Ok(Json(json!(settings)))
}

pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<AlertSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(settings) = body.map_err(json_error)?;
    let saved = settings.clone();
    state
        .blocking(move |rt| rt.set_alert_settings(&tenant, &saved))
        .await?;
    Ok(Json(json!(settings)))
}

/// How the last push of the tenant's incidents to its Alertmanager went.
pub async fn outputs(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let [alertmanager, silences, webhook] =
        state.blocking(move |rt| rt.alert_outputs(&tenant)).await?;
    Ok(Json(
        json!({ "alertmanager": alertmanager, "silences": silences, "webhook": webhook }),
    ))
}
