//! A server following Azure's documented REST API for what the `azure-monitor` collector
//! calls — Microsoft Entra ID's client-credentials token endpoint, Resource Manager's metric
//! definitions and the metrics data plane's `metrics:getBatch` — answering with the recorded
//! bodies in `tests/data/azure/` (see its README: no Azure Monitor emulator exists in any
//! registry reachable here). It checks what Azure checks: the client secret, the bearer
//! token's audience per endpoint, the api-version, the batch limits; it answers 429 with
//! `Retry-After` when told to, and counts sign-ins and queries.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const TENANT_ID: &str = "72f988bf-0000-4000-8000-000000000001";
pub const CLIENT_ID: &str = "5b0c3b4e-0000-4000-8000-000000000002";
pub const CLIENT_SECRET: &str = "azure-client-secret-value~123";
pub const SUBSCRIPTION: &str = "6f1a0f4c-0000-4000-8000-000000000003";

const DEFINITIONS: &str = include_str!("../data/azure/metric-definitions.json");
const BATCH: &str = include_str!("../data/azure/metrics-batch.json");

/// A VM's resource ID in the test subscription.
pub fn vm(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/web/providers/Microsoft.Compute/virtualMachines/{name}"
    )
}

#[derive(Default)]
struct Inner {
    sign_ins: AtomicU64,
    queries: AtomicU64,
    throttle: AtomicU64,
    /// The value of `Network In Total` at the third minute, once it has "arrived".
    late_total: Mutex<Option<f64>>,
}

pub struct Azure {
    pub port: u16,
    inner: Arc<Inner>,
    _runtime: tokio::runtime::Runtime,
}

impl Azure {
    pub fn start() -> Azure {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(route)
            .with_state(inner.clone());
        let (port, runtime) = crate::harness::serve_loopback(app);
        Azure {
            port,
            inner,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn sign_ins(&self) -> u64 {
        self.inner.sign_ins.load(Ordering::SeqCst)
    }

    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::SeqCst)
    }

    /// Answer the next `n` metric queries with 429.
    pub fn throttle_next(&self, n: u64) {
        self.inner.throttle.store(n, Ordering::SeqCst);
    }

    /// The third minute's `Network In Total` arrives (late).
    pub fn arrive_late(&self, total: f64) {
        *self.inner.late_total.lock().unwrap() = Some(total);
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

async fn route(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if method == Method::POST && path == format!("/{TENANT_ID}/oauth2/v2.0/token") {
        return token(&inner, &body);
    }
    if method == Method::GET && path.ends_with("/providers/Microsoft.Insights/metricDefinitions") {
        if bearer(&headers).as_deref() != Some("token-for-arm") {
            return error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            );
        }
        if query.get("api-version").map(String::as_str) != Some("2018-01-01") {
            return error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        let resource = path.trim_end_matches("/providers/Microsoft.Insights/metricDefinitions");
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            DEFINITIONS.replace("{resource}", resource),
        )
            .into_response();
    }
    if method == Method::POST && path == format!("/subscriptions/{SUBSCRIPTION}/metrics:getBatch") {
        return batch(&inner, &headers, &query, &body);
    }
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("no route for {method} {path}"),
    )
}

/// Client credentials: the right client and secret get a token named after its audience.
fn token(inner: &Inner, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url_form(body);
    let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'.\r\nTrace ID: 0000\r\nCorrelation ID: 0000"),
                "error_codes": [7000215],
            })),
        )
            .into_response();
    }
    let audience = match form.get("scope").map(String::as_str) {
        Some(s) if s.starts_with("https://metrics.monitor.azure.com") => "metrics",
        Some(s) if s.ends_with("/.default") => "arm",
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_scope", "error_description": "AADSTS1002012: The provided value for scope is not valid."})),
            )
                .into_response();
        }
    };
    inner.sign_ins.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": format!("token-for-{audience}"),
    }))
    .into_response()
}

fn batch(
    inner: &Inner,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    if bearer(headers).as_deref() != Some("token-for-metrics") {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid or its audience is not the metrics data plane.",
        );
    }
    if inner
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(
                json!({"error": {"code": "TooManyRequests", "message": "Rate limit exceeded"}}),
            ),
        )
            .into_response();
    }
    inner.queries.fetch_add(1, Ordering::SeqCst);
    let param = |k: &str| query.get(k).cloned().unwrap_or_default();
    if param("api-version") != "2023-10-01" || param("metricnamespace").is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "api-version 2023-10-01 and metricnamespace are required",
        );
    }
    let ids: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["resourceids"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let names: Vec<String> = param("metricnames")
        .split(',')
        .map(str::to_string)
        .collect();
    if ids.is_empty() || ids.len() > 50 || names.len() > 20 {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "1 to 50 resourceids and at most 20 metricnames",
        );
    }
    let Some(start) = parse_time(&param("starttime")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "starttime is not an ISO 8601 time",
        );
    };
    let step = 60;
    let times: Vec<String> = (0..3).map(|i| format_time(start + i * step)).collect();
    let mut values = Vec::new();
    for id in &ids {
        let text = BATCH
            .replace("{resource}", id)
            .replace("{starttime}", &param("starttime"))
            .replace("{endtime}", &param("endtime"))
            .replace("{t0}", &times[0])
            .replace("{t1}", &times[1])
            .replace("{t2}", &times[2]);
        let mut recorded: Value = serde_json::from_str(&text).unwrap();
        let mut value = recorded["values"][0].take();
        if let Some(metrics) = value["value"].as_array_mut() {
            metrics.retain(|m| {
                names
                    .iter()
                    .any(|n| Some(n.as_str()) == m["name"]["value"].as_str())
            });
            if let Some(late) = *inner.late_total.lock().unwrap() {
                for m in metrics.iter_mut() {
                    if m["name"]["value"] == "Network In Total" {
                        m["timeseries"][0]["data"][2]["total"] = json!(late);
                    }
                }
            }
        }
        values.push(value);
    }
    axum::Json(json!({ "values": values })).into_response()
}

fn url_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `2026-12-02T06:00:00Z` → Unix seconds (whole seconds are all the collector sends).
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
