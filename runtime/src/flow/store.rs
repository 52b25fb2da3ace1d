//! Flow storage: raw records and per-minute rollups in their own DuckDB file (`flows.duckdb`),
//! written by one thread in large batches through DuckDB's Arrow appender — the row appender
//! tops out near 300k rows/s here, far below what the decoders produce.
//!
//! Every raw row gets a sequence number, so that exports (QuestDB, Loki: `sink/`) keep an
//! acknowledged position in `flow_sink_cursors` and replay from this table while a sink is
//! down: the store is the sinks' on-disk buffer, bounded by the raw retention. Raw rows and
//! the rollup rows of the same batch commit in one transaction, so the two never disagree.

use duckdb::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, UInt8Builder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use sotp_flow::record::FlowRecord;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS flows (
    seq UBIGINT NOT NULL,
    tenant VARCHAR NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    exporter VARCHAR NOT NULL,
    protocol VARCHAR NOT NULL,
    domain UINTEGER NOT NULL,
    in_if UINTEGER NOT NULL,
    out_if UINTEGER NOT NULL,
    src_addr VARCHAR NOT NULL,
    dst_addr VARCHAR NOT NULL,
    src_port USMALLINT NOT NULL,
    dst_port USMALLINT NOT NULL,
    ip_protocol UTINYINT NOT NULL,
    tcp_flags USMALLINT NOT NULL,
    tos UTINYINT NOT NULL,
    bytes UBIGINT NOT NULL,
    packets UBIGINT NOT NULL,
    sampling_rate UINTEGER NOT NULL,
    sampling_source VARCHAR NOT NULL,
    bytes_scaled UBIGINT NOT NULL,
    packets_scaled UBIGINT NOT NULL,
    direction VARCHAR NOT NULL,
    app VARCHAR NOT NULL,
    src_as UINTEGER NOT NULL,
    dst_as UINTEGER NOT NULL,
    vlan USMALLINT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_rollup_1m (
    tenant VARCHAR NOT NULL,
    minute_ms BIGINT NOT NULL,
    exporter VARCHAR NOT NULL,
    src_addr VARCHAR NOT NULL,
    dst_addr VARCHAR NOT NULL,
    ip_protocol UTINYINT NOT NULL,
    app VARCHAR NOT NULL,
    bytes UBIGINT NOT NULL,
    packets UBIGINT NOT NULL,
    flows UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_sink_cursors (
    sink VARCHAR PRIMARY KEY,
    seq UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_interface_counters (
    tenant VARCHAR NOT NULL,
    ts_ms BIGINT NOT NULL,
    agent VARCHAR NOT NULL,
    if_index UINTEGER NOT NULL,
    if_speed UBIGINT NOT NULL,
    if_status UINTEGER NOT NULL,
    in_octets UBIGINT NOT NULL,
    out_octets UBIGINT NOT NULL,
    in_errors UINTEGER NOT NULL,
    out_errors UINTEGER NOT NULL,
    in_discards UINTEGER NOT NULL,
    out_discards UINTEGER NOT NULL
);
";

#[derive(Debug, thiserror::Error)]
pub enum FlowStoreError {
    #[error("flow store: {0}")]
    Db(#[from] duckdb::Error),
    #[error("flow store: building a batch: {0}")]
    Arrow(#[from] duckdb::arrow::error::ArrowError),
}

/// A decoded, enriched record on its way to the store.
#[derive(Clone, Debug)]
pub struct StoredFlow {
    pub tenant: Arc<str>,
    pub app: Arc<str>,
    pub record: FlowRecord,
}

/// A raw flow as stored, read back for an export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRow {
    pub seq: u64,
    pub tenant: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub exporter: String,
    /// Export protocol: netflow5, netflow9, ipfix, sflow.
    pub protocol: String,
    pub domain: u32,
    pub in_if: u32,
    pub out_if: u32,
    pub src_addr: String,
    pub dst_addr: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_protocol: u8,
    pub tcp_flags: u16,
    pub tos: u8,
    pub bytes: u64,
    pub packets: u64,
    pub sampling_rate: u32,
    pub sampling_source: String,
    pub bytes_scaled: u64,
    pub packets_scaled: u64,
    pub direction: String,
    pub app: String,
    pub src_as: u32,
    pub dst_as: u32,
    pub vlan: u16,
}

const EXPORT_COLUMNS: &str = "seq, tenant, start_ms, end_ms, exporter, protocol, domain, in_if, \
    out_if, src_addr, dst_addr, src_port, dst_port, ip_protocol, tcp_flags, tos, bytes, packets, \
    sampling_rate, sampling_source, bytes_scaled, packets_scaled, direction, app, src_as, dst_as, vlan";

/// Interface counters from sFlow, with their tenant and arrival time.
#[derive(Clone, Debug)]
pub struct StoredCounters {
    pub tenant: Arc<str>,
    pub ts_ms: i64,
    pub counters: super::InterfaceCounters,
}

#[derive(Default, Debug)]
pub struct FlowStoreCounters {
    pub commits: AtomicU64,
    pub rows: AtomicU64,
    pub rollup_rows: AtomicU64,
    pub commit_failures: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub retention_deleted: AtomicU64,
}

pub struct FlowStore {
    writer: Mutex<duckdb::Connection>,
    reader: Mutex<duckdb::Connection>,
    next_seq: AtomicU64,
    store_raw: bool,
    pub counters: FlowStoreCounters,
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct RollupKey {
    tenant: Arc<str>,
    minute_ms: i64,
    exporter: IpAddr,
    src: IpAddr,
    dst: IpAddr,
    ip_protocol: u8,
    app: Arc<str>,
}

impl FlowStore {
    /// Open (or create) the store. `memory_limit` caps DuckDB's buffer pool for this file
    /// (its default is 80% of RAM, which on a busy collector reads as a leak).
    pub fn open(path: &Path, store_raw: bool, memory_limit: u64) -> Result<Self, FlowStoreError> {
        let conn = duckdb::Connection::open(path)?;
        conn.execute_batch(&format!(
            "SET memory_limit = '{}MB';",
            (memory_limit >> 20).max(64)
        ))?;
        conn.execute_batch(SCHEMA)?;
        let max: Option<u64> = conn.query_row("SELECT max(seq) FROM flows", [], |r| r.get(0))?;
        let reader = conn.try_clone()?;
        Ok(FlowStore {
            writer: Mutex::new(conn),
            reader: Mutex::new(reader),
            next_seq: AtomicU64::new(max.map(|m| m + 1).unwrap_or(1)),
            store_raw,
            counters: FlowStoreCounters::default(),
        })
    }

    /// A connection for queries (DuckDB connections are cheap clones of one database).
    pub fn reader(&self) -> Result<duckdb::Connection, duckdb::Error> {
        self.reader.lock().try_clone()
    }

    /// The highest sequence number committed so far.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Relaxed) - 1
    }

    /// Append raw flows, their rollups and interface counters in one transaction.
    pub fn commit(
        &self,
        flows: &[StoredFlow],
        counters: &[StoredCounters],
    ) -> Result<(), FlowStoreError> {
        if flows.is_empty() && counters.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut conn = self.writer.lock();
        let result = (|| {
            let tx = conn.transaction()?;
            let first_seq = self.next_seq.load(Relaxed);
            if self.store_raw && !flows.is_empty() {
                let batch = raw_batch(flows, first_seq)?;
                tx.appender("flows")?.append_record_batch(batch)?;
            }
            let rollups = rollup(flows);
            if !rollups.is_empty() {
                tx.appender("flow_rollup_1m")?
                    .append_record_batch(rollup_batch(&rollups)?)?;
            }
            if !counters.is_empty() {
                let mut app = tx.appender("flow_interface_counters")?;
                for c in counters {
                    let i = &c.counters;
                    let agent = i.agent.map(|a| a.to_string()).unwrap_or_default();
                    app.append_row(duckdb::params![
                        &*c.tenant,
                        c.ts_ms,
                        agent,
                        i.if_index,
                        i.if_speed,
                        i.if_status,
                        i.in_octets,
                        i.out_octets,
                        i.in_errors,
                        i.out_errors,
                        i.in_discards,
                        i.out_discards
                    ])?;
                }
            }
            tx.commit()?;
            if self.store_raw {
                self.next_seq.store(first_seq + flows.len() as u64, Relaxed);
            }
            Ok::<usize, FlowStoreError>(rollups.len())
        })();
        match result {
            Ok(rollup_rows) => {
                self.counters.commits.fetch_add(1, Relaxed);
                self.counters.rows.fetch_add(flows.len() as u64, Relaxed);
                self.counters
                    .rollup_rows
                    .fetch_add(rollup_rows as u64, Relaxed);
                self.counters
                    .commit_micros_total
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.commit_failures.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Raw rows after `seq`, in order, at most `limit` of them — what a sink sends next.
    pub fn rows_after(
        conn: &duckdb::Connection,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<ExportRow>, duckdb::Error> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {EXPORT_COLUMNS} FROM flows WHERE seq > ? ORDER BY seq LIMIT ?"
        ))?;
        let rows = stmt.query_map(duckdb::params![seq, limit as u64], |r| {
            Ok(ExportRow {
                seq: r.get(0)?,
                tenant: r.get(1)?,
                start_ms: r.get(2)?,
                end_ms: r.get(3)?,
                exporter: r.get(4)?,
                protocol: r.get(5)?,
                domain: r.get(6)?,
                in_if: r.get(7)?,
                out_if: r.get(8)?,
                src_addr: r.get(9)?,
                dst_addr: r.get(10)?,
                src_port: r.get(11)?,
                dst_port: r.get(12)?,
                ip_protocol: r.get(13)?,
                tcp_flags: r.get(14)?,
                tos: r.get(15)?,
                bytes: r.get(16)?,
                packets: r.get(17)?,
                sampling_rate: r.get(18)?,
                sampling_source: r.get(19)?,
                bytes_scaled: r.get(20)?,
                packets_scaled: r.get(21)?,
                direction: r.get(22)?,
                app: r.get(23)?,
                src_as: r.get(24)?,
                dst_as: r.get(25)?,
                vlan: r.get(26)?,
            })
        })?;
        rows.collect()
    }

    /// The last sequence number `sink` acknowledged, if it ever did.
    pub fn sink_cursor(
        conn: &duckdb::Connection,
        sink: &str,
    ) -> Result<Option<u64>, duckdb::Error> {
        let mut stmt = conn.prepare_cached("SELECT seq FROM flow_sink_cursors WHERE sink = ?")?;
        let mut rows = stmt.query([sink])?;
        match rows.next()? {
            Some(r) => Ok(Some(r.get(0)?)),
            None => Ok(None),
        }
    }

    pub fn set_sink_cursor(
        conn: &duckdb::Connection,
        sink: &str,
        seq: u64,
    ) -> Result<(), duckdb::Error> {
        conn.prepare_cached("INSERT OR REPLACE INTO flow_sink_cursors (sink, seq) VALUES (?, ?)")?
            .execute(duckdb::params![sink, seq])?;
        Ok(())
    }

    /// Delete raw flows and rollups older than their retention.
    pub fn apply_retention(
        &self,
        now_ms: i64,
        raw: std::time::Duration,
        rollup: std::time::Duration,
    ) -> Result<u64, duckdb::Error> {
        let conn = self.writer.lock();
        let raw_cut = now_ms - raw.as_millis() as i64;
        let rollup_cut = now_ms - rollup.as_millis() as i64;
        let a = conn.execute("DELETE FROM flows WHERE end_ms < ?", [raw_cut])?;
        let b = conn.execute(
            "DELETE FROM flow_rollup_1m WHERE minute_ms < ?",
            [rollup_cut],
        )?;
        let c = conn.execute(
            "DELETE FROM flow_interface_counters WHERE ts_ms < ?",
            [raw_cut],
        )?;
        let n = (a + b + c) as u64;
        self.counters.retention_deleted.fetch_add(n, Relaxed);
        Ok(n)
    }
}

fn rollup(flows: &[StoredFlow]) -> HashMap<RollupKey, (u64, u64, u64)> {
    let mut map: HashMap<RollupKey, (u64, u64, u64)> = HashMap::new();
    for f in flows {
        let r = &f.record;
        let key = RollupKey {
            tenant: f.tenant.clone(),
            minute_ms: r.end_ms - r.end_ms.rem_euclid(60_000),
            exporter: r.exporter,
            src: r.src_addr,
            dst: r.dst_addr,
            ip_protocol: r.ip_protocol,
            app: f.app.clone(),
        };
        let e = map.entry(key).or_default();
        e.0 += r.scaled_bytes();
        e.1 += r.scaled_packets();
        e.2 += 1;
    }
    map
}

fn ip_column(values: impl Iterator<Item = IpAddr>, len: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(len, len * 14);
    let mut s = String::with_capacity(40);
    for ip in values {
        s.clear();
        let _ = write!(s, "{ip}");
        b.append_value(&s);
    }
    Arc::new(b.finish())
}

fn str_column<'a>(values: impl Iterator<Item = &'a str>, len: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(len, len * 8);
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

macro_rules! prim_column {
    ($builder:ty, $len:expr, $iter:expr) => {{
        let mut b = <$builder>::with_capacity($len);
        for v in $iter {
            b.append_value(v);
        }
        Arc::new(b.finish()) as ArrayRef
    }};
}

fn raw_batch(flows: &[StoredFlow], first_seq: u64) -> Result<RecordBatch, FlowStoreError> {
    let n = flows.len();
    let r = || flows.iter().map(|f| &f.record);
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        (
            "seq",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, (0..n as u64).map(|i| first_seq + i)),
        ),
        (
            "tenant",
            DataType::Utf8,
            str_column(flows.iter().map(|f| &*f.tenant), n),
        ),
        (
            "start_ms",
            DataType::Int64,
            prim_column!(Int64Builder, n, r().map(|f| f.start_ms)),
        ),
        (
            "end_ms",
            DataType::Int64,
            prim_column!(Int64Builder, n, r().map(|f| f.end_ms)),
        ),
        (
            "exporter",
            DataType::Utf8,
            ip_column(r().map(|f| f.exporter), n),
        ),
        (
            "protocol",
            DataType::Utf8,
            str_column(r().map(|f| f.protocol.as_str()), n),
        ),
        (
            "domain",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.domain)),
        ),
        (
            "in_if",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.in_if)),
        ),
        (
            "out_if",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.out_if)),
        ),
        (
            "src_addr",
            DataType::Utf8,
            ip_column(r().map(|f| f.src_addr), n),
        ),
        (
            "dst_addr",
            DataType::Utf8,
            ip_column(r().map(|f| f.dst_addr), n),
        ),
        (
            "src_port",
            DataType::UInt16,
            prim_column!(UInt16Builder, n, r().map(|f| f.src_port)),
        ),
        (
            "dst_port",
            DataType::UInt16,
            prim_column!(UInt16Builder, n, r().map(|f| f.dst_port)),
        ),
        (
            "ip_protocol",
            DataType::UInt8,
            prim_column!(UInt8Builder, n, r().map(|f| f.ip_protocol)),
        ),
        (
            "tcp_flags",
            DataType::UInt16,
            prim_column!(UInt16Builder, n, r().map(|f| f.tcp_flags)),
        ),
        (
            "tos",
            DataType::UInt8,
            prim_column!(UInt8Builder, n, r().map(|f| f.tos)),
        ),
        (
            "bytes",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, r().map(|f| f.bytes)),
        ),
        (
            "packets",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, r().map(|f| f.packets)),
        ),
        (
            "sampling_rate",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.sampling_rate)),
        ),
        (
            "sampling_source",
            DataType::Utf8,
            str_column(r().map(|f| f.sampling_source.as_str()), n),
        ),
        (
            "bytes_scaled",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, r().map(|f| f.scaled_bytes())),
        ),
        (
            "packets_scaled",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, r().map(|f| f.scaled_packets())),
        ),
        (
            "direction",
            DataType::Utf8,
            str_column(r().map(|f| f.direction.as_str()), n),
        ),
        (
            "app",
            DataType::Utf8,
            str_column(flows.iter().map(|f| &*f.app), n),
        ),
        (
            "src_as",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.src_as)),
        ),
        (
            "dst_as",
            DataType::UInt32,
            prim_column!(UInt32Builder, n, r().map(|f| f.dst_as)),
        ),
        (
            "vlan",
            DataType::UInt16,
            prim_column!(UInt16Builder, n, r().map(|f| f.vlan)),
        ),
    ];
    batch(columns)
}

fn rollup_batch(
    rollups: &HashMap<RollupKey, (u64, u64, u64)>,
) -> Result<RecordBatch, FlowStoreError> {
    let n = rollups.len();
    let k = || rollups.keys();
    let v = || rollups.values();
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        (
            "tenant",
            DataType::Utf8,
            str_column(k().map(|k| &*k.tenant), n),
        ),
        (
            "minute_ms",
            DataType::Int64,
            prim_column!(Int64Builder, n, k().map(|k| k.minute_ms)),
        ),
        (
            "exporter",
            DataType::Utf8,
            ip_column(k().map(|k| k.exporter), n),
        ),
        ("src_addr", DataType::Utf8, ip_column(k().map(|k| k.src), n)),
        ("dst_addr", DataType::Utf8, ip_column(k().map(|k| k.dst), n)),
        (
            "ip_protocol",
            DataType::UInt8,
            prim_column!(UInt8Builder, n, k().map(|k| k.ip_protocol)),
        ),
        ("app", DataType::Utf8, str_column(k().map(|k| &*k.app), n)),
        (
            "bytes",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v.0)),
        ),
        (
            "packets",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v.1)),
        ),
        (
            "flows",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v.2)),
        ),
    ];
    batch(columns)
}

fn batch(columns: Vec<(&str, DataType, ArrayRef)>) -> Result<RecordBatch, FlowStoreError> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, ty, _)| Field::new(*name, ty.clone(), false))
            .collect::<Vec<_>>(),
    );
    let arrays = columns.into_iter().map(|(_, _, a)| a).collect();
    Ok(RecordBatch::try_new(Arc::new(schema), arrays)?)
}
