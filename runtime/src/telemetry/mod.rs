//! Telemetry: the samples and log records components emit, their durable store, and queries.
//!
//! Storage is DuckDB (embedded, columnar): samples are many small rows read back as range
//! scans and aggregates, which is DuckDB's strength (15–50× faster than SQLite on such
//! queries, see docs/STORAGE.md). Series identity (metric + labels) is kept in memory as an
//! index over a small `series` table, so label matching never scans points.

mod query;
mod store;

pub use query::{Aggregation, MatchOp, Matcher, QueryError, SampleQuery, SeriesPoints};
pub use store::{StoreError, TelemetryStore};

use crate::stats::LogLevel;

/// The label the host stamps on every sample with the emitting component's name.
pub const COMPONENT_LABEL: &str = "component";

/// One sample as accepted from a guest: labels sorted, `component` included.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRow {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub ts_ms: i64,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    pub ts_ms: i64,
    pub level: LogLevel,
    pub message: String,
    pub labels: Vec<(String, String)>,
}

/// Everything one invocation (or one batch of messages) emitted, committed in one
/// transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub tenant: String,
    pub component: String,
    pub samples: Vec<SampleRow>,
    pub logs: Vec<LogRow>,
    /// MQTT messages this batch handled, recorded with its samples so a redelivery of one of
    /// them is recognised (see `mqtt`).
    pub ledger: Vec<LedgerEntry>,
    /// Ledger entries of acknowledged messages to forget: (component, entry).
    pub ledger_clear: Vec<(String, LedgerEntry)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
            && self.logs.is_empty()
            && self.ledger.is_empty()
            && self.ledger_clear.is_empty()
    }
}

/// An MQTT message as the redelivery ledger knows it: packet id and content digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub pkid: u16,
    pub digest: u64,
}

/// A stable 64-bit identity for (tenant, metric, labels). xxh3 is specified and stable
/// across versions, so ids written to disk stay valid after upgrades.
pub fn series_id(tenant: &str, metric: &str, labels: &[(String, String)]) -> u64 {
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(metric.as_bytes());
    for (name, value) in labels {
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        key.push(b'=');
        key.extend_from_slice(value.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&key)
}

const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE: usize = 1024;

/// Validate a sample's labels, add the host-owned `component` label and sort them: what
/// every emitted sample goes through before it is stored.
pub fn normalize_labels(
    component: &str,
    mut labels: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels is over the limit of {MAX_LABELS}",
            labels.len()
        ));
    }
    for (name, value) in &labels {
        validate_label_name(name)?;
        if name == COMPONENT_LABEL {
            return Err(format!("label `{COMPONENT_LABEL}` is set by the host"));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(format!(
                "label `{name}` has a value over {MAX_LABEL_VALUE} bytes"
            ));
        }
    }
    labels.push((COMPONENT_LABEL.to_string(), component.to_string()));
    labels.sort_unstable();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("a label name appears twice".into());
    }
    Ok(labels)
}

/// Prometheus metric name rules: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most 200 bytes.
pub fn validate_metric_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 200
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a metric name (use [a-zA-Z_:][a-zA-Z0-9_:]*, at most 200 bytes)"
        ))
    }
}

/// Prometheus label name rules, and names starting with `__` are reserved.
pub fn validate_label_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 100
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !name.starts_with("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a label name (use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(validate_metric_name("node_cpu_seconds:rate5m").is_ok());
        assert!(validate_metric_name("9lives").is_err());
        assert!(validate_metric_name("a-b").is_err());
        assert!(validate_label_name("room").is_ok());
        assert!(validate_label_name("__name__").is_err());
        assert!(validate_label_name("a.b").is_err());
    }

    #[test]
    fn series_ids_depend_on_every_part() {
        let l = vec![("a".to_string(), "1".to_string())];
        let base = series_id("t", "m", &l);
        assert_eq!(base, series_id("t", "m", &l));
        assert_ne!(base, series_id("u", "m", &l));
        assert_ne!(base, series_id("t", "n", &l));
        assert_ne!(base, series_id("t", "m", &[("a".into(), "2".into())]));
    }
}
