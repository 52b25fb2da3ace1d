//! Loki's HTTP query API over flows, per tenant: `/loki/api/v1/query_range`,
//! `/loki/api/v1/query` (GET or POST form) for LogQL metric queries, and
//! `/loki/api/v1/labels` for the labels a flow query can group and filter by — what
//! Grafana's Loki data source asks. Times as Loki takes them (Unix nanoseconds, seconds, or
//! RFC 3339), answers in Loki's envelope (`resultType` matrix or vector, values as strings).
//! The tenant is the token's, as for the Prometheus API (Bearer, or basic auth with the
//! token as the password). LogQL is `sotp_runtime::logql`.

use super::AppState;
use super::auth::Caller;
use super::prometheus::{Params, number, parse_step, seconds};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::logql::{self, LogqlError};

/// The labels flow queries answer to.
const LABELS: [&str; 9] = [
    "app_protocol",
    "dst_ip",
    "dst_port",
    "exporter",
    "in_if",
    "out_if",
    "protocol",
    "src_ip",
    "src_port",
];

/// Loki's error answer: the status and the message as plain text.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn from_logql(e: LogqlError) -> Response {
    match e {
        LogqlError::Invalid(m) | LogqlError::Unsupported(m) => error(StatusCode::BAD_REQUEST, m),
        LogqlError::TooLarge(m) => error(StatusCode::UNPROCESSABLE_ENTITY, m),
        LogqlError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// A Loki time in ms: an integer of more than 12 digits is Unix nanoseconds (Loki's own
/// form), other numbers Unix seconds, else RFC 3339.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(if text.trim_start_matches('-').len() > 12 {
            n / 1_000_000
        } else {
            n * 1000
        });
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| format!("invalid time \"{text}\": use Unix nanoseconds, seconds or RFC 3339"))
}

/// `GET|POST /loki/api/v1/query_range?query=&start=&end=&step=`.
pub async fn query_range(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let tenant = match caller.tenant(Scope::Read) {
        Ok(t) => t.to_string(),
        Err(e) => return e.into_response(),
    };
    let p = Params::new(raw, &body);
    let Some(query) = p.get("query") else {
        return error(StatusCode::BAD_REQUEST, "query is required");
    };
    let now = sotp_runtime::now_ms();
    let times = (|| {
        let end = p.get("end").map(parse_time).transpose()?.unwrap_or(now);
        let start = p
            .get("start")
            .map(parse_time)
            .transpose()?
            .unwrap_or(end - 3_600_000);
        // Loki's default: about 250 points over the range, at least a second.
        let step = match p.get("step") {
            Some(s) => parse_step(s)?,
            None => ((end - start) / 250).max(1000),
        };
        Ok::<_, String>((start, end, step))
    })();
    let (start, end, step) = match times {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if step <= 0 || end < start {
        return error(
            StatusCode::BAD_REQUEST,
            "step must be positive and end not before start",
        );
    }
    if (end - start) / step + 1 > logql::MAX_STEPS {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "exceeded maximum resolution of {} points per time series: use a larger step",
                logql::MAX_STEPS
            ),
        );
    }
    let steps: Vec<i64> = (0..=(end - start) / step)
        .map(|i| start + i * step)
        .collect();
    let series = match state.runtime.logql(tenant, query, steps.clone()).await {
        Ok(s) => s,
        Err(e) => return from_logql(e),
    };
    let result: Vec<Value> = series
        .into_iter()
        .map(|s| {
            let values: Vec<Value> = s
                .values
                .iter()
                .zip(&steps)
                .filter_map(|(v, t)| v.map(|v| json!([seconds(*t), number(v)])))
                .collect();
            json!({ "metric": s.labels, "values": values })
        })
        .collect();
    axum::Json(json!({
        "status": "success",
        "data": { "resultType": "matrix", "result": result, "stats": {} },
    }))
    .into_response()
}

/// `GET|POST /loki/api/v1/query?query=&time=`: the value at one instant.
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let tenant = match caller.tenant(Scope::Read) {
        Ok(t) => t.to_string(),
        Err(e) => return e.into_response(),
    };
    let p = Params::new(raw, &body);
    let Some(query) = p.get("query") else {
        return error(StatusCode::BAD_REQUEST, "query is required");
    };
    let at = match p.get("time").map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(sotp_runtime::now_ms),
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let series = match state.runtime.logql(tenant, query, vec![at]).await {
        Ok(s) => s,
        Err(e) => return from_logql(e),
    };
    let result: Vec<Value> = series
        .into_iter()
        .filter_map(|s| {
            let v = s.values[0]?;
            Some(json!({ "metric": s.labels, "value": [seconds(at), number(v)] }))
        })
        .collect();
    axum::Json(json!({
        "status": "success",
        "data": { "resultType": "vector", "result": result, "stats": {} },
    }))
    .into_response()
}

/// `GET /loki/api/v1/labels`: the labels flow queries group and filter by.
pub async fn labels(caller: Caller) -> Response {
    if let Err(e) = caller.tenant(Scope::Read) {
        return e.into_response();
    }
    axum::Json(json!({ "status": "success", "data": LABELS })).into_response()
}

/// The routes under `/loki/api/v1`.
pub fn router(state: &AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/query_range",
            axum::routing::get(query_range).post(query_range),
        )
        .route("/query", axum::routing::get(query).post(query))
        .route("/labels", axum::routing::get(labels))
        .route_layer(axum::middleware::from_fn(super::own_traces::trace_request))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), sotp_runtime::runtime::QueryApi::Logql),
            super::prometheus::count_refusals,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loki_times() {
        assert_eq!(parse_time("1700000000000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("soon").is_err());
        assert_eq!(parse_step("5m"), Ok(300_000));
        assert_eq!(parse_step("60"), Ok(60_000));
    }
}
