//! Golden-config compliance through the API: rule files (versions, activation, rollback,
//! errors that point at the line), audits of the FRR configs `ssh-config-backup` keeps in
//! Git in a real lab, remediation applied with vtysh, dry runs, waivers, and isolation.

use serde_json::{Value, json};
use sotp_labs::lab;
use sotp_tests::guests::{
    EVIL_RULE, INTERFACE_DESCRIPTIONS, NTP_SERVERS, SNMP_V3_ONLY, SNMP_V3_ONLY_PY,
    SSH_CONFIG_BACKUP, TICK_COUNTER, VTY_SSH_ONLY,
};
use sotp_tests::harness::{Api, Server, basic_lab};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

/// Rules the lab's routers meet once access1's uplink is described; `prefix-list BAD…` is
/// forbidden everywhere.
const RULES: &str = r#"
vars: { uplink: none }
rules:
  - id: hostname
    feature: identity
    intended: 'hostname {{ name }}'
    lines_like: '^hostname '
  - id: uplink-description
    feature: interfaces
    scope: { devices: [access1] }
    section: ['interface eth1']
    intended: 'description uplink-to-{{ uplink }}'
    lines_like: '^description '
  - id: no-bad-prefix-list
    feature: routing-policy
    match: regex
    forbidden: ['ip prefix-list BAD .*']
"#;

fn audit(api: &Api) -> Value {
    let (status, run) = api.post("/v1/compliance/audits?wait=true", json!({}));
    assert_eq!(status, 200, "{run}");
    let (status, report) = api.get("/v1/compliance/audits/latest");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["id"], run["id"]);
    // The summary is also a sample, so the compliance trend charts through the query APIs.
    let newest = api
        .points("compliance_percent_devices", "10m")
        .into_iter()
        .max_by_key(|(_, t, _)| *t)
        .map(|(_, _, v)| v);
    assert_eq!(newest, run["summary"]["percent_devices"].as_f64(), "{run}");
    report
}

fn device<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn result<'a>(report: &'a Value, dev: &str, rule: &str) -> &'a Value {
    device(report, dev)["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} for {dev} in {report}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn history_len(api: &Api, device: &str) -> usize {
    let (status, body) = api.get(&format!("/v1/backups/{device}"));
    if status != 200 {
        return 0;
    }
    body["revisions"].as_array().unwrap().len()
}

fn wait_commits(api: &Api, device: &str, n: usize) {
    api.wait_for(
        &format!("{n} backups of {device}"),
        Duration::from_secs(60),
        |api| (history_len(api, device) >= n).then_some(()),
    );
}

/// Apply remediation lines as an operator would paste them into vtysh.
fn apply(lab: &sotp_labs::Lab, node: &str, lines: &[String]) {
    let mut commands = vec!["configure terminal"];
    commands.extend(lines.iter().map(|l| l.trim()));
    lab.vtysh(node, &commands).unwrap();
}

#[test]
fn frr_backups_are_audited_and_the_remediation_makes_them_compliant() {
    let lab = basic_lab(25);
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/lab-ssh", json!({ "value": lab::SSH_PASSWORD }))
            .0,
        204
    );
    let addr = |n: &str| lab.node(n).unwrap().management_address.to_string();
    let ssh = json!({ "user": lab::SSH_USER, "password_secret": "lab-ssh" });
    let devices = json!([
        { "name": "core1", "address": addr("core1"), "platform": "frr", "tags": ["backup"], "ssh": ssh,
          "vars": { "ntp_servers": ["192.0.2.123"], "no_servers": [] } },
        { "name": "access1", "address": addr("access1"), "platform": "frr", "tags": ["backup"], "ssh": ssh,
          "vars": { "uplink": "core1" } },
        { "name": "access2", "address": addr("access2"), "platform": "frr", "tags": ["backup"], "ssh": ssh },
    ]);
    assert_eq!(acme.post("/v1/devices/import", devices).0, 200);
    let manifest = "name = \"ssh-config-backup\"\nversion = \"1\"\nworld = \"collector\"\n\
        [schedule]\nevery = \"2s\"\n[limits]\ncpu_ms = 500\n[grants]\ndevices = [\"tag:backup\"]\n";
    acme.push(manifest, SSH_CONFIG_BACKUP);
    for d in ["core1", "access1", "access2"] {
        wait_commits(&acme, d, 1);
    }

    let (status, up) = acme.send_text("PUT", "/v1/compliance/rules/base.yaml?activate=true", RULES);
    assert_eq!(status, 201, "{up}");
    assert_eq!(
        (up["version"].as_u64(), up["active"].as_bool()),
        (Some(1), Some(true))
    );

    // First audit: access1's uplink has no description; the rest is compliant.
    let report = audit(&acme);
    let missing = result(&report, "access1", "uplink-description");
    assert_eq!(missing["status"], "missing", "{missing}");
    assert_eq!(
        strings(&missing["missing"]),
        ["interface eth1", " description uplink-to-core1"]
    );
    let fix_access1 = strings(&device(&report, "access1")["remediation"]);
    assert_eq!(
        fix_access1,
        ["interface eth1", " description uplink-to-core1", " exit"]
    );
    assert_eq!(device(&report, "core1")["compliant"], true, "{report}");
    assert_eq!(
        device(&report, "access1")["percent"].as_f64(),
        Some(100.0 * 2.0 / 3.0)
    );
    let commit = device(&report, "core1")["commit"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, history) = acme.get("/v1/backups/core1");
    assert_eq!(
        history["revisions"][0]["commit"],
        commit.as_str(),
        "the audited commit"
    );
    assert_eq!(report["summary"]["compliant_devices"], 2);
    assert_eq!(report["sources"], json!(["base.yaml@1"]));

    // Break a rule on core1 with vtysh: the next backup is audited as extra, with the fix.
    lab.vtysh(
        "core1",
        &[
            "configure terminal",
            "ip prefix-list BAD seq 5 permit 10.0.0.0/8",
        ],
    )
    .unwrap();
    wait_commits(&acme, "core1", 2);
    let report = audit(&acme);
    let extra = result(&report, "core1", "no-bad-prefix-list");
    assert_eq!(extra["status"], "extra", "{extra}");
    assert_eq!(
        strings(&extra["extra"]),
        ["ip prefix-list BAD seq 5 permit 10.0.0.0/8"]
    );
    let fix_core1 = strings(&device(&report, "core1")["remediation"]);
    assert_eq!(fix_core1, ["no ip prefix-list BAD seq 5 permit 10.0.0.0/8"]);

    // Apply both remediations through vtysh; once backed up, the audit is all compliant.
    apply(&lab, "core1", &fix_core1);
    apply(&lab, "access1", &fix_access1);
    wait_commits(&acme, "core1", 3);
    wait_commits(&acme, "access1", 2);
    let report = audit(&acme);
    assert_eq!(report["summary"]["compliant_devices"], 3, "{report}");
    assert_eq!(report["summary"]["percent_devices"].as_f64(), Some(100.0));

    // A dry run of a changed rule names exactly the devices whose status would change.
    let draft = RULES.replace("uplink-to-{{ uplink }}", "uplink-to-{{ uplink }}-10g");
    let (status, dry) = acme.send_text("POST", "/v1/compliance/rules/base.yaml/dry-run", &draft);
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["devices_changed"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["devices_changed"][0]["device"], "access1");
    assert_eq!(dry["devices_changed"][0]["compliant_after"], false);
    assert_eq!(dry["findings_new"][0]["rule"], "uplink-description");
    assert!(dry["findings_gone"].as_array().unwrap().is_empty());
    // Nothing was stored or activated by the dry run.
    let (_, versions) = acme.get("/v1/compliance/rules/base.yaml/versions");
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);

    // Activate the change: access1 fails; a waiver shows it as waived with its reason.
    let (status, v2) = acme.send_text(
        "PUT",
        "/v1/compliance/rules/base.yaml?activate=true",
        &draft,
    );
    assert_eq!((status, v2["version"].as_u64()), (201, Some(2)), "{v2}");
    let report = audit(&acme);
    assert_eq!(
        result(&report, "access1", "uplink-description")["status"],
        "missing"
    );
    let (status, waiver) = acme.post(
        "/v1/compliance/waivers",
        json!({ "device": "access1", "rule": "uplink-description",
                "reason": "10G optics arrive next week", "expires_in": "7d" }),
    );
    assert_eq!(status, 201, "{waiver}");
    let report = audit(&acme);
    let waived = result(&report, "access1", "uplink-description");
    assert_eq!(waived["status"], "waived", "{waived}");
    assert_eq!(waived["waiver"]["reason"], "10G optics arrive next week");
    assert_eq!(device(&report, "access1")["waived_features"], 1);
    let (status, _) = acme.delete(&format!(
        "/v1/compliance/waivers/{}",
        waiver["id"].as_str().unwrap()
    ));
    assert_eq!(status, 204);

    // Roll back: the following audit gives the first version's findings again.
    let (status, back) = acme.post("/v1/compliance/rules/base.yaml/rollback", json!({}));
    assert_eq!(
        (status, back["active_version"].as_u64()),
        (200, Some(1)),
        "{back}"
    );
    let report = audit(&acme);
    assert_eq!(report["summary"]["compliant_devices"], 3, "{report}");
    assert_eq!(report["sources"], json!(["base.yaml@1"]));

    // The trend lists every audit with its summary; CSV export has a row per device and rule.
    let (_, audits) = acme.get("/v1/compliance/audits");
    let trend: Vec<u64> = audits["audits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["summary"]["compliant_devices"].as_u64().unwrap())
        .collect();
    // A waived deviation does not make a device non-compliant (it is shown as waived).
    assert_eq!(trend, [2, 1, 3, 2, 3, 3]);
    let csv = reqwest::blocking::Client::new()
        .get(format!(
            "{}/v1/compliance/audits/latest?format=csv",
            acme.base
        ))
        .bearer_auth(&acme.token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(csv.starts_with("device,commit,rule,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 2 + 3 + 2, "{csv}");

    // A rule component (WASI, world compliance-rule) audits next to the rule files; a hot
    // swap changes the next audit's findings, a rollback brings the old ones back.
    let rule_manifest = |version: &str, var: &str| {
        format!(
            "name = \"ntp-servers\"\nversion = \"{version}\"\nworld = \"compliance-rule\"\n\
             [limits]\ncpu_ms = 200\n[config]\nvar = \"{var}\"\n"
        )
    };
    acme.push(&rule_manifest("1", "ntp_servers"), NTP_SERVERS);
    let report = audit(&acme);
    let ntp = result(&report, "core1", "ntp-servers");
    assert_eq!(ntp["status"], "missing", "{ntp}");
    assert_eq!(ntp["source"], "component:ntp-servers@1");
    assert_eq!(strings(&ntp["remediation"]), ["ntp server 192.0.2.123"]);
    assert!(
        !device(&report, "access1")["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "ntp-servers"),
        "devices without the variable are not in the component's scope"
    );
    assert!(
        report["sources"]
            .as_array()
            .unwrap()
            .contains(&json!("component:ntp-servers@1"))
    );
    acme.push(&rule_manifest("2", "no_servers"), NTP_SERVERS);
    let report = audit(&acme);
    let ntp = result(&report, "core1", "ntp-servers");
    assert_eq!(
        (ntp["status"].as_str(), ntp["source"].as_str()),
        (Some("compliant"), Some("component:ntp-servers@2"))
    );
    let (status, _) = acme.post("/v1/components/ntp-servers/rollback", json!({}));
    assert_eq!(status, 200);
    let report = audit(&acme);
    assert_eq!(result(&report, "core1", "ntp-servers")["status"], "missing");

    // A rule component that panics on one device, then one that loops on all: each is an
    // error result naming the device and the component, counted, and every other device and
    // rule is still evaluated.
    let evil = |version: &str, extra: &str| {
        format!(
            "name = \"evil\"\nversion = \"{version}\"\nworld = \"compliance-rule\"\n\
             [limits]\ncpu_ms = 50\n[config]\n{extra}\n"
        )
    };
    acme.push(
        &evil("1", "mode = \"panic\"\ndevices = [\"access1\"]"),
        EVIL_RULE,
    );
    let report = audit(&acme);
    let bad = result(&report, "access1", "evil");
    assert_eq!(bad["status"], "error", "{bad}");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("component evil") && message.contains("panicked: evil rule on access1"),
        "{message}"
    );
    assert_eq!(result(&report, "core1", "evil")["status"], "compliant");
    assert_eq!(result(&report, "core1", "ntp-servers")["status"], "missing");
    assert_eq!(
        result(&report, "access1", "hostname")["status"],
        "compliant"
    );
    assert_eq!(report["summary"]["errors"], 1, "{report}");
    let last = acme.component("evil")["last_error"]["message"].clone();
    assert!(
        last.as_str()
            .unwrap()
            .contains("evaluate on access1: panicked"),
        "the component's status shows it too: {last}"
    );
    acme.push(&evil("2", "mode = \"loop\""), EVIL_RULE);
    let report = audit(&acme);
    for d in ["core1", "access1", "access2"] {
        let looped = result(&report, d, "evil");
        assert!(
            looped["message"]
                .as_str()
                .unwrap()
                .contains("CPU deadline exceeded"),
            "{looped}"
        );
        assert_eq!(result(&report, d, "hostname")["status"], "compliant");
    }
    assert_eq!(result(&report, "core1", "ntp-servers")["status"], "missing");
    assert_eq!(report["summary"]["errors"], 3, "{report}");
}

#[test]
fn a_component_of_another_world_than_its_manifest_is_a_4xx_naming_both() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let rule_as_collector = "name = \"ntp-servers\"\nversion = \"1\"\nworld = \"collector\"\n";
    let wasm = std::fs::read(NTP_SERVERS).unwrap();
    let (status, body) = acme.upload(rule_as_collector, &wasm, true);
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("world `collector`") && detail.contains("world `compliance-rule`"),
        "{detail}"
    );
    // A collector (which imports ssh, snmp, mqtt...) cannot pass as a rule: the rule world's
    // linker has none of them.
    // A component keeps its world across versions: a collector cannot replace a rule.
    let rule = "name = \"ntp\"\nversion = \"1\"\nworld = \"compliance-rule\"\n";
    acme.push(rule, NTP_SERVERS);
    let collector = "name = \"ntp\"\nversion = \"2\"\nworld = \"collector\"\n";
    let (status, body) = acme.upload(collector, &std::fs::read(TICK_COUNTER).unwrap(), true);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("is a compliance-rule component"),
        "{body}"
    );
    let collector_as_rule = "name = \"backup\"\nversion = \"1\"\nworld = \"compliance-rule\"\n";
    let wasm = std::fs::read(SSH_CONFIG_BACKUP).unwrap();
    let (status, body) = acme.upload(collector_as_rule, &wasm, true);
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("world `compliance-rule`") && detail.contains("world `collector`"),
        "{detail}"
    );
}

#[test]
fn a_bad_rule_file_is_a_4xx_that_points_at_the_line_and_key() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let bad =
        "rules:\n  - id: ntp\n    match: regex\n    required:\n      - 'ntp server (10.0.0.1'\n";
    let (status, err) = acme.send_text("PUT", "/v1/compliance/rules/ntp.yaml", bad);
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_rule_file");
    assert_eq!(
        (
            err["file"].as_str(),
            err["line"].as_u64(),
            err["key"].as_str()
        ),
        (Some("ntp.yaml"), Some(5), Some("rules[0].required[0]")),
        "{err}"
    );
    let typo = "rules:\n  - id: ntp\n    requird: [x]\n";
    let (status, err) = acme.send_text("PUT", "/v1/compliance/rules/ntp.yaml", typo);
    assert_eq!((status, err["line"].as_u64()), (400, Some(3)), "{err}");
    assert!(err["detail"].as_str().unwrap().contains("requird"), "{err}");
    let (status, err) = acme.send_text("PUT", "/v1/compliance/rules/..%2Fx", "rules: []\n");
    assert_eq!(status, 400, "{err}");
    // Nothing was stored.
    let (_, files) = acme.get("/v1/compliance/rules");
    assert_eq!(files["files"], json!([]));
}

#[test]
fn an_audit_with_no_backups_reports_errors_per_device_and_finishes() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let devices = json!([
        { "name": "r1", "address": "192.0.2.1", "platform": "frr" },
        { "name": "r2", "address": "192.0.2.2", "platform": "junos" },
    ]);
    assert_eq!(acme.post("/v1/devices/import", devices).0, 200);
    let (status, _) = acme.send_text("PUT", "/v1/compliance/rules/base.yaml?activate=true", RULES);
    assert_eq!(status, 201);
    let report = audit(&acme);
    assert_eq!(report["summary"]["devices"], 2, "{report}");
    let r = result(&report, "r2", "hostname");
    assert_eq!(r["status"], "error");
    assert!(r["message"].as_str().unwrap().contains("no backup"), "{r}");
    assert_eq!(report["summary"]["errors"], 4, "{report}");
}

#[test]
fn compliance_is_tenant_scoped_and_needs_the_deploy_scope_to_change() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let other = server.tenant("other");
    let (status, _) = acme.send_text("PUT", "/v1/compliance/rules/base.yaml?activate=true", RULES);
    assert_eq!(status, 201);
    let (status, w) = acme.post(
        "/v1/compliance/waivers",
        json!({ "device": "r1", "rule": "hostname", "reason": "r", "expires_in": "1h" }),
    );
    assert_eq!(status, 201, "{w}");
    let waiver = w["id"].as_str().unwrap().to_string();
    assert_eq!(
        acme.post("/v1/compliance/audits?wait=true", json!({})).0,
        200
    );

    // The other tenant sees none of it and can change none of it.
    assert_eq!(other.get("/v1/compliance/rules").1["files"], json!([]));
    assert_eq!(other.get("/v1/compliance/rules/base.yaml").0, 404);
    assert_eq!(other.get("/v1/compliance/rules/base.yaml/versions").0, 404);
    assert_eq!(
        other
            .post("/v1/compliance/rules/base.yaml/rollback", json!({}))
            .0,
        404
    );
    assert_eq!(
        other
            .post(
                "/v1/compliance/rules/base.yaml/activate",
                json!({ "version": 1 })
            )
            .0,
        404
    );
    assert_eq!(other.delete("/v1/compliance/rules/base.yaml").0, 404);
    assert_eq!(other.get("/v1/compliance/waivers").1["waivers"], json!([]));
    assert_eq!(
        other.delete(&format!("/v1/compliance/waivers/{waiver}")).0,
        404
    );
    assert_eq!(other.get("/v1/compliance/audits").1["audits"], json!([]));
    assert_eq!(other.get("/v1/compliance/audits/1").0, 404);
    assert_eq!(other.get("/v1/compliance/audits/latest").0, 404);
    assert_eq!(
        other
            .send_text(
                "POST",
                "/v1/compliance/rules/base.yaml/dry-run?version=1",
                ""
            )
            .0,
        404
    );

    // A read-scoped token reads but changes nothing.
    let reader = acme.scoped("reader", &["read"]);
    assert_eq!(reader.get("/v1/compliance/rules").0, 200);
    assert_eq!(reader.get("/v1/compliance/audits/latest").0, 200);
    for (status, what) in [
        (
            reader
                .send_text("PUT", "/v1/compliance/rules/x.yaml", RULES)
                .0,
            "upload",
        ),
        (
            reader
                .post("/v1/compliance/rules/base.yaml/rollback", json!({}))
                .0,
            "rollback",
        ),
        (reader.post("/v1/compliance/audits", json!({})).0, "audit"),
        (
            reader
                .post(
                    "/v1/compliance/waivers",
                    json!({ "device": "r1", "rule": "x", "reason": "r", "expires_in": "1h" }),
                )
                .0,
            "waiver",
        ),
        (reader.delete("/v1/compliance/rules/base.yaml").0, "delete"),
    ] {
        assert_eq!(status, 403, "{what}");
    }

    // A recreated tenant inherits nothing.
    assert_eq!(server.admin().delete("/v1/tenants/acme").0, 204);
    let again = server.tenant("acme");
    assert_eq!(again.get("/v1/compliance/rules").1["files"], json!([]));
    assert_eq!(again.get("/v1/compliance/waivers").1["waivers"], json!([]));
    assert_eq!(again.get("/v1/compliance/audits").1["audits"], json!([]));
}

#[test]
fn audits_run_on_the_tenants_schedule() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let other = server.tenant("other");
    let (_, default) = acme.get("/v1/compliance/schedule");
    assert_eq!(
        (default["cron"].as_str(), default["timezone"].as_str()),
        (Some("0 2 * * *"), Some("UTC"))
    );
    let (status, err) = acme.put("/v1/compliance/schedule", json!({ "cron": "61 * * * *" }));
    assert_eq!(status, 400, "{err}");
    let (status, err) = acme.put(
        "/v1/compliance/schedule",
        json!({ "cron": "0 2 * * *", "timezone": "Mars/Olympus" }),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["detail"].as_str().unwrap().contains("Mars/Olympus"),
        "{err}"
    );

    assert_eq!(
        acme.post(
            "/v1/devices/import",
            json!([{ "name": "r1", "address": "192.0.2.1" }])
        )
        .0,
        200
    );
    let (status, _) = acme.send_text("PUT", "/v1/compliance/rules/base.yaml?activate=true", RULES);
    assert_eq!(status, 201);
    let (status, set) = acme.put(
        "/v1/compliance/schedule",
        json!({ "cron": "*/2 * * * * *", "timezone": "Europe/Amsterdam" }),
    );
    assert_eq!(status, 200, "{set}");
    assert!(set["next_ms"].as_i64().unwrap() > 0);
    acme.wait_for("a scheduled audit", Duration::from_secs(30), |api| {
        let (_, audits) = api.get("/v1/compliance/audits");
        audits["audits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["trigger"] == "schedule")
            .then_some(())
    });
    // Another tenant's schedule is its own (and it has no rules: nothing runs for it).
    assert_eq!(other.get("/v1/compliance/schedule").1["cron"], "0 2 * * *");
    assert_eq!(other.get("/v1/compliance/audits").1["audits"], json!([]));
}

const CORE1: &str = "hostname core1\n!\nsnmp-server group SNMPV3 v3 auth\n!\nline vty 0 4\n transport input ssh\n!\nend\n";
const SW1: &str = "hostname sw1\n!\nsnmp-server group SNMPV3 v3 priv\n!\ninterface GigabitEthernet0/1\n description to core1 GigabitEthernet1/0/1\n!\nline vty 0 4\n transport input ssh\n!\nend\n";
const SW2: &str = "hostname sw2\n!\nsnmp-server community public RO\nsnmp-server community s3cret RW\n!\ninterface GigabitEthernet0/1\n description uplink\n!\nline vty 0 4\n transport input telnet ssh\n!\nend\n";

/// The results a component gave, by device and rule, without their source.
fn results_of(report: &Value, source: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for d in report["devices"].as_array().unwrap() {
        for r in d["results"].as_array().unwrap() {
            if r["source"] == source {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("source");
                out.push((d["device"].as_str().unwrap().to_string(), r));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1["rule"].as_str()).cmp(&(&b.0, b.1["rule"].as_str())));
    out
}

/// The policies of `policies/` (Rust, and the Python twin of `snmp-v3-only`) over
/// configurations imported into the backups as from another tool: each one's findings and
/// remediation, the inventory's links read by a rule, the Python rule's findings equal to the
/// Rust one's, and a dry run of a stored, not activated version naming exactly the device
/// whose status it would change.
#[test]
fn policies_in_rust_and_python_audit_imported_configs_and_a_draft_version_dry_runs() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let other = server.tenant("other");
    let link = |neighbor_interface: Option<&str>| {
        json!([{ "interface": "GigabitEthernet0/1", "neighbor": "core1",
                 "neighbor_interface": neighbor_interface }])
    };
    let devices = json!([
        { "name": "core1", "address": "192.0.2.1", "platform": "ios" },
        { "name": "sw1", "address": "192.0.2.11", "platform": "ios",
          "links": link(Some("GigabitEthernet1/0/1")) },
        { "name": "sw2", "address": "192.0.2.12", "platform": "ios", "links": link(None) },
    ]);
    let (status, body) = acme.post("/v1/devices/import", devices);
    assert_eq!(status, 200, "{body}");
    for (name, text) in [("core1", CORE1), ("sw1", SW1), ("sw2", SW2)] {
        let path = format!("/v1/backups/{name}/text");
        let (status, saved) = acme.send_text("PUT", &path, text);
        assert_eq!((status, &saved["changed"]), (200, &json!(true)), "{saved}");
        let (_, again) = acme.send_text("PUT", &path, text);
        assert_eq!(
            again["changed"], false,
            "an unchanged config makes no commit"
        );
        assert_eq!(other.send_text("PUT", &path, text).0, 404);
    }
    assert_eq!(
        acme.send_text("PUT", "/v1/backups/nosuch/text", SW1).0,
        404,
        "only inventory devices have backups"
    );

    let policy = |dir: &str| {
        std::fs::read_to_string(format!(
            "{}/../policies/{dir}/sotp.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    acme.push(&policy("vty-ssh-only"), VTY_SSH_ONLY);
    acme.push(&policy("snmp-v3-only"), SNMP_V3_ONLY);
    acme.push(&policy("interface-descriptions"), INTERFACE_DESCRIPTIONS);
    let report = audit(&acme);

    // vty-ssh-only: sw2's vty takes telnet too.
    let vty = result(&report, "sw2", "vty-ssh-only");
    assert_eq!(vty["status"], "extra", "{vty}");
    let remediation = strings(&vty["remediation"]);
    assert!(
        remediation.contains(&" no transport input telnet ssh".to_string())
            && remediation.contains(&" transport input ssh".to_string()),
        "{vty}"
    );
    assert_eq!(
        result(&report, "sw1", "vty-ssh-only")["status"],
        "compliant"
    );
    // snmp-v3-only: communities are extra, shown masked, removed by name.
    let community = result(&report, "sw2", "snmp-no-community");
    assert_eq!(community["status"], "extra", "{community}");
    assert_eq!(
        strings(&community["extra"]),
        [
            "snmp-server community ***** RO",
            "snmp-server community ***** RW"
        ]
    );
    let shown = format!("{} {}", community["extra"], community["message"]);
    assert!(
        !shown.contains("s3cret") && !shown.contains("public"),
        "{community}"
    );
    assert_eq!(
        strings(&community["remediation"]),
        [
            "no snmp-server community public RO",
            "no snmp-server community s3cret RW"
        ]
    );
    assert_eq!(
        result(&report, "sw2", "snmp-v3-required")["status"],
        "missing"
    );
    assert_eq!(
        result(&report, "core1", "snmp-v3-required")["status"],
        "missing"
    );
    assert_eq!(
        result(&report, "sw1", "snmp-v3-required")["status"],
        "compliant"
    );
    // interface-descriptions: the inventory's link says core1 is behind Gi0/1.
    assert_eq!(
        result(&report, "sw1", "interface-descriptions")["status"],
        "compliant"
    );
    let desc = result(&report, "sw2", "interface-descriptions");
    assert_eq!(desc["status"], "missing", "{desc}");
    assert!(
        strings(&desc["remediation"]).contains(&" description to core1".to_string()),
        "{desc}"
    );
    assert_eq!(device(&report, "sw1")["compliant"], true, "{report}");
    assert_eq!(device(&report, "core1")["compliant"], false);

    // A draft version accepting SNMPv3 with authentication only, stored but not activated:
    // the dry run names core1, and only core1.
    let draft = policy("snmp-v3-only")
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
        .replace("min_level = \"priv\"", "min_level = \"auth\"");
    let (status, up) = acme.upload(&draft, &std::fs::read(SNMP_V3_ONLY).unwrap(), false);
    assert_eq!(status, 201, "{up}");
    let path = "/v1/compliance/components/snmp-v3-only/dry-run?version=2";
    let (status, dry) = acme.post(path, json!({}));
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        dry["devices_changed"],
        json!([{ "device": "core1", "compliant_before": false, "compliant_after": true,
                 "percent_before": device(&report, "core1")["percent"], "percent_after": 100.0 }]),
        "{dry}"
    );
    // Findings: core1's goes away; sw2's (it has no SNMPv3 at all) now asks for `auth`.
    let pairs = |key: &str| -> Vec<(String, Vec<String>)> {
        dry[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["device"].as_str().unwrap().to_string(),
                    strings(&f["missing"]),
                )
            })
            .collect()
    };
    let group = |level: &str| vec![format!("snmp-server group SNMPV3 v3 {level}")];
    assert_eq!(
        pairs("findings_gone"),
        [
            ("core1".to_string(), group("priv")),
            ("sw2".to_string(), group("priv"))
        ],
        "{dry}"
    );
    assert_eq!(
        pairs("findings_new"),
        [("sw2".to_string(), group("auth"))],
        "{dry}"
    );
    assert_eq!(
        acme.component("snmp-v3-only")["active_version"],
        1,
        "a dry run activates nothing"
    );
    assert_eq!(other.post(path, json!({})).0, 404);
    let (status, err) = acme.post("/v1/compliance/components/snmp-v3-only/dry-run", json!({}));
    assert_eq!(status, 400, "{err}");

    // The same rule in Python, in the same sandbox, says exactly what the Rust one says.
    acme.push(&policy("snmp-v3-only-py"), SNMP_V3_ONLY_PY);
    let report = audit(&acme);
    let rust = results_of(&report, "component:snmp-v3-only@1");
    let python = results_of(&report, "component:snmp-v3-only-py@1");
    assert_eq!(rust.len(), 6, "{report}");
    assert_eq!(python, rust);
}
