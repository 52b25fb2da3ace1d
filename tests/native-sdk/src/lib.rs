//! The `sotp_guest` API, natively: what a collector's source needs to compile and run outside
//! WebAssembly, for the guest-versus-native benchmarks. Emitted samples collect in a
//! thread-local buffer (`take_emitted`), subscriptions in another (`take_subscriptions`).
//!
//! Only the API surface the benchmarked collectors use is mirrored; it must keep the real
//! SDK's signatures (guests/sdk/src/lib.rs), or the benchmark stops compiling.

use std::cell::RefCell;

pub trait Collector: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn on_tick(&mut self, _tick: Tick) -> Result<(), String> {
        Ok(())
    }
    fn on_message(&mut self, _topic: &str, _payload: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub seq: u64,
    pub scheduled_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct Label {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub metric: String,
    pub labels: Vec<Label>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct SeriesValues {
    pub metric: String,
    pub labels: Vec<Label>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<i64>,
}

#[path = "../../../guests/sdk/src/columns.rs"]
mod columns;
pub use columns::Columns;

impl Columns {
    pub fn emit(&mut self) -> Result<(), String> {
        let batch = self.take();
        EMITTED_SERIES.with(|e| e.borrow_mut().extend(batch));
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum Error {
    Denied(String),
    Unavailable(String),
    Invalid(String),
    Timeout(String),
}

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
}

thread_local! {
    static EMITTED: RefCell<Vec<Sample>> = const { RefCell::new(Vec::new()) };
    static EMITTED_SERIES: RefCell<Vec<SeriesValues>> = const { RefCell::new(Vec::new()) };
    static SUBSCRIPTIONS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// What the collector emitted since the last call.
pub fn take_emitted() -> Vec<Sample> {
    EMITTED.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// What the collector emitted column-wise since the last call.
pub fn take_emitted_series() -> Vec<SeriesValues> {
    EMITTED_SERIES.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// The filters the collector subscribed to.
pub fn take_subscriptions() -> Vec<String> {
    SUBSCRIPTIONS.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

#[derive(Default)]
pub struct Samples {
    batch: Vec<Sample>,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }
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
    pub fn emit(&mut self) -> Result<(), String> {
        let batch = std::mem::take(&mut self.batch);
        EMITTED.with(|e| e.borrow_mut().extend(batch));
        Ok(())
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

pub fn describe(e: &Error) -> String {
    format!("{e:?}")
}

pub mod log {
    pub fn debug(_: &str) {}
    pub fn info(_: &str) {}
    pub fn warn(_: &str) {}
    pub fn error(_: &str) {}
}

pub mod mqtt {
    pub fn subscribe(filter: &str) -> Result<(), super::Error> {
        super::SUBSCRIPTIONS.with(|s| s.borrow_mut().push(filter.to_string()));
        Ok(())
    }
    pub fn publish(_topic: &str, _payload: &[u8], _retain: bool) -> Result<(), super::Error> {
        Ok(())
    }
}

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

/// A collector behind a trait object, so code outside the collector's module can drive it.
pub trait NativeCollector {
    fn on_tick(&mut self, tick: Tick) -> Result<(), String>;
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String>;
}

impl<T: Collector> NativeCollector for T {
    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        Collector::on_tick(self, tick)
    }
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        Collector::on_message(self, topic, payload)
    }
}

/// Natively, exporting a collector defines `native_init(config)` in its module.
#[macro_export]
macro_rules! collector {
    ($ty:ty) => {
        #[allow(dead_code)]
        pub(crate) fn native_init(
            config: &$crate::Config,
        ) -> Result<Box<dyn $crate::NativeCollector + Send>, String> {
            <$ty as $crate::Collector>::init(config)
                .map(|c| Box::new(c) as Box<dyn $crate::NativeCollector + Send>)
        }
    };
}
