//! Alerts → devices: which inventory device an alert is about, from its labels.
//!
//! Each tenant says which labels name the device, tried in order (default `device`,
//! `instance`, `host`, `hostname`, `nodename`). A value is matched against inventory names
//! and addresses: as it is, without a `:port` (Prometheus' `instance` is `host:port`, IPv6 as
//! `[addr]:port`), and without its domain (`core1.lab.example` → `core1`). An alert that names
//! no inventory device is kept and passes through, counted as unmapped.

use crate::inventory::Device;
use crate::units::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A tenant's alert settings (`GET`/`PUT /v1/alerts/settings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Labels naming the device, tried in order.
    pub device_labels: Vec<String>,
    /// How long a child's alert waits for its parent's before it is passed on unfolded.
    pub hold_down: HumanDuration,
    /// Push each incident to this Alertmanager as one alert (see `outputs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<super::outputs::AlertmanagerOut>,
    /// Post the incidents to this webhook too (see `outputs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<super::outputs::WebhookOut>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            device_labels: ["device", "instance", "host", "hostname", "nodename"]
                .map(String::from)
                .to_vec(),
            hold_down: HumanDuration(Duration::from_secs(30)),
            alertmanager: None,
            webhook: None,
        }
    }
}

impl AlertSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.device_labels.is_empty() || self.device_labels.len() > 16 {
            return Err("device_labels: give 1 to 16 label names".into());
        }
        if self.hold_down.0 > Duration::from_secs(3600) {
            return Err("hold_down: at most 1h".into());
        }
        if let Some(out) = &self.alertmanager {
            out.check()?;
        }
        if let Some(out) = &self.webhook {
            out.check()
                .map_err(|e| e.replace("alertmanager.url", "webhook.url"))?;
        }
        Ok(())
    }
}

/// The inventory by the names alerts use for devices.
#[derive(Default)]
pub struct DeviceIndex {
    names: HashMap<String, String>,
}

impl DeviceIndex {
    pub fn new(devices: &[Device]) -> DeviceIndex {
        let mut names = HashMap::with_capacity(devices.len() * 2);
        // Names win over addresses: insert addresses first, names over them.
        for d in devices {
            names.insert(d.address.trim().to_ascii_lowercase(), d.name.clone());
        }
        for d in devices {
            names.insert(d.name.to_ascii_lowercase(), d.name.clone());
        }
        DeviceIndex { names }
    }

    /// The device `labels` name, if any.
    pub fn device_of(
        &self,
        labels: &BTreeMap<String, String>,
        settings: &AlertSettings,
    ) -> Option<String> {
        settings
            .device_labels
            .iter()
            .filter_map(|l| labels.get(l))
            .find_map(|value| self.lookup(value))
    }

    /// The label (name, value) by which `labels` name a device, if any.
    pub fn label_of<'l>(
        &self,
        labels: &'l BTreeMap<String, String>,
        settings: &AlertSettings,
    ) -> Option<(&'l str, &'l str)> {
        settings.device_labels.iter().find_map(|l| {
            let (name, value) = labels.get_key_value(l)?;
            self.lookup(value).map(|_| (name.as_str(), value.as_str()))
        })
    }

    fn lookup(&self, value: &str) -> Option<String> {
        let value = value.trim().to_ascii_lowercase();
        let host = strip_port(&value);
        let short = host
            .split('.')
            .next()
            .filter(|_| host.parse::<std::net::IpAddr>().is_err());
        [Some(value.as_str()), Some(host), short]
            .into_iter()
            .flatten()
            .find_map(|v| self.names.get(v).cloned())
    }
}

/// `host:port` → `host`; `[v6]:port` and `[v6]` → `v6`; a bare IPv6 address stays whole.
fn strip_port(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, address: &str) -> Device {
        serde_json::from_value(serde_json::json!({ "name": name, "address": address })).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn devices_are_found_by_name_address_port_and_domain() {
        let index = DeviceIndex::new(&[
            device("core1", "10.77.255.1"),
            device("acc1", "2001:db8::1"),
        ]);
        let s = AlertSettings::default();
        let of = |pairs: &[(&str, &str)]| index.device_of(&labels(pairs), &s);
        assert_eq!(
            of(&[("instance", "10.77.255.1:9100")]).as_deref(),
            Some("core1")
        );
        assert_eq!(
            of(&[("instance", "core1.lab.example:9100")]).as_deref(),
            Some("core1")
        );
        assert_eq!(
            of(&[("instance", "[2001:db8::1]:9100")]).as_deref(),
            Some("acc1")
        );
        assert_eq!(of(&[("host", "2001:db8::1")]).as_deref(), Some("acc1"));
        assert_eq!(of(&[("device", "CORE1")]).as_deref(), Some("core1"));
        assert_eq!(
            of(&[("device", "acc1"), ("instance", "core1:9100")]).as_deref(),
            Some("acc1"),
            "labels are tried in the settings' order"
        );
        assert_eq!(of(&[("instance", "10.0.0.9:9100")]), None);
        assert_eq!(of(&[("job", "core1")]), None, "only the configured labels");
    }
}
