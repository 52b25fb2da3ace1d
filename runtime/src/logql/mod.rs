//! LogQL metric queries over flows, for the Loki-compatible read API
//! (`/loki/api/v1/query_range`, `/loki/api/v1/query`) that Grafana's Loki data source uses:
//! `sum by (src_ip, app_protocol) (rate(flow_bytes[5m]))` answered as written.
//!
//! In: a LogQL text (`parse.rs`), a tenant, the instants. Out: one series per group with a
//! value per instant. A flow record is a "log line" of the tenant's flow stream;
//! `flow_bytes` and `flow_packets` name its byte and packet counts (`flows` or a bare
//! `{...}` selector: the records themselves). `rate(x[r])` is x over the window `[t − r, t)`
//! per second, `sum_over_time(x[r])` its total, `count_over_time(x[r])` the records in it;
//! `sum by (labels)` groups, `topk(k, ...)` keeps the k largest per instant. Labels:
//! `src_ip`/`src_addr`, `dst_ip`/`dst_addr`, `app_protocol`/`app`, `exporter`,
//! `protocol`/`ip_protocol`, `src_port`, `dst_port`, `in_if`, `out_if`. Filters (`{label=
//! "v"}` or `| label = "v"`) on exporter, addresses, application and protocol.
//!
//! Flows are read from the minute rollups (`flow::query::rate` with a one-minute step), so
//! windows are whole minutes and a value equals `sotp flows rate` over the same minutes.

mod parse;

pub use parse::{Expr, Selector, parse};

use crate::flow::query::{FlowFilter, GroupBy, RateRow};
use std::collections::BTreeMap;

/// Instants a range query may evaluate (as Loki and Prometheus).
pub const MAX_STEPS: i64 = 11_000;
/// The longest window a range function may span.
pub const MAX_RANGE_MS: i64 = 7 * 86_400_000;
/// Groups one minute may hold (the flow query's own cap): reaching it means the answer would
/// be cut, so it is refused instead.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LogqlError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What a query asks of the flow store, and what to do with the minutes it gets.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Grouping columns and the label each is answered under.
    pub by: Vec<(GroupBy, String)>,
    pub filter: FlowFilter,
    function: String,
    measure: Measure,
    range_ms: i64,
    topk: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
enum Measure {
    Bytes,
    Packets,
    Flows,
}

/// A series of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<Option<f64>>,
}

/// The plan of a parsed query.
pub fn plan(expr: &Expr) -> Result<Plan, LogqlError> {
    let (topk, rest) = match expr {
        Expr::Aggregate { op, k, inner, by } if op == "topk" => {
            if by.is_some() {
                return Err(LogqlError::Unsupported(
                    "topk by (...) is not supported over flows: group inside, topk(5, sum by (src_ip) (...))".into(),
                ));
            }
            (*k, inner.as_ref())
        }
        other => (None, other),
    };
    let (labels, range) = match rest {
        Expr::Aggregate { op, by, inner, .. } if op == "sum" => {
            (by.clone().unwrap_or_default(), inner.as_ref())
        }
        Expr::Aggregate { op, .. } => {
            return Err(LogqlError::Unsupported(format!(
                "`{op}` inside another aggregation is not supported over flows"
            )));
        }
        range => (Vec::new(), range),
    };
    let Expr::Range {
        function,
        selector,
        range,
    } = range
    else {
        return Err(LogqlError::Unsupported(
            "expected rate, count_over_time or sum_over_time of flow_bytes, flow_packets or flows"
                .into(),
        ));
    };
    let range_ms = range.as_millis() as i64;
    if range_ms < 60_000 || range_ms % 60_000 != 0 || range_ms > MAX_RANGE_MS {
        return Err(LogqlError::Invalid(format!(
            "the range must be whole minutes, from 1m to 7d (flows are kept per minute), not {}",
            humantime::format_duration(*range)
        )));
    }
    let measure = match (function.as_str(), selector.name.as_deref()) {
        ("count_over_time", _) => Measure::Flows,
        (_, Some("flow_bytes")) => Measure::Bytes,
        (_, Some("flow_packets")) => Measure::Packets,
        (_, Some("flows") | None) => Measure::Flows,
        (_, Some(other)) => {
            return Err(LogqlError::Invalid(format!(
                "`{other}` is not a flow stream: use flow_bytes, flow_packets or flows"
            )));
        }
    };
    let by = labels
        .iter()
        .map(|l| group_by(l).map(|g| (g, l.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut filter = FlowFilter::default();
    for (label, op, value) in &selector.matchers {
        if op != "=" {
            return Err(LogqlError::Unsupported(format!(
                "only `=` label filters are supported over flows, not `{label}{op}\"{value}\"`"
            )));
        }
        let slot = match group_by(label)? {
            GroupBy::Exporter => &mut filter.exporter,
            GroupBy::SrcAddr => &mut filter.src_addr,
            GroupBy::DstAddr => &mut filter.dst_addr,
            GroupBy::App => &mut filter.app,
            GroupBy::IpProtocol => {
                filter.ip_protocol = Some(value.parse().map_err(|_| {
                    LogqlError::Invalid(format!("{label}: `{value}` is not an IP protocol number"))
                })?);
                continue;
            }
            _ => {
                return Err(LogqlError::Unsupported(format!(
                    "filtering on `{label}` is not supported (exporter, src_ip, dst_ip, app_protocol, protocol)"
                )));
            }
        };
        *slot = Some(value.clone());
    }
    Ok(Plan {
        by,
        filter,
        function: function.clone(),
        measure,
        range_ms,
        topk,
    })
}

fn group_by(label: &str) -> Result<GroupBy, LogqlError> {
    Ok(match label {
        "src_ip" | "src_addr" => GroupBy::SrcAddr,
        "dst_ip" | "dst_addr" => GroupBy::DstAddr,
        "app_protocol" | "app" => GroupBy::App,
        "exporter" => GroupBy::Exporter,
        "protocol" | "ip_protocol" => GroupBy::IpProtocol,
        "src_port" => GroupBy::SrcPort,
        "dst_port" => GroupBy::DstPort,
        "in_if" => GroupBy::InIf,
        "out_if" => GroupBy::OutIf,
        other => {
            return Err(LogqlError::Invalid(format!(
                "`{other}` is not a flow label (src_ip, dst_ip, app_protocol, exporter, protocol, src_port, dst_port, in_if, out_if)"
            )));
        }
    })
}

impl Plan {
    /// The minutes to read for `steps`: `[first − range, last)`, whole minutes.
    pub fn window(&self, steps: &[i64]) -> (i64, i64) {
        let first = steps.first().copied().unwrap_or(0);
        let last = steps.last().copied().unwrap_or(0);
        let from = (first - self.range_ms).div_euclid(60_000) * 60_000;
        let to = (last.div_euclid(60_000) * 60_000).max(from + 60_000);
        (from, to)
    }

    /// The answer from the minute rows (`flow::query::rate` with a 60 s step).
    pub fn evaluate(&self, rows: &[RateRow], steps: &[i64]) -> Result<Vec<Series>, LogqlError> {
        let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
        let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, f64>> = BTreeMap::new();
        for row in rows {
            let n = per_minute.entry(row.bucket_ms).or_default();
            *n += 1;
            if *n >= MAX_GROUPS {
                return Err(LogqlError::TooLarge(format!(
                    "more than {MAX_GROUPS} groups in one minute: group by fewer labels or filter"
                )));
            }
            let labels = self
                .by
                .iter()
                .map(|(g, name)| {
                    let v = row.group.get(g.column()).map(text).unwrap_or_default();
                    (name.clone(), v)
                })
                .collect();
            let v = match self.measure {
                Measure::Bytes => row.bytes as f64,
                Measure::Packets => row.packets as f64,
                Measure::Flows => row.flows as f64,
            };
            *groups
                .entry(labels)
                .or_default()
                .entry(row.bucket_ms)
                .or_default() += v;
        }
        let secs = self.range_ms as f64 / 1000.0;
        let mut out: Vec<Series> = groups
            .into_iter()
            .map(|(labels, minutes)| {
                let values = steps
                    .iter()
                    .map(|&t| {
                        let mut window = minutes.range(t - self.range_ms..t).peekable();
                        window.peek()?;
                        let total: f64 = window.map(|(_, v)| v).sum();
                        Some(if self.function == "rate" {
                            total / secs
                        } else {
                            total
                        })
                    })
                    .collect();
                Series { labels, values }
            })
            .collect();
        if let Some(k) = self.topk {
            keep_top(&mut out, k, steps.len());
        }
        out.retain(|s| s.values.iter().any(Option::is_some));
        Ok(out)
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Per instant, only the k largest series keep their value.
fn keep_top(series: &mut [Series], k: f64, steps: usize) {
    let k = if k.is_nan() || k < 1.0 { 0 } else { k as usize };
    for step in 0..steps {
        let mut ranked: Vec<(usize, f64)> = series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.values[step].map(|v| (i, v)))
            .collect();
        ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        for (i, _) in ranked.into_iter().skip(k) {
            series[i].values[step] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, src: &str, app: &str, bytes: u64) -> RateRow {
        let mut group = serde_json::Map::new();
        group.insert("src_addr".into(), src.into());
        group.insert("app".into(), app.into());
        RateRow {
            bucket_ms: minute * 60_000,
            group,
            bytes,
            packets: bytes / 100,
            flows: 1,
            bytes_per_second: bytes as f64 / 60.0,
            packets_per_second: 0.0,
        }
    }

    #[test]
    fn the_seeds_query_sums_minutes_per_window() {
        let plan =
            plan(&parse("sum by (src_ip, app_protocol) (rate(flow_bytes[5m]))").unwrap()).unwrap();
        let rows: Vec<RateRow> = (0..10)
            .map(|m| row(m, "10.0.0.1", "https", 6_000))
            .chain([row(7, "10.0.0.2", "dns", 300)])
            .collect();
        let steps = [300_000, 600_000];
        assert_eq!(plan.window(&steps), (0, 600_000));
        let series = plan.evaluate(&rows, &steps).unwrap();
        assert_eq!(series.len(), 2);
        let https = series
            .iter()
            .find(|s| s.labels["app_protocol"] == "https")
            .unwrap();
        // Five minutes of 6,000 bytes over 300 s.
        assert_eq!(https.values, vec![Some(100.0), Some(100.0)]);
        assert_eq!(https.labels["src_ip"], "10.0.0.1");
        let dns = series
            .iter()
            .find(|s| s.labels["app_protocol"] == "dns")
            .unwrap();
        assert_eq!(dns.values, vec![None, Some(1.0)]);
        let top = plan_of("topk(1, sum by (src_ip) (sum_over_time(flow_bytes[5m])))");
        let series = top.evaluate(&rows, &steps).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].values, vec![Some(30_000.0), Some(30_000.0)]);
        let count = plan_of("sum(count_over_time({app_protocol=\"https\"}[10m]))");
        assert_eq!(count.filter.app.as_deref(), Some("https"));
    }

    fn plan_of(q: &str) -> Plan {
        plan(&parse(q).unwrap()).unwrap()
    }

    #[test]
    fn plans_refuse_what_flows_cannot_answer() {
        let e = |q: &str| plan(&parse(q).unwrap()).unwrap_err().to_string();
        assert!(e("sum(rate(flow_bytes[90s]))").contains("whole minutes"));
        assert!(e("sum by (colour) (rate(flow_bytes[5m]))").contains("colour"));
        assert!(e("sum(rate(flow_bytes{src_ip=~\"10.*\"}[5m]))").contains("only `=`"));
        assert!(e("sum(rate(syslog[5m]))").contains("not a flow stream"));
    }
}
