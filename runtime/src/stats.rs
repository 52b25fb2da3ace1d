//! Per-component counters and the component's own log ring.
//!
//! Counters are atomics so host calls, the scheduler and the API can touch them without a
//! lock; they live for the life of the process and feed both `GET /v1/components/{name}` and
//! `/metrics`. The log ring keeps the most recent lines in memory, which is what a user
//! debugging a collector looks at; durable telemetry goes to the store instead.
//!
//! The ring is bounded in lines and each line in bytes (cut before it is copied); what the
//! guest writes (`log`, stdout, stderr) is also bounded in rate — a token bucket of
//! `limits.log_lines_per_second` with bursts of `limits.log_burst` — so a component logging
//! in a loop costs a bounded amount of host work. Lines over the rate are dropped, counted,
//! and summed up in one line when the guest may log again. The host's own lines about the
//! component always go in.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

pub const LOG_RING_LINES: usize = 500;
const MAX_LINE_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Who wrote a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The guest, through the `log` interface.
    Guest,
    Stdout,
    Stderr,
    /// The host, about the component (activations, traps, refusals).
    Host,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    pub at_ms: i64,
    pub level: LogLevel,
    pub source: LogSource,
    pub version: Option<u32>,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastError {
    pub at_ms: i64,
    pub message: String,
}

/// Kinds of trap, as reported to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrapClass {
    CpuDeadline,
    MemoryLimit,
    Panic,
    Other,
    /// `limits.wall_ms` spent, host calls included.
    WallClock,
    /// One host call carried more data than the host lifts (`hostcall_fuel`).
    HostcallData,
}

impl TrapClass {
    pub const ALL: [TrapClass; 6] = [
        TrapClass::CpuDeadline,
        TrapClass::MemoryLimit,
        TrapClass::Panic,
        TrapClass::Other,
        TrapClass::WallClock,
        TrapClass::HostcallData,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TrapClass::CpuDeadline => "cpu_deadline",
            TrapClass::MemoryLimit => "memory_limit",
            TrapClass::Panic => "panic",
            TrapClass::Other => "other",
            TrapClass::WallClock => "wall_clock",
            TrapClass::HostcallData => "hostcall_data",
        }
    }
}

/// Kinds of call, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Init,
    Tick,
    Message,
    /// A compliance rule's `evaluate`.
    Evaluate,
    /// A correlation policy's `decide`.
    Decide,
}

impl CallKind {
    pub const ALL: [CallKind; 5] = [
        CallKind::Init,
        CallKind::Tick,
        CallKind::Message,
        CallKind::Evaluate,
        CallKind::Decide,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Init => "init",
            CallKind::Tick => "tick",
            CallKind::Message => "message",
            CallKind::Evaluate => "evaluate",
            CallKind::Decide => "decide",
        }
    }
}

#[derive(Default)]
pub struct ComponentStats {
    calls: [AtomicU64; 5],
    /// Calls whose export returned `err`.
    pub errors: AtomicU64,
    /// Host calls refused by the grant check.
    pub denied: AtomicU64,
    traps: [AtomicU64; 6],
    pub samples_stored: AtomicU64,
    pub logs_stored: AtomicU64,
    /// Samples and log records discarded because their call trapped or was over its limit.
    pub emitted_dropped: AtomicU64,
    /// Ticks not run because the previous one was still running.
    pub ticks_skipped: AtomicU64,
    /// Messages dropped because no version was active.
    pub messages_dropped: AtomicU64,
    /// Emit calls refused because their new series would exceed the tenant's quota.
    pub series_refused: AtomicU64,
    /// Guest log lines dropped because the component logged faster than its rate.
    pub log_dropped: AtomicU64,
    /// HTTP requests (`http.send`, each redirect hop counted) sent, and those that got no
    /// response (refused by grants, DNS, connect, TLS, timeout).
    pub http_requests: AtomicU64,
    pub http_failed: AtomicU64,
    /// AWS requests sent through the aws capability (retries counted), and the replies that
    /// said to slow down.
    pub aws_requests: AtomicU64,
    pub aws_throttled: AtomicU64,
    last_error: Mutex<Option<LastError>>,
    log: Mutex<LogRing>,
}

/// The log lines and the guest's log rate budget.
struct LogRing {
    lines: VecDeque<LogLine>,
    /// Lines the guest may write now (refilled at `rate` per second up to `burst`).
    tokens: f64,
    refilled: Option<std::time::Instant>,
    rate: f64,
    burst: f64,
    /// Lines dropped since the last one let through.
    dropped_since: u64,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing {
            lines: VecDeque::new(),
            tokens: DEFAULT_LOG_BURST as f64,
            refilled: None,
            rate: DEFAULT_LOG_RATE as f64,
            burst: DEFAULT_LOG_BURST as f64,
            dropped_since: 0,
        }
    }
}

/// Defaults of `limits.log_lines_per_second` and `limits.log_burst`.
pub const DEFAULT_LOG_RATE: u32 = 100;
pub const DEFAULT_LOG_BURST: u32 = 1000;

impl LogRing {
    /// Take a token for a guest line; false if the guest is over its rate.
    fn admit(&mut self) -> bool {
        let now = std::time::Instant::now();
        if let Some(last) = self.refilled {
            let earned = now.duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn push(&mut self, line: LogLine) {
        if self.lines.len() == LOG_RING_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StatsSnapshot {
    pub calls: serde_json::Map<String, serde_json::Value>,
    pub errors: u64,
    pub denied: u64,
    pub traps: serde_json::Map<String, serde_json::Value>,
    pub samples_stored: u64,
    pub logs_stored: u64,
    pub emitted_dropped: u64,
    pub ticks_skipped: u64,
    pub messages_dropped: u64,
    pub series_refused: u64,
    pub log_dropped: u64,
    pub http_requests: u64,
    pub http_failed: u64,
    pub aws_requests: u64,
    pub aws_throttled: u64,
}

impl ComponentStats {
    pub fn count_call(&self, kind: CallKind) {
        self.calls[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self, kind: CallKind) -> u64 {
        self.calls[kind as usize].load(Ordering::Relaxed)
    }

    pub fn count_trap(&self, class: TrapClass) {
        self.traps[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn traps(&self, class: TrapClass) -> u64 {
        self.traps[class as usize].load(Ordering::Relaxed)
    }

    pub fn set_last_error(&self, message: impl Into<String>) {
        *self.last_error.lock() = Some(LastError {
            at_ms: crate::now_ms(),
            message: message.into(),
        });
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().clone()
    }

    /// Set the guest's log rate (lines per second, burst).
    pub fn set_log_rate(&self, per_second: u32, burst: u32) {
        let mut ring = self.log.lock();
        ring.rate = f64::from(per_second);
        ring.burst = f64::from(burst.max(1));
        ring.tokens = ring.tokens.min(ring.burst);
    }

    pub fn log(&self, level: LogLevel, source: LogSource, version: Option<u32>, message: &str) {
        let message = cut_line(message.trim_end());
        let mut ring = self.log.lock();
        if source != LogSource::Host {
            if !ring.admit() {
                ring.dropped_since += 1;
                self.log_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if ring.dropped_since > 0 {
                let dropped = std::mem::take(&mut ring.dropped_since);
                ring.push(LogLine {
                    at_ms: crate::now_ms(),
                    level: LogLevel::Warn,
                    source: LogSource::Host,
                    version,
                    message: format!(
                        "{dropped} log lines dropped: the component logged faster than limits.log_lines_per_second"
                    ),
                });
            }
        }
        ring.push(LogLine {
            at_ms: crate::now_ms(),
            level,
            source,
            version,
            message,
        });
    }

    /// The newest `limit` lines, oldest first.
    pub fn recent_log(&self, limit: usize) -> Vec<LogLine> {
        let ring = self.log.lock();
        let skip = ring.lines.len().saturating_sub(limit);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            calls: CallKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), self.calls(*k).into()))
                .collect(),
            errors: load(&self.errors),
            denied: load(&self.denied),
            traps: TrapClass::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), self.traps(*k).into()))
                .collect(),
            samples_stored: load(&self.samples_stored),
            logs_stored: load(&self.logs_stored),
            emitted_dropped: load(&self.emitted_dropped),
            ticks_skipped: load(&self.ticks_skipped),
            messages_dropped: load(&self.messages_dropped),
            series_refused: load(&self.series_refused),
            log_dropped: load(&self.log_dropped),
            http_requests: load(&self.http_requests),
            http_failed: load(&self.http_failed),
            aws_requests: load(&self.aws_requests),
            aws_throttled: load(&self.aws_throttled),
        }
    }
}

/// A line cut to `MAX_LINE_BYTES` (on a character boundary, marked with `…`); only what is
/// kept is copied.
fn cut_line(text: &str) -> String {
    if text.len() <= MAX_LINE_BYTES {
        return text.to_string();
    }
    let mut cut = MAX_LINE_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut line = String::with_capacity(cut + 3);
    line.push_str(&text[..cut]);
    line.push('…');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_are_cut_and_rate_limited_host_lines_are_not() {
        let stats = ComponentStats::default();
        stats.set_log_rate(10, 5);
        let long = "é".repeat(10_000);
        for _ in 0..20 {
            stats.log(LogLevel::Info, LogSource::Guest, Some(1), &long);
        }
        stats.log(LogLevel::Info, LogSource::Host, Some(1), "activated");
        let lines = stats.recent_log(100);
        assert_eq!(lines.len(), 6, "a burst of 5, then the host's line");
        assert!(lines[0].message.len() <= MAX_LINE_BYTES + '…'.len_utf8());
        assert!(lines[0].message.ends_with('…'));
        assert_eq!(stats.log_dropped.load(Ordering::Relaxed), 15);
        // Once the guest may log again, a line says how many were dropped.
        std::thread::sleep(std::time::Duration::from_millis(250));
        stats.log(LogLevel::Info, LogSource::Stdout, Some(1), "back");
        let lines = stats.recent_log(2);
        assert!(
            lines[0].message.contains("15 log lines dropped"),
            "{lines:?}"
        );
        assert_eq!(lines[1].message, "back");
    }
}
