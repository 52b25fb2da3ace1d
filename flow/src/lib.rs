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

use std::collections::VecDeque;
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

struct PendingSet {
    set: SetContext,
    template_id: u16,
    body: Vec<u8>,
    at: Instant,
}

#[derive(Default)]
struct Pending {
    sets: VecDeque<PendingSet>,
    bytes: usize,
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
        let domain = self.cache.domain(set.key);
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
        if self.pending.bytes + body.len() > self.limits.max_bytes {
            self.counters.pending_dropped.fetch_add(1, Relaxed);
            return;
        }
        self.pending.bytes += body.len();
        self.pending.sets.push_back(PendingSet {
            set,
            template_id,
            body: body.to_vec(),
            at: Instant::now(),
        });
        self.counters.pending_held.fetch_add(1, Relaxed);
    }

    fn expire_pending(&mut self) {
        while let Some(front) = self.pending.sets.front() {
            if front.at.elapsed() <= self.limits.max_age {
                break;
            }
            let gone = self
                .pending
                .sets
                .pop_front()
                .map(|p| p.body.len())
                .unwrap_or(0);
            self.pending.bytes -= gone;
            self.counters.pending_dropped.fetch_add(1, Relaxed);
        }
    }

    fn release_pending(&mut self, key: DomainKey, id: u16) -> Result<(), DecodeError> {
        if self.pending.sets.is_empty() {
            return Ok(());
        }
        let (ready, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending.sets)
            .into_iter()
            .partition(|p| p.set.key == key && p.template_id == id);
        self.pending.sets = keep;
        for p in ready {
            self.pending.bytes -= p.body.len();
            let n = self.data_set(&p.set, p.template_id, &p.body)?;
            self.counters.pending_decoded.fetch_add(n as u64, Relaxed);
        }
        Ok(())
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

    /// Persist template state if it changed.
    pub fn save_templates(&mut self) {
        if let Err(e) = self.cache.save_if_dirty() {
            self.counters.template_save_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "could not persist flow templates");
        }
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
        if self.cache.dirty {
            self.save_templates();
        }
        result.map(|_| decoded)
    }
}
