//! `sotp:telemetry/emit`: samples and telemetry log records, buffered per call.
//!
//! Everything a call emits stays in memory until the call returns and is committed, so each
//! batch is checked before it is kept: names and label sets, the call's record count
//! (`limits.max_emit_per_call`) and bytes (`limits.max_emit_bytes`), and the tenant's series
//! quota. A refused batch leaves nothing behind; the guest gets the reason.

use super::{HostState, WitError, WitLabel, WitLogRecord, WitSample};
use crate::host::sotp::telemetry::emit;
use crate::host::sotp::telemetry::types::SeriesValues;
use crate::stats::LogLevel;
use crate::telemetry::{
    LogRow, POINT_SIZE, Samples, SeriesKey, normalize_labels, validate_metric_name,
};
use std::sync::atomic::Ordering::Relaxed;

const MAX_LOG_MESSAGE: usize = 64 * 1024;

impl emit::Host for HostState {
    fn samples(&mut self, batch: Vec<WitSample>) -> Result<(), WitError> {
        self.check_count(batch.len())?;
        let now = crate::now_ms();
        let mut out = Samples::default();
        for sample in batch {
            let key = self.series_key(sample.metric, sample.labels)?;
            out.push(key, sample.timestamp_ms.unwrap_or(now), sample.value);
        }
        self.keep_samples(out)
    }

    fn series(&mut self, batch: Vec<SeriesValues>) -> Result<(), WitError> {
        let count = batch.iter().map(|s| s.values.len()).sum();
        self.check_count(count)?;
        let now = crate::now_ms();
        let mut out = Samples::default();
        for s in batch {
            if !s.timestamps_ms.is_empty() && s.timestamps_ms.len() != s.values.len() {
                return Err(WitError::Invalid(format!(
                    "series `{}`: {} values but {} timestamps (give one per value, or none)",
                    s.metric,
                    s.values.len(),
                    s.timestamps_ms.len()
                )));
            }
            let key = self.series_key(s.metric, s.labels)?;
            if s.values.is_empty() {
                continue; // no point: no series to hold, none to count against the quota
            }
            let stamps = s.timestamps_ms;
            let points = s
                .values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (stamps.get(i).copied().unwrap_or(now), v));
            out.extend_series(key, points);
        }
        self.keep_samples(out)
    }

    fn logs(&mut self, batch: Vec<WitLogRecord>) -> Result<(), WitError> {
        self.check_count(batch.len())?;
        let now = crate::now_ms();
        let mut rows = Vec::with_capacity(batch.len());
        let mut bytes = 0;
        for record in batch {
            if record.message.len() > MAX_LOG_MESSAGE {
                return Err(WitError::Invalid(format!(
                    "log message of {} bytes is over the {MAX_LOG_MESSAGE}-byte limit",
                    record.message.len()
                )));
            }
            let labels = self.labels(record.labels)?;
            bytes += record.message.len()
                + labels
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 16)
                    .sum::<usize>()
                + 64;
            rows.push(LogRow {
                ts_ms: record.timestamp_ms.unwrap_or(now),
                level: LogLevel::from(record.level),
                message: record.message,
                labels,
            });
        }
        self.check_bytes(bytes, rows.len())?;
        self.out.logs.extend(rows);
        self.out.bytes += bytes;
        Ok(())
    }
}

impl HostState {
    /// Refuse a batch that would take the call over `limits.max_emit_per_call`.
    fn check_count(&self, adding: usize) -> Result<(), WitError> {
        let limit = self.env.manifest.limits.max_emit_per_call as usize;
        if self.out.len().saturating_add(adding) > limit {
            self.env
                .stats
                .emitted_dropped
                .fetch_add(adding as u64, Relaxed);
            return Err(WitError::Invalid(format!(
                "this call would emit more than limits.max_emit_per_call = {limit} records"
            )));
        }
        Ok(())
    }

    /// Refuse a batch that would take the call over `limits.max_emit_bytes`.
    fn check_bytes(&self, adding: usize, records: usize) -> Result<(), WitError> {
        let limit = self.env.manifest.limits.max_emit_bytes;
        if self.out.bytes.saturating_add(adding) as u64 > limit.0 {
            self.env
                .stats
                .emitted_dropped
                .fetch_add(records as u64, Relaxed);
            return Err(WitError::Invalid(format!(
                "this call would hold more than limits.max_emit_bytes = {limit} of telemetry \
                 ({} held, {adding} more asked)",
                self.out.bytes
            )));
        }
        Ok(())
    }

    fn series_key(&self, metric: String, labels: Vec<WitLabel>) -> Result<SeriesKey, WitError> {
        validate_metric_name(&metric).map_err(WitError::Invalid)?;
        let labels = self.labels(labels)?;
        Ok(self
            .env
            .telemetry
            .hasher()
            .key(&self.env.tenant, metric, labels))
    }

    /// Keep a checked batch of samples for the commit, if it fits the call's byte budget and
    /// the tenant's series quota.
    fn keep_samples(&mut self, out: Samples) -> Result<(), WitError> {
        let bytes = out.series.iter().map(SeriesKey::size).sum::<usize>() + out.len() * POINT_SIZE;
        self.check_bytes(bytes, out.len())?;
        let quota = self.env.budget.limits().max_series;
        let checked = self.env.telemetry.check_series_quota(
            &self.env.tenant,
            quota,
            out.series.iter(),
            &mut self.new_series,
        );
        if let Err(e) = checked {
            let env = &self.env;
            env.budget.counters.series_refused.fetch_add(1, Relaxed);
            env.stats.series_refused.fetch_add(1, Relaxed);
            env.stats
                .emitted_dropped
                .fetch_add(out.len() as u64, Relaxed);
            return Err(self.deny(e.to_string()));
        }
        self.out.samples.append(out);
        self.out.bytes += bytes;
        Ok(())
    }

    fn labels(&self, labels: Vec<WitLabel>) -> Result<Vec<(String, String)>, WitError> {
        normalize_labels(
            &self.env.component,
            labels.into_iter().map(|l| (l.name, l.value)).collect(),
        )
        .map_err(WitError::Invalid)
    }
}

impl From<super::WitLevel> for LogLevel {
    fn from(level: super::WitLevel) -> Self {
        use super::WitLevel as L;
        match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testing;
    use std::sync::Arc;

    fn sample(metric: &str, host: &str) -> WitSample {
        WitSample {
            metric: metric.into(),
            labels: vec![WitLabel {
                name: "host".into(),
                value: host.into(),
            }],
            value: 1.0,
            timestamp_ms: Some(1),
        }
    }

    #[test]
    fn a_call_is_bounded_in_records_and_bytes() {
        let (_dir, mut state) = testing::state(
            "[limits]\nmax_emit_per_call = 10\nmax_emit_bytes = \"64KiB\"\n",
            Arc::new(testing::NoServices),
        );
        let err = emit::Host::samples(
            &mut state,
            (0..11).map(|i| sample("m", &i.to_string())).collect(),
        )
        .unwrap_err();
        assert!(matches!(err, WitError::Invalid(m) if m.contains("max_emit_per_call")));
        // Ten samples, each with a 1000-byte label: within the count, over 64 KiB together
        // with what came before.
        let long = "x".repeat(1000);
        for round in 0..6 {
            let batch: Vec<WitSample> = (0..1)
                .map(|_| sample("m", &format!("{round}{long}")))
                .collect();
            emit::Host::samples(&mut state, batch).unwrap();
        }
        let big: Vec<WitLogRecord> = (0..4)
            .map(|_| WitLogRecord {
                level: crate::host::WitLevel::Info,
                message: "y".repeat(60_000),
                labels: vec![],
                timestamp_ms: None,
            })
            .collect();
        let err = emit::Host::logs(&mut state, big).unwrap_err();
        assert!(
            matches!(&err, WitError::Invalid(m) if m.contains("max_emit_bytes")),
            "{err:?}"
        );
        assert_eq!(
            state.out.samples.len(),
            6,
            "refused batches leave nothing behind"
        );
        assert!(state.out.logs.is_empty());
    }

    #[test]
    fn columns_share_one_series_key_and_check_their_timestamps() {
        let (_dir, mut state) = testing::state("", Arc::new(testing::NoServices));
        let column = |values: Vec<f64>, stamps: Vec<i64>| SeriesValues {
            metric: "if_octets".into(),
            labels: vec![WitLabel {
                name: "if".into(),
                value: "eth0".into(),
            }],
            values,
            timestamps_ms: stamps,
        };
        emit::Host::series(
            &mut state,
            vec![column(vec![1.0, 2.0, 3.0], vec![10, 20, 30])],
        )
        .unwrap();
        assert_eq!(state.out.samples.series.len(), 1);
        assert_eq!(state.out.samples.len(), 3);
        assert_eq!(state.out.samples.points[2].ts_ms, 30);
        let err =
            emit::Host::series(&mut state, vec![column(vec![1.0, 2.0], vec![10])]).unwrap_err();
        assert!(matches!(err, WitError::Invalid(m) if m.contains("2 values but 1 timestamps")));
    }
}
