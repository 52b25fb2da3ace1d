//! `/v1/tenants` (admin) and `/v1/tokens`.

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::{ApiError, ApiResult};
use super::query::parse_duration;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::units::ByteSize;
use sotp_runtime::{Scope, Scopes, TenantSpec, TokenRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
    name: Option<String>,
    max_components: Option<u32>,
    max_memory: Option<ByteSize>,
    max_series: Option<u64>,
    max_instances: Option<u32>,
    max_concurrent_calls: Option<u32>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_admin()?;
    let Json(body) = body.map_err(json_error)?;
    let spec = TenantSpec {
        name: body.name,
        max_components: body.max_components,
        max_memory: body.max_memory.map(|m| m.0),
        max_series: body.max_series,
        max_instances: body.max_instances,
        max_concurrent_calls: body.max_concurrent_calls,
    };
    let (tenant, token) = state
        .blocking(move |rt| rt.create_tenant(&body.id, spec))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "tenant": tenant, "token": token })),
    ))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let tenants = state.blocking(|rt| rt.tenants()).await?;
    Ok(Json(json!({ "tenants": tenants })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    tenant_view(&state, &id)
}

/// `GET /v1/tenant`: the caller's own tenant, its quotas and what it uses of them.
pub async fn own(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let id = caller.tenant(Scope::Read)?.to_string();
    tenant_view(&state, &id)
}

fn tenant_view(state: &AppState, id: &str) -> ApiResult<Json<Value>> {
    let tenant = state.runtime.tenant(id)?;
    let usage = state.runtime.usage(id)?;
    let mut view = json!(tenant);
    view["usage"] = json!(usage);
    Ok(Json(view))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.runtime.delete_tenant(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Admin only: the tenant the token is for; absent = another admin token.
    tenant: Option<String>,
    name: Option<String>,
    /// read, deploy, inventory, secrets, admin, ingest, rum. Default: the creator's own scopes (all of
    /// them for the platform admin). A tenant token cannot hand out more than it has.
    scopes: Option<Vec<String>>,
    /// How long the token works (`90d`, `12h`); absent: until revoked.
    expires_in: Option<String>,
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !caller.is_admin() {
        caller.tenant(Scope::Admin)?;
    }
    let Json(body) = body.map_err(json_error)?;
    let tenant = if caller.is_admin() {
        body.tenant
    } else {
        let own = caller.tenant(Scope::Admin)?.to_string();
        if body.tenant.as_ref().is_some_and(|t| *t != own) {
            return Err(ApiError::forbidden(
                "a tenant token can only create tokens for its own tenant",
            ));
        }
        Some(own)
    };
    let scopes = match &body.scopes {
        Some(list) => Scopes::parse_list(list)
            .map_err(|e| ApiError::bad_request("invalid_request", format!("scopes: {e}")))?,
        None => caller.scopes(),
    };
    if tenant.is_none() && body.scopes.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "scopes: platform admin tokens are not scoped; give `tenant` for a scoped token",
        ));
    }
    if !caller.scopes().covers(scopes) {
        return Err(ApiError::forbidden(format!(
            "a token with scopes {} cannot create one with {}",
            caller.scopes().to_text(),
            scopes.to_text()
        )));
    }
    let expires_ms = body
        .expires_in
        .as_deref()
        .map(|text| {
            parse_duration(text)
                .map(|d| sotp_runtime::now_ms().saturating_add(d.as_millis() as i64))
                .map_err(|e| ApiError::bad_request("invalid_request", format!("expires_in: {e}")))
        })
        .transpose()?;
    // A token cannot outlive the one that made it.
    let expires_ms = match (expires_ms, caller.expires_ms) {
        (Some(asked), Some(own)) => Some(asked.min(own)),
        (None, own) => own,
        (asked, None) => asked,
    };
    let request = TokenRequest {
        name: body.name.unwrap_or_else(|| "api".to_string()),
        scopes,
        expires_ms,
    };
    let token = state
        .blocking(move |rt| rt.issue_token(tenant.as_deref(), request))
        .await?;
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
        Some(caller.tenant(Scope::Read)?.to_string())
    };
    let tokens = state
        .blocking(move |rt| rt.tokens(tenant.as_deref()))
        .await?;
    Ok(Json(json!({ "tokens": tokens })))
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
        Some(caller.tenant(Scope::Admin)?.to_string())
    };
    state
        .blocking(move |rt| rt.revoke_token(tenant.as_deref(), &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
