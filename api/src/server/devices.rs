//! `/v1/devices`: the tenant's inventory — CRUD, bulk import (YAML, JSON or CSV), the
//! interface-name table, and forgetting a pinned SSH host key.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::inventory::{Device, parse_import};

#[derive(Deserialize)]
pub struct Filter {
    tag: Option<String>,
    site: Option<String>,
    role: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<Filter>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let devices: Vec<Device> = state
        .blocking(move |rt| rt.devices(&tenant))
        .await?
        .into_iter()
        .filter(|d| f.tag.as_ref().is_none_or(|t| d.tags.contains(t)))
        .filter(|d| f.site.as_ref().is_none_or(|s| d.site.as_ref() == Some(s)))
        .filter(|d| f.role.as_ref().is_none_or(|r| d.role.as_ref() == Some(r)))
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let device = state.blocking(move |rt| rt.device(&tenant, &name)).await?;
    Ok(Json(json!(device)))
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<Device>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let Json(device) = body.map_err(json_error)?;
    if device.name != name {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("the body names `{}`, the path `{name}`", device.name),
        ));
    }
    let (stored, scopes) = (device.clone(), caller.scopes());
    let created = state
        .blocking(move |rt| rt.put_device(&tenant, stored, scopes))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(device))))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    state
        .blocking(move |rt| rt.delete_device(&tenant, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body is CSV with `Content-Type: text/csv`, else YAML or JSON (a list, or `{devices}`).
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: String,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let csv = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let devices =
        parse_import(&body, csv).map_err(|e| ApiError::bad_request("invalid_request", e))?;
    let total = devices.len();
    let scopes = caller.scopes();
    let created = state
        .blocking(move |rt| rt.import_devices(&tenant, devices, scopes))
        .await?;
    Ok(Json(
        json!({ "created": created, "updated": total - created }),
    ))
}

pub async fn interfaces(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let names: Vec<Value> = state
        .blocking(move |rt| rt.interface_names(&tenant, &name))
        .await?
        .into_iter()
        .map(|(index, name)| json!({ "index": index, "name": name }))
        .collect();
    Ok(Json(json!({ "interfaces": names })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceName {
    index: u32,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceNames {
    interfaces: Vec<InterfaceName>,
}

/// Replace a device's interface names by hand — for devices no SNMP collector polls. The
/// flow queries name `in_if`/`out_if` from this table.
pub async fn put_interfaces(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<InterfaceNames>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Inventory)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    let names = body
        .interfaces
        .into_iter()
        .map(|i| (i.index, i.name))
        .collect::<Vec<_>>();
    state
        .blocking(move |rt| rt.set_interface_names(&tenant, &name, &names))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn forget_host_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Secrets)?.to_string();
    state
        .blocking(move |rt| rt.forget_ssh_host_key(&tenant, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
