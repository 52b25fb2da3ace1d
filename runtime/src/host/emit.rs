//! `sotp:telemetry/emit`: samples and telemetry log records, buffered per call.

use super::{HostState, WitError, WitLabel, WitLogRecord, WitSample};
use crate::host::sotp::telemetry::emit;
use crate::stats::LogLevel;
use crate::telemetry::{LogRow, SampleRow, normalize_labels, validate_metric_name};

const MAX_LOG_MESSAGE: usize = 64 * 1024;

impl emit::Host for HostState {
    fn samples(&mut self, batch: Vec<WitSample>) -> Result<(), WitError> {
        self.check_room(batch.len())?;
        let now = crate::now_ms();
        let mut rows = Vec::with_capacity(batch.len());
        for sample in batch {
            validate_metric_name(&sample.metric).map_err(WitError::Invalid)?;
            let labels = self.labels(sample.labels)?;
            rows.push(SampleRow {
                metric: sample.metric,
                labels,
                ts_ms: sample.timestamp_ms.unwrap_or(now),
                value: sample.value,
            });
        }
        self.out.samples.extend(rows);
        Ok(())
    }

    fn logs(&mut self, batch: Vec<WitLogRecord>) -> Result<(), WitError> {
        self.check_room(batch.len())?;
        let now = crate::now_ms();
        let mut rows = Vec::with_capacity(batch.len());
        for record in batch {
            if record.message.len() > MAX_LOG_MESSAGE {
                return Err(WitError::Invalid(format!(
                    "log message of {} bytes is over the {MAX_LOG_MESSAGE}-byte limit",
                    record.message.len()
                )));
            }
            let labels = self.labels(record.labels)?;
            rows.push(LogRow {
                ts_ms: record.timestamp_ms.unwrap_or(now),
                level: LogLevel::from(record.level),
                message: record.message,
                labels,
            });
        }
        self.out.logs.extend(rows);
        Ok(())
    }
}

impl HostState {
    fn check_room(&self, adding: usize) -> Result<(), WitError> {
        let limit = self.env.manifest.limits.max_emit_per_call as usize;
        if self.out.len() + adding > limit {
            self.env
                .stats
                .emitted_dropped
                .fetch_add(adding as u64, std::sync::atomic::Ordering::Relaxed);
            return Err(WitError::Invalid(format!(
                "this call would emit more than limits.max_emit_per_call = {limit} records"
            )));
        }
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
