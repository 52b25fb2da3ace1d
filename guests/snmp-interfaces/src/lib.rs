//! Polls IF-MIB on every inventory device the grants cover (and that has SNMP credentials),
//! on each tick, and emits per interface (labels `device`, `ifname`, `ifindex`):
//!
//! - `if_oper_status` (1 up, 2 down, … as IF-MIB), `if_admin_status`;
//! - `if_in_octets_total`, `if_out_octets_total` (64-bit counters), `if_in_errors_total`,
//!   `if_out_errors_total`;
//! - `if_in_bits_per_second`, `if_out_bits_per_second` (from the previous poll);
//! - per device `snmp_up` (1 or 0) and `snmp_poll_seconds`.
//!
//! It also reports each device's ifIndex → ifName table to the inventory (flow records are
//! named with it). Config: `tags` (only devices with one of these tags; default all).

use sotp_guest::inventory::DeviceInfo;
use sotp_guest::snmp::{Value, Varbind, index_of, walk};
use sotp_guest::{Collector, Config, Samples, Tick};
use std::collections::{BTreeMap, HashMap};

const IF_NAME: &str = "1.3.6.1.2.1.31.1.1.1.1";
const IF_DESCR: &str = "1.3.6.1.2.1.2.2.1.2";
const IF_ADMIN_STATUS: &str = "1.3.6.1.2.1.2.2.1.7";
const IF_OPER_STATUS: &str = "1.3.6.1.2.1.2.2.1.8";
const IF_IN_ERRORS: &str = "1.3.6.1.2.1.2.2.1.14";
const IF_OUT_ERRORS: &str = "1.3.6.1.2.1.2.2.1.20";
const IF_HC_IN_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.6";
const IF_HC_OUT_OCTETS: &str = "1.3.6.1.2.1.31.1.1.1.10";
const MAX_ROWS: u32 = 10_000;

struct Interfaces {
    tags: Vec<String>,
    /// (device, ifIndex) -> (time ms, in octets, out octets) of the previous poll.
    previous: HashMap<(String, u32), (i64, f64, f64)>,
    /// Interface names last reported per device.
    reported: HashMap<String, BTreeMap<u32, String>>,
}

impl Collector for Interfaces {
    fn init(config: &Config) -> Result<Self, String> {
        let tags = config.strings("tags");
        Ok(Interfaces {
            tags,
            previous: HashMap::new(),
            reported: HashMap::new(),
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let devices: Vec<DeviceInfo> = sotp_guest::inventory::devices()
            .into_iter()
            .filter(|d| {
                d.has_snmp && (self.tags.is_empty() || d.tags.iter().any(|t| self.tags.contains(t)))
            })
            .collect();
        let mut failures = Vec::new();
        for device in devices {
            let mut out = Samples::new();
            let started = sotp_guest_clock_ms();
            let result = self.poll(&device.name, tick.scheduled_at_ms, &mut out);
            let up = result.is_ok();
            out.push("snmp_up", if up { 1.0 } else { 0.0 })
                .label("device", &device.name)
                .at(tick.scheduled_at_ms);
            out.push(
                "snmp_poll_seconds",
                (sotp_guest_clock_ms() - started) as f64 / 1000.0,
            )
            .label("device", &device.name)
            .at(tick.scheduled_at_ms);
            out.emit()?;
            if let Err(e) = result {
                sotp_guest::log::warn(&format!("{}: {e}", device.name));
                failures.push(format!("{}: {e}", device.name));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Interfaces {
    fn poll(&mut self, device: &str, at: i64, out: &mut Samples) -> Result<(), String> {
        let column = |oid: &str| -> Result<BTreeMap<u32, Value>, String> {
            let rows: Vec<Varbind> =
                walk(device, oid, MAX_ROWS).map_err(|e| sotp_guest::describe(&e))?;
            Ok(rows
                .into_iter()
                .filter_map(|vb| index_of(&vb.oid).map(|i| (i, vb.value)))
                .collect())
        };
        let mut names: BTreeMap<u32, String> = column(IF_NAME)?
            .into_iter()
            .filter_map(|(i, v)| v.as_text().filter(|t| !t.is_empty()).map(|t| (i, t)))
            .collect();
        if names.is_empty() {
            names = column(IF_DESCR)?
                .into_iter()
                .filter_map(|(i, v)| v.as_text().map(|t| (i, t)))
                .collect();
        }
        let admin = column(IF_ADMIN_STATUS)?;
        let oper = column(IF_OPER_STATUS)?;
        let in_octets = column(IF_HC_IN_OCTETS)?;
        let out_octets = column(IF_HC_OUT_OCTETS)?;
        let in_errors = column(IF_IN_ERRORS)?;
        let out_errors = column(IF_OUT_ERRORS)?;
        for (index, name) in &names {
            let idx = index.to_string();
            let mut push = |metric: &str, value: Option<f64>| {
                if let Some(v) = value {
                    out.push(metric, v)
                        .label("device", device)
                        .label("ifname", name)
                        .label("ifindex", &idx)
                        .at(at);
                }
            };
            let num = |m: &BTreeMap<u32, Value>| m.get(index).and_then(Value::as_f64);
            push("if_admin_status", num(&admin));
            push("if_oper_status", num(&oper));
            push("if_in_octets_total", num(&in_octets));
            push("if_out_octets_total", num(&out_octets));
            push("if_in_errors_total", num(&in_errors));
            push("if_out_errors_total", num(&out_errors));
            if let (Some(i), Some(o)) = (num(&in_octets), num(&out_octets)) {
                let key = (device.to_string(), *index);
                if let Some((t0, i0, o0)) = self.previous.insert(key, (at, i, o))
                    && at > t0
                {
                    let secs = (at - t0) as f64 / 1000.0;
                    // A counter that went backwards was reset: skip this interval.
                    if i >= i0 && o >= o0 {
                        push("if_in_bits_per_second", Some((i - i0) * 8.0 / secs));
                        push("if_out_bits_per_second", Some((o - o0) * 8.0 / secs));
                    }
                }
            }
        }
        if self.reported.get(device) != Some(&names) {
            let table: Vec<(u32, String)> = names.iter().map(|(i, n)| (*i, n.clone())).collect();
            sotp_guest::inventory::set_interface_names(device, &table)
                .map_err(|e| sotp_guest::describe(&e))?;
            self.reported.insert(device.to_string(), names);
        }
        Ok(())
    }
}

/// Wall-clock milliseconds (WASI clock), for timing the poll.
fn sotp_guest_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

sotp_guest::collector!(Interfaces);
