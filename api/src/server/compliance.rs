//! `/v1/compliance`: golden-config rule files (versioned: upload, activate, roll back),
//! waivers, audits (run, progress, reports as JSON or CSV, the trend) and dry runs.
//!
//! Reading needs `read`; changing rules and waivers, running audits and dry runs needs
//! `deploy` (what a tenant's rules check is part of what it deploys).

use super::AppState;
use super::auth::Caller;
use super::components::json_error;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::compliance::{Draft, Schedule, audit::to_csv};

fn utf8(body: Bytes) -> ApiResult<String> {
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_request", "the rule file is not UTF-8 text"))
}

pub async fn files(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let files = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.files(&tenant)?))
        .await?;
    Ok(Json(json!({ "files": files })))
}

#[derive(Deserialize)]
pub struct PutQuery {
    #[serde(default)]
    activate: bool,
}

pub async fn put_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    Query(q): Query<PutQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let text = utf8(body)?;
    let uploaded = state
        .blocking(move |rt| {
            Ok(rt
                .compliance(&tenant)?
                .put_rules(&tenant, &file, &text, q.activate)?)
        })
        .await?;
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(uploaded))).into_response())
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<u32>,
}

pub async fn get_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let (version, text) = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.text(&tenant, &file, q.version)?))
        .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/yaml; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-sotp-version"),
                version.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

pub async fn delete_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.delete_file(&tenant, &file)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let name = file.clone();
    let versions = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.versions(&tenant, &name)?))
        .await?;
    Ok(Json(json!({ "file": file, "versions": versions })))
}

#[derive(Deserialize)]
pub struct ActivateBody {
    version: u32,
}

pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    body: Result<Json<ActivateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    let name = file.clone();
    state
        .blocking(move |rt| {
            Ok(rt
                .compliance(&tenant)?
                .activate(&tenant, &name, body.version)?)
        })
        .await?;
    Ok(Json(
        json!({ "file": file, "active_version": body.version }),
    ))
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let name = file.clone();
    let version = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.rollback(&tenant, &name)?))
        .await?;
    Ok(Json(json!({ "file": file, "active_version": version })))
}

/// A draft as the body (YAML), or `?version=N` of the stored ones with an empty body.
pub async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    Query(q): Query<VersionQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let draft = match (q.version, body.is_empty()) {
        (Some(v), true) => Draft::Version(v),
        (None, false) => Draft::Text(utf8(body)?),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give the draft rule file as the body, or ?version=N with an empty body",
            ));
        }
    };
    let dry = state
        .blocking(move |rt| {
            let rules = rt.rule_components(&tenant);
            Ok(rt
                .compliance(&tenant)?
                .dry_run(&tenant, &file, draft, &rules)?)
        })
        .await?;
    Ok(Json(json!(dry)))
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    device: Option<String>,
    version: Option<u32>,
}

/// `POST /v1/compliance/rules/{file}/preview?device=D`: what the rule file expects of one
/// device, rendered for it — of the draft in the body, of `?version=N`, or of the active
/// version (empty body). Changes nothing.
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    Query(q): Query<PreviewQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let device = q
        .device
        .ok_or_else(|| ApiError::bad_request("invalid_request", "name the device: ?device=NAME"))?;
    let draft = match (q.version, body.is_empty()) {
        (Some(v), true) => Some(Draft::Version(v)),
        (None, false) => Some(Draft::Text(utf8(body)?)),
        (None, true) => None,
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give a draft as the body or ?version=N, not both",
            ));
        }
    };
    let name = device.clone();
    let rules = state
        .blocking(move |rt| {
            Ok(rt
                .compliance(&tenant)?
                .preview(&tenant, &file, draft, &name)?)
        })
        .await?;
    Ok(Json(json!({ "device": device, "rules": rules })))
}

/// `POST /v1/compliance/components/{name}/dry-run?version=N`: a stored, not activated
/// version of a rule component against today's backups, compared with the active rules.
pub async fn dry_run_component(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Some(version) = q.version else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give the version to try: ?version=N (upload it with activate=false first)",
        ));
    };
    let dry = state
        .runtime
        .dry_run_component(&tenant, &name, version)
        .await?;
    Ok(Json(json!(dry)))
}

pub async fn waivers(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let waivers = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.waivers(&tenant)?))
        .await?;
    Ok(Json(json!({ "waivers": waivers })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverBody {
    device: String,
    rule: String,
    reason: String,
    /// Milliseconds since the epoch...
    expires_ms: Option<i64>,
    /// ... or a duration from now: `30d`, `12h`.
    expires_in: Option<String>,
}

pub async fn add_waiver(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<WaiverBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(body) = body.map_err(json_error)?;
    let expires_ms = match (body.expires_ms, body.expires_in.as_deref()) {
        (Some(ms), None) => ms,
        (None, Some(text)) => {
            let d = humantime::parse_duration(text).map_err(|e| {
                ApiError::bad_request("invalid_request", format!("expires_in `{text}`: {e}"))
            })?;
            sotp_runtime::now_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "a waiver needs one of `expires_ms` or `expires_in` (e.g. \"30d\")",
            ));
        }
    };
    let waiver = state
        .blocking(move |rt| {
            Ok(rt.compliance(&tenant)?.add_waiver(
                &tenant,
                &body.device,
                &body.rule,
                &body.reason,
                expires_ms,
            )?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(waiver))).into_response())
}

pub async fn delete_waiver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.delete_waiver(&tenant, &id)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    wait: bool,
}

/// Start an audit. `?wait=true` answers with the stored report's id and summary when it is
/// done; otherwise 202 at once, and `GET /v1/compliance/audits/running` shows progress.
pub async fn run_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RunQuery>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let rt = state.runtime.clone();
    let ticket = rt
        .compliance(&tenant)?
        .begin_audit(&tenant)
        .map_err(|e| ApiError::from(sotp_runtime::RuntimeError::from(e)))?;
    let job = tokio::task::spawn_blocking(move || {
        let outcome = rt.finish_audit(ticket, "api");
        if let Err(e) = &outcome {
            tracing::warn!(tenant = %tenant, error = %e, "compliance audit failed");
        }
        outcome
    });
    if !q.wait {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "status": "running" }))).into_response());
    }
    let (id, report) = job
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)?;
    Ok(
        Json(json!({ "id": id, "sources": report.sources, "summary": report.summary }))
            .into_response(),
    )
}

pub async fn running(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    match state.runtime.compliance(&tenant)?.progress(&tenant) {
        Some(p) => Ok(Json(json!(p))),
        None => Err(ApiError::not_found("no audit of this tenant is running")),
    }
}

pub async fn audits(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let audits = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.audits(&tenant)?))
        .await?;
    Ok(Json(json!({ "audits": audits })))
}

#[derive(Deserialize)]
pub struct ReportQuery {
    format: Option<String>,
    /// Only this device's results.
    device: Option<String>,
}

/// One audit's report (`latest` for the newest), as JSON or `?format=csv`.
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let id = match id.as_str() {
        "latest" => None,
        n => Some(n.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                format!("audit id `{n}`: a number or `latest`"),
            )
        })?),
    };
    let (id, mut report) = state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.report(&tenant, id)?))
        .await?;
    if let Some(device) = &q.device {
        report.devices.retain(|d| &d.device == device);
        if report.devices.is_empty() {
            return Err(ApiError::not_found(format!(
                "audit {id} has no result for device `{device}`"
            )));
        }
    }
    match q.format.as_deref() {
        None | Some("json") => {
            let mut body = json!(report);
            body["id"] = json!(id);
            Ok(Json(body).into_response())
        }
        Some("csv") => {
            let csv = to_csv(&report)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid_request",
            format!("format `{other}`: json or csv"),
        )),
    }
}

pub async fn get_schedule(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let (schedule, next) = state
        .blocking(move |rt| {
            let s = rt.compliance(&tenant)?.schedule(&tenant)?;
            let next = s.next_after(sotp_runtime::now_ms());
            Ok((s, next))
        })
        .await?;
    let mut body = json!(schedule);
    body["next_ms"] = json!(next);
    Ok(Json(body))
}

pub async fn put_schedule(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<Schedule>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let Json(schedule) = body.map_err(json_error)?;
    let saved = schedule.clone();
    state
        .blocking(move |rt| Ok(rt.compliance(&tenant)?.set_schedule(&tenant, &saved)?))
        .await?;
    let mut body = json!(schedule);
    body["next_ms"] = json!(schedule.next_after(sotp_runtime::now_ms()));
    Ok(Json(body))
}
