//! A store's side of the bus: a member of a Kafka consumer group reading the flows topic
//! into this node's flow store.
//!
//! In: Kafka records of schema version 1 (`schema.rs`). Out: `RawFlow` batches handed to
//! the store's commit (`FlowService::commit_from_bus`), then the consumed offsets committed to
//! Kafka.
//!
//! **Exactly once into the store.** Kafka's committed offsets are the truth, and each store
//! commits them in a **Kafka transaction** together with a *marker*: a record keyed by the
//! store's transactional id (`sotp-<group>-<name>`) on the compacted topic `<topic>-commits`, holding the commit's id. Before
//! each commit of rows the store writes an *intent* (`<data_dir>/bus-intent.json`: the id,
//! the raw log's next sequence number and the offsets the rows end at) and holds its rollups
//! in memory; once the transaction committed, the intent goes and the rollups may be
//! written. A crash in between leaves the intent: at the next start, before the flow store
//! opens, [`reconcile`] fences the store's previous incarnation (`init_transactions` aborts
//! a transaction it left open) and reads its newest marker — the marker shows the intent's
//! id exactly when its offsets were committed — and keeps the rows, or cuts the raw log back
//! to the intent's sequence number (those records are read again, here or by the store the
//! partitions moved to). The marker, not the offsets, decides: another store that took the
//! partitions over meanwhile and committed past them cannot make an uncommitted tail look
//! committed. So a record is in exactly one store, once. The transaction carries the consumer
//! group's generation, so a store that lost its partitions in a rebalance cannot commit
//! their offsets: it stops with the intent kept, and the next start settles it the same way.
//! A store's name (`runtime.flows.bus.name`) is in its transactional id: names must be unique
//! (a second store of the same name fences the first). A record
//! of another schema version is **refused**: its partition is paused at that offset (nothing
//! after it is read, nothing lost) and the reason is in `sotp flows status` and the log,
//! until a sotp that reads it takes over. Flows of a tenant this store does not have are
//! counted and dropped, as a single process drops flows of unmapped exporters.
//!
//! **Duplicates.** An inlet that spooled a batch the broker had in fact taken (the
//! acknowledgement lost in a timeout) sends it again with the same `sotp-batch` id; a store
//! remembers the ids of the last [`RECENT_BATCHES`] batches it committed per partition and
//! skips (counts) a batch it already stored. The window is in memory: a duplicate arriving
//! after a restart or a partition move is stored again.

use super::schema::{self, SCHEMA_HEADER, SchemaError};
use crate::flow::rawlog::RawFlow;
use crate::flow::store::Names;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
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
/// How long a transaction may stay open before the broker aborts it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Batch ids remembered per partition, to skip a batch sent twice.
pub const RECENT_BATCHES: usize = 10_000;

/// The ids of the batches last committed from one partition.
#[derive(Default)]
struct RecentBatches {
    order: std::collections::VecDeque<Vec<u8>>,
    ids: std::collections::HashSet<Vec<u8>>,
}

impl RecentBatches {
    fn contains(&self, id: &[u8]) -> bool {
        self.ids.contains(id)
    }

    fn add(&mut self, id: Vec<u8>) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > RECENT_BATCHES
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// This store's name: in its transactional id (`sotp-<group>-<name>`), its marker's key.
    pub name: String,
}

impl ConsumerConfig {
    /// The compacted topic of the stores' commit markers.
    pub fn commits_topic(&self) -> String {
        format!("{}-commits", self.topic)
    }

    fn transactional_id(&self) -> String {
        format!("sotp-{}-{}", self.group, self.name)
    }
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
    /// Batches skipped because this store had stored them already (same `sotp-batch`).
    pub duplicates: AtomicU64,
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
    /// Keep the rollups in memory and sinks behind while a commit is unconfirmed.
    fn hold_unconfirmed(&self, held: bool);
    /// Store interface counter samples read off the bus; false if the store could not.
    fn commit_counters(&self, counters: Vec<crate::flow::store::StoredCounters>) -> bool;
}

/// The file holding the commit in flight.
pub const INTENT_FILE: &str = "bus-intent.json";

/// A commit of rows whose offsets Kafka has not confirmed yet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    /// The commit's id, in the marker once its transaction committed (0: an intent of a
    /// SOTP before markers, settled by the committed offsets).
    #[serde(default)]
    pub id: u64,
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
    let deadline = Instant::now() + wait;
    let confirmed = loop {
        let answer = if intent.id == 0 {
            offsets_committed(config, &intent)
        } else {
            fence_and_read_marker(config).map(|landed| landed >= intent.id)
        };
        match answer {
            Ok(confirmed) => break confirmed,
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
        confirmed,
        "settled the last bus commit, which a crash left unconfirmed"
    );
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

/// A member of a store consumer group: offsets committed by SOTP, from the earliest record
/// when none is, cooperative rebalances, and a store that died gives its partitions up after
/// 10 s (Kafka's default: 45 s).
pub(super) fn store_group_member(
    brokers: &str,
    group: &str,
) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .create()
}

/// Fence this store's previous incarnation (its open transaction aborted) and read its
/// newest commit marker's id (0: none).
fn fence_and_read_marker(config: &ConsumerConfig) -> Result<u64, String> {
    let producer = transactional_producer(config).map_err(|e| e.to_string())?;
    producer
        .init_transactions(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    read_marker(config)
}

/// The newest marker of this store on the commits topic. Read committed up to the end the
/// topic had when this store's own transactions were all settled (its caller fenced them):
/// another store's transaction open at that moment holds the readable end back until it
/// ends, and stopping there could miss this store's newest marker.
fn read_marker(config: &ConsumerConfig) -> Result<u64, String> {
    let topic = config.commits_topic();
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("{}-markers", config.transactional_id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| e.to_string())?;
    // The end to read to: the high watermark, which a read-committed client is not told
    // (it hears the last stable offset, held back by any transaction still open).
    let end = {
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", format!("{}-markers", config.transactional_id()))
            // librdkafka's default is read_committed.
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(|e| e.to_string())?;
        probe
            .fetch_watermarks(&topic, 0, Duration::from_secs(5))
            .map_err(|e| format!("{topic}: {e}"))?
            .1
    };
    if end == 0 {
        return Ok(0);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&topic, 0, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    reader.assign(&list).map_err(|e| e.to_string())?;
    // Give up when nothing moves for 10 s; another store's open transaction may hold the
    // readable end back for up to its timeout (60 s), so that alone is no reason to.
    let key = config.transactional_id();
    let (mut progress, mut at) = (Instant::now(), -1);
    let mut landed = 0;
    while progress.elapsed() < Duration::from_secs(10) + TRANSACTION_TIMEOUT {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.offset() > at {
                    (progress, at) = (Instant::now(), m.offset());
                }
                if m.key() == Some(key.as_bytes())
                    && let Some(id) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|p| p.parse::<u64>().ok())
                {
                    landed = landed.max(id);
                }
                if m.offset() + 1 >= end {
                    return Ok(landed);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                // The readable end: past `end` once no transaction open before it remains.
                let at = reader
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(&topic, 0).map(|e| e.offset()));
                if matches!(at, Some(Offset::Offset(o)) if o >= end) {
                    return Ok(landed);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Err(format!(
        "{topic} was not read to offset {end}: reading stopped at {at}"
    ))
}

/// Whether Kafka holds an (id-less) intent's offsets.
fn offsets_committed(config: &ConsumerConfig, intent: &Intent) -> Result<bool, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut asked = TopicPartitionList::new();
    for &(partition, _) in &intent.offsets {
        asked.add_partition(&intent.topic, partition);
    }
    let committed = consumer
        .committed_offsets(asked, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(intent.offsets.iter().all(|&(partition, next)| {
        committed
            .find_partition(&intent.topic, partition)
            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= next))
    }))
}

fn transactional_producer(
    config: &ConsumerConfig,
) -> Result<ThreadedProducer<DefaultProducerContext>, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("transactional.id", config.transactional_id())
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .create()
}

/// Why a transaction did not commit.
enum TxnError {
    /// Try again (the transaction was aborted if it had to be).
    Retry(String),
    /// This store can no longer commit (fenced: another incarnation, or it left the group's
    /// generation): stop, settle at the next start.
    Fatal(String),
}

pub struct BusConsumer {
    consumer: BaseConsumer,
    /// Commits offsets and markers in transactions (see the module doc).
    txn: ThreadedProducer<DefaultProducerContext>,
    /// The next commit's id (one more than the newest marker, once read at start).
    next_id: AtomicU64,
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
        let consumer = store_group_member(&config.brokers, &config.group)?;
        consumer.subscribe(&[&config.topic])?;
        let txn = transactional_producer(&config)?;
        Ok(BusConsumer {
            consumer,
            txn,
            next_id: AtomicU64::new(0),
            config,
            intent_dir: intent_dir.to_path_buf(),
            halted: Default::default(),
            counters: Default::default(),
            refusals: Default::default(),
            paused: Default::default(),
        })
    }

    /// Make this store the one transactional producer of its name, and learn its newest
    /// commit id; retried until Kafka answers or `stop`. False: stop.
    fn init(&self, stop: &AtomicBool) -> bool {
        let topic = self.config.commits_topic();
        let mut warned = false;
        while !stop.load(Relaxed) {
            let ready = super::topics::ensure_compacted(
                &self.config.brokers,
                &topic,
                1,
                super::topics::COMMITS_SEGMENT,
            )
            .and_then(|()| {
                self.txn
                    .init_transactions(Duration::from_secs(10))
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| read_marker(&self.config));
            match ready {
                Ok(landed) => {
                    // Never below the clock either (µs), so ids keep rising across restarts.
                    let floor = crate::now_ms().max(0) as u64 * 1000;
                    self.next_id.store((landed + 1).max(floor), Relaxed);
                    return true;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "the bus store waits for Kafka (transactions, {topic})");
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        false
    }

    /// Read, commit, repeat until `stop`.
    pub fn run(&self, sink: &dyn FlowSink, stop: &AtomicBool) {
        if !self.init(stop) {
            return;
        }
        let mut last_lag = Instant::now() - LAG_EVERY;
        let mut recent: BTreeMap<i32, RecentBatches> = BTreeMap::new();
        while !stop.load(Relaxed) {
            // Per partition: the flows read, the first offset read and the next to read.
            let mut read: BTreeMap<i32, (Vec<RawFlow>, i64, i64)> = BTreeMap::new();
            // The batch ids of this round, remembered once committed.
            let mut round: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
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
                if let Some(id) = batch_id(&message) {
                    let ids = round.entry(partition).or_default();
                    let seen = recent.get(&partition).is_some_and(|r| r.contains(id))
                        || ids.iter().any(|i| i == id);
                    if seen {
                        self.counters.duplicates.fetch_add(1, Relaxed);
                        tracing::debug!(
                            partition,
                            offset = message.offset(),
                            "a batch stored already skipped"
                        );
                        entry.2 = message.offset() + 1;
                        continue;
                    }
                    ids.push(id.to_vec());
                }
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
                let held = |p: &i32| assigned.find_partition(&self.config.topic, *p).is_some();
                read.retain(|p, _| held(p));
                round.retain(|p, _| held(p));
                recent.retain(|p, _| held(p));
                // A partition paused here and handed to another store is read (and refused
                // again, if it must be) should it come back.
                self.paused.lock().retain(|p| held(p));
            }
            let first: BTreeMap<i32, i64> = read.iter().map(|(&p, e)| (p, e.1)).collect();
            let next: BTreeMap<i32, i64> = read
                .iter()
                .filter(|(_, e)| e.2 > e.1)
                .map(|(&p, e)| (p, e.2))
                .collect();
            let flows: Vec<RawFlow> = read.into_values().flat_map(|e| e.0).collect();
            let committed = if flows.is_empty() {
                self.commit_offsets(&next)
            } else {
                match self.commit_rows(sink, flows, &next, &first) {
                    Ok(committed) => committed,
                    Err(stop) => {
                        // Out of the group at once: the partitions move to the other stores
                        // (which read from the committed offsets), not after a timeout.
                        self.leave_group();
                        tracing::error!(reason = %stop, "the bus consumer stopped");
                        *self.halted.lock() = Some(stop);
                        return;
                    }
                }
            };
            if committed {
                for (partition, ids) in round {
                    let window = recent.entry(partition).or_default();
                    for id in ids {
                        window.add(id);
                    }
                }
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

    /// Intent, rows, offsets, in that order (see the module doc). `Ok(false)`: nothing was
    /// committed, the records will be read again. `Err`: the consumer must stop (the intent
    /// stays for the next start).
    fn commit_rows(
        &self,
        sink: &dyn FlowSink,
        flows: Vec<RawFlow>,
        next: &BTreeMap<i32, i64>,
        first: &BTreeMap<i32, i64>,
    ) -> Result<bool, String> {
        let intent = Intent {
            id: self.next_id.fetch_add(1, Relaxed),
            topic: self.config.topic.clone(),
            cut_to: sink.next_seq(),
            offsets: next.iter().map(|(&p, &o)| (p, o)).collect(),
        };
        sink.hold_unconfirmed(true);
        if let Err(e) = write_intent(&self.intent_dir, &intent) {
            sink.hold_unconfirmed(false);
            tracing::error!(error = %e, "the bus intent cannot be written; reading again");
            self.rewind(first);
            std::thread::sleep(Duration::from_secs(1));
            return Ok(false);
        }
        if !sink.commit(flows) {
            // Nothing of them kept: read them again from the last committed offsets.
            let _ = remove_intent(&self.intent_dir);
            sink.hold_unconfirmed(false);
            self.rewind(first);
            std::thread::sleep(Duration::from_secs(1));
            return Ok(false);
        }
        failpoint_after_rows();
        let mut why = String::new();
        for attempt in 1..=5 {
            match self.commit_transaction(next, intent.id) {
                Ok(()) => {
                    remove_intent(&self.intent_dir)
                        .map_err(|e| format!("removing the bus intent: {e}"))?;
                    sink.hold_unconfirmed(false);
                    return Ok(true);
                }
                Err(TxnError::Fatal(e)) => {
                    why = e;
                    break;
                }
                Err(TxnError::Retry(e)) => why = e,
            }
            self.counters.commit_failures.fetch_add(1, Relaxed);
            tracing::warn!(attempt, error = %why, "bus commit transaction failed; retrying");
            std::thread::sleep(Duration::from_secs(attempt));
            if !self.keep_membership(next) {
                why = format!("{why}; its partitions moved to another store meanwhile");
                break;
            }
        }
        self.counters.commit_failures.fetch_add(1, Relaxed);
        Err(format!(
            "Kafka did not commit the offsets of rows already stored ({why}): restart sotp to settle them"
        ))
    }

    /// The offsets and this store's marker `id`, in one Kafka transaction.
    fn commit_transaction(&self, next: &BTreeMap<i32, i64>, id: u64) -> Result<(), TxnError> {
        let Some(group) = self.consumer.group_metadata() else {
            return Err(TxnError::Retry("no consumer group metadata yet".into()));
        };
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in next {
            let _ =
                offsets.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset));
        }
        let topic = self.config.commits_topic();
        let (key, id) = (self.config.transactional_id(), id.to_string());
        let open = || -> rdkafka::error::KafkaResult<()> {
            self.txn.begin_transaction()?;
            self.txn
                .send(BaseRecord::to(&topic).partition(0).key(&key).payload(&id))
                .map_err(|(e, _)| e)?;
            self.txn
                .send_offsets_to_transaction(&offsets, &group, Duration::from_secs(10))
        };
        if let Err(e) = open() {
            return Err(self.abandon(e));
        }
        // A commit that timed out is still in flight: ask again, never begin anew (nor
        // abort: librdkafka refuses both while the commit is outstanding).
        let mut tries = 0;
        loop {
            match self.txn.commit_transaction(Duration::from_secs(30)) {
                Ok(()) => return Ok(()),
                Err(rdkafka::error::KafkaError::Transaction(t))
                    if t.is_retriable() && !t.txn_requires_abort() =>
                {
                    tries += 1;
                    if tries > 3 {
                        return Err(TxnError::Fatal(format!(
                            "the commit was not confirmed after {tries} tries: {t}"
                        )));
                    }
                    tracing::warn!(error = %t, "bus commit transaction not confirmed yet; asking again");
                }
                Err(e) => return Err(self.abandon(e)),
            }
        }
    }

    /// A transaction that failed: aborted if it must be; fatal when this store can no longer
    /// commit (fenced by another incarnation of its name).
    fn abandon(&self, e: rdkafka::error::KafkaError) -> TxnError {
        use rdkafka::types::RDKafkaErrorCode as C;
        let fatal = match &e {
            rdkafka::error::KafkaError::Transaction(t) => {
                if t.txn_requires_abort() || !t.is_fatal() {
                    let _ = self.txn.abort_transaction(Duration::from_secs(10));
                }
                t.is_fatal()
                    || matches!(
                        t.code(),
                        C::Fenced
                            | C::ProducerFenced
                            | C::InvalidProducerEpoch
                            | C::FencedInstanceId
                    )
            }
            _ => {
                // A record the producer would not queue: the transaction is open.
                let _ = self.txn.abort_transaction(Duration::from_secs(10));
                false
            }
        };
        if fatal {
            TxnError::Fatal(e.to_string())
        } else {
            TxnError::Retry(e.to_string())
        }
    }

    /// Leave the consumer group now (a halted store): the revocation is served by polling
    /// until nothing is assigned, so the partitions move at once, not after the session
    /// timeout.
    fn leave_group(&self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.consumer.assignment().is_ok_and(|a| a.count() > 0) {
            // Anything still fetched is dropped: not committed, its new owner reads it.
            let _ = self.consumer.poll(Duration::from_millis(100));
        }
    }

    /// Between commit attempts: take part in a rebalance in progress (the group waits for
    /// this member to poll) without reading anything, then say whether this store still
    /// holds every partition the commit is for.
    fn keep_membership(&self, next: &BTreeMap<i32, i64>) -> bool {
        let Ok(assigned) = self.consumer.assignment() else {
            return false;
        };
        let _ = self.consumer.pause(&assigned);
        if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(500)) {
            // Fetched before the pause: read again later.
            let _ = self.consumer.seek(
                m.topic(),
                m.partition(),
                Offset::Offset(m.offset()),
                Duration::from_secs(5),
            );
        }
        let now = self.consumer.assignment().unwrap_or_default();
        let paused = self.paused.lock();
        let mut resume = TopicPartitionList::new();
        for e in now.elements() {
            if !paused.contains(&e.partition()) {
                resume.add_partition(e.topic(), e.partition());
            }
        }
        let _ = self.consumer.resume(&resume);
        next.keys()
            .all(|p| now.find_partition(&self.config.topic, *p).is_some())
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

/// A record's `sotp-batch` id.
fn batch_id<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == super::publish::BATCH_HEADER)
            .and_then(|h| h.value)
    })
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
    fn recent_batch_ids_are_a_bounded_window() {
        let mut recent = RecentBatches::default();
        for i in 0..RECENT_BATCHES + 5 {
            recent.add(format!("inlet-{i}").into_bytes());
        }
        recent.add(b"inlet-7".to_vec());
        assert_eq!(recent.ids.len(), RECENT_BATCHES);
        assert_eq!(recent.order.len(), RECENT_BATCHES);
        assert!(!recent.contains(b"inlet-4"), "the oldest went");
        assert!(recent.contains(b"inlet-5"));
        assert!(recent.contains(format!("inlet-{}", RECENT_BATCHES + 4).as_bytes()));
    }

    #[test]
    fn an_intent_is_written_durably_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let intent = Intent {
            id: 7,
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
