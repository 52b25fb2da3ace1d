//! Alert correlation. In: alerts — Alertmanager's webhook and a plain JSON intake — and the
//! inventory (devices, and later their topology). Out: the tenant's alerts, each mapped to the
//! device it is about, and every intake recorded as it came, for replay.
//!
//! `intake.rs` reads the wire formats, `mapping.rs` finds the device an alert is about,
//! `store.rs` records intakes and applies them to the alert table in one transaction (an
//! intake answered 2xx is durable; redelivery changes nothing). `Runtime` is the front door
//! (`runtime/alerts.rs`): it checks the tenant and hands this the inventory.

pub mod engine;
pub mod incidents;
pub mod intake;
pub mod mapping;
pub mod outputs;
pub mod replay;
pub mod silences;
pub mod store;

pub use engine::{ActivePolicy, Correlated, Policy};
pub use incidents::{Incident, IncidentDetail};
pub use intake::{AlertEvent, AlertStatus, Intake, IntakeError};
pub use mapping::{AlertSettings, DeviceIndex};
pub use store::{Applied, IntakeInfo, StoredAlert};

use crate::inventory::Device;
use crate::state::StateStore;
use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a tenant's alerts may hold (`[runtime.correlation]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Size of one intake request's body.
    pub max_body_bytes: ByteSize,
    /// Alerts in one request.
    pub max_alerts_per_request: usize,
    /// Alerts a tenant holds (firing, and resolved ones for `keep_resolved`).
    pub max_alerts: u64,
    /// Recorded intake bodies kept per tenant (oldest dropped first): the replay window.
    pub keep_intake_bytes: ByteSize,
    /// How long a resolved alert is kept.
    pub keep_resolved: HumanDuration,
    /// A body identical to one received this recently is a redelivery.
    pub dedupe_window: HumanDuration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            max_body_bytes: ByteSize::mib(8),
            max_alerts_per_request: 10_000,
            max_alerts: 100_000,
            keep_intake_bytes: ByteSize::mib(256),
            keep_resolved: HumanDuration(Duration::from_secs(24 * 3600)),
            dedupe_window: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// Operator-wide counters (`/metrics`: `sotp_alert_*`).
#[derive(Default)]
pub struct CorrelationCounters {
    pub intakes: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub alerts: AtomicU64,
    pub unmapped: AtomicU64,
    pub refused: AtomicU64,
    pub incidents_opened: AtomicU64,
    pub suppressed: AtomicU64,
    /// Batches a policy failed on (their alerts passed unfolded).
    pub policy_failures: AtomicU64,
    /// Alerts offered to policies, and the time their `decide` calls took (topology reads
    /// included): the per-alert policy cost.
    pub policy_alerts: AtomicU64,
    pub policy_nanos: AtomicU64,
    /// Pushes of incidents to tenants' Alertmanagers, and those that failed.
    pub pushes: AtomicU64,
    pub push_failures: AtomicU64,
}

/// How the last push of a tenant's incidents went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PushStatus {
    pub last_push_ms: Option<i64>,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    pub incidents: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CorrelationError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What the intake endpoints answer.
#[derive(Clone, Debug, Serialize)]
pub struct IntakeOutcome {
    #[serde(flatten)]
    pub applied: Applied,
    pub alerts: usize,
    /// Alerts whose labels name no inventory device (kept, passed through).
    pub unmapped: usize,
    /// Alerts the sender left out (Alertmanager's `max_alerts`).
    pub truncated: u64,
    /// What correlation decided on the alerts that changed.
    pub correlated: Correlated,
}

const SETTINGS: &str = "alerts";

pub struct Correlation {
    state: Arc<StateStore>,
    pub limits: CorrelationConfig,
    pub counters: CorrelationCounters,
    /// How each tenant's last push went, and when the periodic one is next due.
    pushes: parking_lot::Mutex<std::collections::HashMap<String, PushStatus>>,
    /// One batch at a time per tenant: decisions apply in arrival order.
    locks: parking_lot::Mutex<std::collections::HashMap<String, Arc<parking_lot::Mutex<()>>>>,
    /// When each tenant's periodic push is next due.
    periodic: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
    /// One push at a time per tenant; a push asked for meanwhile runs once after it.
    pushing: parking_lot::Mutex<std::collections::HashMap<String, Arc<PushSlot>>>,
    /// Per tenant, the silenced children's fingerprints its Alertmanager was seen holding.
    silenced_seen: parking_lot::Mutex<std::collections::HashMap<String, silences::Seen>>,
}

#[derive(Default)]
struct PushSlot {
    running: parking_lot::Mutex<()>,
    again: std::sync::atomic::AtomicBool,
}

impl Correlation {
    pub fn new(state: Arc<StateStore>, limits: CorrelationConfig) -> Correlation {
        Correlation {
            state,
            limits,
            counters: CorrelationCounters::default(),
            pushes: Default::default(),
            locks: Default::default(),
            periodic: Default::default(),
            pushing: Default::default(),
            silenced_seen: Default::default(),
        }
    }

    /// Read, map and record one request's alerts, then decide on those that changed with
    /// the tenant's `policy` (none: they pass).
    pub fn ingest(
        &self,
        tenant: &str,
        body: &[u8],
        webhook: bool,
        devices: &[Device],
        policy: Option<&dyn Policy>,
    ) -> Result<IntakeOutcome, CorrelationError> {
        self.ingest_at(tenant, body, webhook, devices, policy, crate::now_ms())
    }

    /// [`Self::ingest`] at `now` (a replay runs recorded intakes at their own times).
    pub fn ingest_at(
        &self,
        tenant: &str,
        body: &[u8],
        webhook: bool,
        devices: &[Device],
        policy: Option<&dyn Policy>,
        now: i64,
    ) -> Result<IntakeOutcome, CorrelationError> {
        let parsed = if webhook {
            intake::parse_webhook(body, self.limits.max_alerts_per_request)
        } else {
            intake::parse_alerts(body, self.limits.max_alerts_per_request, now)
        };
        let intake = parsed.inspect_err(|_| self.count(&self.counters.rejected, 1))?;
        let settings = self.settings(tenant)?;
        let index = DeviceIndex::new(devices);
        let events: Vec<(AlertEvent, Option<String>)> = intake
            .alerts
            .into_iter()
            .map(|a| {
                let device = index.device_of(&a.labels, &settings);
                (a, device)
            })
            .collect();
        let unmapped = events.iter().filter(|(_, d)| d.is_none()).count();
        let lock = self.lock(tenant);
        let _one_at_a_time = lock.lock();
        let digest = hex::encode(sha2::Sha256::digest(body));
        let text = String::from_utf8_lossy(body);
        let applied = store::ingest(
            &self.state,
            &self.limits,
            tenant,
            intake.source,
            &digest,
            &text,
            &events,
            now,
        )?;
        self.count(&self.counters.intakes, 1);
        if applied.duplicate {
            self.count(&self.counters.duplicates, 1);
        } else {
            self.count(&self.counters.alerts, events.len() as u64);
            self.count(&self.counters.unmapped, unmapped as u64);
            self.count(&self.counters.refused, applied.refused as u64);
        }
        let changed = applied.changed.clone();
        let correlated = self.correlate(tenant, devices, policy, changed, now)?;
        Ok(IntakeOutcome {
            applied,
            alerts: events.len(),
            unmapped,
            truncated: intake.truncated,
            correlated,
        })
    }

    /// Offer the held alerts whose time has come to their tenants' policies; returns the
    /// tenants whose incidents changed.
    pub fn release_holds(
        &self,
        devices_of: impl Fn(&str) -> Vec<Device>,
        policy_of: impl Fn(&str) -> Option<Arc<dyn Policy>>,
    ) -> Result<Vec<String>, CorrelationError> {
        self.release_holds_at(devices_of, policy_of, crate::now_ms())
    }

    /// [`Self::release_holds`] at `now`.
    pub fn release_holds_at(
        &self,
        devices_of: impl Fn(&str) -> Vec<Device>,
        policy_of: impl Fn(&str) -> Option<Arc<dyn Policy>>,
        now: i64,
    ) -> Result<Vec<String>, CorrelationError> {
        let due = store::due_holds(&self.state, now)?;
        let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (tenant, fp) in due {
            by_tenant.entry(tenant).or_default().push(fp);
        }
        let mut changed = Vec::new();
        for (tenant, fps) in by_tenant {
            let lock = self.lock(&tenant);
            let _one_at_a_time = lock.lock();
            let policy = policy_of(&tenant);
            let done =
                self.correlate(&tenant, &devices_of(&tenant), policy.as_deref(), fps, now)?;
            if done.changed_incidents() {
                changed.push(tenant);
            }
        }
        Ok(changed)
    }

    fn correlate(
        &self,
        tenant: &str,
        devices: &[Device],
        policy: Option<&dyn Policy>,
        fingerprints: Vec<String>,
        now: i64,
    ) -> Result<Correlated, CorrelationError> {
        let done = engine::correlate(&self.state, tenant, devices, policy, fingerprints, now)?;
        let c = &self.counters;
        self.count(&c.incidents_opened, done.outcome.opened.len() as u64);
        self.count(&c.suppressed, done.outcome.suppressed as u64);
        if done.policy_error.is_some() {
            self.count(&c.policy_failures, 1);
        }
        self.count(&c.policy_alerts, done.policy_alerts as u64);
        self.count(&c.policy_nanos, done.policy_time.as_nanos() as u64);
        Ok(done)
    }

    pub fn incidents(
        &self,
        tenant: &str,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Incident>, CorrelationError> {
        Ok(incidents::list(&self.state, tenant, status, limit)?)
    }

    pub fn incident(
        &self,
        tenant: &str,
        id: i64,
    ) -> Result<Option<IncidentDetail>, CorrelationError> {
        Ok(incidents::detail(&self.state, tenant, id)?)
    }

    /// Acknowledge or (by hand) resolve an incident; `false` if the tenant has none `id`.
    pub fn set_incident(
        &self,
        tenant: &str,
        id: i64,
        resolve: bool,
        by: &str,
    ) -> Result<bool, CorrelationError> {
        Ok(incidents::set(&self.state, tenant, id, resolve, by)?)
    }

    /// Push the tenant's open and recently closed incidents to its Alertmanager and webhook,
    /// if it has them, and reconcile the children's silences if it asked for them; `secret`
    /// reads a tenant secret (the bearer token). Pushes of one tenant do not overlap: one
    /// asked for while another runs is folded into a single push after it.
    pub fn push_incidents(
        &self,
        tenant: &str,
        egress: &crate::egress::EgressPolicy,
        secret: impl Fn(&str) -> Option<String>,
        devices: &[Device],
        policy: Option<&dyn Policy>,
    ) -> Result<(), CorrelationError> {
        let slot = self
            .pushing
            .lock()
            .entry(tenant.to_string())
            .or_default()
            .clone();
        slot.again.store(true, Ordering::SeqCst);
        let Some(_running) = slot.running.try_lock() else {
            return Ok(()); // the push running now goes once more
        };
        while slot.again.swap(false, Ordering::SeqCst) {
            if self.push_once(tenant, egress, &secret, devices, policy)? {
                slot.again.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// One push; `true` if it changed incidents (children resolved because Alertmanager
    /// dropped them while silenced), so that the change is pushed too.
    fn push_once(
        &self,
        tenant: &str,
        egress: &crate::egress::EgressPolicy,
        secret: &dyn Fn(&str) -> Option<String>,
        devices: &[Device],
        policy: Option<&dyn Policy>,
    ) -> Result<bool, CorrelationError> {
        let settings = self.settings(tenant)?;
        if settings.alertmanager.is_none() && settings.webhook.is_none() {
            return Ok(false);
        }
        let mut changed = false;
        let now = crate::now_ms();
        let list: Vec<Incident> = incidents::list(&self.state, tenant, None, 1000)?
            .into_iter()
            .filter(|i| {
                i.closed_ms
                    .is_none_or(|c| now - c < outputs::RESOLVED_FOR_MS)
            })
            .collect();
        if let Some(out) = &settings.alertmanager {
            let alerts: Vec<serde_json::Value> = list
                .iter()
                .map(|i| outputs::super_alert(tenant, i))
                .collect();
            let bearer = out.bearer_secret.as_deref().and_then(secret);
            let result = if alerts.is_empty() {
                Ok(())
            } else {
                outputs::push(out, bearer.as_deref(), egress, &alerts)
            };
            self.record_push(tenant, "alertmanager", now, alerts.len(), result);
            if out.silence_children {
                let result = self.sync_silences(
                    tenant,
                    &settings,
                    bearer.as_deref(),
                    egress,
                    devices,
                    policy,
                );
                let n = result
                    .as_ref()
                    .map_or(0, |(r, _)| r.created + r.renewed + r.kept);
                changed = result.as_ref().is_ok_and(|(_, c)| *c);
                self.record_push(tenant, "silences", now, n, result.map(|_| ()));
            }
        }
        if let Some(out) = &settings.webhook {
            let bearer = out.bearer_secret.as_deref().and_then(secret);
            let body = outputs::webhook_body(tenant, &list);
            let result = outputs::post_webhook(out, bearer.as_deref(), egress, &body);
            self.record_push(tenant, "webhook", now, list.len(), result);
        }
        Ok(changed)
    }

    /// Resolve the silenced children Alertmanager no longer holds, then make its silences
    /// what the open incidents want (see `silences`); and whether incidents changed.
    fn sync_silences(
        &self,
        tenant: &str,
        settings: &AlertSettings,
        bearer: Option<&str>,
        egress: &crate::egress::EgressPolicy,
        devices: &[Device],
        policy: Option<&dyn Policy>,
    ) -> Result<(silences::Reconciled, bool), String> {
        let Some(out) = &settings.alertmanager else {
            return Ok(Default::default());
        };
        let index = DeviceIndex::new(devices);
        let wanted = |c: &Self| -> Result<Vec<silences::Wanted>, String> {
            let children = store::silenceable(&c.state, tenant).map_err(|e| e.to_string())?;
            Ok(silences::wanted(tenant, &children, &index, settings))
        };
        let mut want = wanted(self)?;
        let seen = self
            .silenced_seen
            .lock()
            .get(tenant)
            .cloned()
            .unwrap_or_default();
        let names = silences::alertnames(&want, &seen);
        let firing = silences::firing_there(out, bearer, egress, names)?;
        let gone = {
            let mut seen = self.silenced_seen.lock();
            silences::vanished(seen.entry(tenant.to_string()).or_default(), &want, &firing)
        };
        let mut changed = false;
        if !gone.is_empty() {
            changed = self
                .resolve_gone(tenant, &gone, devices, policy)
                .map_err(|e| format!("resolving children gone from Alertmanager: {e}"))?;
            want = wanted(self)?;
        }
        let done = silences::reconcile(out, bearer, egress, tenant, &want, crate::now_ms())?;
        Ok((done, changed))
    }

    /// Record the resolution of alerts Alertmanager dropped while they were silenced: as a
    /// plain intake (so it is recorded and replayed), each naming why.
    fn resolve_gone(
        &self,
        tenant: &str,
        fingerprints: &[String],
        devices: &[Device],
        policy: Option<&dyn Policy>,
    ) -> Result<bool, CorrelationError> {
        let now = crate::now_ms();
        let known: Vec<StoredAlert> = store::by_fingerprint(&self.state, tenant, fingerprints)?
            .into_iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .collect();
        if known.is_empty() {
            return Ok(false);
        }
        let body: Vec<serde_json::Value> = known
            .iter()
            .map(|a| {
                let mut annotations = a.annotations.clone();
                annotations.insert(
                    "sotp_resolved_by".into(),
                    "gone from Alertmanager while SOTP silenced it".into(),
                );
                serde_json::json!({
                    "status": "resolved",
                    "fingerprint": a.fingerprint,
                    "labels": a.labels,
                    "annotations": annotations,
                    "endsAt": outputs::rfc3339(now),
                })
            })
            .collect();
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let done = self.ingest_at(tenant, &body, false, devices, policy, now)?;
        tracing::info!(%tenant, alerts = known.len(), "children gone from Alertmanager while silenced: resolved");
        Ok(done.correlated.changed_incidents())
    }

    fn record_push(
        &self,
        tenant: &str,
        output: &str,
        now: i64,
        incidents: usize,
        result: Result<(), String>,
    ) {
        self.count(&self.counters.pushes, 1);
        let mut pushes = self.pushes.lock();
        let status = pushes.entry(format!("{tenant}\u{0}{output}")).or_default();
        status.last_push_ms = Some(now);
        status.incidents = incidents;
        match result {
            Ok(()) => {
                status.last_ok_ms = Some(now);
                status.last_error = None;
            }
            Err(e) => {
                self.count(&self.counters.push_failures, 1);
                tracing::warn!(%tenant, %output, error = %e, "pushing incidents failed; the next push repeats them");
                status.last_error = Some(e);
            }
        }
    }

    /// How the last push to one of the tenant's outputs (`alertmanager`, `webhook`) went.
    pub fn output_status(&self, tenant: &str, output: &str) -> PushStatus {
        self.pushes
            .lock()
            .get(&format!("{tenant}\u{0}{output}"))
            .cloned()
            .unwrap_or_default()
    }

    /// Tenants with an output whose periodic push is due (once a minute; silences too).
    pub fn due_pushes(&self, now_ms: i64) -> Vec<String> {
        let configured = self.state.settings(SETTINGS).unwrap_or_default();
        let mut due_at = self.periodic.lock();
        configured
            .into_iter()
            .filter_map(|(tenant, text)| {
                let s: AlertSettings = serde_json::from_str(&text).ok()?;
                if s.alertmanager.is_none() && s.webhook.is_none() {
                    return None;
                }
                // Claimed when started, so a push that is slow to fail is not started again
                // every second.
                let next = due_at.entry(tenant.clone()).or_insert(now_ms);
                if now_ms < *next {
                    return None;
                }
                *next = now_ms + 60_000;
                Some(tenant)
            })
            .collect()
    }

    /// Forget a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        let prefix = format!("{tenant}\u{0}");
        self.pushes.lock().retain(|k, _| !k.starts_with(&prefix));
        self.locks.lock().remove(tenant);
        self.pushing.lock().remove(tenant);
        self.periodic.lock().remove(tenant);
        self.silenced_seen.lock().remove(tenant);
    }

    /// Replay the tenant's intakes received in `[from, to)` through `draft` and through
    /// `active` (see `replay`).
    pub fn replay(
        &self,
        tenant: &str,
        window: (i64, i64),
        devices: &[Device],
        active: Option<&dyn Policy>,
        draft: &dyn Policy,
    ) -> Result<replay::Replay, CorrelationError> {
        let intakes = store::recorded(&self.state, tenant, window.0, window.1)?;
        if intakes.len() > replay::MAX_INTAKES {
            return Err(CorrelationError::Invalid(format!(
                "{} intakes in the window, over the {} a replay runs: choose a shorter one",
                intakes.len(),
                replay::MAX_INTAKES
            )));
        }
        let settings = self.settings(tenant)?;
        replay::replay(
            tenant,
            &intakes,
            devices,
            &settings,
            &self.limits,
            active,
            draft,
            window,
        )
    }

    fn lock(&self, tenant: &str) -> Arc<parking_lot::Mutex<()>> {
        self.locks
            .lock()
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    pub fn alerts(
        &self,
        tenant: &str,
        status: Option<AlertStatus>,
        device: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, CorrelationError> {
        Ok(store::alerts(&self.state, tenant, status, device, limit)?)
    }

    pub fn intakes(&self, tenant: &str, limit: usize) -> Result<Vec<IntakeInfo>, CorrelationError> {
        Ok(store::intakes(&self.state, tenant, limit)?)
    }

    pub fn settings(&self, tenant: &str) -> Result<AlertSettings, CorrelationError> {
        let stored = self
            .state
            .setting(tenant, SETTINGS)
            .map_err(store::StoreError::from)?;
        Ok(stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    pub fn set_settings(
        &self,
        tenant: &str,
        settings: &AlertSettings,
    ) -> Result<(), CorrelationError> {
        settings.check().map_err(CorrelationError::Invalid)?;
        let text = serde_json::to_string(settings).unwrap_or_default();
        self.state
            .put_setting(tenant, SETTINGS, &text)
            .map_err(store::StoreError::from)?;
        Ok(())
    }

    fn count(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBox;
    use crate::state::Tenant;

    fn correlation(dir: &std::path::Path, tenants: &[&str]) -> Correlation {
        let state = StateStore::open(&dir.join("state.db"), SecretBox::from_key([0; 32])).unwrap();
        for t in tenants {
            state
                .create_tenant(&Tenant {
                    id: t.to_string(),
                    name: t.to_string(),
                    created_ms: 0,
                    max_components: 0,
                    max_memory_bytes: 0,
                    max_series: None,
                    max_instances: None,
                    max_concurrent_calls: None,
                })
                .unwrap();
        }
        Correlation::new(Arc::new(state), CorrelationConfig::default())
    }

    #[test]
    fn a_periodic_push_is_due_once_a_minute_from_when_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let c = correlation(dir.path(), &["acme", "quiet"]);
        let out: AlertSettings = serde_json::from_value(serde_json::json!({
            "alertmanager": { "url": "http://127.0.0.1:9093" }
        }))
        .unwrap();
        c.set_settings("acme", &out).unwrap();
        c.set_settings("quiet", &AlertSettings::default()).unwrap();
        assert_eq!(c.due_pushes(1_000), ["acme"], "only tenants with an output");
        assert!(
            c.due_pushes(2_000).is_empty(),
            "a push that has not finished is not started again"
        );
        assert!(c.due_pushes(60_999).is_empty());
        assert_eq!(c.due_pushes(61_000), ["acme"]);
    }
}
