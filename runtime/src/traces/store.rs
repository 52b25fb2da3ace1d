//! `traces.sqlite`: spans, their resources and the forwarding cursors, in a database of
//! their own so span writes never queue behind the management state's writer.
//!
//! A span is keyed by (tenant, trace id, span id): a client retrying a batch stores nothing
//! twice. `seq` orders spans as they arrived; the OTLP forwarder's cursor is a `seq`, so
//! what was stored while the backend was down is sent, in order, once it is back. WAL with
//! `synchronous = NORMAL`: a crash of SOTP loses nothing committed; a power loss may lose the
//! last moments of spans (telemetry, not state).

use super::otlp::SpanRow;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (tenant, hash)
);
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,
    route TEXT,
    http_status INTEGER,
    received_ms INTEGER NOT NULL,
    resource INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_id ON spans (tenant, trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_start ON spans (tenant, start_ns);
CREATE TABLE IF NOT EXISTS cursors (
    tenant TEXT PRIMARY KEY,
    forwarded_seq INTEGER NOT NULL
);
";

/// A stored span: its resource (and scope) and the span, both OTLP protobuf.
pub type StoredSpan = (Vec<u8>, Vec<u8>);

/// Spans of one resource (and scope), in arrival order: the resource, the spans.
pub type ResourceGroup = (Vec<u8>, Vec<Vec<u8>>);

#[derive(Debug, thiserror::Error)]
#[error("trace store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// What a trace search asks for.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    pub service: Option<String>,
    /// Traces with a span whose route starts with this.
    pub route: Option<String>,
    pub min_duration_ns: Option<i64>,
    /// Only traces with an error span (`Some(true)`), or without (`Some(false)`).
    pub error: Option<bool>,
    /// Span start times, nanoseconds since the epoch: `[from, to)`.
    pub from_ns: i64,
    pub to_ns: i64,
    pub limit: usize,
}

/// One trace in a search's answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root span's service and name (the earliest span when the root is missing).
    pub service: String,
    pub name: String,
    pub route: Option<String>,
    pub start_ms: i64,
    pub duration_ms: f64,
    pub spans: u64,
    pub errors: u64,
    pub services: Vec<String>,
}

pub struct TraceStore {
    conn: parking_lot::Mutex<Connection>,
}

impl TraceStore {
    pub fn open(path: &Path) -> Result<TraceStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(TraceStore {
            conn: parking_lot::Mutex::new(conn),
        })
    }

    /// Store spans in one transaction; returns which were new (not seen before).
    pub fn insert(
        &self,
        tenant: &str,
        spans: &[SpanRow],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut added = Vec::with_capacity(spans.len());
        {
            let mut resource_id = tx.prepare_cached(
                "INSERT INTO resources (tenant, hash, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, hash) DO UPDATE SET hash = hash RETURNING id",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO spans (tenant, trace_id, span_id, parent_id, service, name,
                    kind, start_ns, duration_ns, status, route, http_status, received_ms,
                    resource, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            let mut last: Option<(&[u8], i64)> = None;
            for s in spans {
                let id = match last {
                    Some((bytes, id)) if bytes == s.resource.as_slice() => id,
                    _ => {
                        let hash =
                            hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&s.resource)[..16]);
                        let id: i64 = resource_id
                            .query_row(params![tenant, hash, s.resource], |r| r.get(0))?;
                        last = Some((&s.resource, id));
                        id
                    }
                };
                let stored = insert.execute(params![
                    tenant,
                    s.trace_id,
                    s.span_id,
                    s.parent_id,
                    s.service,
                    s.name,
                    s.kind,
                    s.start_ns,
                    s.duration_ns,
                    s.status,
                    s.route,
                    s.http_status,
                    now_ms,
                    id,
                    s.body
                ])?;
                added.push(stored == 1);
            }
        }
        tx.commit()?;
        Ok(added)
    }

    pub fn search(&self, tenant: &str, q: &TraceQuery) -> Result<Vec<TraceSummary>, StoreError> {
        let conn = self.conn.lock();
        // The traces with a matching span in the window, newest first...
        let mut ids = conn.prepare_cached(
            "SELECT trace_id, MIN(start_ns) AS first FROM spans
             WHERE tenant = ?1 AND start_ns >= ?2 AND start_ns < ?3
               AND (?4 IS NULL OR service = ?4)
               AND (?5 IS NULL OR substr(route, 1, length(?5)) = ?5)
             GROUP BY trace_id ORDER BY first DESC LIMIT ?6",
        )?;
        // Candidates beyond the limit, since duration and error filters come after.
        let scan = (q.limit * 20).clamp(100, 20_000) as i64;
        let candidates: Vec<String> = ids
            .query_map(
                params![tenant, q.from_ns, q.to_ns, q.service, q.route, scan],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for trace_id in candidates {
            let Some(summary) = summarize(&conn, tenant, &trace_id)? else {
                continue;
            };
            let long_enough = q
                .min_duration_ns
                .is_none_or(|min| summary.duration_ms * 1e6 >= min as f64);
            let error_ok = q.error.is_none_or(|e| e == (summary.errors > 0));
            if long_enough && error_ok {
                out.push(summary);
                if out.len() >= q.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every span of a trace, in start order: (resource, body) pairs.
    pub fn trace(&self, tenant: &str, trace_id: &str) -> Result<Vec<StoredSpan>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT r.body, s.body FROM spans s JOIN resources r ON r.id = s.resource
             WHERE s.tenant = ?1 AND s.trace_id = ?2 ORDER BY s.start_ns, s.seq",
        )?;
        let rows = stmt
            .query_map(params![tenant, trace_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Spans stored after `after` (a `seq`), at most `limit`, grouped by resource in arrival
    /// order: (last seq, [(resource, [span bodies])]).
    pub fn since(
        &self,
        tenant: &str,
        after: i64,
        limit: usize,
    ) -> Result<(i64, Vec<ResourceGroup>), StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT s.seq, s.resource, r.body, s.body FROM spans s
             JOIN resources r ON r.id = s.resource
             WHERE s.tenant = ?1 AND s.seq > ?2 ORDER BY s.seq LIMIT ?3",
        )?;
        let mut last = after;
        let mut groups: Vec<(i64, Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        let mut rows = stmt.query(params![tenant, after, limit as i64])?;
        while let Some(row) = rows.next()? {
            last = row.get(0)?;
            let resource_id: i64 = row.get(1)?;
            let body: Vec<u8> = row.get(3)?;
            match groups.iter_mut().find(|(id, _, _)| *id == resource_id) {
                Some((_, _, spans)) => spans.push(body),
                None => groups.push((resource_id, row.get(2)?, vec![body])),
            }
        }
        Ok((last, groups.into_iter().map(|(_, r, s)| (r, s)).collect()))
    }

    pub fn cursor(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT forwarded_seq FROM cursors WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_cursor(&self, tenant: &str, seq: i64) -> Result<(), StoreError> {
        self.conn.lock().execute(
            "INSERT INTO cursors (tenant, forwarded_seq) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET forwarded_seq = excluded.forwarded_seq",
            params![tenant, seq],
        )?;
        Ok(())
    }

    /// The newest `seq` of the tenant (0 when it has no spans).
    pub fn last_seq(&self, tenant: &str) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM spans WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?)
    }

    /// Spans of the tenant stored after `seq`.
    pub fn count_after(&self, tenant: &str, seq: i64) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM spans WHERE tenant = ?1 AND seq > ?2",
            params![tenant, seq],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub fn count(&self, tenant: &str) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM spans WHERE tenant = ?1",
            [tenant],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Drop the tenant's spans that started before `before_ns`, then its oldest ones beyond
    /// `keep`; returns how many went.
    pub fn prune(&self, tenant: &str, before_ns: i64, keep: u64) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        let mut removed = conn.execute(
            "DELETE FROM spans WHERE tenant = ?1 AND start_ns < ?2",
            params![tenant, before_ns],
        )? as u64;
        removed += conn.execute(
            "DELETE FROM spans WHERE tenant = ?1 AND seq <= (
                SELECT seq FROM spans WHERE tenant = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![tenant, keep as i64],
        )? as u64;
        Ok(removed)
    }

    /// Everything of a tenant (the tenant is being deleted).
    pub fn purge(&self, tenant: &str) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        for table in ["spans", "resources", "cursors"] {
            conn.execute(&format!("DELETE FROM {table} WHERE tenant = ?1"), [tenant])?;
        }
        Ok(())
    }

    pub fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT tenant FROM resources")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

fn summarize(
    conn: &Connection,
    tenant: &str,
    trace_id: &str,
) -> Result<Option<TraceSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT service, name, route, start_ns, start_ns + duration_ns, status, parent_id
         FROM spans WHERE tenant = ?1 AND trace_id = ?2 ORDER BY start_ns, seq",
    )?;
    let mut rows = stmt.query(params![tenant, trace_id])?;
    let mut summary: Option<TraceSummary> = None;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut root_found = false;
    while let Some(r) = rows.next()? {
        let (service, name, route): (String, String, Option<String>) =
            (r.get(0)?, r.get(1)?, r.get(2)?);
        let (start, end, status, parent): (i64, i64, i32, String) =
            (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
        first = first.min(start);
        last = last.max(end);
        let s = summary.get_or_insert_with(|| TraceSummary {
            trace_id: trace_id.to_string(),
            service: service.clone(),
            name: name.clone(),
            route: route.clone(),
            start_ms: 0,
            duration_ms: 0.0,
            spans: 0,
            errors: 0,
            services: Vec::new(),
        });
        if parent.is_empty() && !root_found {
            root_found = true;
            s.service = service.clone();
            s.name = name;
            s.route = route;
        }
        s.spans += 1;
        s.errors += u64::from(status == 2);
        if !s.services.contains(&service) {
            s.services.push(service);
        }
    }
    Ok(summary.map(|mut s| {
        s.start_ms = first / 1_000_000;
        s.duration_ms = (last - first) as f64 / 1e6;
        s
    }))
}
