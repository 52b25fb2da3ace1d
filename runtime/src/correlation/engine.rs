//! The correlation engine: what changed in an intake (or a hold whose time came) goes to the
//! tenant's active correlation policy as one batch, with a view of the topology and of
//! what is firing; its decisions are applied to the incidents (`incidents.rs`). One batch at a
//! time per tenant, so decisions apply in the order alerts arrived.
//!
//! It fails open: no active policy, a policy's `err`, a trap, a CPU deadline — the batch's
//! alerts pass unfolded, the failure is counted and is the policy's `last_error`; no alert is
//! ever lost to a policy. Closing an incident offers its still-firing children to the policy
//! again (a few rounds at most), so a recovered parent does not release them as a flood.

use super::incidents::{self, Outcome};
use super::store::{self, StoreError, StoredAlert};
use crate::host::{
    TopologyView, WitAlert, WitDecision, WitIncident, WitLabel, WitLinkInfo, WitNode,
};
use crate::instance::LoadedVersion;
use crate::inventory::Device;
use crate::state::StateStore;
use std::collections::HashMap;
use std::sync::Arc;

/// Rounds of re-offering closed incidents' children within one batch.
const MAX_ROUNDS: usize = 4;

/// A tenant's active correlation policy, as the engine calls it.
pub trait Policy: Send + Sync {
    /// `component:<name>@<version>`, what incidents record.
    fn source(&self) -> String;
    fn decide(
        &self,
        now_ms: i64,
        batch: &[WitAlert],
        view: Arc<dyn TopologyView>,
    ) -> Result<Vec<WitDecision>, String>;
}

/// A loaded `correlation-policy` version.
pub struct ActivePolicy {
    pub name: String,
    pub version: Arc<LoadedVersion>,
}

impl Policy for ActivePolicy {
    fn source(&self) -> String {
        format!("component:{}@{}", self.name, self.version.version())
    }

    fn decide(
        &self,
        now_ms: i64,
        batch: &[WitAlert],
        view: Arc<dyn TopologyView>,
    ) -> Result<Vec<WitDecision>, String> {
        self.version.decide(now_ms, batch, view)
    }
}

/// What a policy reads during one batch: the inventory's dependencies (built once per
/// batch from the devices), and what is firing and which incidents are open, read from the
/// store when the policy asks (by index: a batch costs what it reads, not what the tenant
/// holds) and kept for the rest of the batch. Nothing changes under it: the tenant's batches
/// run one at a time and the decisions apply after `decide` returns.
pub struct StoreView {
    state: Arc<StateStore>,
    tenant: String,
    nodes: HashMap<String, WitNode>,
    links: HashMap<String, Vec<WitLinkInfo>>,
    children: HashMap<String, Vec<String>>,
    firing: parking_lot::Mutex<HashMap<String, Vec<WitAlert>>>,
    incidents: parking_lot::Mutex<Option<Vec<WitIncident>>>,
    /// The first read that failed: the batch is then a policy failure (its alerts pass).
    error: parking_lot::Mutex<Option<String>>,
}

impl StoreView {
    pub fn new(state: Arc<StateStore>, tenant: &str, devices: &[Device]) -> Self {
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for d in devices {
            for p in d.all_parents() {
                children
                    .entry(p.to_string())
                    .or_default()
                    .push(d.name.clone());
            }
        }
        let nodes = devices
            .iter()
            .map(|d| {
                let node = WitNode {
                    name: d.name.clone(),
                    parents: d.parents.clone(),
                    redundancy_groups: d.redundancy_groups.clone(),
                };
                (d.name.clone(), node)
            })
            .collect();
        let links = devices
            .iter()
            .filter(|d| !d.links.is_empty())
            .map(|d| {
                let list = d
                    .links
                    .iter()
                    .map(|l| WitLinkInfo {
                        interface: l.interface.clone(),
                        neighbor: l.neighbor.clone(),
                    })
                    .collect();
                (d.name.clone(), list)
            })
            .collect();
        StoreView {
            state,
            tenant: tenant.to_string(),
            nodes,
            links,
            children,
            firing: Default::default(),
            incidents: Default::default(),
            error: Default::default(),
        }
    }

    /// Why a read failed during the batch, if one did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    fn failed<T: Default>(&self, what: &str, e: impl std::fmt::Display) -> T {
        self.error
            .lock()
            .get_or_insert_with(|| format!("reading {what} for the policy: {e}"));
        T::default()
    }
}

impl TopologyView for StoreView {
    fn node(&self, device: &str) -> Option<WitNode> {
        self.nodes.get(device).cloned()
    }
    fn children(&self, device: &str) -> Vec<String> {
        self.children.get(device).cloned().unwrap_or_default()
    }
    fn links(&self, device: &str) -> Vec<WitLinkInfo> {
        self.links.get(device).cloned().unwrap_or_default()
    }
    fn firing(&self, device: &str) -> Vec<WitAlert> {
        if let Some(known) = self.firing.lock().get(device) {
            return known.clone();
        }
        match store::firing_of_device(&self.state, &self.tenant, device) {
            Ok(alerts) => {
                let alerts: Vec<WitAlert> = alerts.iter().map(wit_alert).collect();
                self.firing
                    .lock()
                    .insert(device.to_string(), alerts.clone());
                alerts
            }
            Err(e) => self.failed("firing alerts", e),
        }
    }
    fn incidents(&self) -> Vec<WitIncident> {
        if let Some(known) = self.incidents.lock().as_ref() {
            return known.clone();
        }
        match incidents::open_for_policy(&self.state, &self.tenant) {
            Ok(list) => {
                *self.incidents.lock() = Some(list.clone());
                list
            }
            Err(e) => self.failed("open incidents", e),
        }
    }
}

/// An alert as a policy sees it.
pub fn wit_alert(a: &StoredAlert) -> WitAlert {
    WitAlert {
        fingerprint: a.fingerprint.clone(),
        status: incidents::wit_status(a.status),
        labels: a
            .labels
            .iter()
            .map(|(name, value)| WitLabel {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        device: a.device.clone(),
        starts_at_ms: a.starts_at_ms,
        received_ms: a.last_seen_ms,
    }
}

/// What one correlation did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Correlated {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The policy failed: why (its alerts passed unfolded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    /// Alerts offered to the policy and the time its `decide` calls took.
    #[serde(skip)]
    pub policy_alerts: usize,
    #[serde(skip)]
    pub policy_time: std::time::Duration,
}

impl Correlated {
    /// Whether incidents were opened, closed or grew (what an Alertmanager must be told).
    pub fn changed_incidents(&self) -> bool {
        !self.outcome.opened.is_empty()
            || !self.outcome.closed.is_empty()
            || self.outcome.suppressed > 0
    }
}

/// Decide on `fingerprints` (alerts of `tenant` that changed or whose hold ended) with
/// `policy`, or pass them all if there is none or it fails.
pub fn correlate(
    state: &Arc<StateStore>,
    tenant: &str,
    devices: &[Device],
    policy: Option<&dyn Policy>,
    fingerprints: Vec<String>,
    now_ms: i64,
) -> Result<Correlated, StoreError> {
    let mut total = Correlated::default();
    let mut pending = fingerprints;
    for round in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut batch: Vec<WitAlert> = store::by_fingerprint(state, tenant, &pending)?
            .iter()
            .map(wit_alert)
            .collect();
        if round > 0 {
            // Offered again because their incident closed: a policy's hold-down starts now.
            for a in &mut batch {
                a.received_ms = now_ms;
            }
        }
        let (source, decisions) = match policy {
            None => ("none".to_string(), Vec::new()),
            Some(p) => {
                let started = std::time::Instant::now();
                let view = Arc::new(StoreView::new(state.clone(), tenant, devices));
                let decided = p.decide(now_ms, &batch, view.clone());
                total.policy_time += started.elapsed();
                total.policy_alerts += batch.len();
                match (decided, view.error()) {
                    (Ok(d), None) => (p.source(), d),
                    (Err(e), _) | (Ok(_), Some(e)) => {
                        total.policy_error = Some(e);
                        (p.source(), Vec::new())
                    }
                }
            }
        };
        let out = incidents::apply(state, tenant, &source, &batch, &decisions, now_ms)?;
        pending = out.reoffer.clone();
        merge(&mut total.outcome, out);
    }
    Ok(total)
}

fn merge(total: &mut Outcome, out: Outcome) {
    total.opened.extend(out.opened);
    total.suppressed += out.suppressed;
    total.passed += out.passed;
    total.held += out.held;
    total.closed.extend(out.closed);
    total.overridden += out.overridden;
    total.reoffer = out.reoffer;
}
