//! NetFlow v5: a fixed 24-byte header and fixed 48-byte records. No templates, so this is
//! the simplest and fastest path.

use super::DecodeError;
use super::bytes::Cursor;
use super::record::{FlowProtocol, FlowRecord, SamplingSource};
use std::net::IpAddr;

pub const HEADER_LEN: usize = 24;
pub const RECORD_LEN: usize = 48;
/// The v5 header's `count` is at most 30 in Cisco's definition; we accept what fits.
const MAX_RECORDS: usize = 1 << 12;

/// Uptime-relative timestamps of NetFlow v5/v9 turned into epoch milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub export_ms: i64,
    pub sys_uptime_ms: u32,
}

impl Clock {
    /// `switched` is a sysUpTime (ms) value; records are older than the export.
    #[inline]
    pub fn to_epoch_ms(&self, switched: u32) -> i64 {
        self.export_ms - self.sys_uptime_ms.wrapping_sub(switched) as i32 as i64
    }
}

pub fn decode(
    dgram: &[u8],
    exporter: IpAddr,
    out: &mut Vec<FlowRecord>,
) -> Result<usize, DecodeError> {
    let mut c = Cursor::new(dgram);
    let version = c.u16().ok_or(DecodeError::Truncated("v5 header"))?;
    debug_assert_eq!(version, 5);
    let count = c.u16().ok_or(DecodeError::Truncated("v5 header"))? as usize;
    let sys_uptime_ms = c.u32().ok_or(DecodeError::Truncated("v5 header"))?;
    let secs = c.u32().ok_or(DecodeError::Truncated("v5 header"))?;
    let nsecs = c.u32().ok_or(DecodeError::Truncated("v5 header"))?;
    let _sequence = c.u32().ok_or(DecodeError::Truncated("v5 header"))?;
    let engine_type = c.u8().ok_or(DecodeError::Truncated("v5 header"))?;
    let engine_id = c.u8().ok_or(DecodeError::Truncated("v5 header"))?;
    let sampling = c.u16().ok_or(DecodeError::Truncated("v5 header"))?;
    if count == 0 || count > MAX_RECORDS {
        return Err(DecodeError::Invalid("v5 record count"));
    }
    if c.remaining() < count * RECORD_LEN {
        return Err(DecodeError::Truncated("v5 records"));
    }
    let clock = Clock {
        export_ms: secs as i64 * 1000 + (nsecs / 1_000_000) as i64,
        sys_uptime_ms,
    };
    // Top two bits: sampling mode; low 14 bits: the 1-in-N interval.
    let interval = (sampling & 0x3fff) as u32;
    let domain = (engine_type as u32) << 8 | engine_id as u32;
    out.reserve(count);
    for chunk in c
        .take(count * RECORD_LEN)
        .unwrap_or_default()
        .chunks_exact(RECORD_LEN)
    {
        out.push(record(chunk, exporter, domain, &clock, interval));
    }
    Ok(count)
}

#[inline]
fn record(r: &[u8], exporter: IpAddr, domain: u32, clock: &Clock, interval: u32) -> FlowRecord {
    let u16_at = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
    let ip_at = |i: usize| IpAddr::from([r[i], r[i + 1], r[i + 2], r[i + 3]]);
    let mut f = FlowRecord::empty(FlowProtocol::NetflowV5, exporter, domain);
    f.src_addr = ip_at(0);
    f.dst_addr = ip_at(4);
    f.in_if = u16_at(12) as u32;
    f.out_if = u16_at(14) as u32;
    f.packets = u32_at(16) as u64;
    f.bytes = u32_at(20) as u64;
    f.start_ms = clock.to_epoch_ms(u32_at(24));
    f.end_ms = clock.to_epoch_ms(u32_at(28));
    f.src_port = u16_at(32);
    f.dst_port = u16_at(34);
    f.tcp_flags = r[37] as u16;
    f.ip_protocol = r[38];
    f.tos = r[39];
    f.src_as = u16_at(40) as u32;
    f.dst_as = u16_at(42) as u32;
    if interval > 1 {
        f.offer_sampling(interval, SamplingSource::Header);
    }
    f
}
