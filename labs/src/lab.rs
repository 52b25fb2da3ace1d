//! Bringing a lab up, checking it, running commands in its nodes, and tearing it down.
//!
//! Each node is a network namespace. Daemons run inside it through
//! `ip netns exec NS unshare --uts sh -c '<prelude>; exec daemon'`: `ip netns exec` already
//! gives the process a private mount namespace, so the prelude's tmpfs on /run and bind mounts
//! of the node's own /etc/frr, /etc/passwd, /etc/shadow, /etc/group never reach the host, and
//! vanish with the last process. Tearing down is: kill every process of every namespace,
//! delete the namespaces (their veths and the station route go with them), remove the lab dir.

use crate::configs;
use crate::sys::{self, ip, run};
use crate::topology::{Kind, NodePlan, Plan, Topology};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Credentials every lab router has (the lab's own, for tests; not secrets).
pub const COMMUNITY: &str = "public";
pub const V3_USER: &str = "labv3";
pub const V3_AUTH: &str = "authpass123";
pub const V3_PRIV: &str = "privpass123";
pub const SSH_USER: &str = "admin";
pub const SSH_PASSWORD: &str = "labpass";

/// A running lab. Dropping it tears it down.
#[derive(Serialize, Deserialize)]
pub struct Lab {
    pub plan: Plan,
    pub dir: PathBuf,
    #[serde(skip)]
    torn_down: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub node: String,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Lab {
    /// Like [`Lab::up`], after tearing down whatever an earlier, killed run left under this
    /// id — for tests, which own their ids.
    pub fn up_fresh(
        topology: &Topology,
        id: u8,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Lab> {
        let plan = topology.plan(id)?;
        let dir = std::env::temp_dir().join(format!("sotp-lab-{}", plan.lab));
        if sys::netns_exists(&plan.nodes[0].netns) || dir.exists() {
            progress("clearing what an earlier run left behind");
            teardown_plan(&plan, &dir);
        }
        Self::up(topology, id, progress)
    }

    /// Bring `topology` up as lab `id`; `progress` hears each step.
    pub fn up(topology: &Topology, id: u8, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Lab> {
        if !sys::is_root() {
            bail!("labs create network namespaces and need root (run as root or with sudo)");
        }
        preflight(topology)?;
        let plan = topology.plan(id)?;
        if sys::netns_exists(&plan.nodes[0].netns) {
            bail!(
                "lab id {id} is in use ({} exists); take another id or tear it down first",
                plan.nodes[0].netns
            );
        }
        let dir = std::env::temp_dir().join(format!("sotp-lab-{}", plan.lab));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            plan,
            dir,
            torn_down: false,
        };
        // On any failure the half-built lab is torn down by Drop.
        lab.build(progress)?;
        Ok(lab)
    }

    fn build(&mut self, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        progress("namespaces and links");
        self.wire()?;
        let ssh_key = self.dir.join("id_ed25519");
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "sotp-lab",
                "-f",
                &ssh_key.display().to_string(),
            ],
        )?;
        let needs_shim = self.plan.nodes.iter().any(|n| n.node.flow_export.is_some());
        if needs_shim {
            let shim = self.dir.join("pcap_immediate.so");
            run(
                "cc",
                &[
                    "-shared",
                    "-fPIC",
                    "-O2",
                    "-o",
                    &shim.display().to_string(),
                    concat!(env!("CARGO_MANIFEST_DIR"), "/shims/pcap_immediate.c"),
                    "-ldl",
                ],
            )?;
        }
        let nodes = self.plan.nodes.clone();
        for node in &nodes {
            progress(&format!(
                "starting {} ({:?})",
                node.node.name, node.node.kind
            ));
            let node_dir = self.node_dir(&node.node.name);
            configs::write(&self.plan, node, &node_dir, &self.dir)?;
            self.start_daemons(node)?;
        }
        Ok(())
    }

    /// Namespaces, veth pairs, addresses, routes.
    fn wire(&self) -> anyhow::Result<()> {
        let plan = &self.plan;
        for n in &plan.nodes {
            ip(&["netns", "add", &n.netns])?;
            ip(&["-n", &n.netns, "link", "set", "lo", "up"])?;
            if n.node.kind == Kind::Router {
                let lo = format!("{}/32", n.management_address);
                ip(&["-n", &n.netns, "addr", "add", &lo, "dev", "lo"])?;
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &n.netns,
                        "sysctl",
                        "-qw",
                        "net.ipv4.ip_forward=1",
                    ],
                )?;
            }
        }
        // The management link: station (root namespace) <-> management node's eth0.
        let m = plan
            .nodes
            .iter()
            .find(|n| n.node.management)
            .expect("validated");
        let eth0 = &m.interfaces[0];
        let peer_tmp = format!("sl{}m0", plan.id);
        ip(&[
            "link",
            "add",
            &plan.station_link,
            "type",
            "veth",
            "peer",
            "name",
            &peer_tmp,
        ])?;
        ip(&["link", "set", &peer_tmp, "netns", &m.netns])?;
        ip(&["-n", &m.netns, "link", "set", &peer_tmp, "name", "eth0"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", plan.station),
            "dev",
            &plan.station_link,
        ])?;
        ip(&["link", "set", &plan.station_link, "up"])?;
        ip(&[
            "-n",
            &m.netns,
            "addr",
            "add",
            &format!("{}/{}", eth0.address, eth0.prefix),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &m.netns, "link", "set", "eth0", "up"])?;
        ip(&[
            "route",
            "add",
            &format!("{}/16", plan.block),
            "via",
            &eth0.address.to_string(),
        ])?;
        // Point-to-point links, created in the root namespace under unique names, then moved.
        let mut done = std::collections::BTreeSet::new();
        for (li, n) in plan.nodes.iter().enumerate() {
            for iface in n.interfaces.iter().filter(|i| i.name != "eth0") {
                let peer = plan.node(&iface.peer).expect("validated");
                let key = if n.node.name < peer.node.name {
                    (n.node.name.clone(), peer.node.name.clone(), iface.address)
                } else {
                    (
                        peer.node.name.clone(),
                        n.node.name.clone(),
                        iface.peer_address,
                    )
                };
                if !done.insert(key) {
                    continue;
                }
                let peer_iface = peer
                    .interfaces
                    .iter()
                    .find(|p| p.peer == n.node.name && p.address == iface.peer_address)
                    .expect("both ends planned");
                let (a, z) = (
                    format!("sl{}l{li}{}a", plan.id, iface.name),
                    format!("sl{}l{li}{}z", plan.id, iface.name),
                );
                ip(&["link", "add", &a, "type", "veth", "peer", "name", &z])?;
                for (tmp, ns, end) in [(&a, &n.netns, iface), (&z, &peer.netns, peer_iface)] {
                    ip(&["link", "set", tmp, "netns", ns])?;
                    ip(&["-n", ns, "link", "set", tmp, "name", &end.name])?;
                    ip(&[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("{}/{}", end.address, end.prefix),
                        "dev",
                        &end.name,
                    ])?;
                    ip(&["-n", ns, "link", "set", &end.name, "up"])?;
                }
            }
        }
        for n in &plan.nodes {
            if let Some(gw) = n.gateway {
                ip(&[
                    "-n",
                    &n.netns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ])?;
            }
        }
        Ok(())
    }

    fn start_daemons(&self, node: &NodePlan) -> anyhow::Result<()> {
        let d = self.node_dir(&node.node.name);
        let ds = d.display();
        match node.node.kind {
            Kind::Router => {
                self.exec_checked(
                    node,
                    "/usr/lib/frr/zebra -d -A 127.0.0.1 -i /run/frr/zebra.pid",
                )?;
                self.exec_checked(
                    node,
                    "/usr/lib/frr/ospfd -d -A 127.0.0.1 -i /run/frr/ospfd.pid",
                )?;
                self.exec_checked(node, "for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/frr/ospfd.vty ] && break; sleep 0.2; done; vtysh -b >/dev/null")?;
                self.exec_checked(
                    node,
                    &format!("SNMP_PERSISTENT_DIR={ds}/var/lib/snmp /usr/sbin/snmpd -C -c {ds}/etc/snmp/snmpd.conf -p {ds}/run/snmpd.pid -Lf {ds}/var/log/snmpd.log"),
                )?;
                self.exec_checked(
                    node,
                    &format!("/usr/sbin/sshd -f {ds}/etc/ssh/sshd_config -E {ds}/var/log/sshd.log"),
                )?;
                if let Some(fx) = &node.node.flow_export {
                    let shim = self.dir.join("pcap_immediate.so");
                    self.exec_checked(
                        node,
                        &format!(
                            "LD_PRELOAD={} softflowd -i {} -n {}:{} -v {} -c {ds}/run/softflowd.ctl -p {ds}/run/softflowd.pid -t maxlife=30s",
                            shim.display(),
                            fx.interface,
                            self.plan.station,
                            fx.port,
                            fx.version
                        ),
                    )?;
                }
            }
            Kind::Host => {}
            Kind::MqttBroker => {
                self.exec_checked(node, &format!("mosquitto -d -c {ds}/etc/mosquitto.conf"))?;
            }
            Kind::Sensors => {
                let script = d.join("publish.sh");
                self.exec_checked(
                    node,
                    &format!(
                        "setsid sh {} >/dev/null 2>&1 < /dev/null &",
                        script.display()
                    ),
                )?;
            }
        }
        if let Some(target) = node.metrics_target() {
            // node_exporter does not daemonize: detached like the sensor loop. A few cheap
            // collectors only; `netdev` reads /proc/net/dev and `netclass` /sys/class/net
            // (`node_network_up`: an interface's operational state), both the node's
            // namespace's, and `uname` reports the node's hostname (the prelude's UTS namespace).
            self.exec_checked(
                node,
                &format!(
                    "setsid /usr/bin/prometheus-node-exporter --web.listen-address={target} \
                     --collector.disable-defaults --collector.netdev --collector.netclass \
                     --collector.uname \
                     --collector.time --web.disable-exporter-metrics \
                     >{ds}/var/log/node-exporter.log 2>&1 < /dev/null &"
                ),
            )?;
        }
        Ok(())
    }

    /// Take `node`'s interface `iface` down (`ip link set IFACE down` in its namespace). The
    /// veth's other end loses carrier at once, so both routers drop the OSPF adjacency and
    /// the routes behind it within about a second.
    pub fn link_down(&self, node: &str, iface: &str) -> anyhow::Result<()> {
        self.set_link(node, iface, "down")
    }

    /// Bring `node`'s interface `iface` back up; OSPF re-forms the adjacency in a few seconds.
    pub fn link_up(&self, node: &str, iface: &str) -> anyhow::Result<()> {
        self.set_link(node, iface, "up")
    }

    fn set_link(&self, node: &str, iface: &str, state: &str) -> anyhow::Result<()> {
        let n = self
            .plan
            .node(node)
            .with_context(|| format!("no node `{node}` in lab {}", self.plan.lab))?;
        if !n.interfaces.iter().any(|i| i.name == iface) {
            bail!(
                "{node} has no interface `{iface}` (it has {})",
                n.interfaces
                    .iter()
                    .map(|i| format!("{} to {}", i.name, i.peer))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ip(&["-n", &n.netns, "link", "set", iface, state])
    }

    /// The name of `node`'s interface on its link to `peer` (e.g. `("core1", "acc2")` →
    /// `eth2`), for [`Lab::link_down`].
    pub fn interface_toward(&self, node: &str, peer: &str) -> anyhow::Result<String> {
        self.plan
            .node(node)
            .and_then(|n| n.interface_toward(peer))
            .map(|i| i.name.clone())
            .with_context(|| format!("no link {node} -- {peer} in lab {}", self.plan.lab))
    }

    /// Run a shell command inside a node (its namespace, hostname and mounts).
    fn exec_checked(&self, node: &NodePlan, script: &str) -> anyhow::Result<Output> {
        let out = self.sh(node, script)?;
        if !out.status.success() {
            bail!(
                "{}: `{script}` failed: {}{}",
                node.node.name,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out)
    }

    fn sh(&self, node: &NodePlan, script: &str) -> anyhow::Result<Output> {
        let prelude = configs::prelude(node, &self.node_dir(&node.node.name));
        Command::new("ip")
            .args(["netns", "exec", &node.netns, "unshare", "--uts", "sh", "-c"])
            .arg(format!("{prelude}\n{script}"))
            .stdin(Stdio::null())
            .output()
            .context("running ip netns exec")
    }

    /// Run a shell command in `node` and return its output (stdout, checked).
    pub fn exec(&self, node: &str, script: &str) -> anyhow::Result<String> {
        let n = self
            .plan
            .node(node)
            .with_context(|| format!("no node `{node}` in lab {}", self.plan.lab))?;
        let out = self.exec_checked(n, script)?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// vtysh commands on a router, e.g. `["configure terminal", "hostname x"]`.
    pub fn vtysh(&self, node: &str, commands: &[&str]) -> anyhow::Result<String> {
        let args: Vec<String> = commands
            .iter()
            .map(|c| format!("-c '{}'", c.replace('\'', "'\\''")))
            .collect();
        self.exec(node, &format!("vtysh {}", args.join(" ")))
    }

    /// Give a router a new SSH host key and restart its sshd (what a replaced or reinstalled
    /// device looks like to an SSH client).
    pub fn regenerate_ssh_host_key(&self, node: &str) -> anyhow::Result<()> {
        let d = self.node_dir(node);
        let ds = d.display();
        self.exec(
            node,
            &format!(
                "kill $(cat {ds}/run/sshd.pid); rm -f {ds}/etc/ssh/ssh_host_ed25519_key {ds}/etc/ssh/ssh_host_ed25519_key.pub; \
                 ssh-keygen -q -t ed25519 -N '' -f {ds}/etc/ssh/ssh_host_ed25519_key; sleep 0.3; \
                 /usr/sbin/sshd -f {ds}/etc/ssh/sshd_config -E {ds}/var/log/sshd.log"
            ),
        )
        .map(|_| ())
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.plan.node(name)
    }

    pub fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The lab's SSH key pair (private key path), installed for `admin` on every router.
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// One round of checks.
    pub fn check(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let routers: Vec<&NodePlan> = self
            .plan
            .nodes
            .iter()
            .filter(|n| n.node.kind == Kind::Router)
            .collect();
        for n in &self.plan.nodes {
            let name = n.node.name.clone();
            match n.node.kind {
                Kind::Router => {
                    out.push(tcp_check(
                        &name,
                        "ssh reachable from the station",
                        n.management_address,
                        22,
                    ));
                    out.push(self.snmp_check(n));
                    let peers = n
                        .interfaces
                        .iter()
                        .filter(|i| routers.iter().any(|r| r.node.name == i.peer))
                        .count();
                    out.push(self.ospf_check(n, peers));
                }
                Kind::MqttBroker => out.push(tcp_check(
                    &name,
                    "mqtt reachable",
                    n.management_address,
                    1883,
                )),
                Kind::Host | Kind::Sensors => {
                    let alive = !sys::netns_pids(&n.netns).is_empty() || n.node.kind == Kind::Host;
                    out.push(Check {
                        node: name.clone(),
                        what: "running".into(),
                        ok: alive,
                        detail: String::new(),
                    });
                }
            }
            if n.node.metrics {
                out.push(metrics_check(&name, n.management_address));
            }
        }
        out
    }

    /// Check until everything passes or `timeout` runs out; the last round is returned.
    pub fn check_until(
        &self,
        timeout: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Vec<Check>> {
        let deadline = Instant::now() + timeout;
        loop {
            let checks = self.check();
            let failing: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
            if failing.is_empty() {
                return Ok(checks);
            }
            if Instant::now() > deadline {
                let list: Vec<String> = failing
                    .iter()
                    .map(|c| format!("{}: {} ({})", c.node, c.what, c.detail))
                    .collect();
                bail!(
                    "lab {} not healthy after {timeout:?}: {}",
                    self.plan.lab,
                    list.join("; ")
                );
            }
            progress(&format!(
                "waiting for {} check(s): {} {}",
                failing.len(),
                failing[0].node,
                failing[0].what
            ));
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn snmp_check(&self, n: &NodePlan) -> Check {
        let out = Command::new("snmpget")
            .env("SNMP_PERSISTENT_DIR", self.dir.join("snmp-client"))
            .args(["-v2c", "-c", COMMUNITY, "-t", "1", "-r", "0", "-Oqv"])
            .arg(n.management_address.to_string())
            .arg("1.3.6.1.2.1.1.5.0")
            .output();
        let (ok, detail) = match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .trim_matches('"')
                    .to_string();
                (text == n.node.name, text)
            }
            Err(e) => (false, e.to_string()),
        };
        Check {
            node: n.node.name.clone(),
            what: "snmp sysName".into(),
            ok,
            detail,
        }
    }

    fn ospf_check(&self, n: &NodePlan, expected: usize) -> Check {
        let text = self
            .vtysh(&n.node.name, &["show ip ospf neighbor json"])
            .unwrap_or_default();
        let full = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("neighbors").cloned())
            .and_then(|v| v.as_object().cloned())
            .map(|m| {
                m.values()
                    .flat_map(|list| list.as_array().cloned().unwrap_or_default())
                    .filter(|nb| nb["nbrState"].as_str().unwrap_or("").starts_with("Full"))
                    .count()
            })
            .unwrap_or(0);
        Check {
            node: n.node.name.clone(),
            what: format!("ospf: {expected} full neighbor(s)"),
            ok: full >= expected,
            detail: format!("{full} full"),
        }
    }

    /// Stop everything and remove every trace; also what Drop does.
    pub fn down(mut self) -> anyhow::Result<()> {
        self.teardown();
        let left = leftovers(&self.plan, &self.dir);
        if left.is_empty() {
            Ok(())
        } else {
            bail!("lab {} left behind: {}", self.plan.lab, left.join(", "))
        }
    }

    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        teardown_plan(&self.plan, &self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kill, delete, remove: works from a plan alone (the CLI's `down` has no Lab object).
pub fn teardown_plan(plan: &Plan, dir: &Path) {
    for round in 0..3 {
        let signal = if round == 0 { "-TERM" } else { "-KILL" };
        let mut any = false;
        for n in &plan.nodes {
            for pid in sys::netns_pids(&n.netns) {
                any = true;
                sys::run_quiet("kill", &[signal, &pid.to_string()]);
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for n in &plan.nodes {
        sys::run_quiet("ip", &["netns", "del", &n.netns]);
    }
    sys::run_quiet("ip", &["link", "del", &plan.station_link]);
    sys::run_quiet("ip", &["route", "del", &format!("{}/16", plan.block)]);
    let _ = std::fs::remove_dir_all(dir);
}

/// What a torn-down lab must not have left: namespaces, links, processes, mounts, files.
pub fn leftovers(plan: &Plan, dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for n in &plan.nodes {
        if sys::netns_exists(&n.netns) {
            left.push(format!("namespace {}", n.netns));
        }
    }
    if Path::new("/sys/class/net")
        .join(&plan.station_link)
        .exists()
    {
        left.push(format!("link {}", plan.station_link));
    }
    let needle = dir.display().to_string();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                left.push(format!("process {}", p.file_name().to_string_lossy()));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&needle) {
        left.push("mounts".into());
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

fn tcp_check(node: &str, what: &str, addr: std::net::Ipv4Addr, port: u16) -> Check {
    let sa = SocketAddr::from((addr, port));
    let r = TcpStream::connect_timeout(&sa, Duration::from_millis(500));
    Check {
        node: node.to_string(),
        what: what.to_string(),
        ok: r.is_ok(),
        detail: r.err().map(|e| e.to_string()).unwrap_or_default(),
    }
}

/// `GET /metrics` on a node_exporter from the station: answered 200.
fn metrics_check(node: &str, addr: std::net::Ipv4Addr) -> Check {
    use std::io::{Read, Write};
    let sa = SocketAddr::from((addr, crate::topology::METRICS_PORT));
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&sa, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {sa}\r\n\r\n").as_bytes())?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(String::from_utf8_lossy(&head).to_string())
    })();
    let (ok, detail) = match result {
        Ok(head) => (head.ends_with(" 200"), head),
        Err(e) => (false, e.to_string()),
    };
    Check {
        node: node.to_string(),
        what: "metrics scraped from the station".into(),
        ok,
        detail,
    }
}

/// Every program the topology needs, before touching anything.
fn preflight(topology: &Topology) -> anyhow::Result<()> {
    sys::find_binary(&["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip"], "iproute2")?;
    let kinds: Vec<Kind> = topology.nodes.iter().map(|n| n.kind).collect();
    if kinds.contains(&Kind::Router) {
        sys::find_binary(&["/usr/lib/frr/zebra"], "frr")?;
        sys::find_binary(&["/usr/sbin/snmpd"], "snmpd")?;
        sys::find_binary(&["/usr/bin/snmpget"], "snmp")?;
        sys::find_binary(&["/usr/sbin/sshd"], "openssh-server")?;
        sys::find_binary(&["/usr/bin/ssh-keygen"], "openssh-client")?;
        sys::find_binary(&["/usr/bin/openssl"], "openssl")?;
    }
    if topology.nodes.iter().any(|n| n.flow_export.is_some()) {
        sys::find_binary(&["/usr/sbin/softflowd"], "softflowd")?;
        sys::find_binary(&["/usr/bin/cc"], "build-essential")?;
    }
    if kinds.contains(&Kind::MqttBroker) {
        sys::find_binary(&["/usr/sbin/mosquitto"], "mosquitto")?;
    }
    if kinds.contains(&Kind::Sensors) {
        sys::find_binary(&["/usr/bin/mosquitto_pub"], "mosquitto-clients")?;
    }
    if topology.nodes.iter().any(|n| n.metrics) {
        sys::find_binary(
            &["/usr/bin/prometheus-node-exporter"],
            "prometheus-node-exporter",
        )?;
    }
    Ok(())
}
