//! Guest stdout and stderr, captured line by line into the component's log ring.
//!
//! Writes never fail (a guest's `println!` panics if stdout errors), lines are capped, and
//! stderr is also kept per call so that when a Rust guest panics the host can report
//! "panicked: <message>" instead of an opaque `unreachable` trap.

use crate::stats::{ComponentStats, LogLevel, LogSource};
use bytes::Bytes;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const PARTIAL_LINE_CAP: usize = 16 * 1024;
const CAPTURE_CAP: usize = 16 * 1024;

#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    stats: Arc<ComponentStats>,
    source: LogSource,
    version: u32,
    partial: Vec<u8>,
    /// Everything written since the last `take_captured`, bounded.
    captured: String,
}

impl GuestOutput {
    pub fn new(stats: Arc<ComponentStats>, source: LogSource, version: u32) -> Self {
        GuestOutput {
            inner: Arc::new(Mutex::new(Inner {
                stats,
                source,
                version,
                partial: Vec::new(),
                captured: String::new(),
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock();
        inner.partial.extend_from_slice(bytes);
        while let Some(pos) = inner.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = inner.partial.drain(..=pos).collect();
            inner.emit_line(&line[..line.len() - 1]);
        }
        if inner.partial.len() > PARTIAL_LINE_CAP {
            let line = std::mem::take(&mut inner.partial);
            inner.emit_line(&line);
        }
    }

    /// Flush a trailing partial line and return what was written since the last take.
    pub fn take_captured(&self) -> String {
        let mut inner = self.inner.lock();
        if !inner.partial.is_empty() {
            let line = std::mem::take(&mut inner.partial);
            inner.emit_line(&line);
        }
        std::mem::take(&mut inner.captured)
    }
}

impl Inner {
    fn emit_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let level = match self.source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        self.stats
            .log(level, self.source, Some(self.version), &text);
        if self.captured.len() < CAPTURE_CAP {
            self.captured.push_str(&text);
            self.captured.push('\n');
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Pull the message out of Rust's panic output:
/// `thread '<unnamed>' panicked at src/lib.rs:10:5:\n<message>\nnote: run with ...`.
pub fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let after = &stderr[start..];
    let mut lines = after.lines();
    let header = lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace"))
        .collect();
    let message = body.join("\n").trim().to_string();
    if message.is_empty() {
        // Older formats put the message on the header line after the location.
        Some(header.trim_start_matches("panicked at ").to_string())
    } else {
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_extracted() {
        let out = "thread '<unnamed>' panicked at src/lib.rs:10:5:\nsensor table corrupt: 7\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(out).as_deref(),
            Some("sensor table corrupt: 7")
        );
        assert_eq!(panic_message("all is well\n"), None);
    }
}
