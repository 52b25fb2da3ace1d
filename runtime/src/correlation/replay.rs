//! Replay (no anchor has it): run the tenant's recorded intakes of a window through a draft
//! policy version and through the active one, each in a scratch state database of its own,
//! and show how their decisions differ — before the draft is activated.
//!
//! Each run starts empty and takes the intakes at the times they were received, releasing
//! holds as their time comes between them (and after the last, for as long as holds remain),
//! so hold-downs and the order of arrival play out as they did. Nothing of the tenant's real
//! alerts or incidents is touched; the scratch databases are deleted afterwards.

use super::engine::Policy;
use super::store::{self, Recorded, StoreError};
use super::{AlertSettings, Correlation, CorrelationConfig, CorrelationError, Incident};
use crate::crypto::SecretBox;
use crate::inventory::Device;
use crate::state::{StateStore, Tenant};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most intakes one replay runs.
pub const MAX_INTAKES: usize = 10_000;
/// How long after the last intake held alerts are still released.
const DRAIN_MS: i64 = 3_600_000;

/// An alert's final decision, the root of its incident, and its device.
type Final = (Option<String>, Option<String>, Option<String>);

/// What one side of a replay ended with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Side {
    pub policy: String,
    pub incidents: Vec<ReplayIncident>,
    /// Alerts by fingerprint: their final decision, incident root and device.
    #[serde(skip)]
    pub decisions: BTreeMap<String, Final>,
    pub suppressed: usize,
    pub passed: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayIncident {
    pub root: String,
    pub title: String,
    pub status: String,
    pub children: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlertChange {
    pub fingerprint: String,
    pub device: Option<String>,
    pub active: Decided,
    pub draft: Decided,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decided {
    pub decision: Option<String>,
    /// The root of the incident it was folded into or opened.
    pub root: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub from_ms: i64,
    pub to_ms: i64,
    pub intakes: usize,
    pub active: Side,
    pub draft: Side,
    /// Alerts whose final decision or incident differs.
    pub alerts_changed: Vec<AlertChange>,
}

/// Replay `intakes` for `tenant` with `active` and with `draft`.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    tenant: &str,
    intakes: &[Recorded],
    devices: &[Device],
    settings: &AlertSettings,
    limits: &CorrelationConfig,
    active: Option<&dyn Policy>,
    draft: &dyn Policy,
    window: (i64, i64),
) -> Result<Replay, CorrelationError> {
    let a = run(tenant, intakes, devices, settings, limits, active)?;
    let d = run(tenant, intakes, devices, settings, limits, Some(draft))?;
    let mut fingerprints: Vec<&String> = a.decisions.keys().chain(d.decisions.keys()).collect();
    fingerprints.sort();
    fingerprints.dedup();
    let decided = |side: &Side, fp: &str| {
        let (decision, root, _) = side.decisions.get(fp).cloned().unwrap_or_default();
        Decided { decision, root }
    };
    let alerts_changed = fingerprints
        .into_iter()
        .filter_map(|fp| {
            let (x, y) = (decided(&a, fp), decided(&d, fp));
            let device = a
                .decisions
                .get(fp)
                .or(d.decisions.get(fp))
                .and_then(|t| t.2.clone());
            (x != y).then(|| AlertChange {
                fingerprint: fp.clone(),
                device,
                active: x,
                draft: y,
            })
        })
        .collect();
    Ok(Replay {
        from_ms: window.0,
        to_ms: window.1,
        intakes: intakes.len(),
        active: a,
        draft: d,
        alerts_changed,
    })
}

/// One side: the intakes through `policy` in a scratch state database.
fn run(
    tenant: &str,
    intakes: &[Recorded],
    devices: &[Device],
    settings: &AlertSettings,
    limits: &CorrelationConfig,
    policy: Option<&dyn Policy>,
) -> Result<Side, CorrelationError> {
    let dir = tempfile::Builder::new()
        .prefix("sotp-replay-")
        .tempdir()
        .map_err(|e| CorrelationError::Invalid(format!("replay scratch space: {e}")))?;
    let state = StateStore::open(&dir.path().join("replay.db"), SecretBox::from_key([0; 32]))
        .map_err(StoreError::from)?;
    state
        .create_tenant(&Tenant {
            id: tenant.to_string(),
            name: tenant.to_string(),
            created_ms: 0,
            max_components: 0,
            max_memory_bytes: 0,
            max_series: None,
            max_instances: None,
            max_concurrent_calls: None,
        })
        .map_err(StoreError::from)?;
    let mut replay_limits = limits.clone();
    // Every recorded body counts once, whatever the dedupe window.
    replay_limits.dedupe_window = crate::units::HumanDuration(std::time::Duration::ZERO);
    let state = Arc::new(state);
    let c = Correlation::new(state.clone(), replay_limits);
    c.set_settings(tenant, settings)?;
    for intake in intakes {
        release_until(&c, tenant, devices, policy, intake.received_ms)?;
        let webhook = intake.source == "alertmanager";
        c.ingest_at(
            tenant,
            intake.body.as_bytes(),
            webhook,
            devices,
            policy,
            intake.received_ms,
        )?;
    }
    let last = intakes.last().map_or(0, |i| i.received_ms);
    release_until(&c, tenant, devices, policy, last + DRAIN_MS)?;
    side(&c, &state, tenant, policy)
}

/// Release holds due up to `until`, each at its own time, in order.
fn release_until(
    c: &Correlation,
    tenant: &str,
    devices: &[Device],
    policy: Option<&dyn Policy>,
    until: i64,
) -> Result<(), CorrelationError> {
    for _ in 0..1000 {
        let Some(at) = store::next_hold(&c.state, tenant)? else {
            return Ok(());
        };
        if at > until {
            return Ok(());
        }
        let fps = store::due_holds(&c.state, at)?
            .into_iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, fp)| fp)
            .collect();
        c.correlate(tenant, devices, policy, fps, at)?;
    }
    Ok(())
}

fn side(
    c: &Correlation,
    state: &StateStore,
    tenant: &str,
    policy: Option<&dyn Policy>,
) -> Result<Side, CorrelationError> {
    let incidents: Vec<Incident> = c.incidents(tenant, None, 100_000)?;
    let roots: BTreeMap<i64, String> = incidents.iter().map(|i| (i.id, i.root.clone())).collect();
    let alerts = store::alerts(state, tenant, None, None, usize::MAX >> 1)?;
    let mut out = Side {
        policy: policy.map_or_else(|| "none".to_string(), |p| p.source()),
        ..Side::default()
    };
    for a in alerts {
        match a.decision.as_deref() {
            Some("suppressed") => out.suppressed += 1,
            Some("passed") | None => out.passed += 1,
            _ => {}
        }
        let root = a.incident.and_then(|id| roots.get(&id).cloned());
        out.decisions
            .insert(a.fingerprint, (a.decision, root, a.device));
    }
    out.incidents = incidents
        .into_iter()
        .rev()
        .map(|i| ReplayIncident {
            root: i.root,
            title: i.title,
            status: i.status,
            children: i.children,
        })
        .collect();
    Ok(out)
}
