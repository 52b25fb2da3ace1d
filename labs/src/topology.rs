//! Topology files (YAML, Containerlab-like) and the address plan derived from a lab id.
//!
//! Every name and address of a lab comes from its id, so two labs of the same topology run
//! side by side: lab `n` owns `10.(76+n).0.0/16`, its namespaces are `sl<n>-<node>`.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// FRR (zebra, ospfd) + snmpd + sshd with vtysh as the login shell.
    Router,
    /// A plain host.
    Host,
    /// Mosquitto on its address, port 1883, anonymous.
    MqttBroker,
    /// mosquitto_pub loops publishing sensor readings to `broker`.
    Sensors,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub kind: Kind,
    /// Linked to the management station (the root namespace); exactly one node.
    #[serde(default)]
    pub management: bool,
    /// For routers: `cisco-iosxe` or `frr` (sysDescr / sysObjectID flavour).
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub flow_export: Option<FlowExport>,
    /// For sensors: the broker node.
    #[serde(default)]
    pub broker: Option<String>,
    /// For sensors: one publisher per room (`home/<room>/temperature`, `.../humidity`).
    #[serde(default)]
    pub rooms: Vec<String>,
    /// Run a Prometheus node_exporter on the node's management address, port
    /// [`METRICS_PORT`]: a real scrape target inside the lab (`up` turns 0 when the station
    /// can no longer reach the node).
    #[serde(default)]
    pub metrics: bool,
}

/// The port of a node's node_exporter (`metrics: true`).
pub const METRICS_PORT: u16 = 9100;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowExport {
    pub interface: String,
    pub port: u16,
    #[serde(default = "default_flow_version")]
    pub version: u8,
}

fn default_flow_version() -> u8 {
    9
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: String,
    pub nodes: Vec<Node>,
    /// Point-to-point links between two nodes.
    pub links: Vec<[String; 2]>,
}

/// One end of a link inside a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub peer: String,
    pub peer_address: Ipv4Addr,
}

/// Everything about one node once addresses are assigned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodePlan {
    pub node: Node,
    pub index: u8,
    pub netns: String,
    /// Routers: the loopback /32 that SNMP and SSH listen on. Others: their first address.
    pub management_address: Ipv4Addr,
    pub interfaces: Vec<Interface>,
    /// Next hop toward the management station (hosts, brokers, sensors: their router).
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub lab: String,
    pub id: u8,
    /// 10.(76+id).0.0/16
    pub block: Ipv4Addr,
    /// The management station's address (root namespace end of the management link).
    pub station: Ipv4Addr,
    /// Root-namespace name of the management link.
    pub station_link: String,
    pub nodes: Vec<NodePlan>,
}

impl Topology {
    pub fn load(path: &Path) -> anyhow::Result<Topology> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let topology: Topology =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        topology.validate()?;
        Ok(topology)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.nodes.iter().filter(|n| n.management).count() != 1 {
            bail!("exactly one node must have `management: true`");
        }
        let names: BTreeMap<&str, &Node> =
            self.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        if names.len() != self.nodes.len() {
            bail!("node names must be unique");
        }
        for n in &self.nodes {
            if n.name.is_empty()
                || n.name.len() > 8
                || !n.name.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                bail!(
                    "node `{}`: names are 1-8 letters and digits (they go into interface names)",
                    n.name
                );
            }
            if n.kind == Kind::Sensors {
                let broker = n.broker.as_deref().unwrap_or("");
                if names.get(broker).map(|b| b.kind) != Some(Kind::MqttBroker) {
                    bail!("node `{}`: `broker` must name an mqtt-broker node", n.name);
                }
            }
            if n.management && n.kind != Kind::Router {
                bail!("node `{}`: the management node must be a router", n.name);
            }
        }
        for [a, b] in &self.links {
            for end in [a, b] {
                if !names.contains_key(end.as_str()) {
                    bail!("link {a} -- {b}: no node named `{end}`");
                }
            }
        }
        Ok(())
    }

    /// Assign namespaces, interfaces and addresses for lab `id` (0..=99).
    pub fn plan(&self, id: u8) -> anyhow::Result<Plan> {
        if id > 99 {
            bail!("lab ids are 0..=99");
        }
        let b = 76 + id;
        let mut nodes: Vec<NodePlan> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodePlan {
                node: n.clone(),
                index: i as u8,
                netns: format!("sl{id}-{}", n.name),
                management_address: Ipv4Addr::new(10, b, 255, i as u8 + 1),
                interfaces: Vec::new(),
                gateway: None,
            })
            .collect();
        let names: Vec<String> = nodes.iter().map(|n| n.node.name.clone()).collect();
        let pos = |name: &str| names.iter().position(|n| n == name).expect("validated");
        // eth0 of the management node faces the station: 10.b.0.2/30 (station .1).
        let m = nodes
            .iter()
            .position(|n| n.node.management)
            .expect("validated");
        nodes[m].interfaces.push(Interface {
            name: "eth0".into(),
            address: Ipv4Addr::new(10, b, 0, 2),
            prefix: 30,
            peer: "station".into(),
            peer_address: Ipv4Addr::new(10, b, 0, 1),
        });
        for (i, [a, z]) in self.links.iter().enumerate() {
            let base = (i as u32) * 4;
            let (third, fourth) = (1 + (base / 256) as u8, (base % 256) as u8);
            let (ia, iz) = (pos(a), pos(z));
            let addr_a = Ipv4Addr::new(10, b, third, fourth + 1);
            let addr_z = Ipv4Addr::new(10, b, third, fourth + 2);
            let name_a = format!(
                "eth{}",
                nodes[ia]
                    .interfaces
                    .iter()
                    .filter(|x| x.name != "eth0")
                    .count()
                    + 1
            );
            let name_z = format!(
                "eth{}",
                nodes[iz]
                    .interfaces
                    .iter()
                    .filter(|x| x.name != "eth0")
                    .count()
                    + 1
            );
            nodes[ia].interfaces.push(Interface {
                name: name_a,
                address: addr_a,
                prefix: 30,
                peer: z.clone(),
                peer_address: addr_z,
            });
            nodes[iz].interfaces.push(Interface {
                name: name_z,
                address: addr_z,
                prefix: 30,
                peer: a.clone(),
                peer_address: addr_a,
            });
        }
        for n in nodes.iter_mut() {
            if n.node.kind != Kind::Router {
                // Non-routers are reached on their first link address; their router is the way out.
                let first = n.interfaces.first().cloned();
                if let Some(first) = first {
                    n.management_address = first.address;
                    n.gateway = Some(first.peer_address);
                }
            }
        }
        Ok(Plan {
            lab: format!("{}-{id}", self.name),
            id,
            block: Ipv4Addr::new(10, b, 0, 0),
            station: Ipv4Addr::new(10, b, 0, 1),
            station_link: format!("sl{id}mgmt"),
            nodes,
        })
    }
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.node.name == name)
    }

    /// Every node_exporter of the lab as (node name, `address:9100`), in topology order.
    pub fn metrics_targets(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.node.name.clone(), n.metrics_target()?)))
            .collect()
    }
}

impl NodePlan {
    /// `address:9100` of the node's node_exporter, if it has `metrics: true`.
    pub fn metrics_target(&self) -> Option<String> {
        self.node
            .metrics
            .then(|| format!("{}:{METRICS_PORT}", self.management_address))
    }

    /// The node's interface on its link to `peer` (the first, if there are several).
    pub fn interface_toward(&self, peer: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.peer == peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_topology_plans_distinct_labs() {
        let t = Topology::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topologies/basic.yaml"
        )))
        .unwrap();
        let a = t.plan(1).unwrap();
        let b = t.plan(2).unwrap();
        assert_eq!(
            a.node("core1").unwrap().management_address,
            Ipv4Addr::new(10, 77, 255, 1)
        );
        assert_eq!(
            b.node("core1").unwrap().management_address,
            Ipv4Addr::new(10, 78, 255, 1)
        );
        assert_ne!(
            a.node("access1").unwrap().netns,
            b.node("access1").unwrap().netns
        );
        let core = a.node("core1").unwrap();
        assert_eq!(
            core.interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["eth0", "eth1", "eth2"]
        );
        let sensors = a.node("sensors").unwrap();
        assert_eq!(
            sensors.gateway,
            Some(a.node("access2").unwrap().interfaces[2].address)
        );
    }

    #[test]
    fn the_star_topology_has_a_core_three_access_routers_and_targets_behind_them() {
        let t = Topology::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topologies/star.yaml"
        )))
        .unwrap();
        let p = t.plan(26).unwrap();
        let core = p.node("core1").unwrap();
        assert!(core.node.management);
        for (k, acc) in ["acc1", "acc2", "acc3"].into_iter().enumerate() {
            let iface = core.interface_toward(acc).unwrap();
            assert_eq!(iface.name, format!("eth{}", k + 1));
            let host = format!("host{}", k + 1);
            assert_eq!(
                p.node(&host).unwrap().gateway,
                Some(
                    p.node(acc)
                        .unwrap()
                        .interface_toward(&host)
                        .unwrap()
                        .address
                )
            );
        }
        let targets = p.metrics_targets();
        assert_eq!(targets.len(), 7, "{targets:?}");
        assert_eq!(targets[0], ("core1".into(), "10.102.255.1:9100".into()));
    }

    #[test]
    fn bad_topologies_are_explained() {
        let t: Topology =
            serde_saphyr::from_str("name: x\nnodes: [{name: a, kind: router}]\nlinks: []").unwrap();
        assert!(t.validate().unwrap_err().to_string().contains("management"));
        let t: Topology = serde_saphyr::from_str(
            "name: x\nnodes: [{name: a, kind: router, management: true}]\nlinks: [[a, b]]",
        )
        .unwrap();
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("no node named `b`")
        );
    }
}
