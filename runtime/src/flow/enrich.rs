//! Enrichment: which tenant a flow belongs to (from its exporter) and which application it
//! carries (from protocol and port). Both are table lookups built once from the config, so
//! they cost a few nanoseconds per record.

use super::config::FlowConfig;
use ipnet::IpNet;
use sotp_flow::record::FlowRecord;
use std::net::IpAddr;
use std::sync::Arc;

/// Applications by (protocol, port), as IANA assigns them; `[flows.applications]` extends or
/// overrides this table.
const DEFAULT_APPLICATIONS: &[(&str, u16, &str)] = &[
    ("tcp", 20, "ftp-data"),
    ("tcp", 21, "ftp"),
    ("tcp", 22, "ssh"),
    ("tcp", 23, "telnet"),
    ("tcp", 25, "smtp"),
    ("tcp", 53, "dns"),
    ("udp", 53, "dns"),
    ("udp", 67, "dhcp"),
    ("udp", 68, "dhcp"),
    ("udp", 69, "tftp"),
    ("tcp", 80, "http"),
    ("tcp", 88, "kerberos"),
    ("udp", 88, "kerberos"),
    ("tcp", 110, "pop3"),
    ("udp", 123, "ntp"),
    ("tcp", 143, "imap"),
    ("udp", 161, "snmp"),
    ("udp", 162, "snmp-trap"),
    ("tcp", 179, "bgp"),
    ("tcp", 389, "ldap"),
    ("tcp", 443, "https"),
    ("udp", 443, "quic"),
    ("tcp", 445, "smb"),
    ("udp", 500, "ipsec"),
    ("udp", 514, "syslog"),
    ("tcp", 587, "smtp"),
    ("tcp", 636, "ldaps"),
    ("tcp", 853, "dns-over-tls"),
    ("tcp", 993, "imaps"),
    ("tcp", 995, "pop3s"),
    ("udp", 1194, "openvpn"),
    ("tcp", 1433, "mssql"),
    ("tcp", 1883, "mqtt"),
    ("udp", 2055, "netflow"),
    ("tcp", 2375, "docker"),
    ("tcp", 3306, "mysql"),
    ("tcp", 3389, "rdp"),
    ("udp", 3478, "stun"),
    ("udp", 4500, "ipsec"),
    ("udp", 4739, "ipfix"),
    ("udp", 4789, "vxlan"),
    ("tcp", 5060, "sip"),
    ("udp", 5060, "sip"),
    ("tcp", 5201, "iperf3"),
    ("udp", 5201, "iperf3"),
    ("tcp", 5432, "postgresql"),
    ("tcp", 5672, "amqp"),
    ("udp", 6343, "sflow"),
    ("tcp", 6379, "redis"),
    ("tcp", 6443, "kubernetes-api"),
    ("tcp", 8080, "http-alt"),
    ("tcp", 8443, "https-alt"),
    ("tcp", 8883, "mqtts"),
    ("tcp", 9092, "kafka"),
    ("tcp", 9200, "elasticsearch"),
    ("tcp", 11211, "memcached"),
    ("tcp", 27017, "mongodb"),
];

const DEFAULT_PROTOCOLS: &[(u8, &str)] = &[
    (1, "icmp"),
    (2, "igmp"),
    (47, "gre"),
    (50, "esp"),
    (51, "ah"),
    (58, "icmpv6"),
    (89, "ospf"),
    (103, "pim"),
    (112, "vrrp"),
    (132, "sctp"),
];

/// Interned application names; records carry an index.
#[derive(Debug)]
pub struct Applications {
    names: Vec<Arc<str>>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
    protocols: [u16; 256],
}

/// Index of "other" (no match) in every table.
pub const OTHER: u16 = 0;

impl Applications {
    pub fn new(extra: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut apps = Applications {
            names: vec![Arc::from("other")],
            tcp: vec![OTHER; 65536],
            udp: vec![OTHER; 65536],
            protocols: [OTHER; 256],
        };
        for (proto, port, name) in DEFAULT_APPLICATIONS {
            apps.set(proto, *port as u32, name)?;
        }
        for (proto, name) in DEFAULT_PROTOCOLS {
            apps.set("proto", *proto as u32, name)?;
        }
        for (key, name) in extra {
            let (proto, number) = key.split_once('/').ok_or_else(|| {
                format!("flows.applications.\"{key}\": expected tcp/PORT, udp/PORT or proto/NUMBER")
            })?;
            let number: u32 = number
                .parse()
                .map_err(|_| format!("flows.applications.\"{key}\": {number:?} is not a number"))?;
            apps.set(proto, number, name)
                .map_err(|e| format!("flows.applications.\"{key}\": {e}"))?;
        }
        Ok(apps)
    }

    fn intern(&mut self, name: &str) -> u16 {
        match self.names.iter().position(|n| &**n == name) {
            Some(i) => i as u16,
            None => {
                self.names.push(Arc::from(name));
                (self.names.len() - 1) as u16
            }
        }
    }

    fn set(&mut self, proto: &str, number: u32, name: &str) -> Result<(), String> {
        let id = self.intern(name);
        let slot = match proto {
            "tcp" if number <= 65535 => &mut self.tcp[number as usize],
            "udp" if number <= 65535 => &mut self.udp[number as usize],
            "proto" if number <= 255 => &mut self.protocols[number as usize],
            "tcp" | "udp" | "proto" => return Err(format!("{number} is out of range")),
            other => return Err(format!("unknown protocol {other:?} (tcp, udp or proto)")),
        };
        *slot = id;
        Ok(())
    }

    /// The application of a flow: the destination port's, else the source port's (replies
    /// come from the well-known port), else the IP protocol's, else "other".
    #[inline]
    pub fn classify(&self, f: &FlowRecord) -> u16 {
        let table = match f.ip_protocol {
            6 => &self.tcp,
            17 => &self.udp,
            p => return self.protocols[p as usize],
        };
        let by_dst = table[f.dst_port as usize];
        if by_dst != OTHER {
            return by_dst;
        }
        table[f.src_port as usize]
    }

    /// Every application name; a name's index is the id `classify` returns.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    pub fn name(&self, id: u16) -> &Arc<str> {
        self.names.get(id as usize).unwrap_or(&self.names[0])
    }
}

/// Exporter → tenant, most specific prefix first.
#[derive(Debug)]
pub struct TenantMap {
    prefixes: Vec<(IpNet, Arc<str>)>,
    default: Option<Arc<str>>,
}

impl TenantMap {
    pub fn new(config: &FlowConfig) -> Result<Self, String> {
        let mut prefixes = Vec::new();
        for (key, tenant) in &config.exporters {
            let net = key
                .parse::<IpNet>()
                .or_else(|_| key.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("flows.exporters.\"{key}\": not an address or CIDR"))?;
            prefixes.push((net, Arc::from(tenant.as_str())));
        }
        prefixes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(TenantMap {
            prefixes,
            default: config.default_tenant.as_deref().map(Arc::from),
        })
    }

    /// Every tenant a flow can be mapped to.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<str>> {
        self.prefixes
            .iter()
            .map(|(_, t)| t)
            .chain(self.default.iter())
    }

    pub fn tenant(&self, exporter: IpAddr) -> Option<&Arc<str>> {
        let exporter = match exporter {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(exporter),
            v4 => v4,
        };
        self.prefixes
            .iter()
            .find(|(net, _)| net.contains(&exporter))
            .map(|(_, t)| t)
            .or(self.default.as_ref())
    }
}

/// Which sources may name which sFlow agents (`flows.sflow_agents`).
#[derive(Debug, Default)]
pub struct AgentBindings {
    bindings: Vec<(IpNet, IpNet)>,
}

impl AgentBindings {
    pub fn new(config: &FlowConfig) -> Result<Self, String> {
        let net = |key: &str, text: &str| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("flows.sflow_agents.\"{key}\": `{text}` is not an address or CIDR")
                })
        };
        let mut bindings = Vec::new();
        for (agents, sources) in &config.sflow_agents {
            bindings.push((net(agents, agents)?, net(agents, sources)?));
        }
        Ok(AgentBindings { bindings })
    }

    /// Whether a datagram from `source` may speak for `agent`.
    pub fn allows(&self, agent: IpAddr, source: IpAddr) -> bool {
        agent == source
            || self
                .bindings
                .iter()
                .any(|(a, s)| a.contains(&agent) && s.contains(&source))
    }

    /// Whether `source` relays for some agent.
    pub fn is_relay(&self, source: IpAddr) -> bool {
        self.bindings.iter().any(|(_, s)| s.contains(&source))
    }
}

/// Interface names, applied at query time: rows grouped by `in_if`/`out_if` get `in_if_name`
/// / `out_if_name` from the exporter's interface table (ifIndex → name), which the SNMP
/// collector fills per inventory device (`/v1/devices/{name}/interfaces`). Done when asked
/// rather than at ingest so a table filled (or an interface renamed) after the flows arrived
/// still names them. The exporter of a row is its `exporter` group, else the query's exporter
/// filter; without either, ifIndex values of different exporters cannot be told apart and
/// rows stay unnamed. `table` looks up one exporter's names (called once per exporter).
pub fn name_interfaces<'a>(
    groups: impl Iterator<Item = &'a mut serde_json::Map<String, serde_json::Value>>,
    filter_exporter: Option<&str>,
    mut table: impl FnMut(&str) -> Option<std::collections::HashMap<u32, String>>,
) {
    let mut tables: std::collections::HashMap<String, Option<_>> = Default::default();
    for group in groups {
        let exporter = match group.get("exporter").and_then(|e| e.as_str()) {
            Some(e) => e.to_string(),
            None => match filter_exporter {
                Some(e) => e.to_string(),
                None => return,
            },
        };
        let names = tables
            .entry(exporter.clone())
            .or_insert_with(|| table(&exporter));
        let Some(names) = names else { continue };
        for key in ["in_if", "out_if"] {
            let index = group.get(key).and_then(|v| v.as_u64());
            if let Some(name) = index.and_then(|i| names.get(&(i as u32))) {
                group.insert(format!("{key}_name"), name.clone().into());
            }
        }
    }
}

#[cfg(test)]
mod interface_name_tests {
    use super::name_interfaces;
    use serde_json::{Map, Value, json};
    use std::collections::HashMap;

    fn group(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rows_get_names_from_their_exporters_table() {
        let mut rows = [
            group(json!({"exporter": "10.0.0.1", "in_if": 2, "out_if": 3})),
            group(json!({"exporter": "10.0.0.2", "in_if": 2})),
            group(json!({"exporter": "10.0.0.9", "in_if": 2})),
        ];
        let mut lookups = 0;
        name_interfaces(rows.iter_mut(), None, |exporter| {
            lookups += 1;
            match exporter {
                "10.0.0.1" => Some(HashMap::from([
                    (2, "ge-0/0/2".into()),
                    (3, "ge-0/0/3".into()),
                ])),
                "10.0.0.2" => Some(HashMap::from([(2, "eth2".into())])),
                _ => None,
            }
        });
        assert_eq!(rows[0]["in_if_name"], "ge-0/0/2");
        assert_eq!(rows[0]["out_if_name"], "ge-0/0/3");
        assert_eq!(rows[1]["in_if_name"], "eth2");
        assert!(
            !rows[2].contains_key("in_if_name"),
            "unknown exporter: no name"
        );
        assert_eq!(lookups, 3);

        // Without an exporter group, the filter's exporter names the rows; without either,
        // nothing is named.
        let mut rows = [group(json!({"in_if": 3}))];
        name_interfaces(rows.iter_mut(), Some("10.0.0.1"), |_| {
            Some(HashMap::from([(3, "ge-0/0/3".into())]))
        });
        assert_eq!(rows[0]["in_if_name"], "ge-0/0/3");
        let mut rows = [group(json!({"in_if": 3}))];
        name_interfaces(rows.iter_mut(), None, |_| panic!("no exporter to look up"));
        assert!(!rows[0].contains_key("in_if_name"));
    }
}
