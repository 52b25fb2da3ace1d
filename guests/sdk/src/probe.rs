//! What a probe reports, in blackbox_exporter's metric names so dashboards and alerts built
//! for it read SOTP's probes: `probe_success`, `probe_duration_seconds`,
//! `probe_http_duration_seconds{phase}` (resolve, connect, tls, processing, transfer),
//! `probe_http_status_code`, `probe_ssl_earliest_cert_expiry`, `probe_http_redirects`.
//!
//! Unlike blackbox_exporter (#579), a phase that was not reached is not reported at all: a
//! failed connect reports `resolve` and nothing after it, so percentiles are not skewed by
//! zeros.

use crate::http::{Failure, Response, Timings};
use crate::{Level, LogRecord, Samples, describe};

/// The samples and log lines of one probe run, under one set of labels.
pub struct ProbeRun {
    labels: Vec<(String, String)>,
    samples: Samples,
    logs: Vec<LogRecord>,
}

impl ProbeRun {
    /// `labels`: what names the probe (`probe`, `target`...); never credentials.
    pub fn new(labels: &[(&str, &str)]) -> ProbeRun {
        ProbeRun {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: Samples::new(),
            logs: Vec::new(),
        }
    }

    /// A sample under the run's labels plus `extra`.
    pub fn sample(&mut self, metric: &str, value: f64, extra: &[(&str, &str)]) {
        let s = self.samples.push(metric, value);
        for (k, v) in &self.labels {
            s.label(k, v);
        }
        for (k, v) in extra {
            s.label(k, v);
        }
    }

    /// The phases measured, as `probe_http_duration_seconds{phase}` (+ `extra` labels).
    pub fn timings(&mut self, t: &Timings, extra: &[(&str, &str)]) {
        let phases = [
            ("resolve", t.dns_ms),
            ("connect", t.connect_ms),
            ("tls", t.tls_ms),
            ("processing", t.first_byte_ms),
            ("transfer", t.transfer_ms),
        ];
        for (phase, ms) in phases {
            if let Some(ms) = ms {
                let mut labels = vec![("phase", phase)];
                labels.extend_from_slice(extra);
                self.sample("probe_http_duration_seconds", ms / 1000.0, &labels);
            }
        }
    }

    /// What a response tells about the server: status, redirects, certificate expiry.
    pub fn response(&mut self, r: &Response, extra: &[(&str, &str)]) {
        self.timings(&r.timings, extra);
        self.sample("probe_http_status_code", f64::from(r.status), extra);
        self.sample("probe_http_redirects", f64::from(r.redirects), extra);
        self.sample("probe_http_content_length", r.body.len() as f64, extra);
        if let Some(cert) = &r.certificate {
            self.sample(
                "probe_ssl_earliest_cert_expiry",
                (cert.not_after_ms / 1000) as f64,
                extra,
            );
        }
    }

    /// A request that got no answer: its measured phases, and the failure logged.
    pub fn failure(&mut self, step: &str, f: &Failure) {
        self.timings(&f.timings, &[]);
        self.fail(
            step,
            &format!("{} (in {})", describe(&f.error), f.phase),
            &f.traceparent,
        );
    }

    /// A log line for a failed step: the step, the reason and the trace it ran under.
    pub fn fail(&mut self, step: &str, reason: &str, traceparent: &str) {
        let message = format!("{} failed at {step}: {reason}", self.probe_name());
        self.line(Level::Warn, message, step, traceparent);
    }

    /// A log line for something that holds but will not for long (a certificate close to
    /// its expiry).
    pub fn warn(&mut self, step: &str, reason: &str, traceparent: &str) {
        let message = format!("{} warning at {step}: {reason}", self.probe_name());
        self.line(Level::Warn, message, step, traceparent);
    }

    fn probe_name(&self) -> String {
        self.labels
            .iter()
            .find(|(k, _)| k == "probe")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "probe".into())
    }

    fn line(&mut self, level: Level, message: String, step: &str, traceparent: &str) {
        let mut labels: Vec<crate::Label> = self
            .labels
            .iter()
            .map(|(k, v)| crate::Label {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        labels.push(crate::Label {
            name: "step".into(),
            value: step.into(),
        });
        let trace = crate::http::trace_id(traceparent);
        if !trace.is_empty() {
            labels.push(crate::Label {
                name: "trace_id".into(),
                value: trace.into(),
            });
        }
        self.logs.push(LogRecord {
            level,
            message,
            labels,
            timestamp_ms: None,
        });
    }

    /// Add `probe_success` and `probe_duration_seconds` and hand everything to the host.
    pub fn finish(mut self, success: bool, duration_ms: f64) -> Result<(), String> {
        self.sample("probe_success", if success { 1.0 } else { 0.0 }, &[]);
        self.sample("probe_duration_seconds", duration_ms / 1000.0, &[]);
        self.samples.emit()?;
        if !self.logs.is_empty() {
            crate::host::emit::logs(&self.logs).map_err(|e| describe(&e))?;
        }
        Ok(())
    }
}
