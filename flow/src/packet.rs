//! Just enough of Ethernet / 802.1Q / IPv4 / IPv6 / TCP / UDP / ICMP to turn a sampled packet
//! header (sFlow raw header record) into flow fields. Headers are usually cut at 128 bytes,
//! so a truncated inner header keeps what was read before the cut.

use super::bytes::Cursor;
use super::record::FlowRecord;
use std::net::IpAddr;

/// sFlow `header_protocol` values this decoder understands.
pub const HEADER_ETHERNET: u32 = 1;
pub const HEADER_IPV4: u32 = 11;
pub const HEADER_IPV6: u32 = 12;

/// Fill `f` from a captured header; returns false if no IP header was found.
pub fn parse(header_protocol: u32, data: &[u8], f: &mut FlowRecord) -> bool {
    let mut c = Cursor::new(data);
    let ethertype = match header_protocol {
        HEADER_ETHERNET => match ethernet(&mut c, f) {
            Some(t) => t,
            None => return false,
        },
        HEADER_IPV4 => 0x0800,
        HEADER_IPV6 => 0x86dd,
        _ => return false,
    };
    match ethertype {
        0x0800 => ipv4(&mut c, f).is_some(),
        0x86dd => ipv6(&mut c, f).is_some(),
        _ => false,
    }
}

fn ethernet(c: &mut Cursor<'_>, f: &mut FlowRecord) -> Option<u16> {
    c.skip(12)?;
    let mut ethertype = c.u16()?;
    // Up to two VLAN tags (802.1Q, 802.1ad QinQ); the outer VLAN id is kept.
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        let tci = c.u16()?;
        if f.vlan == 0 {
            f.vlan = tci & 0x0fff;
        }
        ethertype = c.u16()?;
    }
    Some(ethertype)
}

fn ipv4(c: &mut Cursor<'_>, f: &mut FlowRecord) -> Option<()> {
    let start = *c;
    let vihl = c.u8()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    f.tos = c.u8()?;
    let _total = c.u16()?;
    let _id = c.u16()?;
    let frag = c.u16()?;
    let _ttl = c.u8()?;
    f.ip_protocol = c.u8()?;
    let _sum = c.u16()?;
    f.src_addr = IpAddr::V4(c.ipv4()?);
    f.dst_addr = IpAddr::V4(c.ipv4()?);
    let mut c = start;
    c.skip(ihl.max(20))?;
    // Only the first fragment carries the transport header.
    if frag & 0x1fff == 0 {
        transport(&mut c, f);
    }
    Some(())
}

fn ipv6(c: &mut Cursor<'_>, f: &mut FlowRecord) -> Option<()> {
    let first = c.u32()?;
    if first >> 28 != 6 {
        return None;
    }
    f.tos = ((first >> 20) & 0xff) as u8;
    let _len = c.u16()?;
    let mut next = c.u8()?;
    let _hops = c.u8()?;
    f.src_addr = IpAddr::V6(c.ipv6()?);
    f.dst_addr = IpAddr::V6(c.ipv6()?);
    // Skip extension headers: hop-by-hop, routing, destination options, fragment.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                next = c.u8()?;
                let len = c.u8()? as usize;
                c.skip(6 + len * 8)?;
            }
            44 => {
                next = c.u8()?;
                c.skip(1)?;
                let frag = c.u16()?;
                c.skip(4)?;
                if frag & 0xfff8 != 0 {
                    f.ip_protocol = next;
                    return Some(());
                }
            }
            _ => break,
        }
    }
    f.ip_protocol = next;
    transport(c, f);
    Some(())
}

fn transport(c: &mut Cursor<'_>, f: &mut FlowRecord) -> Option<()> {
    match f.ip_protocol {
        6 => {
            f.src_port = c.u16()?;
            f.dst_port = c.u16()?;
            c.skip(8)?;
            let ns = c.u8()? as u16 & 1;
            f.tcp_flags = ns << 8 | c.u8()? as u16;
        }
        17 | 132 | 136 => {
            f.src_port = c.u16()?;
            f.dst_port = c.u16()?;
        }
        1 | 58 => {
            let t = c.u8()? as u16;
            let code = c.u8()? as u16;
            f.dst_port = t << 8 | code;
        }
        _ => {}
    }
    Some(())
}
