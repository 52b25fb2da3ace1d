//! `/v1/secrets`: write-only secret values; listing shows names and update times only.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::ApiResult;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    value: String,
}

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<SecretBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Secrets)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    state
        .blocking(move |rt| rt.put_secret(&tenant, &name, &body.value))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let names: Vec<Value> = state
        .blocking(move |rt| rt.secret_names(&tenant))
        .await?
        .into_iter()
        .map(|(name, updated_ms)| json!({ "name": name, "updated_ms": updated_ms }))
        .collect();
    Ok(Json(json!({ "secrets": names })))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Secrets)?.to_string();
    state
        .blocking(move |rt| rt.delete_secret(&tenant, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
