//! Per-component counters and the component's own log ring.
//!
//! Counters are atomics so host calls, the scheduler and the API can touch them without a
//! lock; they live for the life of the process and feed both `GET /v1/components/{name}` and
//! `/metrics`. The log ring keeps the most recent lines in memory, which is what a user
//! debugging a collector looks at; durable telemetry goes to the store instead.

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
}

impl TrapClass {
    pub const ALL: [TrapClass; 4] = [
        TrapClass::CpuDeadline,
        TrapClass::MemoryLimit,
        TrapClass::Panic,
        TrapClass::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TrapClass::CpuDeadline => "cpu_deadline",
            TrapClass::MemoryLimit => "memory_limit",
            TrapClass::Panic => "panic",
            TrapClass::Other => "other",
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
}

impl CallKind {
    pub const ALL: [CallKind; 3] = [CallKind::Init, CallKind::Tick, CallKind::Message];
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Init => "init",
            CallKind::Tick => "tick",
            CallKind::Message => "message",
        }
    }
}

#[derive(Default)]
pub struct ComponentStats {
    calls: [AtomicU64; 3],
    /// Calls whose export returned `err`.
    pub errors: AtomicU64,
    /// Host calls refused by the grant check.
    pub denied: AtomicU64,
    traps: [AtomicU64; 4],
    pub samples_stored: AtomicU64,
    pub logs_stored: AtomicU64,
    /// Samples and log records discarded because their call trapped or was over its limit.
    pub emitted_dropped: AtomicU64,
    /// Ticks not run because the previous one was still running.
    pub ticks_skipped: AtomicU64,
    /// Messages dropped because no version was active.
    pub messages_dropped: AtomicU64,
    last_error: Mutex<Option<LastError>>,
    log: Mutex<VecDeque<LogLine>>,
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

    pub fn log(&self, level: LogLevel, source: LogSource, version: Option<u32>, message: &str) {
        let mut message = message.trim_end().to_string();
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let mut ring = self.log.lock();
        if ring.len() == LOG_RING_LINES {
            ring.pop_front();
        }
        ring.push_back(LogLine {
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
        let skip = ring.len().saturating_sub(limit);
        ring.iter().skip(skip).cloned().collect()
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
        }
    }
}
