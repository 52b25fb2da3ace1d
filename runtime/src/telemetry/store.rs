//! The embedded telemetry store (DuckDB) and its single writer thread.
//!
//! All writes go through one thread that owns the write connection and commits in groups:
//! whatever batches are waiting when it wakes are appended and committed in one transaction,
//! so a thousand components ticking at once cost one WAL sync, not a thousand. A batch is
//! *acknowledged* when its commit returned: DuckDB has written and synced its write-ahead log,
//! so the rows survive `kill -9` and are replayed on the next open.
//!
//! Series identity: the series index (in memory, over the `series` table) maps an id to its
//! tenant, metric and labels. An emitted series' hash (`SeriesHasher`) is the first id tried;
//! the writer compares the content of the series found there and probes on (`probe_id`) until
//! it finds its own or a free id — so no collision, crafted or not, mixes two series or two
//! tenants. Each tenant may hold a quota of series: what the index (and the store) keeps for
//! it is bounded by that quota times `MAX_LABEL_BYTES`.

use super::query::{Partial, counter_rate, group_key};
use super::{
    Batch, CommitReport, LedgerEntry, SampleQuery, SeriesHasher, SeriesKey, SeriesPoints, probe_id,
};
use crate::telemetry::QueryError;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    id UBIGINT NOT NULL,
    tenant VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    labels VARCHAR NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    series_id UBIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    value DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS mqtt_ledger (
    tenant VARCHAR NOT NULL,
    component VARCHAR NOT NULL,
    pkid INTEGER NOT NULL,
    digest UBIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    tenant VARCHAR NOT NULL,
    component VARCHAR NOT NULL,
    ts_ms BIGINT NOT NULL,
    level VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    labels VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS store_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
";

/// Ids tried for one series before giving up (each try past the first is a collision).
const MAX_PROBES: u32 = 16;

/// Rows one group commit takes before it commits and starts another.
const GROUP_ROWS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("telemetry store: {0}")]
    Db(#[from] duckdb::Error),
    #[error("telemetry store writer has stopped")]
    WriterGone,
    #[error("telemetry store commit failed: {0}")]
    Commit(String),
}

struct SeriesMeta {
    tenant: String,
    metric: String,
    labels: BTreeMap<String, String>,
}

impl SeriesMeta {
    fn of(tenant: &str, key: &SeriesKey) -> SeriesMeta {
        SeriesMeta {
            tenant: tenant.to_string(),
            metric: key.metric.clone(),
            labels: key.labels.iter().cloned().collect(),
        }
    }

    /// Whether this is the series `key` of `tenant` (labels of a key are sorted by name).
    fn is(&self, tenant: &str, key: &SeriesKey) -> bool {
        self.tenant == tenant
            && self.metric == key.metric
            && self.labels.len() == key.labels.len()
            && self
                .labels
                .iter()
                .zip(&key.labels)
                .all(|((a, b), (c, d))| a == c && b == d)
    }
}

/// Series known to be committed, by id and by (tenant, metric), and how many per tenant.
#[derive(Default)]
struct SeriesIndex {
    by_id: HashMap<u64, Arc<SeriesMeta>>,
    by_metric: HashMap<(String, String), Vec<u64>>,
    per_tenant: HashMap<String, u64>,
}

impl SeriesIndex {
    fn insert(&mut self, id: u64, meta: SeriesMeta) {
        let key = (meta.tenant.clone(), meta.metric.clone());
        let tenant = meta.tenant.clone();
        if self.by_id.insert(id, Arc::new(meta)).is_none() {
            self.by_metric.entry(key).or_default().push(id);
            *self.per_tenant.entry(tenant).or_default() += 1;
        }
    }

    fn tenant_count(&self, tenant: &str) -> u64 {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// The id of `key` if it is known. Every probe is looked at: a purge can leave a hole
    /// before the id a series got.
    fn find(&self, tenant: &str, key: &SeriesKey) -> Option<u64> {
        (0..MAX_PROBES)
            .map(|n| probe_id(key.hash, n))
            .find(|id| self.by_id.get(id).is_some_and(|m| m.is(tenant, key)))
    }

    fn remove_tenant(&mut self, tenant: &str) {
        self.by_id.retain(|_, m| m.tenant != tenant);
        self.by_metric.retain(|(t, _), _| t != tenant);
        self.per_tenant.remove(tenant);
    }
}

/// A new series would take the tenant over its series quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "series quota: tenant `{tenant}` has {has} series and this would add {adding}; its quota is {quota} (new label sets are refused, existing series are still stored)"
)]
pub struct SeriesQuotaExceeded {
    pub tenant: String,
    pub has: u64,
    pub adding: u64,
    pub quota: u64,
}

enum WriteRequest {
    Commit {
        batch: Batch,
        done: oneshot::Sender<Result<CommitReport, String>>,
    },
    /// Delete everything of a tenant; answers the points deleted.
    Purge {
        tenant: String,
        done: oneshot::Sender<Result<u64, String>>,
    },
}

/// A commit request the writer has taken.
struct Pending {
    batch: Batch,
    done: oneshot::Sender<Result<CommitReport, String>>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct StoreCounters {
    pub commits: std::sync::atomic::AtomicU64,
    pub rows: std::sync::atomic::AtomicU64,
    pub commit_failures: std::sync::atomic::AtomicU64,
    pub commit_micros_total: std::sync::atomic::AtomicU64,
    /// Points not stored because their new series would have exceeded a tenant's quota.
    pub series_refused: std::sync::atomic::AtomicU64,
}

pub struct TelemetryStore {
    hasher: SeriesHasher,
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    /// Ledger removals waiting for the next commit: (tenant, component, entry).
    ledger_clears: Arc<Mutex<Vec<(String, String, LedgerEntry)>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Mutex<duckdb::Connection>,
    index: Arc<RwLock<SeriesIndex>>,
    pub counters: Arc<StoreCounters>,
}

/// DuckDB's buffer pool for telemetry.duckdb. Its default is 80% of RAM, and it keeps the
/// blocks it writes cached until the pool is full: a process that appends samples for days
/// grows toward that. Larger queries spill to disk beyond this.
const MEMORY_LIMIT_MIB: u64 = 256;

impl TelemetryStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = duckdb::Connection::open(path)?;
        conn.execute_batch(&format!("SET memory_limit = '{MEMORY_LIMIT_MIB}MiB';"))?;
        conn.execute_batch(SCHEMA)?;
        let hasher = series_hasher(&conn)?;
        let index = Arc::new(RwLock::new(load_index(&conn)?));
        let reader = conn.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(StoreCounters::default());
        let ledger_clears = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let index = index.clone();
            let counters = counters.clone();
            let clears = ledger_clears.clone();
            std::thread::Builder::new()
                .name("sotp-store-writer".into())
                .spawn(move || writer_loop(conn, rx, index, counters, clears))
                .expect("spawning the store writer thread")
        };
        Ok(TelemetryStore {
            hasher,
            writer: Mutex::new(Some(tx)),
            ledger_clears,
            writer_thread: Mutex::new(Some(thread)),
            reader: Mutex::new(reader),
            index,
            counters,
        })
    }

    /// How emitted series are hashed for this store.
    pub fn hasher(&self) -> SeriesHasher {
        self.hasher
    }

    /// Commit a batch; resolves once it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<CommitReport, StoreError> {
        if batch.is_empty() {
            return Ok(CommitReport::default());
        }
        let (done, wait) = oneshot::channel();
        self.send(WriteRequest::Commit { batch, done })?;
        wait.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    /// Delete every series, point, log record and ledger entry of `tenant` (ordered after
    /// every commit queued before it). Returns how many points were deleted.
    pub async fn purge_tenant(&self, tenant: &str) -> Result<u64, StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteRequest::Purge {
            tenant: tenant.to_string(),
            done,
        })?;
        wait.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    fn send(&self, request: WriteRequest) -> Result<(), StoreError> {
        let writer = self.writer.lock();
        let writer = writer.as_ref().ok_or(StoreError::WriterGone)?;
        writer.send(request).map_err(|_| StoreError::WriterGone)
    }

    /// Refuse `keys` (emitted by a component of `tenant` in one call) if the series among
    /// them that the store does not know yet would take the tenant over `quota`. Called as
    /// the guest emits, so it gets a clear error; the writer enforces the quota again at
    /// commit (calls of one tenant's components can race).
    pub fn check_series_quota<'a>(
        &self,
        tenant: &str,
        quota: u64,
        keys: impl Iterator<Item = &'a SeriesKey>,
        already_new: &mut HashSet<u64>,
    ) -> Result<(), SeriesQuotaExceeded> {
        let index = self.index.read();
        let mut found: HashSet<u64> = HashSet::new();
        for key in keys {
            if !already_new.contains(&key.hash)
                && !found.contains(&key.hash)
                && index.find(tenant, key).is_none()
            {
                found.insert(key.hash);
            }
        }
        let has = index.tenant_count(tenant);
        let adding = found.len() as u64;
        if has + already_new.len() as u64 + adding > quota {
            return Err(SeriesQuotaExceeded {
                tenant: tenant.to_string(),
                has: has + already_new.len() as u64,
                adding,
                quota,
            });
        }
        already_new.extend(found);
        Ok(())
    }

    /// Series the tenant holds now.
    pub fn tenant_series(&self, tenant: &str) -> u64 {
        self.index.read().tenant_count(tenant)
    }

    /// Forget the ledger entries of an acknowledged message. The removal rides along with the
    /// next commit (it must precede any later entry for the same packet id, and the next
    /// entry can only come with a commit), so acknowledging costs no transaction of its own.
    pub fn forget_ledger(&self, tenant: &str, components: &[String], entry: LedgerEntry) {
        let mut pending = self.ledger_clears.lock();
        for c in components {
            pending.push((tenant.to_string(), c.clone(), entry));
        }
    }

    /// Whether a message (packet id + digest) was already committed for this component
    /// (blocking).
    pub fn ledger_contains(
        &self,
        tenant: &str,
        component: &str,
        pkid: u16,
        digest: u64,
    ) -> Result<bool, QueryError> {
        let conn = self
            .reader
            .lock()
            .try_clone()
            .map_err(|e| QueryError::Store(e.to_string()))?;
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM mqtt_ledger WHERE tenant = ? AND component = ? AND pkid = ? AND digest = ?",
                duckdb::params![tenant, component, pkid as i32, digest],
                |r| r.get(0),
            )
            .map_err(|e| QueryError::Store(e.to_string()))?;
        Ok(n > 0)
    }

    /// Stop accepting writes, finish the queued ones and checkpoint.
    pub fn close(&self) {
        self.writer.lock().take();
        if let Some(thread) = self.writer_thread.lock().take() {
            let _ = thread.join();
        }
    }

    pub fn series_count(&self) -> usize {
        self.index.read().by_id.len()
    }

    fn matching_series(&self, q: &SampleQuery) -> Vec<(u64, Arc<SeriesMeta>)> {
        let index = self.index.read();
        let Some(ids) = index.by_metric.get(&(q.tenant.clone(), q.metric.clone())) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| index.by_id.get(id).map(|m| (*id, m.clone())))
            .filter(|(_, m)| q.matchers.iter().all(|mt| mt.matches(&m.labels)))
            .collect()
    }

    /// The tenant's metric names, sorted.
    pub fn metric_names(&self, tenant: &str) -> Vec<String> {
        let index = self.index.read();
        let mut names: Vec<String> = index
            .by_metric
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, m)| m.clone())
            .collect();
        names.sort();
        names
    }

    /// The (metric, labels) of the tenant's series, of one metric or all.
    pub fn series_labels(
        &self,
        tenant: &str,
        metric: Option<&str>,
    ) -> Vec<(String, Arc<BTreeMap<String, String>>)> {
        let index = self.index.read();
        let mut out = Vec::new();
        for ((t, m), ids) in &index.by_metric {
            if t != tenant || metric.is_some_and(|want| want != m) {
                continue;
            }
            for id in ids {
                if let Some(meta) = index.by_id.get(id) {
                    out.push((m.clone(), Arc::new(meta.labels.clone())));
                }
            }
        }
        out
    }

    /// Run a sample query (blocking: call from a blocking thread).
    pub fn query(&self, q: &SampleQuery) -> Result<Vec<SeriesPoints>, QueryError> {
        q.validate()?;
        let series = self.matching_series(q);
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self
            .reader
            .lock()
            .try_clone()
            .map_err(|e| QueryError::Store(e.to_string()))?;
        let ids = series
            .iter()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let meta: HashMap<u64, Arc<SeriesMeta>> = series.into_iter().collect();
        match q.step_ms {
            None => raw_points(&conn, q, &ids, &meta),
            Some(_) if q.aggregation == super::Aggregation::Rate => {
                let raw = raw_points(&conn, q, &ids, &meta)?;
                let per_series = raw
                    .into_iter()
                    .map(|s| {
                        let rate = counter_rate(&s.points, q);
                        (s.labels, rate)
                    })
                    .collect();
                Ok(combine(per_series, q))
            }
            Some(step) => {
                let sql = format!(
                    "SELECT series_id, (ts_ms - {start}) // {step} AS b, sum(value), count(*), min(value), max(value)
                     FROM points WHERE series_id IN ({ids}) AND ts_ms >= {start} AND ts_ms < {end}
                     GROUP BY 1, 2 ORDER BY 1, 2",
                    start = q.start_ms,
                    end = q.end_ms,
                );
                let mut stmt = conn
                    .prepare(&sql)
                    .map_err(|e| QueryError::Store(e.to_string()))?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, u64>(0)?,
                            r.get::<_, i64>(1)?,
                            Partial {
                                sum: r.get(2)?,
                                count: r.get::<_, i64>(3)? as u64,
                                min: r.get(4)?,
                                max: r.get(5)?,
                            },
                        ))
                    })
                    .map_err(|e| QueryError::Store(e.to_string()))?;
                let mut per_series: HashMap<u64, BTreeMap<i64, Partial>> = HashMap::new();
                for row in rows {
                    let (id, bucket, partial) =
                        row.map_err(|e| QueryError::Store(e.to_string()))?;
                    per_series.entry(id).or_default().insert(bucket, partial);
                }
                let per_series = per_series
                    .into_iter()
                    .filter_map(|(id, b)| meta.get(&id).map(|m| (m.labels.clone(), b)))
                    .collect();
                Ok(combine(per_series, q))
            }
        }
    }

    /// Recent telemetry log records of one tenant (blocking).
    pub fn recent_logs(
        &self,
        tenant: &str,
        component: Option<&str>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, QueryError> {
        let conn = self
            .reader
            .lock()
            .try_clone()
            .map_err(|e| QueryError::Store(e.to_string()))?;
        let mut stmt = conn
            .prepare(
                "SELECT component, ts_ms, level, message, labels FROM logs
                 WHERE tenant = ? AND (? IS NULL OR component = ?)
                 ORDER BY ts_ms DESC LIMIT ?",
            )
            .map_err(|e| QueryError::Store(e.to_string()))?;
        let rows = stmt
            .query_map(
                duckdb::params![tenant, component, component, limit as i64],
                |r| {
                    let labels: String = r.get(4)?;
                    Ok(serde_json::json!({
                        "component": r.get::<_, String>(0)?,
                        "ts_ms": r.get::<_, i64>(1)?,
                        "level": r.get::<_, String>(2)?,
                        "message": r.get::<_, String>(3)?,
                        "labels": serde_json::from_str::<serde_json::Value>(&labels).unwrap_or_default(),
                    }))
                },
            )
            .map_err(|e| QueryError::Store(e.to_string()))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueryError::Store(e.to_string()))
    }
}

impl Drop for TelemetryStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn raw_points(
    conn: &duckdb::Connection,
    q: &SampleQuery,
    ids: &str,
    meta: &HashMap<u64, Arc<SeriesMeta>>,
) -> Result<Vec<SeriesPoints>, QueryError> {
    let sql = format!(
        "SELECT series_id, ts_ms, value FROM points
         WHERE series_id IN ({ids}) AND ts_ms >= {start} AND ts_ms < {end}
         ORDER BY series_id, ts_ms LIMIT {limit}",
        start = q.start_ms,
        end = q.end_ms,
        limit = q.max_points + 1,
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| QueryError::Store(e.to_string()))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })
        .map_err(|e| QueryError::Store(e.to_string()))?;
    let mut out: Vec<SeriesPoints> = Vec::new();
    let mut current: Option<u64> = None;
    let mut total = 0usize;
    for row in rows {
        let (id, ts, value) = row.map_err(|e| QueryError::Store(e.to_string()))?;
        total += 1;
        if total > q.max_points {
            return Err(QueryError::Invalid(format!(
                "more than {} points match; narrow the range or use a step",
                q.max_points
            )));
        }
        if current != Some(id) {
            current = Some(id);
            let labels = meta.get(&id).map(|m| m.labels.clone()).unwrap_or_default();
            out.push(SeriesPoints {
                labels,
                points: Vec::new(),
            });
        }
        if let Some(last) = out.last_mut() {
            last.points.push((ts, value));
        }
    }
    Ok(out)
}

/// Merge per-series bucket partials into result groups and turn them into values.
fn combine(
    per_series: Vec<(BTreeMap<String, String>, BTreeMap<i64, Partial>)>,
    q: &SampleQuery,
) -> Vec<SeriesPoints> {
    let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, Partial>> = BTreeMap::new();
    for (labels, buckets) in per_series {
        let group = groups.entry(group_key(&labels, &q.group_by)).or_default();
        for (b, p) in buckets {
            group.entry(b).or_default().merge(&p);
        }
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| SeriesPoints {
            labels,
            points: buckets
                .into_iter()
                .map(|(b, p)| (q.bucket_start(b), p.value(q.aggregation)))
                .collect(),
        })
        .collect()
}

fn load_index(conn: &duckdb::Connection) -> Result<SeriesIndex, StoreError> {
    let mut index = SeriesIndex::default();
    let mut stmt = conn.prepare("SELECT id, tenant, metric, labels FROM series")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (id, tenant, metric, labels) = row?;
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        index.insert(
            id,
            SeriesMeta {
                tenant,
                metric,
                labels,
            },
        );
    }
    Ok(index)
}

/// How this store hashes series: read from `store_meta`, or chosen on first open (keyed for
/// a new store; the legacy hash for one that already holds series made with it).
fn series_hasher(conn: &duckdb::Connection) -> Result<SeriesHasher, StoreError> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'series_hash'",
            [],
            |r| r.get(0),
        )
        .ok();
    if let Some(text) = stored {
        if text == "xxh3" {
            return Ok(SeriesHasher::Legacy);
        }
        if let Some(hex_key) = text.strip_prefix("sip13:")
            && let Ok(bytes) = hex::decode(hex_key)
            && bytes.len() == 16
        {
            let k0 = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            let k1 = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
            return Ok(SeriesHasher::Keyed(k0, k1));
        }
        return Err(StoreError::Commit(format!(
            "store_meta.series_hash `{text}` is not a known series hash"
        )));
    }
    let existing: i64 = conn.query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
    let (hasher, text) = if existing > 0 {
        (SeriesHasher::Legacy, "xxh3".to_string())
    } else {
        let mut key = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
        (
            SeriesHasher::Keyed(k0, k1),
            format!("sip13:{}", hex::encode(key)),
        )
    };
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES ('series_hash', ?)",
        [text],
    )?;
    Ok(hasher)
}

fn writer_loop(
    mut conn: duckdb::Connection,
    rx: mpsc::Receiver<WriteRequest>,
    index: Arc<RwLock<SeriesIndex>>,
    counters: Arc<StoreCounters>,
    ledger_clears: Arc<Mutex<Vec<(String, String, LedgerEntry)>>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut next: Option<WriteRequest> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        let (batch, done) = match first {
            WriteRequest::Purge { tenant, done } => {
                let result = purge(&mut conn, &tenant, &index).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(%tenant, error = %e, "purging the tenant's telemetry failed");
                }
                let _ = done.send(result);
                continue;
            }
            WriteRequest::Commit { batch, done } => (batch, done),
        };
        let mut rows: usize = batch.samples.len() + batch.logs.len();
        let mut group = vec![Pending { batch, done }];
        // Commits queued behind it join its transaction; a purge waits for the next round.
        while rows < GROUP_ROWS {
            match rx.try_recv() {
                Ok(WriteRequest::Commit { batch, done }) => {
                    rows += batch.samples.len() + batch.logs.len();
                    group.push(Pending { batch, done });
                }
                Ok(purge) => {
                    next = Some(purge);
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let clears = std::mem::take(&mut *ledger_clears.lock());
        let result = write_group(&mut conn, &group, &clears, &index).map_err(|e| e.to_string());
        if result.is_err() {
            // Keep them for the next attempt.
            ledger_clears.lock().extend(clears);
        }
        counters
            .commit_micros_total
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        match &result {
            Ok(reports) => {
                counters.commits.fetch_add(1, Relaxed);
                counters.rows.fetch_add(rows as u64, Relaxed);
                let refused: u64 = reports.iter().map(|r| r.refused).sum();
                counters.series_refused.fetch_add(refused, Relaxed);
            }
            Err(e) => {
                counters.commit_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "telemetry commit failed");
            }
        }
        for (i, req) in group.into_iter().enumerate() {
            let _ = req
                .done
                .send(result.as_ref().map(|r| r[i]).map_err(String::clone));
        }
    }
    if let Err(e) = conn.execute_batch("CHECKPOINT") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
}

/// Delete a tenant's series, points, log records and ledger entries in one transaction, then
/// forget its series.
fn purge(
    conn: &mut duckdb::Connection,
    tenant: &str,
    index: &RwLock<SeriesIndex>,
) -> Result<u64, StoreError> {
    let tx = conn.transaction()?;
    let points = tx.execute(
        "DELETE FROM points WHERE series_id IN (SELECT id FROM series WHERE tenant = ?)",
        [tenant],
    )?;
    tx.execute("DELETE FROM series WHERE tenant = ?", [tenant])?;
    tx.execute("DELETE FROM logs WHERE tenant = ?", [tenant])?;
    tx.execute("DELETE FROM mqtt_ledger WHERE tenant = ?", [tenant])?;
    tx.commit()?;
    index.write().remove_tenant(tenant);
    Ok(points as u64)
}

/// Series created by the group being written, before they reach the index.
#[derive(Default)]
struct NewSeries {
    by_id: HashMap<u64, SeriesMeta>,
    per_tenant: HashMap<String, u64>,
}

/// The id `key` of `tenant` is stored under: a known series' id, or a free id for a new one
/// (`None` if a new one would exceed `quota`, or no free id was found).
fn resolve(
    known: &SeriesIndex,
    new: &mut NewSeries,
    tenant: &str,
    key: &SeriesKey,
    quota: u64,
) -> Option<u64> {
    let probes = || (0..MAX_PROBES).map(|n| probe_id(key.hash, n));
    if let Some(id) = known.find(tenant, key) {
        return Some(id);
    }
    if let Some(id) = probes().find(|id| new.by_id.get(id).is_some_and(|m| m.is(tenant, key))) {
        return Some(id);
    }
    let count = known.tenant_count(tenant) + new.per_tenant.get(tenant).copied().unwrap_or(0);
    if count >= quota {
        return None;
    }
    let Some(id) = probes().find(|id| !known.by_id.contains_key(id) && !new.by_id.contains_key(id))
    else {
        tracing::error!(%tenant, metric = %key.metric, "no free series id after {MAX_PROBES} tries");
        return None;
    };
    new.by_id.insert(id, SeriesMeta::of(tenant, key));
    *new.per_tenant.entry(tenant.to_string()).or_default() += 1;
    Some(id)
}

fn write_group(
    conn: &mut duckdb::Connection,
    group: &[Pending],
    clears: &[(String, String, LedgerEntry)],
    index: &RwLock<SeriesIndex>,
) -> Result<Vec<CommitReport>, StoreError> {
    let mut new = NewSeries::default();
    let mut reports = vec![CommitReport::default(); group.len()];
    let tx = conn.transaction()?;
    {
        let known = index.read();
        let mut points = tx.appender("points")?;
        for (req, report) in group.iter().zip(&mut reports) {
            let b = &req.batch;
            let ids: Vec<Option<u64>> = b
                .samples
                .series
                .iter()
                .map(|key| resolve(&known, &mut new, &b.tenant, key, b.max_series))
                .collect();
            for p in &b.samples.points {
                match ids[p.series as usize] {
                    Some(id) => points.append_row(duckdb::params![id, p.ts_ms, p.value])?,
                    None => report.refused += 1,
                }
            }
        }
        points.flush()?;
        drop(points);
        if !new.by_id.is_empty() {
            let mut series = tx.appender("series")?;
            let now = crate::now_ms();
            for (id, m) in &new.by_id {
                let labels = serde_json::to_string(&m.labels).unwrap_or_else(|_| "{}".into());
                series.append_row(duckdb::params![*id, m.tenant, m.metric, labels, now])?;
            }
            series.flush()?;
        }
        let any_logs = group.iter().any(|r| !r.batch.logs.is_empty());
        let mut logs = tx.appender("logs")?;
        for req in group.iter().filter(|_| any_logs) {
            let b = &req.batch;
            for l in &b.logs {
                let labels: BTreeMap<&str, &str> = l
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
                logs.append_row(duckdb::params![
                    b.tenant,
                    b.component,
                    l.ts_ms,
                    l.level.as_str(),
                    l.message,
                    labels
                ])?;
            }
        }
        logs.flush()?;
        drop(logs);
        write_ledger(&tx, group, clears)?;
    }
    tx.commit()?;
    if !new.by_id.is_empty() {
        let mut index = index.write();
        for (id, meta) in new.by_id {
            index.insert(id, meta);
        }
    }
    Ok(reports)
}

/// Forget acknowledged messages, then record the batch's handled ones. Removals are one
/// statement per (tenant, component) with an integer list (names are validated
/// `[a-z0-9-]`; inlining them is safe); entries are appended.
///
/// Removal by packet id alone is exact: an id is reused only after its message was
/// acknowledged, and that removal was queued before the new message arrived, so it runs in
/// an earlier group or earlier in the same one.
fn write_ledger(
    tx: &duckdb::Transaction,
    group: &[Pending],
    clears: &[(String, String, LedgerEntry)],
) -> Result<(), StoreError> {
    let mut by_component: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for (t, c, e) in clears {
        if is_plain_name(t) && is_plain_name(c) {
            by_component
                .entry((t, c))
                .or_default()
                .push(e.pkid.to_string());
        }
    }
    for ((t, c), pkids) in by_component {
        for chunk in pkids.chunks(2000) {
            tx.execute_batch(&format!(
                "DELETE FROM mqtt_ledger WHERE tenant = '{t}' AND component = '{c}' AND pkid IN ({})",
                chunk.join(",")
            ))?;
        }
    }
    if group.iter().all(|r| r.batch.ledger.is_empty()) {
        return Ok(());
    }
    let mut ledger = tx.appender("mqtt_ledger")?;
    let now = crate::now_ms();
    for req in group {
        let b = &req.batch;
        for e in &b.ledger {
            ledger.append_row(duckdb::params![
                b.tenant,
                b.component,
                e.pkid as i32,
                e.digest,
                now
            ])?;
        }
    }
    ledger.flush()?;
    Ok(())
}

fn is_plain_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Aggregation, Matcher, Samples};

    fn key(store: &TelemetryStore, tenant: &str, metric: &str, room: &str) -> SeriesKey {
        store
            .hasher()
            .key(tenant, metric.into(), vec![("room".into(), room.into())])
    }

    fn batch(tenant: &str, samples: Samples) -> Batch {
        Batch {
            tenant: tenant.into(),
            component: "c".into(),
            samples,
            max_series: u64::MAX,
            ..Default::default()
        }
    }

    fn query(tenant: &str, metric: &str) -> SampleQuery {
        SampleQuery {
            tenant: tenant.into(),
            metric: metric.into(),
            matchers: vec![],
            start_ms: 0,
            end_ms: 10_000,
            step_ms: None,
            aggregation: Aggregation::Avg,
            group_by: None,
            max_points: 1000,
        }
    }

    #[tokio::test]
    async fn committed_samples_survive_reopen_and_aggregate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.duckdb");
        {
            let store = TelemetryStore::open(&path).unwrap();
            let mut samples = Samples::default();
            for i in 0..10 {
                samples.push(key(&store, "acme", "temp", "kitchen"), i * 1000, i as f64);
                samples.push(key(&store, "acme", "temp", "hall"), i * 1000, 100.0);
            }
            store.commit(batch("acme", samples)).await.unwrap();
            // Another tenant's identical series stays separate.
            let mut other = Samples::default();
            other.push(key(&store, "other", "temp", "kitchen"), 0, 999.0);
            store.commit(batch("other", other)).await.unwrap();
        }
        let store = TelemetryStore::open(&path).unwrap();
        let mut q = query("acme", "temp");
        q.matchers = vec![Matcher::parse("room=kitchen").unwrap()];
        let raw = store.query(&q).unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].points.len(), 10);
        assert_eq!(raw[0].points[3], (3000, 3.0));

        q.step_ms = Some(5000);
        let avg = store.query(&q).unwrap();
        assert_eq!(avg[0].points, vec![(0, 2.0), (5000, 7.0)]);

        q.matchers.clear();
        q.aggregation = Aggregation::Sum;
        q.group_by = Some(vec![]);
        let total = store.query(&q).unwrap();
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].points, vec![(0, 510.0), (5000, 535.0)]);
    }

    /// Two tenants' series that hash alike (forced here: both keys carry the same hash, as
    /// a crafted collision would) get different ids, and neither sees the other's points.
    #[tokio::test]
    async fn a_hash_collision_never_mixes_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.duckdb");
        let store = TelemetryStore::open(&path).unwrap();
        let victim = key(&store, "acme", "temp", "kitchen");
        let mut forged = key(&store, "evil", "temp", "kitchen");
        forged.hash = victim.hash;
        let mut a = Samples::default();
        a.push(victim.clone(), 1000, 21.0);
        store.commit(batch("acme", a)).await.unwrap();
        let mut e = Samples::default();
        e.push(forged.clone(), 2000, -273.0);
        store.commit(batch("evil", e)).await.unwrap();
        // And again after a reopen, with the index rebuilt from the table.
        drop(store);
        let store = TelemetryStore::open(&path).unwrap();
        let mut e = Samples::default();
        e.push(forged, 3000, -273.0);
        store.commit(batch("evil", e)).await.unwrap();
        let acme = store.query(&query("acme", "temp")).unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].points, vec![(1000, 21.0)]);
        let evil = store.query(&query("evil", "temp")).unwrap();
        assert_eq!(evil[0].points, vec![(2000, -273.0), (3000, -273.0)]);
        assert_eq!(store.series_count(), 2);
    }

    /// A series that got a later probe (its first was taken) keeps its id when the tenant
    /// that held the first probe is purged: it is not taken for new and stored twice.
    #[tokio::test]
    async fn a_series_past_a_purged_hole_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap();
        let first = key(&store, "gone", "temp", "kitchen");
        let mut second = key(&store, "acme", "temp", "kitchen");
        second.hash = first.hash;
        for (tenant, k, at) in [("gone", &first, 1000), ("acme", &second, 2000)] {
            let mut s = Samples::default();
            s.push(k.clone(), at, 1.0);
            store.commit(batch(tenant, s)).await.unwrap();
        }
        store.purge_tenant("gone").await.unwrap();
        let mut s = Samples::default();
        s.push(second.clone(), 3000, 2.0);
        store.commit(batch("acme", s)).await.unwrap();
        assert_eq!(store.series_count(), 1, "one series, not two");
        assert_eq!(store.tenant_series("acme"), 1);
        let acme = store.query(&query("acme", "temp")).unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].points, vec![(2000, 1.0), (3000, 2.0)]);
    }

    #[tokio::test]
    async fn the_series_quota_refuses_new_series_and_keeps_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap();
        let mut s = Samples::default();
        for room in ["a", "b", "c"] {
            s.push(key(&store, "acme", "temp", room), 1000, 1.0);
        }
        let mut b = batch("acme", s);
        b.max_series = 2;
        assert_eq!(store.commit(b).await.unwrap().refused, 1);
        assert_eq!(store.tenant_series("acme"), 2);
        // Known series still store; the emit-time check tells a new one apart.
        let mut fresh = HashSet::new();
        let known = [key(&store, "acme", "temp", "a")];
        assert!(
            store
                .check_series_quota("acme", 2, known.iter(), &mut fresh)
                .is_ok()
        );
        let new = [key(&store, "acme", "temp", "d")];
        let err = store
            .check_series_quota("acme", 2, new.iter(), &mut fresh)
            .unwrap_err();
        assert_eq!((err.has, err.adding, err.quota), (2, 1, 2));
        assert!(
            store
                .check_series_quota("globex", 2, new.iter(), &mut HashSet::new())
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_purged_tenant_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap();
        for tenant in ["acme", "globex"] {
            let mut s = Samples::default();
            s.push(key(&store, tenant, "temp", "a"), 1000, 1.0);
            let mut b = batch(tenant, s);
            b.logs.push(crate::telemetry::LogRow {
                ts_ms: 1000,
                level: crate::stats::LogLevel::Info,
                message: "hello".into(),
                labels: vec![],
            });
            store.commit(b).await.unwrap();
        }
        assert_eq!(store.purge_tenant("acme").await.unwrap(), 1);
        assert!(store.query(&query("acme", "temp")).unwrap().is_empty());
        assert!(store.recent_logs("acme", None, 10).unwrap().is_empty());
        assert_eq!(store.tenant_series("acme"), 0);
        assert_eq!(store.query(&query("globex", "temp")).unwrap().len(), 1);
        assert_eq!(store.recent_logs("globex", None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_new_store_keys_its_series_hash_and_an_old_one_keeps_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(&dir.path().join("new.duckdb")).unwrap();
        assert!(matches!(store.hasher(), SeriesHasher::Keyed(..)));
        let first = store.hasher();
        drop(store);
        let again = TelemetryStore::open(&dir.path().join("new.duckdb")).unwrap();
        assert_eq!(again.hasher(), first, "the key is kept");
        // A store that holds series from before keyed hashes goes on with xxh3.
        let old = dir.path().join("old.duckdb");
        {
            let conn = duckdb::Connection::open(&old).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch("INSERT INTO series VALUES (1, 'acme', 'm', '{}', 0)")
                .unwrap();
        }
        let store = TelemetryStore::open(&old).unwrap();
        assert_eq!(store.hasher(), SeriesHasher::Legacy);
    }

    #[test]
    fn the_buffer_pool_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap();
        let limit: String = store
            .reader
            .lock()
            .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(limit, "256.0 MiB");
    }
}
