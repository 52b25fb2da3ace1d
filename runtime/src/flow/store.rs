//! Flow storage. Raw flows go to the raw flow log (`rawlog`: fixed-width entries in
//! append-only segment files under `<data_dir>/flows-raw/`); per-minute rollups, sFlow
//! interface counters and the exports' cursors go to DuckDB (`flows.duckdb`), where queries
//! over them are SQL. Raw flows left DuckDB because its per-row cost (~5 µs, most of it
//! string-column compression analysis) was 20× the cost of receiving and decoding a flow.
//!
//! - **Sequence numbers**: a raw flow's number is its position in the log. Exports (QuestDB,
//!   Loki: `sink/`) keep an acknowledged position in `flow_sink_cursors` and read on from the
//!   log while a sink is down: the log is the sinks' on-disk buffer, bounded by retention.
//! - **Rollups** are summed in memory per (minute, tenant, exporter, src/dst address, IP
//!   protocol, application) and written to `flow_rollup_1m` every [`ROLLUP_EVERY`], when
//!   [`ROLLUP_MAX_KEYS`] groups are open, before a rollup query reads the table, and at
//!   shutdown — so DuckDB gets one row per group per minute instead of one per flow; after
//!   each write the store hands back what DuckDB would keep cached
//!   (`FlowStore::release_memory`), so its memory stays flat. The same transaction records
//!   the last sequence number the table includes (`flow_store_state.rollups_through`);
//!   after a crash, opening the store rebuilds the missing rollups from the raw log, so the
//!   two never disagree.
//! - **Names**: tenants and applications are 16-bit ids in the log; the id ↔ name table is
//!   `flows-raw/names.json`, appended to when a configuration brings a new name, with a copy
//!   in `flow_names`. An id is never reused: a deleted tenant's id is retired (its name
//!   replaced by a placeholder no tenant can have) and the name gets a new id, so a tenant
//!   created again under that name sees none of the old one's flows. A damaged `names.json`
//!   is set aside and the table restored from the copy — or, without one, every id in the
//!   log is given a placeholder name, so no old flow is attributed to anyone.

use super::rawlog::{RawFlow, RawLog, RawLogError, RawReader, Segment};
use super::rollup::Rollups;
use duckdb::arrow::array::{
    ArrayRef, Int64Builder, StringBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use parking_lot::{Mutex, RwLock};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::{Duration, Instant};

/// Write the open rollups to DuckDB at least this often.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(60);
/// ... or when this many groups are open (~100 bytes each).
pub const ROLLUP_MAX_KEYS: usize = 1 << 20;

const SCHEMA: &str = "
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
CREATE TABLE IF NOT EXISTS flow_store_state (
    key VARCHAR PRIMARY KEY,
    value UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_names (
    kind VARCHAR NOT NULL,
    id INTEGER NOT NULL,
    name VARCHAR NOT NULL
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
    #[error(transparent)]
    Raw(#[from] RawLogError),
    #[error("flow store: name table {path}: {reason}")]
    Names { path: PathBuf, reason: String },
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
    /// sFlow interface counter rows DuckDB refused (not retried: the next sample carries
    /// the same cumulative counters).
    pub interface_counter_failures: AtomicU64,
}

/// Tenant and application names ↔ the 16-bit ids the raw log stores.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Names {
    tenants: Vec<String>,
    apps: Vec<String>,
    /// Bumped when an id is retired or the live tenants change: whoever caches name → id
    /// lookups starts over.
    #[serde(skip)]
    pub generation: u64,
    /// The tenants that exist (`None`: every name the configuration maps to). Flows of a
    /// tenant that does not exist — not created yet, or deleted while the configuration
    /// still maps exporters to it — are not stored.
    #[serde(skip)]
    live: Option<Arc<std::collections::HashSet<String>>>,
}

const NAMES_FILE: &str = "names.json";

impl Names {
    /// The table as saved (recovered from the copy in `flow_names`, or with placeholders
    /// for the ids `log` uses, when `names.json` is damaged), with the names of `tenants`
    /// and `apps` added if missing (ids are never reused or renumbered). Saved again if
    /// anything changed.
    fn load(
        dir: &Path,
        db: &duckdb::Connection,
        log_ids: impl FnOnce() -> Result<(u16, u16), FlowStoreError>,
        tenants: &[&str],
        apps: &[&str],
    ) -> Result<Names, FlowStoreError> {
        let bad = |reason: String| FlowStoreError::Names {
            path: dir.join(NAMES_FILE),
            reason,
        };
        let handle = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
            .map_err(|e| bad(e.to_string()))?;
        let saved =
            crate::datadir::read_optional(&handle, NAMES_FILE).map_err(|e| bad(e.to_string()))?;
        let mut changed = false;
        let mut names: Names = match saved.map(|json| serde_json::from_slice::<Names>(&json)) {
            Some(Ok(names)) => names,
            None => match Names::from_copy(db)? {
                Some(names) => names,
                None => {
                    // No table at all: if the log holds flows, their ids belong to nobody.
                    let (tenant_ids, app_ids) = log_ids()?;
                    if tenant_ids > 0 || app_ids > 0 {
                        tracing::error!(
                            "flows-raw/names.json is missing and has no copy; flows already stored keep no tenant"
                        );
                        changed = true;
                    }
                    Names::placeholders(tenant_ids, app_ids)
                }
            },
            Some(Err(e)) => {
                let aside = crate::datadir::quarantine(&handle, NAMES_FILE)
                    .map_err(|e| bad(e.to_string()))?;
                changed = true;
                match Names::from_copy(db)? {
                    Some(names) => {
                        tracing::error!(error = %e, kept_as = %aside, "flows-raw/names.json is damaged; restored from flows.duckdb");
                        names
                    }
                    None => {
                        let (tenant_ids, app_ids) = log_ids()?;
                        tracing::error!(error = %e, kept_as = %aside, "flows-raw/names.json is damaged and has no copy; flows already stored keep no tenant");
                        Names::placeholders(tenant_ids, app_ids)
                    }
                }
            }
        };
        for (list, new) in [(&mut names.tenants, tenants), (&mut names.apps, apps)] {
            for name in new {
                if !list.iter().any(|n| n == name) {
                    list.push(name.to_string());
                    changed = true;
                }
            }
            if list.len() > u16::MAX as usize {
                return Err(bad(format!(
                    "{} names: at most {} fit",
                    list.len(),
                    u16::MAX
                )));
            }
        }
        if changed || Names::from_copy(db)?.is_none() {
            names.save(&handle, db).map_err(|e| bad(e.to_string()))?;
        }
        Ok(names)
    }

    /// Names for ids `0..tenants` and `0..apps` that no tenant or application has.
    fn placeholders(tenants: u16, apps: u16) -> Names {
        Names {
            tenants: (0..tenants)
                .map(|i| format!("(unknown tenant {i})"))
                .collect(),
            apps: (0..apps).map(|i| format!("(unknown app {i})")).collect(),
            generation: 0,
            live: None,
        }
    }

    /// The copy in `flow_names`, if there is one.
    fn from_copy(db: &duckdb::Connection) -> Result<Option<Names>, FlowStoreError> {
        let mut names = Names::default();
        let mut stmt = db.prepare("SELECT kind, id, name FROM flow_names ORDER BY kind, id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (kind, id, name) = row?;
            let list = if kind == "tenant" {
                &mut names.tenants
            } else {
                &mut names.apps
            };
            if id as usize != list.len() {
                return Ok(None);
            }
            list.push(name);
        }
        Ok((!names.tenants.is_empty() || !names.apps.is_empty()).then_some(names))
    }

    /// Write `names.json` (atomically, synced) and the copy in `flow_names`.
    fn save(&self, dir: &cap_std::fs::Dir, db: &duckdb::Connection) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::datadir::write_atomic(dir, NAMES_FILE, &json, crate::datadir::FILE_MODE)
            .map_err(|e| e.to_string())?;
        let mut sql = String::from("BEGIN; DELETE FROM flow_names;");
        for (kind, list) in [("tenant", &self.tenants), ("app", &self.apps)] {
            for (id, name) in list.iter().enumerate() {
                let _ = write!(
                    sql,
                    " INSERT INTO flow_names VALUES ('{kind}', {id}, '{}');",
                    name.replace('\'', "''")
                );
            }
        }
        sql.push_str(" COMMIT;");
        db.execute_batch(&sql).map_err(|e| {
            // Never leave the writer's connection inside a failed transaction.
            let _ = db.execute_batch("ROLLBACK");
            e.to_string()
        })
    }

    pub fn tenant(&self, id: u16) -> &str {
        self.tenants
            .get(id as usize)
            .map(|n| n.as_str())
            .unwrap_or("?")
    }

    pub fn app(&self, id: u16) -> &str {
        self.apps
            .get(id as usize)
            .map(|n| n.as_str())
            .unwrap_or("other")
    }

    pub fn tenant_id(&self, name: &str) -> Option<u16> {
        self.tenants
            .iter()
            .position(|n| n == name)
            .map(|i| i as u16)
    }

    /// The id flows of `name` are stored under, if that tenant exists.
    pub fn live_tenant_id(&self, name: &str) -> Option<u16> {
        match &self.live {
            Some(live) if !live.contains(name) => None,
            _ => self.tenant_id(name),
        }
    }

    pub fn app_id(&self, name: &str) -> Option<u16> {
        self.apps.iter().position(|n| n == name).map(|i| i as u16)
    }

    /// These names with `tenant`'s id retired (see the module doc) and `tenant` no longer
    /// live; `Ok(None)` if it has no id. An error when no id is left to give the name.
    fn retiring(&self, tenant: &str) -> Result<Option<Names>, String> {
        let Some(id) = self.tenant_id(tenant) else {
            return Ok(None);
        };
        if self.tenants.len() >= u16::MAX as usize {
            return Err(format!(
                "no tenant id left to retire `{tenant}`'s (at most {} ids)",
                u16::MAX
            ));
        }
        let mut next = self.clone();
        next.tenants[id as usize] = format!("(deleted {tenant} {})", crate::now_ms());
        next.tenants.push(tenant.to_string());
        next.set_live(tenant, false);
        Ok(Some(next))
    }

    /// Mark `tenant` as existing or not (only where the live tenants are known).
    fn set_live(&mut self, tenant: &str, live: bool) {
        if let Some(set) = &self.live {
            let mut set = (**set).clone();
            if live {
                set.insert(tenant.to_string());
            } else {
                set.remove(tenant);
            }
            self.live = Some(Arc::new(set));
        }
        self.generation += 1;
    }
}

/// What only the writer changes.
struct Writer {
    log: RawLog,
    /// Rollups of the flows after `rollups_through`, not yet in DuckDB.
    open: Rollups,
    open_since: Instant,
    /// Rollup writes since `flows.duckdb` was last attached ([`FlowStore::release_memory`]).
    writes_since_attach: u32,
}

pub struct FlowStore {
    db: Mutex<duckdb::Connection>,
    reader_conn: Mutex<duckdb::Connection>,
    /// Held (shared) by every query connection while it lives, so the writer releases
    /// DuckDB's memory only when no query runs ([`FlowStore::release_memory`]).
    queries: RwLock<()>,
    /// `store_memory_limit` in MiB, as DuckDB's `memory_limit`.
    memory_limit_mib: u64,
    db_path: PathBuf,
    writer: Mutex<Writer>,
    /// The log's segments as of the last commit: what readers may read.
    segments: RwLock<Arc<Vec<Segment>>>,
    raw: RawReader,
    next_seq: AtomicU64,
    /// Rollups stay in memory while set (`hold_unconfirmed`).
    rollups_held: std::sync::atomic::AtomicBool,
    /// The last sequence number sinks may export (`hold_unconfirmed`; else `u64::MAX`).
    export_limit: AtomicU64,
    store_raw: bool,
    names: arc_swap::ArcSwap<Names>,
    /// `flows-raw`, where `names.json` lives.
    raw_dir: PathBuf,
    pub counters: FlowStoreCounters,
}

impl FlowStore {
    /// Open (or create) the store in `data_dir`, registering the tenant and application names
    /// the configuration can produce. `memory_limit` caps DuckDB's buffer pool (its default
    /// is 80% of RAM, which on a busy collector reads as a leak).
    pub fn open(
        data_dir: &Path,
        store_raw: bool,
        memory_limit: u64,
        tenants: &[&str],
        apps: &[&str],
    ) -> Result<Self, FlowStoreError> {
        let db_path = data_dir.join("flows.duckdb");
        let conn = open_database(&db_path)?;
        let memory_limit_mib = (memory_limit >> 20).max(64);
        conn.execute_batch(&format!("SET memory_limit = '{memory_limit_mib}MiB';"))?;
        conn.execute_batch(SCHEMA)?;
        let legacy_next = retire_legacy_raw_table(&conn)?;
        let raw_dir = data_dir.join("flows-raw");
        let log = RawLog::open(&raw_dir, legacy_next)?;
        let log_ids = || {
            let reader = RawReader::new(&raw_dir);
            let (mut tenant, mut app) = (0u16, 0u16);
            let mut after = 0;
            let last = log.next_seq().saturating_sub(1);
            let segments = log.segments();
            loop {
                let rows = reader.read_after(&segments, after, last, 65536)?;
                let Some(&(seq, _)) = rows.last() else { break };
                for (_, f) in &rows {
                    tenant = tenant.max(f.tenant.saturating_add(1));
                    app = app.max(f.app.saturating_add(1));
                }
                after = seq;
            }
            Ok((tenant, app))
        };
        let names = Names::load(&raw_dir, &conn, log_ids, tenants, apps)?;
        let reader_conn = conn.try_clone()?;
        reader_conn.execute_batch(USE_DB)?;
        let next_seq = log.next_seq();
        let store = FlowStore {
            rollups_held: Default::default(),
            export_limit: AtomicU64::new(u64::MAX),
            db: Mutex::new(conn),
            reader_conn: Mutex::new(reader_conn),
            queries: RwLock::new(()),
            memory_limit_mib,
            db_path,
            segments: RwLock::new(Arc::new(log.segments())),
            raw: RawReader::new(&raw_dir),
            writer: Mutex::new(Writer {
                log,
                open: Rollups::default(),
                open_since: Instant::now(),
                writes_since_attach: 0,
            }),
            next_seq: AtomicU64::new(next_seq),
            store_raw,
            names: arc_swap::ArcSwap::from_pointee(names),
            raw_dir,
            counters: FlowStoreCounters::default(),
        };
        store.rebuild_rollups()?;
        Ok(store)
    }

    /// Rollups of raw flows committed after the last rollup write (a crash lost them with
    /// the in-memory groups): summed again from the log and written.
    fn rebuild_rollups(&self) -> Result<(), FlowStoreError> {
        let last = self.last_seq();
        let through = {
            let db = self.db.lock();
            let through: Option<u64> = db.query_row(
                "SELECT max(value) FROM flow_store_state WHERE key = 'rollups_through'",
                [],
                |r| r.get(0),
            )?;
            match through {
                Some(t) => t,
                None => {
                    // Rollup tracking starts here: what the log holds now is rolled up
                    // (an empty log, or a store from before the log existed).
                    db.execute(
                        "INSERT OR REPLACE INTO flow_store_state (key, value) VALUES ('rollups_through', ?)",
                        [last],
                    )?;
                    last
                }
            }
        };
        if !self.store_raw || through >= last {
            return Ok(());
        }
        let segments = self.segments();
        let mut w = self.writer.lock();
        let mut after = through;
        loop {
            let rows = self.raw.read_after(&segments, after, last, 65536)?;
            let Some(&(seq, _)) = rows.last() else { break };
            let flows: Vec<RawFlow> = rows.into_iter().map(|(_, f)| f).collect();
            w.open.add_all(&flows);
            after = seq;
        }
        tracing::info!(
            flows = last - through,
            "flow store: rebuilt rollups from the raw log after an unclean stop"
        );
        self.flush_rollups_locked(&mut w)
    }

    /// A connection for queries (DuckDB connections are cheap clones of one database). Drop
    /// it when the query is done: while it lives the writer keeps DuckDB's block cache.
    pub fn reader(&self) -> Result<QueryConnection<'_>, duckdb::Error> {
        let running = self.queries.read();
        let conn = self.reader_conn.lock().try_clone()?;
        conn.execute_batch(USE_DB)?;
        Ok(QueryConnection {
            conn,
            _running: running,
        })
    }

    /// Hand back the memory DuckDB keeps after a rollup write. Measured with the store alone
    /// (`--rollup-memory`, 30,000 groups a minute), anonymous memory grew 27 → 41 MiB over
    /// 10 simulated minutes and to ~200 MiB over hours; with this it stays at 10–11 MiB over
    /// the 10 minutes and at ~15 MiB after 400. Two things grow:
    ///
    /// - DuckDB keeps every block it writes or reads cached until its buffer pool nears
    ///   `memory_limit`, and keeps the buffers around them (the appender's batch, compression,
    ///   checkpoint) for reuse. Lowering `memory_limit` is its way to make the buffer manager
    ///   evict and free them, done after every write; the configured limit is put back at
    ///   once. The cost: a minute's blocks re-read from the page cache by the next append or
    ///   query.
    /// - The table's in-memory metadata (row groups, segments, statistics) grows with every
    ///   row group appended, ~2.7 MiB an hour at 30,000 groups a minute, and only leaves with
    ///   the database: after [`REATTACH_AFTER_WRITES`] rollup writes (an hour, or less with
    ///   rollup queries) the file is detached and attached again (~25 ms), after which DuckDB
    ///   loads metadata lazily, as queries need it.
    ///
    /// `memory_limit` is global and a detached database is gone for every connection, so
    /// both happen only while no query runs (skipped, and tried after the next write, when
    /// one does). A failed attach is retried after every write until it succeeds; until then
    /// rollup writes fail and are kept in memory, as for any failed write.
    fn release_memory(&self, w: &mut Writer, db: &duckdb::Connection) {
        let Some(_quiet) = self.queries.try_write() else {
            return;
        };
        w.writes_since_attach += 1;
        if w.writes_since_attach >= REATTACH_AFTER_WRITES {
            match attach_again(db, &self.db_path) {
                Ok(()) => w.writes_since_attach = 0,
                Err(e) => {
                    tracing::error!(error = %e, "flow store: attaching flows.duckdb again failed")
                }
            }
        }
        if let Err(e) = db.execute_batch("SET memory_limit = '1MB'") {
            // DuckDB keeps the old limit when it cannot evict enough.
            tracing::debug!(error = %e, "flow store: releasing cached blocks failed");
        }
        if let Err(e) = db.execute_batch(&format!(
            "SET memory_limit = '{}MiB'",
            self.memory_limit_mib
        )) {
            tracing::error!(error = %e, "flow store: restoring memory_limit failed");
        }
    }

    /// The id ↔ name table as of now.
    pub fn names(&self) -> Arc<Names> {
        self.names.load_full()
    }

    /// Which tenants exist: flows of other tenants are not stored (`None`: all are).
    pub fn set_live_tenants(&self, tenants: Option<Vec<String>>) {
        // Under the writer lock, as `forget_tenant` changes the names: no update is lost.
        let _w = self.writer.lock();
        let mut next = (*self.names.load_full()).clone();
        next.live = tenants.map(|t| Arc::new(t.into_iter().collect()));
        next.generation += 1;
        self.names.store(Arc::new(next));
    }

    /// A tenant was created: its flows are stored from now on.
    pub fn tenant_created(&self, tenant: &str) {
        let _w = self.writer.lock();
        let mut next = (*self.names.load_full()).clone();
        next.set_live(tenant, true);
        self.names.store(Arc::new(next));
    }

    /// Forget a deleted tenant's flows: its id is retired (what the raw log holds under it
    /// belongs to nobody, and ages out), its rollups and interface counters are deleted.
    /// Flows that arrive afterwards for the name (if the configuration still maps exporters
    /// to it) get a new id.
    pub fn forget_tenant(&self, tenant: &str) -> Result<(), FlowStoreError> {
        let w = self.writer.lock();
        let db = self.db.lock();
        let retired =
            self.names
                .load()
                .retiring(tenant)
                .map_err(|reason| FlowStoreError::Names {
                    path: self.raw_dir.join(NAMES_FILE),
                    reason,
                })?;
        if let Some(next) = retired {
            let dir =
                cap_std::fs::Dir::open_ambient_dir(&self.raw_dir, cap_std::ambient_authority())
                    .map_err(|e| FlowStoreError::Names {
                        path: self.raw_dir.clone(),
                        reason: e.to_string(),
                    })?;
            next.save(&dir, &db)
                .map_err(|reason| FlowStoreError::Names {
                    path: self.raw_dir.join(NAMES_FILE),
                    reason,
                })?;
            self.names.store(Arc::new(next));
        }
        db.execute("DELETE FROM flow_rollup_1m WHERE tenant = ?", [tenant])?;
        db.execute(
            "DELETE FROM flow_interface_counters WHERE tenant = ?",
            [tenant],
        )?;
        drop(w);
        Ok(())
    }

    /// Keep what is committed from now on unconfirmed while `held`: the open rollups stay out
    /// of DuckDB and sinks export nothing past the rows committed before. A store holds them
    /// from committing flows read off the bus until Kafka confirmed their offsets, so what a
    /// restart may cut from the raw log (`bus::consume`) was never rolled up on disk nor sent.
    pub fn hold_unconfirmed(&self, held: bool) {
        self.rollups_held.store(held, Release);
        if held {
            self.export_limit.store(self.last_seq(), Release);
            return;
        }
        self.export_limit.store(u64::MAX, Release);
        // The write a held commit skipped, if one is due.
        let mut w = self.writer.lock();
        if (w.open_since.elapsed() >= ROLLUP_EVERY || w.open.len() >= ROLLUP_MAX_KEYS)
            && let Err(e) = self.flush_rollups_locked(&mut w)
        {
            tracing::error!(error = %e, "flow store: writing rollups failed");
        }
    }

    /// The last sequence number sinks may export: [`FlowStore::last_seq`] but for a held,
    /// unconfirmed commit.
    pub fn exportable_seq(&self) -> u64 {
        self.last_seq().min(self.export_limit.load(Acquire))
    }

    /// The highest sequence number committed so far.
    pub fn last_seq(&self) -> u64 {
        // Acquire: whoever sees a sequence number also sees the segments that hold it.
        self.next_seq.load(Acquire) - 1
    }

    /// Segments, the oldest flow kept and the bytes on disk of the raw log, for status.
    pub fn raw_status(&self) -> serde_json::Value {
        let segments = self.segments();
        let entries: u64 = segments.iter().map(|s| s.entries).sum();
        serde_json::json!({
            "segments": segments.len(),
            "first_seq": segments.iter().find(|s| s.entries > 0).map(|s| s.first_seq),
            "bytes": entries * super::rawlog::ENTRY as u64,
            "corrupt_entries_skipped": self.raw.corrupt_entries(),
        })
    }

    /// Raw log entries readers skipped as damaged, since start.
    pub fn raw_corrupt_entries(&self) -> u64 {
        self.raw.corrupt_entries()
    }

    /// The raw log's segments as of the last commit.
    pub fn segments(&self) -> Arc<Vec<Segment>> {
        self.segments.read().clone()
    }

    /// Append the raw flows of `batches` to the log (when raw flows are kept), sum their
    /// rollups and store the interface counters. On an error nothing of the flows was
    /// stored: commit them again.
    pub fn commit<B: AsRef<[RawFlow]>>(
        &self,
        batches: &[B],
        counters: &[StoredCounters],
    ) -> Result<(), FlowStoreError> {
        let rows: usize = batches.iter().map(|b| b.as_ref().len()).sum();
        if rows == 0 && counters.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut guard = self.writer.lock();
        let w = &mut *guard;
        if self.store_raw && rows > 0 {
            // Rollups are summed per chunk as it is written, while its flows are in cache.
            let mut summed = 0;
            let appended = w.log.append(batches, |chunk| {
                w.open.add_all(chunk);
                summed += chunk.len();
            });
            if let Err(e) = appended {
                // The chunks summed were the first `summed` flows, in order.
                for b in batches {
                    let b = b.as_ref();
                    let n = summed.min(b.len());
                    w.open.subtract_all(&b[..n]);
                    summed -= n;
                }
                self.counters.commit_failures.fetch_add(1, Relaxed);
                return Err(e.into());
            }
            *self.segments.write() = Arc::new(w.log.segments());
        } else {
            batches.iter().for_each(|b| w.open.add_all(b.as_ref()));
        }
        if self.store_raw {
            self.next_seq.store(w.log.next_seq(), Release);
        }
        if !counters.is_empty()
            && let Err(e) = self.append_interface_counters(counters)
        {
            self.counters
                .interface_counter_failures
                .fetch_add(counters.len() as u64, Relaxed);
            tracing::warn!(error = %e, rows = counters.len(), "flow store: interface counters not stored");
        }
        if (w.open_since.elapsed() >= ROLLUP_EVERY || w.open.len() >= ROLLUP_MAX_KEYS)
            && let Err(e) = self.flush_rollups_locked(w)
        {
            // Kept in memory and tried again with the next commit.
            tracing::error!(error = %e, "flow store: writing rollups failed");
        }
        self.counters.commits.fetch_add(1, Relaxed);
        self.counters.rows.fetch_add(rows as u64, Relaxed);
        self.counters
            .commit_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        Ok(())
    }

    /// Write the open rollups to DuckDB now (before a query reads them; at shutdown).
    pub fn flush_rollups(&self) -> Result<(), FlowStoreError> {
        let mut w = self.writer.lock();
        self.flush_rollups_locked(&mut w)
    }

    fn flush_rollups_locked(&self, w: &mut Writer) -> Result<(), FlowStoreError> {
        if self.rollups_held.load(Acquire) {
            // A bus commit the brokers have not confirmed is in the open rollups: they are
            // written once it is (or rebuilt from the log after a restart cuts it).
            return Ok(());
        }
        w.open_since = Instant::now();
        let through = self.last_seq();
        let mut db = self.db.lock();
        let tx = db.transaction()?;
        if !w.open.is_empty() {
            tx.appender("flow_rollup_1m")?
                .append_record_batch(rollup_batch(&w.open, &self.names.load())?)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO flow_store_state (key, value) VALUES ('rollups_through', ?)",
            [through],
        )?;
        tx.commit()?;
        self.counters
            .rollup_rows
            .fetch_add(w.open.len() as u64, Relaxed);
        w.open.clear(ROLLUP_MAX_KEYS / 4);
        // Fold the minute's rows into the database file now rather than when the WAL reaches
        // DuckDB's checkpoint size: the WAL stays small and a restart replays little.
        if let Err(e) = db.execute_batch("CHECKPOINT") {
            tracing::debug!(error = %e, "flow store: checkpoint after the rollup write failed");
        }
        self.release_memory(w, &db);
        Ok(())
    }

    /// Store interface counter samples alone (a bus store's, read off `<topic>-counters`):
    /// unlike [`FlowStore::commit`], which logs and counts a failure of theirs so the flows
    /// still commit, the error is returned, for the samples to be read again.
    pub fn commit_interface_counters(
        &self,
        counters: &[StoredCounters],
    ) -> Result<(), FlowStoreError> {
        if counters.is_empty() {
            return Ok(());
        }
        self.append_interface_counters(counters).inspect_err(|_| {
            self.counters
                .interface_counter_failures
                .fetch_add(counters.len() as u64, Relaxed);
        })
    }

    /// One Arrow batch per commit: a row at a time cost ~2 µs per counter record, which an
    /// sFlow agent sending a counter sample with every datagram turns into the writer's
    /// largest cost.
    fn append_interface_counters(&self, counters: &[StoredCounters]) -> Result<(), FlowStoreError> {
        let batch = interface_counter_batch(counters)?;
        let db = self.db.lock();
        let mut app = db.appender("flow_interface_counters")?;
        app.append_record_batch(batch)?;
        app.flush()?;
        Ok(())
    }

    /// Raw flows after `seq`, in order, at most `limit` of them — what a sink sends next.
    /// Flows deleted by retention are skipped (the caller sees the gap in `seq`).
    pub fn rows_after(&self, seq: u64, limit: usize) -> Result<Vec<ExportRow>, FlowStoreError> {
        let segments = self.segments();
        let rows = self
            .raw
            .read_after(&segments, seq, self.last_seq(), limit)?;
        let names = self.names();
        Ok(rows
            .iter()
            .map(|(seq, f)| export_row(&names, *seq, f))
            .collect())
    }

    /// Every raw flow (committed when called) whose end time is in `[from_ms, to_ms)`.
    pub fn scan_raw(
        &self,
        from_ms: i64,
        to_ms: i64,
        each: impl FnMut(&RawFlow),
    ) -> Result<u64, FlowStoreError> {
        let segments = self.segments();
        Ok(self
            .raw
            // Confirmed rows only: on a bus store, what a restart may still cut is not
            // counted, as its rollups are not written yet.
            .scan(&segments, from_ms, to_ms, self.exportable_seq(), each)?)
    }
}

fn export_row(names: &Names, seq: u64, f: &RawFlow) -> ExportRow {
    let r = &f.record;
    ExportRow {
        seq,
        tenant: names.tenant(f.tenant).to_string(),
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        exporter: r.exporter.to_string(),
        protocol: r.protocol.as_str().to_string(),
        domain: r.domain,
        in_if: r.in_if,
        out_if: r.out_if,
        src_addr: r.src_addr.to_string(),
        dst_addr: r.dst_addr.to_string(),
        src_port: r.src_port,
        dst_port: r.dst_port,
        ip_protocol: r.ip_protocol,
        tcp_flags: r.tcp_flags,
        tos: r.tos,
        bytes: r.bytes,
        packets: r.packets,
        sampling_rate: r.sampling_rate,
        sampling_source: r.sampling_source.as_str().to_string(),
        bytes_scaled: r.scaled_bytes(),
        packets_scaled: r.scaled_packets(),
        direction: r.direction.as_str().to_string(),
        app: names.app(f.app).to_string(),
        src_as: r.src_as,
        dst_as: r.dst_as,
        vlan: r.vlan,
    }
}

impl FlowStore {
    /// The last sequence number `sink` acknowledged, if it ever did. Sinks use the writer's
    /// connection: their statements must not run while DuckDB's memory is being released.
    pub fn sink_cursor(&self, sink: &str) -> Result<Option<u64>, duckdb::Error> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare_cached("SELECT seq FROM flow_sink_cursors WHERE sink = ?")?;
        let mut rows = stmt.query([sink])?;
        match rows.next()? {
            Some(r) => Ok(Some(r.get(0)?)),
            None => Ok(None),
        }
    }

    pub fn set_sink_cursor(&self, sink: &str, seq: u64) -> Result<(), duckdb::Error> {
        self.db
            .lock()
            .prepare_cached("INSERT OR REPLACE INTO flow_sink_cursors (sink, seq) VALUES (?, ?)")?
            .execute(duckdb::params![sink, seq])?;
        Ok(())
    }

    /// Start a new raw log segment now (tests of retention, which deletes whole segments).
    pub fn rotate_raw_segment(&self) -> Result<(), FlowStoreError> {
        let mut w = self.writer.lock();
        w.log.seal()?;
        *self.segments.write() = Arc::new(w.log.segments());
        Ok(())
    }

    /// Delete raw flows (whole segments), rollups and interface counters older than their
    /// retention; the number of rows deleted.
    pub fn apply_retention(
        &self,
        now_ms: i64,
        raw: Duration,
        rollup: Duration,
    ) -> Result<u64, FlowStoreError> {
        let raw_cut = now_ms - raw.as_millis() as i64;
        let rollup_cut = now_ms - rollup.as_millis() as i64;
        let a = {
            let mut w = self.writer.lock();
            let n = w.log.delete_older_than(raw_cut)?;
            *self.segments.write() = Arc::new(w.log.segments());
            n
        };
        let db = self.db.lock();
        let b = db.execute(
            "DELETE FROM flow_rollup_1m WHERE minute_ms < ?",
            [rollup_cut],
        )?;
        let c = db.execute(
            "DELETE FROM flow_interface_counters WHERE ts_ms < ?",
            [raw_cut],
        )?;
        let n = a + (b + c) as u64;
        self.counters.retention_deleted.fetch_add(n, Relaxed);
        Ok(n)
    }
}

/// Rows per DuckDB row group in `flows.duckdb` (DuckDB's default: 122,880). Each minute's
/// rollups are appended to the last, partly filled row group, and DuckDB holds memory for it
/// while it fills: with the default that was ~35 MiB more in a collector's first minutes at
/// 30,000 groups a minute, with 16,384 ~15 MiB (`--rollup-memory` in the flows bench).
const ROW_GROUP_SIZE: usize = 16_384;
/// Every connection's default database: the attached `flows.duckdb` (a connection starts in
/// DuckDB's in-memory catalog).
/// A query's connection: the connection, and the store's note that a query is running.
pub struct QueryConnection<'a> {
    conn: duckdb::Connection,
    _running: parking_lot::RwLockReadGuard<'a, ()>,
}

impl std::ops::Deref for QueryConnection<'_> {
    type Target = duckdb::Connection;
    fn deref(&self) -> &duckdb::Connection {
        &self.conn
    }
}

const USE_DB: &str = "USE flows";

/// Detach and attach `flows.duckdb` again after this many rollup writes
/// ([`FlowStore::release_memory`]).
const REATTACH_AFTER_WRITES: u32 = 60;

/// The flow store's database, attached with [`ROW_GROUP_SIZE`] (an option of `ATTACH` only,
/// hence the in-memory connection it is attached to) and made the default.
fn open_database(path: &Path) -> Result<duckdb::Connection, duckdb::Error> {
    let conn = duckdb::Connection::open_in_memory()?;
    conn.execute_batch(&attach_sql(path))?;
    Ok(conn)
}

fn attach_sql(path: &Path) -> String {
    let quoted = path.display().to_string().replace('\'', "''");
    format!("ATTACH IF NOT EXISTS '{quoted}' AS flows (ROW_GROUP_SIZE {ROW_GROUP_SIZE}); {USE_DB};")
}

/// Idempotent: after a failed attach the next call detaches nothing and attaches.
fn attach_again(db: &duckdb::Connection, path: &Path) -> Result<(), duckdb::Error> {
    db.execute_batch(&format!(
        "USE memory; DETACH DATABASE IF EXISTS flows; {}",
        attach_sql(path)
    ))
}

/// Raw flows of stores written before the raw log existed were a DuckDB table `flows`: it
/// is renamed `flows_legacy` (kept, not read) and the log numbers on from its last flow so
/// the sinks' cursors stay valid. Returns the first sequence number for a new log.
fn retire_legacy_raw_table(conn: &duckdb::Connection) -> Result<u64, duckdb::Error> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM duckdb_tables() WHERE table_name = 'flows' AND schema_name = 'main' \
         AND database_name = current_database()",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(1);
    }
    let max: Option<u64> = conn.query_row("SELECT max(seq) FROM flows", [], |r| r.get(0))?;
    conn.execute_batch("ALTER TABLE flows RENAME TO flows_legacy")?;
    tracing::warn!(
        last_seq = max.unwrap_or(0),
        "flow store: raw flows now live in flows-raw/; the old DuckDB table is kept as \
         flows_legacy and no longer read (DROP TABLE flows_legacy frees the space)"
    );
    Ok(max.map(|m| m + 1).unwrap_or(1))
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

fn interface_counter_batch(counters: &[StoredCounters]) -> Result<RecordBatch, FlowStoreError> {
    let n = counters.len();
    let c = || counters.iter();
    let i = || counters.iter().map(|c| &c.counters);
    let u32s = |f: fn(&super::InterfaceCounters) -> u32| prim_column!(UInt32Builder, n, i().map(f));
    let u64s = |f: fn(&super::InterfaceCounters) -> u64| prim_column!(UInt64Builder, n, i().map(f));
    let mut agents = StringBuilder::with_capacity(n, n * 14);
    for c in i() {
        agents.append_value(c.agent.map(|a| a.to_string()).unwrap_or_default());
    }
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        (
            "tenant",
            DataType::Utf8,
            str_column(c().map(|c| &*c.tenant), n),
        ),
        (
            "ts_ms",
            DataType::Int64,
            prim_column!(Int64Builder, n, c().map(|c| c.ts_ms)),
        ),
        ("agent", DataType::Utf8, Arc::new(agents.finish())),
        ("if_index", DataType::UInt32, u32s(|c| c.if_index)),
        ("if_speed", DataType::UInt64, u64s(|c| c.if_speed)),
        ("if_status", DataType::UInt32, u32s(|c| c.if_status)),
        ("in_octets", DataType::UInt64, u64s(|c| c.in_octets)),
        ("out_octets", DataType::UInt64, u64s(|c| c.out_octets)),
        ("in_errors", DataType::UInt32, u32s(|c| c.in_errors)),
        ("out_errors", DataType::UInt32, u32s(|c| c.out_errors)),
        ("in_discards", DataType::UInt32, u32s(|c| c.in_discards)),
        ("out_discards", DataType::UInt32, u32s(|c| c.out_discards)),
    ];
    batch(columns)
}

fn rollup_batch(rollups: &Rollups, names: &Names) -> Result<RecordBatch, FlowStoreError> {
    let groups = rollups.groups();
    let n = groups.len();
    let k = || groups.iter();
    let v = || groups.iter().map(|g| g.sums);
    let columns: Vec<(&str, DataType, ArrayRef)> = vec![
        (
            "tenant",
            DataType::Utf8,
            str_column(k().map(|k| names.tenant(k.tenant)), n),
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
        (
            "app",
            DataType::Utf8,
            str_column(k().map(|k| names.app(k.app)), n),
        ),
        (
            "bytes",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v[0])),
        ),
        (
            "packets",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v[1])),
        ),
        (
            "flows",
            DataType::UInt64,
            prim_column!(UInt64Builder, n, v().map(|v| v[2])),
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

#[cfg(test)]
mod tests {
    use super::*;
    use sotp_flow::record::{FlowProtocol, FlowRecord};

    fn flow(src: &str, dst: &str, end_ms: i64, bytes: u64, app: u16) -> RawFlow {
        let mut record =
            FlowRecord::empty(FlowProtocol::NetflowV9, "192.0.2.1".parse().unwrap(), 0);
        record.src_addr = src.parse().unwrap();
        record.dst_addr = dst.parse().unwrap();
        record.end_ms = end_ms;
        record.start_ms = end_ms - 500;
        record.bytes = bytes;
        record.packets = 1;
        record.sampling_rate = 10;
        RawFlow {
            record,
            tenant: 0,
            app,
        }
    }

    fn open(dir: &Path) -> FlowStore {
        FlowStore::open(dir, true, 64 << 20, &["acme"], &["other", "https"]).unwrap()
    }

    /// What DuckDB holds (buffer pool and its own allocations), and its memory limit.
    fn duckdb_memory(store: &FlowStore) -> (u64, String) {
        store
            .reader()
            .unwrap()
            .query_row(
                "SELECT sum(memory_usage_bytes)::UBIGINT, current_setting('memory_limit') \
                 FROM duckdb_memory()",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// `minutes` minutes of 20,000 distinct groups each, rollups written after each.
    fn write_minutes(store: &FlowStore, minutes: i64) {
        for minute in 0..minutes {
            let flows: Vec<RawFlow> = (0..20_000u32)
                .map(|i| {
                    let src = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
                    flow(&src, "10.255.0.1", minute * 60_000 + 1000, 100, 0)
                })
                .collect();
            store.commit(&[flows], &[]).unwrap();
            store.flush_rollups().unwrap();
        }
    }

    #[test]
    fn an_unconfirmed_commit_is_held_from_sinks_rollups_and_raw_queries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let one = || vec![flow("10.0.0.1", "10.0.0.2", 1000, 100, 0)];
        store.commit(&[one()], &[]).unwrap();
        assert_eq!(store.exportable_seq(), 1);
        store.hold_unconfirmed(true);
        store.commit(&[one(), one()], &[]).unwrap();
        assert_eq!(store.last_seq(), 3);
        assert_eq!(store.exportable_seq(), 1, "sinks stop before them");
        let scanned = |store: &FlowStore| {
            let mut n = 0;
            store.scan_raw(0, i64::MAX, |_| n += 1).unwrap();
            n
        };
        assert_eq!(scanned(&store), 1, "queries too");
        store.hold_unconfirmed(false);
        assert_eq!(store.exportable_seq(), 3);
        assert_eq!(scanned(&store), 3);
    }

    #[test]
    fn rollup_writes_leave_no_blocks_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (_, limit) = duckdb_memory(&store);
        write_minutes(&store, 6);
        let (held, after) = duckdb_memory(&store);
        // Kept cached, six minutes of these rollups hold ~2.5 MiB of blocks.
        assert!(held < 1 << 20, "DuckDB still holds {held} bytes");
        assert_eq!(after, limit, "the configured memory limit is back");
        assert_eq!(rollups(&store).len(), 6 * 20_000);
    }

    #[test]
    fn attaching_the_database_again_keeps_every_statement_working() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // Cached on the writer's connection before the database goes away under it.
        store.set_sink_cursor("questdb", 5).unwrap();
        write_minutes(&store, 1);
        for _ in 0..2 {
            store.writer.lock().writes_since_attach = REATTACH_AFTER_WRITES - 1;
            write_minutes(&store, 1);
            assert_eq!(store.writer.lock().writes_since_attach, 0);
        }
        assert_eq!(store.sink_cursor("questdb").unwrap(), Some(5));
        store.set_sink_cursor("questdb", 9).unwrap();
        assert_eq!(store.sink_cursor("questdb").unwrap(), Some(9));
        let counter = StoredCounters {
            tenant: Arc::from("acme"),
            ts_ms: 1,
            counters: sotp_flow::InterfaceCounters::default(),
        };
        store.commit::<[RawFlow; 0]>(&[], &[counter]).unwrap();
        assert_eq!(store.counters.interface_counter_failures.load(Relaxed), 0);
        // Three writes of 20,000 groups, each minute on its own (write_minutes restarts at 0).
        assert_eq!(rollups(&store).len(), 20_000);
        assert_eq!(rollups(&store).iter().map(|r| r.6).sum::<u64>(), 3 * 20_000);
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.sink_cursor("questdb").unwrap(), Some(9));
        assert_eq!(rollups(&store).iter().map(|r| r.6).sum::<u64>(), 3 * 20_000);
    }

    #[test]
    fn a_running_query_keeps_the_block_cache_and_its_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (_, limit) = duckdb_memory(&store);
        let query = store.reader().unwrap();
        write_minutes(&store, 3);
        let (rows, during): (u64, String) = query
            .query_row(
                "SELECT count(*)::UBIGINT, current_setting('memory_limit') FROM flow_rollup_1m",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, during), (3 * 20_000, limit.clone()));
        let (held, _) = duckdb_memory(&store);
        assert!(held > 1 << 20, "released while a query ran: {held} bytes");
        drop(query);
        write_minutes(&store, 1);
        assert!(duckdb_memory(&store).0 < 1 << 20);
    }

    /// (src, dst, minute, app, bytes, packets, flows) summed over the rollup rows.
    fn rollups(store: &FlowStore) -> Vec<(String, String, i64, String, u64, u64, u64)> {
        let conn = store.reader().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT src_addr, dst_addr, minute_ms, app, CAST(sum(bytes) AS UBIGINT), \
                 CAST(sum(packets) AS UBIGINT), CAST(sum(flows) AS UBIGINT) FROM flow_rollup_1m \
                 WHERE tenant = 'acme' GROUP BY ALL ORDER BY ALL",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn rollups_sum_both_families_per_minute_and_are_rebuilt_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let minute = 1_700_000_040_000; // a whole minute
        let flows = [
            flow("10.0.0.1", "10.0.0.2", minute + 1_000, 100, 1),
            flow("10.0.0.1", "10.0.0.2", minute + 59_999, 50, 1),
            flow("10.0.0.1", "10.0.0.2", minute + 60_000, 7, 1),
            flow("2001:db8::1", "10.0.0.2", minute + 5, 3, 0),
            flow("2001:db8::1", "10.0.0.2", minute + 6, 4, 0),
        ];
        let expected = vec![
            (
                "10.0.0.1".into(),
                "10.0.0.2".into(),
                minute,
                "https".into(),
                1500,
                20,
                2,
            ),
            (
                "10.0.0.1".into(),
                "10.0.0.2".into(),
                minute + 60_000,
                "https".into(),
                70,
                10,
                1,
            ),
            (
                "2001:db8::1".into(),
                "10.0.0.2".into(),
                minute,
                "other".into(),
                70,
                20,
                2,
            ),
        ];
        {
            let store = open(dir.path());
            store.commit(&[&flows[..2]], &[]).unwrap();
            store.flush_rollups().unwrap();
            store.commit(&[&flows[2..]], &[]).unwrap();
            // Dropped without writing the open rollups: as if the process had died.
        }
        let store = open(dir.path());
        assert_eq!(store.last_seq(), 5);
        assert_eq!(
            rollups(&store),
            expected,
            "the lost rollups are rebuilt from the log"
        );
        drop(store);
        let store = open(dir.path());
        assert_eq!(rollups(&store), expected, "and not counted twice");
        store.commit(&[&flows[..1]], &[]).unwrap();
        store.flush_rollups().unwrap();
        assert_eq!(rollups(&store)[0].4, 2500);
    }

    #[test]
    fn a_crash_before_the_first_rollup_write_loses_no_rollups() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .commit(&[[flow("10.0.0.1", "10.0.0.2", 60_000, 5, 1)]], &[])
                .unwrap();
        }
        let store = open(dir.path());
        let got = rollups(&store);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].4, got[0].6), (50, 1));
    }

    #[test]
    fn sink_rows_carry_names_and_scaled_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .commit(&[[flow("10.0.0.1", "2001:db8::9", 60_000, 100, 1)]], &[])
            .unwrap();
        let rows = store.rows_after(0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.seq, r.tenant.as_str(), r.app.as_str()),
            (1, "acme", "https")
        );
        assert_eq!(
            (r.src_addr.as_str(), r.dst_addr.as_str()),
            ("10.0.0.1", "2001:db8::9")
        );
        assert_eq!((r.bytes, r.bytes_scaled, r.packets_scaled), (100, 1000, 10));
        assert_eq!(
            (r.protocol.as_str(), r.direction.as_str()),
            ("netflow9", "unknown")
        );
        assert!(store.rows_after(1, 10).unwrap().is_empty());
    }

    #[test]
    fn interface_counters_are_stored_with_tenant_agent_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let counters = |if_index: u32, agent: Option<&str>| StoredCounters {
            tenant: Arc::from("acme"),
            ts_ms: 90_000 + if_index as i64,
            counters: sotp_flow::InterfaceCounters {
                agent: agent.map(|a| a.parse().unwrap()),
                if_index,
                if_speed: 10_000_000_000,
                if_status: 3,
                in_octets: 1 << 40,
                out_octets: 77,
                in_errors: 1,
                out_errors: 2,
                in_discards: 3,
                out_discards: if_index,
                ..Default::default()
            },
        };
        store
            .commit::<[RawFlow; 0]>(&[], &[counters(7, Some("192.0.2.9")), counters(8, None)])
            .unwrap();
        let conn = store.reader().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT tenant, ts_ms, agent, if_index, if_speed, if_status, in_octets, out_octets, \
                 in_errors + out_errors + in_discards, out_discards \
                 FROM flow_interface_counters ORDER BY if_index",
            )
            .unwrap();
        type Row = (String, i64, String, u32, u64, u32, u64, u64, u32, u32);
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = |i: u32, agent: &str| -> Row {
            let ts = 90_000 + i as i64;
            (
                "acme".into(),
                ts,
                agent.into(),
                i,
                10_000_000_000,
                3,
                1 << 40,
                77,
                6,
                i,
            )
        };
        assert_eq!(rows, vec![want(7, "192.0.2.9"), want(8, "")]);
        assert_eq!(store.last_seq(), 0, "no flows were stored");
    }

    #[test]
    fn a_store_from_before_the_raw_log_keeps_its_numbering_and_legacy_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What an earlier build left: raw flows in a DuckDB table, sequence numbers to 41.
            let old = duckdb::Connection::open(dir.path().join("flows.duckdb")).unwrap();
            old.execute_batch(
                "CREATE TABLE flows (seq UBIGINT, src_addr VARCHAR); \
                 INSERT INTO flows SELECT range + 1, '10.0.0.1' FROM range(41);",
            )
            .unwrap();
        }
        let store = open(dir.path());
        store
            .commit(&[[flow("10.0.0.1", "10.0.0.2", 60_000, 1, 1)]], &[])
            .unwrap();
        assert_eq!(
            store.last_seq(),
            42,
            "the log numbers on after the old table"
        );
        let kept: u64 = store
            .reader()
            .unwrap()
            .query_row("SELECT count(*) FROM flows_legacy", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 41);
        drop(store);
        // Opened again: nothing left to migrate, numbering unchanged.
        assert_eq!(open(dir.path()).last_seq(), 42);
    }

    fn names_db(dir: &Path) -> duckdb::Connection {
        let db = open_database(&dir.join("flows.duckdb")).unwrap();
        db.execute_batch(SCHEMA).unwrap();
        db
    }

    fn no_log() -> Result<(u16, u16), FlowStoreError> {
        panic!("the log is only scanned when no copy of the names exists")
    }

    /// A fresh data dir: nothing in the log.
    fn empty_log() -> Result<(u16, u16), FlowStoreError> {
        Ok((0, 0))
    }

    #[test]
    fn names_keep_their_ids_when_the_configuration_changes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("flows-raw");
        std::fs::create_dir_all(&raw).unwrap();
        let db = names_db(dir.path());
        let a = Names::load(&raw, &db, empty_log, &["acme", "globex"], &["other"]).unwrap();
        assert_eq!(a.tenant_id("globex"), Some(1));
        let b = Names::load(&raw, &db, no_log, &["initech", "globex"], &["other", "dns"]).unwrap();
        assert_eq!(b.tenant_id("acme"), Some(0));
        assert_eq!(b.tenant_id("globex"), Some(1));
        assert_eq!(b.tenant_id("initech"), Some(2));
        assert_eq!(b.app(1), "dns");
    }

    #[test]
    fn a_damaged_name_table_is_restored_from_its_copy_or_attributes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("flows-raw");
        std::fs::create_dir_all(&raw).unwrap();
        let db = names_db(dir.path());
        Names::load(&raw, &db, empty_log, &["acme", "globex"], &["other"]).unwrap();
        std::fs::write(raw.join("names.json"), b"{\"tenants\": [").unwrap();
        let restored = Names::load(&raw, &db, no_log, &["globex"], &["other"]).unwrap();
        assert_eq!(restored.tenant_id("acme"), Some(0), "from flows.duckdb");
        assert_eq!(restored.tenant_id("globex"), Some(1));
        let aside = std::fs::read_dir(&raw)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("names.json.damaged-")
            })
            .count();
        assert_eq!(aside, 1, "the damaged file is kept aside");
        // No copy either: ids the log uses get placeholders, never a tenant's name.
        std::fs::write(raw.join("names.json"), b"garbage").unwrap();
        db.execute_batch("DELETE FROM flow_names").unwrap();
        let guessed = Names::load(&raw, &db, || Ok((3, 2)), &["globex"], &["other"]).unwrap();
        assert_eq!(guessed.tenant(0), "(unknown tenant 0)");
        assert_eq!(guessed.tenant(2), "(unknown tenant 2)");
        assert_eq!(
            guessed.tenant_id("globex"),
            Some(3),
            "a new id, not an old one"
        );
        assert_eq!(guessed.tenant_id("acme"), None);

        // The file and its copy both gone: the same, the log's ids are nobody's.
        std::fs::remove_file(raw.join("names.json")).unwrap();
        db.execute_batch("DELETE FROM flow_names").unwrap();
        let missing = Names::load(&raw, &db, || Ok((2, 1)), &["globex"], &["other"]).unwrap();
        assert_eq!(missing.tenant(1), "(unknown tenant 1)");
        assert_eq!(missing.tenant_id("globex"), Some(2));
    }

    #[test]
    fn a_forgotten_tenant_keeps_no_flows_and_its_name_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let minute = 1_700_000_040_000;
        let store = open(dir.path());
        store
            .commit(&[&[flow("10.0.0.1", "10.0.0.2", minute, 100, 1)][..]], &[])
            .unwrap();
        store.flush_rollups().unwrap();
        let old = store.names().tenant_id("acme").unwrap();
        store.forget_tenant("acme").unwrap();
        assert!(rollups(&store).is_empty());
        let names = store.names();
        let new = names.tenant_id("acme").unwrap();
        assert_ne!(old, new);
        assert!(names.tenant(old).starts_with("(deleted acme"));
        assert_eq!(names.generation, 1);
        drop(store);
        // Reopened: the retirement holds, and the raw flow under the old id is nobody's.
        let store = open(dir.path());
        assert_eq!(store.names().tenant_id("acme"), Some(new));
        let mut seen = Vec::new();
        store
            .scan_raw(0, i64::MAX, |f| {
                seen.push(store.names().tenant(f.tenant).to_string())
            })
            .unwrap();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].starts_with("(deleted acme"), "{seen:?}");
    }

    #[test]
    fn sums_past_u64_saturate_instead_of_failing_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let minute = 1_700_000_040_000;
        // Two minutes, each near u64::MAX once scaled: their sum does not fit.
        let mut flows = vec![
            flow("10.0.0.1", "10.0.0.2", minute, 1, 1),
            flow("10.0.0.1", "10.0.0.2", minute + 60_000, 1, 1),
        ];
        for f in &mut flows {
            f.record.bytes = u64::MAX / 4;
            f.record.sampling_rate = 3;
        }
        store.commit(&[&flows[..]], &[]).unwrap();
        let q = super::super::query::TopQuery {
            tenant: "acme".into(),
            from_ms: minute,
            to_ms: minute + 120_000,
            by: vec![super::super::query::GroupBy::SrcAddr],
            filter: Default::default(),
            measure: super::super::query::Measure::Bytes,
            limit: 10,
        };
        let rows = super::super::query::top(&store, &q).unwrap();
        assert_eq!(rows[0].bytes, u64::MAX);
    }
}
