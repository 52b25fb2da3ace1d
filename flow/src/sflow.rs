//! sFlow v5 (sflow.org/sflow_version_5.txt): XDR-encoded datagrams of flow samples (packet
//! headers sampled 1-in-N) and counter samples. One flow sample becomes one `FlowRecord`
//! with packets = 1, bytes = the sampled frame's length and the sample's own sampling rate;
//! generic interface counters become `InterfaceCounters`.

use super::bytes::Cursor;
use super::packet;
use super::record::{FlowProtocol, FlowRecord, InterfaceCounters, SamplingSource};
use super::{DecodeError, DecodeOutput};
use std::net::IpAddr;

const FLOW_SAMPLE: u32 = 1;
const COUNTER_SAMPLE: u32 = 2;
const FLOW_SAMPLE_EXPANDED: u32 = 3;
const COUNTER_SAMPLE_EXPANDED: u32 = 4;

const RECORD_RAW_HEADER: u32 = 1;
const RECORD_IPV4: u32 = 3;
const RECORD_IPV6: u32 = 4;
const RECORD_EXTENDED_SWITCH: u32 = 1001;
const COUNTERS_GENERIC_INTERFACE: u32 = 1;

const T: DecodeError = DecodeError::Truncated("sFlow datagram");

pub fn decode(dgram: &[u8], now_ms: i64, out: &mut DecodeOutput) -> Result<usize, DecodeError> {
    let mut c = Cursor::new(dgram);
    let _version = c.u32().ok_or(T)?;
    let agent = match c.u32().ok_or(T)? {
        1 => IpAddr::V4(c.ipv4().ok_or(T)?),
        2 => IpAddr::V6(c.ipv6().ok_or(T)?),
        _ => return Err(DecodeError::Invalid("sFlow agent address type")),
    };
    let sub_agent = c.u32().ok_or(T)?;
    let _sequence = c.u32().ok_or(T)?;
    let _uptime = c.u32().ok_or(T)?;
    let samples = c.u32().ok_or(T)?;
    let mut flows = 0;
    for _ in 0..samples {
        let kind = c.u32().ok_or(T)?;
        let len = c.u32().ok_or(T)? as usize;
        let body = c.take(len).ok_or(DecodeError::Truncated("sFlow sample"))?;
        // Enterprise 0 only; other enterprises' samples are skipped by their length.
        if kind >> 12 != 0 {
            continue;
        }
        let base = FlowRecord::empty(FlowProtocol::Sflow, agent, sub_agent);
        match kind & 0xfff {
            FLOW_SAMPLE => {
                out.flows.push(flow_sample(body, false, base, now_ms)?);
                flows += 1;
            }
            FLOW_SAMPLE_EXPANDED => {
                out.flows.push(flow_sample(body, true, base, now_ms)?);
                flows += 1;
            }
            COUNTER_SAMPLE => counter_sample(body, false, agent, out)?,
            COUNTER_SAMPLE_EXPANDED => counter_sample(body, true, agent, out)?,
            _ => {}
        }
    }
    Ok(flows)
}

/// Interface fields of a compact sample: top 2 bits format, low 30 bits the value (format 0
/// = ifIndex; 1 = discarded, 2 = several interfaces — both kept as 0).
fn compact_if(v: u32) -> u32 {
    if v >> 30 == 0 { v & 0x3fff_ffff } else { 0 }
}

fn flow_sample(
    body: &[u8],
    expanded: bool,
    mut f: FlowRecord,
    now_ms: i64,
) -> Result<FlowRecord, DecodeError> {
    let mut c = Cursor::new(body);
    let t = DecodeError::Truncated("sFlow flow sample");
    let _seq = c.u32().ok_or(t)?;
    c.skip(if expanded { 8 } else { 4 }).ok_or(t)?; // source id
    let rate = c.u32().ok_or(t)?;
    let _pool = c.u32().ok_or(t)?;
    let _drops = c.u32().ok_or(t)?;
    if expanded {
        let in_format = c.u32().ok_or(t)?;
        let in_value = c.u32().ok_or(t)?;
        let out_format = c.u32().ok_or(t)?;
        let out_value = c.u32().ok_or(t)?;
        f.in_if = if in_format == 0 { in_value } else { 0 };
        f.out_if = if out_format == 0 { out_value } else { 0 };
    } else {
        f.in_if = compact_if(c.u32().ok_or(t)?);
        f.out_if = compact_if(c.u32().ok_or(t)?);
    }
    f.start_ms = now_ms;
    f.end_ms = now_ms;
    f.packets = 1;
    f.offer_sampling(rate.max(1), SamplingSource::Header);
    let records = c.u32().ok_or(t)?;
    let mut have_addresses = false;
    for _ in 0..records {
        let format = c.u32().ok_or(t)?;
        let len = c.u32().ok_or(t)? as usize;
        let data = c
            .take(len)
            .ok_or(DecodeError::Truncated("sFlow flow record"))?;
        if format >> 12 != 0 {
            continue;
        }
        let mut r = Cursor::new(data);
        match format & 0xfff {
            RECORD_RAW_HEADER if !have_addresses => {
                let proto = r.u32().ok_or(t)?;
                let frame_len = r.u32().ok_or(t)?;
                let _stripped = r.u32().ok_or(t)?;
                let hlen = r.u32().ok_or(t)? as usize;
                let header = r
                    .take(hlen)
                    .ok_or(DecodeError::Truncated("sFlow sampled header"))?;
                f.bytes = frame_len as u64;
                have_addresses = packet::parse(proto, header, &mut f);
            }
            RECORD_IPV4 | RECORD_IPV6 if !have_addresses => {
                f.bytes = r.u32().ok_or(t)? as u64;
                f.ip_protocol = r.u32().ok_or(t)? as u8;
                if format & 0xfff == RECORD_IPV4 {
                    f.src_addr = IpAddr::V4(r.ipv4().ok_or(t)?);
                    f.dst_addr = IpAddr::V4(r.ipv4().ok_or(t)?);
                } else {
                    f.src_addr = IpAddr::V6(r.ipv6().ok_or(t)?);
                    f.dst_addr = IpAddr::V6(r.ipv6().ok_or(t)?);
                }
                f.src_port = r.u32().ok_or(t)? as u16;
                f.dst_port = r.u32().ok_or(t)? as u16;
                f.tcp_flags = r.u32().ok_or(t)? as u16;
                f.tos = r.u32().ok_or(t)? as u8;
                have_addresses = true;
            }
            RECORD_EXTENDED_SWITCH => {
                let src_vlan = r.u32().ok_or(t)?;
                if f.vlan == 0 {
                    f.vlan = src_vlan as u16;
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

fn counter_sample(
    body: &[u8],
    expanded: bool,
    agent: IpAddr,
    out: &mut DecodeOutput,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body);
    let t = DecodeError::Truncated("sFlow counter sample");
    let _seq = c.u32().ok_or(t)?;
    c.skip(if expanded { 8 } else { 4 }).ok_or(t)?;
    let records = c.u32().ok_or(t)?;
    for _ in 0..records {
        let format = c.u32().ok_or(t)?;
        let len = c.u32().ok_or(t)? as usize;
        let data = c
            .take(len)
            .ok_or(DecodeError::Truncated("sFlow counter record"))?;
        if format == COUNTERS_GENERIC_INTERFACE {
            out.interfaces
                .push(generic_interface(data, agent).ok_or(t)?);
        }
    }
    Ok(())
}

fn generic_interface(data: &[u8], agent: IpAddr) -> Option<InterfaceCounters> {
    let mut r = Cursor::new(data);
    Some(InterfaceCounters {
        agent: Some(agent),
        if_index: r.u32()?,
        if_type: r.u32()?,
        if_speed: r.u64()?,
        if_direction: r.u32()?,
        if_status: r.u32()?,
        in_octets: r.u64()?,
        in_ucast_pkts: r.u32()?,
        in_multicast_pkts: r.u32()?,
        in_broadcast_pkts: r.u32()?,
        in_discards: r.u32()?,
        in_errors: r.u32()?,
        in_unknown_protos: r.u32()?,
        out_octets: r.u64()?,
        out_ucast_pkts: r.u32()?,
        out_multicast_pkts: r.u32()?,
        out_broadcast_pkts: r.u32()?,
        out_discards: r.u32()?,
        out_errors: r.u32()?,
        promiscuous_mode: r.u32()?,
    })
}
