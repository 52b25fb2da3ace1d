//! The guest half of `cargo bench -p sotp-tests --bench runtime`. Its `on-message` topic
//! selects the measurement:
//!
//! - `noop`: return at once (the cost of a call across the boundary);
//! - `imports:<n>`: call the host's `emit.samples` with an empty batch n times;
//! - `parse`: turn the payload into samples with `logic.rs` and emit them column-wise
//!   (`Columns`: one `series-values` per device) in one batch;
//! - `parse-rows`: the same, one `sample` record per value (`Samples`);
//! - `gather`: `parse` without the emit (what the guest's own code costs).

#[path = "logic.rs"]
mod logic;

use sotp_guest::{Collector, Columns, Config, Samples};

struct Bench;

impl Collector for Bench {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Bench)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        if topic == "noop" {
            return Ok(());
        }
        if let Some(n) = topic.strip_prefix("imports:") {
            let n: u32 = n.parse().map_err(|_| "bad count".to_string())?;
            for _ in 0..n {
                sotp_guest::host::emit::samples(&[]).map_err(|e| sotp_guest::describe(&e))?;
            }
            return Ok(());
        }
        let mut parsed = Vec::with_capacity(2048);
        logic::parse_lines(payload, &mut parsed);
        if topic == "parse-rows" {
            let mut out = Samples::new();
            for p in parsed {
                out.push(p.metric, p.value).label("device", p.device);
            }
            return out.emit();
        }
        let mut out = Columns::new();
        for p in parsed {
            out.push(p.metric, &[("device", p.device)], p.value);
        }
        if topic == "gather" {
            std::hint::black_box(out.take());
            return Ok(());
        }
        out.emit()
    }
}

sotp_guest::collector!(Bench);
