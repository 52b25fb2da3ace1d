//! The default correlation policy. A device whose every path to the root of the topology goes
//! through a device that is down is *unreachable*, not down (Nagios' semantics), transitively:
//! its alert is suppressed into the incident of the device that is down, with the reason.
//! A device needs all its `parents` and at least one member of each redundancy group (Icinga's
//! rule), so a group with one member still up suppresses nothing.
//!
//! - A parent that is up but whose interface toward a device is down (a link-down alert —
//!   `alertname` in `[config] link_alertnames`, the interface in one of `[config]
//!   interface_labels` — on the interface the inventory's `links` say leads to that device)
//!   cuts that path as much as the parent being down: the parent is the root cause, its
//!   incident titled "core1: eth1, eth2 down (N child devices affected)".
//! - A reachability alert (its `alertname` in `[config] alertnames`) of a device whose parents
//!   are up opens (or extends) an incident rooted at that device, titled "core1 down (N child
//!   devices affected)". If the device has parents, it first waits `hold_down` (default 30 s)
//!   from when it was received: a parent's alert may still be on its way, and the device would
//!   then be a child, not a root. Alerts arrive in any order.
//! - Any other alert passes, as does an alert that names no inventory device: only what the
//!   topology explains is folded.
//! - A resolution of an incident's root, once the root has no reachability or link-down alert
//!   firing, closes the incident; the host then offers its children still firing again, and they are
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
const DEFAULT_LINK_ALERTNAMES: [&str; 2] = ["LinkDown", "InterfaceDown"];
const DEFAULT_INTERFACE_LABELS: [&str; 4] = ["ifName", "interface", "ifDescr", "device"];
const DEFAULT_HOLD_DOWN_MS: i64 = 30_000;

struct TopologyCorrelation {
    alertnames: BTreeSet<String>,
    link_alertnames: BTreeSet<String>,
    interface_labels: Vec<String>,
    hold_down_ms: i64,
}

/// `[config] key`: a list of strings, or the default.
fn names(
    config: &sotp_policy::serde_json::Value,
    key: &str,
    default: &[&str],
) -> Result<Vec<String>, String> {
    match config.get(key) {
        None => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(v) => v
            .as_array()
            .and_then(|l| l.iter().map(|n| n.as_str().map(String::from)).collect())
            .ok_or_else(|| format!("config `{key}` is not a list of names")),
    }
}

impl CorrelationPolicy for TopologyCorrelation {
    fn init(config: &sotp_policy::serde_json::Value) -> Result<Self, String> {
        let alertnames = names(config, "alertnames", &DEFAULT_ALERTNAMES)?
            .into_iter()
            .collect();
        let link_alertnames = names(config, "link_alertnames", &DEFAULT_LINK_ALERTNAMES)?
            .into_iter()
            .collect();
        let interface_labels = names(config, "interface_labels", &DEFAULT_INTERFACE_LABELS)?;
        let hold_down_ms = match config.get("hold_down") {
            None => DEFAULT_HOLD_DOWN_MS,
            Some(v) => duration_ms(v.as_str().unwrap_or_default())
                .ok_or("config `hold_down` is not a duration like `30s`")?,
        };
        Ok(TopologyCorrelation {
            alertnames,
            link_alertnames,
            interface_labels,
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

    /// The interface a link-down alert is about, if it is one.
    fn link_down(&self, alert: &Alert) -> Option<String> {
        let name = alert.label("alertname")?;
        if !self.policy.link_alertnames.contains(name) {
            return None;
        }
        self.policy
            .interface_labels
            .iter()
            .find_map(|l| alert.label(l))
            .map(String::from)
    }

    /// Whether `parent` is up but its interface toward `child` is down.
    fn link_cut(&self, parent: &str, child: &str) -> bool {
        let down: BTreeSet<String> = topology::firing(parent)
            .iter()
            .filter_map(|a| self.link_down(a))
            .collect();
        !down.is_empty()
            && topology::links(parent)
                .iter()
                .any(|l| l.neighbor == child && down.contains(&l.interface))
    }

    /// The alert that shows `root` is the cause: its reachability alert, else a link-down one.
    fn cause(&self, root: &str) -> Option<String> {
        let firing = topology::firing(root);
        firing
            .iter()
            .find(|a| self.is_reachability(a))
            .or_else(|| firing.iter().find(|a| self.link_down(a).is_some()))
            .map(|a| a.fingerprint.clone())
    }

    fn alert(&mut self, now_ms: i64, alert: &Alert) {
        let Some(device) = alert.device.clone() else {
            return; // names no inventory device: passes
        };
        if alert.status == AlertStatus::Firing
            && let Some(interface) = self.link_down(alert)
        {
            self.link_alert(alert, &device, &interface);
            return;
        }
        if alert.status == AlertStatus::Resolved {
            if self.is_reachability(alert) || self.link_down(alert).is_some() {
                self.resolved(&device);
            }
            return;
        }
        if !self.is_reachability(alert) {
            return; // not about reachability: passes
        }
        match self.state(&device) {
            State::Unreachable(roots) => self.suppress(now_ms, alert, &device, &roots),
            State::Down => self.down(now_ms, alert, &device),
            State::Up => {} // its alert is no longer firing in the host's view: passes
        }
    }

    /// A link of `device` went down. If what is behind it is alerting, `device` is the root
    /// cause: its incident opens (or grows) with this alert, and incidents opened for the
    /// devices behind the link are closed, so the host offers their alerts again and they
    /// fold under `device`.
    fn link_alert(&mut self, alert: &Alert, device: &str, interface: &str) {
        let behind: Vec<String> = topology::links(device)
            .into_iter()
            .filter(|l| l.interface == interface)
            .map(|l| l.neighbor)
            .collect();
        let affected = behind
            .iter()
            .any(|n| self.incidents.contains_key(n) || self.state(n) != State::Up);
        if !affected && !self.incidents.contains_key(device) {
            return; // nothing behind it is alerting (yet): passes
        }
        self.open(
            device,
            &alert.fingerprint,
            &format!("its link {interface} is down"),
        );
        for n in behind {
            if self.incidents.remove(&n).is_some() {
                self.touched.remove(&n);
                self.decisions.push(Decision::Close(n));
            }
        }
    }

    fn resolved(&mut self, device: &str) {
        let still_down = topology::firing(device)
            .iter()
            .any(|a| self.is_reachability(a) || self.link_down(a).is_some());
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

    fn suppress(&mut self, now_ms: i64, alert: &Alert, device: &str, roots: &BTreeSet<String>) {
        let root = roots.iter().next().expect("unreachable has a root").clone();
        if !self.incidents.contains_key(&root) {
            // The root's own alert has not opened its incident yet (held, or in this batch
            // after its child): it is the cause, so open it now — unless the root is still
            // in its own hold-down (it may turn out to be a child itself): then wait with it.
            let Some(cause) = self.cause(&root) else {
                return;
            };
            if let Some(until) = self.root_hold(now_ms, &root) {
                self.decisions.push(Decision::Hold(HoldAlert {
                    alert: alert.fingerprint.clone(),
                    until_ms: until,
                    reason: format!("waiting with {root}, which is in its hold-down"),
                }));
                return;
            }
            self.open(&root, &cause, "devices behind it are unreachable");
        }
        let list: Vec<&str> = roots.iter().map(String::as_str).collect();
        self.decisions.push(Decision::Suppress(SuppressAlert {
            alert: alert.fingerprint.clone(),
            root: root.clone(),
            reason: format!(
                "{device} is unreachable: every path to it goes through {} (down, or its link toward it is)",
                list.join(", ")
            ),
        }));
        if let Some(children) = self.incidents.get_mut(&root) {
            children.insert(device.to_string());
        }
        self.touched.insert(root);
    }

    /// When `root`'s hold-down ends, if it is still in it: it has parents, and its
    /// reachability alert is younger than the hold-down.
    fn root_hold(&self, now_ms: i64, root: &str) -> Option<i64> {
        let has_parents = topology::node(root)
            .is_some_and(|n| !n.parents.is_empty() || !n.redundancy_groups.is_empty());
        let alert = topology::firing(root)
            .into_iter()
            .find(|a| self.is_reachability(a))?;
        let until = alert.received_ms + self.policy.hold_down_ms;
        (has_parents && now_ms < until).then_some(until + 1)
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
                cut.extend(self.blocked_by(parent, device, visiting));
            }
            for group in &node.redundancy_groups {
                let blocked: Vec<BTreeSet<String>> = group
                    .iter()
                    .map(|m| self.blocked_by(m, device, visiting))
                    .collect();
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

    /// The devices that make `dependency` unusable for `child` (empty: it is usable): it is
    /// down, cut off itself, or up with its link toward `child` down.
    fn blocked_by(
        &mut self,
        dependency: &str,
        child: &str,
        visiting: &mut BTreeSet<String>,
    ) -> BTreeSet<String> {
        match self.state_of(dependency, visiting) {
            State::Up if self.link_cut(dependency, child) => {
                BTreeSet::from([dependency.to_string()])
            }
            State::Up => BTreeSet::new(),
            State::Down => BTreeSet::from([dependency.to_string()]),
            State::Unreachable(roots) => roots,
        }
    }

    fn finish(mut self) -> Vec<Decision> {
        for root in std::mem::take(&mut self.touched) {
            let n = self.incidents.get(&root).map_or(0, BTreeSet::len);
            let noun = if n == 1 { "device" } else { "devices" };
            let firing = topology::firing(&root);
            let what = if firing.iter().any(|a| self.is_reachability(a)) {
                "down".to_string()
            } else {
                let links: BTreeSet<String> =
                    firing.iter().filter_map(|a| self.link_down(a)).collect();
                let list: Vec<&str> = links.iter().map(String::as_str).collect();
                format!("{} down", list.join(", "))
            };
            let sep = if what == "down" { " " } else { ": " };
            self.decisions.push(Decision::Retitle(Retitle {
                title: format!("{root}{sep}{what} ({n} child {noun} affected)"),
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
