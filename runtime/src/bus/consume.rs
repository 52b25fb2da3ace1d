//! A store's side of the bus: a member of a Kafka consumer group reading the flows topic
//! into this node's flow store.
//!
//! In: Kafka records of schema version 1 (`schema.rs`). Out: `RawFlow` batches handed to
//! the store's commit (`FlowService::commit_from_bus`), then the consumed offsets committed to
//! Kafka.
//!
//! **Exactly once into the store.** Kafka's committed offsets are the truth. Before each
//! commit of rows the store writes an *intent* (`<data_dir>/bus-intent.json`: the raw log's
//! next sequence number and the offsets the rows end at) and holds its rollups in memory;
//! after Kafka confirmed the offsets the intent goes and the rollups may be written. A crash
//! in between leaves the intent: at the next start, before the flow store opens,
//! [`reconcile`] asks Kafka — if it holds the intent's offsets the rows stay, otherwise the
//! raw log is cut back to the intent's sequence number (those records are read again, here or
//! by the store the partitions moved to). So a record is in exactly one store, once. If Kafka
//! refuses a commit at run time (this member lost the partitions), the consumer stops with
//! the intent kept, and the next start settles it the same way. A record
//! of another schema version is **refused**: its partition is paused at that offset (nothing
//! after it is read, nothing lost) and the reason is in `sotp flows status` and the log,
//! until a sotp that reads it takes over. Flows of a tenant this store does not have are
//! counted and dropped, as a single process drops flows of unmapped exporters.

use super::schema::{self, SCHEMA_HEADER, SchemaError};
use crate::flow::rawlog::RawFlow;
use crate::flow::store::Names;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Records read before their rows are committed and their offsets with them.
const MAX_RECORDS: usize = 256;
const MAX_WAIT: Duration = Duration::from_millis(200);
/// Refusals kept for the status (a partition handed back and forth refuses again).
const MAX_REFUSALS: usize = 64;
/// How often the consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
}

/// What the consumer did (on `/metrics` as `sotp_bus_*`).
#[derive(Default, Debug)]
pub struct ConsumeCounters {
    pub records: AtomicU64,
    pub flows: AtomicU64,
    /// Flows of tenants this store does not have.
    pub unmapped: AtomicU64,
    /// Records refused (another schema version, undecodable).
    pub refused: AtomicU64,
    pub commit_failures: AtomicU64,
    /// Messages behind the newest on the partitions this store holds (last measured).
    pub lag: AtomicU64,
}

/// A partition paused on a record it refuses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refusal {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// What the consumer needs of the flow service.
pub trait FlowSink: Send + Sync {
    fn names(&self) -> std::sync::Arc<Names>;
    /// Commit the flows durably; false if the store could not (nothing of them kept).
    fn commit(&self, flows: Vec<RawFlow>) -> bool;
    /// The raw log's next sequence number.
    fn next_seq(&self) -> u64;
    /// Keep the rollups in memory while a commit is unconfirmed.
    fn hold_rollups(&self, held: bool);
}

/// The file holding the commit in flight.
pub const INTENT_FILE: &str = "bus-intent.json";

/// A commit of rows whose offsets Kafka has not confirmed yet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    pub topic: String,
    /// The raw log's next sequence number before the rows: where to cut back to.
    pub cut_to: u64,
    /// (partition, next offset) the rows end at.
    pub offsets: Vec<(i32, i64)>,
}

fn write_intent(dir: &Path, intent: &Intent) -> std::io::Result<()> {
    let path = dir.join(INTENT_FILE);
    let tmp = dir.join(format!("{INTENT_FILE}.tmp"));
    let file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&file, intent)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn remove_intent(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(INTENT_FILE)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Settle a commit a crash left unconfirmed, before the flow store opens: keep its rows if
/// Kafka holds its offsets, else cut the raw log back (see the module doc). Waits up to
/// `wait` for Kafka to answer. Returns the flows cut.
pub fn reconcile(data_dir: &Path, config: &ConsumerConfig, wait: Duration) -> anyhow::Result<u64> {
    let path = data_dir.join(INTENT_FILE);
    let intent: Intent = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut asked = TopicPartitionList::new();
    for &(partition, _) in &intent.offsets {
        asked.add_partition(&intent.topic, partition);
    }
    let deadline = Instant::now() + wait;
    let committed = loop {
        match consumer.committed_offsets(asked.clone(), Duration::from_secs(5)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for Kafka to settle the last bus commit");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => anyhow::bail!(
                "cannot settle the last bus commit ({}): Kafka does not answer: {e}",
                path.display()
            ),
        }
    };
    tracing::info!(
        ?intent,
        committed = ?committed.elements().iter().map(|e| (e.partition(), e.offset())).collect::<Vec<_>>(),
        "settling the last bus commit, which a crash left unconfirmed"
    );
    let confirmed = intent.offsets.iter().all(|&(partition, next)| {
        committed
            .find_partition(&intent.topic, partition)
            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= next))
    });
    let cut = if confirmed {
        tracing::info!("Kafka holds the last bus commit's offsets: its flows stay");
        0
    } else {
        let mut log = crate::flow::rawlog::RawLog::open(&data_dir.join("flows-raw"), 1)?;
        let cut = log.truncate_to(intent.cut_to)?;
        tracing::warn!(
            flows = cut,
            "the last bus commit was not confirmed by Kafka: its flows were cut from the raw log and will be read again"
        );
        cut
    };
    remove_intent(data_dir)?;
    Ok(cut)
}

pub struct BusConsumer {
    consumer: BaseConsumer,
    config: ConsumerConfig,
    /// Where the intent is written (the data dir).
    intent_dir: PathBuf,
    /// Why the consumer stopped, if it did.
    pub halted: parking_lot::Mutex<Option<String>>,
    pub counters: ConsumeCounters,
    pub refusals: parking_lot::Mutex<Vec<Refusal>>,
    paused: parking_lot::Mutex<std::collections::HashSet<i32>>,
}

impl BusConsumer {
    pub fn new(
        config: ConsumerConfig,
        intent_dir: &Path,
    ) -> Result<BusConsumer, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A store that died gives its partitions up after 10 s (Kafka's default: 45 s).
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .create()?;
        consumer.subscribe(&[&config.topic])?;
        Ok(BusConsumer {
            consumer,
            config,
            intent_dir: intent_dir.to_path_buf(),
            halted: Default::default(),
            counters: Default::default(),
            refusals: Default::default(),
            paused: Default::default(),
        })
    }

    /// Read, commit, repeat until `stop`.
    pub fn run(&self, sink: &dyn FlowSink, stop: &AtomicBool) {
        let mut last_lag = Instant::now() - LAG_EVERY;
        while !stop.load(Relaxed) {
            // Per partition: the flows read, the first offset read and the next to read.
            let mut read: BTreeMap<i32, (Vec<RawFlow>, i64, i64)> = BTreeMap::new();
            let started = Instant::now();
            let mut records = 0;
            while records < MAX_RECORDS && started.elapsed() < MAX_WAIT {
                let Some(message) = self.consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "bus consumer");
                        continue;
                    }
                };
                records += 1;
                let partition = message.partition();
                if self.paused.lock().contains(&partition) {
                    continue; // read before the pause took effect: read again after it
                }
                let entry = read
                    .entry(partition)
                    .or_insert_with(|| (Vec::new(), message.offset(), message.offset()));
                match self.decode(&message, &sink.names(), &mut entry.0) {
                    Ok(()) => entry.2 = message.offset() + 1,
                    Err(e @ (SchemaError::NoVersion | SchemaError::UnknownVersion(_))) => {
                        self.refuse(&message, e);
                    }
                    Err(e) => {
                        // Written by a SOTP inlet of this version, yet unreadable: counted
                        // and passed over rather than stopping the exporter's partition.
                        self.counters.refused.fetch_add(1, Relaxed);
                        tracing::warn!(partition, offset = message.offset(), error = %e, "an undecodable bus record skipped");
                        entry.2 = message.offset() + 1;
                    }
                }
            }
            // Records of partitions revoked while polling belong to their new owner now.
            if let Ok(assigned) = self.consumer.assignment() {
                read.retain(|&p, _| assigned.find_partition(&self.config.topic, p).is_some());
            }
            let first: BTreeMap<i32, i64> = read.iter().map(|(&p, e)| (p, e.1)).collect();
            let next: BTreeMap<i32, i64> = read
                .iter()
                .filter(|(_, e)| e.2 > e.1)
                .map(|(&p, e)| (p, e.2))
                .collect();
            let flows: Vec<RawFlow> = read.into_values().flat_map(|e| e.0).collect();
            if flows.is_empty() {
                self.commit_offsets(&next);
            } else if let Err(stop) = self.commit_rows(sink, flows, &next, &first) {
                tracing::error!(reason = %stop, "the bus consumer stopped");
                *self.halted.lock() = Some(stop);
                return;
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                self.measure_lag();
            }
        }
    }

    fn decode(
        &self,
        message: &BorrowedMessage<'_>,
        names: &Names,
        out: &mut Vec<RawFlow>,
    ) -> Result<(), SchemaError> {
        let version = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == SCHEMA_HEADER)
                .and_then(|h| h.value)
        });
        let batch = schema::decode_batch(version, message.payload().unwrap_or_default())?;
        let mut decoded = Vec::with_capacity(batch.len());
        for m in &batch {
            decoded.push(schema::to_record(m)?);
        }
        self.counters.records.fetch_add(1, Relaxed);
        for (m, record) in batch.iter().zip(decoded) {
            let Some(tenant) = names.live_tenant_id(&m.tenant) else {
                self.counters.unmapped.fetch_add(1, Relaxed);
                continue;
            };
            let app = names.app_id(&m.application).unwrap_or(0);
            out.push(RawFlow {
                record,
                tenant,
                app,
            });
            self.counters.flows.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Pause the partition at a record this store cannot read, and say why.
    fn refuse(&self, message: &BorrowedMessage<'_>, e: SchemaError) {
        self.counters.refused.fetch_add(1, Relaxed);
        let refusal = Refusal {
            partition: message.partition(),
            offset: message.offset(),
            reason: e.to_string(),
        };
        tracing::error!(
            topic = %self.config.topic,
            partition = refusal.partition,
            offset = refusal.offset,
            reason = %refusal.reason,
            "bus record refused: its partition is paused here until a sotp that reads it takes over"
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.topic, message.partition());
        let _ = self.consumer.pause(&tpl);
        self.paused.lock().insert(message.partition());
        // The records read after it in this round are not committed either.
        let _ = self.consumer.seek(
            &self.config.topic,
            message.partition(),
            Offset::Offset(message.offset()),
            Duration::from_secs(5),
        );
        let mut refusals = self.refusals.lock();
        if refusals.len() >= MAX_REFUSALS {
            refusals.remove(0);
        }
        refusals.push(refusal);
    }

    /// Intent, rows, offsets, in that order (see the module doc). `Err`: the consumer must
    /// stop (the intent stays for the next start).
    fn commit_rows(
        &self,
        sink: &dyn FlowSink,
        flows: Vec<RawFlow>,
        next: &BTreeMap<i32, i64>,
        first: &BTreeMap<i32, i64>,
    ) -> Result<(), String> {
        let intent = Intent {
            topic: self.config.topic.clone(),
            cut_to: sink.next_seq(),
            offsets: next.iter().map(|(&p, &o)| (p, o)).collect(),
        };
        sink.hold_rollups(true);
        if let Err(e) = write_intent(&self.intent_dir, &intent) {
            sink.hold_rollups(false);
            tracing::error!(error = %e, "the bus intent cannot be written; reading again");
            self.rewind(first);
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        if !sink.commit(flows) {
            // Nothing of them kept: read them again from the last committed offsets.
            let _ = remove_intent(&self.intent_dir);
            sink.hold_rollups(false);
            self.rewind(first);
            std::thread::sleep(Duration::from_secs(1));
            return Ok(());
        }
        failpoint_after_rows();
        for attempt in 1..=5 {
            if self.commit_offsets(next) {
                remove_intent(&self.intent_dir)
                    .map_err(|e| format!("removing the bus intent: {e}"))?;
                sink.hold_rollups(false);
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(attempt));
        }
        Err("Kafka refused the offsets of rows already stored (this member lost its partitions?): restart sotp to settle them".into())
    }

    /// Commit offsets to Kafka; whether it took them.
    fn commit_offsets(&self, next: &BTreeMap<i32, i64>) -> bool {
        if next.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for (&partition, &offset) in next {
            let _ = tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset));
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => true,
            Err(e) => {
                self.counters.commit_failures.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "bus offsets not committed");
                false
            }
        }
    }

    /// After a failed store commit: read the batch again from its first offsets.
    fn rewind(&self, first: &BTreeMap<i32, i64>) {
        for (&partition, &offset) in first {
            if let Err(e) = self.consumer.seek(
                &self.config.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                tracing::error!(partition, error = %e, "cannot seek back after a failed store commit");
            }
        }
    }

    /// Sum over the partitions this member holds of (newest offset − position).
    fn measure_lag(&self) {
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut lag = 0u64;
        for e in assigned.elements() {
            let Ok((_, high)) =
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
            else {
                continue;
            };
            let at = positions
                .find_partition(e.topic(), e.partition())
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            lag += (high - at).max(0) as u64;
        }
        self.counters.lag.store(lag, Relaxed);
    }
}

/// `SOTP_FAILPOINT_BUS_ABORT_AFTER_ROWS=N`: abort the process after the N-th commit of rows,
/// before their offsets reach Kafka (the crash the intent is for; tests/e2e/bus.rs).
fn failpoint_after_rows() {
    static COMMITS: AtomicU64 = AtomicU64::new(0);
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("SOTP_FAILPOINT_BUS_ABORT_AFTER_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(at) = at
        && COMMITS.fetch_add(1, Relaxed) + 1 >= *at
    {
        eprintln!("failpoint: aborting after a bus commit of rows, before its offsets");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_is_written_durably_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let intent = Intent {
            topic: "sotp-flows".into(),
            cut_to: 42,
            offsets: vec![(0, 10), (3, 7)],
        };
        write_intent(dir.path(), &intent).unwrap();
        let back: Intent =
            serde_json::from_slice(&std::fs::read(dir.path().join(INTENT_FILE)).unwrap()).unwrap();
        assert_eq!(back, intent);
        remove_intent(dir.path()).unwrap();
        remove_intent(dir.path()).unwrap();
        assert!(!dir.path().join(INTENT_FILE).exists());
    }
}
