//! `/v1/components`: upload (multipart `manifest` + `wasm`), list, show, activate, roll back,
//! delete, logs, and pushing a message to `on-message`.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;

#[derive(Deserialize)]
pub struct UploadParams {
    /// Activate the new version right away (default true).
    activate: Option<bool>,
}

pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<UploadParams>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Read (or discard) the body before refusing a token without the scope, so the client,
    // still sending, gets the answer rather than a reset connection.
    let allowed = caller.tenant(Scope::Deploy).map(str::to_string);
    let limit = state.runtime.config.limits.max_upload.0;
    let (parts, body) = request.into_parts();
    let body = read_capped(body, limit + super::MULTIPART_SLACK).await;
    let tenant = allowed?;
    let body = body?;
    let multipart = Multipart::from_request(Request::from_parts(parts, Body::from(body)), &())
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "expected a multipart/form-data body with `manifest` and `wasm` parts: {e}"
                ),
            )
        })?;
    let (manifest, wasm) = read_parts(multipart, limit).await?;
    let outcome = state
        .runtime
        .upload(
            &tenant,
            &manifest,
            &wasm,
            params.activate.unwrap_or(true),
            caller.scopes(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(outcome))))
}

/// Read the request body up to `cap` bytes. Past the cap the rest is read and discarded (up
/// to a hard stop) before answering 413, so the client, still sending, gets the answer
/// instead of a reset connection.
async fn read_capped(body: Body, cap: u64) -> ApiResult<bytes::Bytes> {
    let mut stream = body.into_data_stream();
    let mut kept = bytes::BytesMut::new();
    let mut total: u64 = 0;
    let hard_stop = cap.saturating_mul(8).max(64 << 20);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("invalid_request", format!("reading the upload failed: {e}"))
        })?;
        total += chunk.len() as u64;
        if total <= cap {
            kept.extend_from_slice(&chunk);
        } else if total > hard_stop {
            break;
        }
    }
    if total > cap {
        return Err(ApiError::too_large(format!(
            "the upload is over the limit of {} (runtime.limits.max_upload plus {} of multipart framing)",
            sotp_runtime::units::ByteSize(cap - super::MULTIPART_SLACK),
            sotp_runtime::units::ByteSize(super::MULTIPART_SLACK)
        )));
    }
    Ok(kept.freeze())
}

async fn read_parts(mut multipart: Multipart, limit: u64) -> ApiResult<(String, bytes::Bytes)> {
    let mut manifest: Option<String> = None;
    let mut wasm: Option<bytes::Bytes> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
        match name.as_str() {
            "manifest" => {
                manifest = Some(String::from_utf8(data.to_vec()).map_err(|_| {
                    ApiError::bad_request("invalid_manifest", "the manifest is not UTF-8 text")
                })?)
            }
            "wasm" => wasm = Some(data),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "unexpected part `{other}`: send `manifest` (TOML) and `wasm` (the component)"
                    ),
                ));
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        ApiError::bad_request("invalid_manifest", "the `manifest` part (TOML) is missing")
    })?;
    let wasm = wasm.ok_or_else(|| {
        ApiError::bad_request(
            "not_wasm",
            "the `wasm` part (the component binary) is missing",
        )
    })?;
    if wasm.len() as u64 > limit {
        return Err(ApiError::too_large(format!(
            "the component is {} bytes, over the limit of {limit} bytes (runtime.limits.max_upload)",
            wasm.len()
        )));
    }
    Ok((manifest, wasm))
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("the upload is over the limit of {limit} bytes"))
    } else {
        ApiError::bad_request(
            "invalid_request",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let components = state
        .blocking(move |rt| rt.list_components(&tenant))
        .await?;
    Ok(Json(json!({ "components": components })))
}

#[derive(Deserialize)]
pub struct ShowParams {
    log_lines: Option<usize>,
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<ShowParams>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let lines = p.log_lines.unwrap_or(20).min(500);
    let view = state
        .blocking(move |rt| rt.component(&tenant, &name, lines))
        .await?;
    Ok(Json(json!(view)))
}

pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let view = state
        .blocking(move |rt| rt.component(&tenant, &name, 0))
        .await?;
    Ok(Json(
        json!({ "versions": view.versions, "active_version": view.active_version }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    version: Option<u32>,
}

pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<VersionBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    let version = body
        .version
        .ok_or_else(|| ApiError::bad_request("invalid_request", "body must be {\"version\": N}"))?;
    let outcome = state.runtime.activate(&tenant, &name, version).await?;
    Ok(Json(json!(outcome)))
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<Json<VersionBody>>,
) -> ApiResult<Json<Value>> {
    let to = body.and_then(|Json(b)| b.version);
    let outcome = state
        .runtime
        .rollback(caller.tenant(Scope::Deploy)?, &name, to)
        .await?;
    Ok(Json(json!(outcome)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    state
        .blocking(move |rt| rt.delete_component(&tenant, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct LogParams {
    lines: Option<usize>,
}

pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<LogParams>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let count = p.lines.unwrap_or(100).min(500);
    let lines = state
        .blocking(move |rt| rt.component_log(&tenant, &name, count))
        .await?;
    Ok(Json(json!({ "lines": lines })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    topic: String,
    /// UTF-8 payload.
    payload: Option<String>,
    /// Binary payload, base64.
    payload_base64: Option<String>,
}

pub async fn message(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<MessageBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    let payload = match (body.payload, body.payload_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                ApiError::bad_request("invalid_request", format!("payload_base64: {e}"))
            })?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of `payload` and `payload_base64`",
            ));
        }
    };
    state
        .runtime
        .deliver(&tenant, &name, body.topic, payload)
        .await?;
    Ok(Json(json!({ "delivered": true })))
}

pub fn json_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::bad_request(
        "invalid_request",
        format!("bad JSON body: {}", e.body_text()),
    )
}
