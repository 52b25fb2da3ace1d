//! PromQL over the tenant's samples, for the Prometheus-compatible read API
//! (`/api/v1/query`, `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`) that Grafana's Prometheus data source and `promtool` use.
//!
//! In: a PromQL expression (parsed by `promql-parser`, GreptimeDB's maintained port of
//! Prometheus's grammar), a tenant, and the instants to evaluate it at. Out: a scalar or
//! vector per instant, as Prometheus's engine computes it — selectors look back 5 minutes for
//! the newest sample, `rate`/`increase` extrapolate as Prometheus's `extrapolatedRate` does,
//! `histogram_quantile` interpolates within buckets as Prometheus does.
//!
//! Supported: selectors with `=`, `!=`, `=~`, `!~` and `offset`; `rate`, `irate`,
//! `increase`, `avg/min/max/sum/count/last_over_time`, `histogram_quantile`, `abs`,
//! `clamp_min`, `clamp_max`; `sum`, `avg`, `min`, `max`, `count`, `topk`, `bottomk` with
//! `by`/`without`; arithmetic and comparisons between series and scalars, and between two
//! vectors matched one to one (`on`/`ignoring`); `and`, `or`, `unless`. Anything else is an
//! error naming the construct (a 4xx at the API), never a silently different answer.
//!
//! Bounded: at most `MAX_STEPS` instants a query, `MAX_SERIES` series a selector, and the
//! operator's point budget (`Limits::max_promql_points`) of raw points a query reads.

mod eval;
mod functions;

pub use eval::{Labels, Limits, RawSeries, Sample, Source, Value, evaluate};

/// Instants a range query may evaluate (Prometheus's limit).
pub const MAX_STEPS: i64 = 11_000;
/// Series one selector may match.
pub const MAX_SERIES: usize = 10_000;
/// How far back a selector looks for a series' newest sample.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Why a query was not answered: what the client asked for is not something we do
/// (`Unsupported`, `Invalid`), or it asks for too much (`TooLarge`), or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Store(String),
}

/// Parse `text` as PromQL.
pub fn parse(text: &str) -> Result<promql_parser::parser::Expr, PromError> {
    promql_parser::parser::parse(text).map_err(|e| PromError::Invalid(format!("parse error: {e}")))
}

/// The instants of a range query, checked against `MAX_STEPS`.
pub fn steps(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Vec<i64>, PromError> {
    if step_ms <= 0 {
        return Err(PromError::Invalid(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if end_ms < start_ms {
        return Err(PromError::Invalid(
            "end timestamp must not be before start time".into(),
        ));
    }
    let n = (end_ms - start_ms) / step_ms + 1;
    if n > MAX_STEPS {
        return Err(PromError::TooLarge(format!(
            "exceeded maximum resolution of {MAX_STEPS} points per timeseries. Try decreasing the query resolution (?step=XX)"
        )));
    }
    Ok((0..n).map(|i| start_ms + i * step_ms).collect())
}

/// The telemetry store as a PromQL source for one tenant.
pub struct StoreSource<'a> {
    pub store: &'a crate::telemetry::TelemetryStore,
    pub tenant: &'a str,
}

impl eval::Source for StoreSource<'_> {
    fn metric_names(&self) -> Vec<String> {
        self.store.metric_names(self.tenant)
    }

    fn select(
        &self,
        metric: &str,
        matchers: &[crate::telemetry::Matcher],
        start_ms: i64,
        end_ms: i64,
        max_points: usize,
    ) -> Result<Vec<eval::RawSeries>, PromError> {
        let query = crate::telemetry::SampleQuery {
            tenant: self.tenant.to_string(),
            metric: metric.to_string(),
            matchers: matchers.to_vec(),
            start_ms,
            end_ms: end_ms.max(start_ms + 1),
            step_ms: None,
            aggregation: crate::telemetry::Aggregation::Avg,
            group_by: None,
            max_points,
        };
        let series = self.store.query(&query).map_err(|e| match e {
            crate::telemetry::QueryError::Invalid(m) => PromError::TooLarge(m),
            other => PromError::Store(other.to_string()),
        })?;
        Ok(series
            .into_iter()
            .map(|s| eval::RawSeries {
                labels: s.labels,
                points: s.points,
            })
            .collect())
    }
}

/// The label sets (with `__name__`) of the tenant's series a selector matches, at most
/// `limit`; every series of the tenant for `None`.
pub fn series(
    store: &crate::telemetry::TelemetryStore,
    tenant: &str,
    selector: Option<&promql_parser::parser::Expr>,
    limit: usize,
) -> Result<Vec<eval::Labels>, PromError> {
    let (name, matchers) = match selector {
        None => (None, Vec::new()),
        Some(promql_parser::parser::Expr::VectorSelector(vs)) => {
            if !vs.matchers.or_matchers.is_empty() {
                return Err(PromError::Unsupported(
                    "`or` between label matchers is not supported".into(),
                ));
            }
            let matchers = vs
                .matchers
                .matchers
                .iter()
                .map(eval::convert)
                .collect::<Result<Vec<_>, _>>()?;
            (vs.name.clone(), matchers)
        }
        Some(other) => {
            return Err(PromError::Invalid(format!(
                "match[] must be a series selector such as up{{job=\"node\"}}, not `{other}`"
            )));
        }
    };
    let mut out = Vec::new();
    for (metric, labels) in store.series_labels(tenant, name.as_deref()) {
        let mut labels = std::sync::Arc::unwrap_or_clone(labels);
        labels.insert("__name__".into(), metric);
        if matchers.iter().all(|m| m.matches(&labels)) {
            out.push(labels);
            if out.len() > limit {
                return Err(PromError::TooLarge(format!(
                    "more than {limit} series match: add label matchers"
                )));
            }
        }
    }
    Ok(out)
}
