//! Open per-minute rollup groups in memory: (minute, tenant, exporter, src/dst address, IP
//! protocol, application) → bytes, packets, flows — summed per flow by the store's writer
//! and written to DuckDB once a minute (`store`).
//!
//! Why a hand-written table: summing a flow into its group is one hash-table update per flow,
//! and with tens of thousands of groups per minute the table does not fit in the cache. With
//! `hashbrown` every update waited for its cache miss — ~60% of the writer's CPU at 2 M
//! flows/s. `Table4` is an open-addressing table (linear probing, at most half full) with
//! one 48-byte slot per group; [`Rollups::add_all`] hashes a whole chunk and prefetches each
//! flow's slot `AHEAD` flows before it is updated, so the misses overlap instead of queuing.
//! Groups whose addresses are all IPv4 (usually nearly all) live there; the others in a
//! `hashbrown` map.
//!
//! The hash is seeded per process (keys come from the network: a fixed hash would let an
//! exporter choose colliding keys).

use super::rawlog::RawFlow;
use std::collections::HashMap;
use std::net::IpAddr;

pub type Sums = [u64; 3];

/// Flows hashed and prefetched ahead of the one being summed.
const AHEAD: usize = 8;

/// One group as written to DuckDB.
pub struct Group {
    pub tenant: u16,
    pub app: u16,
    pub ip_protocol: u8,
    pub minute_ms: i64,
    pub exporter: IpAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sums: Sums,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct KeyWide {
    src: IpAddr,
    dst: IpAddr,
    exporter: IpAddr,
    minute: i64,
    tenant: u16,
    app: u16,
    ip_protocol: u8,
}

/// An IPv4 group key packed in three words; the third is never 0 for a real key (it carries
/// a 1 in its low byte), so an all-zero slot is free.
type Key4 = [u64; 3];

fn key4(f: &RawFlow) -> Option<Key4> {
    let r = &f.record;
    let (IpAddr::V4(e), IpAddr::V4(s), IpAddr::V4(d)) = (r.exporter, r.src_addr, r.dst_addr) else {
        return None;
    };
    let minute = u32::try_from(r.end_ms.div_euclid(60_000)).ok()?;
    Some([
        (s.to_bits() as u64) << 32 | d.to_bits() as u64,
        (e.to_bits() as u64) << 32 | minute as u64,
        (f.tenant as u64) << 48 | (f.app as u64) << 32 | (r.ip_protocol as u64) << 8 | 1,
    ])
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Slot: key words 0..3, sums 3..6.
type Slot = [u64; 6];

/// Open-addressing table of IPv4 groups (see the module doc).
struct Table4 {
    slots: Vec<Slot>,
    len: usize,
    seeds: [u64; 2],
}

impl Default for Table4 {
    fn default() -> Self {
        let s = foldhash::fast::RandomState::default();
        use std::hash::BuildHasher;
        Table4 {
            slots: Vec::new(),
            len: 0,
            seeds: [s.hash_one(1u64) | 1, s.hash_one(2u64) | 1],
        }
    }
}

const MIN_SLOTS: usize = 1024;

impl Table4 {
    #[inline]
    fn hash(&self, k: &Key4) -> u64 {
        let a = folded_multiply(k[0] ^ self.seeds[0], k[1] ^ 0x243f_6a88_85a3_08d3);
        folded_multiply(a ^ k[2], self.seeds[1])
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn prefetch(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[hash as usize & self.mask()];
        prefetch_line(slot.as_ptr());
        prefetch_line(slot[5..].as_ptr());
    }

    /// Add (or with `negate`, take away) `v` to the group `k`.
    #[inline]
    fn update(&mut self, k: &Key4, hash: u64, v: Sums, negate: bool) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot[..3] == k[..] {
                add_sums(&mut slot[3..], v, negate);
                return;
            }
            if slot[2] == 0 {
                slot[..3].copy_from_slice(k);
                add_sums(&mut slot[3..], v, negate);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![[0; 6]; size]);
        let mask = size - 1;
        for slot in old.into_iter().filter(|s| s[2] != 0) {
            let mut i = self.hash(&[slot[0], slot[1], slot[2]]) as usize & mask;
            while self.slots[i][2] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u64], Sums)> {
        self.slots
            .iter()
            .filter(|s| s[2] != 0)
            .map(|s| (&s[..3], [s[3], s[4], s[5]]))
    }

    fn clear(&mut self, keep_slots: usize) {
        if self.slots.len() > keep_slots {
            self.slots = Vec::new();
        } else {
            self.slots.fill([0; 6]);
        }
        self.len = 0;
    }
}

/// Add `v` to `sums` (or with `negate` take it away again). Saturating, like the queries
/// over the rollups: the counts come from the network. A sum that reached the largest value
/// stays there when taken away from (an undone commit), rather than wrap.
#[inline]
fn add_sums(sums: &mut [u64], v: Sums, negate: bool) {
    for (s, v) in sums.iter_mut().zip(v) {
        *s = if negate {
            if *s == u64::MAX {
                *s
            } else {
                s.saturating_sub(v)
            }
        } else {
            s.saturating_add(v)
        };
    }
}

#[inline]
fn prefetch_line(p: *const u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn sums_of(f: &RawFlow) -> Sums {
    [f.record.scaled_bytes(), f.record.scaled_packets(), 1]
}

/// Open rollup groups (bytes, packets, flows per group).
#[derive(Default)]
pub struct Rollups {
    v4: Table4,
    wide: HashMap<KeyWide, Sums, foldhash::fast::RandomState>,
}

impl Rollups {
    /// Sum every flow of `flows` into its group.
    pub fn add_all(&mut self, flows: &[RawFlow]) {
        self.apply(flows, false);
    }

    /// Undo [`Rollups::add_all`] (for flows whose commit failed after they were summed).
    pub fn subtract_all(&mut self, flows: &[RawFlow]) {
        self.apply(flows, true);
    }

    fn apply(&mut self, flows: &[RawFlow], negate: bool) {
        // Keys and hashes of the next AHEAD flows, their slots already being fetched.
        let mut ring: [(Option<Key4>, u64); AHEAD] = [(None, 0); AHEAD];
        let load = |table: &Table4, i: usize| {
            let key = flows.get(i).and_then(key4);
            let hash = key.as_ref().map_or(0, |k| table.hash(k));
            if key.is_some() {
                table.prefetch(hash);
            }
            (key, hash)
        };
        for (i, entry) in ring.iter_mut().enumerate() {
            *entry = load(&self.v4, i);
        }
        for (i, f) in flows.iter().enumerate() {
            let (key, hash) = std::mem::replace(&mut ring[i % AHEAD], load(&self.v4, i + AHEAD));
            match key {
                Some(k) => self.v4.update(&k, hash, sums_of(f), negate),
                None => self.add_wide(f, negate),
            }
        }
    }

    fn add_wide(&mut self, f: &RawFlow, negate: bool) {
        let r = &f.record;
        let key = KeyWide {
            src: r.src_addr,
            dst: r.dst_addr,
            exporter: r.exporter,
            minute: r.end_ms.div_euclid(60_000),
            tenant: f.tenant,
            app: f.app,
            ip_protocol: r.ip_protocol,
        };
        add_sums(self.wide.entry(key).or_default(), sums_of(f), negate);
    }

    pub fn len(&self) -> usize {
        self.v4.len + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The groups that hold flows (one whose flows were all subtracted again holds none).
    pub fn groups(&self) -> Vec<Group> {
        let v4 = self.v4.iter().map(|(k, sums)| Group {
            tenant: (k[2] >> 48) as u16,
            app: (k[2] >> 32) as u16,
            ip_protocol: (k[2] >> 8) as u8,
            minute_ms: (k[1] as u32) as i64 * 60_000,
            exporter: IpAddr::V4(((k[1] >> 32) as u32).into()),
            src: IpAddr::V4(((k[0] >> 32) as u32).into()),
            dst: IpAddr::V4((k[0] as u32).into()),
            sums,
        });
        let wide = self.wide.iter().map(|(k, v)| Group {
            tenant: k.tenant,
            app: k.app,
            ip_protocol: k.ip_protocol,
            minute_ms: k.minute * 60_000,
            exporter: k.exporter,
            src: k.src,
            dst: k.dst,
            sums: *v,
        });
        v4.chain(wide).filter(|g| g.sums[2] > 0).collect()
    }

    /// Forget every group; after a burst of groups (more than `burst`) give the memory back
    /// rather than keep it for good.
    pub fn clear(&mut self, burst: usize) {
        self.v4.clear(burst * 2);
        self.wide.clear();
        if self.wide.capacity() > burst {
            self.wide.shrink_to(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotp_flow::{FlowProtocol, FlowRecord};
    use std::net::Ipv4Addr;

    fn flow(i: u32, minute: i64, v6: bool) -> RawFlow {
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let mut record = FlowRecord::empty(FlowProtocol::NetflowV9, exporter, 0);
        record.end_ms = minute * 60_000 + 5_000;
        record.src_addr = if v6 {
            format!("2001:db8::{:x}", i % 97).parse().unwrap()
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i % 997))
        };
        record.dst_addr = IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + i % 13));
        record.ip_protocol = if i.is_multiple_of(3) { 17 } else { 6 };
        record.bytes = 100 + i as u64;
        record.packets = 1 + i as u64 % 4;
        record.sampling_rate = 1;
        RawFlow {
            record,
            tenant: (i % 2) as u16,
            app: (i % 5) as u16,
        }
    }

    type Expected = std::collections::BTreeMap<(u16, u16, u8, i64, String, String), Sums>;

    fn expected(flows: &[RawFlow]) -> Expected {
        let mut m = Expected::new();
        for f in flows {
            let r = &f.record;
            let e = m
                .entry((
                    f.tenant,
                    f.app,
                    r.ip_protocol,
                    r.end_ms.div_euclid(60_000) * 60_000,
                    r.src_addr.to_string(),
                    r.dst_addr.to_string(),
                ))
                .or_default();
            e[0] += r.scaled_bytes();
            e[1] += r.scaled_packets();
            e[2] += 1;
        }
        m
    }

    fn actual(r: &Rollups) -> Expected {
        let mut m = Expected::new();
        for g in r.groups() {
            assert_eq!(g.exporter, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
            let prev = m.insert(
                (
                    g.tenant,
                    g.app,
                    g.ip_protocol,
                    g.minute_ms,
                    g.src.to_string(),
                    g.dst.to_string(),
                ),
                g.sums,
            );
            assert!(prev.is_none(), "a group listed twice");
        }
        m
    }

    #[test]
    fn sums_equal_a_plain_map_across_growth_families_and_minutes() {
        // Enough groups to grow the table several times, IPv6 groups in the other map.
        let flows: Vec<RawFlow> = (0..60_000)
            .map(|i| flow(i, 29_000_000 + (i / 20_000) as i64, i % 50 == 0))
            .collect();
        let mut r = Rollups::default();
        for chunk in flows.chunks(4096) {
            r.add_all(chunk);
        }
        let want = expected(&flows);
        assert_eq!(r.len(), want.len());
        assert_eq!(actual(&r), want);
    }

    #[test]
    fn subtract_undoes_add_and_empty_groups_are_not_listed() {
        let kept: Vec<RawFlow> = (0..5_000)
            .map(|i| flow(i, 29_000_000, i % 7 == 0))
            .collect();
        let undone: Vec<RawFlow> = (5_000..9_000)
            .map(|i| flow(i * 13, 29_000_001, i % 7 == 0))
            .collect();
        let mut r = Rollups::default();
        r.add_all(&kept);
        r.add_all(&undone);
        r.subtract_all(&undone);
        assert_eq!(actual(&r), expected(&kept));
    }

    #[test]
    fn clear_forgets_and_the_table_is_usable_again() {
        let flows: Vec<RawFlow> = (0..3_000).map(|i| flow(i, 29_000_000, false)).collect();
        let mut r = Rollups::default();
        r.add_all(&flows);
        r.clear(1 << 20);
        assert!(r.is_empty() && r.groups().is_empty());
        r.add_all(&flows[..10]);
        assert_eq!(actual(&r), expected(&flows[..10]));
        r.clear(16); // a "burst": the memory goes back
        assert!(r.v4.slots.is_empty());
        r.add_all(&flows);
        assert_eq!(actual(&r), expected(&flows));
    }

    #[test]
    fn distinct_keys_that_differ_in_one_field_stay_apart() {
        let base = flow(1, 29_000_000, false);
        let mut variants = vec![base];
        let mut v = base;
        v.tenant = 7;
        variants.push(v);
        let mut v = base;
        v.app = 9;
        variants.push(v);
        let mut v = base;
        v.record.ip_protocol = 1;
        variants.push(v);
        let mut v = base;
        v.record.exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        variants.push(v);
        let mut v = base;
        v.record.end_ms += 60_000;
        variants.push(v);
        let mut r = Rollups::default();
        r.add_all(&variants);
        assert_eq!(r.len(), variants.len());
    }
}
