//! Reading `tshark -T json` (tests/flows/ORACLE.md): the helpers the flow oracle compares
//! records with, and per-capture totals (flows, sampling-scaled bytes) that tests of the whole
//! flow path hold the query API to.

use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.first().map(text).unwrap_or_default(),
        other => other.to_string(),
    }
}

pub fn num(v: &Value) -> u64 {
    let t = text(v);
    match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not hex: {t}")),
        None => t.parse().unwrap_or_else(|_| panic!("not a number: {t}")),
    }
}

/// "3577.249000000" (seconds) → milliseconds.
pub fn secs_ms(v: &Value) -> i64 {
    (text(v).parse::<f64>().expect("seconds") * 1000.0).round() as i64
}

/// "Nov 14, 2023 22:04:38.001000000 UTC" → epoch milliseconds.
pub fn abs_ms(v: &Value) -> i64 {
    let t = text(v);
    let p: Vec<&str> = t.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == p[0]).expect("month") as i64 + 1;
    let d: i64 = p[1].trim_end_matches(',').parse().expect("day");
    let y: i64 = p[2].parse().expect("year");
    let hms: Vec<&str> = p[3].split(':').collect();
    let secs: f64 = hms[2].parse().expect("seconds");
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let h: i64 = hms[0].parse().expect("hour");
    let mi: i64 = hms[1].parse().expect("minute");
    (days * 86400 + h * 3600 + mi * 60) * 1000 + (secs * 1000.0).round() as i64
}

/// Keys like "pdu 3/30", "FlowSet 2 [id=256] ...", "Flow 7", sorted by their number.
pub fn numbered<'a>(obj: &'a Value, prefix: &str) -> Vec<&'a Value> {
    let mut v: Vec<(u64, &Value)> = obj
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?;
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            Some((n.parse().ok()?, v))
        })
        .collect();
    v.sort_by_key(|(n, _)| *n);
    v.into_iter().map(|(_, v)| v).collect()
}

/// Sampling state an exporter announced in options records, as tshark shows them.
#[derive(Default)]
pub struct Sampling {
    pub default: Option<u64>,
    pub samplers: HashMap<u64, u64>,
    pub sys_init_ms: Option<i64>,
}

impl Sampling {
    pub fn stated(rec: &Value) -> Option<u64> {
        if let Some(n) = rec
            .get("cflow.sampling_interval")
            .or(rec.get("cflow.sampler_random_interval"))
        {
            return Some(num(n));
        }
        let i = rec.get("cflow.sampling_packet_interval").map(num);
        let s = rec.get("cflow.sampling_packet_space").map(num)?;
        Some(match i {
            Some(i) if i > 0 => (i + s) / i,
            _ => s + 1,
        })
    }

    pub fn learn(&mut self, rec: &Value) {
        if let Some(init) = rec.get("cflow.sys_init_time") {
            self.sys_init_ms = Some(abs_ms(init));
        }
        let Some(rate) = Self::stated(rec) else {
            return;
        };
        match rec.get("cflow.sampler_id").or(rec.get("cflow.selector_id")) {
            Some(id) => {
                self.samplers.insert(num(id), rate);
            }
            None => self.default = Some(rate),
        }
    }

    /// Record-level rate > sampler id > exporter-wide options > v5 header > 1.
    pub fn expected(&self, rec: &Value, header: Option<u64>) -> u64 {
        let is_options_field = rec.get("cflow.sampler_id").or(rec.get("cflow.selector_id"));
        Self::stated(rec)
            .or_else(|| is_options_field.and_then(|id| self.samplers.get(&num(id)).copied()))
            .or(self.default)
            .or(header.filter(|h| *h > 1))
            .unwrap_or(1)
    }
}

pub struct Header {
    pub export_ms: i64,
    pub uptime_ms: Option<i64>,
    pub v5_rate: Option<u64>,
}

pub fn header(cflow: &Value) -> Header {
    let ts = &cflow["cflow.timestamp_tree"];
    let secs = ts
        .get("cflow.unix_secs")
        .or(ts.get("cflow.exporttime"))
        .map(num)
        .expect("export time") as i64;
    let nsecs = ts.get("cflow.unix_nsecs").map(num).unwrap_or(0) as i64;
    Header {
        export_ms: secs * 1000 + nsecs / 1_000_000,
        uptime_ms: cflow.get("cflow.sysuptime").map(secs_ms),
        v5_rate: cflow.get("cflow.samplerate").map(num),
    }
}

/// A cflow frame's flow records (v5 pdus and data records with addresses), in order; its
/// options records go to `sampling`.
pub fn flow_records<'a>(cflow: &'a Value, sampling: &mut Sampling) -> Vec<&'a Value> {
    let mut records: Vec<&Value> = numbered(cflow, "pdu ");
    for set in numbered(cflow, "FlowSet ")
        .into_iter()
        .chain(numbered(cflow, "Set "))
    {
        for rec in numbered(set, "Flow ") {
            if rec
                .get("cflow.srcaddr")
                .or(rec.get("cflow.srcaddrv6"))
                .is_some()
            {
                records.push(rec);
            } else {
                sampling.learn(rec);
            }
        }
    }
    records
}

/// Flows and sampling-scaled bytes in a NetFlow v5/v9 or IPFIX capture (its UDP datagrams
/// dissected as cflow on `port`), frames `frames` only, as tshark reads them: records with a
/// source address are flows; options records set the sampling rate (precedence as the
/// flow oracle checks it).
pub fn cflow_totals(
    pcap: &Path,
    port: u16,
    frames: std::ops::Range<usize>,
) -> anyhow::Result<(u64, u64)> {
    let oracle = crate::pcap::tshark_json(pcap, Some(port))?;
    let mut sampling = Sampling::default();
    let (mut flows, mut bytes) = (0, 0);
    for (i, frame) in oracle.as_array().into_iter().flatten().enumerate() {
        let cflow = &frame["_source"]["layers"]["cflow"];
        let h = header(cflow);
        let records = flow_records(cflow, &mut sampling);
        if !frames.contains(&i) {
            continue;
        }
        for rec in records {
            let octets = rec.get("cflow.octets").or(rec.get("cflow.octets64"));
            let octets = octets.map(num).unwrap_or(0);
            flows += 1;
            bytes += octets * sampling.expected(rec, h.v5_rate);
        }
    }
    Ok((flows, bytes))
}

/// Flow samples and their sampling-scaled frame lengths in an sFlow v5 capture, as tshark
/// reads them.
pub fn sflow_totals(pcap: &Path) -> anyhow::Result<(u64, u64)> {
    let oracle = crate::pcap::tshark_json(pcap, None)?;
    let (mut flows, mut bytes) = (0, 0);
    for frame in oracle.as_array().into_iter().flatten() {
        let sflow = &frame["_source"]["layers"]["sflow"];
        for (k, v) in sflow.as_object().into_iter().flatten() {
            if !k.contains("low sample") {
                continue;
            }
            let samples: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for s in samples {
                let rate = num(&s["sflow.flow_sample.sampling_rate"]);
                let len = num(&s["Raw packet header"]["sflow_245.header.frame_length"]);
                flows += 1;
                bytes += len * rate;
            }
        }
    }
    Ok((flows, bytes))
}
