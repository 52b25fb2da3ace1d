//! Prometheus's HTTP read API, per tenant, for the dashboards and tools users already have
//! (Grafana's Prometheus data source, `promtool query`): `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`,
//! GET or POST (form), answering in Prometheus's JSON envelope. The tenant is the token's:
//! `Authorization: Bearer <token>`, or HTTP basic auth with the token as the password (what
//! `promtool` and Grafana send from a URL's `user:password@`). PromQL is evaluated by
//! `sotp_runtime::promql`; what it does not support is a 400 naming the construct.

use super::AppState;
use super::auth::Caller;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::promql::{self, PromError};

/// Query parameters from the URL and, for a POST, the form body (as Prometheus merges them).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn new(raw: Option<String>, body: &Bytes) -> Params {
        let mut pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Params(pairs)
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Why a request is not answered: the token's refusal (SOTP's error body), or Prometheus's
/// error envelope.
enum Failure {
    Refused(super::error::ApiError),
    Prometheus {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Refused(e) => e.into_response(),
            Failure::Prometheus {
                status,
                kind,
                message,
            } => (
                status,
                axum::Json(json!({ "status": "error", "errorType": kind, "error": message })),
            )
                .into_response(),
        }
    }
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Failure {
    Failure::Prometheus {
        status,
        kind,
        message: message.into(),
    }
}

fn bad_data(message: impl Into<String>) -> Failure {
    error(StatusCode::BAD_REQUEST, "bad_data", message)
}

fn from_prom(e: PromError) -> Failure {
    match e {
        PromError::Invalid(m) | PromError::Unsupported(m) => bad_data(m),
        PromError::TooLarge(m) => error(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
        PromError::Store(m) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({ "status": "success", "data": data })).into_response()
}

/// A Prometheus time: Unix seconds (fractions allowed) or RFC 3339.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| format!("cannot parse \"{text}\" to a valid timestamp"))
}

/// A Prometheus duration: seconds (fractions allowed) or `5m`, `1h30m`.
pub(super) fn parse_step(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse \"{text}\" to a valid duration"))
}

fn required<'a>(params: &'a Params, key: &str) -> Result<&'a str, Failure> {
    params
        .get(key)
        .ok_or_else(|| bad_data(format!("invalid parameter \"{key}\": missing")))
}

fn time_param(params: &Params, key: &str, default: i64) -> Result<i64, Failure> {
    match params.get(key) {
        None => Ok(default),
        Some(t) => parse_time(t).map_err(|e| bad_data(format!("invalid parameter \"{key}\": {e}"))),
    }
}

/// Unix seconds as Prometheus writes them (a whole number when whole).
pub(super) fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// A sample value as Prometheus writes it: a string, `NaN`, `+Inf`, `-Inf`.
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// The caller's tenant, checked before anything else is looked at (a token without the
/// `read` scope is refused whatever it asks).
fn tenant(caller: &Caller) -> Result<String, Failure> {
    caller
        .tenant(Scope::Read)
        .map(str::to_string)
        .map_err(Failure::Refused)
}

async fn run(
    state: &AppState,
    tenant: String,
    query: &str,
    steps: Vec<i64>,
) -> Result<promql::Value, Failure> {
    let expr = promql::parse(query).map_err(from_prom)?;
    state
        .runtime
        .promql(tenant, expr, steps)
        .await
        .map_err(from_prom)
}

/// `GET|POST /api/v1/query?query=&time=`: the value at one instant.
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::new(raw, &body);
    let result = async {
        let tenant = tenant(&caller)?;
        let query = required(&params, "query")?;
        let at = time_param(&params, "time", sotp_runtime::now_ms())?;
        let value = run(&state, tenant, query, vec![at]).await?;
        Ok::<_, Failure>(match value {
            promql::Value::Scalar(v) => json!({
                "resultType": "scalar",
                "result": [seconds(at), number(v[0])],
            }),
            promql::Value::Vector(series) => json!({
                "resultType": "vector",
                "result": series.into_iter().filter_map(|s| {
                    let v = s.values[0]?;
                    Some(json!({ "metric": s.labels, "value": [seconds(at), number(v)] }))
                }).collect::<Vec<_>>(),
            }),
        })
    }
    .await;
    match result {
        Ok(data) => success(data),
        Err(failure) => failure.into_response(),
    }
}

/// `GET|POST /api/v1/query_range?query=&start=&end=&step=`: values at every step.
pub async fn query_range(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::new(raw, &body);
    let result = async {
        let tenant = tenant(&caller)?;
        let query = required(&params, "query")?;
        let start = parse_time(required(&params, "start")?)
            .map_err(|e| bad_data(format!("invalid parameter \"start\": {e}")))?;
        let end = parse_time(required(&params, "end")?)
            .map_err(|e| bad_data(format!("invalid parameter \"end\": {e}")))?;
        let step = parse_step(required(&params, "step")?)
            .map_err(|e| bad_data(format!("invalid parameter \"step\": {e}")))?;
        let steps = promql::steps(start, end, step).map_err(from_prom)?;
        let value = run(&state, tenant, query, steps.clone()).await?;
        let series = match value {
            promql::Value::Scalar(v) => vec![promql::Sample {
                labels: Default::default(),
                values: v.into_iter().map(Some).collect(),
            }],
            promql::Value::Vector(series) => series,
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
        Ok::<_, Failure>(json!({ "resultType": "matrix", "result": result }))
    }
    .await;
    match result {
        Ok(data) => success(data),
        Err(failure) => failure.into_response(),
    }
}

/// Count what the Prometheus- or Loki-compatible API refused (`sotp_query_refused_total`).
pub(super) async fn count_refusals(
    State((state, api)): State<(AppState, sotp_runtime::runtime::QueryApi)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    state
        .runtime
        .counters
        .query_refused
        .count(api, response.status().as_u16());
    response
}

/// The label sets the `match[]` selectors match (every series with none).
async fn matched_series(
    state: &AppState,
    caller: &Caller,
    params: &Params,
) -> Result<Vec<promql::Labels>, Failure> {
    let tenant = tenant(caller)?;
    let selectors = params
        .all("match[]")
        .into_iter()
        .map(promql::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(from_prom)?;
    state
        .runtime
        .promql_series(tenant, selectors)
        .await
        .map_err(from_prom)
}

/// `GET|POST /api/v1/series?match[]=`: the label sets of matching series.
pub async fn series(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::new(raw, &body);
    if let Err(refused) = tenant(&caller) {
        return refused.into_response();
    }
    if params.all("match[]").is_empty() {
        return bad_data("no match[] parameter provided").into_response();
    }
    match matched_series(&state, &caller, &params).await {
        Ok(series) => success(json!(series)),
        Err(failure) => failure.into_response(),
    }
}

/// `GET|POST /api/v1/labels`: label names (of the `match[]` series, if given).
pub async fn labels(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::new(raw, &body);
    match matched_series(&state, &caller, &params).await {
        Ok(series) => {
            let mut names: Vec<&String> = series.iter().flat_map(|s| s.keys()).collect();
            names.sort();
            names.dedup();
            success(json!(names))
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET /api/v1/label/<name>/values`: the values a label takes (`__name__`: metric names).
pub async fn label_values(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = Params::new(raw, &body);
    match matched_series(&state, &caller, &params).await {
        Ok(series) => {
            let mut values: Vec<&String> = series.iter().filter_map(|s| s.get(&name)).collect();
            values.sort();
            values.dedup();
            success(json!(values))
        }
        Err(failure) => failure.into_response(),
    }
}

/// The routes under `/api/v1`, GET or POST as Prometheus serves them.
pub fn router(state: &AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/query", axum::routing::get(query).post(query))
        .route(
            "/query_range",
            axum::routing::get(query_range).post(query_range),
        )
        .route("/series", axum::routing::get(series).post(series))
        .route("/labels", axum::routing::get(labels).post(labels))
        .route("/label/{name}/values", axum::routing::get(label_values))
        .route_layer(axum::middleware::from_fn(super::own_traces::trace_request))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), sotp_runtime::runtime::QueryApi::Promql),
            count_refusals,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_steps_and_numbers_as_prometheus_writes_them() {
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_step("15s"), Ok(15_000));
        assert_eq!(parse_step("0.5"), Ok(500));
        assert_eq!(seconds(1_700_000_000_000), json!(1_700_000_000));
        assert_eq!(seconds(1_700_000_000_500), json!(1_700_000_000.5));
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(1e21), "1000000000000000000000");
    }
}
