//! Template and sampling state shared between inlets, so that an exporter whose traffic
//! moves to another inlet (the first one died, a load balancer re-hashed) is decoded at once
//! instead of after its next template refresh — minutes of NetFlow v9/IPFIX records dropped
//! or held otherwise.
//!
//! In: the template spaces (protocol, exporter, observation domain) an inlet's decoder
//! learned or changed (`TemplateCache::take_changed`), published by
//! `Publisher::share_templates`. Out: the same spaces taken into every other inlet's decoder
//! (`TemplateCache::apply_shared`, which keeps a space the inlet itself heard of more
//! recently: the inlets' clocks are taken to agree, as NTP keeps them).
//!
//! The topic `<flows topic>-templates` is **compacted**, keyed by space
//! (`<protocol>/<exporter>/<domain>`): Kafka keeps each space's newest state for good, so an
//! inlet started later reads every exporter's state from the beginning, and a space that went
//! idle is removed by a tombstone. Values are the JSON of one space as
//! `flow-templates.json` holds it (an internal format; the header `sotp-inlet` names the inlet
//! that wrote it, so an inlet skips its own). The reader creates the topic if it does not
//! exist (`topics.rs`).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sotp_flow::template::DomainKey;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// How often the reader looks for partitions of the topic it does not read yet (the topic
/// appearing, or growing).
const PARTITIONS_EVERY: Duration = Duration::from_secs(10);

/// The header naming the inlet that published a space.
pub const INLET_HEADER: &str = "sotp-inlet";

/// The template topic of a flows topic.
pub fn topic_of(flows_topic: &str) -> String {
    format!("{flows_topic}-templates")
}

/// A space's key on the topic.
pub fn space_key(key: &DomainKey) -> String {
    let protocol = match key.protocol {
        sotp_flow::FlowProtocol::NetflowV5 => "v5",
        sotp_flow::FlowProtocol::NetflowV9 => "v9",
        sotp_flow::FlowProtocol::Ipfix => "ipfix",
        sotp_flow::FlowProtocol::Sflow => "sflow",
    };
    format!("{protocol}/{}/{}", key.exporter, key.domain)
}

/// Reads the template topic from its beginning, for good, handing other inlets' spaces to
/// `apply` (which returns whether the space was taken, or why it could not be read).
pub struct TemplateReader {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub type Apply = Box<dyn Fn(&[u8]) -> Result<bool, String> + Send>;

impl TemplateReader {
    pub fn start(
        brokers: &str,
        flows_topic: &str,
        inlet: &str,
        apply: Apply,
        counters: Arc<super::publish::PublishCounters>,
    ) -> Result<TemplateReader, rdkafka::error::KafkaError> {
        let topic = topic_of(flows_topic);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Never used to commit: the topic is read whole at every start.
            .set("group.id", format!("sotp-templates-{inlet}"))
            .set("enable.auto.commit", "false")
            // Where "the beginning" cannot be asked yet (a topic just created), start there
            // all the same, not at the end (librdkafka's default).
            .set("auto.offset.reset", "earliest")
            .create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let (brokers, inlet, halt) = (brokers.to_string(), inlet.to_string(), stop.clone());
        let is_ready = ready.clone();
        let thread = std::thread::Builder::new()
            .name("flow-bus-templates".into())
            .spawn(move || {
                let segment = super::topics::TEMPLATES_SEGMENT;
                while !halt.load(Relaxed) {
                    match super::topics::ensure_compacted(&brokers, &topic, -1, segment) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(%topic, error = %e, "cannot create the template topic; retrying (or create it compacted: docs/SCALE.md)");
                            std::thread::sleep(Duration::from_secs(5));
                        }
                    }
                }
                // Only now may spaces be published: a broker's automatic creation would
                // make the topic without compaction.
                ready.store(true, Relaxed);
                let mut assigned = 0;
                let mut checked = std::time::Instant::now() - PARTITIONS_EVERY;
                while !halt.load(Relaxed) {
                    let every = if assigned == 0 {
                        Duration::from_secs(1)
                    } else {
                        PARTITIONS_EVERY
                    };
                    if checked.elapsed() >= every {
                        checked = std::time::Instant::now();
                        assigned = assign_new_partitions(&consumer, &topic, assigned);
                    }
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let from = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == INLET_HEADER)
                            .and_then(|h| h.value)
                    });
                    // Its own spaces, and tombstones: each inlet forgets idle spaces itself.
                    let (Some(json), false) = (m.payload(), from == Some(inlet.as_bytes())) else {
                        continue;
                    };
                    match apply(json) {
                        Ok(true) => {
                            counters.templates_applied.fetch_add(1, Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            error = %e,
                            offset = m.offset(),
                            "a template space on the bus could not be read; skipped"
                        ),
                    }
                }
            })
            .expect("spawning the template reader");
        Ok(TemplateReader {
            stop,
            ready: is_ready,
            thread: Some(thread),
        })
    }

    /// Whether the topic exists as it must (compacted): spaces may be published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

impl Drop for TemplateReader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read every partition of `topic` from its beginning (partitions added later too); returns
/// how many are assigned.
fn assign_new_partitions(consumer: &BaseConsumer, topic: &str, assigned: usize) -> usize {
    let Ok(meta) = consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) else {
        return assigned;
    };
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.len() <= assigned {
        return assigned;
    }
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        if list
            .add_partition_offset(topic, *p, Offset::Beginning)
            .is_err()
        {
            return assigned;
        }
    }
    match consumer.assign(&list) {
        Ok(()) => partitions.len(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the template topic");
            assigned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_keyed_by_protocol_exporter_and_domain() {
        let key = DomainKey {
            protocol: sotp_flow::FlowProtocol::Ipfix,
            exporter: "2001:db8::1".parse().unwrap(),
            domain: 42,
        };
        assert_eq!(space_key(&key), "ipfix/2001:db8::1/42");
        assert_eq!(topic_of("sotp-flows"), "sotp-flows-templates");
    }
}
