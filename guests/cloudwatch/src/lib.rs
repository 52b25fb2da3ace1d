//! `cloudwatch`: AWS CloudWatch metrics as a collector, through the host's `aws` capability
//! (SigV4, credentials, STS AssumeRole, the account's shared rate limiter and throttling
//! backoff all live there; this component never sees a secret key).
//!
//! Each run:
//! 1. **Discovery** (every `discovery_interval_s`, default 600): `ListMetrics` for each entry
//!    of `metrics` — its `namespace`, optionally `metric_names`, keeping metrics that carry
//!    every dimension named in `dimensions` and match `dimension_values` exactly.
//! 2. **Reading**: `GetMetricData` for every (metric, statistic), up to 500 queries a call,
//!    over the window `[now − delay − lookback, now − delay]` aligned to `period`.
//!    CloudWatch's newest values lag and keep converging for minutes, so the whole lookback
//!    window is read again every run and each datapoint is emitted once, the first run it
//!    appears: data that arrives late fills in instead of leaving a gap (YACE#264), and a
//!    datapoint is never emitted twice.
//! 3. **Cost**: GetMetricData is billed per metric requested and ListMetrics per request
//!    ($0.01 per 1,000 each, `price_per_1000` to change it): the run's planned cost is
//!    emitted and logged before GetMetricData is called, the actual one after, with the API
//!    calls made, retries and throttling replies.
//!
//! Samples follow YACE's names: `aws_<namespace>_<metric>_<statistic>` (lowercase, `AWS/`
//! dropped), labels `dimension_<Name>`, `region`, `account_id`, stamped with CloudWatch's
//! timestamps. Run samples: `cloudwatch_api_requests{action}`, `cloudwatch_api_throttled`,
//! `cloudwatch_metrics_requested`, `cloudwatch_discovered_metrics`,
//! `cloudwatch_run_planned_cost_usd`, `cloudwatch_run_cost_usd`, and
//! `cloudwatch_monthly_cost_usd` (the run's cost over a month at the interval seen between
//! runs).
//!
//! Keys: `region`, `credentials_secret`, `role_arn`, `endpoint`, `sts_endpoint` (for VPC
//! endpoints or an emulator), `period_s` (60), `delay_s` (120), `lookback_s` (600),
//! `timeout_ms` (20000), `metrics` (see above; `statistics` default `["Average"]`).

use serde::Deserialize;
use serde_json::{Value, json};
use sotp_guest::host::aws;
use sotp_guest::host::http::{Header, Method};
use sotp_guest::{Collector, Config, Label, LogRecord, Sample, Tick, describe};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// GetMetricData's limit of queries per call.
const MAX_QUERIES: usize = 500;
/// Pages of one listing or one batch followed at most.
const MAX_PAGES: usize = 50;
/// Metrics kept from discovery at most (a run would request them all).
const MAX_METRICS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    region: String,
    credentials_secret: String,
    role_arn: Option<String>,
    endpoint: Option<String>,
    sts_endpoint: Option<String>,
    #[serde(default = "default_period")]
    period_s: u32,
    #[serde(default = "default_delay")]
    delay_s: u32,
    #[serde(default = "default_lookback")]
    lookback_s: u32,
    #[serde(default = "default_discovery")]
    discovery_interval_s: u32,
    #[serde(default = "default_timeout")]
    timeout_ms: u32,
    #[serde(default = "default_price")]
    price_per_1000: f64,
    metrics: Vec<Job>,
}

fn default_period() -> u32 {
    60
}
fn default_delay() -> u32 {
    120
}
fn default_lookback() -> u32 {
    600
}
fn default_discovery() -> u32 {
    600
}
fn default_timeout() -> u32 {
    20_000
}
fn default_price() -> f64 {
    0.01
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    namespace: String,
    #[serde(default)]
    metric_names: Vec<String>,
    /// Dimension names a metric must carry (all of them).
    #[serde(default)]
    dimensions: Vec<String>,
    /// Dimension values a metric must have.
    #[serde(default)]
    dimension_values: BTreeMap<String, String>,
    #[serde(default = "default_statistics")]
    statistics: Vec<String>,
}

fn default_statistics() -> Vec<String> {
    vec!["Average".into()]
}

/// A discovered metric.
#[derive(Clone, Debug, PartialEq)]
struct Metric {
    job: usize,
    namespace: String,
    name: String,
    dimensions: Vec<(String, String)>,
}

/// One GetMetricData query: a metric and a statistic, and the series it becomes.
struct Query {
    metric: Metric,
    stat: String,
    series: String,
    labels: Vec<Label>,
}

/// What one run did, for its samples and log line.
#[derive(Default)]
struct RunStats {
    requests: BTreeMap<&'static str, u32>,
    billed_requests: u32,
    throttled: u32,
    waited_ms: u64,
    metrics_requested: u32,
    /// The AWS account the calls were made in.
    account: String,
}

struct CloudWatch {
    settings: Settings,
    metrics: Vec<Metric>,
    discovered_at_ms: Option<i64>,
    account: String,
    /// Datapoint times already emitted, per series (pruned to the lookback window).
    emitted: HashMap<String, BTreeSet<i64>>,
    /// When the previous run was due: the interval the monthly projection assumes.
    last_tick_ms: Option<i64>,
}

impl Collector for CloudWatch {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config.0.clone()).map_err(|e| format!("config: {e}"))?;
        if settings.metrics.is_empty() {
            return Err("config.metrics: name at least one namespace to read".into());
        }
        let p = settings.period_s;
        if !(matches!(p, 1 | 5 | 10 | 30) || (p >= 60 && p.is_multiple_of(60))) {
            return Err("config.period_s: 1, 5, 10, 30, or a multiple of 60 seconds".into());
        }
        Ok(CloudWatch {
            settings,
            metrics: Vec::new(),
            discovered_at_ms: None,
            account: String::new(),
            emitted: HashMap::new(),
            last_tick_ms: None,
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let now_ms = tick.scheduled_at_ms;
        let mut run = RunStats::default();
        let result = self.run(now_ms, &mut run);
        let mut out = Vec::new();
        self.run_samples(&run, now_ms, &mut out);
        let (points, error) = match result {
            Ok(points) => (points, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        out.extend(points);
        for chunk in out.chunks(20_000) {
            sotp_guest::host::emit::samples(chunk).map_err(|e| describe(&e))?;
        }
        let cost = self.cost(run.billed_requests, run.metrics_requested);
        let mut line = format!(
            "run: {} ({} metrics requested), {} throttled, {} ms waited, cost ${cost:.6}",
            requests_text(&run.requests),
            run.metrics_requested,
            run.throttled,
            run.waited_ms,
        );
        // What a month of runs at this interval costs, once an interval has been seen.
        let interval = self
            .last_tick_ms
            .map(|last| now_ms - last)
            .filter(|i| *i > 0);
        self.last_tick_ms = Some(now_ms);
        if let Some(interval) = interval {
            let monthly = cost * (30.0 * 86_400_000.0 / interval as f64);
            line = format!(
                "{line}, about ${monthly:.2} a month at one run every {} s",
                interval / 1000
            );
            let _ = sotp_guest::host::emit::samples(&[Sample {
                metric: "cloudwatch_monthly_cost_usd".into(),
                labels: vec![label("region", &self.settings.region)],
                value: monthly,
                timestamp_ms: Some(now_ms),
            }]);
        }
        if let Some(e) = &error {
            line = format!("{line}; failed: {e}");
        }
        let level = if error.is_some() {
            sotp_guest::Level::Error
        } else {
            sotp_guest::Level::Info
        };
        let _ = sotp_guest::host::emit::logs(&[LogRecord {
            level,
            message: line,
            labels: vec![label("region", &self.settings.region)],
            timestamp_ms: None,
        }]);
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl CloudWatch {
    fn run(&mut self, now_ms: i64, run: &mut RunStats) -> Result<Vec<Sample>, String> {
        let stale = self
            .discovered_at_ms
            .is_none_or(|at| now_ms - at >= i64::from(self.settings.discovery_interval_s) * 1000);
        if stale {
            self.metrics = self.discover(run)?;
            self.discovered_at_ms = Some(now_ms);
        }
        let queries = self.queries();
        let planned = self.cost(0, queries.len() as u32);
        let _ = sotp_guest::host::emit::samples(&[Sample {
            metric: "cloudwatch_run_planned_cost_usd".into(),
            labels: vec![label("region", &self.settings.region)],
            value: planned,
            timestamp_ms: Some(now_ms),
        }]);
        let period_ms = i64::from(self.settings.period_s) * 1000;
        let end = (now_ms - i64::from(self.settings.delay_s) * 1000) / period_ms * period_ms;
        let start = end - i64::from(self.settings.lookback_s.max(self.settings.period_s)) * 1000;
        let mut out = Vec::new();
        for batch in queries.chunks(MAX_QUERIES) {
            self.read_batch(batch, start, end, run, &mut out)?;
        }
        for times in self.emitted.values_mut() {
            times.retain(|t| *t >= start);
        }
        self.emitted.retain(|_, times| !times.is_empty());
        Ok(out)
    }

    /// ListMetrics for every job, paginated; metrics filtered by dimensions.
    fn discover(&mut self, run: &mut RunStats) -> Result<Vec<Metric>, String> {
        let mut found = Vec::new();
        for (index, job) in self.settings.metrics.iter().enumerate() {
            let names: Vec<Option<&String>> = if job.metric_names.is_empty() {
                vec![None]
            } else {
                job.metric_names.iter().map(Some).collect()
            };
            for name in names {
                let mut token: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let mut body = json!({ "Namespace": job.namespace });
                    if let Some(n) = name {
                        body["MetricName"] = json!(n);
                    }
                    if !job.dimension_values.is_empty() {
                        body["Dimensions"] = job
                            .dimension_values
                            .iter()
                            .map(|(n, v)| json!({"Name": n, "Value": v}))
                            .collect();
                    }
                    if let Some(t) = &token {
                        body["NextToken"] = json!(t);
                    }
                    let answer = self.call("ListMetrics", &body, run)?;
                    for m in answer["Metrics"].as_array().into_iter().flatten() {
                        if let Some(metric) = metric_of(index, job, m)
                            && found.len() < MAX_METRICS
                        {
                            found.push(metric);
                        }
                    }
                    token = answer["NextToken"].as_str().map(str::to_string);
                    if token.is_none() {
                        break;
                    }
                }
            }
        }
        found.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.dimensions).cmp(&(&b.namespace, &b.name, &b.dimensions))
        });
        found.dedup();
        Ok(found)
    }

    fn queries(&self) -> Vec<Query> {
        let mut queries = Vec::new();
        for metric in &self.metrics {
            let job = &self.settings.metrics[metric.job];
            for stat in &job.statistics {
                let series = format!(
                    "aws_{}_{}_{}",
                    prom_name(metric.namespace.trim_start_matches("AWS/")),
                    prom_name(&metric.name),
                    prom_name(stat)
                );
                let mut labels: Vec<Label> = metric
                    .dimensions
                    .iter()
                    .map(|(n, v)| label(&format!("dimension_{}", label_name(n)), v))
                    .collect();
                labels.push(label("region", &self.settings.region));
                queries.push(Query {
                    metric: metric.clone(),
                    stat: stat.clone(),
                    series,
                    labels,
                });
            }
        }
        queries
    }

    /// One GetMetricData batch (≤ 500 queries), paginated; new datapoints into `out`.
    fn read_batch(
        &mut self,
        batch: &[Query],
        start_ms: i64,
        end_ms: i64,
        run: &mut RunStats,
        out: &mut Vec<Sample>,
    ) -> Result<(), String> {
        let queries: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, q)| {
                json!({
                    "Id": format!("q{i}"),
                    "MetricStat": {
                        "Metric": {
                            "Namespace": q.metric.namespace,
                            "MetricName": q.metric.name,
                            "Dimensions": q.metric.dimensions.iter()
                                .map(|(n, v)| json!({"Name": n, "Value": v}))
                                .collect::<Vec<_>>(),
                        },
                        "Period": self.settings.period_s,
                        "Stat": q.stat,
                    },
                    "ReturnData": true,
                })
            })
            .collect();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = json!({
                "MetricDataQueries": queries,
                "StartTime": start_ms / 1000,
                "EndTime": end_ms / 1000,
                "ScanBy": "TimestampAscending",
            });
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            run.metrics_requested += batch.len() as u32;
            let answer = self.call("GetMetricData", &body, run)?;
            self.account = run.account.clone();
            for result in answer["MetricDataResults"].as_array().into_iter().flatten() {
                let Some(index) = result["Id"]
                    .as_str()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|i| *i < batch.len())
                else {
                    continue;
                };
                self.take_points(&batch[index], result, out);
            }
            token = answer["NextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// A result's datapoints not emitted before.
    fn take_points(&mut self, query: &Query, result: &Value, out: &mut Vec<Sample>) {
        let times = result["Timestamps"].as_array();
        let values = result["Values"].as_array();
        let (Some(times), Some(values)) = (times, values) else {
            return;
        };
        let key = series_key(&query.series, &query.labels);
        let mut labels = query.labels.clone();
        labels.push(label("account_id", &self.account));
        let seen = self.emitted.entry(key).or_default();
        for (t, v) in times.iter().zip(values) {
            let (Some(t), Some(v)) = (timestamp_ms(t), v.as_f64()) else {
                continue;
            };
            if seen.insert(t) {
                out.push(Sample {
                    metric: query.series.clone(),
                    labels: labels.clone(),
                    value: v,
                    timestamp_ms: Some(t),
                });
            }
        }
    }

    /// One CloudWatch action over the JSON protocol; the answer's JSON, or an error saying
    /// what AWS answered.
    fn call(
        &self,
        action: &'static str,
        body: &Value,
        run: &mut RunStats,
    ) -> Result<Value, String> {
        let s = &self.settings;
        let request = aws::Request {
            credentials_secret: s.credentials_secret.clone(),
            role_arn: s.role_arn.clone(),
            service: "monitoring".into(),
            region: s.region.clone(),
            endpoint: s.endpoint.clone(),
            sts_endpoint: s.sts_endpoint.clone(),
            method: Method::Post,
            path: "/".into(),
            headers: vec![
                header("content-type", "application/x-amz-json-1.0"),
                header(
                    "x-amz-target",
                    &format!("GraniteServiceVersion20100801.{action}"),
                ),
            ],
            body: body.to_string().into_bytes(),
            timeout_ms: s.timeout_ms,
        };
        let response = aws::call(&request).map_err(|e| format!("{action}: {}", describe(&e)))?;
        *run.requests.entry(action).or_default() += response.attempts;
        run.throttled += response.throttled;
        run.billed_requests += if action == "ListMetrics" {
            response.attempts - response.throttled
        } else {
            0
        };
        run.waited_ms += u64::from(response.waited_ms);
        run.account = response.account.clone();
        if response.status != 200 {
            let why = aws_error(&response.body);
            let hint = match response.status {
                403 => {
                    " (AWS refused the credentials or the permission: check the secret and the IAM policy)"
                }
                400 if response.throttled > 0 => {
                    " (still throttled after retries: the account's rate was lowered)"
                }
                _ => "",
            };
            return Err(format!("{action}: HTTP {}: {why}{hint}", response.status));
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| format!("{action}: the answer is not JSON ({e})"))
    }

    fn cost(&self, requests: u32, metrics: u32) -> f64 {
        f64::from(requests + metrics) * self.settings.price_per_1000 / 1000.0
    }

    fn run_samples(&self, run: &RunStats, now_ms: i64, out: &mut Vec<Sample>) {
        let region = label("region", &self.settings.region);
        let mut push = |metric: &str, extra: Option<Label>, value: f64| {
            let mut labels = vec![region.clone()];
            labels.extend(extra);
            out.push(Sample {
                metric: metric.into(),
                labels,
                value,
                timestamp_ms: Some(now_ms),
            });
        };
        for (action, n) in &run.requests {
            push(
                "cloudwatch_api_requests",
                Some(label("action", action)),
                f64::from(*n),
            );
        }
        push("cloudwatch_api_throttled", None, f64::from(run.throttled));
        push(
            "cloudwatch_metrics_requested",
            None,
            f64::from(run.metrics_requested),
        );
        push(
            "cloudwatch_discovered_metrics",
            None,
            self.metrics.len() as f64,
        );
        push(
            "cloudwatch_run_cost_usd",
            None,
            self.cost(run.billed_requests, run.metrics_requested),
        );
    }
}

/// A ListMetrics entry as a metric of `job`, if it has the job's dimensions.
fn metric_of(index: usize, job: &Job, m: &Value) -> Option<Metric> {
    let name = m["MetricName"].as_str()?.to_string();
    if !job.metric_names.is_empty() && !job.metric_names.contains(&name) {
        return None;
    }
    let mut dimensions: Vec<(String, String)> = m["Dimensions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["Name"].as_str()?.to_string(),
                d["Value"].as_str()?.to_string(),
            ))
        })
        .collect();
    dimensions.sort();
    let has = |n: &String| dimensions.iter().any(|(d, _)| d == n);
    if !job.dimensions.iter().all(has) {
        return None;
    }
    let matches = job
        .dimension_values
        .iter()
        .all(|(n, v)| dimensions.iter().any(|(d, dv)| d == n && dv == v));
    matches.then_some(Metric {
        job: index,
        namespace: m["Namespace"]
            .as_str()
            .unwrap_or(&job.namespace)
            .to_string(),
        name,
        dimensions,
    })
}

/// CloudWatch's JSON timestamps are epoch seconds (integer or fractional).
fn timestamp_ms(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| (s * 1000.0).round() as i64)
}

/// `CPUUtilization` → `cpuutilization`, `Test/App` → `test_app` (YACE's names).
fn prom_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn label_name(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
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

fn requests_text(requests: &BTreeMap<&'static str, u32>) -> String {
    if requests.is_empty() {
        return "no API calls".into();
    }
    requests
        .iter()
        .map(|(a, n)| format!("{n} {a}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// AWS's error code and message (JSON protocol: `__type`, `message`).
fn aws_error(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let code = v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string());
        let message = v["message"].as_str().or(v["Message"].as_str());
        match (code, message) {
            (Some(c), Some(m)) => return format!("{c}: {m}"),
            (Some(c), None) => return c,
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    // Query-protocol XML errors (STS, older endpoints): the code between <Code> tags.
    match (text.find("<Code>"), text.find("</Code>")) {
        (Some(a), Some(b)) if b > a => text[a + 6..b].to_string(),
        _ => text.trim().to_string(),
    }
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

sotp_guest::collector!(CloudWatch);

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            namespace: "AWS/EC2".into(),
            metric_names: vec!["CPUUtilization".into()],
            dimensions: vec!["InstanceId".into()],
            dimension_values: BTreeMap::new(),
            statistics: default_statistics(),
        }
    }

    #[test]
    fn discovery_keeps_metrics_with_the_dimensions() {
        let m = json!({"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "InstanceId", "Value": "i-1"}]});
        assert_eq!(
            metric_of(0, &job(), &m).unwrap().dimensions,
            vec![("InstanceId".to_string(), "i-1".to_string())]
        );
        let other = json!({"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "g"}]});
        assert!(metric_of(0, &job(), &other).is_none());
        let mut j = job();
        j.dimension_values.insert("InstanceId".into(), "i-2".into());
        assert!(metric_of(0, &j, &m).is_none());
    }

    #[test]
    fn names_follow_yace() {
        assert_eq!(prom_name("AWS/EC2".trim_start_matches("AWS/")), "ec2");
        assert_eq!(prom_name("CPUUtilization"), "cpuutilization");
        assert_eq!(prom_name("Test/App"), "test_app");
        assert_eq!(timestamp_ms(&json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(timestamp_ms(&json!(1.7e9)), Some(1_700_000_000_000));
    }

    #[test]
    fn errors_name_aws_codes() {
        assert_eq!(
            aws_error(br#"{"__type":"com.amazonaws.cloudwatch#InvalidClientTokenId","message":"The security token included in the request is invalid."}"#),
            "InvalidClientTokenId: The security token included in the request is invalid."
        );
        assert_eq!(
            aws_error(b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"),
            "AccessDenied"
        );
    }
}
