//! The default correlation policy. A device whose every path to the root of the topology goes
//! through a device that is down is *unreachable*, not down (Nagios' semantics), transitively:
//! its alert is suppressed into the incident of the device that is down, with the reason.
//! A device needs all its `parents` and at least one member of each redundancy group (Icinga's
//! rule), so a group with one member still up suppresses nothing.
//!
//! - A reachability alert (its `alertname` in `[config] alertnames`) of a device whose parents
//!   are up opens (or extends) an incident rooted at that device, titled "core1 down (N child
//!   devices affected)". If the device has parents, it first waits `hold_down` (default 30 s)
//!   from when it was received: a parent's alert may still be on its way, and the device would
//!   then be a child, not a root. Alerts arrive in any order.
//! - Any other alert passes, as does an alert that names no inventory device: only what the
//!   topology explains is folded.
//! - A resolution of an incident's root, once the root has no reachability alert firing,
//!   closes the incident; the host then offers its children still firing again, and they are
//!   decided afresh (suppressed under another root, or incidents of their own) rather than
//!   released as a flood. Resolutions themselves always pass (the host sees to it).

use sotp_policy::host::topology;
use sotp_policy::{Alert, AlertStatus, CorrelationPolicy, Decision, HoldAlert, OpenIncident};
use sotp_policy::{Retitle, SuppressAlert};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const DEFAULT_ALERTNAMES: [&str; 5] = [
    "InstanceDown",
    "DeviceDown",
    "HostDown",
    "NodeDown",
    "TargetDown",
];
const DEFAULT_HOLD_DOWN_MS: i64 = 30_000;

struct TopologyCorrelation {
    alertnames: BTreeSet<String>,
    hold_down_ms: i64,
}

impl CorrelationPolicy for TopologyCorrelation {
    fn init(config: &sotp_policy::serde_json::Value) -> Result<Self, String> {
        let alertnames = match config.get("alertnames") {
            None => DEFAULT_ALERTNAMES.map(String::from).into_iter().collect(),
            Some(v) => v
                .as_array()
                .and_then(|l| l.iter().map(|n| n.as_str().map(String::from)).collect())
                .ok_or("config `alertnames` is not a list of names")?,
        };
        let hold_down_ms = match config.get("hold_down") {
            None => DEFAULT_HOLD_DOWN_MS,
            Some(v) => duration_ms(v.as_str().unwrap_or_default())
                .ok_or("config `hold_down` is not a duration like `30s`")?,
        };
        Ok(TopologyCorrelation {
            alertnames,
            hold_down_ms,
        })
    }

    fn decide(&mut self, now_ms: i64, batch: &[Alert]) -> Result<Vec<Decision>, String> {
        let mut run = Batch::new(self);
        for alert in batch {
            run.alert(now_ms, alert);
        }
        Ok(run.finish())
    }
}

sotp_policy::policy!(TopologyCorrelation);

/// `30s`, `2m`, `500ms`, `1h`.
fn duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Whether a device can be reached, as far as the alerts say.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Up,
    /// It has a reachability alert of its own and its parents are up.
    Down,
    /// A path it needs is cut by these devices, which are down.
    Unreachable(BTreeSet<String>),
}

/// One batch's work: states computed once, incidents opened and devices suppressed so far.
struct Batch<'p> {
    policy: &'p TopologyCorrelation,
    states: HashMap<String, State>,
    /// Open incidents: root → the devices they suppressed.
    incidents: BTreeMap<String, BTreeSet<String>>,
    /// Roots this batch touched (their titles are set at the end).
    touched: BTreeSet<String>,
    decisions: Vec<Decision>,
}

impl<'p> Batch<'p> {
    fn new(policy: &'p TopologyCorrelation) -> Self {
        let incidents = topology::incidents()
            .into_iter()
            .map(|i| (i.root, i.children.into_iter().collect()))
            .collect();
        Batch {
            policy,
            states: HashMap::new(),
            incidents,
            touched: BTreeSet::new(),
            decisions: Vec::new(),
        }
    }

    fn is_reachability(&self, alert: &Alert) -> bool {
        alert
            .label("alertname")
            .is_some_and(|n| self.policy.alertnames.contains(n))
    }

    fn alert(&mut self, now_ms: i64, alert: &Alert) {
        let Some(device) = alert.device.clone() else {
            return; // names no inventory device: passes
        };
        if !self.is_reachability(alert) {
            return; // not about reachability: passes
        }
        if alert.status == AlertStatus::Resolved {
            self.resolved(&device);
            return;
        }
        match self.state(&device) {
            State::Unreachable(roots) => self.suppress(alert, &device, &roots),
            State::Down => self.down(now_ms, alert, &device),
            State::Up => {} // its alert is no longer firing in the host's view: passes
        }
    }

    fn resolved(&mut self, device: &str) {
        let still_down = topology::firing(device)
            .iter()
            .any(|a| self.is_reachability(a));
        if self.incidents.contains_key(device) && !still_down {
            self.decisions.push(Decision::Close(device.to_string()));
            self.incidents.remove(device);
            self.touched.remove(device);
        }
    }

    fn down(&mut self, now_ms: i64, alert: &Alert, device: &str) {
        let has_parents = topology::node(device)
            .is_some_and(|n| !n.parents.is_empty() || !n.redundancy_groups.is_empty());
        let waited = now_ms - alert.received_ms;
        if has_parents && waited < self.policy.hold_down_ms && !self.incidents.contains_key(device)
        {
            self.decisions.push(Decision::Hold(HoldAlert {
                alert: alert.fingerprint.clone(),
                until_ms: alert.received_ms + self.policy.hold_down_ms,
                reason: "waiting for its parents' alerts (hold-down)".into(),
            }));
            return;
        }
        self.open(
            device,
            &alert.fingerprint,
            "down, and every device it needs is up",
        );
    }

    fn open(&mut self, root: &str, alert: &str, reason: &str) {
        self.decisions.push(Decision::Open(OpenIncident {
            root: root.to_string(),
            title: format!("{root} down"),
            alert: alert.to_string(),
            reason: reason.to_string(),
        }));
        self.incidents.entry(root.to_string()).or_default();
        self.touched.insert(root.to_string());
    }

    fn suppress(&mut self, alert: &Alert, device: &str, roots: &BTreeSet<String>) {
        let root = roots.iter().next().expect("unreachable has a root").clone();
        if !self.incidents.contains_key(&root) {
            // The root's own alert has not opened its incident yet (held, or in this batch
            // after its child): it is the cause, so open it now.
            match topology::firing(&root)
                .into_iter()
                .find(|a| self.is_reachability(a))
            {
                Some(cause) => self.open(
                    &root,
                    &cause.fingerprint,
                    "down: devices behind it are unreachable",
                ),
                None => return,
            }
        }
        let list: Vec<&str> = roots.iter().map(String::as_str).collect();
        self.decisions.push(Decision::Suppress(SuppressAlert {
            alert: alert.fingerprint.clone(),
            root: root.clone(),
            reason: format!(
                "{device} is unreachable: every path to it goes through {}, down",
                list.join(", ")
            ),
        }));
        if let Some(children) = self.incidents.get_mut(&root) {
            children.insert(device.to_string());
        }
        self.touched.insert(root);
    }

    /// A device's state, from the alerts firing and its dependencies (memoized; a cycle in
    /// the topology counts as up).
    fn state(&mut self, device: &str) -> State {
        let mut visiting = BTreeSet::new();
        self.state_of(device, &mut visiting)
    }

    fn state_of(&mut self, device: &str, visiting: &mut BTreeSet<String>) -> State {
        if let Some(s) = self.states.get(device) {
            return s.clone();
        }
        if !visiting.insert(device.to_string()) {
            return State::Up;
        }
        let node = topology::node(device);
        let mut cut = BTreeSet::new();
        if let Some(node) = &node {
            for parent in &node.parents {
                cut.extend(self.blocked_by(parent, visiting));
            }
            for group in &node.redundancy_groups {
                let blocked: Vec<BTreeSet<String>> =
                    group.iter().map(|m| self.blocked_by(m, visiting)).collect();
                if !group.is_empty() && blocked.iter().all(|b| !b.is_empty()) {
                    cut.extend(blocked.into_iter().flatten());
                }
            }
        }
        let state = if !cut.is_empty() {
            State::Unreachable(cut)
        } else if topology::firing(device)
            .iter()
            .any(|a| self.is_reachability(a))
        {
            State::Down
        } else {
            State::Up
        };
        visiting.remove(device);
        self.states.insert(device.to_string(), state.clone());
        state
    }

    /// The down devices that make `dependency` unusable (empty: it is usable).
    fn blocked_by(
        &mut self,
        dependency: &str,
        visiting: &mut BTreeSet<String>,
    ) -> BTreeSet<String> {
        match self.state_of(dependency, visiting) {
            State::Up => BTreeSet::new(),
            State::Down => BTreeSet::from([dependency.to_string()]),
            State::Unreachable(roots) => roots,
        }
    }

    fn finish(mut self) -> Vec<Decision> {
        for root in std::mem::take(&mut self.touched) {
            let n = self.incidents.get(&root).map_or(0, BTreeSet::len);
            let noun = if n == 1 { "device" } else { "devices" };
            self.decisions.push(Decision::Retitle(Retitle {
                title: format!("{root} down ({n} child {noun} affected)"),
                root,
            }));
        }
        self.decisions
    }
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_ms("30s"), Some(30_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("2m"), Some(120_000));
        assert_eq!(duration_ms("soon"), None);
        assert_eq!(duration_ms("5"), None);
    }
}
