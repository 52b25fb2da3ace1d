//! Native components: collector logic compiled into the host instead of loaded as
//! WebAssembly, run through exactly the same machinery (queue, batching, commits, MQTT
//! routing and acknowledgement). The benchmarks use it to price the WebAssembly boundary
//! alone — "the same pipeline with the logic compiled natively" — and it is the hook for
//! built-in collectors later.
//!
//! A native component has no sandbox: no memory cap, no CPU deadline. It gets the same
//! grant checks on what it asks the host for, through [`NativeHost`].

use crate::grants::{deny_topic, validate_topic_filter};
use crate::host::{Emitted, InstanceEnv};
use crate::stats::{LogLevel, LogSource};
use crate::telemetry::{normalize_labels, validate_metric_name};
use std::sync::atomic::Ordering;

/// What a native collector implements; the mirror of the `collector` world's exports.
pub trait NativeCollector: Send + 'static {
    fn init(&mut self, config_json: &str, host: &mut NativeHost<'_>) -> Result<(), String>;

    fn on_tick(
        &mut self,
        _seq: u64,
        _scheduled_at_ms: i64,
        _host: &mut NativeHost<'_>,
    ) -> Result<(), String> {
        Ok(())
    }

    fn on_message(
        &mut self,
        _topic: &str,
        _payload: &[u8],
        _host: &mut NativeHost<'_>,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// The host side offered to a native collector during one call.
pub struct NativeHost<'a> {
    pub(crate) env: &'a InstanceEnv,
    pub(crate) out: &'a mut Emitted,
}

impl NativeHost<'_> {
    /// The `emit.samples` path: the same limits and label rules as for a guest.
    pub fn emit_sample(
        &mut self,
        metric: &str,
        labels: Vec<(String, String)>,
        value: f64,
        timestamp_ms: Option<i64>,
    ) -> Result<(), String> {
        let limit = self.env.manifest.limits.max_emit_per_call as usize;
        if self.out.len() >= limit {
            self.env
                .stats
                .emitted_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "this call would emit more than limits.max_emit_per_call = {limit} records"
            ));
        }
        validate_metric_name(metric)?;
        let labels = normalize_labels(&self.env.component, labels)?;
        let key = self
            .env
            .telemetry
            .hasher()
            .key(&self.env.tenant, metric.to_string(), labels);
        self.out.bytes += key.size() + crate::telemetry::POINT_SIZE;
        self.out
            .samples
            .push(key, timestamp_ms.unwrap_or_else(crate::now_ms), value);
        Ok(())
    }

    /// The `mqtt.subscribe` path, grant-checked.
    pub fn subscribe(&mut self, filter: &str) -> Result<(), String> {
        let env = self.env;
        if let Some(reason) = deny_topic(&env.manifest.grants, filter) {
            env.stats.denied.fetch_add(1, Ordering::Relaxed);
            env.stats.log(
                LogLevel::Warn,
                LogSource::Host,
                Some(env.version),
                &format!("denied: {reason}"),
            );
            return Err(format!("denied: {reason}"));
        }
        validate_topic_filter(filter)?;
        let added = env.subscriptions.lock().insert(filter.to_string());
        if added && env.is_active() {
            env.mqtt.add_filter(&env.tenant, &env.component, filter);
        }
        Ok(())
    }
}
