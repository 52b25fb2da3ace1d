//! sFlow interface counters through the bus. In: an inlet's counter samples (after
//! enrichment: tenant by agent), published by `Publisher::publish_counters` to
//! `<topic>-counters` in batches keyed `<tenant>/<agent>` (`schema::CountersMessage`,
//! docs/counters.proto). Out: the samples stored by a store, as a single process stores
//! them (`flow_interface_counters`).
//!
//! **At least once**, and simpler than the flows' exactly-once path on purpose: a sample is
//! a snapshot of cumulative counters, so one stored twice (a store crashing between its write
//! and its offsets) repeats a point, and one lost while the brokers are away is covered by
//! the next (an inlet does not spool them). The stores read the topic as their own consumer
//! group (`<group>-counters`), so its partitions spread over the stores independently of the
//! flows'. A record of another schema version, or one that does not decode, is counted and
//! skipped: nothing waits on a counter sample.

use super::consume::{ConsumerConfig, FlowSink};
use super::schema::{self, CountersMessage, SCHEMA_HEADER};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What the counters consumer did (on `/metrics` as `sotp_bus_counter_*`).
#[derive(Default, Debug)]
pub struct CountersCounters {
    /// Samples stored.
    pub samples: AtomicU64,
    /// Samples of tenants this store does not have.
    pub unmapped: AtomicU64,
    /// Records (or single samples) skipped: another schema version, undecodable.
    pub refused: AtomicU64,
}

pub struct CountersConsumer {
    consumer: BaseConsumer,
    brokers: String,
    topic: String,
    pub counters: CountersCounters,
}

impl CountersConsumer {
    pub fn new(config: &ConsumerConfig) -> Result<CountersConsumer, rdkafka::error::KafkaError> {
        let topic = super::publish::counters_topic(&config.topic);
        let consumer = super::consume::store_group_member(
            &config.brokers,
            &format!("{}-counters", config.group),
        )?;
        Ok(CountersConsumer {
            consumer,
            brokers: config.brokers.clone(),
            topic,
            counters: Default::default(),
        })
    }

    /// Subscribe once the topic exists (a subscription to a missing topic is noticed only at
    /// librdkafka's next metadata refresh); false: stopped first.
    fn subscribe(&self, stop: &AtomicBool) -> bool {
        let mut warned = false;
        while !stop.load(Relaxed) {
            let subscribed =
                super::topics::ensure_exists(&self.brokers, &self.topic).and_then(|()| {
                    self.consumer
                        .subscribe(&[&self.topic])
                        .map_err(|e| e.to_string())
                });
            match subscribed {
                Ok(()) => return true,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(topic = %self.topic, error = %e, "the bus counters consumer waits for its topic");
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        false
    }

    /// Read, store, commit, repeat until `stop`.
    pub fn run(&self, sink: &dyn FlowSink, stop: &AtomicBool) {
        if !self.subscribe(stop) {
            return;
        }
        while !stop.load(Relaxed) {
            let mut samples = Vec::new();
            // Per partition: the first offset read and the next to read.
            let mut read: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
            let started = Instant::now();
            let mut records = 0;
            while records < 256
                && samples.len() < schema::MAX_FLOWS_PER_RECORD
                && started.elapsed() < Duration::from_millis(200)
            {
                let m = match self.consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "bus counters consumer");
                        continue;
                    }
                    None => continue,
                };
                records += 1;
                let e = read
                    .entry(m.partition())
                    .or_insert((m.offset(), m.offset()));
                e.1 = m.offset() + 1;
                let version = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == SCHEMA_HEADER)
                        .and_then(|h| h.value)
                });
                let batch = schema::decode_batch_of::<CountersMessage>(
                    version,
                    m.payload().unwrap_or_default(),
                );
                let batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        self.counters.refused.fetch_add(1, Relaxed);
                        tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "an interface counters record skipped");
                        continue;
                    }
                };
                let names = sink.names();
                for message in &batch {
                    match schema::counters_from_message(message) {
                        Ok(c) if names.live_tenant_id(&c.tenant).is_some() => samples.push(c),
                        Ok(_) => {
                            self.counters.unmapped.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            self.counters.refused.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
            if read.is_empty() {
                continue;
            }
            let n = samples.len() as u64;
            if !samples.is_empty() && !sink.commit_counters(samples) {
                // Not stored: read them again.
                for (&partition, &(first, _)) in &read {
                    let _ = self.consumer.seek(
                        &self.topic,
                        partition,
                        Offset::Offset(first),
                        Duration::from_secs(5),
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            self.counters.samples.fetch_add(n, Relaxed);
            // Partitions moved away meanwhile are their new owner's to commit.
            let assigned = self.consumer.assignment().unwrap_or_default();
            let mut offsets = TopicPartitionList::new();
            for (&partition, &(_, next)) in &read {
                if assigned.find_partition(&self.topic, partition).is_some() {
                    let _ =
                        offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next));
                }
            }
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                // Stored; at worst stored again by whoever reads them next.
                tracing::debug!(error = %e, "interface counter offsets not committed");
            }
        }
    }
}
