//! Column-wise samples: every value of one series (metric + label set) gathered into one
//! `series-values` record, so the metric and labels cross into the host once per series
//! rather than once per value — what makes many samples of few series cheap (the runtime
//! benchmark: sample building ~1.4× native as columns, ~2.1× as rows; docs/BENCHMARKS.md).
//!
//! Finding a value's series is the hot loop of a collector that parses text into samples, so
//! it is kept cheap as WebAssembly: the lookup key is hashed a word (not a byte) at a time,
//! the table does not hash that hash again, and names are compared a word at a time (a
//! guest's `memcmp` is wasi-libc's byte loop).
//!
//! Shared with the native SDK of the benchmarks (`tests/native-sdk`), which includes this
//! file: it uses only `crate::SeriesValues` and `crate::Label`.

use crate::{Label, SeriesValues};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// No entry: the end of a chain of series sharing a hash.
const NONE: usize = usize::MAX;

/// Samples gathered by series, handed to the host in one `emit.series` call.
#[derive(Default)]
pub struct Columns {
    series: Vec<SeriesValues>,
    /// Hash of (metric, labels) → the first index into `series` with that hash.
    index: HashMap<u64, usize, BuildHasherDefault<KeyIsHash>>,
    /// Per series: the next series with the same hash, or `NONE`.
    next: Vec<usize>,
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
        self.next.clear();
        self.values = 0;
        series
    }

    fn add(&mut self, metric: &str, labels: &[(&str, &str)], value: f64, at_ms: Option<i64>) {
        let hash = hash(metric, labels);
        let first = self.index.get(&hash).copied().unwrap_or(NONE);
        let mut found = first;
        while found != NONE && !same(&self.series[found], metric, labels) {
            found = self.next[found];
        }
        let i = match found {
            NONE => {
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
                // The newest first: a chain is only walked on a hash collision.
                self.next.push(first);
                self.index.insert(hash, i);
                i
            }
            i => i,
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
    eq(&s.metric, metric)
        && s.labels.len() == labels.len()
        && s.labels
            .iter()
            .zip(labels)
            .all(|(l, (name, value))| eq(&l.name, name) && eq(&l.value, value))
}

/// String equality a word at a time.
fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_equal = word(wa.remainder()) == word(wb.remainder());
    wa.zip(wb).all(|(x, y)| word(x) == word(y)) && tails_equal
}

/// Up to 8 bytes as a little-endian word, zero-padded. Read in 4-, 2- and 1-byte steps rather
/// than copied into a buffer: a copy of a variable length is a `memcpy` call, which in a guest
/// is a `memory.copy` through the runtime, several times per sample.
fn word(bytes: &[u8]) -> u64 {
    if let Ok(w) = <[u8; 8]>::try_from(bytes) {
        return u64::from_le_bytes(w);
    }
    let (mut w, mut shift, mut rest) = (0u64, 0, bytes);
    if let Some((four, tail)) = rest.split_first_chunk::<4>() {
        w = u64::from(u32::from_le_bytes(*four));
        (shift, rest) = (32, tail);
    }
    if let Some((two, tail)) = rest.split_first_chunk::<2>() {
        w |= u64::from(u16::from_le_bytes(*two)) << shift;
        (shift, rest) = (shift + 16, tail);
    }
    if let Some(&one) = rest.first() {
        w |= u64::from(one) << shift;
    }
    w
}

/// A multiply-rotate hash (in the manner of FxHash) over the metric and labels, a word at a
/// time, each string's length mixed in: a lookup key, compared in full on a match.
fn hash(metric: &str, labels: &[(&str, &str)]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut put = |bytes: &[u8]| {
        let words = bytes.chunks_exact(8);
        let tail = words.remainder();
        for w in words {
            h = (h.rotate_left(5) ^ word(w)).wrapping_mul(K);
        }
        h = (h.rotate_left(5) ^ word(tail) ^ ((bytes.len() as u64) << 56)).wrapping_mul(K);
    };
    put(metric.as_bytes());
    for (name, value) in labels {
        put(name.as_bytes());
        put(value.as_bytes());
    }
    h
}

/// The table's keys are hashes already: used as they are.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        // The table picks buckets by the low bits: fold the well-mixed high bits into them.
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed (`write_u64`); anything else is folded in.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// Run natively, through the benchmarks' native SDK: `cargo test -p sotp-guest-native`.
#[cfg(test)]
mod tests {
    use super::*;

    fn values_of<'a>(
        series: &'a [SeriesValues],
        metric: &str,
        labels: &[(&str, &str)],
    ) -> &'a SeriesValues {
        series
            .iter()
            .find(|s| same(s, metric, labels))
            .unwrap_or_else(|| panic!("no series {metric} {labels:?}"))
    }

    #[test]
    fn a_word_is_its_bytes_little_endian_zero_padded_at_every_length() {
        let bytes = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        for len in 0..=8 {
            let mut padded = [0u8; 8];
            padded[..len].copy_from_slice(&bytes[..len]);
            assert_eq!(
                word(&bytes[..len]),
                u64::from_le_bytes(padded),
                "length {len}"
            );
        }
    }

    #[test]
    fn values_gather_by_metric_and_label_set_in_order() {
        let mut c = Columns::new();
        c.push("temp", &[("device", "a")], 1.0);
        c.push("temp", &[("device", "b")], 2.0);
        c.push("temp", &[("device", "a")], 3.0);
        c.push("hum", &[("device", "a")], 4.0);
        // Where the boundary between strings falls matters: these are all different series.
        c.push("ab", &[("c", "d")], 5.0);
        c.push("a", &[("bc", "d")], 6.0);
        c.push("a", &[("b", "cd")], 7.0);
        assert_eq!((c.len(), c.series_count()), (7, 6));
        let out = c.take();
        assert_eq!(
            values_of(&out, "temp", &[("device", "a")]).values,
            [1.0, 3.0]
        );
        assert_eq!(values_of(&out, "temp", &[("device", "b")]).values, [2.0]);
        assert_eq!(values_of(&out, "hum", &[("device", "a")]).values, [4.0]);
        assert_eq!(values_of(&out, "a", &[("bc", "d")]).values, [6.0]);
        assert!(out.iter().all(|s| s.timestamps_ms.is_empty()));
        assert!(c.is_empty() && c.take().is_empty(), "take clears");
    }

    #[test]
    fn many_series_of_every_length_keep_their_own_values() {
        let mut c = Columns::new();
        let names: Vec<String> = (0..5000)
            .map(|i| "x".repeat(i % 23) + &i.to_string())
            .collect();
        for round in 0..3 {
            for (i, n) in names.iter().enumerate() {
                c.push("m", &[("k", n), ("empty", "")], (i * 10 + round) as f64);
            }
        }
        let out = c.take();
        assert_eq!(out.len(), names.len());
        let by_name: HashMap<&str, &SeriesValues> = out
            .iter()
            .map(|s| (s.labels[0].value.as_str(), s))
            .collect();
        for (i, n) in names.iter().enumerate() {
            let i = (i * 10) as f64;
            assert_eq!(by_name[n.as_str()].values, [i, i + 1.0, i + 2.0], "{n}");
        }
    }

    #[test]
    fn unstamped_values_of_a_stamped_series_get_the_batch_time() {
        let mut c = Columns::new();
        c.push("m", &[], 1.0);
        c.push_at("m", &[], 2.0, 1_000);
        c.push("m", &[], 3.0);
        let before = now_ms();
        let out = c.take();
        let stamps = &out[0].timestamps_ms;
        assert_eq!(out[0].values, [1.0, 2.0, 3.0]);
        assert_eq!(stamps[1], 1_000);
        assert!(stamps[0] >= before && stamps[2] >= before, "{stamps:?}");
    }

    #[test]
    fn equality_looks_at_every_byte() {
        assert!(eq("", "") && eq("abcdefgh", "abcdefgh") && eq("abcdefghij", "abcdefghij"));
        assert!(!eq("abcdefgh", "abcdefgi") && !eq("abcdefghij", "abcdefghik"));
        assert!(!eq("abc", "abcd") && !eq("a\0", "a"));
    }
}
