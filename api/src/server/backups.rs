//! `/v1/backups`: configuration backups in the tenant's Git repository — devices, history,
//! the text at a revision, diffs, and the volatile-line patterns.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::ApiResult;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::backups::BackupSettings;

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "devices": state.runtime.backups(caller.tenant(Scope::Read)?)? }),
    ))
}

pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "device": device, "revisions": state.runtime.backup_history(caller.tenant(Scope::Read)?, &device)? }),
    ))
}

#[derive(Deserialize)]
pub struct At {
    at: Option<String>,
}

pub async fn text(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    Query(q): Query<At>,
) -> ApiResult<impl IntoResponse> {
    let text = state
        .runtime
        .backup_text(caller.tenant(Scope::Read)?, &device, q.at.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

#[derive(Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    Query(q): Query<Range>,
) -> ApiResult<impl IntoResponse> {
    let diff = state.runtime.backup_diff(
        caller.tenant(Scope::Read)?,
        &device,
        q.from.as_deref(),
        q.to.as_deref(),
    )?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], diff))
}

pub async fn get_settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        state.runtime.backup_settings(caller.tenant(Scope::Read)?)?
    )))
}

pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<BackupSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let Json(settings) = body.map_err(json_error)?;
    state
        .runtime
        .set_backup_settings(&tenant, settings.clone())?;
    Ok(Json(json!(settings)))
}
