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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    component: Option<String>,
    version: Option<u32>,
    /// The window: the last `since` (default 1h), or `from`..`to` in ms since the epoch.
    since: Option<sotp_runtime::units::HumanDuration>,
    from: Option<i64>,
    to: Option<i64>,
}

/// `POST /v1/incidents/replay?component=NAME&version=N[&since=1h]`: the recorded intakes of
/// the window through a stored, not activated policy version and through the active policy,
/// and how their decisions differ.
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ReplayQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let (Some(name), Some(version)) = (q.component, q.version) else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give the policy version to try: ?component=NAME&version=N (upload it with activate=false first)",
        ));
    };
    let now = sotp_runtime::now_ms();
    let to = q.to.unwrap_or(now);
    let from = match (q.from, q.since) {
        (Some(from), _) => from,
        (None, since) => to - since.map_or(3_600_000, |s| s.0.as_millis() as i64),
    };
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the window is empty: `from` must be before `to`",
        ));
    }
    let replay = state
        .runtime
        .replay_policy(&tenant, &name, version, (from, to))
        .await?;
    Ok(Json(json!(replay)))
}
