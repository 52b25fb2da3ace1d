//! MQTT: one persistent broker session per tenant, shared by the tenant's components.
//!
//! The host, not the guest, owns the connection (rumqttc, QoS 1, `clean_session = false`,
//! manual acks). Incoming messages are routed to every component whose subscription matches,
//! queued in order, and acknowledged to the broker — in the order they arrived, as MQTT
//! requires — only once every component has handled its copy and what it emitted is durable.
//! The broker therefore keeps, and redelivers after a reconnect, anything SOTP has not made
//! durable: a crash of SOTP or of the broker loses nothing the broker acknowledged.
//!
//! Redelivered messages (DUP set) are checked against a ledger of (component, packet id,
//! digest of topic and payload) committed in the same transaction as the samples, so a
//! message whose samples were committed but whose PUBACK was lost is not counted twice.
//! A ledger entry is cleared once its PUBACK is sent.

use crate::component::{ComponentHandle, MessageOutcome};
use crate::grants::topic_matches;
use crate::host::Broker;
use crate::telemetry::{LedgerEntry, TelemetryStore};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use parking_lot::{Mutex, RwLock};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A tenant's broker, as set with `PUT /v1/mqtt`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Not settable: SOTP's session is always `sotp-<tenant>` (the broker keeps the session
    /// — subscriptions, unacknowledged messages — under it while SOTP is away). A free-form
    /// id would let one tenant take over another's session on a shared broker. Accepted
    /// only if it is that id, for settings saved before.
    #[serde(default, skip_serializing)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the tenant secret holding the password.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Connect with TLS, trusting this CA (PEM); or `tls = true` to trust the system roots.
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub tls_ca_pem: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
}

fn default_port() -> u16 {
    1883
}

fn default_keep_alive() -> u64 {
    15
}

impl MqttSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("host: must not be empty".into());
        }
        if self.port == 0 {
            return Err("port: must not be 0".into());
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            return Err("keep_alive_s: must be within 5..=3600".into());
        }
        if self.tls_ca_pem.is_some() && !self.tls {
            return Err("tls_ca_pem: set tls = true as well".into());
        }
        Ok(())
    }
}

/// What `GET /v1/mqtt` shows.
#[derive(Clone, Debug, Serialize, Default)]
pub struct MqttStatus {
    pub configured: bool,
    pub connected: bool,
    pub broker: Option<String>,
    pub client_id: Option<String>,
    pub subscriptions: Vec<String>,
    pub received: u64,
    pub acknowledged: u64,
    pub unrouted: u64,
    pub duplicates_skipped: u64,
    pub not_acknowledged: u64,
    pub connects: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct SessionCounters {
    received: AtomicU64,
    acknowledged: AtomicU64,
    unrouted: AtomicU64,
    duplicates_skipped: AtomicU64,
    not_acknowledged: AtomicU64,
    connects: AtomicU64,
}

struct Route {
    component: String,
    filter: String,
    handle: Weak<ComponentHandle>,
}

/// One tenant's broker connection.
struct Session {
    tenant: String,
    settings: MqttSettings,
    client_id: String,
    client: AsyncClient,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    counters: SessionCounters,
    /// Filters subscribed at the broker.
    subscribed: Mutex<BTreeSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Resolves secrets for broker credentials.
pub trait CredentialSource: Send + Sync {
    fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, String>;
}

pub struct MqttHub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    routes: RwLock<HashMap<String, Vec<Route>>>,
    handles: Mutex<HashMap<(String, String), Weak<ComponentHandle>>>,
    telemetry: Arc<TelemetryStore>,
    credentials: Arc<dyn CredentialSource>,
    egress: crate::egress::EgressPolicy,
}

/// Settings that are valid and whose broker the egress policy allows.
fn settings_ok(s: &MqttSettings, egress: &crate::egress::EgressPolicy) -> Result<(), String> {
    s.validate()?;
    egress
        .resolve(&s.host, s.port)
        .map(|_| ())
        .map_err(|e| format!("host: {e}"))
}

/// The client id of a tenant's session (see `MqttSettings::client_id`).
pub fn client_id(tenant: &str) -> String {
    format!("sotp-{tenant}")
}

/// Test aid: hold every PUBACK this many milliseconds after the message is durable, which
/// widens the "committed but not yet acknowledged" window a crash test aims at. Read from
/// `SOTP_FAILPOINT_MQTT_ACK_DELAY_MS`; zero (no delay) unless set.
fn ack_delay() -> Duration {
    static DELAY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SOTP_FAILPOINT_MQTT_ACK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::ZERO)
    })
}

/// An entry in the ordered acknowledgement queue.
struct PendingAck {
    publish: Publish,
    digest: u64,
    received: tokio::time::Instant,
    waits: Vec<(String, oneshot::Receiver<MessageOutcome>)>,
}

impl Broker for MqttHub {
    fn add_filter(&self, tenant: &str, component: &str, filter: &str) {
        self.route_filter(tenant, component, filter);
    }

    fn publish(
        &self,
        tenant: &str,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        self.publish_now(tenant, topic, payload, retain)
    }
}

impl MqttHub {
    pub fn new(
        telemetry: Arc<TelemetryStore>,
        credentials: Arc<dyn CredentialSource>,
        egress: crate::egress::EgressPolicy,
    ) -> Self {
        MqttHub {
            sessions: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            telemetry,
            credentials,
            egress,
        }
    }

    /// Start, restart (settings changed) or stop (`None`) a tenant's session.
    pub fn configure(
        self: &Arc<Self>,
        tenant: &str,
        settings: Option<MqttSettings>,
    ) -> Result<(), String> {
        // A broker the egress policy refuses leaves the current session as it is.
        if let Some(s) = &settings {
            settings_ok(s, &self.egress)?;
        }
        let old = self.sessions.lock().remove(tenant);
        if let Some(old) = old {
            let client = old.client.clone();
            tokio::spawn(async move {
                let _ = client.disconnect().await;
            });
        }
        let Some(settings) = settings else {
            return Ok(());
        };
        settings.validate()?;
        let session = self.start_session(tenant, settings)?;
        self.sessions.lock().insert(tenant.to_string(), session);
        Ok(())
    }

    fn start_session(
        self: &Arc<Self>,
        tenant: &str,
        settings: MqttSettings,
    ) -> Result<Arc<Session>, String> {
        let client_id = client_id(tenant);
        // The broker's address passes the operator's egress policy; without TLS SOTP connects
        // to the very address checked. With TLS the name is kept (the certificate is checked
        // against it), so a name that later resolves elsewhere would also need a certificate
        // for it there.
        let checked = self
            .egress
            .resolve(&settings.host, settings.port)
            .map_err(|e| format!("host: {e}"))?;
        let connect_to = if settings.tls {
            settings.host.clone()
        } else {
            checked.ip().to_string()
        };
        let mut options = MqttOptions::new(&client_id, &connect_to, settings.port);
        options
            .set_keep_alive(Duration::from_secs(settings.keep_alive_s))
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &settings.username {
            let password = match &settings.password_secret {
                Some(name) => self
                    .credentials
                    .secret(tenant, name)?
                    .ok_or_else(|| format!("password_secret: no secret named `{name}`"))?,
                None => String::new(),
            };
            options.set_credentials(user, password);
        }
        if settings.tls {
            options.set_transport(tls_transport(settings.tls_ca_pem.as_deref())?);
        }
        let (client, eventloop) = AsyncClient::new(options, 4096);
        let session = Arc::new(Session {
            tenant: tenant.to_string(),
            settings,
            client_id,
            client,
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            counters: SessionCounters::default(),
            subscribed: Mutex::new(BTreeSet::new()),
            tasks: Mutex::new(Vec::new()),
        });
        // Unbounded on purpose: the task polling the connection must never wait for the
        // acker, which itself waits for that task to send its PUBACKs. Its length is bounded
        // anyway by the components' queues, where the backpressure lives.
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<PendingAck>();
        let acker = tokio::spawn(run_acker(
            Arc::downgrade(&session),
            self.telemetry.clone(),
            ack_rx,
        ));
        let poller = tokio::spawn(run_eventloop(
            Arc::downgrade(self),
            Arc::downgrade(&session),
            eventloop,
            ack_tx,
        ));
        session.tasks.lock().extend([acker, poller]);
        Ok(session)
    }

    /// Make `filters` the component's subscriptions (on activation of a version).
    pub fn set_routes(
        &self,
        tenant: &str,
        component: &str,
        handle: &Arc<ComponentHandle>,
        filters: &BTreeSet<String>,
    ) {
        self.handles.lock().insert(
            (tenant.to_string(), component.to_string()),
            Arc::downgrade(handle),
        );
        {
            let mut routes = self.routes.write();
            let list = routes.entry(tenant.to_string()).or_default();
            list.retain(|r| r.component != component);
            for f in filters {
                list.push(Route {
                    component: component.to_string(),
                    filter: f.clone(),
                    handle: Arc::downgrade(handle),
                });
            }
        }
        self.sync_subscriptions(tenant);
    }

    /// Add one subscription to an active component (a `subscribe` outside `init`).
    fn route_filter(&self, tenant: &str, component: &str, filter: &str) {
        let Some(handle) = self
            .handles
            .lock()
            .get(&(tenant.to_string(), component.to_string()))
            .cloned()
        else {
            return;
        };
        self.routes
            .write()
            .entry(tenant.to_string())
            .or_default()
            .push(Route {
                component: component.to_string(),
                filter: filter.to_string(),
                handle,
            });
        self.sync_subscriptions(tenant);
    }

    pub fn remove_component(&self, tenant: &str, component: &str) {
        self.handles
            .lock()
            .remove(&(tenant.to_string(), component.to_string()));
        if let Some(list) = self.routes.write().get_mut(tenant) {
            list.retain(|r| r.component != component);
        }
        self.sync_subscriptions(tenant);
    }

    pub fn remove_tenant(self: &Arc<Self>, tenant: &str) {
        self.routes.write().remove(tenant);
        self.handles.lock().retain(|(t, _), _| t != tenant);
        let _ = self.configure(tenant, None);
    }

    /// Publish at QoS 1 without waiting (the send queue is bounded).
    fn publish_now(
        &self,
        tenant: &str,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String> {
        let session =
            self.sessions.lock().get(tenant).cloned().ok_or_else(|| {
                "the tenant has no MQTT broker configured (PUT /v1/mqtt)".to_string()
            })?;
        session
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| format!("publish queue: {e}"))
    }

    pub fn status(&self, tenant: &str) -> MqttStatus {
        let session = self.sessions.lock().get(tenant).cloned();
        let mut filters: Vec<String> = self
            .routes
            .read()
            .get(tenant)
            .map(|l| {
                l.iter()
                    .map(|r| r.filter.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        filters.dedup();
        match session {
            None => MqttStatus {
                subscriptions: filters,
                ..Default::default()
            },
            Some(s) => MqttStatus {
                configured: true,
                connected: s.connected.load(Relaxed),
                broker: Some(format!("{}:{}", s.settings.host, s.settings.port)),
                client_id: Some(s.client_id.clone()),
                subscriptions: filters,
                received: s.counters.received.load(Relaxed),
                acknowledged: s.counters.acknowledged.load(Relaxed),
                unrouted: s.counters.unrouted.load(Relaxed),
                duplicates_skipped: s.counters.duplicates_skipped.load(Relaxed),
                not_acknowledged: s.counters.not_acknowledged.load(Relaxed),
                connects: s.counters.connects.load(Relaxed),
                last_error: s.last_error.lock().clone(),
            },
        }
    }

    pub fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().drain().map(|(_, s)| s).collect();
        for s in sessions {
            for t in s.tasks.lock().drain(..) {
                t.abort();
            }
        }
    }

    /// Bring the broker's subscriptions in line with the routes.
    fn sync_subscriptions(&self, tenant: &str) {
        let Some(session) = self.sessions.lock().get(tenant).cloned() else {
            return;
        };
        let wanted: BTreeSet<String> = self
            .routes
            .read()
            .get(tenant)
            .map(|l| l.iter().map(|r| r.filter.clone()).collect())
            .unwrap_or_default();
        let (add, remove): (Vec<String>, Vec<String>) = {
            let current = session.subscribed.lock();
            (
                wanted.difference(&current).cloned().collect(),
                current.difference(&wanted).cloned().collect(),
            )
        };
        if add.is_empty() && remove.is_empty() {
            return;
        }
        *session.subscribed.lock() = wanted;
        let client = session.client.clone();
        tokio::spawn(async move {
            for f in add {
                if let Err(e) = client.subscribe(f.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(filter = %f, error = %e, "subscribe request failed");
                }
            }
            for f in remove {
                let _ = client.unsubscribe(f).await;
            }
        });
    }

    fn matching(&self, tenant: &str, topic: &str) -> Vec<(String, Arc<ComponentHandle>)> {
        let routes = self.routes.read();
        let mut out: BTreeMap<String, Arc<ComponentHandle>> = BTreeMap::new();
        for r in routes.get(tenant).into_iter().flatten() {
            if topic_matches(&r.filter, topic)
                && let Some(h) = r.handle.upgrade()
            {
                out.entry(r.component.clone()).or_insert(h);
            }
        }
        out.into_iter().collect()
    }
}

fn tls_transport(ca_pem: Option<&str>) -> Result<rumqttc::Transport, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("tls_ca_pem: {e}"))?;
                roots.add(cert).map_err(|e| format!("tls_ca_pem: {e}"))?;
            }
            if roots.is_empty() {
                return Err("tls_ca_pem: no certificate found in the PEM text".into());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
        Arc::new(config),
    )))
}

/// Digest identifying a message's content for the redelivery ledger.
pub fn message_digest(topic: &str, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(topic.as_bytes());
    h.update(&[0]);
    h.update(payload);
    h.digest()
}

async fn run_eventloop(
    hub: Weak<MqttHub>,
    session: Weak<Session>,
    mut eventloop: EventLoop,
    acks: mpsc::UnboundedSender<PendingAck>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = eventloop.poll().await;
        let (Some(hub), Some(session)) = (hub.upgrade(), session.upgrade()) else {
            return;
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(200);
                session.connected.store(true, Relaxed);
                session.counters.connects.fetch_add(1, Relaxed);
                tracing::info!(tenant = %session.tenant, session_present = ack.session_present, "MQTT connected");
                // A broker that lost our session (restart without persistence, new id)
                // needs the subscriptions again.
                if !ack.session_present {
                    session.subscribed.lock().clear();
                }
                hub.sync_subscriptions(&session.tenant);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                session.counters.received.fetch_add(1, Relaxed);
                let pending = dispatch(&hub, &session, publish).await;
                if acks.send(pending).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                session.connected.store(false, Relaxed);
                let text = e.to_string();
                tracing::warn!(tenant = %session.tenant, error = %text, retry_in = ?backoff, "MQTT connection lost");
                *session.last_error.lock() = Some(text);
                drop(hub);
                drop(session);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Queue a message on every matching component; the returned entry resolves when all have
/// handled it.
async fn dispatch(hub: &MqttHub, session: &Session, publish: Publish) -> PendingAck {
    let targets = hub.matching(&session.tenant, &publish.topic);
    if targets.is_empty() {
        session.counters.unrouted.fetch_add(1, Relaxed);
    }
    let digest = message_digest(&publish.topic, &publish.payload);
    let mut waits = Vec::with_capacity(targets.len());
    for (component, handle) in targets {
        if publish.dup && publish.pkid != 0 {
            let store = hub.telemetry.clone();
            let (tenant, comp, pkid) = (session.tenant.clone(), component.clone(), publish.pkid);
            let seen = tokio::task::spawn_blocking(move || {
                store.ledger_contains(&tenant, &comp, pkid, digest)
            })
            .await
            .unwrap_or(Ok(false))
            .unwrap_or(false);
            if seen {
                session.counters.duplicates_skipped.fetch_add(1, Relaxed);
                continue;
            }
        }
        let ledger = (publish.pkid != 0).then_some(LedgerEntry {
            pkid: publish.pkid,
            digest,
        });
        let rx = handle
            .enqueue_message(publish.topic.clone(), publish.payload.to_vec(), ledger)
            .await;
        waits.push((component, rx));
    }
    PendingAck {
        publish,
        digest,
        received: tokio::time::Instant::now(),
        waits,
    }
}

/// Acknowledge messages in arrival order once every component has handled its copy.
async fn run_acker(
    session: Weak<Session>,
    telemetry: Arc<TelemetryStore>,
    mut rx: mpsc::UnboundedReceiver<PendingAck>,
) {
    let mut in_order = FuturesOrdered::new();
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(pending) => in_order.push_back(async move {
                    let mut durable = true;
                    let mut done = Vec::new();
                    for (component, wait) in pending.waits {
                        match wait.await {
                            Ok(MessageOutcome::Handled { .. }) => done.push(component),
                            Ok(MessageOutcome::NotDurable(_)) | Err(_) => durable = false,
                        }
                    }
                    let delay = ack_delay();
                    if !delay.is_zero() {
                        tokio::time::sleep_until(pending.received + delay).await;
                    }
                    (pending.publish, pending.digest, durable, done)
                }),
                None => return,
            },
            Some((publish, digest, durable, done)) = in_order.next(), if !in_order.is_empty() => {
                let Some(session) = session.upgrade() else { return };
                if durable {
                    if session.client.ack(&publish).await.is_ok() {
                        session.counters.acknowledged.fetch_add(1, Relaxed);
                        if publish.pkid != 0 && !done.is_empty() {
                            telemetry.forget_ledger(
                                &session.tenant,
                                &done,
                                LedgerEntry { pkid: publish.pkid, digest },
                            );
                        }
                    }
                } else {
                    // Not acknowledged: the broker redelivers it after the next reconnect.
                    session.counters.not_acknowledged.fetch_add(1, Relaxed);
                }
            }
        }
    }
}
