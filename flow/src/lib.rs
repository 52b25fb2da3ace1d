//! Flow export decoding: NetFlow v5, NetFlow v9, IPFIX and sFlow v5 into one normalized
//! record (`FlowRecord`).
//!
//! Written by hand, not taken from a crate: this is SOTP's hot path (millions of records per
//! second), and the Rust crates for these formats allocate per record or per field and lack
//! one of persisted templates, options-based sampling, enterprise/variable-length IPFIX
//! elements or sFlow raw header parsing. Every read is bounds-checked (`bytes::Cursor`);
//! malformed input ends that datagram with a `DecodeError`, counted by the caller, never a
//! panic (fuzzed: flow/fuzz/).

//!
//! A crate of its own, below `sotp-runtime`, so the decoders build in seconds with no engine
//! or store behind them: for the fuzz targets (flow/fuzz) and the decode-only benchmark.

mod bytes;
pub mod fields;
pub mod ipfix;
pub mod netflow_v5;
pub mod netflow_v9;
pub mod packet;
pub mod record;
pub mod sflow;
pub mod template;

pub use record::{Direction, FlowProtocol, FlowRecord, InterfaceCounters, SamplingSource};
pub use template::TemplateCache;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use template::{DomainKey, Template};

#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("unknown export version {0}")]
    UnknownVersion(u32),
}

/// Decoder counters, shared with `/metrics`.
#[derive(Debug, Default)]
pub struct DecodeCounters {
    pub datagrams: [AtomicU64; 4],
    pub records: [AtomicU64; 4],
    pub counter_samples: AtomicU64,
    pub malformed: AtomicU64,
    pub unknown_version: AtomicU64,
    pub templates_learned: AtomicU64,
    pub templates_withdrawn: AtomicU64,
    pub options_records: AtomicU64,
    /// Data sets that arrived before their template and were held.
    pub pending_held: AtomicU64,
    /// Held records decoded once their template arrived.
    pub pending_decoded: AtomicU64,
    /// Held data sets dropped: too old, or the hold buffer was full.
    pub pending_dropped: AtomicU64,
    pub template_save_errors: AtomicU64,
    /// Templates, options or template spaces refused by the template state's caps.
    pub templates_refused: AtomicU64,
}

impl DecodeCounters {
    fn add_withdrawn(&self) {
        self.templates_withdrawn.fetch_add(1, Relaxed);
    }

    pub fn protocol_index(p: FlowProtocol) -> usize {
        match p {
            FlowProtocol::NetflowV5 => 0,
            FlowProtocol::NetflowV9 => 1,
            FlowProtocol::Ipfix => 2,
            FlowProtocol::Sflow => 3,
        }
    }
}

/// Bounds of the buffer for data that arrives before its template.
#[derive(Clone, Copy, Debug)]
pub struct PendingLimits {
    pub max_bytes: usize,
    pub max_age: Duration,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            max_bytes: 4 << 20,
            max_age: Duration::from_secs(30),
        }
    }
}

/// What one held set costs against `max_bytes` beyond its body: without it, empty data sets
/// would be free to hold, and a flood of them would make every template scan a long queue.
const HELD_SET_OVERHEAD: usize = 64;

struct PendingSet {
    set: SetContext,
    body: Vec<u8>,
    seq: u64,
}

impl PendingSet {
    fn cost(&self) -> usize {
        self.body.len() + HELD_SET_OVERHEAD
    }
}

type TemplateKey = (DomainKey, u16);

/// Data sets waiting for their template, indexed by (domain, template id) so that learning a
/// template touches only the sets waiting for it — never the whole buffer — and in arrival
/// order across templates for expiry. All sets of one template leave together (released),
/// or oldest first (expired), so an `order` entry whose set is no longer at the front of its
/// template's queue is stale and skipped.
#[derive(Default)]
struct Pending {
    by_template: HashMap<TemplateKey, VecDeque<PendingSet>>,
    order: VecDeque<(u64, Instant, TemplateKey)>,
    next_seq: u64,
    sets: usize,
    bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.sets == 0
    }

    fn push(&mut self, key: TemplateKey, set: SetContext, body: &[u8], now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let held = PendingSet {
            set,
            body: body.to_vec(),
            seq,
        };
        self.bytes += held.cost();
        self.sets += 1;
        self.by_template.entry(key).or_default().push_back(held);
        self.order.push_back((seq, now, key));
        // Entries of released sets linger in `order` until they age out; keep them bounded.
        if self.order.len() > 2 * self.sets + 1024 {
            let live = &self.by_template;
            self.order.retain(|(seq, _, key)| {
                live.get(key)
                    .and_then(|q| q.front())
                    .is_some_and(|front| front.seq <= *seq)
            });
        }
    }

    /// Drop the sets held longer than `max_age`; returns how many.
    fn expire(&mut self, max_age: Duration) -> u64 {
        let mut dropped = 0;
        while let Some(&(seq, at, key)) = self.order.front() {
            if at.elapsed() <= max_age {
                break;
            }
            self.order.pop_front();
            let Some(queue) = self.by_template.get_mut(&key) else {
                continue;
            };
            if queue.front().is_some_and(|f| f.seq == seq) {
                let gone = queue.pop_front().map(|p| p.cost()).unwrap_or(0);
                self.bytes -= gone;
                self.sets -= 1;
                dropped += 1;
                if queue.is_empty() {
                    self.by_template.remove(&key);
                }
            }
        }
        dropped
    }

    /// Take every set waiting for `key`.
    fn release(&mut self, key: TemplateKey) -> VecDeque<PendingSet> {
        let ready = self.by_template.remove(&key).unwrap_or_default();
        self.bytes -= ready.iter().map(PendingSet::cost).sum::<usize>();
        self.sets -= ready.len();
        ready
    }
}

/// What a data set needs from its message header.
#[derive(Clone, Copy, Debug)]
pub struct SetContext {
    pub key: DomainKey,
    pub export_ms: i64,
    /// (sysUpTime at export, epoch ms at export) for uptime-relative timestamps.
    pub uptime: Option<(u32, i64)>,
}

/// The mutable state a v9/IPFIX message is decoded against.
pub struct Context<'a> {
    pub cache: &'a mut TemplateCache,
    pending: &'a mut Pending,
    limits: PendingLimits,
    pub counters: &'a DecodeCounters,
    out: &'a mut Vec<FlowRecord>,
}

impl Context<'_> {
    fn learn_template(
        &mut self,
        set: &SetContext,
        id: u16,
        tpl: Template,
    ) -> Result<(), DecodeError> {
        if self.cache.insert(set.key, id, tpl) {
            self.counters.templates_learned.fetch_add(1, Relaxed);
        }
        self.release_pending(set.key, id)
    }

    /// Decode a data set, or hold it if its template is not known yet.
    fn data_set(&mut self, set: &SetContext, id: u16, body: &[u8]) -> Result<usize, DecodeError> {
        let domain = self.cache.domains.get(&set.key);
        let Some(tpl) = domain.and_then(|d| d.templates.get(&id)).cloned() else {
            self.hold(*set, id, body);
            return Ok(0);
        };
        if tpl.options {
            let records = tpl.decode_options(body)?;
            self.counters
                .options_records
                .fetch_add(records.len() as u64, Relaxed);
            for x in &records {
                self.cache.learn_options(set.key, x);
            }
            return Ok(0);
        }
        let Some(domain) = self.cache.domain(set.key) else {
            return Ok(0);
        };
        let mut set = *set;
        if set.uptime.is_none()
            && let Some(init) = domain.system_init_ms
        {
            set.uptime = Some((set.export_ms.wrapping_sub(init) as u32, set.export_ms));
        }
        let base = netflow_v9::base_record(&set.key);
        tpl.decode_records(body, base, set.export_ms, set.uptime, domain, self.out)
    }

    fn hold(&mut self, set: SetContext, template_id: u16, body: &[u8]) {
        self.expire_pending();
        if self.pending.bytes + body.len() + HELD_SET_OVERHEAD > self.limits.max_bytes {
            self.counters.pending_dropped.fetch_add(1, Relaxed);
            return;
        }
        self.pending
            .push((set.key, template_id), set, body, Instant::now());
        self.counters.pending_held.fetch_add(1, Relaxed);
    }

    fn expire_pending(&mut self) {
        let dropped = self.pending.expire(self.limits.max_age);
        if dropped > 0 {
            self.counters.pending_dropped.fetch_add(dropped, Relaxed);
        }
    }

    /// Decode the sets that waited for template `id`. A malformed one does not take the others
    /// with it: each is decoded, and the first error is returned (and counted by the caller).
    fn release_pending(&mut self, key: DomainKey, id: u16) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        for p in self.pending.release((key, id)) {
            match self.data_set(&p.set, id, &p.body) {
                Ok(n) => {
                    self.counters.pending_decoded.fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Everything decoded from a batch of datagrams; reused between batches.
#[derive(Default)]
pub struct DecodeOutput {
    pub flows: Vec<FlowRecord>,
    pub interfaces: Vec<InterfaceCounters>,
}

impl DecodeOutput {
    pub fn clear(&mut self) {
        self.flows.clear();
        self.interfaces.clear();
    }
}

/// One listener's decoder: template state and the hold buffer. Not shared between threads;
/// a listener socket's datagrams go through one decoder in order.
pub struct FlowDecoder {
    cache: TemplateCache,
    pending: Pending,
    limits: PendingLimits,
    pub counters: std::sync::Arc<DecodeCounters>,
}

impl FlowDecoder {
    pub fn new(cache: TemplateCache, counters: std::sync::Arc<DecodeCounters>) -> Self {
        FlowDecoder {
            cache,
            pending: Pending::default(),
            limits: PendingLimits::default(),
            counters,
        }
    }

    pub fn with_limits(mut self, limits: PendingLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn templates(&self) -> &TemplateCache {
        &self.cache
    }

    /// The template state, if it changed since the last snapshot (the caller persists it,
    /// outside whatever lock guards this decoder).
    pub fn snapshot_templates(&mut self) -> Option<template::TemplateSnapshot> {
        self.cache.snapshot()
    }

    /// Keep track of changed template spaces, to share them with other inlets.
    pub fn share_templates(&mut self) {
        self.cache.track_changes();
    }

    /// The template spaces changed since the last call ([`TemplateCache::take_changed`]).
    pub fn take_changed_templates(&mut self) -> Vec<template::SharedDomain> {
        self.cache.take_changed()
    }

    /// What was taken could not be shared: every space counts as changed again.
    pub fn templates_unshared(&mut self) {
        self.cache.mark_all_changed();
    }

    /// A template space another inlet shared ([`TemplateCache::apply_shared`]).
    pub fn apply_shared_templates(&mut self, json: &[u8], now_ms: i64) -> Result<bool, String> {
        self.cache.apply_shared(json, now_ms)
    }

    /// Forget template spaces nothing arrived for since `before_ms`.
    pub fn expire_idle_templates(&mut self, before_ms: i64) -> usize {
        self.cache.expire_idle(before_ms)
    }

    /// A snapshot could not be written: take one again next time.
    pub fn templates_unsaved(&mut self) {
        self.cache.mark_dirty();
        self.counters.template_save_errors.fetch_add(1, Relaxed);
    }

    /// Decode one datagram from `source`, appending to `out`. Records decoded before an error
    /// in the same datagram are kept.
    pub fn decode(
        &mut self,
        source: IpAddr,
        now_ms: i64,
        dgram: &[u8],
        out: &mut DecodeOutput,
    ) -> Result<usize, DecodeError> {
        let result = self.decode_inner(source, now_ms, dgram, out);
        match &result {
            Ok(_) => {}
            Err(DecodeError::UnknownVersion(_)) => {
                self.counters.unknown_version.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.counters.malformed.fetch_add(1, Relaxed);
            }
        }
        result
    }

    fn decode_inner(
        &mut self,
        source: IpAddr,
        now_ms: i64,
        dgram: &[u8],
        out: &mut DecodeOutput,
    ) -> Result<usize, DecodeError> {
        self.cache.now_ms = now_ms;
        if dgram.len() < 4 {
            return Err(DecodeError::Truncated("header"));
        }
        let before = out.flows.len();
        let version = u16::from_be_bytes([dgram[0], dgram[1]]);
        let protocol = match version {
            5 => FlowProtocol::NetflowV5,
            9 => FlowProtocol::NetflowV9,
            10 => FlowProtocol::Ipfix,
            0 if u16::from_be_bytes([dgram[2], dgram[3]]) == 5 => FlowProtocol::Sflow,
            _ => {
                let v = u32::from_be_bytes([dgram[0], dgram[1], dgram[2], dgram[3]]);
                return Err(DecodeError::UnknownVersion(if version == 0 {
                    v
                } else {
                    version as u32
                }));
            }
        };
        let i = DecodeCounters::protocol_index(protocol);
        self.counters.datagrams[i].fetch_add(1, Relaxed);
        let result = match protocol {
            FlowProtocol::NetflowV5 => netflow_v5::decode(dgram, source, &mut out.flows),
            FlowProtocol::Sflow => sflow::decode(dgram, now_ms, out),
            FlowProtocol::NetflowV9 | FlowProtocol::Ipfix => {
                let mut cx = Context {
                    cache: &mut self.cache,
                    pending: &mut self.pending,
                    limits: self.limits,
                    counters: &self.counters,
                    out: &mut out.flows,
                };
                if protocol == FlowProtocol::NetflowV9 {
                    netflow_v9::decode(dgram, source, &mut cx)
                } else {
                    ipfix::decode(dgram, source, &mut cx)
                }
            }
        };
        let decoded = out.flows.len() - before;
        self.counters.records[i].fetch_add(decoded as u64, Relaxed);
        let refused = std::mem::take(&mut self.cache.refused);
        if refused > 0 {
            self.counters.templates_refused.fetch_add(refused, Relaxed);
        }
        result.map(|_| decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPFIX message of observation domain 1 with the given sets (id, body).
    fn ipfix(sets: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (id, b) in sets {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&(b.len() as u16 + 4).to_be_bytes());
            body.extend_from_slice(b);
        }
        let mut m = vec![0, 10];
        m.extend_from_slice(&(body.len() as u16 + 16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(&body);
        m
    }

    /// Held data sets released by their template, the first of them malformed: the hold
    /// buffer must not go on counting the bytes of the ones after it.
    #[test]
    fn release_of_malformed_pending_set_frees_all_bytes() {
        let mut d = FlowDecoder::new(TemplateCache::default(), Default::default());
        let mut out = DecodeOutput::default();
        let src = IpAddr::from([192, 0, 2, 1]);
        // Two data sets of template 256 before it: a variable-length field cut short, and a
        // good one-byte string.
        let data = ipfix(&[(256, &[0xff]), (256, &[1, b'x'])]);
        assert_eq!(d.decode(src, 0, &data, &mut out), Ok(0));
        assert_eq!(d.pending.bytes, 3 + 2 * HELD_SET_OVERHEAD);
        // Template 256: applicationName (IE 96), variable length.
        let tpl = ipfix(&[(2, &[1, 0, 0, 1, 0, 96, 0xff, 0xff])]);
        let _ = d.decode(src, 0, &tpl, &mut out);
        assert!(d.pending.is_empty());
        assert_eq!(d.pending.bytes, 0);
        // The good set after the malformed one was still decoded.
        assert_eq!(out.flows.len(), 1);
    }

    /// Empty data sets are not free to hold, and learning a template touches only the sets
    /// waiting for it (a flood of held sets once made every template scan all of them).
    #[test]
    fn held_sets_are_bounded_and_released_per_template() {
        let counters = std::sync::Arc::new(DecodeCounters::default());
        let mut d = FlowDecoder::new(TemplateCache::default(), counters.clone()).with_limits(
            PendingLimits {
                max_bytes: 64 << 10,
                max_age: Duration::from_secs(30),
            },
        );
        let mut out = DecodeOutput::default();
        let src = IpAddr::from([192, 0, 2, 1]);
        // 16,000 empty data sets over 1,000 template ids, in one message.
        let sets: Vec<(u16, &[u8])> = (0..16_000u16).map(|i| (256 + i % 1000, &[][..])).collect();
        let _ = d.decode(src, 0, &ipfix(&sets), &mut out);
        let held = d.pending.sets;
        assert_eq!(held, (64 << 10) / HELD_SET_OVERHEAD);
        assert_eq!(counters.pending_held.load(Relaxed), held as u64);
        assert_eq!(counters.pending_dropped.load(Relaxed), 16_000 - held as u64);
        // Template 256 releases the sets waiting for it and only those.
        let waiting_for_256 = d.pending.by_template[&(d.pending.order[0].2)].len();
        let tpl = ipfix(&[(2, &[1, 0, 0, 1, 0, 96, 0xff, 0xff])]);
        let _ = d.decode(src, 0, &tpl, &mut out);
        assert_eq!(d.pending.sets, held - waiting_for_256);
        assert!(!d.pending.by_template.keys().any(|(_, id)| *id == 256));
    }
}
