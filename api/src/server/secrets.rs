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

/// `GET /v1/secret-providers`: where the tenant's provider-held secrets come from (names of
/// the built-in secrets holding the providers' credentials, never values).
pub async fn get_providers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let settings = state
        .blocking(move |rt| rt.secret_providers(&tenant))
        .await?;
    Ok(Json(json!(settings)))
}

/// `PUT /v1/secret-providers`: set them (`secrets` scope: they decide where secret values
/// come from).
pub async fn put_providers(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<
        Json<sotp_runtime::secret_providers::ProviderSettings>,
        axum::extract::rejection::JsonRejection,
    >,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Secrets)?.to_string();
    let Json(settings) = body.map_err(json_error)?;
    let saved = settings.clone();
    state
        .blocking(move |rt| rt.set_secret_providers(&tenant, &settings))
        .await?;
    Ok(Json(json!(saved)))
}
