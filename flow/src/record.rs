//! The normalized flow record: one schema for NetFlow v5, v9, IPFIX and sFlow.
//!
//! `FlowRecord` is `Copy` and holds no heap data, so decoders fill a reused `Vec` without
//! allocating per record. Tenant and application are added by enrichment (`enrich`), which
//! keeps the decoders protocol-only.

use std::net::{IpAddr, Ipv4Addr};

/// Which export protocol a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProtocol {
    NetflowV5,
    NetflowV9,
    Ipfix,
    Sflow,
}

impl FlowProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowProtocol::NetflowV5 => "netflow5",
            FlowProtocol::NetflowV9 => "netflow9",
            FlowProtocol::Ipfix => "ipfix",
            FlowProtocol::Sflow => "sflow",
        }
    }
}

/// Direction as the exporter reports it (NetFlow/IPFIX IE 61); `Unknown` when absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    Ingress,
    Egress,
    #[default]
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Unknown => "unknown",
        }
    }
}

/// Where the sampling rate of a record came from, in order of precedence (highest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SamplingSource {
    /// A rate carried in the data record itself (IE 34, 305/306).
    Record,
    /// The record's sampler/selector id (IE 48 / 302) resolved through an options record.
    Sampler,
    /// An options record scoped to the exporter or observation domain as a whole.
    Options,
    /// The NetFlow v5 header, or the sFlow flow sample's own rate.
    Header,
    /// No rate known: bytes and packets are taken as unsampled.
    #[default]
    None,
}

impl SamplingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplingSource::Record => "record",
            SamplingSource::Sampler => "sampler",
            SamplingSource::Options => "options",
            SamplingSource::Header => "header",
            SamplingSource::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub protocol: FlowProtocol,
    /// First and last packet of the flow, milliseconds since the Unix epoch. sFlow samples
    /// have no duration: both are the datagram's arrival time.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The exporter: the datagram's source address (NetFlow/IPFIX), the agent address (sFlow).
    pub exporter: IpAddr,
    /// NetFlow v9 source id, IPFIX observation domain, sFlow sub-agent id,
    /// NetFlow v5 `engine_type << 8 | engine_id`.
    pub domain: u32,
    pub in_if: u32,
    pub out_if: u32,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub ip_protocol: u8,
    pub tcp_flags: u16,
    pub tos: u8,
    /// As exported (sampled) — what tshark and the exporter say.
    pub bytes: u64,
    pub packets: u64,
    /// 1-in-N; 1 when unsampled or unknown.
    pub sampling_rate: u32,
    pub sampling_source: SamplingSource,
    pub direction: Direction,
    pub src_as: u32,
    pub dst_as: u32,
    pub vlan: u16,
}

impl FlowRecord {
    pub fn empty(protocol: FlowProtocol, exporter: IpAddr, domain: u32) -> Self {
        let zero = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        FlowRecord {
            protocol,
            start_ms: 0,
            end_ms: 0,
            exporter,
            domain,
            in_if: 0,
            out_if: 0,
            src_addr: zero,
            dst_addr: zero,
            src_port: 0,
            dst_port: 0,
            ip_protocol: 0,
            tcp_flags: 0,
            tos: 0,
            bytes: 0,
            packets: 0,
            sampling_rate: 1,
            sampling_source: SamplingSource::None,
            direction: Direction::Unknown,
            src_as: 0,
            dst_as: 0,
            vlan: 0,
        }
    }

    /// Bytes scaled by the sampling rate: the estimate of what the network carried.
    #[inline]
    pub fn scaled_bytes(&self) -> u64 {
        self.bytes.saturating_mul(self.sampling_rate.max(1) as u64)
    }

    #[inline]
    pub fn scaled_packets(&self) -> u64 {
        self.packets
            .saturating_mul(self.sampling_rate.max(1) as u64)
    }

    /// Set the rate if `source` outranks the one already set.
    #[inline]
    pub fn offer_sampling(&mut self, rate: u32, source: SamplingSource) {
        if rate >= 1 && (source as u8) < (self.sampling_source as u8) {
            self.sampling_rate = rate;
            self.sampling_source = source;
        }
    }
}

/// sFlow generic interface counters (counter record format 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InterfaceCounters {
    pub agent: Option<IpAddr>,
    pub if_index: u32,
    pub if_type: u32,
    pub if_speed: u64,
    pub if_direction: u32,
    pub if_status: u32,
    pub in_octets: u64,
    pub in_ucast_pkts: u32,
    pub in_multicast_pkts: u32,
    pub in_broadcast_pkts: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_ucast_pkts: u32,
    pub out_multicast_pkts: u32,
    pub out_broadcast_pkts: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous_mode: u32,
}
