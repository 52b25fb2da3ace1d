//! Golden-config compliance: a tenant's rule files audit the configuration backups.
//!
//! In: rule files (YAML + Jinja2, versioned, one active version each), the active rule
//! components (`compliance-rule` world, handed in by `Runtime`), waivers, the device
//! inventory (scope fields and variables) and the newest backup of each device from the
//! tenant's Git repository (`backups`). Out: audit reports (per device percent compliant,
//! per rule pass/fail/waived/error, missing and extra lines, remediation in the device's
//! syntax), stored per tenant with their trend, and dry runs (what a draft would change).
//!
//! - `config.rs` parses configs into line trees (indented and Junos `set`/brace syntaxes),
//! - `rules.rs` checks a rule file into a `RuleSet` (errors name file, line, column, key),
//! - `evaluate.rs` runs one rule on one device, `remediation.rs` orders the fixes,
//! - `components.rs` calls a rule component's active version as an audit needs it,
//! - `audit.rs` runs everything over every device and compares reports,
//! - `schedule.rs` says when each tenant's audit is due (`Runtime` starts the due ones),
//! - `store.rs` keeps versions, waivers and reports in the state database.
//!
//! Budgets (`[runtime.compliance]`): rule files per tenant, bytes per file, versions kept per
//! file, waivers, reports kept; one audit at a time per tenant.

pub mod audit;
pub mod components;
pub mod config;
pub mod evaluate;
pub mod remediation;
pub mod rules;
pub mod schedule;
pub mod store;

#[cfg(test)]
mod corpus_tests;

pub use audit::{DryRun, Report, Waiver};
pub use components::{ActiveRule, ComponentFinding, RuleComponent};
pub use rules::{RuleFileError, RuleSet};
pub use schedule::Schedule;
pub use store::{AuditInfo, RuleFileInfo, RuleVersion, StoreError};

use crate::backups::Backups;
use crate::state::StateStore;
use crate::units::ByteSize;
use audit::DeviceInput;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Rule files per tenant.
    pub max_rule_files: u32,
    /// Size of one rule file.
    pub max_rule_file_bytes: ByteSize,
    /// Versions kept per rule file (the active and the rollback target are always kept).
    pub max_versions_per_file: u32,
    /// Waivers per tenant (expired ones are dropped first).
    pub max_waivers: u32,
    /// Audit reports kept per tenant (the trend reaches this far back).
    pub keep_audits: u32,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            max_rule_files: 100,
            max_rule_file_bytes: ByteSize::mib(1),
            max_versions_per_file: 50,
            max_waivers: 10_000,
            keep_audits: 100,
        }
    }
}

/// An audit in progress.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub started_ms: i64,
    pub devices: usize,
    pub done: usize,
}

struct Running {
    started_ms: i64,
    devices: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

/// The tenant's audit slot, claimed (see `Compliance::begin_audit`).
pub struct AuditTicket {
    /// The tenant audited.
    pub tenant: String,
    started_ms: i64,
    devices: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

/// What a rule file upload did.
#[derive(Clone, Debug, Serialize)]
pub struct Uploaded {
    pub file: String,
    pub version: u32,
    /// False: the text equals the newest version, which is returned.
    pub created: bool,
    pub active: bool,
    pub rules: usize,
}

/// A draft to dry-run: a new text for a file, or one of its stored versions.
pub enum Draft {
    Text(String),
    Version(u32),
}

/// One rule of a preview: what it expects of the device, or why there is nothing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PreviewRule {
    pub rule: String,
    pub feature: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intended: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error(transparent)]
    RuleFile(#[from] RuleFileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Busy(String),
}

/// Process-wide counters, on the operator's `/metrics`.
#[derive(Default)]
pub struct ComplianceCounters {
    pub audits: std::sync::atomic::AtomicU64,
    /// Rule results that were errors (unparsable config, template error, no backup...).
    pub error_results: std::sync::atomic::AtomicU64,
    /// Rule files refused at upload (bad YAML, regex, template, size).
    pub rule_files_rejected: std::sync::atomic::AtomicU64,
    /// Uploads and waivers refused at a budget (`compliance.max_*`), audits refused while one runs.
    pub refused: std::sync::atomic::AtomicU64,
}

pub struct Compliance {
    pub counters: ComplianceCounters,
    state: Arc<StateStore>,
    backups: Arc<Backups>,
    limits: ComplianceConfig,
    /// Checked rule sets by (tenant, file, version): compiling is the costly part of a load.
    cache: Mutex<HashMap<(String, String, u32), Arc<RuleSet>>>,
    running: Mutex<HashMap<String, Running>>,
    /// Each tenant's next scheduled audit (ms since the epoch; `None`: none), computed when
    /// first needed and after each run or change.
    due: Mutex<HashMap<String, Option<i64>>>,
}

/// The tenant setting holding the audit schedule.
const SCHEDULE_SETTING: &str = "compliance_schedule";

/// Rule file names: what a file system and a URL both take without escaping.
pub fn validate_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "rule file name `{name}`: 1-64 of a-z, A-Z, 0-9, `-`, `_`, `.`, not starting with `.`"
        ))
    }
}

impl Compliance {
    pub fn new(state: Arc<StateStore>, backups: Arc<Backups>, limits: ComplianceConfig) -> Self {
        Compliance {
            counters: ComplianceCounters::default(),
            state,
            backups,
            limits,
            cache: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            due: Mutex::new(HashMap::new()),
        }
    }

    /// Check and store a rule file as its next version; `activate` makes it active.
    pub fn put_rules(
        &self,
        tenant: &str,
        file: &str,
        text: &str,
        activate: bool,
    ) -> Result<Uploaded, ComplianceError> {
        let outcome = self.put_rules_checked(tenant, file, text, activate);
        match &outcome {
            Err(ComplianceError::Store(StoreError::Quota(_))) => self.count(&self.counters.refused),
            Err(ComplianceError::RuleFile(_) | ComplianceError::Invalid(_)) => {
                self.count(&self.counters.rule_files_rejected)
            }
            _ => {}
        }
        outcome
    }

    fn check_size(&self, text: &str) -> Result<(), ComplianceError> {
        if text.len() as u64 > self.limits.max_rule_file_bytes.0 {
            return Err(ComplianceError::Invalid(format!(
                "a rule file of {} bytes is over compliance.max_rule_file_bytes = {}",
                text.len(),
                self.limits.max_rule_file_bytes
            )));
        }
        Ok(())
    }

    fn count(&self, counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn put_rules_checked(
        &self,
        tenant: &str,
        file: &str,
        text: &str,
        activate: bool,
    ) -> Result<Uploaded, ComplianceError> {
        validate_file_name(file).map_err(ComplianceError::Invalid)?;
        self.check_size(text)?;
        let checked = rules::compile(file, 0, text)?;
        let (version, created) = store::add_version(&self.state, &self.limits, tenant, file, text)?;
        if activate {
            store::activate(&self.state, tenant, file, version)?;
        }
        let active = store::active_version(&self.state, tenant, file)? == Some(version);
        Ok(Uploaded {
            file: file.into(),
            version,
            created,
            active,
            rules: checked.rules.len(),
        })
    }

    pub fn files(&self, tenant: &str) -> Result<Vec<RuleFileInfo>, ComplianceError> {
        Ok(store::files(&self.state, tenant)?)
    }

    pub fn versions(&self, tenant: &str, file: &str) -> Result<Vec<RuleVersion>, ComplianceError> {
        Ok(store::versions(&self.state, tenant, file)?)
    }

    /// A version's text; `None`: the active one.
    pub fn text(
        &self,
        tenant: &str,
        file: &str,
        version: Option<u32>,
    ) -> Result<(u32, String), ComplianceError> {
        let version = match version {
            Some(v) => v,
            None => store::active_version(&self.state, tenant, file)?.ok_or_else(|| {
                StoreError::NotFound(format!("rule file `{file}` has no active version"))
            })?,
        };
        Ok((version, store::text(&self.state, tenant, file, version)?))
    }

    pub fn activate(&self, tenant: &str, file: &str, version: u32) -> Result<(), ComplianceError> {
        Ok(store::activate(&self.state, tenant, file, version)?)
    }

    pub fn rollback(&self, tenant: &str, file: &str) -> Result<u32, ComplianceError> {
        Ok(store::rollback(&self.state, tenant, file)?)
    }

    pub fn delete_file(&self, tenant: &str, file: &str) -> Result<(), ComplianceError> {
        store::delete_file(&self.state, tenant, file)?;
        self.cache
            .lock()
            .retain(|(t, f, _), _| !(t == tenant && f == file));
        Ok(())
    }

    pub fn add_waiver(
        &self,
        tenant: &str,
        device: &str,
        rule: &str,
        reason: &str,
        expires_ms: i64,
    ) -> Result<Waiver, ComplianceError> {
        let now = crate::now_ms();
        if reason.trim().is_empty() || reason.len() > 1024 {
            return Err(ComplianceError::Invalid(
                "a waiver needs a reason of 1 to 1024 bytes".into(),
            ));
        }
        if device.is_empty() || device.len() > 255 || rule.is_empty() || rule.len() > 128 {
            return Err(ComplianceError::Invalid(
                "a waiver names a device (1-255 bytes) and a rule id (1-128 bytes)".into(),
            ));
        }
        if expires_ms <= now {
            return Err(ComplianceError::Invalid(
                "a waiver's expiry must be in the future".into(),
            ));
        }
        let waiver = Waiver {
            id: format!("w-{}", hex::encode(rand::random::<[u8; 6]>())),
            device: device.into(),
            rule: rule.into(),
            reason: reason.into(),
            expires_ms,
            created_ms: now,
        };
        store::add_waiver(&self.state, &self.limits, tenant, &waiver).inspect_err(|_| {
            self.count(&self.counters.refused);
        })?;
        Ok(waiver)
    }

    /// The waivers in force (expired ones are not listed).
    pub fn waivers(&self, tenant: &str) -> Result<Vec<Waiver>, ComplianceError> {
        let now = crate::now_ms();
        Ok(store::waivers(&self.state, tenant)?
            .into_iter()
            .filter(|w| w.expires_ms > now)
            .collect())
    }

    pub fn delete_waiver(&self, tenant: &str, id: &str) -> Result<(), ComplianceError> {
        Ok(store::delete_waiver(&self.state, tenant, id)?)
    }

    fn rule_set(
        &self,
        tenant: &str,
        file: &str,
        version: u32,
    ) -> Result<Arc<RuleSet>, ComplianceError> {
        let key = (tenant.to_string(), file.to_string(), version);
        if let Some(set) = self.cache.lock().get(&key) {
            return Ok(set.clone());
        }
        let text = store::text(&self.state, tenant, file, version)?;
        let set = Arc::new(rules::compile(file, version, &text)?);
        let mut cache = self.cache.lock();
        if cache.len() > 1024 {
            cache.clear(); // a bound, not a policy: sets are cheap to compile again
        }
        cache.insert(key, set.clone());
        Ok(set)
    }

    fn active_sets(&self, tenant: &str) -> Result<Vec<Arc<RuleSet>>, ComplianceError> {
        store::active(&self.state, tenant)?
            .into_iter()
            .map(|(file, version)| self.rule_set(tenant, &file, version))
            .collect()
    }

    /// What a rule file (`draft`, or the active version if `None`) expects of `device`, rule
    /// by rule: rendered for it, or why not (out of its scope, a template error).
    pub fn preview(
        &self,
        tenant: &str,
        file: &str,
        draft: Option<Draft>,
        device: &str,
    ) -> Result<Vec<PreviewRule>, ComplianceError> {
        validate_file_name(file).map_err(ComplianceError::Invalid)?;
        let set = match draft {
            Some(Draft::Text(text)) => {
                self.check_size(&text)?;
                Arc::new(rules::compile(file, 0, &text)?)
            }
            Some(Draft::Version(v)) => self.rule_set(tenant, file, v)?,
            None => {
                let version =
                    store::active_version(&self.state, tenant, file)?.ok_or_else(|| {
                        StoreError::NotFound(format!("rule file `{file}` has no active version"))
                    })?;
                self.rule_set(tenant, file, version)?
            }
        };
        let device = self
            .state
            .device(tenant, device)
            .map_err(StoreError::from)?
            .ok_or_else(|| StoreError::NotFound(format!("no device `{device}`")))?;
        let syntax = config::Syntax::of_platform(device.platform.as_deref());
        let vars = evaluate::template_vars(&rules::device_vars(&set, &device));
        Ok(set
            .rules
            .iter()
            .map(|rule| {
                let (intended, error) = if !rule.scope.covers(&device) {
                    (
                        None,
                        Some("the device is outside this rule's scope".to_string()),
                    )
                } else {
                    match evaluate::intended_text(&set, rule, syntax, &vars) {
                        Ok(text) => (Some(text), None),
                        Err(e) => (None, Some(e)),
                    }
                };
                PreviewRule {
                    rule: rule.id.clone(),
                    feature: rule.feature.clone(),
                    source: set.source().to_string(),
                    intended,
                    error,
                }
            })
            .collect())
    }

    /// Every device of the inventory with its newest backup.
    fn inputs(&self, tenant: &str) -> Result<Vec<DeviceInput>, ComplianceError> {
        let devices = self.state.devices(tenant).map_err(StoreError::from)?;
        // A repository that cannot be read is every device's error, not "no backup yet".
        // Each device's text is read from one commit, the newest, whose tree holds every
        // device's latest config (reading each at its own latest commit would parse a tree of
        // all devices per device); the commit reported is the one that last changed it.
        let head = self
            .backups
            .head(tenant)
            .map_err(|e| format!("backup repository: {e}"));
        let latest: Result<HashMap<String, String>, String> = self
            .backups
            .list(tenant)
            .map(|list| {
                list.into_iter()
                    .map(|b| (b.device, b.latest.commit))
                    .collect()
            })
            .map_err(|e| format!("backup repository: {e}"));
        Ok(devices
            .into_iter()
            .map(|device| {
                let commit = match (&latest, &head) {
                    (Ok(latest), Ok(head)) => {
                        Ok(latest.get(&device.name).cloned().zip(head.clone()))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                };
                let (backups, tenant, name) = (
                    self.backups.clone(),
                    tenant.to_string(),
                    device.name.clone(),
                );
                DeviceInput {
                    device,
                    backup: Box::new(move || match &commit {
                        Ok(Some((commit, head))) => backups
                            .text(&tenant, &name, Some(head))
                            .map(|text| (commit.clone(), text))
                            .map_err(|e| format!("backup: {e}")),
                        Ok(None) => Err("no backup of this device yet".to_string()),
                        Err(e) => Err(e.clone()),
                    }),
                }
            })
            .collect())
    }

    /// Run every active rule file over the newest backups and store the report.
    pub fn run_audit(
        &self,
        tenant: &str,
        trigger: &str,
        components: &[Arc<dyn RuleComponent>],
    ) -> Result<(i64, Report), ComplianceError> {
        let ticket = self.begin_audit(tenant)?;
        self.finish_audit(ticket, trigger, components)
    }

    /// Claim the tenant's audit slot (one audit at a time per tenant): from now on the audit
    /// shows as running. `finish_audit` does the work and frees the slot.
    pub fn begin_audit(&self, tenant: &str) -> Result<AuditTicket, ComplianceError> {
        let mut running = self.running.lock();
        if running.contains_key(tenant) {
            self.count(&self.counters.refused);
            return Err(ComplianceError::Busy(
                "an audit of this tenant is running; see GET /v1/compliance/audits/running".into(),
            ));
        }
        let ticket = AuditTicket {
            tenant: tenant.to_string(),
            started_ms: crate::now_ms(),
            devices: Arc::new(AtomicUsize::new(0)),
            done: Arc::new(AtomicUsize::new(0)),
        };
        running.insert(
            tenant.to_string(),
            Running {
                started_ms: ticket.started_ms,
                devices: ticket.devices.clone(),
                done: ticket.done.clone(),
            },
        );
        Ok(ticket)
    }

    /// Run the audit `ticket` claimed: the active rule files and rule `components`.
    pub fn finish_audit(
        &self,
        ticket: AuditTicket,
        trigger: &str,
        components: &[Arc<dyn RuleComponent>],
    ) -> Result<(i64, Report), ComplianceError> {
        let tenant = ticket.tenant.as_str();
        let result = (|| {
            let inputs = self.inputs(tenant)?;
            ticket.devices.store(inputs.len(), Ordering::Relaxed);
            let sets = self.active_sets(tenant)?;
            let waivers = store::waivers(&self.state, tenant)?;
            let report = audit::audit(
                &sets,
                components,
                &inputs,
                &waivers,
                crate::now_ms(),
                &ticket.done,
            );
            self.count(&self.counters.audits);
            self.counters
                .error_results
                .fetch_add(report.summary.errors as u64, Ordering::Relaxed);
            let id = store::save_audit(
                &self.state,
                &self.limits,
                tenant,
                ticket.started_ms,
                trigger,
                &report,
            )?;
            Ok((id, report))
        })();
        self.running.lock().remove(tenant);
        result
    }

    /// The tenant's audit schedule (the default, nightly at 02:00 UTC, if never set).
    pub fn schedule(&self, tenant: &str) -> Result<Schedule, ComplianceError> {
        let stored = self
            .state
            .setting(tenant, SCHEDULE_SETTING)
            .map_err(StoreError::from)?;
        Ok(stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    pub fn set_schedule(&self, tenant: &str, schedule: &Schedule) -> Result<(), ComplianceError> {
        schedule.check().map_err(ComplianceError::Invalid)?;
        let text = serde_json::to_string(schedule).unwrap_or_default();
        self.state
            .put_setting(tenant, SCHEDULE_SETTING, &text)
            .map_err(StoreError::from)?;
        self.due.lock().remove(tenant);
        Ok(())
    }

    /// Whether `tenant`'s scheduled audit is due at `now_ms`; if so, the next one is
    /// computed (a run missed while SOTP was down is not caught up: the next is the next).
    pub fn take_due(&self, tenant: &str, now_ms: i64) -> bool {
        let known = self.due.lock().get(tenant).copied();
        let due = match known {
            Some(due) => due,
            None => {
                let next = self
                    .schedule(tenant)
                    .ok()
                    .and_then(|s| s.next_after(now_ms));
                self.due.lock().insert(tenant.to_string(), next);
                return false;
            }
        };
        match due {
            Some(at) if at <= now_ms => {
                let next = self
                    .schedule(tenant)
                    .ok()
                    .and_then(|s| s.next_after(now_ms));
                self.due.lock().insert(tenant.to_string(), next);
                true
            }
            _ => false,
        }
    }

    /// Whether the tenant has anything to audit with (rule files; rule components are the
    /// runtime's to know).
    pub fn has_active_rules(&self, tenant: &str) -> bool {
        store::active(&self.state, tenant).is_ok_and(|a| !a.is_empty())
    }

    /// Forget a deleted tenant's schedule state.
    pub fn forget(&self, tenant: &str) {
        self.due.lock().remove(tenant);
        self.cache.lock().retain(|(t, _, _), _| t != tenant);
    }

    /// The audit running now, if any.
    pub fn progress(&self, tenant: &str) -> Option<Progress> {
        self.running.lock().get(tenant).map(|r| Progress {
            started_ms: r.started_ms,
            devices: r.devices.load(Ordering::Relaxed),
            done: r.done.load(Ordering::Relaxed),
        })
    }

    pub fn audits(&self, tenant: &str) -> Result<Vec<AuditInfo>, ComplianceError> {
        Ok(store::audits(&self.state, tenant)?)
    }

    pub fn report(&self, tenant: &str, id: Option<i64>) -> Result<(i64, Report), ComplianceError> {
        Ok(store::audit_report(&self.state, tenant, id)?)
    }

    /// Audit today's backups with `draft` in place of `file`'s active version (or added, for
    /// a new file) and compare with the active rules. Nothing is stored.
    pub fn dry_run(
        &self,
        tenant: &str,
        file: &str,
        draft: Draft,
        components: &[Arc<dyn RuleComponent>],
    ) -> Result<DryRun, ComplianceError> {
        validate_file_name(file).map_err(ComplianceError::Invalid)?;
        let draft_set = match draft {
            Draft::Text(text) => {
                self.check_size(&text)?;
                Arc::new(rules::compile(file, 0, &text)?)
            }
            Draft::Version(v) => self.rule_set(tenant, file, v)?,
        };
        let inputs = self.inputs(tenant)?;
        let active = self.active_sets(tenant)?;
        let with_draft: Vec<Arc<RuleSet>> = active
            .iter()
            .filter(|s| s.file != file)
            .cloned()
            .chain(std::iter::once(draft_set))
            .collect();
        self.compare(
            tenant,
            inputs,
            (&active, components),
            (&with_draft, components),
        )
    }

    /// Audit today's backups with the rule components `draft` (the active ones with one
    /// swapped for a stored, not activated version) and compare with `active`. The rule
    /// files are the active ones on both sides. Nothing is stored.
    pub fn dry_run_components(
        &self,
        tenant: &str,
        active: &[Arc<dyn RuleComponent>],
        draft: &[Arc<dyn RuleComponent>],
    ) -> Result<DryRun, ComplianceError> {
        let inputs = self.inputs(tenant)?;
        let sets = self.active_sets(tenant)?;
        self.compare(tenant, inputs, (&sets, active), (&sets, draft))
    }

    /// Two audits of the same backups, one with each side's rules, and their difference.
    fn compare(
        &self,
        tenant: &str,
        inputs: Vec<DeviceInput>,
        before: (&[Arc<RuleSet>], &[Arc<dyn RuleComponent>]),
        after: (&[Arc<RuleSet>], &[Arc<dyn RuleComponent>]),
    ) -> Result<DryRun, ComplianceError> {
        let waivers = store::waivers(&self.state, tenant)?;
        let now = crate::now_ms();
        let done = AtomicUsize::new(0);
        let old = audit::audit(before.0, before.1, &inputs, &waivers, now, &done);
        let new = audit::audit(after.0, after.1, &inputs, &waivers, now, &done);
        Ok(audit::diff(&old, &new))
    }
}
