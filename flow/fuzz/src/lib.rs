//! What the fuzz targets share: turning a fuzzer input into datagrams and pushing them
//! through one `FlowDecoder`, the way a listener socket does.
//!
//! The per-protocol targets overwrite the version bytes at the start of every datagram, so
//! no execution is spent on the dispatch in `FlowDecoder::decode` rejecting other versions
//! (the `any` target covers that). NetFlow v9 and IPFIX are stateful — a data set is decoded
//! with a template learned from an earlier datagram, options records set sampling rates,
//! templates are withdrawn and redefined, data may arrive before its template and be held —
//! so their targets split the input into a *sequence* of datagrams on `SEP` and feed them
//! all, in order, to one decoder. A separator rather than length prefixes: libFuzzer's
//! insertions and deletions inside one datagram then leave the framing of the others intact.
//!
//! Nothing is asserted about decoded values (the oracle tests in tests/e2e do that); only
//! that decoding never panics, and that the counts the decoder reports add up.

use sotp_flow::{DecodeCounters, DecodeOutput, FlowDecoder, PendingLimits, TemplateCache};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Separates datagrams in the input of the sequence targets (`seeds.py` writes the same).
pub const SEP: &[u8; 4] = b"NEXT";

/// NetFlow v5 / v9 / IPFIX: a 16-bit version; sFlow v5: a 32-bit one.
pub const NETFLOW_V5: &[u8] = &[0, 5];
pub const NETFLOW_V9: &[u8] = &[0, 9];
pub const IPFIX: &[u8] = &[0, 10];
pub const SFLOW: &[u8] = &[0, 0, 0, 5];

/// Every datagram comes from one exporter, so templates carry over between them.
const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Arrival time: fixed, so a crash reproduces.
const NOW_MS: i64 = 1_700_000_000_000;
/// A hold buffer for data before its template small enough for an input of a few KiB to
/// fill it (the default, 4 MiB, is out of reach). The age limit stays at its default: an
/// input never runs that long, and a wall-clock expiry would make crashes flaky.
const PENDING_BYTES: usize = 2048;

/// One decoder, as one listener has, and what it has been fed.
pub struct Harness {
    decoder: FlowDecoder,
    counters: Arc<DecodeCounters>,
    out: DecodeOutput,
    buf: Vec<u8>,
    calls: u64,
    accepted: u64,
    flows: u64,
}

impl Default for Harness {
    fn default() -> Self {
        let counters = Arc::new(DecodeCounters::default());
        Harness {
            decoder: FlowDecoder::new(TemplateCache::default(), counters.clone()).with_limits(
                PendingLimits {
                    max_bytes: PENDING_BYTES,
                    ..PendingLimits::default()
                },
            ),
            counters,
            out: DecodeOutput::default(),
            buf: Vec::new(),
            calls: 0,
            accepted: 0,
            flows: 0,
        }
    }
}

impl Harness {
    /// Decode one datagram as it is.
    pub fn feed(&mut self, dgram: &[u8]) {
        self.out.clear();
        let result = self.decoder.decode(EXPORTER, NOW_MS, dgram, &mut self.out);
        self.calls += 1;
        self.flows += self.out.flows.len() as u64;
        if let Ok(n) = result {
            self.accepted += 1;
            assert_eq!(
                n,
                self.out.flows.len(),
                "reported records != records appended"
            );
        }
    }

    /// Decode one datagram with `version` written over its first bytes.
    pub fn feed_as(&mut self, version: &[u8], data: &[u8]) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(version);
        buf.extend_from_slice(data.get(version.len()..).unwrap_or_default());
        self.feed(&buf);
        self.buf = buf;
    }

    /// Every call was either accepted or counted as rejected, and every record appended was
    /// counted under its protocol.
    pub fn check_counters(&self) {
        let c = &self.counters;
        let rejected = c.malformed.load(Relaxed) + c.unknown_version.load(Relaxed);
        assert_eq!(
            self.accepted + rejected,
            self.calls,
            "datagrams not accounted for"
        );
        let records: u64 = c.records.iter().map(|r| r.load(Relaxed)).sum();
        assert_eq!(records, self.flows, "records counted != records appended");
    }
}

/// The datagrams of a sequence input.
pub fn datagrams(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let s = rest?;
        match find(s) {
            Some(i) => {
                rest = Some(&s[i + SEP.len()..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Where `SEP` starts.
fn find(haystack: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find_byte(&haystack[from..], SEP[0]) {
        let at = from + i;
        if haystack[at..].starts_with(SEP) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Where byte `b` first occurs, looked for eight bytes at a time (the SWAR "has zero byte"
/// test on the word XOR `b`). Every comparison in the instrumented build is a libFuzzer
/// callback; scanning byte by byte took a quarter of the sequence targets' time.
fn find_byte(haystack: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * b as u64;
    let mut words = haystack.chunks_exact(8);
    let mut skipped = 0;
    for w in words.by_ref() {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default()) ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        skipped += 8;
    }
    let rest = &haystack[skipped..];
    rest.iter().position(|&x| x == b).map(|i| skipped + i)
}

/// Target body of a stateless protocol: the whole input is one datagram.
pub fn single(version: &[u8], input: &[u8]) {
    let mut h = Harness::default();
    h.feed_as(version, input);
    h.check_counters();
}

/// Target body of a template-based protocol: the input is datagrams separated by `SEP`.
pub fn sequence(version: &[u8], input: &[u8]) {
    let mut h = Harness::default();
    for d in datagrams(input) {
        h.feed_as(version, d);
    }
    h.check_counters();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_separator() {
        let v: Vec<&[u8]> = datagrams(b"abNEXTcdNEXT").collect();
        assert_eq!(v, [&b"ab"[..], b"cd", b""]);
        assert_eq!(datagrams(b"").count(), 1);
        let long = b"0123456789NNEXabcdefghijklmnopqrstuvNEXTNEX";
        let v: Vec<&[u8]> = datagrams(long).collect();
        assert_eq!(v, [&long[..36], b"NEX"]);
    }
}
