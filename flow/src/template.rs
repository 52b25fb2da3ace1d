//! Template state of NetFlow v9 and IPFIX exporters: templates, options-derived sampling
//! rates and system init times, per (protocol, exporter, observation domain).
//!
//! Persisted as one small JSON file in the data directory (templates are re-announced often
//! but change rarely): the owner takes a [`TemplateCache::snapshot`] when the state changed —
//! cheap, under whatever lock guards the cache — and serializes and writes it elsewhere.
//! Without that, a restart of SOTP would drop every data record until each exporter re-sends
//! its templates — the "template not found" complaint of goflow2#309 and akvorado#697.
//!
//! The state is bounded ([`StateLimits`]): exporters are whoever sends a datagram, so the
//! number of exporters, of template spaces (observation domains) per exporter, of templates
//! and samplers per space, and of template fields in all have caps; what would exceed one is
//! refused and counted, and the exporters already known go on being decoded. Spaces nothing
//! arrives for are forgotten after a while ([`TemplateCache::expire_idle`]), so slots taken
//! by exporters that went away (or never were: spoofed sources) come free.

use super::DecodeError;
use super::bytes::Cursor;
use super::fields::{self, Extras, Field, VARIABLE};
use super::record::{FlowProtocol, FlowRecord, SamplingSource};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Maps looked up per data set: seeded foldhash (the std SipHash showed in profiles; keys
/// come from the network, so a fixed hash is not an option either).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldSpec {
    pub ie: u16,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pen: u32,
    pub len: u16,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A template compiled for decoding.
#[derive(Debug)]
pub struct Template {
    pub specs: Vec<FieldSpec>,
    /// Options templates: how many leading fields are scope fields.
    pub scope_fields: u16,
    pub options: bool,
    steps: Vec<(Field, u16)>,
    /// The shortest a record can be (variable-length fields count one byte); a set's tail
    /// shorter than this is padding.
    min_len: usize,
    /// Without variable-length fields (the usual template) every record has the same length
    /// and each field a fixed offset: (field, offset, length) of the fields we map, so a
    /// record is cut from the set in one step and skipped fields cost nothing.
    fixed: Option<Vec<(Field, u16, u16)>>,
}

impl Template {
    pub fn new(
        protocol: FlowProtocol,
        specs: Vec<FieldSpec>,
        options: bool,
        scope_fields: u16,
    ) -> Self {
        let steps: Vec<(Field, u16)> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // NetFlow v9 scope fields are typed in their own namespace (1 = System, 2 =
                // Interface, ...), not as information elements.
                let in_v9_scope =
                    protocol == FlowProtocol::NetflowV9 && options && i < scope_fields as usize;
                let field = if in_v9_scope {
                    Field::Skip
                } else {
                    fields::field_for(s.pen, s.ie)
                };
                (field, s.len)
            })
            .collect();
        let min_len = specs
            .iter()
            .map(|s| if s.len == VARIABLE { 1 } else { s.len as usize })
            .sum::<usize>()
            .max(1);
        let fixed = fixed_plan(&steps);
        Template {
            specs,
            scope_fields,
            options,
            steps,
            min_len,
            fixed,
        }
    }

    /// Decode every record of a data set body. `uptime` as in `fields::finish`.
    pub fn decode_records(
        &self,
        body: &[u8],
        mut base: FlowRecord,
        export_ms: i64,
        uptime: Option<(u32, i64)>,
        domain: &DomainState,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        let mut c = Cursor::new(body);
        let mut n = 0;
        if let Some(rate) = domain.default_rate {
            base.offer_sampling(rate, SamplingSource::Options);
        }
        let finish = |mut f: FlowRecord, x: Extras, out: &mut Vec<FlowRecord>| {
            if let Some(id) = x.sampler_id
                && let Some(rate) = domain.samplers.get(&id)
            {
                f.offer_sampling(*rate, SamplingSource::Sampler);
            }
            fields::finish(&mut f, &x, export_ms, uptime);
            out.push(f);
        };
        if let Some(plan) = &self.fixed {
            // min_len is the record length here; a shorter tail is padding.
            for record in body.chunks_exact(self.min_len) {
                let mut f = base;
                let mut x = Extras::default();
                for &(field, at, len) in plan {
                    let b = &record[at as usize..at as usize + len as usize];
                    fields::apply(field, b, &mut f, &mut x);
                }
                finish(f, x, out);
                n += 1;
            }
            return Ok(n);
        }
        while c.remaining() >= self.min_len {
            let before = c.remaining();
            let mut f = base;
            let mut x = Extras::default();
            self.walk(&mut c, |field, b| fields::apply(field, b, &mut f, &mut x))?;
            finish(f, x, out);
            n += 1;
            if c.remaining() == before {
                // A template whose records take no bytes (only from a hand-edited template
                // file: the wire decoders refuse zero lengths) would loop forever.
                break;
            }
        }
        Ok(n)
    }

    /// Decode the records of an options data set into what they say about sampling and time.
    pub fn decode_options(&self, body: &[u8]) -> Result<Vec<Extras>, DecodeError> {
        let mut c = Cursor::new(body);
        let mut all = Vec::new();
        while c.remaining() >= self.min_len {
            let mut scratch = FlowRecord::empty(FlowProtocol::Ipfix, IpAddr::from([0, 0, 0, 0]), 0);
            let mut x = Extras::default();
            self.walk(&mut c, |field, b| {
                fields::apply(field, b, &mut scratch, &mut x)
            })?;
            all.push(x);
        }
        Ok(all)
    }

    #[inline]
    fn walk<'a>(
        &self,
        c: &mut Cursor<'a>,
        mut each: impl FnMut(Field, &'a [u8]),
    ) -> Result<(), DecodeError> {
        for &(field, len) in &self.steps {
            let len = if len == VARIABLE {
                match c
                    .u8()
                    .ok_or(DecodeError::Truncated("variable-length field"))?
                {
                    255 => c
                        .u16()
                        .ok_or(DecodeError::Truncated("variable-length field"))?
                        as usize,
                    n => n as usize,
                }
            } else {
                len as usize
            };
            let b = c.take(len).ok_or(DecodeError::Truncated("data record"))?;
            each(field, b);
        }
        Ok(())
    }
}

/// The fixed-offset plan of a template without variable-length fields (see
/// `Template::fixed`); `None` when a field is variable-length or records would be empty.
fn fixed_plan(steps: &[(Field, u16)]) -> Option<Vec<(Field, u16, u16)>> {
    let mut plan = Vec::new();
    let mut at: u16 = 0;
    for &(field, len) in steps {
        if len == VARIABLE {
            return None;
        }
        if field != Field::Skip {
            plan.push((field, at, len));
        }
        at = at.checked_add(len)?;
    }
    (at > 0).then_some(plan)
}

/// Identifies one exporter's template space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainKey {
    pub protocol: FlowProtocol,
    pub exporter: IpAddr,
    pub domain: u32,
}

#[derive(Debug, Default)]
pub struct DomainState {
    pub templates: Map<u16, Arc<Template>>,
    /// From options records without a sampler id (v9 System scope, IPFIX domain scope).
    pub default_rate: Option<u32>,
    /// Sampler / selector id → 1-in-N.
    pub samplers: Map<u64, u32>,
    /// IPFIX systemInitTimeMilliseconds: anchors sysUpTime-relative IEs 21/22.
    pub system_init_ms: Option<i64>,
    /// When a template or data of this space last arrived (ms since the epoch), for
    /// [`TemplateCache::expire_idle`].
    pub last_seen_ms: i64,
    /// When its templates or sampling state last changed (ms since the epoch): which of two
    /// inlets' accounts of a space is newer ([`TemplateCache::apply_shared`]).
    pub updated_ms: i64,
    /// When this process last heard from the exporter about it (0: never, the state came
    /// from another inlet).
    pub heard_ms: i64,
    /// When this process last shared it ([`TemplateCache::take_changed`]).
    pub shared_ms: i64,
}

/// A space this inlet hears from is shared again at least this often, changed or not: a
/// compacted topic loses a space another inlet forgot (its tombstone), and inlets started
/// later find it.
pub const RESHARE_EVERY_MS: i64 = 10 * 60 * 1000;

/// Caps of the template state (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Exporters (addresses) with template state.
    pub exporters: usize,
    /// Template spaces (protocol × observation domain / source id) per exporter.
    pub domains_per_exporter: usize,
    /// Templates per template space.
    pub templates_per_domain: usize,
    /// Sampler ids per template space.
    pub samplers_per_domain: usize,
    /// Fields of all templates together: what bounds the state's memory (a few dozen bytes
    /// each), whatever the caps above multiply to.
    pub fields: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            exporters: 10_000,
            domains_per_exporter: 64,
            templates_per_domain: 512,
            samplers_per_domain: 1024,
            fields: 2_000_000,
        }
    }
}

#[derive(Debug, Default)]
pub struct TemplateCache {
    pub domains: Map<DomainKey, DomainState>,
    /// Template spaces per exporter, for the caps.
    exporters: Map<IpAddr, usize>,
    limits: StateLimits,
    /// Fields of all templates held.
    fields: usize,
    /// The time of the datagram being decoded (ms since the epoch), for `last_seen_ms`.
    pub now_ms: i64,
    pub dirty: bool,
    /// Spaces whose state changed (or that were forgotten) since the last
    /// [`TemplateCache::take_changed`]: what an inlet shares with the others.
    changed: std::collections::HashSet<DomainKey, foldhash::fast::RandomState>,
    /// Whether `changed` is kept (an inlet on the flow bus); off, nothing is tracked.
    track_changes: bool,
    /// Set while another inlet's state is taken in: it is not hearing from the exporter.
    applying: bool,
    /// Templates, options or domains refused by a cap.
    pub refused: u64,
}

/// One template space's state as shared between inlets ([`TemplateCache::take_changed`],
/// [`TemplateCache::apply_shared`]): the JSON of the persisted state's entry, plus when it
/// last changed.
pub struct SharedDomain {
    pub key: DomainKey,
    /// None: the space was forgotten (idle).
    pub json: Option<Vec<u8>>,
}

/// The cache's content at one moment, cheap to take (templates are shared), serialized to
/// JSON outside any lock ([`TemplateSnapshot::to_json`]).
pub struct TemplateSnapshot {
    domains: Vec<DomainSnapshot>,
}

/// One template space of a snapshot.
struct DomainSnapshot {
    key: DomainKey,
    default_rate: Option<u32>,
    samplers: Vec<(u64, u32)>,
    system_init_ms: Option<i64>,
    updated_ms: i64,
    templates: Vec<(u16, Arc<Template>)>,
}

impl TemplateSnapshot {
    pub fn to_json(&self) -> Vec<u8> {
        let saved: Vec<SavedDomain> = self.domains.iter().map(DomainSnapshot::saved).collect();
        serde_json::to_vec_pretty(&saved).expect("template state serializes")
    }
}

impl DomainSnapshot {
    fn of(key: DomainKey, d: &DomainState) -> DomainSnapshot {
        DomainSnapshot {
            key,
            default_rate: d.default_rate,
            samplers: d.samplers.iter().map(|(k, v)| (*k, *v)).collect(),
            system_init_ms: d.system_init_ms,
            updated_ms: d.updated_ms,
            templates: d.templates.iter().map(|(id, t)| (*id, t.clone())).collect(),
        }
    }

    fn saved(&self) -> SavedDomain {
        SavedDomain {
            key: self.key,
            default_rate: self.default_rate,
            samplers: self.samplers.clone(),
            system_init_ms: self.system_init_ms,
            updated_ms: self.updated_ms,
            templates: self
                .templates
                .iter()
                .map(|(id, t)| SavedTemplate {
                    id: *id,
                    options: t.options,
                    scope_fields: t.scope_fields,
                    fields: t.specs.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SavedDomain {
    #[serde(flatten)]
    key: DomainKey,
    #[serde(default)]
    default_rate: Option<u32>,
    #[serde(default)]
    samplers: Vec<(u64, u32)>,
    #[serde(default)]
    system_init_ms: Option<i64>,
    #[serde(default)]
    updated_ms: i64,
    templates: Vec<SavedTemplate>,
}

#[derive(Serialize, Deserialize)]
struct SavedTemplate {
    id: u16,
    #[serde(default)]
    options: bool,
    #[serde(default)]
    scope_fields: u16,
    fields: Vec<FieldSpec>,
}

impl TemplateCache {
    /// An empty cache with these caps.
    pub fn with_limits(limits: StateLimits) -> Self {
        TemplateCache {
            limits,
            ..Default::default()
        }
    }

    /// A cache with the state a snapshot's JSON holds (what the caps allow of it).
    pub fn from_json(json: &[u8], limits: StateLimits) -> Result<Self, String> {
        let saved: Vec<SavedDomain> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut cache = TemplateCache::with_limits(limits);
        // Loaded spaces count as seen now (they expire if nothing comes for them).
        cache.now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        // What this process saved is not news from the exporters: not heard until they send.
        cache.applying = true;
        for d in saved {
            cache.load_saved(d);
        }
        cache.applying = false;
        cache.dirty = false;
        Ok(cache)
    }

    /// Take one saved space's state in (what the caps allow of it).
    fn load_saved(&mut self, d: SavedDomain) {
        let limits = self.limits;
        for (id, rate) in d.samplers.into_iter().take(limits.samplers_per_domain) {
            if let Some(state) = self.admit(d.key) {
                state.samplers.insert(id, rate);
            }
        }
        let Some(state) = self.admit(d.key) else {
            return;
        };
        state.default_rate = d.default_rate;
        state.system_init_ms = d.system_init_ms;
        for t in d.templates.into_iter().take(limits.templates_per_domain) {
            let tpl = Template::new(d.key.protocol, t.fields, t.options, t.scope_fields);
            self.insert(d.key, t.id, tpl);
        }
        if let Some(state) = self.domains.get_mut(&d.key) {
            state.updated_ms = d.updated_ms;
        }
    }

    /// Keep the set of changed spaces from now on ([`TemplateCache::take_changed`]).
    pub fn track_changes(&mut self) {
        self.track_changes = true;
    }

    fn changed(&mut self, key: DomainKey) {
        if self.track_changes {
            self.changed.insert(key);
        }
    }

    /// The spaces that changed since the last call, each as JSON (None: forgotten), for the
    /// other inlets. Taken under the decoder's lock: a space is a few templates.
    pub fn take_changed(&mut self) -> Vec<SharedDomain> {
        let keys: Vec<DomainKey> = self.changed.drain().collect();
        let now = self.now_ms;
        keys.into_iter()
            .map(|key| SharedDomain {
                key,
                json: self.domains.get_mut(&key).map(|d| {
                    d.shared_ms = now;
                    serde_json::to_vec(&DomainSnapshot::of(key, d).saved())
                        .expect("template state serializes")
                }),
            })
            .collect()
    }

    /// Every space as changed again (what was taken could not be shared).
    pub fn mark_all_changed(&mut self) {
        if self.track_changes {
            let keys: Vec<DomainKey> = self.domains.keys().copied().collect();
            self.changed.extend(keys);
        }
    }

    /// Take in a space another inlet shared, unless this one's state of it changed as
    /// recently (the newest change wins). It counts as seen at `now_ms`
    /// (this process's clock: it expires here after the idle time like any other space).
    /// Returns whether anything was taken; what was taken is not shared back.
    pub fn apply_shared(&mut self, json: &[u8], now_ms: i64) -> Result<bool, String> {
        let d: SavedDomain = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if let Some(local) = self.domains.get(&d.key)
            && local.updated_ms >= d.updated_ms
        {
            return Ok(false);
        }
        let key = d.key;
        let was_changed = self.changed.contains(&key);
        let (decoding, heard) = (
            self.now_ms,
            self.domains.get(&key).map_or(0, |l| l.heard_ms),
        );
        (self.now_ms, self.applying) = (d.updated_ms, true);
        self.load_saved(d);
        (self.now_ms, self.applying) = (decoding, false);
        if !was_changed {
            self.changed.remove(&key);
        }
        self.dirty = true;
        let Some(state) = self.domains.get_mut(&key) else {
            return Ok(false);
        };
        state.last_seen_ms = now_ms;
        state.heard_ms = heard;
        Ok(true)
    }

    /// Forget the template spaces nothing arrived for since `before_ms` (their exporters
    /// went away, or never were: a spoofed source). Returns how many went.
    pub fn expire_idle(&mut self, before_ms: i64) -> usize {
        let idle: Vec<DomainKey> = self
            .domains
            .iter()
            .filter(|(_, d)| d.last_seen_ms < before_ms)
            .map(|(k, _)| *k)
            .collect();
        for key in &idle {
            // A tombstone only for what this inlet heard itself: a space it merely took in
            // from another inlet may be alive there.
            let heard = self.domains.get(key).is_some_and(|d| d.heard_ms > 0);
            self.remove_domain(*key);
            if heard {
                self.changed(*key);
            }
        }
        if !idle.is_empty() {
            self.dirty = true;
        }
        idle.len()
    }

    fn remove_domain(&mut self, key: DomainKey) {
        let Some(state) = self.domains.remove(&key) else {
            return;
        };
        self.fields -= state
            .templates
            .values()
            .map(|t| t.specs.len())
            .sum::<usize>();
        if let Some(n) = self.exporters.get_mut(&key.exporter) {
            *n -= 1;
            if *n == 0 {
                self.exporters.remove(&key.exporter);
            }
        }
    }

    /// Fields of all templates held.
    pub fn field_count(&self) -> usize {
        self.fields
    }

    pub fn limits(&self) -> StateLimits {
        self.limits
    }

    pub fn template_count(&self) -> usize {
        self.domains.values().map(|d| d.templates.len()).sum()
    }

    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// The state of `key`, created if the caps allow (else counted in `refused`).
    fn admit(&mut self, key: DomainKey) -> Option<&mut DomainState> {
        if !self.domains.contains_key(&key) {
            let per_exporter = self.exporters.get(&key.exporter).copied();
            let allowed = match per_exporter {
                Some(n) => n < self.limits.domains_per_exporter,
                None => self.exporters.len() < self.limits.exporters,
            };
            if !allowed {
                self.refused += 1;
                return None;
            }
            *self.exporters.entry(key.exporter).or_default() += 1;
            self.domains.insert(key, DomainState::default());
        }
        self.touch(key)
    }

    /// The state of `key` if it has any (data sets are decoded against it; they never
    /// create state, but keep it from expiring).
    pub fn domain(&mut self, key: DomainKey) -> Option<&mut DomainState> {
        self.touch(key)
    }

    /// Mark `key` seen now: heard from its exporter (unless another inlet's state is being
    /// taken in), and due to be shared again after [`RESHARE_EVERY_MS`].
    fn touch(&mut self, key: DomainKey) -> Option<&mut DomainState> {
        let now = self.now_ms;
        let state = self.domains.get_mut(&key)?;
        state.last_seen_ms = now;
        if !self.applying {
            state.heard_ms = now;
            if self.track_changes && now - state.shared_ms >= RESHARE_EVERY_MS {
                self.changed.insert(key);
            }
        }
        Some(state)
    }

    /// Learn a template; returns true if it is new or changed (false also when a cap
    /// refused it: counted in `refused`).
    pub fn insert(&mut self, key: DomainKey, id: u16, tpl: Template) -> bool {
        let max = self.limits.templates_per_domain;
        let (fields, max_fields, now) = (self.fields, self.limits.fields, self.now_ms);
        let Some(state) = self.admit(key) else {
            return false;
        };
        let replaced = state.templates.get(&id).map(|t| t.specs.len());
        let same = state.templates.get(&id).is_some_and(|t| {
            t.specs == tpl.specs && t.options == tpl.options && t.scope_fields == tpl.scope_fields
        });
        if same {
            return false;
        }
        let after = fields - replaced.unwrap_or(0) + tpl.specs.len();
        if (replaced.is_none() && state.templates.len() >= max) || after > max_fields {
            self.refused += 1;
            return false;
        }
        state.templates.insert(id, Arc::new(tpl));
        state.updated_ms = now;
        self.fields = after;
        self.dirty = true;
        self.changed(key);
        true
    }

    pub fn withdraw(&mut self, key: DomainKey, id: Option<u16>) {
        if let Some(state) = self.domains.get_mut(&key) {
            let gone: usize = match id {
                Some(id) => state.templates.remove(&id).map_or(0, |t| t.specs.len()),
                None => state.templates.drain().map(|(_, t)| t.specs.len()).sum(),
            };
            state.updated_ms = self.now_ms;
            self.fields -= gone;
            self.dirty = true;
            self.changed(key);
        }
    }

    /// Record what an options data record says about sampling or system init time.
    pub fn learn_options(&mut self, key: DomainKey, x: &Extras) {
        let (max_samplers, now) = (self.limits.samplers_per_domain, self.now_ms);
        let rate = x.stated_rate();
        let init = x.system_init_ms.map(|i| i as i64);
        if rate.is_none() && init.is_none() {
            return;
        }
        let Some(state) = self.admit(key) else {
            return;
        };
        let mut changed = false;
        let mut refused = false;
        if let Some(rate) = rate {
            changed |= match x.sampler_id {
                Some(id)
                    if state.samplers.contains_key(&id) || state.samplers.len() < max_samplers =>
                {
                    state.samplers.insert(id, rate) != Some(rate)
                }
                Some(_) => {
                    refused = true;
                    false
                }
                None => state.default_rate.replace(rate) != Some(rate),
            };
        }
        if let Some(init) = init
            && state.system_init_ms != Some(init)
        {
            state.system_init_ms = Some(init);
            changed = true;
        }
        if changed {
            state.updated_ms = now;
            self.dirty = true;
            self.changed(key);
        }
        self.refused += u64::from(refused);
    }

    /// The state now, if it changed since the last snapshot (marks it saved).
    pub fn snapshot(&mut self) -> Option<TemplateSnapshot> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(TemplateSnapshot {
            domains: self
                .domains
                .iter()
                .map(|(key, d)| DomainSnapshot::of(*key, d))
                .collect(),
        })
    }

    /// Mark the state unsaved again (a snapshot could not be written).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ie: u16, len: u16) -> FieldSpec {
        FieldSpec { ie, pen: 0, len }
    }

    fn decode(t: &Template, body: &[u8]) -> Vec<FlowRecord> {
        let base = FlowRecord::empty(FlowProtocol::Ipfix, IpAddr::from([192, 0, 2, 1]), 0);
        let mut out = Vec::new();
        t.decode_records(body, base, 1_000, None, &DomainState::default(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn fixed_and_variable_layouts_decode_the_same_records() {
        // src addr, an unmapped 3-byte field, dst port, bytes (2-byte reduced size); records of
        // 11 bytes and 3 bytes of set padding.
        let fixed = Template::new(
            FlowProtocol::Ipfix,
            vec![spec(8, 4), spec(999, 3), spec(11, 2), spec(1, 2)],
            false,
            0,
        );
        assert!(fixed.fixed.is_some());
        let mut body = Vec::new();
        for i in 0..3u8 {
            body.extend_from_slice(&[10, 0, 0, i, 7, 7, 7, 0, 53, 1, i]);
        }
        body.extend_from_slice(&[0, 0, 0]);
        // The same records with the unmapped field variable-length (1-byte length prefix).
        let variable = Template::new(
            FlowProtocol::Ipfix,
            vec![spec(8, 4), spec(999, VARIABLE), spec(11, 2), spec(1, 2)],
            false,
            0,
        );
        assert!(variable.fixed.is_none());
        let mut vbody = Vec::new();
        for i in 0..3u8 {
            vbody.extend_from_slice(&[10, 0, 0, i, 3, 7, 7, 7, 0, 53, 1, i]);
        }
        let a = decode(&fixed, &body);
        assert_eq!(a.len(), 3);
        assert_eq!(a, decode(&variable, &vbody));
        assert_eq!(a[2].src_addr, IpAddr::from([10, 0, 0, 2]));
        assert_eq!((a[2].dst_port, a[2].bytes), (53, 258));
    }

    #[test]
    fn template_state_is_capped_per_exporter_and_in_all() {
        let limits = StateLimits {
            exporters: 3,
            domains_per_exporter: 2,
            templates_per_domain: 4,
            samplers_per_domain: 2,
            fields: 1000,
        };
        let mut cache = TemplateCache::with_limits(limits);
        let key = |e: u8, domain: u32| DomainKey {
            protocol: FlowProtocol::Ipfix,
            exporter: IpAddr::from([192, 0, 2, e]),
            domain,
        };
        let tpl = || Template::new(FlowProtocol::Ipfix, vec![spec(8, 4)], false, 0);
        for id in 256..300 {
            cache.insert(key(1, 0), id, tpl());
        }
        assert_eq!(cache.template_count(), 4, "templates per domain");
        for domain in 0..10 {
            cache.insert(key(1, domain), 256, tpl());
        }
        assert_eq!(cache.domains.len(), 2, "domains per exporter");
        for e in 2..10 {
            cache.insert(key(e, 0), 256, tpl());
        }
        assert_eq!(cache.exporter_count(), 3, "exporters");
        assert!(cache.refused > 0);
        // A known template is still redefined; known exporters keep working.
        assert!(cache.insert(
            key(1, 0),
            256,
            Template::new(FlowProtocol::Ipfix, vec![spec(12, 4)], false, 0)
        ));
        // Snapshots round-trip through JSON, caps included.
        let json = cache.snapshot().unwrap().to_json();
        assert!(cache.snapshot().is_none(), "nothing changed since");
        let back = TemplateCache::from_json(&json, limits).unwrap();
        assert_eq!(back.template_count(), cache.template_count());
        assert_eq!(back.exporter_count(), 3);
        assert!(TemplateCache::from_json(b"{ not json", limits).is_err());
    }

    #[test]
    fn all_fields_together_are_capped_and_idle_spaces_expire() {
        let limits = StateLimits {
            fields: 10,
            ..Default::default()
        };
        let mut cache = TemplateCache::with_limits(limits);
        let key = |e: u8| DomainKey {
            protocol: FlowProtocol::Ipfix,
            exporter: IpAddr::from([192, 0, 2, e]),
            domain: 0,
        };
        let four = || {
            Template::new(
                FlowProtocol::Ipfix,
                (0..4).map(|i| spec(8 + i, 4)).collect(),
                false,
                0,
            )
        };
        cache.now_ms = 1_000;
        assert!(cache.insert(key(1), 256, four()));
        assert!(cache.insert(key(2), 256, four()));
        assert!(!cache.insert(key(3), 256, four()), "12 fields > 10");
        assert_eq!(cache.field_count(), 8);
        cache.withdraw(key(2), None);
        assert_eq!(cache.field_count(), 4);
        // Exporter 1 keeps sending; 2 and 3 went quiet.
        cache.now_ms = 5_000;
        assert!(cache.domain(key(1)).is_some());
        assert_eq!(cache.expire_idle(2_000), 2);
        assert_eq!(cache.exporter_count(), 1);
        assert_eq!(cache.field_count(), 4);
        assert!(cache.insert(key(3), 256, four()), "room again");
    }

    #[test]
    fn a_space_shared_by_one_inlet_decodes_at_another_unless_the_other_knows_newer() {
        let key = DomainKey {
            protocol: FlowProtocol::NetflowV9,
            exporter: IpAddr::from([192, 0, 2, 7]),
            domain: 7,
        };
        let mut a = TemplateCache::default();
        a.track_changes();
        a.now_ms = 1_000;
        assert!(a.insert(
            key,
            256,
            Template::new(key.protocol, vec![spec(8, 4)], false, 0)
        ));
        let rate = Extras {
            sampling_interval: Some(512),
            ..Default::default()
        };
        a.learn_options(key, &rate);
        let shared = a.take_changed();
        assert_eq!(shared.len(), 1);
        assert!(a.take_changed().is_empty(), "taken");
        let json = shared[0].json.clone().unwrap();

        // Another inlet: the template and the rate, and nothing to share back.
        let mut b = TemplateCache::default();
        b.track_changes();
        b.now_ms = 2_000;
        assert_eq!(b.apply_shared(&json, 2_000), Ok(true));
        let d = b.domain(key).unwrap();
        assert_eq!(d.default_rate, Some(512));
        assert_eq!(d.templates[&256].specs, vec![spec(8, 4)]);
        assert!(b.take_changed().is_empty(), "not echoed");
        assert!(b.dirty, "saved to its file");
        // The exporter now sends to b, which learns a new 256: a's older account is ignored.
        b.now_ms = 3_000;
        assert!(b.insert(
            key,
            256,
            Template::new(key.protocol, vec![spec(12, 4)], false, 0)
        ));
        assert_eq!(b.apply_shared(&json, 3_000), Ok(false));
        assert_eq!(
            b.domain(key).unwrap().templates[&256].specs,
            vec![spec(12, 4)]
        );
        // A space forgotten where it was heard is shared as such (a tombstone); damaged JSON
        // is an error.
        a.now_ms = 10_000;
        assert_eq!(a.expire_idle(5_000), 1);
        let gone = a.take_changed();
        assert!(gone[0].json.is_none());
        assert!(b.apply_shared(b"{", 3_000).is_err());
        // A space only taken in from another inlet expires quietly: no tombstone for it.
        let mut c = TemplateCache::default();
        c.track_changes();
        assert_eq!(c.apply_shared(&json, 50_000), Ok(true));
        assert_eq!(
            c.expire_idle(40_000),
            0,
            "seen when taken in, by this clock"
        );
        assert_eq!(c.expire_idle(60_000), 1);
        assert!(c.take_changed().is_empty());
        // Loaded from this process's own file: not heard until the exporter sends again.
        let saved = b.snapshot().unwrap().to_json();
        let mut loaded = TemplateCache::from_json(&saved, StateLimits::default()).unwrap();
        assert_eq!(loaded.domains[&key].heard_ms, 0);
        assert_eq!(
            loaded.domains[&key].updated_ms, 3_000,
            "when it last changed, kept"
        );
        loaded.track_changes();
        assert_eq!(loaded.expire_idle(i64::MAX), 1);
        assert!(loaded.take_changed().is_empty(), "no tombstone for it");
        // A space heard from is shared again every RESHARE_EVERY_MS, changed or not.
        assert_eq!(b.take_changed().len(), 1, "the insert at 3 s");
        b.now_ms = 3_000 + RESHARE_EVERY_MS - 1;
        assert!(b.domain(key).is_some());
        assert!(b.take_changed().is_empty(), "shared just now");
        b.now_ms += 1;
        assert!(b.domain(key).is_some());
        assert_eq!(b.take_changed().len(), 1, "due again");
        // Untracked caches keep no change set.
        let mut d = TemplateCache::default();
        let tpl = Template::new(key.protocol, vec![spec(8, 4)], false, 0);
        assert!(d.insert(key, 256, tpl));
        assert!(d.take_changed().is_empty());
    }

    #[test]
    fn a_template_without_fields_does_not_hang() {
        let empty = Template::new(FlowProtocol::Ipfix, Vec::new(), false, 0);
        assert!(decode(&empty, &[0; 64]).len() <= 64);
    }
}
