//! Column-wise samples: every value of one series (metric + label set) gathered into one
//! `series-values` record, so the metric and labels cross into the host once per series
//! rather than once per value — what makes many samples of few series cheap (the runtime
//! benchmark: a boundary cost of ~2.4× native per sample as rows).
//!
//! Shared with the native SDK of the benchmarks (`tests/native-sdk`), which includes this
//! file: it uses only `crate::SeriesValues` and `crate::Label`.

use crate::{Label, SeriesValues};
use std::collections::HashMap;

/// Samples gathered by series, handed to the host in one `emit.series` call.
#[derive(Default)]
pub struct Columns {
    series: Vec<SeriesValues>,
    /// Hash of (metric, labels) → indices into `series` with that hash.
    index: HashMap<u64, Vec<usize>>,
    values: usize,
    /// Series that have values with timestamps and values without (stamped at emit).
    mixed: Vec<(usize, Vec<usize>)>,
}

impl Columns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a value of `metric` with `labels`, stamped by the host when it accepts the batch.
    pub fn push(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        self.add(metric, labels, value, None);
    }

    /// Add a value with its own timestamp (milliseconds since the Unix epoch).
    pub fn push_at(&mut self, metric: &str, labels: &[(&str, &str)], value: f64, at_ms: i64) {
        self.add(metric, labels, value, Some(at_ms));
    }

    /// Values gathered so far.
    pub fn len(&self) -> usize {
        self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// Series gathered so far.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The gathered series, clearing these columns (what `emit` hands to the host).
    pub fn take(&mut self) -> Vec<SeriesValues> {
        let now = now_ms();
        let mut series = std::mem::take(&mut self.series);
        // A series with timestamps on some values: the others get the time of the batch.
        for (i, unstamped) in std::mem::take(&mut self.mixed) {
            for at in unstamped {
                series[i].timestamps_ms[at] = now;
            }
        }
        self.index.clear();
        self.values = 0;
        series
    }

    fn add(&mut self, metric: &str, labels: &[(&str, &str)], value: f64, at_ms: Option<i64>) {
        let hash = hash(metric, labels);
        let found = self.index.get(&hash).and_then(|candidates| {
            candidates
                .iter()
                .copied()
                .find(|&i| same(&self.series[i], metric, labels))
        });
        let i = match found {
            Some(i) => i,
            None => {
                self.series.push(SeriesValues {
                    metric: metric.to_string(),
                    labels: labels
                        .iter()
                        .map(|(name, value)| Label {
                            name: name.to_string(),
                            value: value.to_string(),
                        })
                        .collect(),
                    values: Vec::new(),
                    timestamps_ms: Vec::new(),
                });
                let i = self.series.len() - 1;
                self.index.entry(hash).or_default().push(i);
                i
            }
        };
        let s = &mut self.series[i];
        let stamped = !s.timestamps_ms.is_empty();
        match at_ms {
            Some(at) => {
                if !stamped && !s.values.is_empty() {
                    // Earlier values had none: they get the batch's time at emit.
                    let earlier: Vec<usize> = (0..s.values.len()).collect();
                    s.timestamps_ms = vec![0; s.values.len()];
                    self.mixed.push((i, earlier));
                }
                s.timestamps_ms.push(at);
            }
            None if stamped => {
                s.timestamps_ms.push(0);
                let at = s.timestamps_ms.len() - 1;
                match self.mixed.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, list)) => list.push(at),
                    None => self.mixed.push((i, vec![at])),
                }
            }
            None => {}
        }
        s.values.push(value);
        self.values += 1;
    }
}

fn same(s: &SeriesValues, metric: &str, labels: &[(&str, &str)]) -> bool {
    s.metric == metric
        && s.labels.len() == labels.len()
        && s.labels
            .iter()
            .zip(labels)
            .all(|(l, (name, value))| l.name == *name && l.value == *value)
}

/// FNV-1a over the metric and labels: a lookup key, compared in full on a match.
fn hash(metric: &str, labels: &[(&str, &str)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut put = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    put(metric.as_bytes());
    for (name, value) in labels {
        put(name.as_bytes());
        put(value.as_bytes());
    }
    h
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
