//! Emits, on every tick, `ticks` (value = the tick's sequence number, stamped with the time
//! the tick was due) labelled with the configured `marker`, plus `samples_per_tick - 1`
//! extra `tick_load` samples when asked to generate load.
//!
//! Config: `marker` (string, default "v1"), `samples_per_tick` (default 1),
//! `fail_init` (string: refuse to start with this reason).

use sotp_guest::{Collector, Config, Samples, Tick};

struct TickCounter {
    marker: String,
    samples_per_tick: u64,
}

impl Collector for TickCounter {
    fn init(config: &Config) -> Result<Self, String> {
        if let Some(reason) = config.get("fail_init").and_then(|v| v.as_str()) {
            return Err(reason.to_string());
        }
        let marker = config.str_or("marker", "v1").to_string();
        sotp_guest::log::info(&format!("tick-counter starting with marker {marker}"));
        Ok(TickCounter {
            marker,
            samples_per_tick: config.u64_or("samples_per_tick", 1).max(1),
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let mut out = Samples::new();
        out.push("ticks", tick.seq as f64)
            .label("marker", &self.marker)
            .at(tick.scheduled_at_ms);
        for i in 1..self.samples_per_tick {
            out.push("tick_load", i as f64)
                .label("slot", &(i % 16).to_string())
                .label("seq", &tick.seq.to_string())
                .at(tick.scheduled_at_ms);
        }
        out.emit()
    }
}

sotp_guest::collector!(TickCounter);
