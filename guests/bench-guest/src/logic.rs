//! Sample-building logic shared verbatim by the guest and the native side of the benchmark
//! (included with `#[path]`), so the guest/native ratio compares the same code.
//!
//! Input: lines of `<device> <metric> <value>` (e.g. `sensor-17 temperature 21.5`).
//! Output: one sample per well-formed line, labelled by device.

pub struct Parsed<'a> {
    pub device: &'a str,
    pub metric: &'a str,
    pub value: f64,
}

/// Parse every line; returns how many lines were malformed.
pub fn parse_lines<'a>(payload: &'a [u8], out: &mut Vec<Parsed<'a>>) -> usize {
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(_) => return 1,
    };
    let mut bad = 0;
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        match (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<f64>),
        ) {
            (Some(device), Some(metric), Some(Ok(value))) => out.push(Parsed {
                device,
                metric,
                value,
            }),
            _ => bad += 1,
        }
    }
    bad
}

/// A 64 KiB-ish payload of sensor lines, deterministic.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub fn sample_payload(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 64);
    let mut i = 0u64;
    while out.len() < bytes {
        let line = format!("sensor-{} temperature {}.{}\n", i % 97, 15 + i % 20, i % 10);
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out
}
