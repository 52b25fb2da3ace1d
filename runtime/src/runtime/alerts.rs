//! The front door's part of alert correlation: the tenant checked, the inventory handed to
//! `crate::correlation`, the blocking work (SQLite with its fsync) on the blocking pool.

use super::Runtime;
use crate::correlation::{
    ActivePolicy, AlertSettings, AlertStatus, Incident, IncidentDetail, IntakeInfo, IntakeOutcome,
    Policy, StoredAlert,
};
use crate::error::RuntimeError;
use crate::manifest::World;
use std::sync::Arc;

impl Runtime {
    /// Record an intake (Alertmanager's webhook if `webhook`, else a list of alerts) and
    /// apply its alerts; returns once it is durable.
    pub async fn ingest_alerts(
        self: &Arc<Self>,
        tenant: &str,
        body: Vec<u8>,
        webhook: bool,
    ) -> Result<IntakeOutcome, RuntimeError> {
        let t = tenant.to_string();
        let outcome = self
            .blocking(move |rt| {
                rt.tenant(&t)?;
                let devices = rt.state.devices(&t)?;
                let policy = rt.correlation_policy(&t);
                Ok(rt
                    .correlation
                    .ingest(&t, &body, webhook, &devices, policy.as_deref())?)
            })
            .await?;
        if outcome.correlated.changed_incidents() {
            // Not awaited: a slow Alertmanager must not slow the intake it feeds.
            let (rt, t) = (self.clone(), tenant.to_string());
            tokio::task::spawn_blocking(move || rt.push_incidents(&t));
        }
        Ok(outcome)
    }

    /// Replay the tenant's intakes of `[from, to)` through stored version `version` of
    /// correlation policy `name` (not activated) and through the active policy, and show how
    /// their decisions differ. Nothing of the tenant's alerts or incidents changes.
    pub async fn replay_policy(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: u32,
        window: (i64, i64),
    ) -> Result<crate::correlation::replay::Replay, RuntimeError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.blocking(move |rt| rt.require_component(&t, &n))
            .await?;
        let loaded = self.load_version(tenant, name, version, None).await?;
        let world = loaded.env.manifest.world;
        if world != World::CorrelationPolicy {
            return Err(RuntimeError::Invalid(format!(
                "component `{name}` is a {} component, not a correlation policy",
                world.name()
            )));
        }
        let draft = ActivePolicy {
            name: name.to_string(),
            version: loaded,
        };
        let t = tenant.to_string();
        self.blocking(move |rt| {
            let devices = rt.state.devices(&t)?;
            let active = rt.correlation_policy(&t);
            Ok(rt
                .correlation
                .replay(&t, window, &devices, active.as_deref(), &draft)?)
        })
        .await
    }

    /// Push the tenant's incidents to its Alertmanager (if it set one).
    pub(super) fn push_incidents(&self, tenant: &str) {
        let egress = crate::egress::EgressPolicy::new(self.config.egress.clone());
        let secret = |name: &str| self.state.secret(tenant, name).ok().flatten();
        let devices = self.state.devices(tenant).unwrap_or_default();
        let policy = self.correlation_policy(tenant);
        if let Err(e) =
            self.correlation
                .push_incidents(tenant, &egress, secret, &devices, policy.as_deref())
        {
            tracing::warn!(%tenant, error = %e, "reading incidents to push failed");
        }
    }

    /// How the last push of the tenant's incidents to each output went.
    pub fn alert_outputs(
        &self,
        tenant: &str,
    ) -> Result<[crate::correlation::PushStatus; 3], RuntimeError> {
        self.tenant(tenant)?;
        Ok([
            self.correlation.output_status(tenant, "alertmanager"),
            self.correlation.output_status(tenant, "silences"),
            self.correlation.output_status(tenant, "webhook"),
        ])
    }

    pub fn alerts(
        &self,
        tenant: &str,
        status: Option<AlertStatus>,
        device: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.correlation.alerts(tenant, status, device, limit)?)
    }

    pub fn alert_intakes(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<IntakeInfo>, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.correlation.intakes(tenant, limit)?)
    }

    pub fn alert_settings(&self, tenant: &str) -> Result<AlertSettings, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.correlation.settings(tenant)?)
    }

    pub fn set_alert_settings(
        &self,
        tenant: &str,
        settings: &AlertSettings,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.correlation.set_settings(tenant, settings)?)
    }

    /// The tenant's active correlation policy: its active `correlation-policy` component
    /// (the first by name, if several are active).
    pub fn correlation_policy(&self, tenant: &str) -> Option<Arc<dyn Policy>> {
        let mut active: Vec<(String, Arc<crate::instance::LoadedVersion>)> = self
            .components
            .read()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .filter_map(|((_, name), h)| {
                let v = h.active()?;
                (v.env.manifest.world == World::CorrelationPolicy).then(|| (name.clone(), v))
            })
            .collect();
        active.sort_by(|a, b| a.0.cmp(&b.0));
        let (name, version) = active.into_iter().next()?;
        Some(Arc::new(ActivePolicy { name, version }))
    }

    pub fn incidents(
        &self,
        tenant: &str,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Incident>, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.correlation.incidents(tenant, status, limit)?)
    }

    pub fn incident(&self, tenant: &str, id: i64) -> Result<IncidentDetail, RuntimeError> {
        self.tenant(tenant)?;
        self.correlation
            .incident(tenant, id)?
            .ok_or_else(|| RuntimeError::NotFound(format!("no incident {id}")))
    }

    /// Acknowledge, or with `resolve` close by hand, an incident.
    pub fn set_incident(
        &self,
        tenant: &str,
        id: i64,
        resolve: bool,
        by: &str,
    ) -> Result<IncidentDetail, RuntimeError> {
        self.tenant(tenant)?;
        if !self.correlation.set_incident(tenant, id, resolve, by)? {
            return Err(RuntimeError::NotFound(format!("no incident {id}")));
        }
        self.incident(tenant, id)
    }

    /// Offer due held alerts to their policies (the hold-down timer, once a second), and
    /// start the pushes that are due — on the blocking pool, so a slow Alertmanager does not
    /// hold up this pass (audits are started by it too).
    pub(super) fn release_held_alerts(self: &Arc<Self>) {
        let devices_of = |t: &str| self.state.devices(t).unwrap_or_default();
        let policy_of = |t: &str| self.correlation_policy(t);
        let mut push = match self.correlation.release_holds(devices_of, policy_of) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "releasing held alerts failed; retrying in a second");
                Vec::new()
            }
        };
        push.extend(self.correlation.due_pushes(crate::now_ms()));
        push.sort();
        push.dedup();
        for tenant in push {
            let rt = self.clone();
            tokio::task::spawn_blocking(move || rt.push_incidents(&tenant));
        }
    }

    pub fn correlation_counters(&self) -> &crate::correlation::CorrelationCounters {
        &self.correlation.counters
    }

    /// The most an intake body may be (the API refuses larger ones before reading them).
    pub fn max_alert_body(&self) -> usize {
        self.correlation.limits.max_body_bytes.0 as usize
    }
}
