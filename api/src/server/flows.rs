//! `GET /v1/flows/top`, `GET /v1/flows/rate`, `GET /v1/flows/status`: the tenant's flows.
//!
//! Parameters (both queries): the window as `start`/`end` (ms, RFC 3339, `now`, `now-5m`) or
//! `since` (default 1h); `by` (comma-separated: src_addr, dst_addr, app, exporter,
//! ip_protocol, src_port, dst_port, in_if, out_if); filters `exporter`, `addr` (source or
//! destination), `src_addr`, `dst_addr`, `port` (source or destination), `protocol` (number
//! or tcp/udp/icmp/icmpv6), `app`; `limit`. Top: `measure` (bytes|packets|flows, default
//! bytes; default `by` src_addr, limit 10). Rate: `step` (default 5m; bytes/s and packets/s
//! per bucket; default `by` none = total).

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::query::{parse_duration, parse_time};
use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::flow::query::{FlowFilter, GroupBy, Measure, RateQuery, TopQuery};

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
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let c = parse(raw.as_deref().unwrap_or(""), sotp_runtime::now_ms())?;
    let q = TopQuery {
        tenant,
        from_ms: c.start,
        to_ms: c.end,
        by: c.by.unwrap_or_else(|| vec![GroupBy::SrcAddr]),
        measure: c.measure,
        limit: c.limit.unwrap_or(10),
        filter: c.filter,
    };
    let (start, end, by, measure) = (q.from_ms, q.to_ms, q.by.clone(), q.measure);
    let rows = state.runtime.flow_top(q).await?;
    Ok(Json(
        json!({ "start_ms": start, "end_ms": end, "by": by, "measure": measure, "rows": rows }),
    ))
}

pub async fn rate(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let c = parse(raw.as_deref().unwrap_or(""), sotp_runtime::now_ms())?;
    let q = RateQuery {
        tenant,
        from_ms: c.start,
        to_ms: c.end,
        by: c.by.unwrap_or_default(),
        step_ms: c.step_ms.unwrap_or(300_000),
        filter: c.filter,
        limit: c.limit.unwrap_or(100),
    };
    let (start, end, step, by) = (q.from_ms, q.to_ms, q.step_ms, q.by.clone());
    let rows = state.runtime.flow_rate(q).await?;
    Ok(Json(
        json!({ "start_ms": start, "end_ms": end, "step_ms": step, "by": by, "rows": rows }),
    ))
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
