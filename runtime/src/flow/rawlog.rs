//! Raw flow log: every enriched flow record as a fixed-width 128-byte entry in append-only
//! segment files (`<data_dir>/flows-raw/<first seq>.seg`). Written by hand because this is
//! the hot path: putting raw flows in DuckDB cost ~5 µs per flow on the writer thread (its
//! per-column compression analysis, string statistics and dictionaries), 20× what receiving
//! and decoding the flow costs; appending an entry here is a 128-byte encode and a share of one
//! `write` per 4096 entries — nfcapd's approach (binary blocks in rotated files), kept simpler.
//!
//! - A flow's **sequence number is its position** in the log: segment `first_seq` plus its
//!   index in the file. Exports (`sink/`) keep an acknowledged sequence number and read on
//!   from here, so the log is also their on-disk buffer.
//! - Segments rotate at [`SEGMENT_ENTRIES`] entries or [`SEGMENT_AGE`]; retention deletes
//!   whole segments whose newest flow is older than the cut. A sealed segment's time range is
//!   kept in a small `.meta` file beside it so opening the log reads no flow data except the
//!   active segment's.
//! - A crash can leave a torn entry at the end of the active segment: opening truncates the
//!   file to whole entries. Each batch is `fdatasync`ed before its sequence numbers are
//!   published, so what a sink or query saw survives a crash.
//! - The active segment is written with `O_DIRECT` (4 KiB-aligned writes from an aligned
//!   buffer, the partial last block rewritten by the next batch, the file then cut to its
//!   true length). Buffered writes spent most of the writer's CPU in the kernel copying into
//!   fresh page-cache pages and in delayed allocation: 1.8–3.3 s of system time per GB here,
//!   against 0.3 s with `O_DIRECT` (`dd`, same disk). File systems without `O_DIRECT`
//!   (tmpfs) get buffered writes.
//! - Tenant and application are 16-bit ids into the store's persisted name table; addresses
//!   are 16 bytes with a family bit, so an entry holds no pointers or variable-length data.
//!
//! Entry layout (little-endian, format version 1):
//!
//! | offset | field | | offset | field |
//! |---:|---|---|---:|---|
//! | 0 | start_ms i64 | | 104 | src_port u16 |
//! | 8 | end_ms i64 | | 106 | dst_port u16 |
//! | 16 | exporter \[16\] | | 108 | tcp_flags u16 |
//! | 32 | src_addr \[16\] | | 110 | vlan u16 |
//! | 48 | dst_addr \[16\] | | 112 | tenant id u16 |
//! | 64 | bytes u64 | | 114 | app id u16 |
//! | 72 | packets u64 | | 116 | ip_protocol u8 |
//! | 80 | domain u32 | | 117 | tos u8 |
//! | 84 | in_if u32 | | 118 | export protocol u8 |
//! | 88 | out_if u32 | | 119 | sampling source u8 |
//! | 92 | sampling_rate u32 | | 120 | direction u8 |
//! | 96 | src_as u32 | | 121 | IPv6 bits (exporter 1, src 2, dst 4) |
//! | 100 | dst_as u32 | | 122 | format version (1), then 5 reserved bytes |

use sotp_flow::record::{Direction, FlowProtocol, FlowRecord, SamplingSource};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub const ENTRY: usize = 128;
const VERSION: u8 = 1;
/// 1 Mi entries: 128 MiB per segment.
pub const SEGMENT_ENTRIES: u64 = 1 << 20;
/// Rotate at least this often, so retention can free space at a useful granularity.
pub const SEGMENT_AGE: Duration = Duration::from_secs(15 * 60);
/// Read (and scan) this many entries per system call.
const READ_CHUNK: usize = 8192;
/// Alignment of `O_DIRECT` writes: offset, length and buffer address.
const BLOCK: usize = 4096;
/// Entries encoded and written per system call: 512 KiB, so the buffer stays in L2.
pub const CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RawLogError {
    #[error("raw flow log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("raw flow log {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RawLogError + '_ {
    move |source| RawLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A flow as the log keeps it: the decoded record with its tenant and application ids.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawFlow {
    pub record: FlowRecord,
    pub tenant: u16,
    pub app: u16,
}

#[inline]
fn put_ip(b: &mut [u8; ENTRY], at: usize, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            b[at..at + 4].copy_from_slice(&v4.octets());
            b[at + 4..at + 16].fill(0);
            false
        }
        IpAddr::V6(v6) => {
            b[at..at + 16].copy_from_slice(&v6.octets());
            true
        }
    }
}

fn get_ip(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

macro_rules! le {
    ($b:expr, $at:expr, $t:ty) => {
        <$t>::from_le_bytes($b[$at..$at + std::mem::size_of::<$t>()].try_into().unwrap())
    };
}

/// Write `f` as one entry into `b` (exactly [`ENTRY`] bytes).
#[inline]
pub fn encode(f: &RawFlow, b: &mut [u8]) {
    // A fixed-size array: the constant offsets below compile without bounds checks.
    let b: &mut [u8; ENTRY] = b.try_into().expect("an entry is ENTRY bytes");
    let r = &f.record;
    b[0..8].copy_from_slice(&r.start_ms.to_le_bytes());
    b[8..16].copy_from_slice(&r.end_ms.to_le_bytes());
    let mut v6 = put_ip(b, 16, r.exporter) as u8;
    v6 |= (put_ip(b, 32, r.src_addr) as u8) << 1;
    v6 |= (put_ip(b, 48, r.dst_addr) as u8) << 2;
    b[64..72].copy_from_slice(&r.bytes.to_le_bytes());
    b[72..80].copy_from_slice(&r.packets.to_le_bytes());
    b[80..84].copy_from_slice(&r.domain.to_le_bytes());
    b[84..88].copy_from_slice(&r.in_if.to_le_bytes());
    b[88..92].copy_from_slice(&r.out_if.to_le_bytes());
    b[92..96].copy_from_slice(&r.sampling_rate.to_le_bytes());
    b[96..100].copy_from_slice(&r.src_as.to_le_bytes());
    b[100..104].copy_from_slice(&r.dst_as.to_le_bytes());
    b[104..106].copy_from_slice(&r.src_port.to_le_bytes());
    b[106..108].copy_from_slice(&r.dst_port.to_le_bytes());
    b[108..110].copy_from_slice(&r.tcp_flags.to_le_bytes());
    b[110..112].copy_from_slice(&r.vlan.to_le_bytes());
    b[112..114].copy_from_slice(&f.tenant.to_le_bytes());
    b[114..116].copy_from_slice(&f.app.to_le_bytes());
    b[116] = r.ip_protocol;
    b[117] = r.tos;
    b[118] = protocol_code(r.protocol);
    b[119] = r.sampling_source as u8;
    b[120] = r.direction as u8;
    b[121] = v6;
    b[122] = VERSION;
    b[123..128].fill(0);
}

fn protocol_code(p: FlowProtocol) -> u8 {
    match p {
        FlowProtocol::NetflowV5 => 0,
        FlowProtocol::NetflowV9 => 1,
        FlowProtocol::Ipfix => 2,
        FlowProtocol::Sflow => 3,
    }
}

/// Read one entry; `None` when it is not a version-1 entry (a corrupt or foreign file).
pub fn decode(b: &[u8]) -> Option<RawFlow> {
    if b.len() < ENTRY || b[122] != VERSION {
        return None;
    }
    let v6 = b[121];
    let protocol = match b[118] {
        0 => FlowProtocol::NetflowV5,
        1 => FlowProtocol::NetflowV9,
        2 => FlowProtocol::Ipfix,
        3 => FlowProtocol::Sflow,
        _ => return None,
    };
    let sampling_source = match b[119] {
        0 => SamplingSource::Record,
        1 => SamplingSource::Sampler,
        2 => SamplingSource::Options,
        3 => SamplingSource::Header,
        _ => SamplingSource::None,
    };
    let direction = match b[120] {
        0 => Direction::Ingress,
        1 => Direction::Egress,
        _ => Direction::Unknown,
    };
    Some(RawFlow {
        record: FlowRecord {
            protocol,
            start_ms: le!(b, 0, i64),
            end_ms: le!(b, 8, i64),
            exporter: get_ip(b, 16, v6 & 1 != 0),
            domain: le!(b, 80, u32),
            in_if: le!(b, 84, u32),
            out_if: le!(b, 88, u32),
            src_addr: get_ip(b, 32, v6 & 2 != 0),
            dst_addr: get_ip(b, 48, v6 & 4 != 0),
            src_port: le!(b, 104, u16),
            dst_port: le!(b, 106, u16),
            ip_protocol: b[116],
            tcp_flags: le!(b, 108, u16),
            tos: b[117],
            bytes: le!(b, 64, u64),
            packets: le!(b, 72, u64),
            sampling_rate: le!(b, 92, u32),
            sampling_source,
            direction,
            src_as: le!(b, 96, u32),
            dst_as: le!(b, 100, u32),
            vlan: le!(b, 110, u16),
        },
        tenant: le!(b, 112, u16),
        app: le!(b, 114, u16),
    })
}

/// The end time of an entry, without decoding the rest (for time ranges).
fn end_ms(b: &[u8]) -> i64 {
    le!(b, 8, i64)
}

/// What the log knows about one segment.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub first_seq: u64,
    pub entries: u64,
    /// Range of the entries' end times; `i64::MAX..i64::MIN` when empty.
    pub min_end_ms: i64,
    pub max_end_ms: i64,
}

impl Segment {
    fn empty(first_seq: u64) -> Self {
        Segment {
            first_seq,
            entries: 0,
            min_end_ms: i64::MAX,
            max_end_ms: i64::MIN,
        }
    }

    /// One past the last sequence number in it.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.entries
    }

    fn note(&mut self, end: i64) {
        self.min_end_ms = self.min_end_ms.min(end);
        self.max_end_ms = self.max_end_ms.max(end);
    }
}

/// The appending side, owned by the store's writer. Readers work from a snapshot of the
/// segment list ([`RawLog::segments`]) and open files themselves.
pub struct RawLog {
    dir: PathBuf,
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    active: Option<Active>,
    active_since: Instant,
    /// Encoding buffer, one block larger than used so an aligned window fits.
    buf: Vec<u8>,
}

/// The open active segment.
struct Active {
    file: File,
    direct: bool,
    /// In `O_DIRECT` mode: the entries of the file's partial last block, which the next
    /// write rewrites (writes start on a block boundary).
    tail: Vec<u8>,
}

impl Active {
    fn open(path: &Path, entries: u64) -> io::Result<Active> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let (file, direct) = match direct {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .read(true)
                    .open(path)?,
                false,
            ),
            Err(e) => return Err(e),
        };
        let mut active = Active {
            file,
            direct,
            tail: Vec::new(),
        };
        if direct {
            active.load_tail(path, entries)?;
        }
        Ok(active)
    }

    /// Read the partial last block through the page cache (an `O_DIRECT` read would need
    /// an aligned buffer too).
    fn load_tail(&mut self, path: &Path, entries: u64) -> io::Result<()> {
        let len = entries * ENTRY as u64;
        let tail = (len % BLOCK as u64) as usize;
        self.tail.resize(tail, 0);
        File::open(path)?.read_exact_at(&mut self.tail, len - tail as u64)
    }

    /// Bytes the next write starts with (the partial last block, in `O_DIRECT` mode).
    fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Write `window[tail_len..len]` (whole entries, encoded by the caller) at entry offset
    /// `entries`; not durable until [`Active::finish`]. `window` is block-aligned and long
    /// enough to pad `len` to a whole block.
    fn write(&mut self, entries: u64, window: &mut [u8], len: usize) -> io::Result<()> {
        let tail = self.tail.len();
        if self.direct {
            window[..tail].copy_from_slice(&self.tail);
            let padded = len.div_ceil(BLOCK) * BLOCK;
            window[len..padded].fill(0);
            let at = entries * ENTRY as u64 - tail as u64;
            match self.file.write_all_at(&window[..padded], at) {
                Ok(()) => {
                    let end = entries * ENTRY as u64 + (len - tail) as u64;
                    let new_tail = (end % BLOCK as u64) as usize;
                    self.tail.clear();
                    self.tail.extend_from_slice(&window[len - new_tail..len]);
                    return Ok(());
                }
                // The file system refused direct I/O after all: go on buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(error = %e, "raw flow log: O_DIRECT refused, using buffered writes");
                    let _ = self.file.set_len(entries * ENTRY as u64);
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
                    self.file = OpenOptions::new()
                        .write(true)
                        .read(true)
                        .open(format!("/proc/self/fd/{fd}"))?;
                    self.direct = false;
                    self.tail.clear();
                }
                Err(e) => return Err(e),
            }
        }
        self.file
            .write_all_at(&window[tail..len], entries * ENTRY as u64)
    }

    /// Make everything written durable, the file `entries` long (direct writes leave the
    /// padding of the last block behind).
    fn finish(&mut self, entries: u64) -> io::Result<()> {
        if self.direct {
            self.file.set_len(entries * ENTRY as u64)?;
        }
        self.file.sync_data()
    }
}

/// Make the directory's entries (files removed, cut) durable.
fn sync_dir(dir: &Path) -> Result<(), RawLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn meta_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.meta"))
}

impl RawLog {
    /// Open the log in `dir` (created if missing), or start one whose first sequence number
    /// is `first_seq` when it holds no segment.
    pub fn open(dir: &Path, first_seq: u64) -> Result<Self, RawLogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(n);
            }
        }
        firsts.sort_unstable();
        let mut segments = Vec::with_capacity(firsts.len());
        for (i, &first) in firsts.iter().enumerate() {
            let last = i + 1 == firsts.len();
            segments.push(load_segment(dir, first, last)?);
        }
        for w in segments.windows(2) {
            if w[0].end_seq() != w[1].first_seq {
                tracing::warn!(dir = %dir.display(), from = w[0].end_seq(), to = w[1].first_seq,
                    "raw flow log: sequence gap between segments (a segment was removed by hand?)");
            }
        }
        if segments.is_empty() {
            segments.push(Segment::empty(first_seq.max(1)));
        }
        Ok(RawLog {
            dir: dir.to_path_buf(),
            segments,
            active: None,
            active_since: Instant::now(),
            buf: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number the next appended flow gets.
    pub fn next_seq(&self) -> u64 {
        self.segments.last().map(Segment::end_seq).unwrap_or(1)
    }

    pub fn segments(&self) -> Vec<Segment> {
        self.segments.clone()
    }

    /// Cut the log back so that `seq` is the next sequence number: whole segments after it
    /// deleted, the one holding it shortened (and active again). For a store whose last
    /// commit the bus never confirmed (`bus::consume`); called before the log is written.
    /// Returns how many entries went.
    pub fn truncate_to(&mut self, seq: u64) -> Result<u64, RawLogError> {
        let end = self.next_seq();
        if seq >= end {
            return Ok(0);
        }
        self.active = None;
        while self.segments.len() > 1 && self.segments.last().is_some_and(|s| s.first_seq >= seq) {
            let gone = self.segments.pop().expect("checked above");
            for path in [
                segment_path(&self.dir, gone.first_seq),
                meta_path(&self.dir, gone.first_seq),
            ] {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        let first = self
            .segments
            .last()
            .expect("one segment at least")
            .first_seq;
        let keep = seq.saturating_sub(first);
        let path = segment_path(&self.dir, first);
        if path.exists() {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_len(keep * ENTRY as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            // Sealed no more: its time range is read again from the entries kept.
            let meta = meta_path(&self.dir, first);
            let _ = fs::remove_file(&meta);
            *self.segments.last_mut().expect("one segment at least") =
                load_segment(&self.dir, first, true)?;
        }
        sync_dir(&self.dir)?;
        Ok(end - self.next_seq())
    }

    /// Append the flows of `batches` durably, in order; returns the sequence number of the
    /// first. Entries are encoded
    /// and written [`CHUNK`] at a time from one reused buffer (which stays in cache), and
    /// `each` sees every chunk right after it was written, while its flows are still in
    /// cache (the store sums rollups there). On an error nothing of the batch stays in the
    /// log; `each` may have seen part of it.
    pub fn append<B: AsRef<[RawFlow]>>(
        &mut self,
        batches: &[B],
        mut each: impl FnMut(&[RawFlow]),
    ) -> Result<u64, RawLogError> {
        let first = self.next_seq();
        if batches.iter().all(|b| b.as_ref().is_empty()) {
            return Ok(first);
        }
        self.rotate_if_due()?;
        let seg = self.segments.last_mut().expect("an active segment");
        let path = segment_path(&self.dir, seg.first_seq);
        if self.active.is_none() {
            self.active = Some(Active::open(&path, seg.entries).map_err(io_err(&path))?);
        }
        let active = self.active.as_mut().expect("opened above");
        // Room for the tail block's entries before a chunk and padding after it.
        let want = BLOCK + CHUNK * ENTRY + 2 * BLOCK;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let at = self.buf.as_ptr().align_offset(BLOCK);
        let window = &mut self.buf[at..at + want - BLOCK];
        let (mut lo, mut hi) = (seg.min_end_ms, seg.max_end_ms);
        let mut entries = seg.entries;
        let mut written = Ok(());
        for chunk in batches.iter().flat_map(|b| b.as_ref().chunks(CHUNK)) {
            let tail = active.tail_len();
            let len = tail + chunk.len() * ENTRY;
            for (f, e) in chunk.iter().zip(window[tail..len].chunks_exact_mut(ENTRY)) {
                encode(f, e);
                lo = lo.min(f.record.end_ms);
                hi = hi.max(f.record.end_ms);
            }
            written = active.write(entries, window, len);
            if written.is_err() {
                break;
            }
            entries += chunk.len() as u64;
            each(chunk);
        }
        if let Err(e) = written.and_then(|_| active.finish(entries)) {
            // Cut back to the entries published before this batch.
            let _ = active.file.set_len(seg.entries * ENTRY as u64);
            self.active = None;
            return Err(RawLogError::Io { path, source: e });
        }
        seg.entries = entries;
        seg.min_end_ms = lo;
        seg.max_end_ms = hi;
        Ok(first)
    }

    fn rotate_if_due(&mut self) -> Result<(), RawLogError> {
        let seg = self.segments.last().expect("an active segment");
        let full = seg.entries >= SEGMENT_ENTRIES;
        let old = seg.entries > 0 && self.active_since.elapsed() >= SEGMENT_AGE;
        if full || old {
            self.seal()?;
        }
        if self.active.is_none() && self.segments.last().is_some_and(|s| s.entries == 0) {
            self.active_since = Instant::now();
        }
        Ok(())
    }

    /// Close the active segment (writing its `.meta`) and start the next one.
    pub fn seal(&mut self) -> Result<(), RawLogError> {
        let seg = self.segments.last().expect("an active segment").clone();
        if seg.entries == 0 {
            return Ok(());
        }
        let path = meta_path(&self.dir, seg.first_seq);
        let tmp = path.with_extension("meta.tmp");
        let json = serde_json::to_vec(&seg).expect("a segment serializes");
        fs::write(&tmp, json)
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(io_err(&path))?;
        // The next segment's file exists from now on, so the numbering survives a restart
        // even when retention deletes every flow before the next one arrives.
        let next = Segment::empty(seg.end_seq());
        let next_path = segment_path(&self.dir, next.first_seq);
        self.active = Some(Active::open(&next_path, 0).map_err(io_err(&next_path))?);
        self.active_since = Instant::now();
        self.segments.push(next);
        Ok(())
    }

    /// Delete the sealed segments whose newest flow ended before `cut_ms`; the number of
    /// flows deleted.
    pub fn delete_older_than(&mut self, cut_ms: i64) -> Result<u64, RawLogError> {
        // A quiet log's active segment may be entirely old too: seal it so it can go.
        if self
            .segments
            .last()
            .is_some_and(|s| s.entries > 0 && s.max_end_ms < cut_ms)
        {
            self.seal()?;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[0].max_end_ms < cut_ms {
            let seg = self.segments.remove(0);
            for path in [
                segment_path(&self.dir, seg.first_seq),
                meta_path(&self.dir, seg.first_seq),
            ] {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(RawLogError::Io { path, source: e }),
                }
            }
            deleted += seg.entries;
        }
        Ok(deleted)
    }
}

/// Whole entries at the start of the active segment that are flows: a crash between an
/// `O_DIRECT` write and cutting the file to length leaves the zeroed padding of the last
/// block (less than one block) after them.
fn trim_padding(path: &Path, entries: u64) -> Result<u64, RawLogError> {
    let per_block = (BLOCK / ENTRY) as u64;
    let look = entries.min(per_block);
    let mut buf = vec![0u8; look as usize * ENTRY];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut buf, (entries - look) * ENTRY as u64))
        .map_err(io_err(path))?;
    let zeros = buf
        .chunks_exact(ENTRY)
        .rev()
        .take_while(|e| e.iter().all(|&b| b == 0))
        .count();
    Ok(entries - zeros as u64)
}

/// Read a segment's range: from its `.meta` when sealed, by scanning it otherwise (the active
/// segment, or one whose meta is missing), truncating a torn last entry of the active one.
fn load_segment(dir: &Path, first: u64, active: bool) -> Result<Segment, RawLogError> {
    let path = segment_path(dir, first);
    let len = fs::metadata(&path).map_err(io_err(&path))?.len();
    let mut entries = len / ENTRY as u64;
    if active {
        entries = trim_padding(&path, entries)?;
    }
    if len % ENTRY as u64 != 0 || (active && entries * ENTRY as u64 != len) {
        if active {
            tracing::warn!(path = %path.display(), bytes = len - entries * ENTRY as u64,
                "raw flow log: dropping a torn entry or block padding at the end (crash during a write)");
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(entries * ENTRY as u64))
                .map_err(io_err(&path))?;
        } else {
            return Err(RawLogError::Corrupt {
                path,
                reason: format!("{len} bytes is not a whole number of {ENTRY}-byte entries"),
            });
        }
    }
    if !active
        && let Ok(json) = fs::read(meta_path(dir, first))
        && let Ok(seg) = serde_json::from_slice::<Segment>(&json)
        && seg.first_seq == first
        && seg.entries == entries
    {
        return Ok(seg);
    }
    let mut seg = Segment::empty(first);
    seg.entries = entries;
    let mut file = File::open(&path).map_err(io_err(&path))?;
    let mut buf = vec![0u8; READ_CHUNK * ENTRY];
    let mut left = entries as usize;
    while left > 0 {
        let n = left.min(READ_CHUNK);
        file.read_exact(&mut buf[..n * ENTRY])
            .map_err(io_err(&path))?;
        for e in buf[..n * ENTRY].chunks_exact(ENTRY) {
            seg.note(end_ms(e));
        }
        left -= n;
    }
    Ok(seg)
}

/// Read access to the log's files from any thread.
///
/// An entry that does not decode (damaged on disk: the log itself never writes one) is
/// skipped, counted in [`RawReader::corrupt_entries`] and logged — a reader that stopped at
/// it would stall every export behind it for good.
#[derive(Clone)]
pub struct RawReader {
    dir: PathBuf,
    corrupt: Arc<AtomicU64>,
}

impl RawReader {
    pub fn new(dir: &Path) -> Self {
        RawReader {
            dir: dir.to_path_buf(),
            corrupt: Arc::default(),
        }
    }

    /// Entries skipped because they did not decode, since start.
    pub fn corrupt_entries(&self) -> u64 {
        self.corrupt.load(Relaxed)
    }

    fn skipped(&self, path: &Path, first_entry: u64, n: u64) {
        self.corrupt.fetch_add(n, Relaxed);
        tracing::warn!(path = %path.display(), first_entry, entries = n,
            "raw flow log: skipping entries that are not version-{VERSION} flows (damaged on disk)");
    }

    /// Up to `limit` flows with sequence numbers in `(after, upto]`, in order, with their
    /// sequence numbers. Flows in segments deleted meanwhile and damaged entries are skipped
    /// (the caller sees the gap in the sequence numbers).
    pub fn read_after(
        &self,
        segments: &[Segment],
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RawFlow)>, RawLogError> {
        let mut out = Vec::with_capacity(limit.min(READ_CHUNK));
        let mut buf = Vec::new();
        for seg in segments {
            if seg.end_seq() <= after.saturating_add(1) || seg.first_seq > upto {
                continue;
            }
            let mut from = after.saturating_add(1).max(seg.first_seq);
            let to = upto.saturating_add(1).min(seg.end_seq());
            if from >= to || out.len() >= limit {
                continue;
            }
            let path = segment_path(&self.dir, seg.first_seq);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RawLogError::Io { path, source: e }),
            };
            // Read on while damaged entries left the batch short of `limit`.
            while from < to && out.len() < limit {
                let want = ((to - from) as usize).min(limit - out.len());
                buf.resize(want * ENTRY, 0);
                let offset = (from - seg.first_seq) * ENTRY as u64;
                file.read_exact_at(&mut buf, offset)
                    .map_err(io_err(&path))?;
                let mut bad = 0;
                for (i, e) in buf.chunks_exact(ENTRY).enumerate() {
                    match decode(e) {
                        Some(flow) => out.push((from + i as u64, flow)),
                        None => bad += 1,
                    }
                }
                if bad > 0 {
                    self.skipped(&path, from - seg.first_seq, bad);
                }
                from += want as u64;
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Call `each` for every flow up to `upto` in the segments whose end times overlap
    /// `[from_ms, to_ms)` (the caller still filters each flow's time). Returns how many
    /// entries were read.
    pub fn scan(
        &self,
        segments: &[Segment],
        from_ms: i64,
        to_ms: i64,
        upto: u64,
        mut each: impl FnMut(&RawFlow),
    ) -> Result<u64, RawLogError> {
        let mut buf = vec![0u8; READ_CHUNK * ENTRY];
        let mut read = 0;
        for seg in segments {
            if seg.entries == 0 || seg.max_end_ms < from_ms || seg.min_end_ms >= to_ms {
                continue;
            }
            let path = segment_path(&self.dir, seg.first_seq);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RawLogError::Io { path, source: e }),
            };
            let entries = upto
                .saturating_add(1)
                .saturating_sub(seg.first_seq)
                .min(seg.entries);
            let mut left = entries as usize;
            while left > 0 {
                let n = left.min(READ_CHUNK);
                file.read_exact(&mut buf[..n * ENTRY])
                    .map_err(io_err(&path))?;
                let mut bad = 0;
                for e in buf[..n * ENTRY].chunks_exact(ENTRY) {
                    let end = end_ms(e);
                    if end < from_ms || end >= to_ms {
                        continue;
                    }
                    match decode(e) {
                        Some(f) => each(&f),
                        None => bad += 1,
                    }
                }
                if bad > 0 {
                    self.skipped(&path, entries - left as u64, bad);
                }
                read += n as u64;
                left -= n;
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn flow(i: u32, end_ms: i64) -> RawFlow {
        let mut record = FlowRecord::empty(FlowProtocol::Ipfix, "2001:db8::1".parse().unwrap(), 7);
        record.start_ms = end_ms - 1000;
        record.end_ms = end_ms;
        record.src_addr = IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8));
        record.dst_addr = "2001:db8::2".parse().unwrap();
        record.src_port = i as u16;
        record.dst_port = 443;
        record.ip_protocol = 6;
        record.tcp_flags = 0x1b;
        record.bytes = 1000 + i as u64;
        record.packets = 3;
        record.sampling_rate = 100;
        record.sampling_source = SamplingSource::Options;
        record.direction = Direction::Egress;
        record.in_if = 3;
        record.out_if = 4;
        record.src_as = 65001;
        record.dst_as = 65002;
        record.vlan = 42;
        record.tos = 0x20;
        RawFlow {
            record,
            tenant: 2,
            app: 9,
        }
    }

    #[test]
    fn the_log_is_cut_back_to_a_sequence_across_segments_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        let batch: Vec<RawFlow> = (0..10)
            .map(|i| flow(i, 1_700_000_000_000 + i as i64))
            .collect();
        log.append(&[&batch[..]], |_| {}).unwrap(); // 1..=10
        log.seal().unwrap();
        log.append(&[&batch[..]], |_| {}).unwrap(); // 11..=20, a second segment
        assert_eq!(log.segments().len(), 2);
        assert_eq!(log.truncate_to(25).unwrap(), 0, "nothing after 21");
        assert_eq!(log.truncate_to(8).unwrap(), 13);
        assert_eq!(log.next_seq(), 8);
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.segments()[0].max_end_ms, 1_700_000_000_006);
        // Appends go on from there, and a reopened log agrees.
        log.append(&[&batch[..2]], |_| {}).unwrap();
        assert_eq!(log.next_seq(), 10);
        drop(log);
        let log = RawLog::open(dir.path(), 1).unwrap();
        assert_eq!(log.next_seq(), 10);
        let rows = RawReader::new(dir.path())
            .read_after(&log.segments(), 0, 9, 100)
            .unwrap();
        assert_eq!(rows.len(), 9);
        assert_eq!(
            rows[7].1, batch[0],
            "seq 8 is the first flow appended after the cut"
        );
    }

    #[test]
    fn an_entry_round_trips_every_field() {
        let f = flow(300, 1_700_000_000_123);
        let mut b = [0u8; ENTRY];
        encode(&f, &mut b);
        assert_eq!(decode(&b), Some(f));
        let mut v4 = f;
        v4.record.exporter = "192.0.2.1".parse().unwrap();
        v4.record.direction = Direction::Unknown;
        v4.record.sampling_source = SamplingSource::None;
        encode(&v4, &mut b);
        assert_eq!(decode(&b), Some(v4));
        b[122] = 9;
        assert_eq!(
            decode(&b),
            None,
            "an unknown format version is not read as a flow"
        );
    }

    #[test]
    fn sequence_numbers_continue_across_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        assert_eq!(
            log.append(
                &[(0..10)
                    .map(|i| flow(i, 1000 + i as i64))
                    .collect::<Vec<_>>()],
                |_| {}
            )
            .unwrap(),
            1
        );
        assert_eq!(
            log.append(
                &[(10..15).map(|i| flow(i, 2000)).collect::<Vec<_>>()],
                |_| {}
            )
            .unwrap(),
            11
        );
        drop(log);
        // A crash in the middle of a write leaves part of an entry.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        assert_eq!(log.next_seq(), 16);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 15 * ENTRY as u64);
        let s = &log.segments()[0];
        assert_eq!((s.min_end_ms, s.max_end_ms), (1000, 2000));
        assert_eq!(
            log.append(
                &[(15..16).map(|i| flow(i, 3000)).collect::<Vec<_>>()],
                |_| {}
            )
            .unwrap(),
            16
        );
        let reader = RawReader::new(dir.path());
        let rows = reader.read_after(&log.segments(), 9, 16, 100).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (10..=16).collect::<Vec<_>>());
        assert_eq!(rows[0].1, flow(9, 1009));
        assert_eq!(rows[6].1, flow(15, 3000));
        // Only what was published is read.
        assert_eq!(
            reader.read_after(&log.segments(), 0, 5, 100).unwrap().len(),
            5
        );
        assert_eq!(
            reader.read_after(&log.segments(), 0, 16, 3).unwrap().len(),
            3
        );
    }

    #[test]
    fn batches_of_any_size_land_whole_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        let mut next = 0u32;
        for (round, n) in [1u32, 31, 33, 100, 7, 1000, 32, 5, 5000, 8193]
            .into_iter()
            .enumerate()
        {
            log.append(
                &[(next..next + n).map(|i| flow(i, 1000)).collect::<Vec<_>>()],
                |_| {},
            )
            .unwrap();
            next += n;
            if round == 4 {
                // Reopened mid-block: the tail is read back and rewritten with the next batch.
                drop(log);
                log = RawLog::open(dir.path(), 1).unwrap();
            }
        }
        // Several batches in one append (the writer commits the receive threads' messages
        // as they came), chunks crossing their boundaries.
        let batches: Vec<Vec<RawFlow>> = [3u32, 4100, 0, 77]
            .iter()
            .scan(next, |at, &n| {
                let b = (*at..*at + n).map(|i| flow(i, 1000)).collect();
                *at += n;
                Some(b)
            })
            .collect();
        let first = log.append(&batches, |_| {}).unwrap();
        assert_eq!(first, next as u64 + 1);
        next += 3 + 4100 + 77;
        let seg = segment_path(dir.path(), 1);
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            next as u64 * ENTRY as u64
        );
        let rows = RawReader::new(dir.path())
            .read_after(&log.segments(), 0, u64::MAX, 100_000)
            .unwrap();
        assert_eq!(rows.len(), next as usize);
        for (i, (seq, f)) in rows.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*f, flow(i as u32, 1000), "entry {i}");
        }
    }

    #[test]
    fn block_padding_left_by_a_crash_is_not_read_as_flows() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        log.append(&[(0..5).map(|i| flow(i, 1000)).collect::<Vec<_>>()], |_| {})
            .unwrap();
        drop(log);
        // A direct write of the next batch landed, padded to its block, and then the process
        // died before the file was cut to length.
        let seg = segment_path(dir.path(), 1);
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(BLOCK as u64)
            .unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        assert_eq!(log.next_seq(), 6);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 5 * ENTRY as u64);
        assert_eq!(log.append(&[vec![flow(5, 1000)]], |_| {}).unwrap(), 6);
        let rows = RawReader::new(dir.path())
            .read_after(&log.segments(), 0, u64::MAX, 100)
            .unwrap();
        assert_eq!(rows.len(), 6);
    }

    #[test]
    fn sealed_segments_keep_their_range_and_retention_deletes_whole_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        log.append(&[(0..4).map(|i| flow(i, 1000)).collect::<Vec<_>>()], |_| {})
            .unwrap();
        log.seal().unwrap();
        log.append(&[(4..8).map(|i| flow(i, 5000)).collect::<Vec<_>>()], |_| {})
            .unwrap();
        log.seal().unwrap();
        log.append(
            &[(8..10).map(|i| flow(i, 9000)).collect::<Vec<_>>()],
            |_| {},
        )
        .unwrap();
        drop(log);
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        let firsts: Vec<(u64, u64, i64)> = log
            .segments()
            .iter()
            .map(|s| (s.first_seq, s.entries, s.max_end_ms))
            .collect();
        assert_eq!(firsts, vec![(1, 4, 1000), (5, 4, 5000), (9, 2, 9000)]);
        let reader = RawReader::new(dir.path());
        let mut seen = Vec::new();
        let read = reader
            .scan(&log.segments(), 4000, 9000, u64::MAX, |f| {
                seen.push(f.record.src_port)
            })
            .unwrap();
        assert_eq!(seen, vec![4, 5, 6, 7], "end time in [from, to)");
        assert_eq!(read, 4, "segments outside the window are not read");
        assert_eq!(log.delete_older_than(5001).unwrap(), 8);
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(log.segments()[0].first_seq, 9);
        // Reading from a deleted position resumes at the oldest flow still kept.
        let rows = reader.read_after(&log.segments(), 0, 10, 100).unwrap();
        assert_eq!(rows.first().map(|r| r.0), Some(9));
        // Everything old: the active segment is sealed and deleted, numbering goes on.
        assert_eq!(log.delete_older_than(i64::MAX).unwrap(), 2);
        assert_eq!(log.next_seq(), 11);
        drop(log);
        assert_eq!(RawLog::open(dir.path(), 1).unwrap().next_seq(), 11);
    }

    #[test]
    fn damaged_entries_are_skipped_counted_and_do_not_stall_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RawLog::open(dir.path(), 1).unwrap();
        log.append(
            &[(0..10).map(|i| flow(i, 1000)).collect::<Vec<_>>()],
            |_| {},
        )
        .unwrap();
        log.seal().unwrap();
        // Damage entries 2, 3 and 4 of the sealed segment (seq 3..=5) on disk.
        let path = segment_path(dir.path(), 1);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        for i in 2..5u64 {
            f.write_all_at(&[0xee], i * ENTRY as u64 + 122).unwrap();
        }
        let reader = RawReader::new(dir.path());
        let segments = log.segments();
        // A batch limit smaller than the damaged run still reaches the flows after it.
        let rows = reader.read_after(&segments, 2, u64::MAX, 2).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(seqs, vec![6, 7]);
        assert_eq!(rows[0].1.record.src_port, 5);
        assert_eq!(reader.corrupt_entries(), 3);
        let all = reader.read_after(&segments, 0, u64::MAX, 100).unwrap();
        assert_eq!(all.len(), 7);
        let mut seen = 0;
        reader
            .scan(&segments, 0, i64::MAX, u64::MAX, |_| seen += 1)
            .unwrap();
        assert_eq!(seen, 7);
        assert_eq!(
            reader.corrupt_entries(),
            9,
            "every read counts what it skipped"
        );
    }
}
