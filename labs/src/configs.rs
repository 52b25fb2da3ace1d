//! The per-node files a lab writes: FRR, snmpd, sshd (with an `admin` user whose shell is
//! vtysh), mosquitto, the sensor publisher script, and the shell prelude that mounts them.

use crate::lab::{COMMUNITY, SSH_PASSWORD, SSH_USER, V3_AUTH, V3_PRIV, V3_USER};
use crate::sys::run;
use crate::topology::{Kind, NodePlan, Plan};
use std::fmt::Write;
use std::path::Path;

/// Shell lines run before anything inside a node: its hostname, a private /run, and its own
/// config files over the host's (visible to this process tree only).
pub fn prelude(node: &NodePlan, dir: &Path) -> String {
    let d = dir.display();
    let mut p = format!(
        "hostname {name}\nmount -t tmpfs -o mode=755 tmpfs /run\nmkdir -p /run/frr /run/sshd /run/softflowd/chroot\n",
        name = node.node.name
    );
    if node.node.kind == Kind::Router {
        for (src, dst) in [
            ("run/frr", "/run/frr"),
            ("etc/frr", "/etc/frr"),
            ("etc/passwd", "/etc/passwd"),
            ("etc/group", "/etc/group"),
            ("etc/shadow", "/etc/shadow"),
        ] {
            let _ = writeln!(p, "mount --bind {d}/{src} {dst}");
        }
    }
    p
}

pub fn write(plan: &Plan, node: &NodePlan, dir: &Path, lab_dir: &Path) -> anyhow::Result<()> {
    for sub in ["etc", "run", "var/log", "var/lib/snmp"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    match node.node.kind {
        Kind::Router => router(plan, node, dir, lab_dir),
        Kind::MqttBroker => broker(node, dir),
        Kind::Sensors => sensors(plan, node, dir),
        Kind::Host => Ok(()),
    }
}

fn router(plan: &Plan, node: &NodePlan, dir: &Path, lab_dir: &Path) -> anyhow::Result<()> {
    let name = &node.node.name;
    let lo = node.management_address;
    // FRR
    let frr = dir.join("etc/frr");
    std::fs::create_dir_all(&frr)?;
    std::fs::create_dir_all(dir.join("run/frr"))?;
    std::fs::write(
        frr.join("daemons"),
        "zebra=yes\nospfd=yes\nvtysh_enable=yes\n",
    )?;
    std::fs::write(
        frr.join("vtysh.conf"),
        format!("service integrated-vtysh-config\nusername {SSH_USER} nopassword\n"),
    )?;
    let mut conf =
        format!("frr defaults traditional\nhostname {name}\nservice integrated-vtysh-config\n!\n");
    let mut passive = Vec::new();
    for i in &node.interfaces {
        let peer_is_router = plan
            .node(&i.peer)
            .map(|p| p.node.kind == Kind::Router)
            .unwrap_or(false);
        if peer_is_router {
            let _ = write!(
                conf,
                "interface {}\n ip ospf network point-to-point\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n!\n",
                i.name
            );
        } else {
            passive.push(i.name.clone());
        }
    }
    let _ = writeln!(
        conf,
        "router ospf\n ospf router-id {lo}\n redistribute connected"
    );
    for p in &passive {
        let _ = writeln!(conf, " passive-interface {p}");
    }
    let _ = write!(conf, " network {}/16 area 0\n!\nline vty\n!\n", plan.block);
    std::fs::write(frr.join("frr.conf"), conf)?;
    run(
        "chown",
        &[
            "-R",
            "frr:frr",
            &frr.display().to_string(),
            &dir.join("run/frr").display().to_string(),
        ],
    )?;
    run(
        "chmod",
        &["775", &dir.join("run/frr").display().to_string()],
    )?;

    // Users: the host's, plus `admin` with vtysh as its shell.
    let etc = dir.join("etc");
    let passwd = std::fs::read_to_string("/etc/passwd")?
        + &format!("{SSH_USER}:x:2000:2000:lab admin:/tmp:/usr/bin/vtysh\n");
    std::fs::write(etc.join("passwd"), passwd)?;
    let mut group = String::new();
    for line in std::fs::read_to_string("/etc/group")?.lines() {
        let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
        if fields.len() == 4 && (fields[0] == "frrvty" || fields[0] == "frr") {
            fields[3] = if fields[3].is_empty() {
                SSH_USER.to_string()
            } else {
                format!("{},{SSH_USER}", fields[3])
            };
        }
        group.push_str(&fields.join(":"));
        group.push('\n');
    }
    group.push_str(&format!("{SSH_USER}:x:2000:\n"));
    std::fs::write(etc.join("group"), group)?;
    let hash = String::from_utf8(run("openssl", &["passwd", "-6", SSH_PASSWORD])?.stdout)?;
    let shadow = std::fs::read_to_string("/etc/shadow")?
        + &format!("{SSH_USER}:{}:19000:0:99999:7:::\n", hash.trim());
    std::fs::write(etc.join("shadow"), shadow)?;
    run("chmod", &["640", &etc.join("shadow").display().to_string()])?;

    // sshd, listening on the loopback only, with its own host key.
    let ssh = etc.join("ssh");
    std::fs::create_dir_all(ssh.join("authorized_keys"))?;
    let key = ssh.join("ssh_host_ed25519_key");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            &key.display().to_string(),
        ],
    )?;
    let pubkey = std::fs::read_to_string(lab_dir.join("id_ed25519.pub"))?;
    std::fs::write(ssh.join("authorized_keys").join(SSH_USER), pubkey)?;
    let d = dir.display();
    std::fs::write(
        ssh.join("sshd_config"),
        format!(
            "ListenAddress {lo}\nHostKey {key}\nPidFile {d}/run/sshd.pid\nUsePAM no\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nAuthorizedKeysFile {ssh}/authorized_keys/%u\n\
             StrictModes no\nPermitRootLogin no\n",
            key = key.display(),
            ssh = ssh.display()
        ),
    )?;

    // snmpd: v2c and v3 authPriv, on the loopback.
    let snmp = etc.join("snmp");
    std::fs::create_dir_all(&snmp)?;
    let (descr, oid) = match node.node.platform.as_deref() {
        Some("cisco-iosxe") => (
            format!(
                "Cisco IOS XE Software, Catalyst L3 Switch Software (CAT9K_IOSXE), Version 17.3.4, RELEASE SOFTWARE (fc3) [lab {name}]"
            ),
            ".1.3.6.1.4.1.9.1.2494",
        ),
        _ => (
            format!("FRRouting 8.4.4 on Linux [lab {name}]"),
            ".1.3.6.1.4.1.8072.3.2.10",
        ),
    };
    std::fs::write(
        snmp.join("snmpd.conf"),
        format!(
            "agentAddress udp:{lo}:161\nsysName {name}\nsysDescr {descr}\nsysObjectID {oid}\nsysLocation lab {lab}\n\
             rocommunity {COMMUNITY} default\ncreateUser {V3_USER} SHA \"{V3_AUTH}\" AES \"{V3_PRIV}\"\nrouser {V3_USER} priv\n",
            lab = plan.lab
        ),
    )?;
    Ok(())
}

fn broker(node: &NodePlan, dir: &Path) -> anyhow::Result<()> {
    let d = dir.display();
    let user = if crate::sys::is_root() {
        "user root\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("etc/mosquitto.conf"),
        format!(
            "{user}listener 1883 {addr}\nallow_anonymous true\npersistence false\npid_file {d}/run/mosquitto.pid\n\
             log_dest file {d}/var/log/mosquitto.log\n",
            addr = node.management_address
        ),
    )?;
    Ok(())
}

fn sensors(plan: &Plan, node: &NodePlan, dir: &Path) -> anyhow::Result<()> {
    let broker = plan
        .node(node.node.broker.as_deref().unwrap_or(""))
        .map(|b| b.management_address)
        .ok_or_else(|| anyhow::anyhow!("sensors {}: no broker", node.node.name))?;
    let mut script = String::from("i=0\nwhile :; do\n  i=$((i+1))\n");
    for room in &node.node.rooms {
        let _ = writeln!(
            script,
            "  mosquitto_pub -h {broker} -q 1 -t home/{room}/temperature -m \"{{\\\"value\\\": $((18 + i % 7)).5, \\\"device\\\": \\\"{room}-t\\\"}}\"\n  \
             mosquitto_pub -h {broker} -q 1 -t home/{room}/humidity -m \"$((40 + i % 11))\""
        );
    }
    script.push_str("  sleep 1\ndone\n");
    std::fs::write(dir.join("publish.sh"), script)?;
    Ok(())
}
