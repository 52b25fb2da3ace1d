//! The embedded telemetry store (DuckDB) and its single writer thread.
//!
//! All writes go through one thread that owns the write connection and commits in groups:
//! whatever batches are waiting when it wakes are appended and committed in one transaction,
//! so a thousand components ticking at once cost one WAL sync, not a thousand. A batch is
//! *acknowledged* when its commit returned: DuckDB has written and synced its write-ahead log,
//! so the rows survive `kill -9` and are replayed on the next open.

use super::query::{Partial, counter_rate, group_key};
use super::{Batch, LedgerEntry, SampleQuery, SeriesPoints, series_id};
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
";

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

/// Series known to be committed, by id and by (tenant, metric).
#[derive(Default)]
struct SeriesIndex {
    by_id: HashMap<u64, Arc<SeriesMeta>>,
    by_metric: HashMap<(String, String), Vec<u64>>,
}

impl SeriesIndex {
    fn insert(&mut self, id: u64, meta: SeriesMeta) {
        let key = (meta.tenant.clone(), meta.metric.clone());
        if self.by_id.insert(id, Arc::new(meta)).is_none() {
            self.by_metric.entry(key).or_default().push(id);
        }
    }
}

struct WriteRequest {
    batch: Batch,
    done: oneshot::Sender<Result<(), String>>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct StoreCounters {
    pub commits: std::sync::atomic::AtomicU64,
    pub rows: std::sync::atomic::AtomicU64,
    pub commit_failures: std::sync::atomic::AtomicU64,
    pub commit_micros_total: std::sync::atomic::AtomicU64,
}

pub struct TelemetryStore {
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
            writer: Mutex::new(Some(tx)),
            ledger_clears,
            writer_thread: Mutex::new(Some(thread)),
            reader: Mutex::new(reader),
            index,
            counters,
        })
    }

    /// Commit a batch; resolves once it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        {
            let writer = self.writer.lock();
            let writer = writer.as_ref().ok_or(StoreError::WriterGone)?;
            writer
                .send(WriteRequest { batch, done })
                .map_err(|_| StoreError::WriterGone)?;
        }
        wait.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
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

fn writer_loop(
    mut conn: duckdb::Connection,
    rx: mpsc::Receiver<WriteRequest>,
    index: Arc<RwLock<SeriesIndex>>,
    counters: Arc<StoreCounters>,
    ledger_clears: Arc<Mutex<Vec<(String, String, LedgerEntry)>>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut rows: usize = group[0].batch.samples.len() + group[0].batch.logs.len();
        while rows < GROUP_ROWS {
            match rx.try_recv() {
                Ok(req) => {
                    rows += req.batch.samples.len() + req.batch.logs.len();
                    group.push(req);
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
            Ok(()) => {
                counters.commits.fetch_add(1, Relaxed);
                counters.rows.fetch_add(rows as u64, Relaxed);
            }
            Err(e) => {
                counters.commit_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "telemetry commit failed");
            }
        }
        for req in group {
            let _ = req.done.send(result.clone());
        }
    }
    if let Err(e) = conn.execute_batch("CHECKPOINT") {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
}

fn write_group(
    conn: &mut duckdb::Connection,
    group: &[WriteRequest],
    clears: &[(String, String, LedgerEntry)],
    index: &RwLock<SeriesIndex>,
) -> Result<(), StoreError> {
    let mut new_series: Vec<(u64, SeriesMeta)> = Vec::new();
    let mut seen_new: HashSet<u64> = HashSet::new();
    let tx = conn.transaction()?;
    {
        let known = index.read();
        let mut points = tx.appender("points")?;
        for req in group {
            let b = &req.batch;
            for s in &b.samples {
                let id = series_id(&b.tenant, &s.metric, &s.labels);
                if !known.by_id.contains_key(&id) && seen_new.insert(id) {
                    new_series.push((
                        id,
                        SeriesMeta {
                            tenant: b.tenant.clone(),
                            metric: s.metric.clone(),
                            labels: s.labels.iter().cloned().collect(),
                        },
                    ));
                }
                points.append_row(duckdb::params![id, s.ts_ms, s.value])?;
            }
        }
        points.flush()?;
        drop(points);
        if !new_series.is_empty() {
            let mut series = tx.appender("series")?;
            let now = crate::now_ms();
            for (id, m) in &new_series {
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
    if !new_series.is_empty() {
        let mut index = index.write();
        for (id, meta) in new_series {
            index.insert(id, meta);
        }
    }
    Ok(())
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
    group: &[WriteRequest],
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
    use crate::telemetry::{Aggregation, Matcher, SampleRow};

    fn sample(metric: &str, room: &str, ts: i64, v: f64) -> SampleRow {
        SampleRow {
            metric: metric.into(),
            labels: vec![("room".into(), room.into())],
            ts_ms: ts,
            value: v,
        }
    }

    fn query(metric: &str) -> SampleQuery {
        SampleQuery {
            tenant: "acme".into(),
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
            let samples = (0..10)
                .flat_map(|i| {
                    [
                        sample("temp", "kitchen", i * 1000, i as f64),
                        sample("temp", "hall", i * 1000, 100.0),
                    ]
                })
                .collect();
            store
                .commit(Batch {
                    tenant: "acme".into(),
                    component: "c".into(),
                    samples,
                    ..Default::default()
                })
                .await
                .unwrap();
            // Another tenant's identical series stays separate.
            store
                .commit(Batch {
                    tenant: "other".into(),
                    component: "c".into(),
                    samples: vec![sample("temp", "kitchen", 0, 999.0)],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let store = TelemetryStore::open(&path).unwrap();
        let mut q = query("temp");
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
