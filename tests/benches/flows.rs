//! Flow collection benchmark: SOTP against the collectors operators run today, on the same
//! datagrams, in one run.
//!
//! For NetFlow v9 and IPFIX: SOTP (decode, tenant + application enrichment, per-minute
//! rollups, raw flows appended to the raw flow log and rollups written to DuckDB — the full
//! pipeline, in this process; the data directory is a temporary one on the same disk)
//! vs nfcapd (nfdump), nfacctd (pmacct, print plugin aggregating by protocol) and goflow2
//! (JSON to a file). For sFlow v5: SOTP vs sfacctd and goflow2. Per collector, a ladder of
//! send rates (flows/s); at each rung [`RUNS`] runs of a few seconds; a rung is lossless when
//! the median run lost nothing, and the ladder stops at the first lossy rung. Reported:
//!
//! - *lossless flows/s*: the highest lossless rung (`≥` when the top rung held);
//! - *flows per CPU-second*: flows the collector received ÷ its user + system CPU time
//!   (process tree), median of the runs at that rung — the figure that holds up on a shared
//!   2-core machine where the sender competes for the same cores;
//! - ratios against nfcapd (sFlow: sfacctd).
//!
//! `goflow2` writes JSON to a file (its default; records counted as lines); `goflow2-bin` is
//! its cheapest mode, protobuf to /dev/null, records counted from its Prometheus metrics.
//!
//! `sotp-rollups` is SOTP with `store_raw = false` (decode, enrichment, rollups, no raw rows):
//! the difference to `sotp` is what keeping every raw flow costs. `recv-only` is SOTP's
//! receive path alone (its listener socket, `recvmmsg` batches, datagrams dropped unread): the
//! kernel's and the system call's share, a ceiling on the flows per CPU-second of any
//! collector that receives through a socket on this machine.
//!
//! Also decode-only records/s on one core (the `sotp-flow` decoder alone), and with `--soak
//! SECS` the resident memory of SOTP's pipeline at a steady rate (sampled every 10 s).
//!
//! The datagrams are generated here: v9 with 30 records per datagram, IPFIX 21, sFlow 10 flow
//! samples + 1 counter sample, 30,000 distinct flows cycled, every record 1 packet (so
//! pmacct's packet sum is a record count), templates re-sent every 1,000 datagrams. The sender
//! is a thread of this process; its CPU is measured per thread and not charged to SOTP.
//!
//! `cargo bench -p sotp-tests --bench flows -- [--runs N] [--seconds S] [--only v9,ipfix,sflow]
//!  [--peers sotp,sotp-rollups,nfcapd,nfacctd,sfacctd,goflow2,goflow2-bin,recv-only]
//!  [--rates 250000,500000,...] [--soak SECS] [--soak-rate FLOWS_PER_S]
//!  [--rollup-memory MINUTES]`
//!
//! `--rollup-memory` runs the flow store alone through simulated minutes of 30,000 rollup
//! groups each and prints its memory (RSS and what DuckDB accounts for) as the rollup table
//! grows.
//!
//! `SOTP_BENCH_THREADS=1` prints SOTP's CPU per thread; `SOTP_BENCH_FLOW_CONFIG` adds lines
//! to its `[runtime.flows]` table.
//!
//! Peers: nfdump, pmacct and goflow2 v2.2.6 (`go install`, into ~/.cache/sotp/deps/bin) —
//! scripts/setup installs them; a missing peer is skipped with a note.

use sotp_runtime::flow::config::FlowConfig;
use sotp_runtime::flow::service::FlowService;
use sotp_runtime::flow::{DecodeCounters, DecodeOutput, FlowDecoder, TemplateCache};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RUNS: usize = 3;
const DISTINCT_FLOWS: usize = 30_000;
const TEMPLATE_EVERY: usize = 1_000;

// ---------------------------------------------------------------------------------------
// Datagram generation
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Proto {
    V9,
    Ipfix,
    Sflow,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::V9 => "NetFlow v9",
            Proto::Ipfix => "IPFIX",
            Proto::Sflow => "sFlow v5",
        }
    }
    fn records_per_datagram(self) -> usize {
        match self {
            Proto::V9 => 30,
            Proto::Ipfix => 21,
            Proto::Sflow => 10,
        }
    }
}

/// The datagrams of one protocol: a template datagram (v9/IPFIX) and data datagrams.
struct Capture {
    proto: Proto,
    template: Option<Vec<u8>>,
    data: Vec<Vec<u8>>,
}

struct FlowSpec {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    bytes: u32,
}

fn flow_spec(i: usize) -> FlowSpec {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let ports = [443u16, 80, 53, 22, 5201, 8080, 123, 25];
    FlowSpec {
        src: [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
        dst: [192, 168, (h >> 8) as u8 % 64, (h >> 16) as u8],
        sport: 1024 + (h % 60_000) as u16,
        dport: ports[(h >> 24) as usize % ports.len()],
        proto: if (h >> 32).is_multiple_of(4) { 17 } else { 6 },
        bytes: 40 + (h >> 40) as u32 % 1460,
    }
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn set16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

const V9_FIELDS: [(u16, u16); 13] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 2),
    (14, 2),
    (1, 4),
    (2, 4),
    (22, 4),
    (21, 4),
];

fn v9_header(count: u16, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(1200);
    put16(&mut b, 9);
    put16(&mut b, count);
    put32(&mut b, 3_600_000);
    put32(&mut b, now_secs());
    put32(&mut b, seq);
    put32(&mut b, 1);
    b
}

/// A template set (v9 set id 0, IPFIX set id 2) defining template 256 with `fields`.
fn template_set(set_id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut t = Vec::new();
    put16(&mut t, set_id);
    put16(&mut t, (8 + fields.len() * 4) as u16);
    put16(&mut t, 256);
    put16(&mut t, fields.len() as u16);
    for (ty, len) in fields {
        put16(&mut t, *ty);
        put16(&mut t, *len);
    }
    t
}

/// The fields v9 and IPFIX records share (the first 11 of both templates).
fn put_common_fields(b: &mut Vec<u8>, f: &FlowSpec) {
    b.extend_from_slice(&f.src);
    b.extend_from_slice(&f.dst);
    put16(b, f.sport);
    put16(b, f.dport);
    b.extend_from_slice(&[f.proto, if f.proto == 6 { 0x18 } else { 0 }, 0]);
    put16(b, 1);
    put16(b, 2);
    put32(b, f.bytes);
    put32(b, 1);
}

fn gen_v9() -> Capture {
    let mut t = v9_header(1, 0);
    t.extend_from_slice(&template_set(0, &V9_FIELDS));
    let per = Proto::V9.records_per_datagram();
    let data = (0..DISTINCT_FLOWS / per)
        .map(|d| {
            let mut b = v9_header(per as u16, d as u32);
            let set_at = b.len();
            put16(&mut b, 256);
            put16(&mut b, 0);
            for i in 0..per {
                put_common_fields(&mut b, &flow_spec(d * per + i));
                put32(&mut b, 3_598_000);
                put32(&mut b, 3_599_000);
            }
            while !(b.len() - set_at).is_multiple_of(4) {
                b.push(0);
            }
            let len = (b.len() - set_at) as u16;
            set16(&mut b, set_at + 2, len);
            b
        })
        .collect();
    Capture {
        proto: Proto::V9,
        template: Some(t),
        data,
    }
}

const IPFIX_FIELDS: [(u16, u16); 13] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 2),
    (14, 2),
    (1, 4),
    (2, 4),
    (152, 8),
    (153, 8),
];

fn ipfix_message(seq: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + body.len());
    put16(&mut b, 10);
    put16(&mut b, (16 + body.len()) as u16);
    put32(&mut b, now_secs());
    put32(&mut b, seq);
    put32(&mut b, 1);
    b.extend_from_slice(body);
    b
}

fn gen_ipfix() -> Capture {
    let template = ipfix_message(0, &template_set(2, &IPFIX_FIELDS));
    let now_ms = u64::from(now_secs()) * 1000;
    let per = Proto::Ipfix.records_per_datagram();
    let data = (0..DISTINCT_FLOWS / per)
        .map(|d| {
            let mut set = Vec::with_capacity(1000);
            put16(&mut set, 256);
            put16(&mut set, 0);
            for i in 0..per {
                put_common_fields(&mut set, &flow_spec(d * per + i));
                put64(&mut set, now_ms - 2000);
                put64(&mut set, now_ms - 1000);
            }
            let len = set.len() as u16;
            set16(&mut set, 2, len);
            ipfix_message((d * per) as u32, &set)
        })
        .collect();
    Capture {
        proto: Proto::Ipfix,
        template: Some(template),
        data,
    }
}

/// Ethernet + IPv4 + TCP/UDP headers of a sampled packet (54 bytes; UDP padded to match).
fn packet_header(f: &FlowSpec) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    put16(&mut p, 0x0800);
    let total = f.bytes.max(40) as u16;
    p.extend_from_slice(&[0x45, 0]);
    put16(&mut p, total);
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, f.proto, 0, 0]);
    p.extend_from_slice(&f.src);
    p.extend_from_slice(&f.dst);
    put16(&mut p, f.sport);
    put16(&mut p, f.dport);
    if f.proto == 6 {
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        put16(&mut p, total - 20);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&[0; 12]);
    }
    p
}

fn gen_sflow() -> Capture {
    let per = Proto::Sflow.records_per_datagram();
    let data = (0..DISTINCT_FLOWS / per)
        .map(|d| {
            let mut b = Vec::with_capacity(1400);
            put32(&mut b, 5);
            put32(&mut b, 1);
            b.extend_from_slice(&[10, 0, 0, 1]);
            put32(&mut b, 0);
            put32(&mut b, d as u32);
            put32(&mut b, 3_600_000);
            put32(&mut b, per as u32 + 1);
            for i in 0..per {
                let f = flow_spec(d * per + i);
                let header = packet_header(&f);
                let mut rec = Vec::new();
                put32(&mut rec, 1); // raw packet header
                put32(&mut rec, 16 + header.len().next_multiple_of(4) as u32);
                put32(&mut rec, 1); // ethernet
                put32(&mut rec, f.bytes.max(40) + 14);
                put32(&mut rec, 0);
                put32(&mut rec, header.len() as u32);
                rec.extend_from_slice(&header);
                while !rec.len().is_multiple_of(4) {
                    rec.push(0);
                }
                put32(&mut b, 1); // flow sample
                put32(&mut b, 32 + rec.len() as u32);
                put32(&mut b, (d * per + i) as u32);
                put32(&mut b, 3);
                put32(&mut b, 1); // sampling rate 1: every sample is one packet
                put32(&mut b, (d * per + i) as u32);
                put32(&mut b, 0);
                put32(&mut b, 3);
                put32(&mut b, 4);
                put32(&mut b, 1);
                b.extend_from_slice(&rec);
            }
            // One counter sample: generic interface counters.
            put32(&mut b, 2);
            put32(&mut b, 12 + 8 + 88);
            put32(&mut b, d as u32);
            put32(&mut b, 3);
            put32(&mut b, 1);
            put32(&mut b, 1);
            put32(&mut b, 88);
            put32(&mut b, 3);
            put32(&mut b, 6);
            put64(&mut b, 10_000_000_000);
            put32(&mut b, 1);
            put32(&mut b, 3);
            put64(&mut b, d as u64 * 1000);
            for _ in 0..6 {
                put32(&mut b, 0);
            }
            put64(&mut b, d as u64 * 2000);
            for _ in 0..5 {
                put32(&mut b, 0);
            }
            put32(&mut b, 0);
            b
        })
        .collect();
    Capture {
        proto: Proto::Sflow,
        template: None,
        data,
    }
}

/// Check the generated datagrams with SOTP's decoder: every record decodes.
fn verify(c: &Capture) {
    let mut d = FlowDecoder::new(
        TemplateCache::default(),
        Arc::new(DecodeCounters::default()),
    );
    let mut out = DecodeOutput::default();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Some(t) = &c.template {
        d.decode(src, 0, t, &mut out).unwrap();
    }
    for dg in &c.data {
        d.decode(src, 0, dg, &mut out).unwrap();
    }
    assert_eq!(
        out.flows.len(),
        c.data.len() * c.proto.records_per_datagram(),
        "{}: generated records decode",
        c.proto.name()
    );
}

// ---------------------------------------------------------------------------------------
// Decode only
// ---------------------------------------------------------------------------------------

fn decode_only(c: &Capture) -> f64 {
    let mut d = FlowDecoder::new(
        TemplateCache::default(),
        Arc::new(DecodeCounters::default()),
    );
    let mut out = DecodeOutput::default();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Some(t) = &c.template {
        d.decode(src, 0, t, &mut out).unwrap();
    }
    let mut records = 0usize;
    let started = Instant::now();
    let cpu0 = thread_cpu();
    while started.elapsed() < Duration::from_secs(2) {
        for dg in &c.data {
            let _ = d.decode(src, 0, dg, &mut out);
            records += out.flows.len();
            out.flows.clear();
            out.interfaces.clear();
        }
    }
    records as f64 / (thread_cpu() - cpu0).as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------------------

fn rusage(who: i32) -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU seconds (user + system) by thread name in this process (SOTP_BENCH_THREADS=1 prints
/// it per run).
fn thread_times() -> String {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by: BTreeMap<String, [f64; 2]> = BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let name = comm.trim().trim_end_matches(char::is_numeric).to_string();
        let e = by.entry(name).or_default();
        e[0] += ticks(11) as f64 / tick;
        e[1] += ticks(12) as f64 / tick;
    }
    by.iter()
        .filter(|(_, s)| s[0] + s[1] > 0.0)
        .map(|(n, s)| {
            format!(
                "{n} {:.2}s ({:.2} user + {:.2} sys)",
                s[0] + s[1],
                s[0],
                s[1]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// User + system time of a process and its children (pmacct forks its plugins).
fn tree_cpu(pid: u32) -> Duration {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let this: u32 = entry
            .file_name()
            .to_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if this == pid || ppid == pid {
            let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks += ut + st;
        }
    }
    Duration::from_secs_f64(ticks as f64 / tick)
}

// ---------------------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------------------

/// Send `flows` flows at `rate` flows/s to `port`, cycling the capture; returns the flows sent
/// and the sender thread's CPU time.
fn send(c: &Capture, port: u16, rate: u64, flows: u64) -> (u64, Duration) {
    let cpu0 = thread_cpu();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = socket2::SockRef::from(&socket).set_send_buffer_size(8 << 20);
    let per = c.proto.records_per_datagram() as u64;
    let datagrams = flows / per;
    let dgram_rate = rate as f64 / per as f64;
    let to = ("127.0.0.1", port);
    if let Some(t) = &c.template {
        socket.send_to(t, to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < datagrams {
        let due = ((started.elapsed().as_secs_f64() * dgram_rate) as u64).min(datagrams);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due {
            let i = sent as usize;
            if i.is_multiple_of(TEMPLATE_EVERY)
                && i > 0
                && let Some(t) = &c.template
            {
                let _ = socket.send_to(t, to);
            }
            // ENOBUFS on loopback under pressure: try again rather than count a loss here.
            while socket.send_to(&c.data[i % c.data.len()], to).is_err() {
                std::thread::yield_now();
            }
            sent += 1;
        }
    }
    (sent * per, thread_cpu() - cpu0)
}

// ---------------------------------------------------------------------------------------
// Collectors
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Peer {
    Sotp,
    /// SOTP with `store_raw = false`: rollups only — shows what the raw flow store costs.
    SotpRollups,
    Nfcapd,
    Nfacctd,
    Sfacctd,
    Goflow2,
    /// goflow2 in its cheapest mode: protobuf to /dev/null, records counted from its metrics.
    Goflow2Bin,
    /// SOTP's receive path alone (its listener socket and `recvmmsg` batches, datagrams
    /// counted and dropped): a ceiling on any socket-based collector's flows per CPU-second.
    RecvOnly,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Sotp => "sotp",
            Peer::SotpRollups => "sotp-rollups",
            Peer::Nfcapd => "nfcapd",
            Peer::Nfacctd => "nfacctd",
            Peer::Sfacctd => "sfacctd",
            Peer::Goflow2 => "goflow2",
            Peer::Goflow2Bin => "goflow2-bin",
            Peer::RecvOnly => "recv-only",
        }
    }
    fn handles(self, p: Proto) -> bool {
        match self {
            Peer::Sotp | Peer::SotpRollups | Peer::Goflow2 | Peer::Goflow2Bin | Peer::RecvOnly => {
                true
            }
            Peer::Nfcapd | Peer::Nfacctd => p != Proto::Sflow,
            Peer::Sfacctd => p == Proto::Sflow,
        }
    }
    fn binary(self) -> Option<PathBuf> {
        let name = match self {
            Peer::Sotp | Peer::SotpRollups | Peer::RecvOnly => return Some(PathBuf::new()),
            Peer::Goflow2Bin => "goflow2",
            p => p.name(),
        };
        let home = std::env::var("HOME").unwrap_or_default();
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .map(PathBuf::from)
            .chain([
                PathBuf::from(&home).join(".cache/sotp/deps/bin"),
                PathBuf::from(&home).join("go/bin"),
                PathBuf::from("/usr/sbin"),
            ])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }
}

struct Measured {
    sent: u64,
    received: u64,
    cpu: Duration,
}

/// A collector being measured: started, fed, drained, read back.
trait Collector {
    fn port(&self) -> u16;
    /// CPU time so far.
    fn cpu(&self) -> Duration;
    /// Stop and count the flows it received.
    fn finish(self: Box<Self>) -> u64;
}

struct SotpCollector {
    service: Arc<FlowService>,
    _dir: tempfile::TempDir,
    cpu0: Duration,
}

impl Collector for SotpCollector {
    fn port(&self) -> u16 {
        self.service.bound[0].port()
    }
    fn cpu(&self) -> Duration {
        rusage(libc::RUSAGE_SELF) - self.cpu0
    }
    fn finish(self: Box<Self>) -> u64 {
        if std::env::var_os("SOTP_BENCH_THREADS").is_some() {
            eprintln!("    threads: {}", thread_times());
        }
        self.service.shutdown();
        self.service
            .store
            .counters
            .rows
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The receive floor: SOTP's listener socket and batch receive on one thread, nothing else.
struct RecvOnlyCollector {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The thread's CPU time in ns, and the records received, as of its last batch.
    cpu_ns: Arc<std::sync::atomic::AtomicU64>,
    records: Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RecvOnlyCollector {
    fn start(records_per_datagram: u64) -> Box<dyn Collector> {
        use std::sync::atomic::Ordering::Relaxed;
        let socket =
            sotp_runtime::flow::listener::bind("127.0.0.1:0".parse().unwrap(), 8 << 20).unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpu_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let records = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, c, r) = (stop.clone(), cpu_ns.clone(), records.clone());
        let thread = std::thread::spawn(move || {
            let mut batch = sotp_runtime::flow::listener::Batch::default();
            let cpu0 = thread_cpu();
            while !s.load(Relaxed) {
                if batch.receive(&socket).is_ok() {
                    // Data datagrams only (templates are the short ones).
                    let data = batch.iter().filter(|(_, d)| d.len() > 400).count() as u64;
                    r.fetch_add(data * records_per_datagram, Relaxed);
                }
                c.store((thread_cpu() - cpu0).as_nanos() as u64, Relaxed);
            }
        });
        Box::new(RecvOnlyCollector {
            port,
            stop,
            cpu_ns,
            records,
            thread,
        })
    }
}

impl Collector for RecvOnlyCollector {
    fn port(&self) -> u16 {
        self.port
    }
    fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn finish(self: Box<Self>) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
        self.records.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn start_sotp(store_raw: bool) -> Box<dyn Collector> {
    Box::new(start_sotp_service(store_raw))
}

fn start_sotp_service(store_raw: bool) -> SotpCollector {
    let dir = tempfile::tempdir().unwrap();
    let mut extra = std::env::var("SOTP_BENCH_FLOW_CONFIG").unwrap_or_default();
    if !store_raw {
        extra.push_str("\nstore_raw = false\n");
    }
    let config: FlowConfig = toml::from_str(&format!(
        "netflow = [\"127.0.0.1:0\"]\ndefault_tenant = \"bench\"\n{extra}\n"
    ))
    .unwrap();
    let service = FlowService::start(config, dir.path()).unwrap();
    SotpCollector {
        service,
        _dir: dir,
        cpu0: rusage(libc::RUSAGE_SELF),
    }
}

/// What DuckDB says it holds (its buffer pool and allocations), MiB.
fn duckdb_mib(store: &sotp_runtime::flow::store::FlowStore) -> f64 {
    store
        .reader()
        .and_then(|c| {
            c.query_row(
                "SELECT sum(memory_usage_bytes)::DOUBLE FROM duckdb_memory()",
                [],
                |r| r.get::<_, f64>(0),
            )
        })
        .unwrap_or(f64::NAN)
        / (1024.0 * 1024.0)
}

struct ProcessCollector {
    peer: Peer,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// goflow2's Prometheus endpoint.
    metrics_port: u16,
}

impl Collector for ProcessCollector {
    fn port(&self) -> u16 {
        self.port
    }
    fn cpu(&self) -> Duration {
        tree_cpu(self.child.id())
    }
    fn finish(mut self: Box<Self>) -> u64 {
        let from_metrics =
            (self.peer == Peer::Goflow2Bin).then(|| goflow2_records(self.metrics_port));
        // pmacct exits (and flushes) on SIGINT; its core process ignores SIGTERM.
        let signal = match self.peer {
            Peer::Nfacctd | Peer::Sfacctd => "-INT",
            _ => "-TERM",
        };
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("    {} did not exit on {signal}; killed", self.peer.name());
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        from_metrics.unwrap_or_else(|| count_output(self.peer, self.dir.path()))
    }
}

/// Flow records goflow2 decoded: NetFlow/IPFIX data records plus sFlow flow samples.
fn goflow2_records(metrics_port: u16) -> u64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            (l.starts_with("goflow2_flow_process_nf_flowset_records_total")
                && l.contains("type=\"DataFlowSet\""))
                || (l.starts_with("goflow2_flow_process_sf_samples_total")
                    && (l.contains("type=\"FlowSample\"")
                        || l.contains("type=\"ExpandedFlowSample\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_process(peer: Peer, bin: &Path) -> Box<dyn Collector> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let d = dir.path();
    let metrics_port = free_udp_port();
    let mut cmd = Command::new(bin);
    match peer {
        Peer::Nfcapd => {
            std::fs::create_dir(d.join("flows")).unwrap();
            cmd.args(["-b", "127.0.0.1", "-p", &port.to_string(), "-t", "3600"])
                .args(["-B", "8388608", "-w"])
                .arg(d.join("flows"));
        }
        Peer::Nfacctd | Peer::Sfacctd => {
            let prefix = if peer == Peer::Nfacctd {
                "nfacctd"
            } else {
                "sfacctd"
            };
            let conf = format!(
                "daemonize: false\n{prefix}_ip: 127.0.0.1\n{prefix}_port: {port}\n\
                 {prefix}_renormalize: false\n{prefix}_pipe_size: 8388608\n\
                 plugins: print[p]\naggregate[p]: proto\nprint_output[p]: csv\n\
                 print_output_file[p]: {}/out.csv\nprint_output_file_append[p]: true\n\
                 print_refresh_time[p]: 1\nplugin_buffer_size[p]: 102400\nplugin_pipe_size[p]: 10240000\n",
                d.display()
            );
            std::fs::write(d.join("pmacct.conf"), conf).unwrap();
            cmd.arg("-f").arg(d.join("pmacct.conf"));
        }
        Peer::Goflow2 => {
            cmd.arg("-listen")
                .arg(format!(
                    "netflow://127.0.0.1:{port},sflow://127.0.0.1:{}",
                    port + 1
                ))
                .args(["-format", "json", "-loglevel", "error"])
                .arg("-addr")
                .arg(format!("127.0.0.1:{metrics_port}"))
                .arg("-transport.file")
                .arg(d.join("out.json"));
        }
        Peer::Goflow2Bin => {
            cmd.arg("-listen")
                .arg(format!(
                    "netflow://127.0.0.1:{port},sflow://127.0.0.1:{}",
                    port + 1
                ))
                .args(["-format", "bin", "-loglevel", "error"])
                .arg("-addr")
                .arg(format!("127.0.0.1:{metrics_port}"))
                .args(["-transport.file", "/dev/null"]);
        }
        Peer::Sotp | Peer::SotpRollups | Peer::RecvOnly => unreachable!(),
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    std::thread::sleep(Duration::from_millis(800));
    Box::new(ProcessCollector {
        peer,
        child,
        port,
        dir,
        metrics_port,
    })
}

fn count_output(peer: Peer, dir: &Path) -> u64 {
    match peer {
        Peer::Nfcapd => {
            let out = Command::new("nfdump")
                .arg("-R")
                .arg(dir.join("flows"))
                .arg("-I")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Flows: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        }
        Peer::Nfacctd | Peer::Sfacctd => {
            let text = std::fs::read_to_string(dir.join("out.csv")).unwrap_or_default();
            let mut packets_col = None;
            let mut total = 0;
            for line in text.lines() {
                let cols: Vec<&str> = line.split(',').collect();
                if let Some(i) = cols.iter().position(|c| *c == "PACKETS") {
                    packets_col = Some(i);
                    continue;
                }
                if let Some(v) = packets_col.and_then(|i| cols.get(i)?.parse::<u64>().ok()) {
                    total += v;
                }
            }
            total
        }
        Peer::Goflow2 => {
            let bytes = std::fs::read(dir.join("out.json")).unwrap_or_default();
            bytes.iter().filter(|b| **b == b'\n').count() as u64
        }
        Peer::Sotp | Peer::SotpRollups | Peer::Goflow2Bin | Peer::RecvOnly => unreachable!(),
    }
}

fn start(peer: Peer, bin: &Path, proto: Proto) -> Box<dyn Collector> {
    match peer {
        Peer::Sotp => start_sotp(true),
        Peer::SotpRollups => start_sotp(false),
        Peer::RecvOnly => RecvOnlyCollector::start(proto.records_per_datagram() as u64),
        _ => start_process(peer, bin),
    }
}

/// Wait until the collector's CPU time stops moving: it has drained its socket.
fn settle(c: &dyn Collector) {
    let mut last = c.cpu();
    let mut idle = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        let now = c.cpu();
        if now - last < Duration::from_millis(10) {
            idle += 1;
            if idle >= 4 {
                return;
            }
        } else {
            idle = 0;
        }
        last = now;
    }
}

fn measure(peer: Peer, bin: &Path, capture: &Capture, rate: u64, seconds: f64) -> Measured {
    let collector = start(peer, bin, capture.proto);
    let port = match (peer, capture.proto) {
        (Peer::Goflow2 | Peer::Goflow2Bin, Proto::Sflow) => collector.port() + 1,
        _ => collector.port(),
    };
    let cpu0 = collector.cpu();
    let (sent, sender_cpu) = send(capture, port, rate, (rate as f64 * seconds) as u64);
    settle(collector.as_ref());
    let mut cpu = collector.cpu() - cpu0;
    if matches!(peer, Peer::Sotp | Peer::SotpRollups) {
        // The sender is a thread of this process: its CPU is not SOTP's.
        cpu = cpu.saturating_sub(sender_cpu);
    }
    let received = collector.finish();
    Measured {
        sent,
        received,
        cpu,
    }
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

struct Result {
    lossless: Option<u64>,
    top_held: bool,
    flows_per_cpu: f64,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ladder(peer: Peer, bin: &Path, c: &Capture, rates: &[u64], runs: usize, secs: f64) -> Result {
    let mut best: Option<(u64, f64)> = None;
    let mut first_rung: Option<f64> = None;
    let mut note = String::new();
    for &rate in rates {
        let mut losses = Vec::new();
        let mut per_cpu = Vec::new();
        for _ in 0..runs {
            let m = measure(peer, bin, c, rate, secs);
            let lost = m.sent.saturating_sub(m.received) as f64 / m.sent as f64;
            losses.push(lost);
            per_cpu.push(m.received as f64 / m.cpu.as_secs_f64().max(1e-6));
            eprintln!(
                "    {:8} {:>9} flows/s: sent {:>9} received {:>9} ({:5.2}% lost) cpu {:6.2}s",
                peer.name(),
                rate,
                m.sent,
                m.received,
                lost * 100.0,
                m.cpu.as_secs_f64()
            );
        }
        let loss = median(losses);
        let fpc = median(per_cpu);
        first_rung.get_or_insert(fpc);
        if loss > 0.0 {
            note = format!("{:.2}% lost at {rate}", loss * 100.0);
            break;
        }
        best = Some((rate, fpc));
    }
    let top_held = note.is_empty();
    match best {
        Some((rate, fpc)) => Result {
            lossless: Some(rate),
            top_held,
            flows_per_cpu: fpc,
            note,
        },
        None => Result {
            lossless: None,
            top_held: false,
            flows_per_cpu: first_rung.unwrap_or(0.0),
            note,
        },
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

struct Args {
    runs: usize,
    seconds: f64,
    only: Vec<Proto>,
    peers: Vec<Peer>,
    rates: Vec<u64>,
    soak: Option<u64>,
    soak_rate: u64,
    rollup_memory: Option<i64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: RUNS,
        seconds: 3.0,
        only: vec![Proto::V9, Proto::Ipfix, Proto::Sflow],
        peers: vec![
            Peer::Sotp,
            Peer::SotpRollups,
            Peer::Nfcapd,
            Peer::Nfacctd,
            Peer::Sfacctd,
            Peer::Goflow2,
            Peer::Goflow2Bin,
            Peer::RecvOnly,
        ],
        rates: vec![250_000, 500_000, 1_000_000, 2_000_000],
        soak: None,
        soak_rate: 100_000,
        rollup_memory: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = val().parse().unwrap(),
            "--seconds" => a.seconds = val().parse().unwrap(),
            "--soak" => a.soak = Some(val().parse().unwrap()),
            "--soak-rate" => a.soak_rate = val().parse().unwrap(),
            "--rollup-memory" => a.rollup_memory = Some(val().parse().unwrap()),
            "--rates" => a.rates = val().split(',').map(|r| r.parse().unwrap()).collect(),
            "--only" => {
                a.only = val()
                    .split(',')
                    .map(|p| match p {
                        "v9" => Proto::V9,
                        "ipfix" => Proto::Ipfix,
                        "sflow" => Proto::Sflow,
                        other => panic!("--only: unknown protocol {other} (v9, ipfix, sflow)"),
                    })
                    .collect()
            }
            "--peers" => {
                a.peers = val()
                    .split(',')
                    .map(|p| match p {
                        "sotp" => Peer::Sotp,
                        "sotp-rollups" => Peer::SotpRollups,
                        "nfcapd" => Peer::Nfcapd,
                        "nfacctd" => Peer::Nfacctd,
                        "sfacctd" => Peer::Sfacctd,
                        "goflow2" => Peer::Goflow2,
                        "goflow2-bin" => Peer::Goflow2Bin,
                        "recv-only" => Peer::RecvOnly,
                        other => panic!("--peers: unknown collector {other}"),
                    })
                    .collect()
            }
            "--bench" => {}
            other => {
                panic!("unknown argument {other}; see the doc comment of tests/benches/flows.rs")
            }
        }
    }
    a
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A `/proc/self/status` memory line, KiB (`RssAnon:` is the heap; `RssFile:` mostly the
/// binary's code paged in as new paths run).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The flow store alone, minute after simulated minute: 30,000 flows in 30,000 rollup groups
/// per minute, rollups written to DuckDB after each — what the store's memory does as the
/// rollup table grows, in seconds instead of hours.
fn rollup_memory(minutes: i64) {
    use sotp_runtime::flow::rawlog::RawFlow;
    use sotp_runtime::flow::store::FlowStore;
    use sotp_runtime::flow::{FlowProtocol, FlowRecord};
    println!("\n## Memory: the flow store over {minutes} simulated minutes of 30,000 groups\n");
    let dir = tempfile::tempdir().unwrap();
    let extra = std::env::var("SOTP_BENCH_FLOW_CONFIG").unwrap_or_default();
    let limit = toml::from_str::<FlowConfig>(&extra)
        .expect("SOTP_BENCH_FLOW_CONFIG")
        .store_memory_limit
        .0;
    println!("`store_memory_limit` {} MiB\n", limit >> 20);
    let store = FlowStore::open(dir.path(), true, limit, &["bench"], &["other", "https"]).unwrap();
    let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let start = now_secs() as i64 / 60 - minutes;
    println!(
        "| minute | RSS MiB | of it anonymous MiB | of that DuckDB MiB |\n|---:|---:|---:|---:|"
    );
    for minute in 0..minutes {
        let flows: Vec<RawFlow> = (0..DISTINCT_FLOWS as u32)
            .map(|i| {
                let f = flow_spec(i as usize);
                let mut r = FlowRecord::empty(FlowProtocol::NetflowV9, exporter, 0);
                r.src_addr = IpAddr::from(f.src);
                r.dst_addr = IpAddr::from(f.dst);
                r.ip_protocol = f.proto;
                r.end_ms = (start + minute) * 60_000;
                r.bytes = f.bytes as u64;
                r.packets = 1;
                RawFlow {
                    record: r,
                    tenant: 0,
                    app: (i % 2) as u16,
                }
            })
            .collect();
        store.commit(&[flows], &[]).unwrap();
        store.flush_rollups().unwrap();
        let duck = duckdb_mib(&store);
        if minute < 10 || minute % 10 == 9 {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} |",
                minute + 1,
                rss_kib() as f64 / 1024.0,
                status_kib("RssAnon:") as f64 / 1024.0,
                duck
            );
        }
    }
}

/// SOTP's pipeline at a steady rate for `secs`: resident memory every 10 s.
fn soak(capture: &Capture, secs: u64, rate: u64) {
    println!(
        "\n## Memory: SOTP at a steady {} flows/s of {} for {secs} s\n",
        fmt_rate(rate as f64),
        capture.proto.name()
    );
    let collector = start_sotp_service(true);
    let port = collector.port();
    let service = collector.service.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s2, m2) = (stop.clone(), samples.clone());
    let sampler = std::thread::spawn(move || {
        let started = Instant::now();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            m2.lock().unwrap().push((
                started.elapsed().as_secs(),
                rss_kib(),
                status_kib("RssAnon:"),
                duckdb_mib(&service.store),
            ));
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && !s2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let (sent, _) = send(capture, port, rate, rate * secs);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    settle(&collector);
    let received = Box::new(collector).finish();
    let samples = samples.lock().unwrap().clone();
    println!(
        "| elapsed s | RSS MiB | of it anonymous MiB | of that DuckDB MiB |\n|---:|---:|---:|---:|"
    );
    for (t, kib, anon, duck) in &samples {
        println!(
            "| {t} | {:.1} | {:.1} | {duck:.1} |",
            *kib as f64 / 1024.0,
            *anon as f64 / 1024.0
        );
    }
    let minute = |range: &[(u64, u64, u64, f64)]| {
        range.iter().map(|s| s.1 as f64).sum::<f64>() / range.len().max(1) as f64 / 1024.0
    };
    let n = samples.len().min(6);
    if samples.len() >= 12 {
        let second = &samples[6..12];
        let last = &samples[samples.len() - n..];
        println!(
            "\nRSS mean, minute 2: {:.1} MiB; last minute: {:.1} MiB ({:+.1}%); flows sent {sent}, stored {received}",
            minute(second),
            minute(last),
            (minute(last) / minute(second) - 1.0) * 100.0
        );
    }
}

fn main() {
    // As `sotp`'s main does: SOTP's memory here is measured as it runs.
    sotp_runtime::limit_malloc_arenas();
    let args = parse_args();
    if let Some(minutes) = args.rollup_memory {
        rollup_memory(minutes);
        return;
    }
    let captures: BTreeMap<Proto, Capture> = args
        .only
        .iter()
        .map(|p| {
            let c = match p {
                Proto::V9 => gen_v9(),
                Proto::Ipfix => gen_ipfix(),
                Proto::Sflow => gen_sflow(),
            };
            verify(&c);
            (*p, c)
        })
        .collect();

    if let Some(secs) = args.soak {
        soak(captures.values().next().unwrap(), secs, args.soak_rate);
        return;
    }

    println!("# Flow collection benchmark\n");
    println!(
        "{} runs per rung, {} s each; rungs {:?} flows/s; 2-core machine, sender on the same host.\n",
        args.runs, args.seconds, args.rates
    );
    println!("## Decode only (sotp-flow, one core)\n");
    println!("| protocol | records/s per core |\n|---|---:|");
    for c in captures.values() {
        println!("| {} | {} |", c.proto.name(), fmt_rate(decode_only(c)));
    }

    for c in captures.values() {
        println!(
            "\n## {} ({} records per datagram)\n",
            c.proto.name(),
            c.proto.records_per_datagram()
        );
        let mut results: Vec<(Peer, Result)> = Vec::new();
        for &peer in &args.peers {
            if !peer.handles(c.proto) {
                continue;
            }
            let Some(bin) = peer.binary() else {
                println!("- {}: not installed, skipped", peer.name());
                continue;
            };
            eprintln!("  {} / {}", c.proto.name(), peer.name());
            let r = ladder(peer, &bin, c, &args.rates, args.runs, args.seconds);
            results.push((peer, r));
        }
        let base_peer = if c.proto == Proto::Sflow {
            Peer::Sfacctd
        } else {
            Peer::Nfcapd
        };
        let base = results
            .iter()
            .find(|(p, _)| *p == base_peer)
            .map(|(_, r)| r.flows_per_cpu);
        println!(
            "| collector | lossless flows/s | flows per CPU-second | vs {} | note |\n|---|---:|---:|---:|---|",
            base_peer.name()
        );
        for (peer, r) in &results {
            let lossless = match r.lossless {
                Some(rate) if r.top_held => format!("≥ {}", fmt_rate(rate as f64)),
                Some(rate) => fmt_rate(rate as f64),
                None => format!("< {}", fmt_rate(args.rates[0] as f64)),
            };
            let ratio = base
                .map(|b| format!("{:.2}×", r.flows_per_cpu / b))
                .unwrap_or_else(|| "-".into());
            println!(
                "| {} | {} | {} | {} | {} |",
                peer.name(),
                lossless,
                fmt_rate(r.flows_per_cpu),
                ratio,
                r.note
            );
        }
    }
}
