//! The device inventory: what each tenant's devices are, how to reach them (with references to
//! secrets, never the secrets themselves), how they are grouped (tags, site, role), and what
//! they depend on (parents; redundancy groups of which one parent suffices).
//!
//! Grants name devices the same ways users do: `core1`, `tag:lab`, `site:ams`, `role:core`,
//! or an address range `10.77.0.0/16`.

use crate::grants::validate_secret_name;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    /// Management address (IP) or DNS name.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub snmp: Option<SnmpCredentials>,
    #[serde(default)]
    pub ssh: Option<SshCredentials>,
    /// Devices this one needs, all of them (reachable only if every parent is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Groups of redundant parents: reachable if at least one of each group is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redundancy_groups: Vec<Vec<String>>,
    /// The device's own variables for golden-config templates (see compliance/rules.rs).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Its interfaces cabled to neighbours: what rule components check descriptions against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

/// One of a device's interfaces and the device (and interface) at its other end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub interface: String,
    pub neighbor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor_interface: Option<String>,
}

/// The most links one device may list.
pub const MAX_LINKS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpCredentials {
    /// "2c" or "3".
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// md5, sha (sha1), sha224, sha256, sha384, sha512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,
    /// des, aes (aes128), aes192, aes256; absent = authNoPriv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshCredentials {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
    /// A secret holding a private key (OpenSSH format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// The longest SNMP timeout a device may set: a tenant's device that never answers holds a
/// thread this long per try.
pub const MAX_SNMP_TIMEOUT_MS: u64 = 10_000;
/// The most SNMP retries a device may set.
pub const MAX_SNMP_RETRIES: u32 = 5;

impl Device {
    pub fn validate(&self) -> Result<(), String> {
        if !is_device_name(&self.name) {
            return Err(format!(
                "name: `{}` is not a device name (letters, digits, `-`, `_`, `.`; at most 63)",
                self.name
            ));
        }
        if self.address.trim().is_empty() {
            return Err("address: required".into());
        }
        if let Some(s) = &self.snmp {
            match s.version.as_str() {
                "2c" => {
                    if s.community_secret.is_none() {
                        return Err("snmp.community_secret: required for version 2c".into());
                    }
                }
                "3" => {
                    if s.user.is_none() {
                        return Err("snmp.user: required for version 3".into());
                    }
                    if s.priv_secret.is_some() && s.auth_secret.is_none() {
                        return Err("snmp.auth_secret: privacy needs authentication".into());
                    }
                }
                v => return Err(format!("snmp.version: `{v}` is not 2c or 3")),
            }
            if let Some(t) = s.timeout_ms
                && !(1..=MAX_SNMP_TIMEOUT_MS).contains(&t)
            {
                return Err(format!(
                    "snmp.timeout_ms: {t} is outside 1..={MAX_SNMP_TIMEOUT_MS}"
                ));
            }
            if let Some(r) = s.retries
                && r > MAX_SNMP_RETRIES
            {
                return Err(format!(
                    "snmp.retries: {r} is over the limit of {MAX_SNMP_RETRIES}"
                ));
            }
            for (key, name) in [
                ("snmp.community_secret", &s.community_secret),
                ("snmp.auth_secret", &s.auth_secret),
                ("snmp.priv_secret", &s.priv_secret),
            ] {
                if let Some(n) = name {
                    validate_secret_name(n).map_err(|e| format!("{key}: {e}"))?;
                }
            }
        }
        if let Some(s) = &self.ssh
            && s.password_secret.is_none()
            && s.key_secret.is_none()
        {
            return Err("ssh: give password_secret or key_secret".into());
        }
        for p in self
            .parents
            .iter()
            .chain(self.redundancy_groups.iter().flatten())
        {
            if p == &self.name {
                return Err(format!("parents: `{p}` cannot depend on itself"));
            }
        }
        self.validate_links()
    }

    fn validate_links(&self) -> Result<(), String> {
        if self.links.len() > MAX_LINKS {
            return Err(format!("links: more than {MAX_LINKS}"));
        }
        let mut seen = BTreeSet::new();
        for (i, link) in self.links.iter().enumerate() {
            let name_ok = |s: &str| !s.trim().is_empty() && s.len() <= 128;
            if !name_ok(&link.interface) {
                return Err(format!("links[{i}].interface: required, at most 128 bytes"));
            }
            if !is_device_name(&link.neighbor) {
                return Err(format!(
                    "links[{i}].neighbor: `{}` is not a device name",
                    link.neighbor
                ));
            }
            if link
                .neighbor_interface
                .as_deref()
                .is_some_and(|n| !name_ok(n))
            {
                return Err(format!("links[{i}].neighbor_interface: at most 128 bytes"));
            }
            if !seen.insert(link.interface.as_str()) {
                return Err(format!(
                    "links[{i}].interface: `{}` is listed twice",
                    link.interface
                ));
            }
        }
        Ok(())
    }

    /// Whether the device's credentials name tenant secrets.
    pub fn uses_secrets(&self) -> bool {
        let snmp = self.snmp.as_ref().is_some_and(|s| {
            s.community_secret.is_some() || s.auth_secret.is_some() || s.priv_secret.is_some()
        });
        let ssh = self
            .ssh
            .as_ref()
            .is_some_and(|s| s.password_secret.is_some() || s.key_secret.is_some());
        snmp || ssh
    }

    /// Whether `other` sends the same credentials to the same place: same address, ports,
    /// users and secret references (tags, site, role and parents may differ).
    pub fn same_reach(&self, other: &Device) -> bool {
        self.address.trim() == other.address.trim()
            && self.snmp == other.snmp
            && self.ssh == other.ssh
    }

    /// All devices this one names as a parent.
    pub fn all_parents(&self) -> BTreeSet<&str> {
        self.parents
            .iter()
            .chain(self.redundancy_groups.iter().flatten())
            .map(String::as_str)
            .collect()
    }

    /// Whether a grant entry (`core1`, `tag:x`, `site:x`, `role:x`, `10.0.0.0/8`) covers it.
    pub fn granted_by(&self, grant: &str) -> bool {
        if let Some(tag) = grant.strip_prefix("tag:") {
            return self.tags.iter().any(|t| t == tag);
        }
        if let Some(site) = grant.strip_prefix("site:") {
            return self.site.as_deref() == Some(site);
        }
        if let Some(role) = grant.strip_prefix("role:") {
            return self.role.as_deref() == Some(role);
        }
        if let Ok(net) = grant.parse::<IpNet>() {
            return self
                .address
                .parse::<IpAddr>()
                .map(|a| net.contains(&a))
                .unwrap_or(false);
        }
        grant == self.name
    }
}

pub fn is_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn validate_device_grant(grant: &str) -> Result<(), String> {
    let ok = ["tag:", "site:", "role:"]
        .iter()
        .any(|p| grant.strip_prefix(p).is_some_and(|r| !r.is_empty()))
        || grant.parse::<IpNet>().is_ok()
        || is_device_name(grant);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{grant}` is not a device grant (a name, tag:x, site:x, role:x or a CIDR range)"
        ))
    }
}

/// Parse a bulk import: a YAML or JSON list of devices, or CSV with a header row.
///
/// CSV columns: name, address, platform, site, role, tags (`;`-separated), parents
/// (`;`-separated), snmp_version, snmp_community_secret, snmp_user, snmp_auth_protocol,
/// snmp_auth_secret, snmp_priv_protocol, snmp_priv_secret, ssh_user, ssh_password_secret,
/// ssh_key_secret. Empty cells are absent values.
pub fn parse_import(text: &str, csv: bool) -> Result<Vec<Device>, String> {
    if !csv {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Doc {
            List(Vec<Device>),
            Wrapped { devices: Vec<Device> },
        }
        return serde_saphyr::from_str::<Doc>(text)
            .map(|d| match d {
                Doc::List(l) | Doc::Wrapped { devices: l } => l,
            })
            .map_err(|e| format!("not a YAML/JSON list of devices: {e}"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", i + 2))?;
        let get = |col: &str| {
            headers
                .iter()
                .position(|h| h == col)
                .and_then(|p| record.get(p))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let list = |col: &str| {
            get(col)
                .map(|v| {
                    v.split(';')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let name = get("name").ok_or_else(|| format!("row {}: `name` is empty", i + 2))?;
        let snmp = get("snmp_version").map(|version| SnmpCredentials {
            version,
            community_secret: get("snmp_community_secret"),
            user: get("snmp_user"),
            auth_protocol: get("snmp_auth_protocol"),
            auth_secret: get("snmp_auth_secret"),
            priv_protocol: get("snmp_priv_protocol"),
            priv_secret: get("snmp_priv_secret"),
            port: None,
            timeout_ms: None,
            retries: None,
        });
        let ssh = get("ssh_user").map(|user| SshCredentials {
            user,
            password_secret: get("ssh_password_secret"),
            key_secret: get("ssh_key_secret"),
            port: None,
        });
        out.push(Device {
            address: get("address").ok_or_else(|| format!("row {}: `address` is empty", i + 2))?,
            platform: get("platform"),
            site: get("site"),
            role: get("role"),
            tags: list("tags"),
            parents: list("parents"),
            redundancy_groups: Vec::new(),
            vars: Default::default(),
            links: Vec::new(),
            snmp,
            ssh,
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device {
            name: "core1".into(),
            address: "10.77.255.1".into(),
            platform: Some("cisco-iosxe".into()),
            site: Some("lab".into()),
            role: Some("core".into()),
            tags: vec!["lab".into()],
            snmp: None,
            ssh: None,
            parents: vec![],
            redundancy_groups: vec![],
            vars: Default::default(),
            links: Vec::new(),
        }
    }

    #[test]
    fn grants_match_by_name_tag_site_role_and_range() {
        let d = dev();
        for g in ["core1", "tag:lab", "site:lab", "role:core", "10.77.0.0/16"] {
            assert!(d.granted_by(g), "{g}");
        }
        for g in [
            "core2",
            "tag:prod",
            "site:ams",
            "role:access",
            "10.78.0.0/16",
        ] {
            assert!(!d.granted_by(g), "{g}");
        }
        assert!(validate_device_grant("tag:").is_err());
        assert!(validate_device_grant("10.0.0.0/8").is_ok());
    }

    #[test]
    fn snmp_timeouts_and_retries_are_capped() {
        let mut d = dev();
        let snmp = |timeout_ms, retries| SnmpCredentials {
            version: "2c".into(),
            community_secret: Some("c".into()),
            user: None,
            auth_protocol: None,
            auth_secret: None,
            priv_protocol: None,
            priv_secret: None,
            port: None,
            timeout_ms,
            retries,
        };
        d.snmp = Some(snmp(Some(3_600_000), None));
        assert!(d.validate().unwrap_err().contains("snmp.timeout_ms"));
        d.snmp = Some(snmp(None, Some(1000)));
        assert!(d.validate().unwrap_err().contains("snmp.retries"));
        d.snmp = Some(snmp(Some(MAX_SNMP_TIMEOUT_MS), Some(MAX_SNMP_RETRIES)));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn csv_and_yaml_imports_parse() {
        let csv = "name,address,tags,parents,snmp_version,snmp_community_secret,ssh_user,ssh_password_secret\n\
                   core1,10.77.255.1,lab;core,,2c,lab-community,admin,lab-ssh\n\
                   access1,10.77.255.2,lab,core1,,,,\n";
        let devices = parse_import(csv, true).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].tags, vec!["lab", "core"]);
        assert_eq!(devices[1].parents, vec!["core1"]);
        assert!(devices[1].snmp.is_none());
        let yaml =
            "devices:\n  - name: a\n    address: 10.0.0.1\n    redundancy_groups: [[b, c]]\n";
        assert_eq!(
            parse_import(yaml, false).unwrap()[0].redundancy_groups,
            vec![vec!["b", "c"]]
        );
        assert!(
            parse_import("name,address\n,10.0.0.1\n", true)
                .unwrap_err()
                .contains("row 2")
        );
    }

    #[test]
    fn credentials_are_validated() {
        let mut d = dev();
        d.snmp = Some(SnmpCredentials {
            version: "2c".into(),
            community_secret: None,
            user: None,
            auth_protocol: None,
            auth_secret: None,
            priv_protocol: None,
            priv_secret: None,
            port: None,
            timeout_ms: None,
            retries: None,
        });
        assert!(d.validate().unwrap_err().contains("community_secret"));
    }

    #[test]
    fn links_name_a_device_and_each_interface_once() {
        let link = |interface: &str, neighbor: &str| Link {
            interface: interface.into(),
            neighbor: neighbor.into(),
            neighbor_interface: None,
        };
        let mut d = dev();
        d.links = vec![link("eth1", "core2"), link("eth2", "edge1")];
        assert!(d.validate().is_ok());
        d.links.push(link("eth1", "edge2"));
        assert!(d.validate().unwrap_err().contains("listed twice"));
        d.links = vec![link("eth1", "no such/name")];
        assert!(d.validate().unwrap_err().contains("links[0].neighbor"));
        d.links = vec![link(" ", "core2")];
        assert!(d.validate().unwrap_err().contains("links[0].interface"));
    }
}
