//! The front door's part of alert correlation: the tenant checked, the inventory handed to
//! `crate::correlation`, the blocking work (SQLite with its fsync) on the blocking pool.

use super::Runtime;
use crate::correlation::{AlertSettings, AlertStatus, IntakeInfo, IntakeOutcome, StoredAlert};
use crate::error::RuntimeError;
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
        let tenant = tenant.to_string();
        self.blocking(move |rt| {
            rt.tenant(&tenant)?;
            let devices = rt.state.devices(&tenant)?;
            Ok(rt.correlation.ingest(&tenant, &body, webhook, &devices)?)
        })
        .await
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

    pub fn correlation_counters(&self) -> &crate::correlation::CorrelationCounters {
        &self.correlation.counters
    }

    /// The most an intake body may be (the API refuses larger ones before reading them).
    pub fn max_alert_body(&self) -> usize {
        self.correlation.limits.max_body_bytes.0 as usize
    }
}
