//! `/v1/incidents`: what correlation folded alerts into — list, one incident with its
//! timeline, root cause and suppressed children, acknowledge, resolve by hand. Reading needs
//! `read`; acknowledging and resolving, `deploy` (an operator acting on the tenant's alerting).

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    if let Some(s) = q.status.as_deref()
        && s != "open"
        && s != "resolved"
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("status: `{s}` is not open or resolved"),
        ));
    }
    let limit = q.limit.unwrap_or(100).min(10_000);
    let list = state
        .blocking(move |rt| rt.incidents(&tenant, q.status.as_deref(), limit))
        .await?;
    Ok(Json(json!({ "incidents": list })))
}

fn id(text: &str) -> ApiResult<i64> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no incident {text}")))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let id = id(&raw)?;
    let detail = state.blocking(move |rt| rt.incident(&tenant, id)).await?;
    Ok(Json(json!(detail)))
}

pub async fn acknowledge(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    set(state, caller, raw, false).await
}

pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    set(state, caller, raw, true).await
}

async fn set(
    state: AppState,
    caller: Caller,
    raw: String,
    resolve: bool,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let id = id(&raw)?;
    let by = match caller.principal {
        sotp_runtime::Principal::Admin => "the platform admin",
        sotp_runtime::Principal::Tenant { .. } => "a tenant token",
    }
    .to_string();
    let detail = state
        .blocking(move |rt| rt.set_incident(&tenant, id, resolve, &by))
        .await?;
    Ok(Json(json!(detail)))
}
