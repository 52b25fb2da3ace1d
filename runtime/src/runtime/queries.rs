//! Queries: samples and logs from the telemetry store, flows from the flow pipeline (with
//! interface names from the inventory).

use super::Runtime;

use crate::error::RuntimeError;
use crate::flow;
use crate::flow::query::{FlowQueryError, RateQuery, RateRow, TopQuery, TopRow};
use crate::flow::service::FlowService;
use crate::telemetry::{SampleQuery, SeriesPoints};
use std::sync::Arc;

impl Runtime {
    // ---- queries ---------------------------------------------------------------------------

    pub async fn query(&self, query: SampleQuery) -> Result<Vec<SeriesPoints>, RuntimeError> {
        let store = self.telemetry.clone();
        Ok(tokio::task::spawn_blocking(move || store.query(&query))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??)
    }

    /// A PromQL expression evaluated at `steps` (ms) over the tenant's samples.
    pub async fn promql(
        &self,
        tenant: String,
        expr: promql_parser::parser::Expr,
        steps: Vec<i64>,
    ) -> Result<crate::promql::Value, crate::promql::PromError> {
        let store = self.telemetry.clone();
        let limits = crate::promql::Limits {
            max_points: self.config.limits.max_promql_points,
        };
        tokio::task::spawn_blocking(move || {
            let source = crate::promql::StoreSource {
                store: &store,
                tenant: &tenant,
            };
            crate::promql::evaluate(&expr, &steps, &source, limits)
        })
        .await
        .map_err(|e| crate::promql::PromError::Store(e.to_string()))?
    }

    /// The label sets of the tenant's series each selector matches (all with none).
    pub async fn promql_series(
        &self,
        tenant: String,
        selectors: Vec<promql_parser::parser::Expr>,
    ) -> Result<Vec<crate::promql::Labels>, crate::promql::PromError> {
        let store = self.telemetry.clone();
        let limit = self.config.limits.max_query_points;
        tokio::task::spawn_blocking(move || {
            if selectors.is_empty() {
                return crate::promql::series(&store, &tenant, None, limit);
            }
            let mut out = Vec::new();
            for s in &selectors {
                out.extend(crate::promql::series(&store, &tenant, Some(s), limit)?);
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
        .await
        .map_err(|e| crate::promql::PromError::Store(e.to_string()))?
    }

    /// A LogQL metric query over the tenant's flows, at `steps` (ms).
    pub async fn logql(
        self: &Arc<Self>,
        tenant: String,
        text: &str,
        steps: Vec<i64>,
    ) -> Result<Vec<crate::logql::Series>, crate::logql::LogqlError> {
        use crate::logql::{self, LogqlError};
        let plan = logql::plan(&logql::parse(text)?)?;
        let (from_ms, to_ms) = plan.window(&steps);
        let query = RateQuery {
            tenant,
            from_ms,
            to_ms,
            by: plan.by.iter().map(|(g, _)| *g).collect(),
            step_ms: 60_000,
            filter: plan.filter.clone(),
            limit: logql::MAX_GROUPS,
        };
        let rows = self.flow_rate(query).await.map_err(|e| match e {
            RuntimeError::Invalid(m) => LogqlError::Invalid(m),
            RuntimeError::NotFound(m) => LogqlError::Unavailable(m),
            other => LogqlError::Unavailable(other.to_string()),
        })?;
        plan.evaluate(&rows, &steps)
    }

    pub(super) fn flow_service(&self) -> Result<Arc<FlowService>, RuntimeError> {
        self.flows.clone().ok_or_else(|| {
            RuntimeError::NotFound(
                "flow collection is off: set runtime.flows.netflow / ipfix / sflow listen addresses".into(),
            )
        })
    }

    /// Top groups of the tenant's flows over a window.
    pub async fn flow_top(self: &Arc<Self>, q: TopQuery) -> Result<Vec<TopRow>, RuntimeError> {
        let (tenant, exporter, by) = (q.tenant.clone(), q.filter.exporter.clone(), q.by.clone());
        self.flow_query(
            tenant,
            by,
            exporter,
            |r: &mut TopRow| &mut r.group,
            move |store| flow::query::top(store, &q),
        )
        .await
    }

    /// Rates per group per time bucket of the tenant's flows.
    pub async fn flow_rate(self: &Arc<Self>, q: RateQuery) -> Result<Vec<RateRow>, RuntimeError> {
        let (tenant, exporter, by) = (q.tenant.clone(), q.filter.exporter.clone(), q.by.clone());
        self.flow_query(
            tenant,
            by,
            exporter,
            |r: &mut RateRow| &mut r.group,
            move |store| flow::query::rate(store, &q),
        )
        .await
    }

    /// Run a flow query and name the interfaces of its rows, off the async threads.
    pub(super) async fn flow_query<R: Send + 'static>(
        self: &Arc<Self>,
        tenant: String,
        by: Vec<flow::query::GroupBy>,
        exporter: Option<String>,
        group: fn(&mut R) -> &mut serde_json::Map<String, serde_json::Value>,
        run: impl FnOnce(&flow::store::FlowStore) -> Result<Vec<R>, flow::query::FlowQueryError>
        + Send
        + 'static,
    ) -> Result<Vec<R>, RuntimeError> {
        let flows = self.flow_service()?;
        self.blocking(move |rt| {
            let mut rows = run(&flows.store).map_err(flow_query_error)?;
            rt.name_flow_interfaces(
                &tenant,
                &by,
                exporter.as_deref(),
                rows.iter_mut().map(group),
            );
            Ok(rows)
        })
        .await
    }

    /// Add interface names to rows grouped by interface, from the interface table of the
    /// inventory device whose address is the exporter (see `flow::enrich::name_interfaces`).
    pub(super) fn name_flow_interfaces<'a>(
        &self,
        tenant: &str,
        by: &[flow::query::GroupBy],
        exporter: Option<&str>,
        groups: impl Iterator<Item = &'a mut serde_json::Map<String, serde_json::Value>>,
    ) {
        use flow::query::GroupBy;
        if !by
            .iter()
            .any(|g| matches!(g, GroupBy::InIf | GroupBy::OutIf))
        {
            return;
        }
        let Ok(devices) = self.state.devices(tenant) else {
            return;
        };
        flow::enrich::name_interfaces(groups, exporter, |exporter| {
            let ip: std::net::IpAddr = exporter.parse().ok()?;
            let device = devices
                .iter()
                .find(|d| d.address.trim().parse::<std::net::IpAddr>().ok() == Some(ip))?;
            let names = self.state.interface_names(tenant, &device.name).ok()?;
            Some(names.into_iter().collect())
        });
    }

    /// Listeners, template state and counters of the whole flow pipeline (the operator's
    /// view), or (`Some(tenant)`) what one tenant may see of it.
    /// The flow pipeline's counters (a tenant's own, or all); with collection off,
    /// `{"enabled": false, "reason"}` — a state to show, not an error.
    pub fn flow_status(&self, tenant: Option<&str>) -> Result<serde_json::Value, RuntimeError> {
        let flows = match self.flow_service() {
            Ok(flows) => flows,
            Err(RuntimeError::NotFound(reason)) => {
                return Ok(serde_json::json!({ "enabled": false, "reason": reason }));
            }
            Err(e) => return Err(e),
        };
        Ok(match tenant {
            None => flows.status(),
            Some(t) => flows.tenant_status(t),
        })
    }

    pub async fn telemetry_logs(
        &self,
        tenant: &str,
        component: Option<String>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, RuntimeError> {
        let store = self.telemetry.clone();
        let tenant = tenant.to_string();
        Ok(tokio::task::spawn_blocking(move || {
            store.recent_logs(&tenant, component.as_deref(), limit)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??)
    }
}

/// How far back `scrape_targets` looks: long enough for slow schedules, short enough that
/// raw points stay far below the query's point cap for thousands of targets.
const TARGETS_WINDOW_MS: i64 = 10 * 60_000;

/// One scrape target as its scraper last saw it (from the samples and log lines every
/// `prometheus-scrape` component writes).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ScrapeTarget {
    pub component: String,
    pub job: String,
    pub instance: String,
    pub up: bool,
    pub last_scrape_ms: i64,
    pub duration_seconds: Option<f64>,
    pub samples: Option<f64>,
    /// The newest failure logged for the target, if it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Runtime {
    /// The tenant's scrape targets seen in the last ten minutes (a target no longer
    /// discovered drops out): up or not, when, how long, how many samples, and why the last
    /// one failed.
    pub async fn scrape_targets(&self, tenant: &str) -> Result<Vec<ScrapeTarget>, RuntimeError> {
        self.tenant(tenant)?;
        let now = crate::now_ms();
        let latest =
            |metric: &str| self.raw_points(tenant, metric, now - TARGETS_WINDOW_MS, now + 1);
        let key = |l: &std::collections::BTreeMap<String, String>| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            (get("component"), get("job"), get("instance"))
        };
        let mut targets: std::collections::BTreeMap<(String, String, String), ScrapeTarget> =
            Default::default();
        for s in self.query(latest("up")).await? {
            let Some(&(ts, v)) = s.points.iter().max_by_key(|(t, _)| *t) else {
                continue;
            };
            let (component, job, instance) = key(&s.labels);
            targets.insert(
                (component.clone(), job.clone(), instance.clone()),
                ScrapeTarget {
                    component,
                    job,
                    instance,
                    up: v == 1.0,
                    last_scrape_ms: ts,
                    ..Default::default()
                },
            );
        }
        for (metric, duration) in [
            ("scrape_duration_seconds", true),
            ("scrape_samples_scraped", false),
        ] {
            for s in self.query(latest(metric)).await? {
                let (Some(t), Some(&(_, v))) = (
                    targets.get_mut(&key(&s.labels)),
                    s.points.iter().max_by_key(|(t, _)| *t),
                ) else {
                    continue;
                };
                if duration {
                    t.duration_seconds = Some(v);
                } else {
                    t.samples = Some(v);
                }
            }
        }
        let logs = self.telemetry_logs(tenant, None, 2_000).await?;
        for t in targets.values_mut().filter(|t| !t.up) {
            t.last_error = logs
                .iter()
                .find(|l| {
                    l["component"] == t.component.as_str()
                        && l["labels"]["target"] == t.instance.as_str()
                })
                .and_then(|l| l["message"].as_str().map(str::to_string));
        }
        Ok(targets.into_values().collect())
    }
}

/// The query APIs whose refusals are counted.
#[derive(Clone, Copy, Debug)]
pub enum QueryApi {
    Promql = 0,
    Logql = 1,
}

/// Queries the Prometheus- and Loki-compatible APIs refused (`sotp_query_refused_total`): a
/// 400 for what cannot be answered as asked (syntax, an unsupported construct), a 422 for
/// what would cost more than the bounds allow (steps, series, points, groups).
#[derive(Default, Debug)]
pub struct QueryRefusals {
    counts: [std::sync::atomic::AtomicU64; 4],
}

impl QueryRefusals {
    /// Count an answer of `api` by its HTTP status (only 400 and 422 are refusals).
    pub fn count(&self, api: QueryApi, status: u16) {
        let reason = match status {
            400 => 0,
            422 => 1,
            _ => return,
        };
        self.counts[api as usize * 2 + reason].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(api, reason, count)` for each pair.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (a, api) in ["promql", "logql"].into_iter().enumerate() {
            for (r, reason) in ["invalid", "too_large"].into_iter().enumerate() {
                let n = self.counts[a * 2 + r].load(std::sync::atomic::Ordering::Relaxed);
                out.push((api, reason, n));
            }
        }
        out
    }
}

impl Runtime {
    /// Every raw point of `metric` in `[from_ms, to_ms)`, each series whole (up to the query
    /// point cap).
    pub(super) fn raw_points(
        &self,
        tenant: &str,
        metric: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> crate::telemetry::SampleQuery {
        crate::telemetry::SampleQuery {
            tenant: tenant.to_string(),
            metric: metric.to_string(),
            matchers: Vec::new(),
            start_ms: from_ms,
            end_ms: to_ms,
            step_ms: None,
            aggregation: crate::telemetry::Aggregation::Avg,
            group_by: None,
            max_points: self.config.limits.max_query_points,
        }
    }
}

pub(super) fn flow_query_error(e: FlowQueryError) -> RuntimeError {
    match e {
        FlowQueryError::Invalid(m) => RuntimeError::Invalid(m),
        FlowQueryError::Store(e) => RuntimeError::Internal(e.to_string()),
        FlowQueryError::Raw(e) => RuntimeError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_api_and_reason() {
        let r = QueryRefusals::default();
        r.count(QueryApi::Promql, 400);
        r.count(QueryApi::Promql, 422);
        r.count(QueryApi::Logql, 422);
        r.count(QueryApi::Logql, 200);
        r.count(QueryApi::Logql, 503);
        assert_eq!(
            r.snapshot(),
            [
                ("promql", "invalid", 1),
                ("promql", "too_large", 1),
                ("logql", "invalid", 0),
                ("logql", "too_large", 1)
            ]
        );
    }
}
