//! The flow bus's encoding, version 1 ([`SCHEMA_VERSION`]; `docs/flow.proto` is its text).
//!
//! **Protobuf, goflow2's `FlowMessage` numbering.** Tools in this field already read
//! goflow2's protobuf flows from Kafka (Akvorado's inlet format descends from it, and many
//! pipelines decode it): every field SOTP has in common with it keeps goflow2's field number
//! and type, so such a reader decodes SOTP's flows as they are; what only SOTP has (tenant,
//! application, how the sampling rate was learnt, direction) lives at 1000 and up, which
//! other readers skip as unknown fields. Arrow IPC was the other candidate: columnar batches
//! suit the store's rollups, but no flow tool reads it off Kafka, and a batch of a few
//! thousand records gains little from columns once compressed by the producer.
//!
//! **Framing.** A Kafka message's value holds one or more flows, each length-delimited
//! (a varint length, then the message — protobuf's `writeDelimitedTo`), so a producer batch
//! costs one Kafka record, not thousands. The message's `sotp-schema` header carries the
//! version; a consumer refuses a version it does not know (and says which) rather than
//! misreading it.
//!
//! Addresses are 4 or 16 bytes; times nanoseconds since the epoch; `bytes` and `packets`
//! as exported (sampled), with `sampling_rate` — readers scale, as with goflow2.

use sotp_flow::{Direction, FlowProtocol, FlowRecord, SamplingSource};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The encoding this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The most flows one Kafka record may hold (an inlet writes 4,096): a record of empty
/// messages cannot make a store hold millions.
pub const MAX_FLOWS_PER_RECORD: usize = 65_536;
/// The Kafka header naming the encoding's version.
pub const SCHEMA_HEADER: &str = "sotp-schema";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SchemaError {
    #[error("the bus message has no `{SCHEMA_HEADER}` header: not written by a SOTP inlet")]
    NoVersion,
    #[error(
        "the bus message is schema version {0}; this sotp reads version {SCHEMA_VERSION} (upgrade the store before the inlets)"
    )]
    UnknownVersion(String),
    #[error("undecodable flow on the bus: {0}")]
    Decode(String),
}

/// goflow2's `FlowMessage.FlowType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum FlowType {
    Unknown = 0,
    Sflow5 = 1,
    NetflowV5 = 2,
    NetflowV9 = 3,
    Ipfix = 4,
}

/// One flow on the bus. Tags below 1000 are goflow2's; the rest are SOTP's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowMessage {
    #[prost(enumeration = "FlowType", tag = "1")]
    pub r#type: i32,
    #[prost(uint64, tag = "110")]
    pub time_received_ns: u64,
    #[prost(uint64, tag = "3")]
    pub sampling_rate: u64,
    /// The exporter (NetFlow/IPFIX source, sFlow agent).
    #[prost(bytes = "vec", tag = "11")]
    pub sampler_address: Vec<u8>,
    #[prost(uint64, tag = "111")]
    pub time_flow_start_ns: u64,
    #[prost(uint64, tag = "112")]
    pub time_flow_end_ns: u64,
    #[prost(uint64, tag = "9")]
    pub bytes: u64,
    #[prost(uint64, tag = "10")]
    pub packets: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub src_addr: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub dst_addr: Vec<u8>,
    /// 0x0800 IPv4, 0x86dd IPv6.
    #[prost(uint32, tag = "30")]
    pub etype: u32,
    #[prost(uint32, tag = "20")]
    pub proto: u32,
    #[prost(uint32, tag = "21")]
    pub src_port: u32,
    #[prost(uint32, tag = "22")]
    pub dst_port: u32,
    #[prost(uint32, tag = "18")]
    pub in_if: u32,
    #[prost(uint32, tag = "19")]
    pub out_if: u32,
    #[prost(uint32, tag = "29")]
    pub vlan_id: u32,
    #[prost(uint32, tag = "23")]
    pub ip_tos: u32,
    #[prost(uint32, tag = "26")]
    pub tcp_flags: u32,
    #[prost(uint32, tag = "14")]
    pub src_as: u32,
    #[prost(uint32, tag = "15")]
    pub dst_as: u32,
    /// NetFlow v9 source id, IPFIX observation domain, sFlow sub-agent.
    #[prost(uint32, tag = "70")]
    pub observation_domain_id: u32,
    /// The tenant's id (SOTP).
    #[prost(string, tag = "1000")]
    pub tenant: String,
    /// The application the inlet classified it as (SOTP).
    #[prost(string, tag = "1001")]
    pub application: String,
    /// How the sampling rate was learnt: 0 none, 1 record, 2 sampler, 3 options, 4 header.
    #[prost(uint32, tag = "1002")]
    pub sampling_source: u32,
    /// 0 unknown, 1 ingress, 2 egress.
    #[prost(uint32, tag = "1003")]
    pub direction: u32,
}

/// A flow as the inlet publishes it: the record, whose tenant, which application.
pub fn to_message(
    f: &FlowRecord,
    tenant: &str,
    application: &str,
    received_ms: i64,
) -> FlowMessage {
    let ns = |ms: i64| (ms.max(0) as u64).saturating_mul(1_000_000);
    FlowMessage {
        r#type: match f.protocol {
            FlowProtocol::NetflowV5 => FlowType::NetflowV5,
            FlowProtocol::NetflowV9 => FlowType::NetflowV9,
            FlowProtocol::Ipfix => FlowType::Ipfix,
            FlowProtocol::Sflow => FlowType::Sflow5,
        } as i32,
        time_received_ns: ns(received_ms),
        sampling_rate: f.sampling_rate as u64,
        sampler_address: address(f.exporter),
        time_flow_start_ns: ns(f.start_ms),
        time_flow_end_ns: ns(f.end_ms),
        bytes: f.bytes,
        packets: f.packets,
        src_addr: address(f.src_addr),
        dst_addr: address(f.dst_addr),
        etype: if f.src_addr.is_ipv6() { 0x86dd } else { 0x0800 },
        proto: f.ip_protocol as u32,
        src_port: f.src_port as u32,
        dst_port: f.dst_port as u32,
        in_if: f.in_if,
        out_if: f.out_if,
        vlan_id: f.vlan as u32,
        ip_tos: f.tos as u32,
        tcp_flags: f.tcp_flags as u32,
        src_as: f.src_as,
        dst_as: f.dst_as,
        observation_domain_id: f.domain,
        tenant: tenant.to_string(),
        application: application.to_string(),
        sampling_source: match f.sampling_source {
            SamplingSource::None => 0,
            SamplingSource::Record => 1,
            SamplingSource::Sampler => 2,
            SamplingSource::Options => 3,
            SamplingSource::Header => 4,
        },
        direction: match f.direction {
            Direction::Unknown => 0,
            Direction::Ingress => 1,
            Direction::Egress => 2,
        },
    }
}

/// The record a bus flow carries (its tenant and application are the message's).
pub fn to_record(m: &FlowMessage) -> Result<FlowRecord, SchemaError> {
    let bad = |what: &str| SchemaError::Decode(what.to_string());
    let protocol = match FlowType::try_from(m.r#type) {
        Ok(FlowType::NetflowV5) => FlowProtocol::NetflowV5,
        Ok(FlowType::NetflowV9) => FlowProtocol::NetflowV9,
        Ok(FlowType::Ipfix) => FlowProtocol::Ipfix,
        Ok(FlowType::Sflow5) => FlowProtocol::Sflow,
        _ => return Err(bad("an unknown flow type")),
    };
    let ms = |ns: u64| (ns / 1_000_000).min(i64::MAX as u64) as i64;
    let narrow = |v: u32, max: u32, what: &str| {
        (v <= max)
            .then_some(v)
            .ok_or_else(|| bad(&format!("{what} {v} is out of range")))
    };
    let mut f = FlowRecord::empty(
        protocol,
        ip(&m.sampler_address).ok_or_else(|| bad("the exporter address"))?,
        m.observation_domain_id,
    );
    f.start_ms = ms(m.time_flow_start_ns);
    f.end_ms = ms(m.time_flow_end_ns);
    f.src_addr = ip(&m.src_addr).ok_or_else(|| bad("the source address"))?;
    f.dst_addr = ip(&m.dst_addr).ok_or_else(|| bad("the destination address"))?;
    f.in_if = m.in_if;
    f.out_if = m.out_if;
    f.src_port = narrow(m.src_port, 65535, "src_port")? as u16;
    f.dst_port = narrow(m.dst_port, 65535, "dst_port")? as u16;
    f.ip_protocol = narrow(m.proto, 255, "proto")? as u8;
    f.tcp_flags = narrow(m.tcp_flags, 65535, "tcp_flags")? as u16;
    f.tos = narrow(m.ip_tos, 255, "ip_tos")? as u8;
    f.bytes = m.bytes;
    f.packets = m.packets;
    f.sampling_rate = u32::try_from(m.sampling_rate.max(1)).map_err(|_| bad("sampling_rate"))?;
    f.sampling_source = match m.sampling_source {
        1 => SamplingSource::Record,
        2 => SamplingSource::Sampler,
        3 => SamplingSource::Options,
        4 => SamplingSource::Header,
        _ => SamplingSource::None,
    };
    f.direction = match m.direction {
        1 => Direction::Ingress,
        2 => Direction::Egress,
        _ => Direction::Unknown,
    };
    f.src_as = m.src_as;
    f.dst_as = m.dst_as;
    f.vlan = narrow(m.vlan_id, 65535, "vlan_id")? as u16;
    Ok(f)
}

/// One sFlow interface counter sample on the bus (`<topic>-counters`, schema version 1;
/// `docs/counters.proto`). SOTP's own message: goflow2 publishes no counters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountersMessage {
    #[prost(string, tag = "1")]
    pub tenant: String,
    /// The agent's address, 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub agent: Vec<u8>,
    /// When the inlet received the sample, ms since the epoch.
    #[prost(int64, tag = "3")]
    pub time_received_ms: i64,
    #[prost(uint32, tag = "4")]
    pub if_index: u32,
    #[prost(uint32, tag = "5")]
    pub if_type: u32,
    #[prost(uint64, tag = "6")]
    pub if_speed: u64,
    #[prost(uint32, tag = "7")]
    pub if_direction: u32,
    #[prost(uint32, tag = "8")]
    pub if_status: u32,
    #[prost(uint64, tag = "9")]
    pub in_octets: u64,
    #[prost(uint32, tag = "10")]
    pub in_ucast_pkts: u32,
    #[prost(uint32, tag = "11")]
    pub in_multicast_pkts: u32,
    #[prost(uint32, tag = "12")]
    pub in_broadcast_pkts: u32,
    #[prost(uint32, tag = "13")]
    pub in_discards: u32,
    #[prost(uint32, tag = "14")]
    pub in_errors: u32,
    #[prost(uint32, tag = "15")]
    pub in_unknown_protos: u32,
    #[prost(uint64, tag = "16")]
    pub out_octets: u64,
    #[prost(uint32, tag = "17")]
    pub out_ucast_pkts: u32,
    #[prost(uint32, tag = "18")]
    pub out_multicast_pkts: u32,
    #[prost(uint32, tag = "19")]
    pub out_broadcast_pkts: u32,
    #[prost(uint32, tag = "20")]
    pub out_discards: u32,
    #[prost(uint32, tag = "21")]
    pub out_errors: u32,
    #[prost(uint32, tag = "22")]
    pub promiscuous_mode: u32,
}

/// An interface counter sample as the bus carries it.
pub fn counters_to_message(c: &crate::flow::store::StoredCounters) -> CountersMessage {
    let i = &c.counters;
    CountersMessage {
        tenant: c.tenant.to_string(),
        agent: i.agent.map(address).unwrap_or_default(),
        time_received_ms: c.ts_ms,
        if_index: i.if_index,
        if_type: i.if_type,
        if_speed: i.if_speed,
        if_direction: i.if_direction,
        if_status: i.if_status,
        in_octets: i.in_octets,
        in_ucast_pkts: i.in_ucast_pkts,
        in_multicast_pkts: i.in_multicast_pkts,
        in_broadcast_pkts: i.in_broadcast_pkts,
        in_discards: i.in_discards,
        in_errors: i.in_errors,
        in_unknown_protos: i.in_unknown_protos,
        out_octets: i.out_octets,
        out_ucast_pkts: i.out_ucast_pkts,
        out_multicast_pkts: i.out_multicast_pkts,
        out_broadcast_pkts: i.out_broadcast_pkts,
        out_discards: i.out_discards,
        out_errors: i.out_errors,
        promiscuous_mode: i.promiscuous_mode,
    }
}

/// A sample back from the bus (its tenant as named there).
pub fn counters_from_message(
    m: &CountersMessage,
) -> Result<crate::flow::store::StoredCounters, SchemaError> {
    let agent =
        match m.agent.len() {
            0 => None,
            _ => Some(ip(&m.agent).ok_or_else(|| {
                SchemaError::Decode("the agent address is not 4 or 16 bytes".into())
            })?),
        };
    Ok(crate::flow::store::StoredCounters {
        tenant: std::sync::Arc::from(m.tenant.as_str()),
        ts_ms: m.time_received_ms,
        counters: sotp_flow::InterfaceCounters {
            agent,
            if_index: m.if_index,
            if_type: m.if_type,
            if_speed: m.if_speed,
            if_direction: m.if_direction,
            if_status: m.if_status,
            in_octets: m.in_octets,
            in_ucast_pkts: m.in_ucast_pkts,
            in_multicast_pkts: m.in_multicast_pkts,
            in_broadcast_pkts: m.in_broadcast_pkts,
            in_discards: m.in_discards,
            in_errors: m.in_errors,
            in_unknown_protos: m.in_unknown_protos,
            out_octets: m.out_octets,
            out_ucast_pkts: m.out_ucast_pkts,
            out_multicast_pkts: m.out_multicast_pkts,
            out_broadcast_pkts: m.out_broadcast_pkts,
            out_discards: m.out_discards,
            out_errors: m.out_errors,
            promiscuous_mode: m.promiscuous_mode,
        },
    })
}

/// One Kafka message's value: the messages (flows, or counter samples), each
/// length-delimited.
pub fn encode_batch<M: prost::Message>(flows: &[M]) -> Vec<u8> {
    let mut out = Vec::with_capacity(flows.iter().map(|f| f.encoded_len() + 2).sum());
    for f in flows {
        f.encode_length_delimited(&mut out)
            .expect("a Vec grows as needed");
    }
    out
}

/// The flows of one Kafka message's value, after checking its `sotp-schema` header.
pub fn decode_batch(version: Option<&[u8]>, value: &[u8]) -> Result<Vec<FlowMessage>, SchemaError> {
    decode_batch_of(version, value)
}

/// The messages of one Kafka message's value (flows, or interface counters), after checking
/// its `sotp-schema` header.
pub fn decode_batch_of<M: prost::Message + Default>(
    version: Option<&[u8]>,
    value: &[u8],
) -> Result<Vec<M>, SchemaError> {
    check_version(version)?;
    let mut buf = value;
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() == MAX_FLOWS_PER_RECORD {
            return Err(SchemaError::Decode(format!(
                "more than {MAX_FLOWS_PER_RECORD} flows in one record"
            )));
        }
        out.push(
            M::decode_length_delimited(&mut buf).map_err(|e| SchemaError::Decode(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Refuse a message of another schema version, naming it.
pub fn check_version(version: Option<&[u8]>) -> Result<(), SchemaError> {
    let Some(v) = version else {
        return Err(SchemaError::NoVersion);
    };
    let text = String::from_utf8_lossy(v).into_owned();
    if text.trim() == SCHEMA_VERSION.to_string() {
        Ok(())
    } else {
        Err(SchemaError::UnknownVersion(text))
    }
}

fn address(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn record() -> FlowRecord {
        let mut f = FlowRecord::empty(FlowProtocol::Ipfix, "192.0.2.1".parse().unwrap(), 7);
        f.start_ms = 1_700_000_000_123;
        f.end_ms = 1_700_000_001_456;
        f.src_addr = "10.0.0.1".parse().unwrap();
        f.dst_addr = "10.0.0.2".parse().unwrap();
        f.src_port = 443;
        f.dst_port = 51000;
        f.ip_protocol = 6;
        f.tcp_flags = 0x1b;
        f.tos = 32;
        f.bytes = 1500;
        f.packets = 3;
        f.sampling_rate = 100;
        f.sampling_source = SamplingSource::Options;
        f.direction = Direction::Ingress;
        f.in_if = 3;
        f.out_if = 4;
        f.src_as = 64512;
        f.dst_as = 64513;
        f.vlan = 42;
        f
    }

    #[test]
    fn a_record_comes_back_from_the_bus_unchanged() {
        let f = record();
        let m = to_message(&f, "acme", "https", 1_700_000_002_000);
        let batch = encode_batch(&[m.clone(), m.clone()]);
        let back = decode_batch(Some(b"1"), &batch).unwrap();
        assert_eq!(back, [m.clone(), m.clone()]);
        assert_eq!(to_record(&back[0]).unwrap(), f);
        assert_eq!(
            (back[0].tenant.as_str(), back[0].application.as_str()),
            ("acme", "https")
        );
        let mut v6 = record();
        v6.src_addr = "2001:db8::1".parse().unwrap();
        v6.dst_addr = "2001:db8::2".parse().unwrap();
        let m6 = to_message(&v6, "acme", "https", 0);
        assert_eq!(m6.etype, 0x86dd);
        assert_eq!(to_record(&m6).unwrap(), v6);
    }

    /// A few fields of goflow2's `FlowMessage` as its `pb/flow.proto` numbers them, written
    /// apart from [`FlowMessage`]: what a goflow2 reader decodes from SOTP's bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Goflow2Reader {
        #[prost(int32, tag = "1")]
        r#type: i32,
        #[prost(uint64, tag = "3")]
        sampling_rate: u64,
        #[prost(bytes = "vec", tag = "6")]
        src_addr: Vec<u8>,
        #[prost(uint64, tag = "9")]
        bytes: u64,
        #[prost(uint64, tag = "10")]
        packets: u64,
        #[prost(bytes = "vec", tag = "11")]
        sampler_address: Vec<u8>,
        #[prost(uint32, tag = "20")]
        proto: u32,
        #[prost(uint32, tag = "22")]
        dst_port: u32,
        #[prost(uint64, tag = "111")]
        time_flow_start_ns: u64,
    }

    #[test]
    fn a_goflow2_reader_decodes_the_shared_fields() {
        let m = to_message(&record(), "acme", "https", 0);
        let read = Goflow2Reader::decode(m.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            read,
            Goflow2Reader {
                r#type: 4,
                sampling_rate: 100,
                src_addr: vec![10, 0, 0, 1],
                bytes: 1500,
                packets: 3,
                sampler_address: vec![192, 0, 2, 1],
                proto: 6,
                dst_port: 51000,
                time_flow_start_ns: 1_700_000_000_123_000_000,
            }
        );
        // And what goflow2 writes (no SOTP fields) reads as a flow with no tenant.
        let goflow = FlowMessage {
            tenant: String::new(),
            application: String::new(),
            ..m
        };
        let back = FlowMessage::decode(goflow.encode_to_vec().as_slice()).unwrap();
        assert!(back.tenant.is_empty());
        assert!(to_record(&back).is_ok());
    }

    /// docs/counters.proto numbers exactly the fields [`CountersMessage`] writes, and a
    /// sample comes back from the bus unchanged.
    #[test]
    fn the_published_counters_proto_matches_the_encoder() {
        let mut sample = crate::flow::store::StoredCounters {
            tenant: std::sync::Arc::from("acme"),
            ts_ms: 1,
            counters: sotp_flow::InterfaceCounters::default(),
        };
        let c = &mut sample.counters;
        c.agent = Some("192.0.2.1".parse().unwrap());
        (
            c.if_index,
            c.if_type,
            c.if_speed,
            c.if_direction,
            c.if_status,
        ) = (1, 6, 10, 1, 3);
        (
            c.in_octets,
            c.in_ucast_pkts,
            c.in_multicast_pkts,
            c.in_broadcast_pkts,
        ) = (1, 2, 3, 4);
        (c.in_discards, c.in_errors, c.in_unknown_protos) = (5, 6, 7);
        (
            c.out_octets,
            c.out_ucast_pkts,
            c.out_multicast_pkts,
            c.out_broadcast_pkts,
        ) = (8, 9, 1, 2);
        (c.out_discards, c.out_errors, c.promiscuous_mode) = (3, 4, 1);
        let m = counters_to_message(&sample);
        assert_eq!(
            published_tags(include_str!("../../../docs/counters.proto")),
            written_tags(&m.encode_to_vec())
        );
        let batch = encode_batch(&[m.clone(), m]);
        let back: Vec<CountersMessage> = decode_batch_of(Some(b"1"), &batch).unwrap();
        let again = counters_from_message(&back[1]).unwrap();
        assert_eq!(again.counters, sample.counters);
        assert_eq!((&*again.tenant, again.ts_ms), ("acme", 1));
        let mut bad = back[0].clone();
        bad.agent = vec![1, 2, 3];
        assert!(counters_from_message(&bad).is_err());
    }

    /// The field numbers a .proto file declares.
    fn published_tags(proto: &str) -> Vec<u32> {
        let mut published: Vec<u32> = proto
            .lines()
            .map(|l| l.split("//").next().unwrap().trim())
            .filter(|l| l.ends_with(';') && l.contains(" = ") && !l.contains("syntax"))
            // A field is `type name = N;`; an enum value `NAME = N;`.
            .filter(|l| l.split(" = ").next().unwrap().split_whitespace().count() == 2)
            .map(|l| {
                l.rsplit(" = ")
                    .next()
                    .unwrap()
                    .trim_end_matches(';')
                    .parse()
                    .unwrap()
            })
            .collect();
        published.sort();
        published
    }

    /// The field numbers an encoded message holds.
    fn written_tags(wire: &[u8]) -> Vec<u32> {
        let mut buf = wire;
        let mut written = Vec::new();
        while !buf.is_empty() {
            let (tag, wire_type) = prost::encoding::decode_key(&mut buf).unwrap();
            written.push(tag);
            prost::encoding::skip_field(wire_type, tag, &mut buf, Default::default()).unwrap();
        }
        written.sort();
        written
    }

    /// docs/flow.proto (the schema's text for other readers) numbers exactly the fields
    /// [`FlowMessage`] writes.
    #[test]
    fn the_published_proto_matches_the_encoder() {
        let mut m = to_message(&record(), "acme", "https", 1);
        m.src_addr = vec![1; 16];
        assert_eq!(
            published_tags(include_str!("../../../docs/flow.proto")),
            written_tags(&m.encode_to_vec())
        );
    }

    #[test]
    fn other_versions_and_damaged_batches_are_refused_with_reasons() {
        let batch = encode_batch(&[to_message(&record(), "acme", "https", 0)]);
        assert_eq!(decode_batch(None, &batch), Err(SchemaError::NoVersion));
        let e = decode_batch(Some(b"2"), &batch).unwrap_err();
        assert!(e.to_string().contains("schema version 2"), "{e}");
        assert!(matches!(
            decode_batch(Some(b"1"), &batch[..batch.len() - 3]),
            Err(SchemaError::Decode(_))
        ));
        let mut bad = to_message(&record(), "acme", "https", 0);
        bad.src_addr = vec![1, 2, 3];
        assert!(to_record(&bad).is_err());
        bad = to_message(&record(), "acme", "https", 0);
        bad.src_port = 70_000;
        assert!(
            to_record(&bad)
                .unwrap_err()
                .to_string()
                .contains("src_port")
        );
    }
}
