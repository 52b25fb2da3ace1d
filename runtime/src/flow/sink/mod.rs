//! Flow exports (QuestDB over ILP, Loki's push API) that lose nothing while a sink is down.
//!
//! The flow store already holds every raw record on disk with a sequence number, so it *is*
//! the sinks' buffer: each sink runs on its own thread, reads the rows after its cursor, sends
//! them, and only when the sink acknowledged them (HTTP 2xx) moves its cursor, persisted in
//! `flow_sink_cursors` beside the rows. A sink that is down, slow or restarted resumes where it
//! was acknowledged; `sotp` restarting loses nothing either. The buffer is bounded by the raw
//! retention (`runtime.flows.raw_retention`): rows it deletes before a sink caught up are
//! counted as lost (`sotp_flow_sink_lost_rows_total`), never silently skipped — as are entries
//! damaged on disk, which the log's reader skips (`sotp_flow_raw_corrupt_entries_total`).
//!
//! Delivery is at least once: a batch the sink stored but whose acknowledgement was lost is sent
//! again. The QuestDB sink creates its table with `DEDUP UPSERT KEYS(ts, seq)` so a replay
//! overwrites rather than duplicates; Loki drops an entry whose stream, timestamp and line are
//! all equal to one it has, and every line carries its `seq`.
//!
//! Errors are either *retryable* (connection refused, timeouts, 429, 5xx: back off, retry the
//! same batch forever) or a *rejection* (other 4xx: the sink will never take these rows; they
//! are logged, counted in `sotp_flow_sink_rejected_rows_total` and skipped, so one bad batch
//! cannot stall an export for good).
//!
//! The shape follows Vector's sinks (`src/sinks/loki`): request building is a pure function
//! with golden tests; the transport around it only sends and classifies the answer.

pub mod loki;
pub mod questdb;

use super::store::{ExportRow, FlowStore};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `[runtime.flows.sinks.NAME]`: the name keys the sink's cursor, so renaming a sink starts a
/// new export (from the rows committed after it first ran).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    Questdb(questdb::QuestDbConfig),
    Loki(loki::LokiConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Questdb(_) => "questdb",
            SinkConfig::Loki(_) => "loki",
        }
    }

    fn batch_rows(&self) -> usize {
        match self {
            SinkConfig::Questdb(c) => c.batch_rows,
            SinkConfig::Loki(c) => c.batch_rows,
        }
    }

    fn build(&self) -> Result<Box<dyn FlowSink>, String> {
        Ok(match self {
            SinkConfig::Questdb(c) => Box::new(questdb::QuestDbSink::new(c.clone())?),
            SinkConfig::Loki(c) => Box::new(loki::LokiSink::new(c.clone())?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Try the same rows again later: the sink is down, overloaded or timed out.
    #[error("{0}")]
    Retry(String),
    /// The sink refused these rows and always will (a 4xx other than 429).
    #[error("rejected: {0}")]
    Rejected(String),
}

/// One export destination. `send` returns only once the sink acknowledged (or refused) the
/// whole batch.
pub trait FlowSink: Send {
    fn send(&mut self, rows: &[ExportRow]) -> Result<(), SinkError>;
}

#[derive(Default, Debug)]
pub struct SinkCounters {
    pub rows: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub rejected_rows: AtomicU64,
    pub lost_rows: AtomicU64,
    /// Last sequence number acknowledged.
    pub cursor: AtomicU64,
}

/// A running sink as `/metrics` and `/v1/flows/status` see it.
pub struct SinkHandle {
    pub name: String,
    pub kind: &'static str,
    pub counters: SinkCounters,
    pub last_error: Mutex<Option<String>>,
}

impl SinkHandle {
    pub fn status(&self, last_seq: u64) -> serde_json::Value {
        let cursor = self.counters.cursor.load(Relaxed);
        serde_json::json!({
            "name": self.name,
            "type": self.kind,
            "cursor": cursor,
            "backlog": last_seq.saturating_sub(cursor),
            "sent_rows": self.counters.rows.load(Relaxed),
            "failures": self.counters.failures.load(Relaxed),
            "rejected_rows": self.counters.rejected_rows.load(Relaxed),
            "lost_rows": self.counters.lost_rows.load(Relaxed),
            "last_error": *self.last_error.lock(),
        })
    }
}

/// What a sink thread needs from the flow service.
pub struct SinkContext {
    pub store: Arc<FlowStore>,
    pub committed: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    pub stop: Arc<AtomicBool>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// When caught up, look again at least this often even without a commit signal.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The sinks' handles (for status and metrics) and their threads (joined on shutdown).
pub type Started = (Vec<Arc<SinkHandle>>, Vec<std::thread::JoinHandle<()>>);

/// Start one thread per configured sink. A sink that cannot be built (bad URL) is an error
/// here, at startup, rather than a silent export that never happens.
pub fn start(sinks: &BTreeMap<String, SinkConfig>, ctx: &SinkContext) -> anyhow::Result<Started> {
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for (name, config) in sinks {
        let sink = config
            .build()
            .map_err(|e| anyhow::anyhow!("flows: sink {name:?}: {e}"))?;
        let (handle, thread) = spawn(name, config.kind(), sink, config.batch_rows(), ctx)?;
        handles.push(handle);
        threads.push(thread);
    }
    Ok((handles, threads))
}

/// Run `sink` on its own thread from its persisted cursor (a new sink starts at the rows
/// committed from now on, not the whole history).
pub fn spawn(
    name: &str,
    kind: &'static str,
    sink: Box<dyn FlowSink>,
    batch_rows: usize,
    ctx: &SinkContext,
) -> anyhow::Result<(Arc<SinkHandle>, std::thread::JoinHandle<()>)> {
    let cursor = match ctx.store.sink_cursor(name)? {
        Some(c) => c,
        None => {
            let c = ctx.store.last_seq();
            ctx.store.set_sink_cursor(name, c)?;
            c
        }
    };
    let handle = Arc::new(SinkHandle {
        name: name.to_string(),
        kind,
        counters: SinkCounters::default(),
        last_error: Mutex::new(None),
    });
    handle.counters.cursor.store(cursor, Relaxed);
    let runner = Runner {
        handle: handle.clone(),
        sink,
        batch_rows: batch_rows.max(1),
        store: ctx.store.clone(),
        committed: ctx.committed.clone(),
        stop: ctx.stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("sotp-flow-sink-{name}"))
        .spawn(move || runner.run())?;
    tracing::info!(sink = %name, kind, cursor, "flow sink started");
    Ok((handle, thread))
}

struct Runner {
    handle: Arc<SinkHandle>,
    sink: Box<dyn FlowSink>,
    batch_rows: usize,
    store: Arc<FlowStore>,
    committed: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        while !self.stop.load(Relaxed) {
            let cursor = self.handle.counters.cursor.load(Relaxed);
            // Read before the query: rows up to `last` are committed and visible to it (and,
            // on a bus store, confirmed by Kafka: nothing a restart may cut is sent).
            let last_committed = self.store.exportable_seq();
            if cursor >= last_committed {
                self.wait_for_commit();
                continue;
            }
            let rows = match self.store.rows_after(cursor, self.batch_rows) {
                Ok(mut rows) => {
                    rows.retain(|r| r.seq <= last_committed);
                    rows
                }
                Err(e) => {
                    self.failed(&format!("reading the flow store: {e}"));
                    self.sleep(&mut backoff);
                    continue;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                // Everything up to `last_committed` was deleted by retention before it was
                // sent (rows committed since the query are not skipped).
                self.lost(last_committed - cursor);
                self.advance(last_committed);
                continue;
            };
            if rows[0].seq > cursor + 1 {
                self.lost(rows[0].seq - cursor - 1);
            }
            let span = tracing::info_span!(
                target: crate::traces::own::TARGET,
                "flow export",
                otel.name = %format!("flow export {}", self.handle.name),
                sotp.sink = %self.handle.name,
                sotp.rows = rows.len(),
            );
            match span.in_scope(|| self.sink.send(&rows)) {
                Ok(()) => {
                    let c = &self.handle.counters;
                    c.rows.fetch_add(rows.len() as u64, Relaxed);
                    c.batches.fetch_add(1, Relaxed);
                    *self.handle.last_error.lock() = None;
                    self.advance(last);
                    backoff = BACKOFF_MIN;
                }
                Err(SinkError::Rejected(reason)) => {
                    tracing::error!(sink = %self.handle.name, rows = rows.len(), first_seq = rows[0].seq,
                        %reason, "flow sink rejected a batch; skipping it");
                    self.handle
                        .counters
                        .rejected_rows
                        .fetch_add(rows.len() as u64, Relaxed);
                    self.failed(&format!("rejected: {reason}"));
                    self.advance(last);
                }
                Err(SinkError::Retry(reason)) => {
                    self.failed(&reason);
                    self.sleep(&mut backoff);
                }
            }
        }
    }

    fn advance(&self, seq: u64) {
        self.handle.counters.cursor.store(seq, Relaxed);
        if let Err(e) = self.store.set_sink_cursor(&self.handle.name, seq) {
            // The rows were acknowledged; at worst they are sent again after a restart.
            tracing::warn!(sink = %self.handle.name, error = %e, "could not persist the sink cursor");
        }
    }

    fn lost(&self, n: u64) {
        tracing::warn!(sink = %self.handle.name, rows = n,
            "flow rows deleted by retention (or damaged on disk) before this sink sent them");
        self.handle.counters.lost_rows.fetch_add(n, Relaxed);
    }

    fn failed(&self, reason: &str) {
        let was = self.handle.last_error.lock().replace(reason.to_string());
        self.handle.counters.failures.fetch_add(1, Relaxed);
        // Log the first failure of a streak and every change, not every retry.
        if was.as_deref() != Some(reason) {
            tracing::warn!(sink = %self.handle.name, error = %reason, "flow sink failed; will retry");
        }
    }

    fn sleep(&self, backoff: &mut Duration) {
        let until = std::time::Instant::now() + *backoff;
        while !self.stop.load(Relaxed) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
    }

    fn wait_for_commit(&self) {
        let (lock, cv) = &*self.committed;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *guard;
        let _ = cv
            .wait_timeout_while(guard, IDLE_POLL, |n| *n == seen && !self.stop.load(Relaxed))
            .unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<BTreeMap<String, SinkConfig>, String> {
        #[derive(Deserialize)]
        struct Flows {
            sinks: BTreeMap<String, SinkConfig>,
        }
        toml::from_str::<Flows>(toml_text)
            .map(|f| f.sinks)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sinks_parse_by_type_with_defaults_and_reject_unknown_keys() {
        let sinks = parse(
            "[sinks.qdb]\ntype = \"questdb\"\nconf = \"http::addr=127.0.0.1:9000;\"\n\
             [sinks.logs]\ntype = \"loki\"\nurl = \"http://127.0.0.1:3100/loki/api/v1/push\"\n",
        )
        .unwrap();
        match &sinks["qdb"] {
            SinkConfig::Questdb(c) => {
                assert_eq!(c.table, "flows");
                assert!(c.dedup);
            }
            other => panic!("{other:?}"),
        }
        match &sinks["logs"] {
            SinkConfig::Loki(c) => assert_eq!(c.labels["job"], "sotp-flows"),
            other => panic!("{other:?}"),
        }
        let err = parse("[sinks.x]\ntype = \"loki\"\nurl = \"http://a\"\nbatch = 3\n").unwrap_err();
        assert!(err.contains("batch"), "{err}");
        let err = parse("[sinks.x]\ntype = \"kafka\"\n").unwrap_err();
        assert!(err.contains("kafka"), "{err}");
    }

    /// A sink that refuses the first `fail` requests (retryable), then records what it got.
    struct Recording {
        fail: usize,
        got: Arc<Mutex<Vec<u64>>>,
    }

    impl FlowSink for Recording {
        fn send(&mut self, rows: &[ExportRow]) -> Result<(), SinkError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(SinkError::Retry("down".into()));
            }
            self.got.lock().extend(rows.iter().map(|r| r.seq));
            Ok(())
        }
    }

    fn flows(n: usize, end_ms: i64) -> Vec<super::super::rawlog::RawFlow> {
        let exporter = std::net::IpAddr::from([192, 0, 2, 1]);
        (0..n)
            .map(|i| {
                let mut record =
                    sotp_flow::FlowRecord::empty(sotp_flow::FlowProtocol::NetflowV5, exporter, 0);
                record.end_ms = end_ms;
                record.src_port = i as u16;
                super::super::rawlog::RawFlow {
                    record,
                    tenant: 0,
                    app: 0,
                }
            })
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        ctx: SinkContext,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = FlowStore::open(dir.path(), true, 64 << 20, &["acme"], &["other"]).unwrap();
        Fixture {
            _dir: dir,
            ctx: SinkContext {
                store: Arc::new(store),
                committed: Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new())),
                stop: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    fn commit(ctx: &SinkContext, rows: &[super::super::rawlog::RawFlow]) {
        ctx.store.commit(&[rows], &[]).unwrap();
        *ctx.committed.0.lock().unwrap() += 1;
        ctx.committed.1.notify_all();
    }

    fn wait_until(what: &str, ok: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_down_sink_gets_every_row_in_order_and_resumes_from_its_cursor() {
        let f = fixture();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Recording {
            fail: 3,
            got: got.clone(),
        };
        let (handle, thread) = spawn("t", "test", Box::new(sink), 7, &f.ctx).unwrap();
        for _ in 0..3 {
            commit(&f.ctx, &flows(10, crate::now_ms()));
        }
        wait_until("30 rows delivered", || got.lock().len() == 30);
        assert_eq!(*got.lock(), (1..=30).collect::<Vec<u64>>());
        assert_eq!(handle.counters.failures.load(Relaxed), 3);
        assert_eq!(handle.counters.cursor.load(Relaxed), 30);
        f.ctx.stop.store(true, Relaxed);
        f.ctx.committed.1.notify_all();
        thread.join().unwrap();

        // Restarted: it resumes after its persisted cursor; rows committed meanwhile arrive.
        commit(&f.ctx, &flows(5, crate::now_ms()));
        f.ctx.stop.store(false, Relaxed);
        let again = Arc::new(Mutex::new(Vec::new()));
        let sink = Recording {
            fail: 0,
            got: again.clone(),
        };
        let (_, thread) = spawn("t", "test", Box::new(sink), 7, &f.ctx).unwrap();
        wait_until("the 5 new rows", || again.lock().len() == 5);
        assert_eq!(*again.lock(), (31..=35).collect::<Vec<u64>>());
        f.ctx.stop.store(true, Relaxed);
        thread.join().unwrap();
    }

    #[test]
    fn rows_deleted_by_retention_before_they_were_sent_are_counted_lost() {
        let f = fixture();
        let got = Arc::new(Mutex::new(Vec::new()));
        // The sink is stopped (as when down for longer than the raw retention) while rows
        // arrive and retention deletes the older ones; then it starts again.
        let (handle, thread) = spawn(
            "t",
            "test",
            Box::new(Recording {
                fail: 0,
                got: got.clone(),
            }),
            100,
            &f.ctx,
        )
        .unwrap();
        f.ctx.stop.store(true, Relaxed);
        f.ctx.committed.1.notify_all();
        thread.join().unwrap();
        let old = crate::now_ms() - 3_600_000;
        commit(&f.ctx, &flows(4, old));
        // Retention deletes whole segments of the raw log.
        f.ctx.store.rotate_raw_segment().unwrap();
        commit(&f.ctx, &flows(3, crate::now_ms()));
        f.ctx
            .store
            .apply_retention(
                crate::now_ms(),
                Duration::from_secs(60),
                Duration::from_secs(60),
            )
            .unwrap();
        f.ctx.stop.store(false, Relaxed);
        let (handle2, thread) = spawn(
            "t",
            "test",
            Box::new(Recording {
                fail: 0,
                got: got.clone(),
            }),
            100,
            &f.ctx,
        )
        .unwrap();
        wait_until("the 3 kept rows", || got.lock().len() == 3);
        assert_eq!(*got.lock(), vec![5, 6, 7]);
        assert_eq!(handle2.counters.lost_rows.load(Relaxed), 4);
        assert_eq!(handle.counters.lost_rows.load(Relaxed), 0);
        f.ctx.stop.store(true, Relaxed);
        thread.join().unwrap();
    }
}
