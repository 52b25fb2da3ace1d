//! The front door's part of compliance: the tenant's active rule components for an audit,
//! the compliance subsystem (`crate::compliance`), and the scheduler that starts audits.

use super::Runtime;

use crate::compliance::{ActiveRule, RuleComponent};
use crate::component::ComponentHandle;
use crate::error::RuntimeError;
use crate::manifest::World;
use std::sync::Arc;

/// The `component` label of the samples audits leave behind.
const AUDIT_COMPONENT: &str = "compliance";

impl Runtime {
    // ---- compliance ------------------------------------------------------------------------

    /// Run the audit `ticket` claimed (blocking), store its report, and record its summary as
    /// samples — `compliance_devices`, `compliance_devices_compliant`,
    /// `compliance_percent_devices`, `compliance_percent_features`, `compliance_errors`,
    /// `compliance_waived` — so the compliance trend charts through the query APIs.
    pub fn finish_audit(
        &self,
        ticket: crate::compliance::AuditTicket,
        trigger: &str,
    ) -> Result<(i64, crate::compliance::audit::Report), RuntimeError> {
        let tenant = ticket.tenant.clone();
        let rules = self.rule_components(&tenant);
        let (id, report) = self.compliance.finish_audit(ticket, trigger, &rules)?;
        let s = &report.summary;
        let values = [
            ("compliance_devices", s.devices as f64),
            ("compliance_devices_compliant", s.compliant_devices as f64),
            ("compliance_percent_devices", s.percent_devices),
            ("compliance_percent_features", s.percent_features),
            ("compliance_errors", s.errors as f64),
            ("compliance_waived", s.waived as f64),
        ];
        if let Ok(budget) = self.budget(&tenant) {
            let hasher = self.telemetry.hasher();
            let mut samples = crate::telemetry::Samples::default();
            let now = crate::now_ms();
            for (metric, value) in values {
                samples.push(
                    hasher.key(&tenant, metric.to_string(), Vec::new()),
                    now,
                    value,
                );
            }
            let batch = crate::telemetry::Batch {
                tenant: tenant.clone(),
                component: AUDIT_COMPONENT.to_string(),
                samples,
                max_series: budget.limits().max_series,
                ..Default::default()
            };
            let committed = tokio::runtime::Handle::try_current()
                .map(|h| h.block_on(self.telemetry.commit(batch)));
            if let Ok(Err(e)) = committed {
                tracing::warn!(%tenant, error = %e, "audit samples not stored");
            }
        }
        Ok((id, report))
    }

    pub fn compliance_counters(&self) -> &crate::compliance::ComplianceCounters {
        &self.compliance.counters
    }

    /// The active versions of the tenant's `compliance-rule` components, for an audit.
    pub fn rule_components(&self, tenant: &str) -> Vec<Arc<dyn crate::compliance::RuleComponent>> {
        let handles: Vec<(String, Arc<ComponentHandle>)> = self
            .components
            .read()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, name), h)| (name.clone(), h.clone()))
            .collect();
        let mut rules: Vec<Arc<dyn crate::compliance::RuleComponent>> = handles
            .into_iter()
            .filter_map(|(name, handle)| {
                let version = handle.active()?;
                (version.env.manifest.world == crate::manifest::World::ComplianceRule).then(|| {
                    Arc::new(crate::compliance::ActiveRule { name, version })
                        as Arc<dyn crate::compliance::RuleComponent>
                })
            })
            .collect();
        rules.sort_by(|a, b| a.name().cmp(b.name()));
        rules
    }

    /// Audit today's backups with stored version `version` of rule component `name` in place
    /// of its active version (or beside the others, if none is active), without activating
    /// it, and compare with the active rules: which devices change status, which findings
    /// appear or go away. The draft's instances keep their own counters, so its failures do
    /// not show as the component's.
    pub async fn dry_run_component(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<crate::compliance::DryRun, RuntimeError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.blocking(move |rt| rt.require_component(&t, &n))
            .await?;
        let draft = self.load_version(tenant, name, version, None).await?;
        let world = draft.env.manifest.world;
        if world != World::ComplianceRule {
            return Err(RuntimeError::Invalid(format!(
                "component `{name}` is a {} component; only compliance-rule components take part in audits",
                world.name()
            )));
        }
        let (t, n) = (tenant.to_string(), name.to_string());
        self.blocking(move |rt| {
            let active = rt.rule_components(&t);
            let mut with_draft: Vec<Arc<dyn RuleComponent>> =
                active.iter().filter(|c| c.name() != n).cloned().collect();
            with_draft.push(Arc::new(ActiveRule {
                name: n,
                version: draft,
            }));
            with_draft.sort_by(|a, b| a.name().cmp(b.name()));
            Ok(rt
                .compliance(&t)?
                .dry_run_components(&t, &active, &with_draft)?)
        })
        .await
    }

    /// The compliance subsystem, once `tenant` is known to exist; every method takes the
    /// tenant again, so isolation is the same single argument as everywhere else.
    pub fn compliance(&self, tenant: &str) -> Result<&crate::compliance::Compliance, RuntimeError> {
        self.tenant(tenant)?;
        Ok(&self.compliance)
    }
}

/// Scheduled compliance audits: once a second, every tenant whose schedule is due and that
/// has rules (files or components) gets an audit (one at a time per tenant: a run still going
/// when the next is due makes that one a no-op, logged). The pass reads schedules and rule
/// files from SQLite, so it runs on the blocking pool, as the audits do. The same pass offers
/// held alerts whose hold-down ended to their tenants' correlation policies.
pub(super) async fn run_audit_schedule(rt: std::sync::Weak<Runtime>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || {
            start_due_audits(&rt);
            // The alert hold-down timer and span forwarding share this once-a-second pass.
            rt.release_held_alerts();
            rt.start_due_forwards();
        })
        .await;
    }
}

pub(super) fn start_due_audits(rt: &Arc<Runtime>) {
    let now = crate::now_ms();
    for tenant in rt.state.tenant_ids() {
        if !rt.compliance.take_due(&tenant, now) {
            continue;
        }
        let rules = rt.rule_components(&tenant);
        if rules.is_empty() && !rt.compliance.has_active_rules(&tenant) {
            continue;
        }
        let Ok(ticket) = rt.compliance.begin_audit(&tenant) else {
            tracing::warn!(%tenant, "scheduled audit skipped: one is still running");
            continue;
        };
        let job = rt.clone();
        tokio::task::spawn_blocking(move || match job.finish_audit(ticket, "schedule") {
            Ok((id, report)) => tracing::info!(
                %tenant, id, compliant = report.summary.compliant_devices,
                devices = report.summary.devices, "scheduled compliance audit"
            ),
            Err(e) => tracing::warn!(%tenant, error = %e, "scheduled compliance audit failed"),
        });
    }
}
