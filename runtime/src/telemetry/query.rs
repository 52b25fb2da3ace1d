//! The sample query model: metric + label matchers + time range, optionally bucketed by a
//! step and aggregated (avg, sum, min, max, count, rate), optionally grouped by labels.
//!
//! Bucket aggregates other than `rate` are computed by DuckDB; `rate` needs counter-reset
//! handling between consecutive points of a series, which is done here over the raw points.

use regex::Regex;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Avg,
    Sum,
    Min,
    Max,
    Count,
    /// Per-second increase of a counter over each step, resets handled.
    Rate,
}

impl std::str::FromStr for Aggregation {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, QueryError> {
        Ok(match s {
            "avg" => Aggregation::Avg,
            "sum" => Aggregation::Sum,
            "min" => Aggregation::Min,
            "max" => Aggregation::Max,
            "count" => Aggregation::Count,
            "rate" => Aggregation::Rate,
            other => {
                return Err(QueryError::Invalid(format!(
                    "unknown aggregation `{other}` (use avg, sum, min, max, count or rate)"
                )));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub enum MatchOp {
    Eq,
    Ne,
    Re(Regex),
    NotRe(Regex),
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// Parse `name=value`, `name!=value`, `name=~regex` or `name!~regex`.
    pub fn parse(text: &str) -> Result<Matcher, QueryError> {
        let bad = || {
            QueryError::Invalid(format!(
                "`{text}` is not a label matcher (use name=value, name!=value, name=~regex or name!~regex)"
            ))
        };
        let (name, op, value) = if let Some((n, v)) = text.split_once("!=") {
            (n, "!=", v)
        } else if let Some((n, v)) = text.split_once("!~") {
            (n, "!~", v)
        } else if let Some((n, v)) = text.split_once("=~") {
            (n, "=~", v)
        } else if let Some((n, v)) = text.split_once('=') {
            (n, "=", v)
        } else {
            return Err(bad());
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(bad());
        }
        let anchored = |v: &str| {
            Regex::new(&format!("^(?:{v})$"))
                .map_err(|e| QueryError::Invalid(format!("bad regex in `{text}`: {e}")))
        };
        let op = match op {
            "=" => MatchOp::Eq,
            "!=" => MatchOp::Ne,
            "=~" => MatchOp::Re(anchored(value)?),
            _ => MatchOp::NotRe(anchored(value)?),
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
        })
    }

    /// A missing label matches as the empty string, as in Prometheus.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match &self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re(re) => re.is_match(v),
            MatchOp::NotRe(re) => !re.is_match(v),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SampleQuery {
    pub tenant: String,
    pub metric: String,
    pub matchers: Vec<Matcher>,
    pub start_ms: i64,
    /// Exclusive.
    pub end_ms: i64,
    /// `None`: raw points.
    pub step_ms: Option<i64>,
    pub aggregation: Aggregation,
    /// `None`: one result per series. `Some([])`: everything in one group.
    pub group_by: Option<Vec<String>>,
    /// Cap on points returned (raw) or buckets (stepped).
    pub max_points: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeriesPoints {
    pub labels: BTreeMap<String, String>,
    /// `[timestamp_ms, value]`; for stepped queries the timestamp is the bucket's start.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("query failed in the store: {0}")]
    Store(String),
}

impl SampleQuery {
    pub fn validate(&self) -> Result<(), QueryError> {
        if self.end_ms <= self.start_ms {
            return Err(QueryError::Invalid("`end` must be after `start`".into()));
        }
        if let Some(step) = self.step_ms {
            if step <= 0 {
                return Err(QueryError::Invalid("`step` must be positive".into()));
            }
            let buckets = (self.end_ms - self.start_ms) / step;
            if buckets as usize > self.max_points {
                return Err(QueryError::Invalid(format!(
                    "{buckets} steps is more than the limit of {}; use a larger step or a shorter range",
                    self.max_points
                )));
            }
        } else if self.aggregation == Aggregation::Rate || self.group_by.is_some() {
            return Err(QueryError::Invalid("`rate` and `by` need a `step`".into()));
        }
        Ok(())
    }

    pub fn bucket_start(&self, b: i64) -> i64 {
        self.start_ms + b * self.step_ms.unwrap_or(1)
    }
}

/// Partial aggregates of one bucket, combinable across series.
#[derive(Clone, Copy, Debug, Default)]
pub struct Partial {
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Partial {
    pub fn merge(&mut self, other: &Partial) {
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn value(&self, agg: Aggregation) -> f64 {
        match agg {
            Aggregation::Avg => self.sum / self.count as f64,
            // For rate, `sum` holds the per-second increase.
            Aggregation::Sum | Aggregation::Rate => self.sum,
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::Count => self.count as f64,
        }
    }
}

/// Per-bucket increase per second of a counter series; a drop is a reset (the new value is
/// the increase since the reset). The increase between two points goes to the later point's
/// bucket.
pub fn counter_rate(points: &[(i64, f64)], query: &SampleQuery) -> BTreeMap<i64, Partial> {
    let step = query.step_ms.unwrap_or(1);
    let mut out: BTreeMap<i64, Partial> = BTreeMap::new();
    for pair in points.windows(2) {
        let (_, prev) = pair[0];
        let (ts, cur) = pair[1];
        let increase = if cur >= prev { cur - prev } else { cur };
        let bucket = (ts - query.start_ms) / step;
        let p = out.entry(bucket).or_default();
        p.sum += increase * 1000.0 / step as f64;
        p.count += 1;
    }
    out
}

/// The labels that identify a result: all of them, or the grouping ones.
pub fn group_key(
    labels: &BTreeMap<String, String>,
    group_by: &Option<Vec<String>>,
) -> BTreeMap<String, String> {
    match group_by {
        None => labels.clone(),
        Some(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(step: i64) -> SampleQuery {
        SampleQuery {
            tenant: "t".into(),
            metric: "m".into(),
            matchers: vec![],
            start_ms: 0,
            end_ms: 100_000,
            step_ms: Some(step),
            aggregation: Aggregation::Rate,
            group_by: None,
            max_points: 10_000,
        }
    }

    #[test]
    fn matchers_parse_and_match() {
        let labels: BTreeMap<String, String> = [("room".to_string(), "kitchen".to_string())].into();
        assert!(Matcher::parse("room=kitchen").unwrap().matches(&labels));
        assert!(!Matcher::parse("room!=kitchen").unwrap().matches(&labels));
        assert!(Matcher::parse("room=~kit.*").unwrap().matches(&labels));
        assert!(
            !Matcher::parse("room=~kit").unwrap().matches(&labels),
            "anchored"
        );
        assert!(Matcher::parse("room!~bath.*").unwrap().matches(&labels));
        assert!(
            Matcher::parse("floor=").unwrap().matches(&labels),
            "missing = empty"
        );
        assert!(Matcher::parse("nonsense").is_err());
        assert!(Matcher::parse("a=~(").is_err());
    }

    #[test]
    fn rate_handles_counter_resets() {
        // 10 per second for 20 s, a reset at 20 s, then 10 per second again.
        let pts = vec![
            (0, 0.0),
            (10_000, 100.0),
            (20_000, 200.0),
            (30_000, 50.0),
            (40_000, 150.0),
        ];
        let r = counter_rate(&pts, &q(20_000));
        assert_eq!(r[&0].sum, 5.0); // 100 increase in bucket 0 over a 20 s step
        assert_eq!(r[&1].sum, 7.5); // 100 + 50 (reset) over 20 s
        assert_eq!(r[&2].sum, 5.0);
    }

    #[test]
    fn queries_are_validated() {
        let mut query = q(0);
        assert!(query.validate().is_err());
        query.step_ms = Some(1);
        assert!(query.validate().is_err(), "100k buckets over the limit");
        query.step_ms = None;
        assert!(query.validate().is_err(), "rate without step");
        query.step_ms = Some(1000);
        assert!(query.validate().is_ok());
    }
}
