//! `/v1/traces`: the OTLP/HTTP traces intake (`POST`, the path OTLP exporters append to a
//! base URL, so `http://sotp:8080` is the whole exporter setting), its CORS preflight, trace
//! search and view, and the tenant's trace settings.
//!
//! The intake takes a token with `rum` (the browser-safe key: spans only) or `ingest`, as
//! `Authorization: Bearer` or `?key=` (for `navigator.sendBeacon`, which cannot set headers).
//! A request with an `Origin` must come from one of the tenant's `origins`; the preflight
//! answers any origin (it carries no credentials, so it cannot say which tenant) and grants
//! nothing: the POST is checked. Every refusal — bad key, foreign origin, malformed or
//! oversized body, over the rate — is a 4xx with a reason, counted, and stores nothing.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::query::{parse_duration, parse_time};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sotp_runtime::traces::otlp::Encoding;
use sotp_runtime::traces::{TraceQuery, TraceSettings};
use sotp_runtime::{Principal, Scope};

#[derive(Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

/// The CORS preflight of the intake.
pub async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    if let Some(origin) = headers.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, content-encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        // Longer than the route's limit: refused before it was read, counted all the same.
        let traces = state.runtime.traces();
        traces.count_too_large();
        return ApiError::too_large(format!(
            "the body is larger than {} bytes",
            traces.config.max_body_bytes.0
        ))
        .into_response();
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let result = ingest_checked(&state, &headers, q.key, origin.as_deref(), body).await;
    with_cors(
        result.unwrap_or_else(|e| e.into_response()),
        origin.as_deref(),
    )
}

async fn ingest_checked(
    state: &AppState,
    headers: &HeaderMap,
    key: Option<String>,
    origin: Option<&str>,
    body: Bytes,
) -> ApiResult<Response> {
    let tenant = span_sender(state, headers, key, origin)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let protobuf = Encoding::from_content_type(&content_type) == Some(Encoding::Protobuf);
    let outcome = state
        .runtime
        .ingest_spans(&tenant, body.to_vec(), content_type, gzip)
        .await?;
    if protobuf {
        let body = sotp_runtime::traces::otlp::protobuf_response(
            outcome.rejected,
            outcome.rejection.as_deref(),
        );
        return Ok(([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response());
    }
    let mut answer = json!(outcome);
    if outcome.rejected > 0 {
        answer["partialSuccess"] = json!({
            "rejectedSpans": outcome.rejected.to_string(),
            "errorMessage": outcome.rejection,
        });
    }
    Ok(Json(answer).into_response())
}

/// The tenant of a request carrying a `rum` or `ingest` token (header or `?key=`), from an
/// allowed origin if it names one. Refusals are counted.
fn span_sender(
    state: &AppState,
    headers: &HeaderMap,
    key: Option<String>,
    origin: Option<&str>,
) -> ApiResult<String> {
    let traces = state.runtime.traces();
    let token = match headers.get(header::AUTHORIZATION) {
        Some(v) => v
            .to_str()
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .trim()
            .to_string(),
        None => key.unwrap_or_default(),
    };
    let tenant = match state.runtime.authenticate(&token) {
        Ok((Principal::Tenant { tenant, scopes }, _)) if scopes.allows(Scope::Rum) => tenant,
        Ok(_) => {
            traces.count_refusal(false);
            return Err(ApiError::forbidden(
                "sending spans needs a tenant token with the `rum` or `ingest` scope",
            ));
        }
        Err(e) => {
            traces.count_refusal(false);
            return Err(e.into());
        }
    };
    if let Some(origin) = origin {
        state.runtime.check_span_origin(&tenant, origin)?;
    }
    Ok(tenant)
}

/// `GET /v1/traces/rum-config`: what the RUM script needs of the tenant's settings (its
/// sampling rate, where `traceparent` may go), for its key, from an allowed origin.
pub async fn rum_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = span_sender(&state, &headers, q.key, origin.as_deref()).and_then(|tenant| {
        let settings = state.runtime.trace_settings(&tenant)?;
        Ok(Json(json!({
            "sample_rate": settings.sample_rate,
            "propagate_to": settings.propagate_to,
        }))
        .into_response())
    });
    with_cors(
        answer.unwrap_or_else(|e| e.into_response()),
        origin.as_deref(),
    )
}

/// Let the page read an answer when its origin was allowed (and only then).
fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    if let (Some(o), true) = (origin, response.status() != StatusCode::FORBIDDEN)
        && let Ok(v) = HeaderValue::from_str(o)
    {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    service: Option<String>,
    route: Option<String>,
    /// e.g. `250ms`
    min_duration: Option<String>,
    /// `error` or `ok`
    status: Option<String>,
    since: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let invalid = |m: String| ApiError::bad_request("invalid_request", m);
    let now = sotp_runtime::now_ms();
    let end_ms = match &q.end {
        Some(t) => parse_time(t, now).map_err(invalid)?,
        None => now,
    };
    let start_ms = match (&q.start, &q.since) {
        (Some(_), Some(_)) => return Err(invalid("give `start` or `since`, not both".into())),
        (Some(t), None) => parse_time(t, now).map_err(invalid)?,
        (None, Some(d)) => end_ms - parse_duration(d).map_err(invalid)?.as_millis() as i64,
        (None, None) => end_ms - 3_600_000,
    };
    let min_duration_ns = q
        .min_duration
        .as_deref()
        .map(|d| parse_duration(d).map(|d| d.as_nanos() as i64))
        .transpose()
        .map_err(invalid)?;
    let error = match q.status.as_deref() {
        None => None,
        Some("error") => Some(true),
        Some("ok") => Some(false),
        Some(other) => return Err(invalid(format!("status: `{other}` is not error or ok"))),
    };
    let query = TraceQuery {
        service: q.service,
        route: q.route,
        min_duration_ns,
        error,
        from_ns: start_ms.saturating_mul(1_000_000),
        to_ns: end_ms.saturating_mul(1_000_000),
        limit: q.limit.unwrap_or(20).clamp(1, 1000),
    };
    let traces = state.runtime.search_traces(&tenant, query).await?;
    Ok(Json(json!({ "traces": traces })))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{id}` is not a trace id (32 hex digits)"),
        ));
    }
    let spans = state.runtime.trace(&tenant, &id).await?;
    Ok(Json(
        json!({ "trace_id": id.to_ascii_lowercase(), "spans": spans }),
    ))
}

pub async fn get_settings(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let (settings, forwarding) = state
        .blocking(move |rt| {
            let settings = rt.trace_settings(&tenant)?;
            Ok((settings, rt.traces().forward_status(&tenant)))
        })
        .await?;
    let mut answer = json!(settings);
    if settings.forward.is_some() {
        answer["forwarding"] = json!(forwarding);
    }
    Ok(Json(answer))
}

pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Deploy)?.to_string();
    let settings: TraceSettings = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("trace settings: {e}")))?;
    let saved = settings.clone();
    state
        .blocking(move |rt| rt.set_trace_settings(&tenant, &settings))
        .await?;
    Ok(Json(json!(saved)))
}
