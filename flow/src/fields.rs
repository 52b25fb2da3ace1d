//! Information elements of NetFlow v9 and IPFIX that map onto the normalized record.
//!
//! A template is compiled once into a list of `(Field, length)` steps, so decoding a record
//! is one pass over its bytes with a `match` per field and no lookups. IPFIX IEs 1–127 share
//! their numbers with NetFlow v9 field types, which is why one table serves both. Elements
//! not listed here — and every enterprise-specific element (e.g. PEN 29305 reverse counters)
//! — are skipped over by their length and not stored; docs/FLOWS.md lists both sets.

use super::bytes::be_uint;
use super::record::{Direction, FlowRecord, SamplingSource};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Template field length meaning "variable" (IPFIX, RFC 7011 §7).
pub const VARIABLE: u16 = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Bytes,
    Packets,
    BytesTotal,
    PacketsTotal,
    OutBytes,
    OutPackets,
    Protocol,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    InIf,
    OutIf,
    SrcAs,
    DstAs,
    /// sysUpTime-relative milliseconds (IE 22 / 21).
    FirstSwitched,
    LastSwitched,
    StartSeconds,
    EndSeconds,
    StartMillis,
    EndMillis,
    /// NTP-format timestamps (dateTimeMicroseconds / Nanoseconds).
    StartNtp,
    EndNtp,
    /// Microseconds before the export time (IE 158 / 159).
    StartDeltaMicros,
    EndDeltaMicros,
    /// ICMP type and code as `type << 8 | code` (IE 32 and 139).
    IcmpTypeCode,
    SamplingInterval,
    SamplerRandomInterval,
    SamplerId,
    SamplingPacketInterval,
    SamplingPacketSpace,
    Direction,
    Vlan,
    SystemInitMillis,
    Skip,
}

/// The field an (enterprise, element id) pair maps to.
pub fn field_for(pen: u32, ie: u16) -> Field {
    if pen != 0 {
        return Field::Skip;
    }
    match ie {
        1 => Field::Bytes,
        2 => Field::Packets,
        4 => Field::Protocol,
        5 => Field::Tos,
        6 => Field::TcpFlags,
        7 => Field::SrcPort,
        8 => Field::SrcV4,
        10 => Field::InIf,
        11 => Field::DstPort,
        12 => Field::DstV4,
        14 => Field::OutIf,
        16 => Field::SrcAs,
        17 => Field::DstAs,
        21 => Field::LastSwitched,
        22 => Field::FirstSwitched,
        23 => Field::OutBytes,
        24 => Field::OutPackets,
        27 => Field::SrcV6,
        28 => Field::DstV6,
        32 | 139 => Field::IcmpTypeCode,
        34 => Field::SamplingInterval,
        48 | 302 => Field::SamplerId,
        50 => Field::SamplerRandomInterval,
        58 => Field::Vlan,
        61 => Field::Direction,
        85 => Field::BytesTotal,
        86 => Field::PacketsTotal,
        150 => Field::StartSeconds,
        151 => Field::EndSeconds,
        152 => Field::StartMillis,
        153 => Field::EndMillis,
        154 | 156 => Field::StartNtp,
        155 | 157 => Field::EndNtp,
        158 => Field::StartDeltaMicros,
        159 => Field::EndDeltaMicros,
        160 => Field::SystemInitMillis,
        305 => Field::SamplingPacketInterval,
        306 => Field::SamplingPacketSpace,
        _ => Field::Skip,
    }
}

/// What a record said besides the normalized fields; resolved once the record is complete,
/// because the order of fields in a template is arbitrary.
#[derive(Default, Clone, Copy)]
pub struct Extras {
    pub first_switched: Option<u32>,
    pub last_switched: Option<u32>,
    pub start_delta_us: Option<u32>,
    pub end_delta_us: Option<u32>,
    pub icmp: Option<u16>,
    pub sampling_interval: Option<u32>,
    pub sampler_id: Option<u64>,
    pub packet_interval: Option<u32>,
    pub packet_space: Option<u32>,
    pub bytes_total: Option<u64>,
    pub packets_total: Option<u64>,
    pub out_bytes: Option<u64>,
    pub out_packets: Option<u64>,
    pub system_init_ms: Option<u64>,
}

impl Extras {
    /// The 1-in-N rate this record (or options record) states, if any.
    pub fn stated_rate(&self) -> Option<u32> {
        if let Some(n) = self.sampling_interval.filter(|n| *n >= 1) {
            return Some(n);
        }
        match (self.packet_interval, self.packet_space) {
            (Some(i), Some(s)) if i >= 1 => Some(((i as u64 + s as u64) / i as u64) as u32),
            (None, Some(s)) => Some(s.saturating_add(1)),
            _ => None,
        }
    }
}

#[inline]
fn ntp_to_ms(v: u64) -> i64 {
    const NTP_UNIX_OFFSET: i64 = 2_208_988_800;
    let secs = (v >> 32) as i64 - NTP_UNIX_OFFSET;
    let frac_ms = ((v & 0xffff_ffff) * 1000) >> 32;
    secs.wrapping_mul(1000).wrapping_add(frac_ms as i64)
}

#[inline]
pub fn apply(field: Field, b: &[u8], f: &mut FlowRecord, x: &mut Extras) {
    match field {
        Field::Bytes => f.bytes = be_uint(b),
        Field::Packets => f.packets = be_uint(b),
        Field::BytesTotal => x.bytes_total = Some(be_uint(b)),
        Field::PacketsTotal => x.packets_total = Some(be_uint(b)),
        Field::OutBytes => x.out_bytes = Some(be_uint(b)),
        Field::OutPackets => x.out_packets = Some(be_uint(b)),
        Field::Protocol => f.ip_protocol = be_uint(b) as u8,
        Field::Tos => f.tos = be_uint(b) as u8,
        Field::TcpFlags => f.tcp_flags = be_uint(b) as u16,
        Field::SrcPort => f.src_port = be_uint(b) as u16,
        Field::DstPort => f.dst_port = be_uint(b) as u16,
        Field::SrcV4 => f.src_addr = v4(b),
        Field::DstV4 => f.dst_addr = v4(b),
        Field::SrcV6 => f.src_addr = v6(b),
        Field::DstV6 => f.dst_addr = v6(b),
        Field::InIf => f.in_if = be_uint(b) as u32,
        Field::OutIf => f.out_if = be_uint(b) as u32,
        Field::SrcAs => f.src_as = be_uint(b) as u32,
        Field::DstAs => f.dst_as = be_uint(b) as u32,
        Field::FirstSwitched => x.first_switched = Some(be_uint(b) as u32),
        Field::LastSwitched => x.last_switched = Some(be_uint(b) as u32),
        Field::StartSeconds => f.start_ms = (be_uint(b) as i64).saturating_mul(1000),
        Field::EndSeconds => f.end_ms = (be_uint(b) as i64).saturating_mul(1000),
        Field::StartMillis => f.start_ms = be_uint(b) as i64,
        Field::EndMillis => f.end_ms = be_uint(b) as i64,
        Field::StartNtp => f.start_ms = ntp_to_ms(be_uint(b)),
        Field::EndNtp => f.end_ms = ntp_to_ms(be_uint(b)),
        Field::StartDeltaMicros => x.start_delta_us = Some(be_uint(b) as u32),
        Field::EndDeltaMicros => x.end_delta_us = Some(be_uint(b) as u32),
        Field::IcmpTypeCode => x.icmp = Some(be_uint(b) as u16),
        Field::SamplingInterval | Field::SamplerRandomInterval => {
            x.sampling_interval = Some(be_uint(b) as u32)
        }
        Field::SamplerId => x.sampler_id = Some(be_uint(b)),
        Field::SamplingPacketInterval => x.packet_interval = Some(be_uint(b) as u32),
        Field::SamplingPacketSpace => x.packet_space = Some(be_uint(b) as u32),
        Field::Direction => {
            f.direction = match be_uint(b) {
                0 => Direction::Ingress,
                1 => Direction::Egress,
                _ => Direction::Unknown,
            }
        }
        Field::Vlan => f.vlan = be_uint(b) as u16,
        Field::SystemInitMillis => x.system_init_ms = Some(be_uint(b)),
        Field::Skip => {}
    }
}

#[inline]
fn v4(b: &[u8]) -> IpAddr {
    match b {
        [a, b, c, d] => IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => IpAddr::V4(Ipv4Addr::from(be_uint(b) as u32)),
    }
}

#[inline]
fn v6(b: &[u8]) -> IpAddr {
    match <[u8; 16]>::try_from(b) {
        Ok(a) => IpAddr::V6(Ipv6Addr::from(a)),
        Err(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Resolve what needs the whole record: uptime-relative times, fallbacks for counters,
/// ICMP type/code into the destination port (as nfdump and pmacct do), record-level rates.
#[inline]
pub fn finish(f: &mut FlowRecord, x: &Extras, export_ms: i64, uptime: Option<(u32, i64)>) {
    if f.bytes == 0 {
        f.bytes = x.bytes_total.or(x.out_bytes).unwrap_or(0);
    }
    if f.packets == 0 {
        f.packets = x.packets_total.or(x.out_packets).unwrap_or(0);
    }
    // `uptime` = (sysUpTime at export, epoch ms of that moment), or the system init time.
    if let (Some(first), Some((up, at_ms))) = (x.first_switched, uptime) {
        f.start_ms = at_ms.wrapping_sub(up.wrapping_sub(first) as i32 as i64);
    }
    if let (Some(last), Some((up, at_ms))) = (x.last_switched, uptime) {
        f.end_ms = at_ms.wrapping_sub(up.wrapping_sub(last) as i32 as i64);
    }
    if let Some(d) = x.start_delta_us {
        f.start_ms = export_ms - (d / 1000) as i64;
    }
    if let Some(d) = x.end_delta_us {
        f.end_ms = export_ms - (d / 1000) as i64;
    }
    if f.start_ms == 0 {
        f.start_ms = export_ms;
    }
    if f.end_ms == 0 {
        f.end_ms = f.start_ms;
    }
    if let Some(icmp) = x.icmp
        && (f.ip_protocol == 1 || f.ip_protocol == 58)
        && f.dst_port == 0
    {
        f.dst_port = icmp;
    }
    if let Some(rate) = x.stated_rate() {
        f.offer_sampling(rate, SamplingSource::Record);
    }
}
