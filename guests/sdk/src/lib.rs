//! The SOTP guest SDK: a thin layer over the `wit-bindgen` bindings of
//! `sotp:telemetry@0.1.0` so a collector is one file and a manifest.
//!
//! ```ignore
//! use sotp_guest::{Collector, Config, Tick, Samples};
//!
//! struct Counter { marker: String }
//!
//! impl Collector for Counter {
//!     fn init(config: &Config) -> Result<Self, String> {
//!         Ok(Counter { marker: config.str_or("marker", "v1").to_string() })
//!     }
//!     fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
//!         let mut out = Samples::new();
//!         out.push("ticks", tick.seq as f64).label("marker", &self.marker);
//!         out.emit()
//!     }
//! }
//!
//! sotp_guest::collector!(Counter);
//! ```
//!
//! State lives in the value `init` returns; the host calls one export at a time per
//! instance. A new instance (after a trap, or a new version) starts from `init` again.
//!
//! Two ways to emit samples: [`Samples`], a record per sample, and [`Columns`], every value
//! of a series gathered under one metric and label set — much cheaper across the boundary
//! when a batch holds several values per series (interface counters over time, a sensor's
//! readings), and counted the same against the limits.

/// The raw `wit-bindgen` bindings.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "collector",
        pub_export_macro: true,
        export_macro_name: "__export_collector_world",
        default_bindings_module: "sotp_guest::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::Tick;
pub use bindings::sotp::telemetry::types::{Error, Label, Level, LogRecord, Sample, SeriesValues};

mod columns;
pub use columns::Columns;
pub mod http;
pub mod probe;

/// The host interfaces, for calls the helpers below do not cover.
pub mod host {
    pub use crate::bindings::sotp::telemetry::{
        aws, backups, emit, http, inventory, log, mqtt, scrape, secrets, snmp, ssh,
    };
}

/// SSH to inventory devices: `run` commands, credentials and host keys handled by the host.
pub mod ssh {
    pub use crate::bindings::sotp::telemetry::ssh::{CommandOutput, run};
}

/// Configuration backups into the tenant's Git repository.
pub mod backups {
    pub use crate::bindings::sotp::telemetry::backups::{Saved, store};
}

/// SNMP to inventory devices: `get`, `walk`, and the value types.
pub mod snmp {
    pub use crate::bindings::sotp::telemetry::snmp::{Value, Varbind, get, walk};

    impl Value {
        /// The value as a number, if it is one (integers, counters, gauges, timeticks).
        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Integer(v) => Some(*v as f64),
                Value::Counter32(v) | Value::Gauge32(v) | Value::Timeticks(v) => Some(*v as f64),
                Value::Counter64(v) => Some(*v as f64),
                _ => None,
            }
        }

        /// The value as text, if it is an octet string.
        pub fn as_text(&self) -> Option<String> {
            match self {
                Value::Octets(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }
        }
    }

    /// The last sub-identifier of an OID (the ifIndex of an ifTable column entry).
    pub fn index_of(oid: &str) -> Option<u32> {
        oid.rsplit('.').next()?.parse().ok()
    }
}

/// The tenant's inventory, as far as the grants reach.
pub mod inventory {
    pub use crate::bindings::sotp::telemetry::inventory::{
        DeviceInfo, devices, set_interface_names,
    };
}

/// The tenant's MQTT broker: `subscribe` (from `init`) and `publish`.
pub mod mqtt {
    pub use crate::bindings::sotp::telemetry::mqtt::{publish, subscribe};
}

/// True if `topic` matches the MQTT `filter` (`+` one level, `#` the rest).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => continue,
            (Some(fl), Some(tl)) if fl == tl => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a collector implements.
pub trait Collector: Sized + 'static {
    /// Build the collector's state from the manifest's `[config]` table.
    fn init(config: &Config) -> Result<Self, String>;

    /// Called on the manifest's `schedule`.
    fn on_tick(&mut self, _tick: Tick) -> Result<(), String> {
        Ok(())
    }

    /// Called for each pushed message.
    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// The manifest's `[config]` table.
#[derive(Clone, Debug, Default)]
pub struct Config(pub serde_json::Value);

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json)
            .map(Config)
            .map_err(|e| format!("config is not JSON: {e}"))
    }

    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).and_then(|v| v.as_str()).unwrap_or(default)
    }

    pub fn u64_or(&self, key: &str, default: u64) -> u64 {
        self.0.get(key).and_then(|v| v.as_u64()).unwrap_or(default)
    }

    pub fn f64_or(&self, key: &str, default: f64) -> f64 {
        self.0.get(key).and_then(|v| v.as_f64()).unwrap_or(default)
    }

    /// A list of strings (`tags = ["a", "b"]`); empty if absent.
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.0
            .get(key)
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(|v| v.as_bool()).unwrap_or(default)
    }
}

impl Columns {
    /// Hand the gathered series to the host (`emit.series`) and clear them.
    pub fn emit(&mut self) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let batch = self.take();
        host::emit::series(&batch).map_err(|e| describe(&e))
    }
}

/// A batch of samples, sent to the host in one call (one record per sample). Many values
/// of few series cost less as [`Columns`].
#[derive(Default)]
pub struct Samples {
    batch: Vec<Sample>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sample; chain `.label(..)` and `.at(..)` on the result.
    pub fn push(&mut self, metric: &str, value: f64) -> &mut Sample {
        self.batch.push(Sample {
            metric: metric.to_string(),
            labels: Vec::new(),
            value,
            timestamp_ms: None,
        });
        self.batch.last_mut().expect("just pushed")
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Hand the batch to the host and clear it.
    pub fn emit(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        host::emit::samples(&batch).map_err(|e| describe(&e))
    }
}

impl Sample {
    pub fn label(&mut self, name: &str, value: &str) -> &mut Self {
        self.labels.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn at(&mut self, timestamp_ms: i64) -> &mut Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Human text for a host error.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Denied(m) => format!("denied: {m}"),
        Error::Unavailable(m) => format!("unavailable: {m}"),
        Error::Invalid(m) => format!("invalid: {m}"),
        Error::Timeout(m) => format!("timeout: {m}"),
    }
}

/// Write to the component's own log (what `sotp component logs` shows).
pub mod log {
    use super::{Level, host};

    pub fn debug(message: &str) {
        host::log::write(Level::Debug, message)
    }
    pub fn info(message: &str) {
        host::log::write(Level::Info, message)
    }
    pub fn warn(message: &str) {
        host::log::write(Level::Warn, message)
    }
    pub fn error(message: &str) {
        host::log::write(Level::Error, message)
    }
}

/// Read a secret the manifest grants.
pub fn secret(name: &str) -> Result<String, Error> {
    host::secrets::get(name)
}

/// Export a [`Collector`] implementation as the component's `collector` world.
#[macro_export]
macro_rules! collector {
    ($ty:ty) => {
        const _: () = {
            use ::std::cell::RefCell;

            ::std::thread_local! {
                static STATE: RefCell<Option<$ty>> = const { RefCell::new(None) };
            }

            struct Export;

            impl $crate::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let config = $crate::Config::parse(&config)?;
                    let state = <$ty as $crate::Collector>::init(&config)?;
                    STATE.with(|s| *s.borrow_mut() = Some(state));
                    Ok(())
                }

                fn on_tick(tick: $crate::Tick) -> Result<(), String> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(state) => $crate::Collector::on_tick(state, tick),
                        None => Err("on-tick before init".to_string()),
                    })
                }

                fn on_message(topic: String, payload: Vec<u8>) -> Result<(), String> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(state) => $crate::Collector::on_message(state, &topic, &payload),
                        None => Err("on-message before init".to_string()),
                    })
                }
            }

    $crate::bindings::__export_collector_world!(Export with_types_in $crate::bindings);
        };
    };
}
