//! `[flows]` in the runtime config: listeners, tenant mapping, applications, retention.
//! Listeners are off until an address is configured, so two `sotp` processes (or tests) on
//! one host never share a flow port by accident.

use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// NetFlow v5/v9 listen addresses, e.g. `["0.0.0.0:2055"]`. Any listener accepts every
    /// protocol (the version field decides); the split is for operators' firewalls.
    pub netflow: Vec<String>,
    /// IPFIX listen addresses, e.g. `["0.0.0.0:4739"]`.
    pub ipfix: Vec<String>,
    /// sFlow listen addresses, e.g. `["0.0.0.0:6343"]`.
    pub sflow: Vec<String>,
    /// Sockets per address, bound with SO_REUSEPORT; the kernel spreads exporters over them.
    pub sockets_per_address: usize,
    /// SO_RCVBUF asked for each socket (the kernel caps it at net.core.rmem_max).
    pub receive_buffer: ByteSize,
    /// Exporter address or CIDR → tenant. The most specific match wins.
    pub exporters: BTreeMap<String, String>,
    /// Tenant of flows from exporters not in `exporters`; unset = such flows are dropped and
    /// counted (`sotp_flow_unmapped_total`).
    pub default_tenant: Option<String>,
    /// Extra or overriding applications: `"tcp/8443" = "https-alt"`, `"udp/4789" = "vxlan"`,
    /// `"proto/47" = "gre"`.
    pub applications: BTreeMap<String, String>,
    /// Keep every decoded record (raw flows); rollups are kept either way.
    pub store_raw: bool,
    /// Memory the flow store's DuckDB may use for caching and queries (at least 64 MiB). It
    /// caches the rollup table's blocks as it writes them and keeps them until it nears this
    /// limit: at 30,000 groups a minute the process settles ~75 MiB above it after a few
    /// hours (`--rollup-memory` in the flows bench).
    pub store_memory_limit: ByteSize,
    /// How long raw flows are kept.
    pub raw_retention: HumanDuration,
    /// How long per-minute rollups are kept.
    pub rollup_retention: HumanDuration,
    /// Flush to the store at least this often.
    pub flush_interval: HumanDuration,
    /// Data sets held while waiting for their template: at most this many bytes ...
    pub pending_bytes: ByteSize,
    /// ... for at most this long.
    pub pending_age: HumanDuration,
    /// Distinct series of flow aggregates on `/metrics`; beyond it groups are dropped and
    /// counted (`sotp_flow_metrics_series_dropped_total`).
    pub metrics_series_limit: usize,
    /// Exports, by name: `[runtime.flows.sinks.NAME]` with `type = "questdb"` or `"loki"`.
    /// They replay from the raw flows, so they need `store_raw = true`.
    pub sinks: BTreeMap<String, super::sink::SinkConfig>,
    /// This node's part in a scaled-out flow path (`[runtime.flows.bus]`, docs/SCALE.md);
    /// unset: this process receives, decodes and stores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<crate::bus::BusConfig>,
    /// sFlow agents that may be named by datagrams from another address (a relay):
    /// `"<agent address or CIDR>" = "<source address or CIDR>"`. Otherwise an sFlow
    /// datagram's records belong to the address it came from, whatever agent it names —
    /// anyone who can reach the port could name any agent.
    pub sflow_agents: BTreeMap<String, String>,
    /// Exporters (addresses) with NetFlow v9 / IPFIX template state.
    pub max_exporters: usize,
    /// Template spaces (observation domains, source ids) per exporter.
    pub max_domains_per_exporter: usize,
    /// Templates per template space.
    pub max_templates_per_domain: usize,
    /// Fields of all templates together (what the template state's memory grows with).
    pub max_template_fields: usize,
    /// Template spaces nothing arrived for this long are forgotten (their slots come free).
    pub template_idle: HumanDuration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            netflow: Vec::new(),
            ipfix: Vec::new(),
            sflow: Vec::new(),
            sockets_per_address: 2,
            receive_buffer: ByteSize::mib(8),
            exporters: BTreeMap::new(),
            default_tenant: None,
            applications: BTreeMap::new(),
            store_raw: true,
            store_memory_limit: ByteSize::mib(128),
            raw_retention: HumanDuration(Duration::from_secs(7 * 86400)),
            rollup_retention: HumanDuration(Duration::from_secs(90 * 86400)),
            flush_interval: HumanDuration(Duration::from_millis(500)),
            pending_bytes: ByteSize::mib(4),
            pending_age: HumanDuration(Duration::from_secs(30)),
            metrics_series_limit: 1000,
            sinks: BTreeMap::new(),
            bus: None,
            sflow_agents: BTreeMap::new(),
            max_exporters: 10_000,
            max_domains_per_exporter: 64,
            max_templates_per_domain: 512,
            max_template_fields: 2_000_000,
            template_idle: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl FlowConfig {
    pub fn listen_addresses(&self) -> impl Iterator<Item = &String> {
        self.netflow.iter().chain(&self.ipfix).chain(&self.sflow)
    }

    pub fn enabled(&self) -> bool {
        self.listen_addresses().next().is_some() || self.is_bus(crate::bus::BusRole::Store)
    }

    /// Whether this node has `role` on the flow bus.
    pub fn is_bus(&self, role: crate::bus::BusRole) -> bool {
        self.bus.as_ref().is_some_and(|b| b.role == role)
    }

    pub fn template_limits(&self) -> sotp_flow::template::StateLimits {
        sotp_flow::template::StateLimits {
            exporters: self.max_exporters,
            domains_per_exporter: self.max_domains_per_exporter,
            templates_per_domain: self.max_templates_per_domain,
            fields: self.max_template_fields,
            ..Default::default()
        }
    }
}
