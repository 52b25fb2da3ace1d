//! `GET /v1/flows/top`, `GET /v1/flows/rate`, `GET /v1/flows/status`: the tenant's flows.
//!
//! Parameters (both queries): the window as `start`/`end` (ms, RFC 3339, `now`, `now-5m`) or
//! `since` (default 1h); `by` (comma-separated: src_addr, dst_addr, app, exporter,
//! ip_protocol, src_port, dst_port, in_if, out_if); filters `exporter`, `addr` (source or
//! destination), `src_addr`, `dst_addr`, `port` (source or destination), `protocol` (number
//! or tcp/udp/icmp/icmpv6), `app`; `limit`. Top: `measure` (bytes|packets|flows, default
//! bytes; default `by` src_addr, limit 10). Rate: `step` (default 5m; bytes/s and packets/s
//! per bucket; default `by` none = total).
//!
//! On a store with `peers` (runtime/src/bus/peers.rs) top and rate answer for the whole store
//! tier: the same query (its window made absolute, every group) goes to each peer with the
//! peer token, and the rows are merged. A peer's request (`X-Sotp-Peer`, the peer token,
//! `X-Sotp-Tenant`) is answered from this store alone; the peer token opens nothing else.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::query::{parse_duration, parse_time};
use axum::Json;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::bus::peers::{self, PEER_HEADER, Peers};
use sotp_runtime::flow::query::{FlowFilter, GroupBy, Measure, RateQuery, TopQuery};
use std::sync::Arc;

/// Who reads flows: a tenant (its token, or the admin acting for it), or a fellow store
/// asking for a tenant's rows on this store (`peer`).
pub struct FlowReader {
    tenant: String,
    peer: bool,
}

impl FromRequestParts<AppState> for FlowReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(PEER_HEADER) {
            let caller = Caller::from_request_parts(parts, state).await?;
            let tenant = caller.tenant(Scope::Read)?.to_string();
            return Ok(FlowReader {
                tenant,
                peer: false,
            });
        }
        let refused = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
        let peers = peers_of(state).ok_or_else(|| refused("this store has no peers"))?;
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| refused("a peer's request carries the peer token"))?;
        if !peers.accepts(&super::auth::bearer(header)?) {
            return Err(refused("not the peer token"));
        }
        let tenant = parts
            .headers
            .get("x-sotp-tenant")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid("a peer's request names its tenant in X-Sotp-Tenant"))?
            .to_string();
        state.runtime.tenant(&tenant)?;
        Ok(FlowReader { tenant, peer: true })
    }
}

fn peers_of(state: &AppState) -> Option<Arc<Peers>> {
    state.runtime.flows.as_ref().and_then(|f| f.peers.clone())
}

/// The peers a tenant's query is merged over: none for a peer's own request.
fn fan_out(state: &AppState, reader: &FlowReader) -> Option<Arc<Peers>> {
    if reader.peer { None } else { peers_of(state) }
}

/// The query for the peers: the same parameters, with the window this store resolved
/// (`now` differs between hosts) and `limit` groups.
fn peer_query(raw: &str, start: i64, end: i64, limit: usize) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if !matches!(key.as_ref(), "start" | "end" | "since" | "limit") {
            out.append_pair(&key, &value);
        }
    }
    out.append_pair("start", &start.to_string())
        .append_pair("end", &end.to_string())
        .append_pair("limit", &limit.to_string())
        .finish()
}

/// Each peer's rows (off the async threads, at most [`peers::MAX_FAN_OUTS`] queries at
/// once); a peer that fails fails the query.
async fn ask_peers<R: serde::de::DeserializeOwned + Send + 'static>(
    peers: Arc<Peers>,
    path: &'static str,
    query: String,
    tenant: &str,
) -> ApiResult<Vec<Vec<R>>> {
    let permit =
        peers.fan_outs.clone().acquire_owned().await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    let tenant = tenant.to_string();
    // The permit lives as long as the asking does, even if the caller went away.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        peers.ask::<R>(path, &query, &tenant)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "peer_unavailable", e))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", detail)
}

/// What both queries share, parsed from the query string.
struct Common {
    start: i64,
    end: i64,
    by: Option<Vec<GroupBy>>,
    filter: FlowFilter,
    limit: Option<usize>,
    measure: Measure,
    step_ms: Option<i64>,
}

fn ip_protocol(text: &str) -> Result<u8, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        n => n.parse().map_err(|_| {
            invalid(format!(
                "protocol {text:?}: a number 0-255 or tcp, udp, icmp, icmpv6"
            ))
        }),
    }
}

fn parse(raw: &str, now_ms: i64) -> Result<Common, ApiError> {
    let (mut start, mut end, mut since) = (None, None, None);
    let mut c = Common {
        start: 0,
        end: 0,
        by: None,
        filter: FlowFilter::default(),
        limit: None,
        measure: Measure::Bytes,
        step_ms: None,
    };
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "start" => start = Some(parse_time(&value, now_ms).map_err(invalid)?),
            "end" => end = Some(parse_time(&value, now_ms).map_err(invalid)?),
            "since" => since = Some(parse_duration(&value).map_err(invalid)?),
            "step" => c.step_ms = Some(parse_duration(&value).map_err(invalid)?.as_millis() as i64),
            "by" => {
                c.by = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(GroupBy::parse)
                        .collect::<Result<_, _>>()
                        .map_err(invalid)?,
                )
            }
            "measure" => {
                c.measure = match value.as_str() {
                    "bytes" => Measure::Bytes,
                    "packets" => Measure::Packets,
                    "flows" => Measure::Flows,
                    other => {
                        return Err(invalid(format!(
                            "measure {other:?}: bytes, packets or flows"
                        )));
                    }
                }
            }
            "limit" => {
                c.limit = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("limit {value:?} is not a number")))?,
                )
            }
            "exporter" => c.filter.exporter = Some(value),
            "addr" => c.filter.addr = Some(value),
            "src_addr" => c.filter.src_addr = Some(value),
            "dst_addr" => c.filter.dst_addr = Some(value),
            "app" => c.filter.app = Some(value),
            "port" => {
                c.filter.port = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("port {value:?} is not a port number")))?,
                )
            }
            "protocol" => c.filter.ip_protocol = Some(ip_protocol(&value)?),
            other => return Err(invalid(format!("unknown parameter {other:?}"))),
        }
    }
    c.end = end.unwrap_or(now_ms);
    c.start =
        start.unwrap_or_else(|| c.end - since.map(|d| d.as_millis() as i64).unwrap_or(3_600_000));
    Ok(c)
}

pub async fn top(
    State(state): State<AppState>,
    reader: FlowReader,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let raw = raw.unwrap_or_default();
    let c = parse(&raw, sotp_runtime::now_ms())?;
    let peers = fan_out(&state, &reader);
    let limit = c.limit.unwrap_or(10);
    let q = TopQuery {
        tenant: reader.tenant.clone(),
        from_ms: c.start,
        to_ms: c.end,
        by: c.by.unwrap_or_else(|| vec![GroupBy::SrcAddr]),
        measure: c.measure,
        limit: if peers.is_some() {
            peers::MAX_GROUPS
        } else {
            limit
        },
        filter: c.filter,
    };
    let (start, end, by, measure) = (q.from_ms, q.to_ms, q.by.clone(), q.measure);
    let mut rows = state.runtime.flow_top(q).await?;
    if let Some(peers) = peers {
        let query = peer_query(&raw, start, end, peers::MAX_GROUPS);
        let mut parts = ask_peers(peers, "/v1/flows/top", query, &reader.tenant).await?;
        parts.push(rows);
        rows = peers::merge_top(parts, measure, limit);
    }
    Ok(answer(
        &state,
        &reader,
        json!({ "start_ms": start, "end_ms": end, "by": by, "measure": measure, "rows": rows }),
    ))
}

pub async fn rate(
    State(state): State<AppState>,
    reader: FlowReader,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let raw = raw.unwrap_or_default();
    let c = parse(&raw, sotp_runtime::now_ms())?;
    let peers = fan_out(&state, &reader);
    let limit = c.limit.unwrap_or(100);
    // Each store's largest groups per bucket, with room to spare: a group just outside one
    // store's share may still make the merged cut.
    let per_store = limit.saturating_mul(4).clamp(1, peers::MAX_GROUPS);
    let q = RateQuery {
        tenant: reader.tenant.clone(),
        from_ms: c.start,
        to_ms: c.end,
        by: c.by.unwrap_or_default(),
        step_ms: c.step_ms.unwrap_or(300_000),
        filter: c.filter,
        limit: if peers.is_some() { per_store } else { limit },
    };
    let (start, end, step, by) = (q.from_ms, q.to_ms, q.step_ms, q.by.clone());
    let mut rows = state.runtime.flow_rate(q).await?;
    if let Some(peers) = peers {
        let query = peer_query(&raw, start, end, per_store);
        let mut parts = ask_peers(peers, "/v1/flows/rate", query, &reader.tenant).await?;
        parts.push(rows);
        rows = peers::merge_rate(parts, step, limit);
    }
    Ok(answer(
        &state,
        &reader,
        json!({ "start_ms": start, "end_ms": end, "step_ms": step, "by": by, "rows": rows }),
    ))
}

/// The JSON answer; to a peer, with this store's name ([`peers::NODE_HEADER`]).
fn answer(state: &AppState, reader: &FlowReader, body: Value) -> Response {
    let me = reader
        .peer
        .then(|| peers_of(state).map(|p| p.me().to_string()))
        .flatten();
    match me.and_then(|m| axum::http::HeaderValue::from_str(&m).ok()) {
        Some(name) => ([(peers::NODE_HEADER, name)], Json(body)).into_response(),
        None => Json(body).into_response(),
    }
}

/// The platform admin (without `X-Sotp-Tenant`) sees the whole pipeline; a tenant sees its
/// own exporters only.
pub async fn status(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = if caller.is_admin() && caller.acting_for().is_none() {
        None
    } else {
        Some(caller.tenant(Scope::Read)?)
    };
    Ok(Json(state.runtime.flow_status(tenant)?))
}
