//! A store's side of the bus: a member of a Kafka consumer group reading the flows topic
//! into this node's flow store.
//!
//! In: Kafka records of schema version 1 (`schema.rs`). Out: `RawFlow` batches handed to
//! the store's commit (`FlowService::commit_from_bus`), then the consumed offsets committed to
//! Kafka — only after the rows are durable, so a crash re-reads rather than loses. A record
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
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Records read before their rows are committed and their offsets with them.
const MAX_RECORDS: usize = 256;
const MAX_WAIT: Duration = Duration::from_millis(200);
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
}

pub struct BusConsumer {
    consumer: BaseConsumer,
    config: ConsumerConfig,
    pub counters: ConsumeCounters,
    pub refusals: parking_lot::Mutex<Vec<Refusal>>,
    paused: parking_lot::Mutex<std::collections::HashSet<i32>>,
}

impl BusConsumer {
    pub fn new(config: ConsumerConfig) -> Result<BusConsumer, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()?;
        consumer.subscribe(&[&config.topic])?;
        Ok(BusConsumer {
            consumer,
            config,
            counters: Default::default(),
            refusals: Default::default(),
            paused: Default::default(),
        })
    }

    /// Read, commit, repeat until `stop`.
    pub fn run(&self, sink: &dyn FlowSink, stop: &AtomicBool) {
        let mut last_lag = Instant::now() - LAG_EVERY;
        while !stop.load(Relaxed) {
            let mut flows = Vec::new();
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
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
                if self.paused.lock().contains(&message.partition()) {
                    continue; // read before the pause took effect: read again after it
                }
                match self.decode(&message, &sink.names(), &mut flows) {
                    Ok(()) => {
                        next.insert(message.partition(), message.offset() + 1);
                    }
                    Err(e) => {
                        self.refuse(&message, e);
                    }
                }
            }
            if !flows.is_empty() && !sink.commit(std::mem::take(&mut flows)) {
                // Not stored: read them again from the last committed offsets.
                self.rewind(&next);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            self.commit_offsets(&next);
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
        self.refusals.lock().push(refusal);
    }

    fn commit_offsets(&self, next: &BTreeMap<i32, i64>) {
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (&partition, &offset) in next {
            let _ = tpl.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            self.counters.commit_failures.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "bus offsets not committed: those records may be read again");
        }
    }

    /// After a failed store commit: go back to what Kafka has committed.
    fn rewind(&self, next: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for &partition in next.keys() {
            tpl.add_partition(&self.config.topic, partition);
        }
        let Ok(committed) = self.consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
            return;
        };
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            let _ = self
                .consumer
                .seek(e.topic(), e.partition(), offset, Duration::from_secs(5));
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
