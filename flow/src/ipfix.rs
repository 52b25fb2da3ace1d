//! IPFIX (RFC 7011): a 16-byte header, then sets — templates (id 2), options templates
//! (id 3), data (id ≥ 256). Beyond NetFlow v9: enterprise-specific elements (the high bit of
//! the element id, then a 4-byte PEN), variable-length fields (length 65535 in the template,
//! a 1- or 3-byte length prefix in the record), and template withdrawal (field count 0).

use super::bytes::Cursor;
use super::record::FlowProtocol;
use super::template::{DomainKey, FieldSpec, Template};
use super::{Context, DecodeError};
use std::net::IpAddr;

const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;

pub fn decode(dgram: &[u8], exporter: IpAddr, cx: &mut Context<'_>) -> Result<usize, DecodeError> {
    let mut c = Cursor::new(dgram);
    let header = |v: Option<u32>| v.ok_or(DecodeError::Truncated("IPFIX header"));
    let _version = c.u16();
    let length = c.u16().ok_or(DecodeError::Truncated("IPFIX header"))? as usize;
    let export_secs = header(c.u32())?;
    let _sequence = header(c.u32())?;
    let domain = header(c.u32())?;
    if length < 16 || length > dgram.len() {
        return Err(DecodeError::Invalid("IPFIX message length"));
    }
    let mut c = Cursor::new(&dgram[16..length]);
    let key = DomainKey {
        protocol: FlowProtocol::Ipfix,
        exporter,
        domain,
    };
    let export_ms = export_secs as i64 * 1000;
    // sysUpTime-relative IEs 21/22 are anchored by systemInitTimeMilliseconds, which comes
    // in an options record: resolved per data set (`Context::data_set`).
    let set = super::SetContext {
        key,
        export_ms,
        uptime: None,
    };
    let mut records = 0;
    while c.remaining() >= 4 {
        let id = c.u16().unwrap_or(0);
        let len = c.u16().unwrap_or(0) as usize;
        if len < 4 {
            return Err(DecodeError::Invalid("IPFIX set length"));
        }
        let body = c.take(len - 4).ok_or(DecodeError::Truncated("IPFIX set"))?;
        match id {
            TEMPLATE_SET => templates(body, &set, cx, false)?,
            OPTIONS_TEMPLATE_SET => templates(body, &set, cx, true)?,
            0..=255 => {}
            _ => records += cx.data_set(&set, id, body)?,
        }
    }
    Ok(records)
}

fn templates(
    body: &[u8],
    set: &super::SetContext,
    cx: &mut Context<'_>,
    options: bool,
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(body);
    while c.remaining() >= 4 {
        let id = c.u16().unwrap_or(0);
        let count = c.u16().unwrap_or(0) as usize;
        if count == 0 {
            // Withdrawal: of one template, or of all when the id is the set id.
            let all = id == TEMPLATE_SET || id == OPTIONS_TEMPLATE_SET;
            cx.cache.withdraw(set.key, (!all).then_some(id));
            cx.counters.add_withdrawn();
            continue;
        }
        if id < 256 {
            return Err(DecodeError::Invalid("IPFIX template id"));
        }
        let scope = if options {
            let s = c
                .u16()
                .ok_or(DecodeError::Truncated("IPFIX options template"))?;
            if s == 0 || s as usize > count {
                return Err(DecodeError::Invalid("IPFIX options scope count"));
            }
            s
        } else {
            0
        };
        let mut specs = Vec::with_capacity(count);
        for _ in 0..count {
            let raw = c.u16().ok_or(DecodeError::Truncated("IPFIX template"))?;
            let len = c.u16().ok_or(DecodeError::Truncated("IPFIX template"))?;
            let pen = if raw & 0x8000 != 0 {
                c.u32().ok_or(DecodeError::Truncated("IPFIX template"))?
            } else {
                0
            };
            if len == 0 {
                return Err(DecodeError::Invalid("IPFIX field length"));
            }
            specs.push(FieldSpec {
                ie: raw & 0x7fff,
                pen,
                len,
            });
        }
        cx.learn_template(
            set,
            id,
            Template::new(FlowProtocol::Ipfix, specs, options, scope),
        )?;
    }
    Ok(())
}
