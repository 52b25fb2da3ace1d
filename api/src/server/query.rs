//! `GET /v1/query`: samples by metric, label matchers and time range, raw or bucketed by a
//! step with an aggregation. `GET /v1/logs`: recent telemetry log records.
//!
//! Parameters: `metric` (required); `match` (repeatable: `room=kitchen`, `room!=hall`,
//! `room=~k.*`, `room!~h.*`); `start`/`end` (ms since the epoch, RFC 3339, `now` or
//! `now-5m`), or `since` (a duration back from now; default 1h); `step` ("30s");
//! `agg` (avg|sum|min|max|count|rate; default avg); `by` (comma-separated labels to group
//! series by; empty = all series together).

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};
use sotp_runtime::Scope;
use sotp_runtime::telemetry::{Aggregation, Matcher, SampleQuery};
use std::time::Duration;

pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant(Scope::Read)?.to_string();
    let q = parse_query(
        &tenant,
        raw.as_deref().unwrap_or(""),
        sotp_runtime::now_ms(),
        state.runtime.config.limits.max_query_points,
    )?;
    let (start, end, step, agg) = (q.start_ms, q.end_ms, q.step_ms, q.aggregation);
    let series = state.runtime.query(q).await?;
    Ok(Json(json!({
        "start_ms": start,
        "end_ms": end,
        "step_ms": step,
        "aggregation": step.map(|_| agg),
        "series": series,
    })))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", detail)
}

pub fn parse_query(
    tenant: &str,
    raw: &str,
    now_ms: i64,
    max_points: usize,
) -> Result<SampleQuery, ApiError> {
    let mut metric = None;
    let mut matchers = Vec::new();
    let (mut start, mut end, mut since, mut step, mut agg, mut by) =
        (None, None, None, None, None, None);
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "metric" => metric = Some(value),
            "match" => matchers.push(Matcher::parse(&value).map_err(|e| invalid(e.to_string()))?),
            "start" => start = Some(parse_time(&value, now_ms).map_err(invalid)?),
            "end" => end = Some(parse_time(&value, now_ms).map_err(invalid)?),
            "since" => since = Some(parse_duration(&value).map_err(invalid)?),
            "step" => step = Some(parse_duration(&value).map_err(invalid)?),
            "agg" => {
                agg = Some(
                    value
                        .parse::<Aggregation>()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            "by" => {
                by = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            other => return Err(invalid(format!("unknown parameter `{other}`"))),
        }
    }
    let metric = metric.ok_or_else(|| invalid("`metric` is required"))?;
    let end_ms = end.unwrap_or(now_ms + 1);
    let start_ms = match (start, since) {
        (Some(_), Some(_)) => return Err(invalid("give `start` or `since`, not both")),
        (Some(s), None) => s,
        (None, Some(d)) => end_ms - d.as_millis() as i64,
        (None, None) => end_ms - 3_600_000,
    };
    let query = SampleQuery {
        tenant: tenant.to_string(),
        metric,
        matchers,
        start_ms,
        end_ms,
        step_ms: step.map(|d| d.as_millis() as i64),
        aggregation: agg.unwrap_or(Aggregation::Avg),
        group_by: by,
        max_points,
    };
    query.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(query)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}); try 5m"))
}

/// ms since the epoch, RFC 3339, `now`, or `now-<duration>`.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(back) = text.strip_prefix("now-") {
        return Ok(now_ms - parse_duration(back)?.as_millis() as i64);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| {
            format!("`{text}` is not a time: use ms since the epoch, RFC 3339, now or now-5m")
        })
}

#[derive(serde::Deserialize)]
pub struct LogParams {
    component: Option<String>,
    limit: Option<usize>,
}

pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Query(p): axum::extract::Query<LogParams>,
) -> ApiResult<Json<Value>> {
    let records = state
        .runtime
        .telemetry_logs(
            caller.tenant(Scope::Read)?,
            p.component,
            p.limit.unwrap_or(100).min(10_000),
        )
        .await?;
    Ok(Json(json!({ "logs": records })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_parse() {
        let q = parse_query(
            "acme",
            "metric=temp&match=room%3Dkitchen&match=floor!%3D2&since=10m&step=1m&agg=max&by=room",
            1_000_000,
            1000,
        )
        .unwrap();
        assert_eq!(q.metric, "temp");
        assert_eq!(q.matchers.len(), 2);
        assert_eq!(q.end_ms - q.start_ms, 600_000);
        assert_eq!(q.step_ms, Some(60_000));
        assert_eq!(q.aggregation, Aggregation::Max);
        assert_eq!(q.group_by, Some(vec!["room".to_string()]));
    }

    #[test]
    fn bad_query_strings_are_named() {
        let err = |raw| parse_query("a", raw, 0, 1000).unwrap_err().detail;
        assert!(err("since=5m").contains("metric"));
        assert!(err("metric=x&agg=median").contains("median"));
        assert!(err("metric=x&start=yesterday").contains("yesterday"));
        assert!(err("metric=x&colour=blue").contains("colour"));
        assert!(err("metric=x&agg=rate").contains("step"));
    }

    #[test]
    fn times_parse_in_every_form() {
        assert_eq!(parse_time("1234", 0), Ok(1234));
        assert_eq!(parse_time("now-1m", 100_000), Ok(40_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Ok(1000));
    }
}
