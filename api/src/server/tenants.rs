//! `/v1/tenants` (admin) and `/v1/tokens`.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::units::ByteSize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
    name: Option<String>,
    max_components: Option<u32>,
    max_memory: Option<ByteSize>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let Json(body) = body.map_err(json_error)?;
    let (tenant, token) = state.runtime.create_tenant(
        &body.id,
        body.name.as_deref(),
        body.max_components,
        body.max_memory.map(|m| m.0),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "tenant": tenant, "token": token })),
    ))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(json!({ "tenants": state.runtime.tenants()? })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(json!(state.runtime.tenant(&id)?)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.runtime.delete_tenant(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Admin only: the tenant the token is for; absent = another admin token.
    tenant: Option<String>,
    name: Option<String>,
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(json_error)?;
    let name = body.name.as_deref().unwrap_or("api");
    let tenant = if caller.is_admin() {
        body.tenant
    } else {
        let own = caller.tenant()?.to_string();
        if body.tenant.as_ref().is_some_and(|t| *t != own) {
            return Err(ApiError::forbidden(
                "a tenant token can only create tokens for its own tenant",
            ));
        }
        Some(own)
    };
    let token = state.runtime.issue_token(tenant.as_deref(), name)?;
    Ok((StatusCode::CREATED, Json(json!(token))))
}

#[derive(Deserialize)]
pub struct TokenFilter {
    tenant: Option<String>,
}

pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Query(filter): Query<TokenFilter>,
) -> ApiResult<Json<Value>> {
    let tenant = if caller.is_admin() {
        filter.tenant
    } else {
        Some(caller.tenant()?.to_string())
    };
    Ok(Json(
        json!({ "tokens": state.runtime.tokens(tenant.as_deref())? }),
    ))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(filter): Query<TokenFilter>,
) -> ApiResult<StatusCode> {
    let tenant = if caller.is_admin() {
        filter.tenant
    } else {
        Some(caller.tenant()?.to_string())
    };
    state.runtime.revoke_token(tenant.as_deref(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}
