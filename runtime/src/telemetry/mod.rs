//! Telemetry: the samples and log records components emit, their durable store, and queries.
//!
//! Storage is DuckDB (embedded, columnar): samples are many small rows read back as range
//! scans and aggregates, which is DuckDB's strength (15–50× faster than SQLite on such
//! queries, see docs/STORAGE.md). Series identity (metric + labels) is kept in memory as an
//! index over a small `series` table, so label matching never scans points.

mod query;
mod store;

pub use query::{Aggregation, MatchOp, Matcher, QueryError, SampleQuery, SeriesPoints};
pub use store::{SeriesQuotaExceeded, StoreError, TelemetryStore};

use crate::stats::LogLevel;

/// The label the host stamps on every sample with the emitting component's name.
pub const COMPONENT_LABEL: &str = "component";

/// A series as emitted: metric and labels (sorted, `component` included) and the hash the
/// store looks it up by (`SeriesHasher`), computed once when it is emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub hash: u64,
}

impl SeriesKey {
    /// What holding it costs, for the per-call byte budget.
    pub fn size(&self) -> usize {
        self.metric.len()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }
}

/// One point of a series of a [`Samples`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Index into `Samples::series`.
    pub series: u32,
    pub ts_ms: i64,
    pub value: f64,
}

/// Bytes one point costs, for the per-call byte budget.
pub const POINT_SIZE: usize = std::mem::size_of::<Point>();

/// Samples as the host holds them between a call and its commit: each series once, and the
/// points that refer to it — a batch of many values of one series (`emit.series`) costs one
/// key, not one per value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    pub series: Vec<SeriesKey>,
    pub points: Vec<Point>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Add a point of `key`, reusing the last series if it is the same one.
    pub fn push(&mut self, key: SeriesKey, ts_ms: i64, value: f64) {
        let series = match self.series.last() {
            Some(last) if last.hash == key.hash && *last == key => self.series.len() - 1,
            _ => {
                self.series.push(key);
                self.series.len() - 1
            }
        };
        self.points.push(Point {
            series: series as u32,
            ts_ms,
            value,
        });
    }

    /// Add many points of one series.
    pub fn extend_series(&mut self, key: SeriesKey, points: impl Iterator<Item = (i64, f64)>) {
        let series = self.series.len() as u32;
        self.series.push(key);
        self.points.extend(points.map(|(ts_ms, value)| Point {
            series,
            ts_ms,
            value,
        }));
    }

    /// Move `other`'s samples to the end of these.
    pub fn append(&mut self, other: Samples) {
        let offset = self.series.len() as u32;
        self.series.extend(other.series);
        self.points.extend(other.points.into_iter().map(|p| Point {
            series: p.series + offset,
            ..p
        }));
    }

    /// Iterate (series, point).
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &Point)> {
        self.points
            .iter()
            .map(|p| (&self.series[p.series as usize], p))
    }
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
#[derive(Debug)]
pub struct Batch {
    pub tenant: String,
    pub component: String,
    pub samples: Samples,
    pub logs: Vec<LogRow>,
    /// MQTT messages this batch handled, recorded with its samples so a redelivery of one of
    /// them is recognised (see `mqtt`).
    pub ledger: Vec<LedgerEntry>,
    /// Ledger entries of acknowledged messages to forget: (component, entry).
    pub ledger_clear: Vec<(String, LedgerEntry)>,
    /// The tenant's series quota: points of new series beyond it are not stored (counted in
    /// [`CommitReport::refused`]). `u64::MAX`: none.
    pub max_series: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            tenant: String::new(),
            component: String::new(),
            samples: Samples::default(),
            logs: Vec::new(),
            ledger: Vec::new(),
            ledger_clear: Vec::new(),
            max_series: u64::MAX,
        }
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
            && self.logs.is_empty()
            && self.ledger.is_empty()
            && self.ledger_clear.is_empty()
    }
}

/// What a commit did beyond storing the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Points not stored because their series would have exceeded the tenant's quota.
    pub refused: u64,
}

/// An MQTT message as the redelivery ledger knows it: packet id and content digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub pkid: u16,
    pub digest: u64,
}

/// How series ids are derived from (tenant, metric, labels).
///
/// A store created now uses SipHash-1-3 under a random 128-bit key kept in the store: ids
/// are stable for the store's life, and nobody without the key can compute two label sets
/// that collide. Stores from before keep the unkeyed xxh3 their ids were made with. Either
/// way an id is only a first guess: the store compares tenant, metric and labels with the
/// series it names and probes further on a mismatch, so even a collision never mixes two
/// series (or two tenants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesHasher {
    /// xxh3-64 of the content (stores created before keyed ids).
    Legacy,
    Keyed(u64, u64),
}

impl SeriesHasher {
    pub fn hash(&self, tenant: &str, metric: &str, labels: &[(String, String)]) -> u64 {
        match self {
            SeriesHasher::Legacy => {
                let mut key = Vec::with_capacity(64);
                series_bytes(tenant, metric, labels, |b| key.extend_from_slice(b));
                xxhash_rust::xxh3::xxh3_64(&key)
            }
            SeriesHasher::Keyed(k0, k1) => {
                use std::hash::Hasher;
                let mut h = siphasher::sip::SipHasher13::new_with_keys(*k0, *k1);
                series_bytes(tenant, metric, labels, |b| h.write(b));
                h.finish()
            }
        }
    }

    /// A key from a tenant's emitted sample: `labels` already normalized.
    pub fn key(&self, tenant: &str, metric: String, labels: Vec<(String, String)>) -> SeriesKey {
        let hash = self.hash(tenant, &metric, &labels);
        SeriesKey {
            metric,
            labels,
            hash,
        }
    }
}

fn series_bytes(
    tenant: &str,
    metric: &str,
    labels: &[(String, String)],
    mut put: impl FnMut(&[u8]),
) {
    put(tenant.as_bytes());
    put(&[0]);
    put(metric.as_bytes());
    for (name, value) in labels {
        put(&[0]);
        put(name.as_bytes());
        put(b"=");
        put(value.as_bytes());
    }
}

/// The `n`th id to try for a series whose hash is `hash` (0: the hash itself).
pub fn probe_id(hash: u64, n: u32) -> u64 {
    hash ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE: usize = 1024;
/// All names and values of one label set together: what one series costs the in-memory
/// series index is bounded by this (times the tenant's series quota).
pub const MAX_LABEL_BYTES: usize = 4096;

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
    let total: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_LABEL_BYTES {
        return Err(format!(
            "the labels take {total} bytes, over the limit of {MAX_LABEL_BYTES} for one label set"
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
    fn series_hashes_depend_on_every_part_and_on_the_key() {
        let l = vec![("a".to_string(), "1".to_string())];
        for h in [SeriesHasher::Legacy, SeriesHasher::Keyed(1, 2)] {
            let base = h.hash("t", "m", &l);
            assert_eq!(base, h.hash("t", "m", &l));
            assert_ne!(base, h.hash("u", "m", &l));
            assert_ne!(base, h.hash("t", "n", &l));
            assert_ne!(base, h.hash("t", "m", &[("a".into(), "2".into())]));
        }
        assert_ne!(
            SeriesHasher::Keyed(1, 2).hash("t", "m", &l),
            SeriesHasher::Keyed(1, 3).hash("t", "m", &l)
        );
    }

    #[test]
    fn samples_share_series_keys() {
        let h = SeriesHasher::Keyed(1, 2);
        let key = |v: &str| h.key("t", "m".into(), vec![("a".into(), v.into())]);
        let mut s = Samples::default();
        s.push(key("1"), 1, 1.0);
        s.push(key("1"), 2, 2.0);
        s.push(key("2"), 3, 3.0);
        assert_eq!((s.series.len(), s.len()), (2, 3));
        let mut other = Samples::default();
        other.extend_series(key("3"), [(4, 4.0), (5, 5.0)].into_iter());
        s.append(other);
        let values: Vec<(String, f64)> = s
            .iter()
            .map(|(k, p)| (k.labels[0].1.clone(), p.value))
            .collect();
        assert_eq!(values[4], ("3".into(), 5.0));
        assert_eq!(s.series.len(), 3);
    }

    #[test]
    fn a_label_set_is_bounded_in_bytes() {
        let big: Vec<(String, String)> = (0..8)
            .map(|i| (format!("l{i}"), "x".repeat(1000)))
            .collect();
        let err = normalize_labels("c", big).unwrap_err();
        assert!(err.contains("4096"), "{err}");
    }
}
