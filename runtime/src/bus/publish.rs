//! An inlet's side of the bus: batches of flows published to Kafka, and a disk spool for
//! when the brokers cannot take them.
//!
//! In: a key (`<tenant>/<exporter>`: Kafka's partitioner keeps an exporter's batches on one
//! partition, in order) and a batch already encoded (`schema::encode_batch`). Out: a Kafka
//! record with the `sotp-schema` header, through librdkafka's **idempotent** producer
//! (`acks=all`, retries without duplicates while the broker session lasts).
//!
//! **Spool.** A record librdkafka could not deliver within `message_timeout` (brokers down),
//! or could not even queue, is written to `spool_dir` as one file, and every later batch goes
//! there too while the spool is not empty (batches in flight when the brokers went away may
//! still arrive before spooled ones: nothing the store computes depends on order). A replay thread
//! sends the files oldest first once a broker answers, and deletes each when Kafka
//! acknowledged it. The spool is bounded (`spool_max`): past it a batch is dropped and counted
//! (`sotp_bus_spool_dropped_total`), never held in memory; so is a batch Kafka refuses for
//! good (too large, invalid), which would otherwise block the spool. A batch librdkafka timed out
//! whose write the broker did make is sent again from the spool under its id (`sotp-batch`),
//! which a store recognises and skips (`consume.rs`).

use crate::units::ByteSize;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The Kafka header holding a batch's id (`<inlet>-<sequence>`), unique per batch.
pub const BATCH_HEADER: &str = "sotp-batch";
/// The delivery opaque of a template space's record.
const TEMPLATE_OPAQUE: usize = usize::MAX;
/// The delivery opaque of an interface counters batch.
const COUNTERS_OPAQUE: usize = usize::MAX - 1;

/// The topic of the sFlow interface counters beside a flows topic.
pub fn counters_topic(flows_topic: &str) -> String {
    format!("{flows_topic}-counters")
}

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// `host:port,...`
    pub brokers: String,
    pub topic: String,
    /// This inlet's name, in batch ids.
    pub inlet: String,
    pub spool_dir: PathBuf,
    pub spool_max: ByteSize,
    /// How long librdkafka keeps trying a record before it goes to the spool.
    pub message_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the spool directory {0}: {1}")]
    Spool(PathBuf, std::io::Error),
}

/// What the publisher did (on `/metrics` as `sotp_bus_*`).
#[derive(Default, Debug)]
pub struct PublishCounters {
    /// Batches Kafka acknowledged.
    pub delivered: AtomicU64,
    /// Batches written to the spool.
    pub spooled: AtomicU64,
    /// Spooled batches sent again and acknowledged.
    pub replayed: AtomicU64,
    /// Batches dropped because the spool was full.
    pub spool_dropped: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// Template spaces published to the template topic (`templates.rs`).
    pub templates_shared: AtomicU64,
    /// Template spaces Kafka did not take (all are shared again).
    pub templates_failed: AtomicU64,
    /// Template spaces other inlets shared that this one took in.
    pub templates_applied: AtomicU64,
    /// Set when a template space could not be shared; the owner shares every space again.
    pub templates_unshared: AtomicBool,
    /// Interface counter batches Kafka acknowledged.
    pub counters_delivered: AtomicU64,
    /// Interface counter batches not delivered (not spooled: the next sample carries the same
    /// cumulative counters).
    pub counters_dropped: AtomicU64,
}

struct Spool {
    dir: PathBuf,
    max: u64,
    next: AtomicU64,
    lock: parking_lot::Mutex<()>,
    counters: Arc<PublishCounters>,
}

impl Spool {
    fn open(dir: &Path, max: u64, counters: Arc<PublishCounters>) -> Result<Spool, PublishError> {
        let err = |e| PublishError::Spool(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut last = 0;
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            if let Some(seq) = spool_seq(&entry.path()) {
                last = last.max(seq);
                bytes += entry.metadata().map_or(0, |m| m.len());
            }
        }
        counters.spool_bytes.store(bytes, Relaxed);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max,
            next: AtomicU64::new(last + 1),
            lock: Default::default(),
            counters,
        })
    }

    /// Write one record; false (and counted) when the spool is full or the disk refuses.
    fn put(&self, key: &[u8], batch_id: &[u8], payload: &[u8]) -> bool {
        let _guard = self.lock.lock();
        let len = (8 + key.len() + batch_id.len() + payload.len()) as u64;
        if self.counters.spool_bytes.load(Relaxed) + len > self.max {
            self.counters.spool_dropped.fetch_add(1, Relaxed);
            return false;
        }
        let seq = self.next.fetch_add(1, Relaxed);
        let mut file = Vec::with_capacity(len as usize);
        for part in [key, batch_id] {
            file.extend_from_slice(&(part.len() as u32).to_le_bytes());
            file.extend_from_slice(part);
        }
        file.extend_from_slice(payload);
        let path = self.dir.join(format!("{seq:016}.batch"));
        let tmp = path.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &file)?;
                f.sync_all()
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::error!(error = %e, "the bus spool cannot be written; batch dropped");
            self.counters.spool_dropped.fetch_add(1, Relaxed);
            return false;
        }
        self.counters.spool_bytes.fetch_add(len, Relaxed);
        self.counters.spooled.fetch_add(1, Relaxed);
        true
    }

    /// The oldest files first.
    fn pending(&self) -> Vec<(u64, PathBuf)> {
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| spool_seq(&e.path()).map(|s| (s, e.path())))
            .collect();
        files.sort();
        files
    }

    fn is_empty(&self) -> bool {
        self.counters.spool_bytes.load(Relaxed) == 0
    }

    fn remove(&self, seq: u64) {
        let path = self.dir.join(format!("{seq:016}.batch"));
        let _guard = self.lock.lock();
        if let Ok(meta) = std::fs::metadata(&path)
            && std::fs::remove_file(&path).is_ok()
        {
            self.counters.spool_bytes.fetch_sub(meta.len(), Relaxed);
        }
    }
}

fn spool_seq(path: &Path) -> Option<u64> {
    (path.extension()? == "batch")
        .then(|| path.file_stem()?.to_str()?.parse().ok())
        .flatten()
}

/// A spool file's parts: (key, batch id, payload).
fn read_spooled(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let part = |b: &[u8]| -> Option<(usize, usize)> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        (b.len() >= 4 + n).then_some((4, 4 + n))
    };
    let (a, b) = part(bytes)?;
    let key = &bytes[a..b];
    let rest = &bytes[b..];
    let (c, d) = part(rest)?;
    Some((key, &rest[c..d], &rest[d..]))
}

/// librdkafka's delivery reports: acknowledged records counted (spooled ones deleted),
/// failed live records spooled. The opaque is 0 for a live record, [`TEMPLATE_OPAQUE`] for a
/// template space, else its spool sequence.
struct Context {
    spool: Arc<Spool>,
    counters: Arc<PublishCounters>,
    replaying: Arc<parking_lot::Mutex<std::collections::HashSet<u64>>>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if opaque == COUNTERS_OPAQUE {
            match result {
                Ok(_) => self.counters.counters_delivered.fetch_add(1, Relaxed),
                Err(_) => self.counters.counters_dropped.fetch_add(1, Relaxed),
            };
            return;
        }
        if opaque == TEMPLATE_OPAQUE {
            match result {
                Ok(_) => self.counters.templates_shared.fetch_add(1, Relaxed),
                Err(_) => {
                    self.counters.templates_unshared.store(true, Relaxed);
                    self.counters.templates_failed.fetch_add(1, Relaxed)
                }
            };
            return;
        }
        let seq = opaque as u64;
        match result {
            Ok(_) if seq == 0 => {
                self.counters.delivered.fetch_add(1, Relaxed);
            }
            Ok(_) => {
                self.spool.remove(seq);
                self.replaying.lock().remove(&seq);
                self.counters.delivered.fetch_add(1, Relaxed);
                self.counters.replayed.fetch_add(1, Relaxed);
            }
            Err((e, _)) if is_refused_for_good(e) => {
                // Spooling it again would block every batch behind it.
                tracing::error!(error = %e, "Kafka refuses this flow batch for good; dropped");
                self.counters.spool_dropped.fetch_add(1, Relaxed);
                if seq != 0 {
                    self.spool.remove(seq);
                    self.replaying.lock().remove(&seq);
                }
            }
            Err((_, message)) if seq == 0 => {
                let batch_id = message
                    .headers()
                    .and_then(|h| {
                        use rdkafka::message::Headers;
                        h.iter()
                            .find(|h| h.key == BATCH_HEADER)
                            .and_then(|h| h.value)
                    })
                    .unwrap_or_default();
                self.spool.put(
                    message.key().unwrap_or_default(),
                    batch_id,
                    message.payload().unwrap_or_default(),
                );
            }
            Err(_) => {
                // A spooled record failed again: its file stays for the next pass.
                self.replaying.lock().remove(&seq);
            }
        }
    }
}

/// Errors no retry cures (the record itself is refused), as opposed to brokers away.
fn is_refused_for_good(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord | C::BadMessage)
    )
}

/// Publishes batches to the bus (see the module doc).
pub struct Publisher {
    producer: Arc<ThreadedProducer<Context>>,
    spool: Arc<Spool>,
    replaying: Arc<parking_lot::Mutex<std::collections::HashSet<u64>>>,
    config: PublisherConfig,
    next_batch: AtomicU64,
    pub counters: Arc<PublishCounters>,
    stop: Arc<AtomicBool>,
    replayer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Publisher {
    pub fn start(config: PublisherConfig) -> Result<Arc<Publisher>, PublishError> {
        let counters = Arc::new(PublishCounters::default());
        let spool = Arc::new(Spool::open(
            &config.spool_dir,
            config.spool_max.0,
            counters.clone(),
        )?);
        let replaying = Arc::new(parking_lot::Mutex::new(Default::default()));
        let context = Context {
            spool: spool.clone(),
            counters: counters.clone(),
            replaying: replaying.clone(),
        };
        let producer: ThreadedProducer<Context> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set(
                "message.timeout.ms",
                config.message_timeout.as_millis().to_string(),
            )
            .create_with_context(context)?;
        let publisher = Arc::new(Publisher {
            producer: Arc::new(producer),
            spool,
            replaying,
            next_batch: AtomicU64::new(crate::now_ms() as u64 * 1000),
            config,
            counters,
            stop: Default::default(),
            replayer: Default::default(),
        });
        let weak = Arc::downgrade(&publisher);
        let stop = publisher.stop.clone();
        *publisher.replayer.lock() = Some(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let Some(p) = weak.upgrade() else { return };
                p.replay_pass();
            }
        }));
        Ok(publisher)
    }

    /// Publish one encoded batch under `key`: to Kafka, or to the spool while it holds older
    /// batches or librdkafka's queue is full.
    pub fn publish(&self, key: &str, payload: &[u8]) {
        let id = format!(
            "{}-{}",
            self.config.inlet,
            self.next_batch.fetch_add(1, Relaxed)
        );
        if !self.spool.is_empty() {
            self.spool.put(key.as_bytes(), id.as_bytes(), payload);
            return;
        }
        let record = BaseRecord::with_opaque_to(&self.config.topic, 0usize)
            .key(key)
            .payload(payload)
            .headers(headers(&id));
        if let Err((e, _)) = self.producer.send(record) {
            if is_refused_for_good(&e) {
                tracing::error!(error = %e, "Kafka refuses this flow batch for good; dropped");
                self.counters.spool_dropped.fetch_add(1, Relaxed);
                return;
            }
            tracing::debug!(error = %e, "the bus producer refused a batch; spooled");
            self.spool.put(key.as_bytes(), id.as_bytes(), payload);
        }
    }

    /// Send spooled batches, oldest first, while none is failing.
    fn replay_pass(&self) {
        if self.spool.is_empty() {
            return;
        }
        // A broker must answer before files are sent again.
        if self
            .producer
            .client()
            .fetch_metadata(Some(&self.config.topic), Duration::from_secs(2))
            .is_err()
        {
            return;
        }
        for (seq, path) in self.spool.pending().into_iter().take(256) {
            if !self.replaying.lock().insert(seq) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                self.replaying.lock().remove(&seq);
                continue;
            };
            let Some((key, id, payload)) = read_spooled(&bytes) else {
                tracing::error!(path = %path.display(), "a damaged bus spool file; removed");
                self.spool.remove(seq);
                self.replaying.lock().remove(&seq);
                continue;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            let record = BaseRecord::with_opaque_to(&self.config.topic, seq as usize)
                .key(key)
                .payload(payload)
                .headers(headers(&id));
            if let Err((e, _)) = self.producer.send(record) {
                self.replaying.lock().remove(&seq);
                if is_refused_for_good(&e) {
                    tracing::error!(error = %e, "Kafka refuses a spooled flow batch for good; dropped");
                    self.counters.spool_dropped.fetch_add(1, Relaxed);
                    self.spool.remove(seq);
                    continue;
                }
                return;
            }
        }
    }

    /// Publish a batch of interface counter samples (`schema::CountersMessage`) under `key`
    /// (`<tenant>/<agent>`) to the counters topic. Best effort: not spooled, a batch Kafka
    /// does not take is counted as dropped.
    pub fn publish_counters(&self, key: &str, payload: &[u8]) {
        let id = format!(
            "{}-{}",
            self.config.inlet,
            self.next_batch.fetch_add(1, Relaxed)
        );
        let topic = counters_topic(&self.config.topic);
        let record = BaseRecord::with_opaque_to(&topic, COUNTERS_OPAQUE)
            .key(key)
            .payload(payload)
            .headers(headers(&id));
        if self.producer.send(record).is_err() {
            self.counters.counters_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Publish template spaces to the template topic (`templates.rs`), keyed by space: the
    /// compacted topic keeps each space's newest state. A space Kafka does not take sets
    /// `templates_unshared` (no spool: the state is re-sent whole instead).
    pub fn share_templates(&self, spaces: &[sotp_flow::template::SharedDomain]) {
        let topic = super::templates::topic_of(&self.config.topic);
        let inlet = OwnedHeaders::new().insert(Header {
            key: super::templates::INLET_HEADER,
            value: Some(self.config.inlet.as_bytes()),
        });
        for space in spaces {
            let key = super::templates::space_key(&space.key);
            let mut record: BaseRecord<'_, String, Vec<u8>, usize> =
                BaseRecord::with_opaque_to(&topic, TEMPLATE_OPAQUE)
                    .key(&key)
                    .headers(inlet.clone());
            // No payload: a tombstone, the space forgotten (compaction drops it).
            record.payload = space.json.as_ref();
            if self.producer.send(record).is_err() {
                self.counters.templates_unshared.store(true, Relaxed);
                self.counters.templates_failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Wait up to `timeout` for what was sent to be acknowledged (or spooled).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }

    /// Batches waiting in the spool.
    pub fn spooled_now(&self) -> usize {
        self.spool.pending().len()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn headers(batch_id: &str) -> OwnedHeaders {
    let version = super::schema::SCHEMA_VERSION.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: super::schema::SCHEMA_HEADER,
            value: Some(version.as_bytes()),
        })
        .insert(Header {
            key: BATCH_HEADER,
            value: Some(batch_id.as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_files_hold_key_id_and_payload_and_the_spool_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(PublishCounters::default());
        let spool = Spool::open(dir.path(), 100, counters.clone()).unwrap();
        assert!(spool.put(b"acme/192.0.2.1", b"inlet-1", &[7; 40]));
        assert!(
            !spool.put(b"acme/192.0.2.1", b"inlet-2", &[7; 60]),
            "over 100 bytes"
        );
        assert_eq!(counters.spool_dropped.load(Relaxed), 1);
        let pending = spool.pending();
        assert_eq!(pending.len(), 1);
        let bytes = std::fs::read(&pending[0].1).unwrap();
        let (key, id, payload) = read_spooled(&bytes).unwrap();
        assert_eq!(
            (key, id, payload),
            (&b"acme/192.0.2.1"[..], &b"inlet-1"[..], &[7u8; 40][..])
        );
        // Reopened: the bytes and the sequence carry on.
        let again = Spool::open(dir.path(), 100, Arc::new(PublishCounters::default())).unwrap();
        assert_eq!(again.counters.spool_bytes.load(Relaxed), bytes.len() as u64);
        assert!(again.put(b"k", b"i", b"p"));
        assert_eq!(again.pending()[1].0, pending[0].0 + 1);
        again.remove(pending[0].0);
        assert_eq!(again.pending().len(), 1);
        assert!(read_spooled(&[1, 0, 0]).is_none());
    }
}
