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
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let devices = state.blocking(move |rt| rt.backups(&tenant)).await?;
    Ok(Json(json!({ "devices": devices })))
}

pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let name = device.clone();
    let revisions = state
        .blocking(move |rt| rt.backup_history(&tenant, &name))
        .await?;
    Ok(Json(json!({ "device": device, "revisions": revisions })))
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
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let text = state
        .blocking(move |rt| rt.backup_text(&tenant, &device, q.at.as_deref()))
        .await?;
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
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let diff = state
        .blocking(move |rt| rt.backup_diff(&tenant, &device, q.from.as_deref(), q.to.as_deref()))
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], diff))
}

/// `PUT /v1/backups/{device}/text`: a configuration collected elsewhere becomes the device's
/// newest backup (a commit only if it changed), ready for the next audit.
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Path(device): Path<String>,
    body: String,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let name = device.clone();
    let saved = state
        .blocking(move |rt| rt.import_backup(&tenant, &name, &body))
        .await?;
    Ok(Json(
        json!({ "device": device, "changed": saved.changed, "commit": saved.commit }),
    ))
}

pub async fn get_settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let settings = state
        .blocking(move |rt| rt.backup_settings(&tenant))
        .await?;
    Ok(Json(json!(settings)))
}

pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<BackupSettings>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let Json(settings) = body.map_err(json_error)?;
    let saved = settings.clone();
    state
        .blocking(move |rt| rt.set_backup_settings(&tenant, saved))
        .await?;
    Ok(Json(json!(settings)))
}
