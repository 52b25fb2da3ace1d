//! The flow pipeline: listener threads decode and enrich, one writer thread commits batches
//! to the flow store and updates the `/metrics` aggregates, sinks replay from the store.
//!
//! Only datagrams from exporters that map to a tenant (or from a configured sFlow relay)
//! are decoded: others are counted and dropped before they can teach the decoder anything.
//! An sFlow datagram's records belong to the address it came from unless that address is
//! bound to the agent it names (`flows.sflow_agents`). Template state is bounded
//! (`flows.max_exporters` and friends) and written by its own thread every
//! [`TEMPLATES_SAVE_EVERY`], from a snapshot taken under the decoder lock and written outside
//! it; a damaged `flow-templates.json` is set aside at start, not fatal.
//!
//! ```text
//! socket ×N ─ recvmmsg ─ decode (shared template state) ─ enrich ─┐
//!                                                                 ├─ writer ─ FlowStore ─ sinks
//! socket ×N ─ ...                                                 ┘        └─ /metrics aggregates
//! ```

use super::config::FlowConfig;
use super::enrich::{AgentBindings, Applications, TenantMap};
use super::listener::{self, Batch};
use super::rawlog::RawFlow;
use super::sink::{self, SinkContext, SinkHandle};
use super::store::{FlowStore, StoredCounters};
use super::{
    DecodeCounters, DecodeOutput, FlowDecoder, FlowProtocol, PendingLimits, TemplateCache,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Hand a batch to the writer at this many records, or after this long.
const SEND_AT: usize = 4096;
const SEND_EVERY: Duration = Duration::from_millis(50);
/// Flows per Kafka record on an inlet.
const BUS_BATCH: usize = 4096;
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// Template state changes are written at most this often.
pub const TEMPLATES_SAVE_EVERY: Duration = Duration::from_secs(2);
/// Idle template spaces are looked for this often.
const TEMPLATES_EXPIRE_EVERY: Duration = Duration::from_secs(60);
const TEMPLATES_FILE: &str = "flow-templates.json";

#[derive(Default, Debug)]
pub struct PipelineCounters {
    /// Records dropped because their exporter maps to no tenant.
    pub unmapped: AtomicU64,
    /// Datagrams dropped before decoding: their source maps to no tenant.
    pub unmapped_datagrams: AtomicU64,
    /// Datagrams longer than the receive buffer (cut by the kernel), dropped.
    pub truncated: AtomicU64,
    /// sFlow records and counters that named an agent their source may not speak for; they
    /// were attributed to the source instead.
    pub sflow_agent_mismatch: AtomicU64,
    pub metrics_series_dropped: AtomicU64,
    pub store_errors: AtomicU64,
    /// Times `flow-templates.json` was unreadable at start and set aside.
    pub template_state_damaged: AtomicU64,
}

/// Per (tenant id, exporter, application id): scaled bytes, packets, flows — for `/metrics`
/// (names from [`FlowStore::names`]).
#[derive(Default)]
pub struct Aggregates {
    pub series: HashMap<(u16, IpAddr, u16), [u64; 3], foldhash::fast::RandomState>,
}

/// What a receive thread needs to enrich records.
struct Enrichment {
    apps: Arc<Applications>,
    /// `apps.classify()` index → the store's application id.
    app_ids: Arc<Vec<u16>>,
    tenants: Arc<TenantMap>,
    agents: Arc<AgentBindings>,
}

/// The last exporter a receive thread mapped: (names generation, exporter, tenant id).
type TenantCache = Option<(u64, IpAddr, Option<u16>)>;

struct Message {
    flows: Vec<RawFlow>,
    counters: Vec<StoredCounters>,
}

pub struct FlowService {
    pub config: FlowConfig,
    pub store: Arc<FlowStore>,
    pub decode_counters: Arc<DecodeCounters>,
    pub counters: Arc<PipelineCounters>,
    pub aggregates: Arc<Mutex<Aggregates>>,
    decoder: Arc<Mutex<FlowDecoder>>,
    /// Bound listener addresses (with the actual port when 0 was asked for).
    pub bound: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Bumped after each commit; sinks wait on it.
    pub committed: Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    pub sinks: Vec<Arc<SinkHandle>>,
    /// Emptied message buffers, handed back to the receive threads (no 1 MiB allocation,
    /// page faults included, per message).
    spare: Mutex<Vec<Vec<RawFlow>>>,
    sink_stop: Arc<AtomicBool>,
    sink_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The data dir, where `flow-templates.json` is written.
    data: cap_std::fs::Dir,
    /// An inlet's publisher (`runtime.flows.bus`): flows go to Kafka, not to `store`.
    pub publisher: Option<Arc<crate::bus::publish::Publisher>>,
    /// A store's consumer (`runtime.flows.bus`): flows come from Kafka.
    pub consumer: Option<Arc<crate::bus::consume::BusConsumer>>,
    /// A store's fellow stores, asked by flow queries (`bus/peers.rs`).
    pub peers: Option<Arc<crate::bus::peers::Peers>>,
    /// A store's consumer of interface counter samples (`bus/counters.rs`).
    pub counters_consumer: Option<Arc<crate::bus::counters::CountersConsumer>>,
    /// An inlet's reader of the other inlets' template state (`bus/templates.rs`).
    template_reader: Mutex<Option<crate::bus::templates::TemplateReader>>,
}

impl FlowService {
    pub fn start(config: FlowConfig, data_dir: &Path) -> anyhow::Result<Arc<FlowService>> {
        if config.is_bus(crate::bus::BusRole::Store) && config.listen_addresses().next().is_some() {
            anyhow::bail!(
                "flows: a store (runtime.flows.bus.role = \"store\") reads its flows from Kafka: remove its netflow/ipfix/sflow listeners, or run them on an inlet"
            );
        }
        let consumer_config = config
            .bus
            .as_ref()
            .filter(|b| b.role == crate::bus::BusRole::Store)
            .map(|bus| crate::bus::consume::ConsumerConfig {
                brokers: bus.brokers.clone(),
                topic: bus.topic.clone(),
                group: bus.group.clone(),
                name: bus.node_name(),
            });
        if let Some(c) = &consumer_config {
            if !config.store_raw {
                anyhow::bail!(
                    "flows: a store (runtime.flows.bus.role = \"store\") keeps raw flows (store_raw = true): it settles an unconfirmed commit by cutting the raw log back"
                );
            }
            crate::bus::consume::reconcile(data_dir, c, Duration::from_secs(60))?;
        }
        if config.is_bus(crate::bus::BusRole::Inlet) && !config.sinks.is_empty() {
            anyhow::bail!(
                "flows: an inlet (runtime.flows.bus) publishes its flows to Kafka and stores none: its sinks would send nothing; configure them on the stores"
            );
        }
        let publisher = match config
            .bus
            .as_ref()
            .filter(|b| b.role == crate::bus::BusRole::Inlet)
        {
            Some(bus) => Some(
                crate::bus::publish::Publisher::start(crate::bus::publish::PublisherConfig {
                    brokers: bus.brokers.clone(),
                    topic: bus.topic.clone(),
                    inlet: bus.node_name(),
                    spool_dir: data_dir.join("bus-spool"),
                    spool_max: bus.spool_max,
                    message_timeout: bus.message_timeout.0,
                })
                .map_err(|e| anyhow::anyhow!("flows: the bus: {e}"))?,
            ),
            None => None,
        };
        if !config.sinks.is_empty() && !config.store_raw {
            anyhow::bail!(
                "flows: sinks replay from the raw flows; set runtime.flows.store_raw = true or remove the sinks"
            );
        }
        let peers = match &config.bus {
            Some(bus) => bus.peers().map_err(anyhow::Error::msg)?.map(Arc::new),
            None => None,
        };
        let apps = Arc::new(Applications::new(&config.applications).map_err(anyhow::Error::msg)?);
        let tenants = Arc::new(TenantMap::new(&config).map_err(anyhow::Error::msg)?);
        let agents = Arc::new(AgentBindings::new(&config).map_err(anyhow::Error::msg)?);
        let tenant_names: Vec<&str> = tenants.tenants().map(|t| &**t).collect();
        let app_names: Vec<&str> = apps.names().iter().map(|a| &**a).collect();
        let store = Arc::new(FlowStore::open(
            data_dir,
            config.store_raw,
            config.store_memory_limit.0,
            &tenant_names,
            &app_names,
        )?);
        // classify() index → the store's persisted application id.
        let app_ids: Arc<Vec<u16>> = Arc::new(
            app_names
                .iter()
                .map(|a| store.names().app_id(a).expect("registered at open"))
                .collect(),
        );
        let data = cap_std::fs::Dir::open_ambient_dir(data_dir, cap_std::ambient_authority())?;
        let counters = Arc::new(PipelineCounters::default());
        let cache = load_templates(&data, config.template_limits(), &counters);
        let decode_counters = Arc::new(DecodeCounters::default());
        let decoder = FlowDecoder::new(cache, decode_counters.clone()).with_limits(PendingLimits {
            max_bytes: config.pending_bytes.0 as usize,
            max_age: config.pending_age.0,
        });
        let mut decoder = decoder;
        if publisher.is_some() {
            decoder.share_templates();
        }
        let decoder = Arc::new(Mutex::new(decoder));
        let template_reader = match (&publisher, &config.bus) {
            (Some(p), Some(bus)) => {
                let shared = decoder.clone();
                Some(
                    crate::bus::templates::TemplateReader::start(
                        &bus.brokers,
                        &bus.topic,
                        &bus.node_name(),
                        Box::new(move |json| {
                            shared.lock().apply_shared_templates(json, crate::now_ms())
                        }),
                        p.counters.clone(),
                    )
                    .map_err(|e| anyhow::anyhow!("flows: the bus's template topic: {e}"))?,
                )
            }
            _ => None,
        };
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for addr in config.listen_addresses() {
            let want: SocketAddr = addr
                .parse()
                .map_err(|_| anyhow::anyhow!("flows: {addr:?} is not an address:port"))?;
            let mut port = want.port();
            for _ in 0..config.sockets_per_address.max(1) {
                let at = SocketAddr::new(want.ip(), port);
                let socket = listener::bind(at, config.receive_buffer.0 as usize)
                    .map_err(|e| anyhow::anyhow!("flows: cannot listen on {at}: {e}"))?;
                port = socket.local_addr()?.port();
                sockets.push(socket);
            }
            bound.push(SocketAddr::new(want.ip(), port));
        }
        let committed = Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
        let sink_stop = Arc::new(AtomicBool::new(false));
        let (sinks, sink_threads) = sink::start(
            &config.sinks,
            &SinkContext {
                store: store.clone(),
                committed: committed.clone(),
                stop: sink_stop.clone(),
            },
        )?;
        let counters_consumer = match &consumer_config {
            Some(c) => Some(Arc::new(
                crate::bus::counters::CountersConsumer::new(c)
                    .map_err(|e| anyhow::anyhow!("flows: the bus's counters topic: {e}"))?,
            )),
            None => None,
        };
        let consumer = match consumer_config {
            Some(c) => Some(Arc::new(
                crate::bus::consume::BusConsumer::new(c, data_dir)
                    .map_err(|e| anyhow::anyhow!("flows: the bus: {e}"))?,
            )),
            None => None,
        };
        let (tx, rx) = mpsc::sync_channel::<Message>(256);
        let service = Arc::new(FlowService {
            config,
            store,
            decode_counters,
            counters,
            aggregates: Arc::new(Mutex::new(Aggregates::default())),
            decoder,
            bound,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            committed,
            sinks,
            spare: Mutex::new(Vec::new()),
            sink_stop,
            sink_threads: Mutex::new(sink_threads),
            data,
            publisher,
            consumer: consumer.clone(),
            counters_consumer: counters_consumer.clone(),
            template_reader: Mutex::new(template_reader),
            peers,
        });
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let s = service.clone();
            let tx = tx.clone();
            let enrich = Enrichment {
                apps: apps.clone(),
                app_ids: app_ids.clone(),
                tenants: tenants.clone(),
                agents: agents.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sotp-flow-rx{i}"))
                    .spawn(move || s.receive_loop(socket, enrich, tx))?,
            );
        }
        drop(tx);
        let s = service.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sotp-flow-writer".into())
                .spawn(move || s.writer_loop(rx))?,
        );
        if let Some(consumer) = service.consumer.clone() {
            let s = service.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sotp-flow-bus".into())
                    .spawn(move || consumer.run(&*s, &s.stop))?,
            );
        }
        if let Some(consumer) = service.counters_consumer.clone() {
            let s = service.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sotp-flow-bus-counters".into())
                    .spawn(move || consumer.run(&*s, &s.stop))?,
            );
        }
        let s = service.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sotp-flow-templates".into())
                .spawn(move || s.template_saver())?,
        );
        *service.threads.lock() = threads;
        for addr in &service.bound {
            tracing::info!(%addr, sockets = service.config.sockets_per_address, "flow listener");
        }
        Ok(service)
    }

    /// Stop the listeners, commit what they decoded, persist templates, stop the sinks (what
    /// they have not sent yet stays in the store and is sent after the next start).
    pub fn shutdown(&self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        self.save_templates();
        self.template_reader.lock().take();
        if let Some(p) = &self.publisher {
            // What librdkafka holds goes out (or to the spool) before the process ends.
            p.flush(Duration::from_secs(10));
        }
        if let Err(e) = self.store.flush_rollups() {
            // The next start rebuilds them from the raw log.
            tracing::warn!(error = %e, "flow rollups not written at shutdown");
        }
        self.sink_stop.store(true, Relaxed);
        self.committed.1.notify_all();
        for t in self.sink_threads.lock().drain(..) {
            let _ = t.join();
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let d = &self.decode_counters;
        let by_protocol = |a: &[AtomicU64; 4]| {
            serde_json::json!({
                "netflow5": a[0].load(Relaxed), "netflow9": a[1].load(Relaxed),
                "ipfix": a[2].load(Relaxed), "sflow": a[3].load(Relaxed),
            })
        };
        serde_json::json!({
            "listeners": self.bound.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "sockets_per_address": self.config.sockets_per_address,
            "templates": self.template_count(),
            "datagrams": by_protocol(&d.datagrams),
            "records": by_protocol(&d.records),
            "malformed": d.malformed.load(Relaxed),
            "unknown_version": d.unknown_version.load(Relaxed),
            "pending_held": d.pending_held.load(Relaxed),
            "pending_decoded": d.pending_decoded.load(Relaxed),
            "pending_dropped": d.pending_dropped.load(Relaxed),
            "unmapped": self.counters.unmapped.load(Relaxed),
            "unmapped_datagrams": self.counters.unmapped_datagrams.load(Relaxed),
            "truncated": self.counters.truncated.load(Relaxed),
            "sflow_agent_mismatch": self.counters.sflow_agent_mismatch.load(Relaxed),
            "templates_refused": d.templates_refused.load(Relaxed),
            "template_state_damaged": self.counters.template_state_damaged.load(Relaxed),
            "template_exporters": self.decoder.lock().templates().exporter_count(),
            "template_fields": self.decoder.lock().templates().field_count(),
            "stored_rows": self.store.counters.rows.load(Relaxed),
            "last_seq": self.store.last_seq(),
            "raw_log": self.store.raw_status(),
            "sinks": self.sinks.iter().map(|s| s.status(self.store.last_seq())).collect::<Vec<_>>(),
            "bus": self.consumer.as_ref().map(|c| {
                let n = &c.counters;
                serde_json::json!({
                    "role": "store",
                    "records": n.records.load(Relaxed),
                    "flows": n.flows.load(Relaxed),
                    "unmapped": n.unmapped.load(Relaxed),
                    "refused": n.refused.load(Relaxed),
                    "commit_failures": n.commit_failures.load(Relaxed),
                    "duplicates": n.duplicates.load(Relaxed),
                    "counter_samples": self.counters_consumer.as_ref().map(|c| c.counters.samples.load(Relaxed)),
                    "lag": n.lag.load(Relaxed),
                    "paused": *c.refusals.lock(),
                    "halted": *c.halted.lock(),
                })
            }).or_else(|| self.publisher.as_ref().map(|p| {
                let c = &p.counters;
                serde_json::json!({
                    "role": "inlet",
                    "delivered": c.delivered.load(Relaxed),
                    "spooled": c.spooled.load(Relaxed),
                    "replayed": c.replayed.load(Relaxed),
                    "spool_dropped": c.spool_dropped.load(Relaxed),
                    "spool_bytes": c.spool_bytes.load(Relaxed),
                    "templates_shared": c.templates_shared.load(Relaxed),
                    "templates_failed": c.templates_failed.load(Relaxed),
                    "templates_applied": c.templates_applied.load(Relaxed),
                    "counters_delivered": c.counters_delivered.load(Relaxed),
                    "counters_dropped": c.counters_dropped.load(Relaxed),
                })
            })),
        })
    }

    /// What one tenant may know of the pipeline: the listeners to point exporters at, and
    /// per exporter of its own the flows, bytes and packets seen since start (from the
    /// `/metrics` aggregates). Nothing about other tenants, templates or the store.
    pub fn tenant_status(&self, tenant: &str) -> serde_json::Value {
        let names = self.store.names();
        let mut exporters: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
        for ((t, exporter, _app), sums) in &self.aggregates.lock().series {
            if names.tenant(*t) != tenant {
                continue;
            }
            let e = exporters.entry(exporter.to_string()).or_default();
            for (total, v) in e.iter_mut().zip(sums) {
                *total = total.saturating_add(*v);
            }
        }
        serde_json::json!({
            "tenant": tenant,
            "listeners": self.bound.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "exporters": exporters.into_iter().map(|(exporter, [bytes, packets, flows])| {
                serde_json::json!({ "exporter": exporter, "bytes": bytes, "packets": packets, "flows": flows })
            }).collect::<Vec<_>>(),
        })
    }

    /// The tenants the configuration maps exporters to.
    pub fn mapped_tenants(&self) -> impl Iterator<Item = String> + '_ {
        self.config
            .exporters
            .values()
            .chain(self.config.default_tenant.iter())
            .cloned()
    }

    pub fn template_count(&self) -> usize {
        self.decoder.lock().templates().template_count()
    }

    fn receive_loop(&self, socket: UdpSocket, enrich: Enrichment, tx: mpsc::SyncSender<Message>) {
        let mut batch = Batch::default();
        let mut out = DecodeOutput::default();
        let mut pending = Message {
            flows: self.spare_buffer(),
            counters: Vec::new(),
        };
        let mut last_send = Instant::now();
        let mut tenant_cache: TenantCache = None;
        while !self.stop.load(Relaxed) {
            match batch.receive(&socket) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "flow socket receive failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if batch.truncated_count > 0 {
                self.counters
                    .truncated
                    .fetch_add(batch.truncated_count as u64, Relaxed);
            }
            let now = crate::now_ms();
            for (source, dgram) in batch.iter() {
                // Nothing of an exporter no tenant owns is decoded (or learned).
                if enrich.tenants.tenant(source).is_none() && !enrich.agents.is_relay(source) {
                    self.counters.unmapped_datagrams.fetch_add(1, Relaxed);
                    continue;
                }
                let before = out.flows.len();
                let counters_before = out.interfaces.len();
                // Errors are counted by the decoder; records decoded before one stay.
                let _ = self.decoder.lock().decode(source, now, dgram, &mut out);
                self.check_agents(&enrich.agents, source, &mut out, before, counters_before);
                // Enriched datagram by datagram: its records are still in L1.
                self.enrich(&enrich, &mut tenant_cache, &mut out, &mut pending, now);
            }
            let due = last_send.elapsed() >= SEND_EVERY;
            if pending.flows.len() >= SEND_AT
                || (due && !(pending.flows.is_empty() && pending.counters.is_empty()))
            {
                let full = std::mem::replace(
                    &mut pending,
                    Message {
                        flows: self.spare_buffer(),
                        counters: Vec::new(),
                    },
                );
                // Blocks when the writer is behind: the socket buffer absorbs bursts and the
                // kernel counts what overflows it (`sotp_flow_socket_drops_total`).
                if tx.send(full).is_err() {
                    return;
                }
                last_send = Instant::now();
            } else if due {
                last_send = Instant::now();
            }
        }
        if !pending.flows.is_empty() || !pending.counters.is_empty() {
            let _ = tx.send(pending);
        }
    }

    /// sFlow records and counters of the datagram just decoded (from `flows_from` and
    /// `counters_from` on) that name an agent their source may not speak for are the
    /// source's.
    fn check_agents(
        &self,
        agents: &AgentBindings,
        source: IpAddr,
        out: &mut DecodeOutput,
        flows_from: usize,
        counters_from: usize,
    ) {
        let mut mismatched = 0;
        for r in &mut out.flows[flows_from..] {
            if r.protocol == FlowProtocol::Sflow && !agents.allows(r.exporter, source) {
                r.exporter = source;
                mismatched += 1;
            }
        }
        for c in &mut out.interfaces[counters_from..] {
            if let Some(agent) = c.agent
                && !agents.allows(agent, source)
            {
                c.agent = Some(source);
                mismatched += 1;
            }
        }
        if mismatched > 0 {
            self.counters
                .sflow_agent_mismatch
                .fetch_add(mismatched, Relaxed);
        }
    }

    /// Write the template state when it changed, every [`TEMPLATES_SAVE_EVERY`]; `shutdown`
    /// writes it once more after the receive threads have stopped.
    fn template_saver(&self) {
        let mut last = Instant::now();
        let mut last_expiry = Instant::now();
        let idle = self.config.template_idle.0.as_millis() as i64;
        while !self.stop.load(Relaxed) {
            if last_expiry.elapsed() >= TEMPLATES_EXPIRE_EVERY {
                last_expiry = Instant::now();
                let before = crate::now_ms().saturating_sub(idle);
                let gone = self.decoder.lock().expire_idle_templates(before);
                if gone > 0 {
                    tracing::info!(
                        spaces = gone,
                        "flow template spaces expired (nothing arrived for them)"
                    );
                }
            }
            if last.elapsed() >= TEMPLATES_SAVE_EVERY {
                last = Instant::now();
                self.save_templates();
            }
            self.share_templates();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An inlet publishes the template spaces that changed to the other inlets (every 100 ms:
    /// an inlet may die any moment after it learned a template), all of them again after
    /// Kafka refused one.
    fn share_templates(&self) {
        let Some(p) = &self.publisher else {
            return;
        };
        if !self
            .template_reader
            .lock()
            .as_ref()
            .is_some_and(|r| r.is_ready())
        {
            return; // the changes wait in the decoder until the topic exists
        }
        if p.counters.templates_unshared.swap(false, Relaxed) {
            self.decoder.lock().templates_unshared();
        }
        let spaces = self.decoder.lock().take_changed_templates();
        if !spaces.is_empty() {
            p.share_templates(&spaces);
        }
    }

    /// Write the template state if it changed: a snapshot under the decoder lock (cheap:
    /// templates are shared), serialized and written (synced) outside it.
    fn save_templates(&self) {
        let snapshot = self.decoder.lock().snapshot_templates();
        let Some(snapshot) = snapshot else {
            return;
        };
        let json = snapshot.to_json();
        let mode = crate::datadir::FILE_MODE;
        if let Err(e) = crate::datadir::write_atomic(&self.data, TEMPLATES_FILE, &json, mode) {
            tracing::warn!(error = %e, "could not persist flow templates");
            self.decoder.lock().templates_unsaved();
        }
    }

    /// Move decoded records into the message for the writer with their tenant and
    /// application ids (records of exporters without a tenant are counted and dropped).
    fn enrich(
        &self,
        enrich: &Enrichment,
        tenant_cache: &mut TenantCache,
        out: &mut DecodeOutput,
        pending: &mut Message,
        now: i64,
    ) {
        let names = self.store.names();
        for record in out.flows.drain(..) {
            let tenant = match *tenant_cache {
                Some((generation, ip, t))
                    if ip == record.exporter && generation == names.generation =>
                {
                    t
                }
                _ => {
                    let t = enrich
                        .tenants
                        .tenant(record.exporter)
                        .and_then(|t| names.live_tenant_id(t));
                    *tenant_cache = Some((names.generation, record.exporter, t));
                    t
                }
            };
            let Some(tenant) = tenant else {
                self.counters.unmapped.fetch_add(1, Relaxed);
                continue;
            };
            let app = enrich.app_ids[enrich.apps.classify(&record) as usize];
            pending.flows.push(RawFlow {
                record,
                tenant,
                app,
            });
        }
        for c in out.interfaces.drain(..) {
            if let Some(tenant) = c.agent.and_then(|a| enrich.tenants.tenant(a).cloned()) {
                pending.counters.push(StoredCounters {
                    tenant,
                    ts_ms: now,
                    counters: c,
                });
            }
        }
    }

    fn spare_buffer(&self) -> Vec<RawFlow> {
        self.spare
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SEND_AT * 2))
    }

    fn writer_loop(&self, rx: mpsc::Receiver<Message>) {
        let flush_every = self.config.flush_interval.0;
        // The receive threads' messages as they came: committed without copying them.
        let mut flows: Vec<Vec<RawFlow>> = Vec::new();
        let mut rows = 0;
        let mut counters: Vec<StoredCounters> = Vec::new();
        let mut last_flush = Instant::now();
        let mut last_retention = Instant::now() - RETENTION_EVERY + Duration::from_secs(30);
        loop {
            let wait = flush_every.saturating_sub(last_flush.elapsed());
            let closed = match rx.recv_timeout(wait) {
                Ok(m) => {
                    rows += m.flows.len();
                    flows.push(m.flows);
                    counters.extend(m.counters);
                    false
                }
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            if closed || last_flush.elapsed() >= flush_every || rows >= 256 * 1024 {
                if self.flush(&mut flows, &mut counters) {
                    rows = 0;
                }
                last_flush = Instant::now();
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = Instant::now();
                if let Err(e) = self.store.apply_retention(
                    crate::now_ms(),
                    self.config.raw_retention.0,
                    self.config.rollup_retention.0,
                ) {
                    tracing::warn!(error = %e, "flow retention failed");
                }
            }
            if closed {
                return;
            }
        }
    }

    /// Commit what the receive threads sent; false when it failed (kept for the next try).
    fn flush(&self, flows: &mut Vec<Vec<RawFlow>>, counters: &mut Vec<StoredCounters>) -> bool {
        if flows.is_empty() && counters.is_empty() {
            return true;
        }
        if let Some(publisher) = &self.publisher {
            self.publish(publisher, flows);
            self.publish_counters(publisher, counters);
        } else if let Err(e) = self.store.commit(flows, counters) {
            // Kept for the next flush: the store is local, a failure is transient (disk full).
            self.counters.store_errors.fetch_add(1, Relaxed);
            let rows: usize = flows.iter().map(Vec::len).sum();
            tracing::error!(error = %e, rows, "flow commit failed; retrying with the next batch");
            return false;
        }
        self.aggregate(flows.iter().flatten());
        {
            let mut spare = self.spare.lock();
            for mut buffer in flows.drain(..) {
                if spare.len() < 64 {
                    buffer.clear();
                    spare.push(buffer);
                }
            }
        }
        counters.clear();
        let (lock, cv) = &*self.committed;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
        true
    }

    /// A store's commit of the flows it read from the bus (the flows consumer's thread; the
    /// writer thread has no listeners feeding it then, and interface counters are stored by
    /// the counters consumer's own path, `commit_counters`).
    fn commit_from_bus(&self, flows: Vec<RawFlow>) -> bool {
        self.flush(&mut vec![flows], &mut Vec::new())
    }

    /// An inlet's flush: the flows grouped by tenant and exporter (the Kafka key, so an
    /// exporter's batches stay on one partition, in order), [`BUS_BATCH`] flows a record.
    fn publish(&self, publisher: &crate::bus::publish::Publisher, flows: &[Vec<RawFlow>]) {
        use crate::bus::schema;
        let names = self.store.names();
        let now = crate::now_ms();
        let mut groups: HashMap<(u16, IpAddr), Vec<schema::FlowMessage>> = HashMap::new();
        for f in flows.iter().flatten() {
            let message =
                schema::to_message(&f.record, names.tenant(f.tenant), names.app(f.app), now);
            groups
                .entry((f.tenant, f.record.exporter))
                .or_default()
                .push(message);
        }
        for ((tenant, exporter), messages) in groups {
            let key = format!("{}/{exporter}", names.tenant(tenant));
            for batch in messages.chunks(BUS_BATCH) {
                publisher.publish(&key, &schema::encode_batch(batch));
            }
        }
    }

    /// An inlet's interface counter samples, grouped by tenant and agent (the key).
    fn publish_counters(
        &self,
        publisher: &crate::bus::publish::Publisher,
        counters: &[StoredCounters],
    ) {
        use crate::bus::schema;
        let mut groups: HashMap<String, Vec<schema::CountersMessage>> = HashMap::new();
        for c in counters {
            let agent = c.counters.agent.map(|a| a.to_string()).unwrap_or_default();
            groups
                .entry(format!("{}/{agent}", c.tenant))
                .or_default()
                .push(schema::counters_to_message(c));
        }
        for (key, messages) in groups {
            for batch in messages.chunks(BUS_BATCH) {
                publisher.publish_counters(&key, &schema::encode_batch(batch));
            }
        }
    }

    /// Add the flows to the `/metrics` aggregates: summed per application in a small array
    /// while the (tenant, exporter) stays the same — usually a whole datagram's worth or more
    /// — and folded into the series map when it changes (one map update per run, not per
    /// flow).
    fn aggregate<'a>(&self, flows: impl Iterator<Item = &'a RawFlow>) {
        let mut agg = self.aggregates.lock();
        let mut run: Option<(u16, IpAddr)> = None;
        let mut by_app: Vec<[u64; 3]> = Vec::new();
        for f in flows {
            let key = (f.tenant, f.record.exporter);
            if run != Some(key) {
                if let Some(done) = run {
                    self.fold_aggregates(&mut agg, done, &mut by_app);
                }
                run = Some(key);
            }
            let app = f.app as usize;
            if app >= by_app.len() {
                by_app.resize(app + 1, [0; 3]);
            }
            // Saturating: the counts come from the network.
            let sums = &mut by_app[app];
            sums[0] = sums[0].saturating_add(f.record.scaled_bytes());
            sums[1] = sums[1].saturating_add(f.record.scaled_packets());
            sums[2] += 1;
        }
        if let Some(done) = run {
            self.fold_aggregates(&mut agg, done, &mut by_app);
        }
    }

    /// Move one (tenant, exporter)'s per-application sums into the series (up to the cap;
    /// the flows of series left out are counted) and zero them.
    fn fold_aggregates(&self, agg: &mut Aggregates, run: (u16, IpAddr), by_app: &mut [[u64; 3]]) {
        let limit = self.config.metrics_series_limit;
        for (app, sums) in by_app.iter_mut().enumerate() {
            if sums[2] == 0 {
                continue;
            }
            let key = (run.0, run.1, app as u16);
            let len = agg.series.len();
            match agg.series.get_mut(&key) {
                Some(e) => e
                    .iter_mut()
                    .zip(*sums)
                    .for_each(|(e, v)| *e = e.saturating_add(v)),
                None if len < limit => {
                    agg.series.insert(key, *sums);
                }
                None => {
                    self.counters
                        .metrics_series_dropped
                        .fetch_add(sums[2], Relaxed);
                }
            }
            *sums = [0; 3];
        }
    }
}

/// The template state saved last time; empty if there is none, or if the file is damaged
/// (then it is set aside as `flow-templates.json.damaged-<ms>` and counted: exporters
/// re-send their templates within minutes, a collector that does not start loses everything).
/// A store's consumer commits through the service, like the writer thread.
impl crate::bus::consume::FlowSink for FlowService {
    fn names(&self) -> Arc<super::store::Names> {
        self.store.names()
    }

    fn commit(&self, flows: Vec<RawFlow>) -> bool {
        self.commit_from_bus(flows)
    }

    fn next_seq(&self) -> u64 {
        self.store.last_seq() + 1
    }

    fn commit_counters(&self, counters: Vec<StoredCounters>) -> bool {
        match self.store.commit_interface_counters(&counters) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, samples = counters.len(), "interface counters from the bus not stored; reading them again");
                false
            }
        }
    }

    fn hold_unconfirmed(&self, held: bool) {
        self.store.hold_unconfirmed(held);
    }
}

fn load_templates(
    data: &cap_std::fs::Dir,
    limits: sotp_flow::template::StateLimits,
    counters: &PipelineCounters,
) -> TemplateCache {
    let bytes = match crate::datadir::read_optional(data, TEMPLATES_FILE) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return TemplateCache::with_limits(limits),
        Err(e) => {
            tracing::error!(error = %e, "cannot read {TEMPLATES_FILE}; starting without saved templates");
            return TemplateCache::with_limits(limits);
        }
    };
    match TemplateCache::from_json(&bytes, limits) {
        Ok(cache) => cache,
        Err(e) => {
            counters.template_state_damaged.fetch_add(1, Relaxed);
            match crate::datadir::quarantine(data, TEMPLATES_FILE) {
                Ok(aside) => {
                    tracing::error!(error = %e, kept_as = %aside, "{TEMPLATES_FILE} is damaged; set aside, starting without saved templates")
                }
                Err(q) => {
                    tracing::error!(error = %e, quarantine = %q, "{TEMPLATES_FILE} is damaged and could not be set aside")
                }
            }
            TemplateCache::with_limits(limits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotp_flow::{FlowProtocol, FlowRecord};

    fn flow(exporter: &str, tenant: u16, app: u16, bytes: u64) -> RawFlow {
        let mut record = FlowRecord::empty(FlowProtocol::NetflowV9, exporter.parse().unwrap(), 0);
        record.bytes = bytes;
        record.packets = 2;
        record.sampling_rate = 10;
        RawFlow {
            record,
            tenant,
            app,
        }
    }

    #[test]
    fn metrics_aggregates_sum_per_series_up_to_the_cap_and_count_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let config: FlowConfig = toml::from_str(
            "netflow = [\"127.0.0.1:0\"]\ndefault_tenant = \"t\"\nmetrics_series_limit = 3\n",
        )
        .unwrap();
        let service = FlowService::start(config, dir.path()).unwrap();
        // Runs of one exporter, exporters interleaved, an application seen in two runs.
        let flows = [
            flow("192.0.2.1", 0, 1, 100),
            flow("192.0.2.1", 0, 2, 50),
            flow("192.0.2.1", 0, 1, 100),
            flow("192.0.2.2", 0, 1, 7),
            flow("192.0.2.1", 0, 1, 1),
            // A fourth series: over the cap, its flows counted as dropped.
            flow("192.0.2.2", 0, 3, 5),
            flow("192.0.2.2", 0, 3, 5),
        ];
        service.aggregate(flows.iter());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let agg = service.aggregates.lock();
        let get = |e: &str, app: u16| agg.series.get(&(0, ip(e), app)).copied();
        // Scaled by the sampling rate: bytes ×10, packets ×10.
        assert_eq!(get("192.0.2.1", 1), Some([2010, 60, 3]));
        assert_eq!(get("192.0.2.1", 2), Some([500, 20, 1]));
        assert_eq!(get("192.0.2.2", 1), Some([70, 20, 1]));
        assert_eq!(get("192.0.2.2", 3), None);
        assert_eq!(agg.series.len(), 3);
        assert_eq!(service.counters.metrics_series_dropped.load(Relaxed), 2);
        drop(agg);
        service.shutdown();
    }
}
