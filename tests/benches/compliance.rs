//! Compliance audit benchmark: generated IOS-style configs of ~2,000 lines each, 50 YAML rules
//! (exact and regex, nested sections, intended lines from Jinja2 templates), a full audit on
//! all cores. (To come: one rule as a Wasm component against the same logic natively, and
//! hier_config on the same configs, side by side.)
//!
//! `cargo bench -p sotp-tests --bench compliance [-- DEVICES]` (default 10,000).

use sotp_runtime::compliance::audit::{DeviceInput, audit};
use sotp_runtime::compliance::rules::compile;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// ~2,000 lines: 180 interfaces of 9 lines, ACLs, routing, management; a few deviations
/// per device so the audit finds something.
fn config(i: usize) -> String {
    let mut c = String::with_capacity(64 * 1024);
    c.push_str(&format!(
        "!\nversion 15.2\nservice timestamps debug datetime msec\nhostname r{i}\n!\n"
    ));
    c.push_str("username admin privilege 15 secret 9 $9$abcdefgh$ijklmnop\n!\n");
    for p in 0..180 {
        c.push_str(&format!(
            "interface GigabitEthernet0/{p}\n description port-{p}\n switchport mode access\n switchport access vlan {}\n spanning-tree portfast\n ip dhcp snooping limit rate 15\n storm-control broadcast level 1.00\n no cdp enable\n{}!\n",
            10 + p % 20,
            if i.is_multiple_of(5) && (i + p).is_multiple_of(97) { " shutdown\n" } else { " no shutdown\n" }
        ));
    }
    for v in 0..20 {
        c.push_str(&format!("vlan {}\n name users-{v}\n!\n", 10 + v));
    }
    c.push_str("ip access-list extended MGMT\n permit tcp 10.99.0.0 0.0.0.255 any eq 22\n deny ip any any log\n!\n");
    c.push_str(&format!(
        "router ospf 1\n router-id 10.255.{}.{}\n passive-interface default\n network 10.0.0.0 0.255.255.255 area 0\n!\n",
        i / 256 % 256,
        i % 256
    ));
    c.push_str("line vty 0 4\n access-class MGMT in\n transport input ssh\n");
    c.push_str(if i.is_multiple_of(10) {
        "line vty 5 15\n transport input telnet ssh\n"
    } else {
        "line vty 5 15\n transport input ssh\n"
    });
    c.push_str("!\nntp server 10.0.0.1\n");
    if i.is_multiple_of(7) {
        c.push_str("ntp server 10.9.9.9\n");
    } else {
        c.push_str("ntp server 10.0.0.2\n");
    }
    if i.is_multiple_of(13) {
        c.push_str("snmp-server community public RO\n");
    }
    c.push_str("logging host 10.0.0.50\nend\n");
    c
}

/// 50 rules: 5 kinds × 10 variants.
fn rules() -> String {
    let mut r = String::from("vars: { ntp_servers: [10.0.0.1, 10.0.0.2] }\nrules:\n");
    for k in 0..10 {
        r.push_str(&format!(
            "  - id: ntp-{k}\n    feature: time\n    intended: |\n      {{% for s in ntp_servers %}}ntp server {{{{ s }}}}\n      {{% endfor %}}\n    lines_like: '^ntp server '\n"
        ));
        r.push_str(&format!(
            "  - id: vty-{k}\n    feature: management\n    match: regex\n    section: ['line vty .*']\n    required: ['transport input ssh']\n    forbidden: ['transport input (telnet|all).*']\n"
        ));
        r.push_str(&format!(
            "  - id: port-{k}\n    feature: interfaces\n    match: regex\n    section: ['interface GigabitEthernet0/{k}[0-9]*']\n    required: ['spanning-tree portfast', 'no cdp enable']\n    forbidden: ['shutdown']\n"
        ));
        r.push_str(&format!(
            "  - id: snmp-{k}\n    feature: management\n    match: regex\n    forbidden: ['snmp-server community .*']\n"
        ));
        r.push_str(&format!(
            "  - id: acl-{k}\n    feature: management\n    section: ['ip access-list extended MGMT']\n    ordered: true\n    required: ['permit tcp 10.99.0.0 0.0.0.255 any eq 22', 'deny ip any any log']\n"
        ));
    }
    r
}

fn main() {
    let devices: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let t = Instant::now();
    // Configs are made once; an audit loads each when its turn comes (as from Git).
    let configs: Arc<Vec<String>> = Arc::new((0..devices).map(config).collect());
    let lines: usize = configs.iter().map(|c| c.lines().count()).sum();
    let inputs: Vec<DeviceInput> = (0..devices)
        .map(|i| {
            let configs = configs.clone();
            DeviceInput {
                device: serde_json::from_value(serde_json::json!({
                    "name": format!("r{i}"), "address": "192.0.2.1", "platform": "ios"
                }))
                .unwrap(),
                backup: Box::new(move || Ok((format!("c{i}"), configs[i].clone()))),
            }
        })
        .collect();
    println!(
        "generated {devices} configs, {:.0} lines each, in {:.1} s",
        lines as f64 / devices as f64,
        t.elapsed().as_secs_f64()
    );
    let set = Arc::new(compile("bench.yaml", 1, &rules()).unwrap());
    println!("{} rules", set.rules.len());
    let done = AtomicUsize::new(0);
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        let report = audit(std::slice::from_ref(&set), &[], &inputs, &[], 0, &done);
        times.push(t.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c);
        last = Some(report);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let report = last.unwrap();
    println!(
        "full audit, {} threads: median {:.2} s of 3 ({:.1} µs per device and rule), CPU {:.2} s; {} of {} devices compliant",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        times[1],
        times[1] * 1e6 / (devices * set.rules.len()) as f64,
        cpu[1],
        report.summary.compliant_devices,
        report.summary.devices
    );
    println!("report digest {:016x}", digest(&report));
}

/// A hash of the whole report (every result, line and remediation): equal digests from two
/// builds mean they found the same things.
fn digest(report: &sotp_runtime::compliance::Report) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(report).unwrap().hash(&mut h);
    h.finish()
}

/// CPU time (user + system) of this process so far: what the work cost, whatever else the
/// machine runs at the time.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
