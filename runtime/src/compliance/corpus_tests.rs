//! A corpus of vendor configurations (Cisco IOS, NX-OS, Arista EOS, Junos in both forms),
//! written for these tests in each platform's `show running-config` style (no third-party
//! fixtures, so no licences to track), audited rule by rule with the expected findings:
//! nested sections, regexes, order, ignored lines, duplicated lines, remediation order.

use super::audit::{DeviceInput, audit};
use super::evaluate::Status;
use super::rules::compile;
use crate::inventory::Device;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

const IOS: &str = "\
!
version 15.2
service timestamps debug datetime msec
hostname ios1
!
username admin privilege 15 secret 9 $9$Sm3xQ$1nKj7Lw0aP
!
interface GigabitEthernet0/0
 description uplink-to-core1
 ip address 10.0.0.2 255.255.255.252
 no shutdown
!
interface GigabitEthernet0/1
 description users
 switchport mode access
 shutdown
!
router ospf 1
 router-id 10.255.0.2
 passive-interface default
 no passive-interface GigabitEthernet0/0
 network 10.0.0.0 0.0.0.3 area 0
!
ip access-list extended MGMT
 deny ip any any log
 permit tcp 10.99.0.0 0.0.0.255 any eq 22
!
line vty 0 4
 access-class MGMT in
 transport input ssh
line vty 5 15
 transport input telnet ssh
!
ntp server 10.0.0.1
ntp server 10.9.9.9
ntp server 10.0.0.1
snmp-server community public RO
!
end
";

const NXOS: &str = "\
!Command: show running-config
!Running configuration last done at: Mon Nov 30 10:00:00 2026
version 9.3(8) Bios:version 05.45
hostname nx1
feature ssh
feature bgp
feature telnet
ntp server 10.0.0.1 use-vrf management
interface Ethernet1/1
  description to-core1
  no switchport
  ip address 10.1.0.2/30
  no shutdown
router bgp 65001
  router-id 10.255.0.3
  neighbor 10.1.0.1
    remote-as 65000
    address-family ipv4 unicast
      route-map RM-IN in
";

const EOS: &str = "\
! Command: show running-config
! device: eos1 (cEOSLab, EOS-4.30.0F)
!
hostname eos1
!
username admin privilege 15 role network-admin secret sha512 $6$salt$4bCdEf
!
management api http-commands
   no shutdown
!
interface Ethernet1
   description core-link
   no switchport
   ip address 10.2.0.2/31
!
router bgp 65002
   router-id 10.255.0.4
   neighbor 10.2.0.3 remote-as 65000
!
end
";

const JUNOS_BRACES: &str = "\
## Last commit: 2026-11-30 10:00:00 UTC by admin
version 21.4R3;
system {
    host-name jx1;
    root-authentication {
        encrypted-password \"$6$abc$xyz\"; ## SECRET-DATA
    }
    services {
        ssh;
        telnet;
    }
    ntp {
        server 10.0.0.1;
        server 10.9.9.9;
    }
}
snmp {
    community public {
        authorization read-only;
    }
}
";

const JUNOS_SET: &str = "\
set version 21.4R3
set system host-name jx2
set system services ssh
set system ntp server 10.0.0.1
set system ntp server 10.0.0.2
";

const RULES: &str = r#"
vars: { ntp_servers: [10.0.0.1, 10.0.0.2] }
rules:
  # --- IOS ---------------------------------------------------------------------------------
  - id: ios-ntp
    feature: time
    scope: { platform: [ios] }
    intended: |
      {% for s in ntp_servers %}ntp server {{ s }}
      {% endfor %}
    lines_like: '^ntp server '
  - id: ios-vty-ssh
    feature: management
    scope: { platform: [ios] }
    match: regex
    section: ['line vty .*']
    required: ['transport input ssh']
    forbidden: ['transport input (telnet|all).*']
  - id: ios-snmp-v3-only
    feature: management
    scope: { platform: [ios] }
    match: regex
    forbidden: ['snmp-server community .*']
  - id: ios-ospf-passive
    feature: routing
    scope: { platform: [ios] }
    section: ['router ospf 1']
    required: ['passive-interface default']
  - id: ios-mgmt-acl-order
    feature: management
    scope: { platform: [ios] }
    section: ['ip access-list extended MGMT']
    ordered: true
    required:
      - permit tcp 10.99.0.0 0.0.0.255 any eq 22
      - deny ip any any log
  - id: ios-admin-user
    feature: aaa
    scope: { platform: [ios] }
    match: regex
    required: ['username admin privilege 15 secret 9 \S+']
  - id: ios-uplink-interface
    feature: interfaces
    scope: { platform: [ios] }
    section: ['interface GigabitEthernet0/0']
    intended: |
      ip address 10.0.0.2 255.255.255.252
      no shutdown
    ignore: ['^description ']
  - id: ios-vty-acl-nested
    feature: management
    scope: { platform: [ios] }
    required:
      - "line vty 0 4\n access-class MGMT in\n transport input ssh"
  # --- NX-OS -------------------------------------------------------------------------------
  - id: nxos-no-telnet
    feature: management
    scope: { platform: [nxos] }
    forbidden: ['feature telnet']
  - id: nxos-bgp-policy
    feature: routing
    scope: { platform: [nxos] }
    section: ['router bgp 65001', 'neighbor 10.1.0.1', 'address-family ipv4 unicast']
    required: ['route-map RM-IN in', 'route-map RM-OUT out']
  - id: nxos-ntp
    feature: time
    scope: { platform: [nxos] }
    match: regex
    required: ['ntp server 10\.0\.0\.1( use-vrf \S+)?']
  # --- EOS ---------------------------------------------------------------------------------
  - id: eos-admin-user
    feature: aaa
    scope: { platform: [eos] }
    match: regex
    required: ['username admin privilege 15 role network-admin secret sha512 \S+']
  - id: eos-http-api-off
    feature: management
    scope: { platform: [eos] }
    section: ['management api http-commands']
    required: ['shutdown']
    forbidden: ['no shutdown']
  - id: eos-export-prefixes
    feature: routing
    scope: { platform: [eos] }
    required: ['ip prefix-list PL-LOOPBACKS seq 10 permit 10.255.0.0/24 le 32']
  - id: eos-export-route-map
    feature: routing
    scope: { platform: [eos] }
    required: ["route-map RM-EXPORT permit 10\n   match ip address prefix-list PL-LOOPBACKS"]
  - id: eos-export-binding
    feature: routing
    scope: { platform: [eos] }
    section: ['router bgp 65002']
    required: ['neighbor 10.2.0.3 route-map RM-EXPORT out']
  # --- Junos -------------------------------------------------------------------------------
  - id: junos-ntp
    feature: time
    scope: { platform: [junos] }
    section: ['set system ntp']
    intended: |
      {% for s in ntp_servers %}set system ntp server {{ s }}
      {% endfor %}
  - id: junos-no-telnet
    feature: management
    scope: { platform: [junos] }
    match: regex
    forbidden: ['set system services telnet.*']
  - id: junos-snmp-v3-only
    feature: management
    scope: { platform: [junos] }
    match: regex
    forbidden: ['set snmp community .*']
"#;

fn device(name: &str, platform: &str) -> Device {
    serde_json::from_value(serde_json::json!({
        "name": name, "address": "192.0.2.1", "platform": platform
    }))
    .unwrap()
}

fn report() -> HashMap<String, super::audit::DeviceReport> {
    let set = Arc::new(compile("corpus.yaml", 1, RULES).unwrap());
    let inputs: Vec<DeviceInput> = [
        ("ios1", "ios", IOS),
        ("nx1", "nxos", NXOS),
        ("eos1", "eos", EOS),
        ("jx1", "junos", JUNOS_BRACES),
        ("jx2", "junos", JUNOS_SET),
    ]
    .into_iter()
    .map(|(name, platform, text)| {
        DeviceInput::loaded(
            device(name, platform),
            Ok((format!("commit-{name}"), text.to_string())),
        )
    })
    .collect();
    let done = AtomicUsize::new(0);
    let report = audit(&[set], &[], &inputs, &[], 0, &done);
    report
        .devices
        .into_iter()
        .map(|d| (d.device.clone(), d))
        .collect()
}

fn check(
    devices: &HashMap<String, super::audit::DeviceReport>,
    device: &str,
    rule: &str,
    status: Status,
    missing: &[&str],
    extra: &[&str],
) {
    let d = &devices[device];
    let r = d
        .results
        .iter()
        .find(|r| r.rule == rule)
        .unwrap_or_else(|| panic!("{device}: no result for {rule}"));
    assert_eq!(r.status, status, "{device} {rule}: {r:?}");
    assert_eq!(r.missing, missing, "{device} {rule} missing");
    assert_eq!(r.extra, extra, "{device} {rule} extra");
}

#[test]
fn ios_rule_by_rule() {
    let d = report();
    let ios = &d["ios1"];
    assert_eq!(ios.results.len(), 8, "only IOS rules are in scope");
    // Duplicated `ntp server 10.0.0.1`: one copy is extra, as is the unknown server.
    check(
        &d,
        "ios1",
        "ios-ntp",
        Status::Missing,
        &["ntp server 10.0.0.2"],
        &["ntp server 10.9.9.9", "ntp server 10.0.0.1"],
    );
    let ntp = ios.results.iter().find(|r| r.rule == "ios-ntp").unwrap();
    assert_eq!(
        ntp.remediation,
        [
            "no ntp server 10.9.9.9",
            "no ntp server 10.0.0.1",
            "ntp server 10.0.0.2"
        ]
    );
    // Regex sections: vty 0 4 passes, vty 5 15 allows telnet.
    let vty = ios
        .results
        .iter()
        .find(|r| r.rule == "ios-vty-ssh")
        .unwrap();
    assert_eq!(vty.status, Status::Missing);
    assert!(vty.message.contains("under `line vty 5 15`"), "{vty:?}");
    assert_eq!(vty.extra, ["line vty 5 15", " transport input telnet ssh"]);
    check(
        &d,
        "ios1",
        "ios-snmp-v3-only",
        Status::Extra,
        &[],
        &["snmp-server community public RO"],
    );
    check(&d, "ios1", "ios-ospf-passive", Status::Compliant, &[], &[]);
    // Order: the ACL's lines are there, in the wrong order.
    let acl = ios
        .results
        .iter()
        .find(|r| r.rule == "ios-mgmt-acl-order")
        .unwrap();
    assert_eq!(acl.status, Status::Missing);
    assert!(acl.message.contains("out of order"));
    assert_eq!(
        acl.remediation,
        [
            "ip access-list extended MGMT",
            " no permit tcp 10.99.0.0 0.0.0.255 any eq 22",
            " no deny ip any any log",
            " permit tcp 10.99.0.0 0.0.0.255 any eq 22",
            " deny ip any any log",
            " exit",
        ]
    );
    // The secret hash varies per device: a regex accepts any.
    check(&d, "ios1", "ios-admin-user", Status::Compliant, &[], &[]);
    // The description is ignored, so it is not an extra line of the interface.
    check(
        &d,
        "ios1",
        "ios-uplink-interface",
        Status::Compliant,
        &[],
        &[],
    );
    // A nested required block (parent with children) matches as a tree.
    check(
        &d,
        "ios1",
        "ios-vty-acl-nested",
        Status::Compliant,
        &[],
        &[],
    );
    assert!(
        // features: time, management fail; routing, aaa, interfaces pass
        (ios.percent - 100.0 * 3.0 / 5.0).abs() < 1e-9,
        "{}",
        ios.percent
    );
}

#[test]
fn nxos_rule_by_rule() {
    let d = report();
    check(
        &d,
        "nx1",
        "nxos-no-telnet",
        Status::Extra,
        &[],
        &["feature telnet"],
    );
    // Three levels deep, with NX-OS's two-space indentation.
    check(
        &d,
        "nx1",
        "nxos-bgp-policy",
        Status::Missing,
        &[
            "router bgp 65001",
            " neighbor 10.1.0.1",
            "  address-family ipv4 unicast",
            "   route-map RM-OUT out",
        ],
        &[],
    );
    check(&d, "nx1", "nxos-ntp", Status::Compliant, &[], &[]);
    let fix = &d["nx1"].remediation;
    assert_eq!(
        fix,
        &[
            "no feature telnet",
            "router bgp 65001",
            " neighbor 10.1.0.1",
            "  address-family ipv4 unicast",
            "   route-map RM-OUT out",
            "   exit",
            "  exit",
            " exit",
        ]
    );
}

#[test]
fn eos_rule_by_rule_and_remediation_defines_before_it_binds() {
    let d = report();
    check(&d, "eos1", "eos-admin-user", Status::Compliant, &[], &[]);
    check(
        &d,
        "eos1",
        "eos-http-api-off",
        Status::Missing,
        &["management api http-commands", " shutdown"],
        &["management api http-commands", " no shutdown"],
    );
    // The binding rule comes first in the file; the device's remediation still creates the
    // prefix list and the route map before the BGP neighbour uses the route map.
    let fix = &d["eos1"].remediation;
    let at = |line: &str| {
        fix.iter()
            .position(|l| l.trim() == line)
            .unwrap_or_else(|| panic!("no `{line}` in {fix:?}"))
    };
    assert!(
        at("ip prefix-list PL-LOOPBACKS seq 10 permit 10.255.0.0/24 le 32")
            < at("route-map RM-EXPORT permit 10")
    );
    assert!(
        at("match ip address prefix-list PL-LOOPBACKS")
            < at("neighbor 10.2.0.3 route-map RM-EXPORT out")
    );
    // Removing `no shutdown` and adding `shutdown` are the same line: said once.
    assert_eq!(
        fix.iter().filter(|l| l.trim() == "shutdown").count(),
        1,
        "{fix:?}"
    );
}

#[test]
fn junos_in_both_forms() {
    let d = report();
    check(
        &d,
        "jx1",
        "junos-ntp",
        Status::Missing,
        &["set system ntp server 10.0.0.2"],
        &["set system ntp server 10.9.9.9"],
    );
    check(
        &d,
        "jx1",
        "junos-no-telnet",
        Status::Extra,
        &[],
        &["set system services telnet"],
    );
    check(
        &d,
        "jx1",
        "junos-snmp-v3-only",
        Status::Extra,
        &[],
        &["set snmp community public authorization read-only"],
    );
    assert_eq!(
        d["jx1"].remediation,
        [
            "delete system ntp server 10.9.9.9",
            "delete system services telnet",
            "delete snmp community public authorization read-only",
            "set system ntp server 10.0.0.2",
        ]
    );
    assert!(d["jx2"].compliant, "{:?}", d["jx2"]);
}
