//! PromQL's functions and aggregations, as Prometheus computes them: `rate`/`increase`
//! extrapolate to the window's edges (Prometheus's `extrapolatedRate`), `irate` uses the
//! last two samples, counter resets are added back, `histogram_quantile` interpolates
//! linearly inside the bucket the rank falls in.

use super::eval::{Labels, Sample};
use std::collections::BTreeMap;

/// A range function over the samples of one window `[start, end]` (ms).
pub fn over_window(name: &str, w: &[(i64, f64)], start: i64, end: i64) -> Option<f64> {
    match name {
        "rate" => extrapolated(w, start, end, true, true),
        "increase" => extrapolated(w, start, end, true, false),
        "irate" => instant_rate(w),
        _ if w.is_empty() => None,
        "avg_over_time" => Some(w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64),
        "min_over_time" => w.iter().map(|p| p.1).reduce(f64::min),
        "max_over_time" => w.iter().map(|p| p.1).reduce(f64::max),
        "sum_over_time" => Some(w.iter().map(|p| p.1).sum()),
        "count_over_time" => Some(w.len() as f64),
        "last_over_time" => w.last().map(|p| p.1),
        _ => None,
    }
}

/// Prometheus's `extrapolatedRate`: the increase between the first and last sample (resets
/// added back), extrapolated toward the window's edges when the samples come close enough
/// to them, and never below zero for a counter.
fn extrapolated(
    w: &[(i64, f64)],
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        for pair in w.windows(2) {
            if pair[1].1 < pair[0].1 {
                result += pair[0].1;
            }
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut to_start = secs(first.0 - start);
    let to_end = secs(end - last.0);
    let sampled = secs(last.0 - first.0);
    let average_gap = sampled / (w.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        // A counter cannot have been below zero: extrapolate no further than where it was 0.
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_gap * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_gap / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_gap / 2.0
    };
    let mut value = result * (interval / sampled);
    if per_second {
        value /= secs(end - start);
    }
    Some(value)
}

/// `irate`: the per-second change between the last two samples (a reset: the last value).
fn instant_rate(w: &[(i64, f64)]) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
    let dt = (last.0 - prev.0) as f64 / 1000.0;
    if dt <= 0.0 {
        return None;
    }
    let delta = if last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    Some(delta / dt)
}

/// sum, avg, min, max, count of one group's values at one instant.
pub fn aggregate(op: &str, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(match op {
        "sum" => values.iter().sum(),
        "avg" => values.iter().sum::<f64>() / values.len() as f64,
        "min" => values.iter().copied().reduce(f64::min)?,
        "max" => values.iter().copied().reduce(f64::max)?,
        _ => values.len() as f64,
    })
}

/// `topk`/`bottomk`: per group and instant, the k largest (smallest) series keep their value
/// there; the others have none. Series keep all their labels.
pub fn top_k(
    mut series: Vec<Sample>,
    k: &[f64],
    largest: bool,
    group: impl Fn(&Labels) -> Labels,
) -> Vec<Sample> {
    let n = k.len();
    let mut groups: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        groups.entry(group(&s.labels)).or_default().push(i);
    }
    let mut keep = vec![vec![false; n]; series.len()];
    for members in groups.values() {
        for step in 0..n {
            let want = if k[step].is_nan() || k[step] < 1.0 {
                0
            } else {
                k[step] as usize
            };
            let mut ranked: Vec<(usize, f64)> = members
                .iter()
                .filter_map(|&i| series[i].values[step].map(|v| (i, v)))
                .collect();
            ranked.sort_by(|a, b| {
                let order = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                if largest { order.reverse() } else { order }
            });
            for (i, _) in ranked.into_iter().take(want) {
                keep[i][step] = true;
            }
        }
    }
    for (s, keep) in series.iter_mut().zip(keep) {
        for (v, k) in s.values.iter_mut().zip(keep) {
            if !k {
                *v = None;
            }
        }
    }
    series
}

/// One bucket series: its upper bound and its count at each instant.
type Bucket = (f64, Vec<Option<f64>>);

/// `histogram_quantile(φ, buckets)`: per group of series that differ only in `le`, per
/// instant, the φ-quantile interpolated within its bucket.
pub fn histogram_quantile(phi: &[f64], series: Vec<Sample>) -> Vec<Sample> {
    let n = phi.len();
    let mut groups: BTreeMap<Labels, Vec<Bucket>> = BTreeMap::new();
    for s in series {
        let Some(le) = s.labels.get("le").and_then(|v| parse_le(v)) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        key.remove("__name__");
        groups.entry(key).or_default().push((le, s.values));
    }
    groups
        .into_iter()
        .map(|(labels, mut buckets)| {
            buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
            let values = (0..n)
                .map(|step| {
                    let at: Vec<(f64, f64)> = buckets
                        .iter()
                        .filter_map(|(le, v)| v[step].map(|c| (*le, c)))
                        .collect();
                    (!at.is_empty()).then(|| bucket_quantile(phi[step], at))
                })
                .collect();
            Sample { labels, values }
        })
        .collect()
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// Prometheus's `bucketQuantile` over (upper bound, cumulative count), sorted by bound.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) || buckets.len() < 2 {
        return f64::NAN;
    }
    // Counts must not decrease with the bound (scrapes of buckets are not atomic).
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_extrapolates_as_prometheus() {
        // A counter growing 1/s, sampled every 15 s, over a 65 s window starting 15 s before
        // the first sample and ending 5 s after the last: extrapolated to both edges, exactly
        // 1/s and 65 in all.
        let w: Vec<(i64, f64)> = (0..4)
            .map(|i| (10_000 + i * 15_000, 100.0 + 15.0 * i as f64))
            .collect();
        let r = over_window("rate", &w, -5_000, 60_000).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        let inc = over_window("increase", &w, -5_000, 60_000).unwrap();
        assert!((inc - 65.0).abs() < 1e-9, "{inc}");
        // A reset in the middle is added back.
        let reset = [(0, 10.0), (15_000, 25.0), (30_000, 5.0), (45_000, 20.0)];
        let inc = over_window("increase", &reset, -1, 45_000).unwrap();
        assert!((inc - 35.0).abs() < 0.01, "{inc}");
        assert_eq!(over_window("rate", &w[..1], 0, 60_000), None);
        let ir = over_window("irate", &reset, 0, 45_000).unwrap();
        assert!((ir - 1.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let buckets = vec![
            (0.1, 10.0),
            (0.5, 60.0),
            (1.0, 90.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 50 falls in (0.1, 0.5]: 0.1 + 0.4 × (40 / 50).
        assert!((bucket_quantile(0.5, buckets.clone()) - 0.42).abs() < 1e-12);
        // Beyond the last finite bucket: its bound.
        assert_eq!(bucket_quantile(0.99, buckets.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 3.0)]).is_nan());
        assert_eq!(bucket_quantile(-1.0, buckets), f64::NEG_INFINITY);
    }
}
