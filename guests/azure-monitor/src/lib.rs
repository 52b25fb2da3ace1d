//! `azure-monitor`: Azure Monitor platform metrics of the resources the config lists, over
//! the `http` capability (every endpoint must be granted by `grants.http`).
//!
//! Each run:
//! 1. **Sign-in**: OAuth2 client credentials against Microsoft Entra ID
//!    (`POST <login>/<tenant_id>/oauth2/v2.0/token`, the client secret from a granted
//!    secret), one token per audience (Resource Manager for definitions, the metrics data
//!    plane for queries), reused until a minute before it expires.
//! 2. **Metric definitions** (every `definitions_interval_s`, default 3600): `GET
//!    <arm><resource>/providers/Microsoft.Insights/metricDefinitions` per resource — which of
//!    the configured `metrics` exist there, their default aggregation and dimensions. A
//!    configured metric a resource does not define is logged and skipped.
//! 3. **Batched queries**: `POST <region>.metrics.monitor.azure.com/subscriptions/<sub>/
//!    metrics:getBatch` — up to 50 resources and 20 metrics a call — over
//!    `[now − delay − lookback, now − delay]` at `interval_s`. As with CloudWatch, Azure's
//!    newest minutes fill in late, so the window is re-read every run and each datapoint is
//!    emitted once, the first run it appears.
//!
//! Samples: `azure_<resource type>_<metric>_<aggregation>` (lowercase, `_` for anything else:
//! `azure_virtualmachines_percentage_cpu_average`), labels `resource_id`, `resource_name`,
//! `resource_group`, `subscription_id` and `dimension_<name>` for split series, stamped with
//! Azure's times. Run samples: `azure_api_requests{call}`, `azure_api_throttled`.
//!
//! Keys: `tenant_id`, `client_id`, `client_secret` (a secret's name), `region`, `namespace`,
//! `metrics`, `aggregations` (default: each metric's primary one), `resources`,
//! `interval_s` (60), `delay_s` (180), `lookback_s` (900), `timeout_ms` (15000),
//! `login_endpoint`, `arm_endpoint`, `metrics_endpoint` (sovereign clouds, tests).

use serde::Deserialize;
use serde_json::Value;
use sotp_guest::http::{self, Method, Request};
use sotp_guest::{Collector, Config, Label, LogRecord, Sample, Tick, describe};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// metrics:getBatch limits: resources and metric names per call.
const BATCH_RESOURCES: usize = 50;
const BATCH_METRICS: usize = 20;
const ARM_API: &str = "2018-01-01";
const METRICS_API: &str = "2023-10-01";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    tenant_id: String,
    client_id: String,
    client_secret: String,
    region: String,
    namespace: String,
    metrics: Vec<String>,
    #[serde(default)]
    aggregations: Vec<String>,
    resources: Vec<String>,
    #[serde(default = "default_interval")]
    interval_s: u32,
    #[serde(default = "default_delay")]
    delay_s: u32,
    #[serde(default = "default_lookback")]
    lookback_s: u32,
    #[serde(default = "default_definitions")]
    definitions_interval_s: u32,
    #[serde(default = "default_timeout")]
    timeout_ms: u32,
    #[serde(default = "default_login")]
    login_endpoint: String,
    #[serde(default = "default_arm")]
    arm_endpoint: String,
    metrics_endpoint: Option<String>,
}

fn default_interval() -> u32 {
    60
}
fn default_delay() -> u32 {
    180
}
fn default_lookback() -> u32 {
    900
}
fn default_definitions() -> u32 {
    3600
}
fn default_timeout() -> u32 {
    15_000
}
fn default_login() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_arm() -> String {
    "https://management.azure.com".into()
}

/// A resource ID's parts.
#[derive(Clone, Debug, PartialEq)]
struct Resource {
    id: String,
    subscription: String,
    group: String,
    name: String,
}

impl Resource {
    fn parse(id: &str) -> Result<Resource, String> {
        let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
        let find = |key: &str| {
            parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case(key))
                .and_then(|i| parts.get(i + 1))
                .map(|s| s.to_string())
        };
        match (find("subscriptions"), find("resourceGroups"), parts.last()) {
            (Some(subscription), Some(group), Some(name)) if parts.len() >= 8 => Ok(Resource {
                id: format!("/{}", parts.join("/")),
                subscription,
                group,
                name: name.to_string(),
            }),
            _ => Err(format!(
                "`{id}` is not a resource ID (/subscriptions/<id>/resourceGroups/<group>/providers/<type>/<name>)"
            )),
        }
    }
}

/// What a resource defines: metric name → its primary aggregation.
type Definitions = BTreeMap<String, String>;

#[derive(Default)]
struct RunStats {
    requests: BTreeMap<&'static str, u32>,
    throttled: u32,
}

struct Token {
    value: String,
    until_ms: i64,
}

struct AzureMonitor {
    settings: Settings,
    resources: Vec<Resource>,
    tokens: HashMap<&'static str, Token>,
    definitions: HashMap<String, Definitions>,
    defined_at_ms: Option<i64>,
    emitted: HashMap<String, BTreeSet<i64>>,
}

impl Collector for AzureMonitor {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config.0.clone()).map_err(|e| format!("config: {e}"))?;
        let resources = settings
            .resources
            .iter()
            .map(|r| Resource::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("config.resources: {e}"))?;
        if resources.is_empty() || settings.metrics.is_empty() {
            return Err("config: name the resources and metrics to read".into());
        }
        if settings.interval_s == 0 || !settings.interval_s.is_multiple_of(60) {
            return Err("config.interval_s: a whole number of minutes".into());
        }
        Ok(AzureMonitor {
            settings,
            resources,
            tokens: HashMap::new(),
            definitions: HashMap::new(),
            defined_at_ms: None,
            emitted: HashMap::new(),
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let now_ms = tick.scheduled_at_ms;
        let mut run = RunStats::default();
        let mut logs = Vec::new();
        let result = self.run(now_ms, &mut run, &mut logs);
        let mut out = match &result {
            Ok(points) => points.clone(),
            Err(_) => Vec::new(),
        };
        for (call, n) in &run.requests {
            out.push(sample(
                "azure_api_requests",
                vec![label("call", call)],
                f64::from(*n),
                now_ms,
            ));
        }
        out.push(sample(
            "azure_api_throttled",
            Vec::new(),
            f64::from(run.throttled),
            now_ms,
        ));
        for chunk in out.chunks(20_000) {
            sotp_guest::host::emit::samples(chunk).map_err(|e| describe(&e))?;
        }
        if let Err(e) = &result {
            logs.push(log_line(
                sotp_guest::Level::Error,
                format!("run failed: {e}"),
            ));
        }
        if !logs.is_empty() {
            let _ = sotp_guest::host::emit::logs(&logs);
        }
        result.map(|_| ())
    }
}

impl AzureMonitor {
    fn run(
        &mut self,
        now_ms: i64,
        run: &mut RunStats,
        logs: &mut Vec<LogRecord>,
    ) -> Result<Vec<Sample>, String> {
        let stale = self
            .defined_at_ms
            .is_none_or(|at| now_ms - at >= i64::from(self.settings.definitions_interval_s) * 1000);
        if stale {
            self.load_definitions(now_ms, run, logs)?;
            self.defined_at_ms = Some(now_ms);
        }
        let step = i64::from(self.settings.interval_s) * 1000;
        let end = (now_ms - i64::from(self.settings.delay_s) * 1000) / step * step;
        let start = end - i64::from(self.settings.lookback_s.max(self.settings.interval_s)) * 1000;
        let mut out = Vec::new();
        let mut by_subscription: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
        for r in &self.resources {
            by_subscription
                .entry(r.subscription.clone())
                .or_default()
                .push(r.clone());
        }
        let metrics = self.defined_metrics();
        for (subscription, resources) in by_subscription {
            for batch in resources.chunks(BATCH_RESOURCES) {
                for names in metrics.chunks(BATCH_METRICS) {
                    self.query(
                        &subscription,
                        batch,
                        names,
                        start,
                        end,
                        now_ms,
                        run,
                        &mut out,
                    )?;
                }
            }
        }
        for times in self.emitted.values_mut() {
            times.retain(|t| *t >= start);
        }
        self.emitted.retain(|_, t| !t.is_empty());
        Ok(out)
    }

    /// The configured metrics some resource defines (all of them before definitions load).
    fn defined_metrics(&self) -> Vec<String> {
        self.settings
            .metrics
            .iter()
            .filter(|m| {
                self.definitions.is_empty() || self.definitions.values().any(|d| d.contains_key(*m))
            })
            .cloned()
            .collect()
    }

    fn load_definitions(
        &mut self,
        now_ms: i64,
        run: &mut RunStats,
        logs: &mut Vec<LogRecord>,
    ) -> Result<(), String> {
        let arm = self.settings.arm_endpoint.trim_end_matches('/').to_string();
        let token = self.token("arm", &format!("{arm}/.default"), now_ms, run)?;
        for resource in self.resources.clone() {
            let url = format!(
                "{arm}{}/providers/Microsoft.Insights/metricDefinitions?api-version={ARM_API}",
                resource.id
            );
            let answer = self.send(Request::get(&url), Some(&token), "definitions", run)?;
            let mut defined = Definitions::new();
            for d in answer["value"].as_array().into_iter().flatten() {
                if let Some(name) = d["name"]["value"].as_str() {
                    let primary = d["primaryAggregationType"]
                        .as_str()
                        .unwrap_or("Average")
                        .to_ascii_lowercase();
                    defined.insert(name.to_string(), primary);
                }
            }
            for m in &self.settings.metrics {
                if !defined.contains_key(m) {
                    logs.push(log_line(
                        sotp_guest::Level::Warn,
                        format!("metric `{m}` is not defined for {}: skipped", resource.id),
                    ));
                }
            }
            self.definitions
                .insert(resource.id.to_ascii_lowercase(), defined);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn query(
        &mut self,
        subscription: &str,
        resources: &[Resource],
        names: &[String],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
        run: &mut RunStats,
        out: &mut Vec<Sample>,
    ) -> Result<(), String> {
        let endpoint = self.settings.metrics_endpoint.clone().unwrap_or_else(|| {
            format!("https://{}.metrics.monitor.azure.com", self.settings.region)
        });
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let token = self.token(
            "metrics",
            "https://metrics.monitor.azure.com/.default",
            now_ms,
            run,
        )?;
        let aggregations = if self.settings.aggregations.is_empty() {
            let mut primary: Vec<String> = self
                .definitions
                .values()
                .flat_map(|d| names.iter().filter_map(|n| d.get(n).cloned()))
                .collect();
            primary.sort();
            primary.dedup();
            if primary.is_empty() {
                vec!["average".to_string()]
            } else {
                primary
            }
        } else {
            self.settings
                .aggregations
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect()
        };
        let query = http::form_encode(&[
            ("metricnamespace", self.settings.namespace.as_str()),
            ("metricnames", names.join(",").as_str()),
            ("starttime", iso8601(start_ms).as_str()),
            ("endtime", iso8601(end_ms).as_str()),
            (
                "interval",
                format!("PT{}M", self.settings.interval_s / 60).as_str(),
            ),
            ("aggregation", aggregations.join(",").as_str()),
            ("api-version", METRICS_API),
        ]);
        let url = format!("{endpoint}/subscriptions/{subscription}/metrics:getBatch?{query}");
        let body = serde_json::json!({
            "resourceids": resources.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        });
        let mut request = Request::get(&url).header("Content-Type", "application/json");
        request.method = Method::Post;
        request.body = body.to_string().into_bytes();
        let answer = self.send(request, Some(&token), "metrics", run)?;
        let kind = prom_name(
            self.settings
                .namespace
                .rsplit('/')
                .next()
                .unwrap_or(&self.settings.namespace),
        );
        for value in answer["values"].as_array().into_iter().flatten() {
            let Some(resource) = value["resourceid"]
                .as_str()
                .and_then(|id| {
                    self.resources
                        .iter()
                        .find(|r| r.id.eq_ignore_ascii_case(id))
                })
                .cloned()
            else {
                continue;
            };
            for metric in value["value"].as_array().into_iter().flatten() {
                let name = metric["name"]["value"].as_str().unwrap_or_default();
                if metric["errorCode"].as_str().is_some_and(|c| c != "Success") {
                    continue;
                }
                for series in metric["timeseries"].as_array().into_iter().flatten() {
                    let mut labels = vec![
                        label("resource_id", &resource.id.to_ascii_lowercase()),
                        label("resource_name", &resource.name),
                        label("resource_group", &resource.group),
                        label("subscription_id", &resource.subscription),
                    ];
                    for m in series["metadatavalues"].as_array().into_iter().flatten() {
                        if let (Some(n), Some(v)) =
                            (m["name"]["value"].as_str(), m["value"].as_str())
                        {
                            labels.push(label(&format!("dimension_{}", prom_name(n)), v));
                        }
                    }
                    for point in series["data"].as_array().into_iter().flatten() {
                        let Some(t) = point["timeStamp"].as_str().and_then(parse_iso8601) else {
                            continue;
                        };
                        for aggregation in &aggregations {
                            let Some(v) = point[aggregation.as_str()].as_f64() else {
                                continue;
                            };
                            let metric_name =
                                format!("azure_{kind}_{}_{aggregation}", prom_name(name));
                            let key = series_key(&metric_name, &labels);
                            if self.emitted.entry(key).or_default().insert(t) {
                                out.push(sample(&metric_name, labels.clone(), v, t));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A bearer token for `scope`, from the cache or a new client-credentials sign-in.
    fn token(
        &mut self,
        audience: &'static str,
        scope: &str,
        now_ms: i64,
        run: &mut RunStats,
    ) -> Result<String, String> {
        if let Some(t) = self.tokens.get(audience)
            && t.until_ms > now_ms
        {
            return Ok(t.value.clone());
        }
        let secret = sotp_guest::secret(&self.settings.client_secret).map_err(|e| describe(&e))?;
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.settings.login_endpoint.trim_end_matches('/'),
            self.settings.tenant_id
        );
        let request = Request::post_form(
            &url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &self.settings.client_id),
                ("client_secret", secret.trim()),
                ("scope", scope),
            ],
        );
        let answer = self
            .send(request, None, "token", run)
            .map_err(|e| format!("sign-in as {} failed: {e}", self.settings.client_id))?;
        let value = answer["access_token"]
            .as_str()
            .ok_or("the sign-in answered no access_token")?
            .to_string();
        let lifetime = answer["expires_in"].as_i64().unwrap_or(3600);
        self.tokens.insert(
            audience,
            Token {
                value: value.clone(),
                until_ms: now_ms + (lifetime - 60).max(0) * 1000,
            },
        );
        Ok(value)
    }

    /// One request; its JSON answer, or an error with Azure's code and message.
    fn send(
        &self,
        mut request: Request,
        bearer: Option<&str>,
        call: &'static str,
        run: &mut RunStats,
    ) -> Result<Value, String> {
        if let Some(token) = bearer {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request = request
            .header("Accept", "application/json")
            .timeout_ms(self.settings.timeout_ms);
        request.max_body_bytes = 8 << 20;
        *run.requests.entry(call).or_default() += 1;
        let response = http::send(&request)
            .map_err(|f| format!("{call}: {} (in {})", describe(&f.error), f.phase))?;
        if response.status == 429 {
            run.throttled += 1;
            let after = response
                .header("retry-after")
                .unwrap_or("a while")
                .to_string();
            return Err(format!(
                "{call}: throttled by Azure (429), retry after {after} s"
            ));
        }
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if response.status != 200 {
            return Err(format!(
                "{call}: HTTP {}: {}",
                response.status,
                azure_error(&json)
            ));
        }
        Ok(json)
    }
}

/// Azure's error shapes: Entra ID's `error` + `error_description`, ARM's `error.code` +
/// `error.message`.
fn azure_error(json: &Value) -> String {
    if let Some(code) = json["error"].as_str() {
        let description = json["error_description"].as_str().unwrap_or("");
        let first = description.lines().next().unwrap_or("").trim_end();
        return format!("{code}: {first}");
    }
    match (
        json["error"]["code"].as_str(),
        json["error"]["message"].as_str(),
    ) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => "no error detail".into(),
    }
}

/// Milliseconds since the epoch as `2026-12-02T06:00:00Z`.
fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2026-12-02T06:00:00Z` (fractions and offsets `Z`/`+00:00` accepted) → milliseconds.
fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let ms = frac
        .get(..frac.len().min(3))
        .filter(|f| !f.is_empty())
        .and_then(|f| format!("{f:0<3}").parse::<i64>().ok())
        .unwrap_or(0);
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s) * 1000 + ms)
}

/// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn prom_name(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

fn series_key(metric: &str, labels: &[Label]) -> String {
    let mut key = metric.to_string();
    for l in labels {
        key.push('\u{1}');
        key.push_str(&l.name);
        key.push('=');
        key.push_str(&l.value);
    }
    key
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn sample(metric: &str, labels: Vec<Label>, value: f64, at_ms: i64) -> Sample {
    Sample {
        metric: metric.into(),
        labels,
        value,
        timestamp_ms: Some(at_ms),
    }
}

fn log_line(level: sotp_guest::Level, message: String) -> LogRecord {
    LogRecord {
        level,
        message,
        labels: Vec::new(),
        timestamp_ms: None,
    }
}

sotp_guest::collector!(AzureMonitor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_796_191_200_000), "2026-12-02T06:00:00Z");
        assert_eq!(
            parse_iso8601("2026-12-02T06:00:00Z"),
            Some(1_796_191_200_000)
        );
        assert_eq!(
            parse_iso8601("2026-12-02T06:00:00.5Z"),
            Some(1_796_191_200_500)
        );
        assert_eq!(
            parse_iso8601("2024-02-29T23:59:59+00:00"),
            Some(1_709_251_199_000)
        );
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[test]
    fn resource_ids_and_names() {
        let r = Resource::parse(
            "/subscriptions/s1/resourceGroups/web/providers/Microsoft.Compute/virtualMachines/web1",
        )
        .unwrap();
        assert_eq!(
            (r.subscription.as_str(), r.group.as_str(), r.name.as_str()),
            ("s1", "web", "web1")
        );
        assert!(Resource::parse("/subscriptions/s1").is_err());
        assert_eq!(prom_name("Percentage CPU"), "percentage_cpu");
        assert_eq!(prom_name("virtualMachines"), "virtualmachines");
    }

    #[test]
    fn azure_errors_are_named() {
        let entra = serde_json::json!({"error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"});
        assert_eq!(
            azure_error(&entra),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        let arm = serde_json::json!({"error": {"code": "AuthorizationFailed", "message": "no"}});
        assert_eq!(azure_error(&arm), "AuthorizationFailed: no");
    }
}
