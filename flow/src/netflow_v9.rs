//! NetFlow v9 (RFC 3954): a 20-byte header, then flowsets — templates (id 0), options
//! templates (id 1) and data (id ≥ 256) decoded with a template learned earlier, possibly in
//! an earlier datagram or before a restart (`template`).

use super::bytes::Cursor;
use super::record::{FlowProtocol, FlowRecord};
use super::template::{DomainKey, FieldSpec, Template};
use super::{Context, DecodeError};
use std::net::IpAddr;

pub fn decode(dgram: &[u8], exporter: IpAddr, cx: &mut Context<'_>) -> Result<usize, DecodeError> {
    let mut c = Cursor::new(dgram);
    let header = |v: Option<u32>| v.ok_or(DecodeError::Truncated("v9 header"));
    let _version = c.u16();
    let _count = c.u16();
    let uptime = header(c.u32())?;
    let secs = header(c.u32())?;
    let _sequence = header(c.u32())?;
    let source_id = header(c.u32())?;
    let key = DomainKey {
        protocol: FlowProtocol::NetflowV9,
        exporter,
        domain: source_id,
    };
    let export_ms = secs as i64 * 1000;
    let set = super::SetContext {
        key,
        export_ms,
        uptime: Some((uptime, export_ms)),
    };
    let mut records = 0;
    while c.remaining() >= 4 {
        let id = c.u16().unwrap_or(0);
        let len = c.u16().unwrap_or(0) as usize;
        if len < 4 {
            return Err(DecodeError::Invalid("v9 flowset length"));
        }
        let body = c
            .take(len - 4)
            .ok_or(DecodeError::Truncated("v9 flowset"))?;
        match id {
            0 => templates(body, &set, cx)?,
            1 => options_templates(body, &set, cx)?,
            2..=255 => {}
            _ => records += cx.data_set(&set, id, body)?,
        }
    }
    Ok(records)
}

fn templates(
    body: &[u8],
    set: &super::SetContext,
    cx: &mut Context<'_>,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body);
    while c.remaining() >= 4 {
        let id = c.u16().unwrap_or(0);
        let count = c.u16().unwrap_or(0);
        if id < 256 {
            break; // padding
        }
        let specs = specs(&mut c, count as usize)?;
        cx.learn_template(
            set,
            id,
            Template::new(FlowProtocol::NetflowV9, specs, false, 0),
        )?;
    }
    Ok(())
}

fn options_templates(
    body: &[u8],
    set: &super::SetContext,
    cx: &mut Context<'_>,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body);
    while c.remaining() >= 6 {
        let id = c.u16().unwrap_or(0);
        let scope_len = c.u16().unwrap_or(0) as usize;
        let option_len = c.u16().unwrap_or(0) as usize;
        if id < 256 {
            break;
        }
        if !scope_len.is_multiple_of(4) || !option_len.is_multiple_of(4) {
            return Err(DecodeError::Invalid("v9 options template lengths"));
        }
        let scope = scope_len / 4;
        let specs = specs(&mut c, scope + option_len / 4)?;
        let tpl = Template::new(FlowProtocol::NetflowV9, specs, true, scope as u16);
        cx.learn_template(set, id, tpl)?;
    }
    Ok(())
}

fn specs(c: &mut Cursor<'_>, count: usize) -> Result<Vec<FieldSpec>, DecodeError> {
    if count == 0 || c.remaining() < count * 4 {
        return Err(DecodeError::Invalid("v9 template field count"));
    }
    let mut specs = Vec::with_capacity(count);
    for _ in 0..count {
        let ie = c.u16().unwrap_or(0);
        let len = c.u16().unwrap_or(0);
        if len == 0 || len == super::fields::VARIABLE {
            return Err(DecodeError::Invalid("v9 template field length"));
        }
        specs.push(FieldSpec { ie, pen: 0, len });
    }
    Ok(specs)
}

pub(super) fn base_record(key: &DomainKey) -> FlowRecord {
    FlowRecord::empty(key.protocol, key.exporter, key.domain)
}
