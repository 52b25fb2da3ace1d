//! SOTP's network labs: Linux network namespaces joined by veth pairs, running real daemons
//! from Debian (FRR, net-snmp, OpenSSH, softflowd, Mosquitto, node_exporter) that play
//! routers, hosts, flow exporters, MQTT brokers and scrape targets — Containerlab's idea
//! without containers, which do not run here.
//!
//! Written against the system tools (`ip`, the daemons) rather than netlink crates: a lab is
//! exactly the commands an operator would type, and stays debuggable by hand
//! (`sotp-lab exec basic-1 core1 vtysh`). Facts it relies on: `../shared/notes/labs.md`.

mod configs;
pub mod lab;
mod sys;
pub mod topology;

pub use lab::{Check, Lab};
pub use topology::{Kind, METRICS_PORT, Plan, Topology};

/// The topologies shipped in `labs/topologies/`.
pub fn topology_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(format!("{name}.yaml"))
}
