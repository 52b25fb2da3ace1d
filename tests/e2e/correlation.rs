//! Correlation through the API with the default policy (`policies/topology-correlation`):
//! a storm folded into one incident rooted at the device that is down, in any order; a
//! redundancy group with one parent up suppressing nothing; the root's recovery closing the
//! incident and its children decided again; a hot swap keeping open incidents; a failing
//! policy failing open; isolation; and end to end with real peers: a lab whose core's links
//! go down, Prometheus alerting on its targets, Alertmanager delivering the storm to SOTP's
//! webhook and receiving SOTP's one incident back.

use serde_json::{Value, json};
use sotp_tests::alertmanager::Alertmanager;
use sotp_tests::guests::{EVIL_POLICY, TOPOLOGY_CORRELATION};
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server};
use sotp_tests::prometheus::{Job, Prometheus, TARGET_DOWN_RULES, Target};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const ZERO: &str = "0001-01-01T00:00:00Z";

/// core1 → dist1, dist2; acc1..acc3 behind dist1; acc4 needs dist1 or dist2.
fn topology() -> Value {
    json!([
        { "name": "core1", "address": "10.77.255.1" },
        { "name": "dist1", "address": "10.77.255.2", "parents": ["core1"] },
        { "name": "dist2", "address": "10.77.255.3", "parents": ["core1"] },
        { "name": "acc1", "address": "10.77.255.11", "parents": ["dist1"] },
        { "name": "acc2", "address": "10.77.255.12", "parents": ["dist1"] },
        { "name": "acc3", "address": "10.77.255.13", "parents": ["dist1"] },
        { "name": "acc4", "address": "10.77.255.14", "redundancy_groups": [["dist1", "dist2"]] },
    ])
}

fn manifest(version: &str, hold_down: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../policies/topology-correlation/sotp.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
    .replace(
        "hold_down = \"30s\"",
        &format!("hold_down = \"{hold_down}\""),
    )
}

fn down(device: &str, status: &str, starts: &str) -> Value {
    let ends = if status == "resolved" {
        "2026-12-01T11:00:00Z"
    } else {
        ZERO
    };
    json!({
        "status": status,
        "labels": { "alertname": "InstanceDown", "instance": format!("{device}:9100"), "job": "node" },
        "startsAt": starts, "endsAt": ends,
    })
}

fn hook(alerts: Vec<Value>) -> Value {
    json!({ "version": "4", "status": "firing", "receiver": "sotp", "truncatedAlerts": 0,
            "groupKey": "{}", "alerts": alerts })
}

/// A tenant with the topology and the default policy (hold-down `hold`), and an ingest token.
fn tenant(server: &Server, id: &str, hold: &str) -> (Api, Api) {
    let api = server.tenant(id);
    assert_eq!(api.post("/v1/devices/import", topology()).0, 200);
    api.push(&manifest("1.0.0", hold), TOPOLOGY_CORRELATION);
    let push = api.scoped("am", &["ingest"]);
    (api, push)
}

fn post(push: &Api, alerts: Vec<Value>) -> Value {
    let (status, out) = push.post("/v1/alerts/webhook", hook(alerts));
    assert_eq!(status, 200, "{out}");
    out
}

fn incidents(api: &Api, status: &str) -> Vec<Value> {
    let (code, body) = api.get(&format!("/v1/incidents?status={status}"));
    assert_eq!(code, 200, "{body}");
    body["incidents"].as_array().unwrap().clone()
}

/// Wait until the open incidents are exactly `(root, children)`.
fn wait_incidents(api: &Api, want: &[(&str, &[&str])]) -> Vec<Value> {
    let mut want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(r, c)| (r.to_string(), c.iter().map(|s| s.to_string()).collect()))
        .collect();
    want.sort();
    let mut last = Vec::new();
    for _ in 0..100 {
        last = incidents(api, "open");
        let mut got: Vec<(String, Vec<String>)> = last
            .iter()
            .map(|i| {
                let children = i["children"].as_array().unwrap().iter();
                (
                    i["root"].as_str().unwrap().to_string(),
                    children.map(|c| c.as_str().unwrap().to_string()).collect(),
                )
            })
            .collect();
        got.sort();
        if got == want {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("open incidents never became {want:?}: {last:?}");
}

#[test]
fn a_storm_in_any_order_is_one_incident_rooted_where_the_outage_is() {
    let server = Server::start(BIN);
    let storm = ["acc1", "acc2", "acc3", "dist1", "core1", "dist2", "acc4"];
    let t = "2026-12-01T10:00:00Z";
    let orders: [Vec<&str>; 3] = [
        storm.to_vec(),                        // children first, the root last-but-some
        storm.iter().rev().copied().collect(), // root first
        vec!["acc2", "core1", "acc1", "acc4", "dist2", "acc3", "dist1"],
    ];
    for (i, order) in orders.iter().enumerate() {
        let (api, push) = tenant(&server, &format!("t{i}"), "1s");
        // One by one, as separate notifications, with a duplicate redelivery in the middle.
        for (n, device) in order.iter().enumerate() {
            post(&push, vec![down(device, "firing", t)]);
            if n == 2 {
                post(&push, vec![down(device, "firing", t)]);
            }
        }
        let open = wait_incidents(
            &api,
            &[("core1", &["acc1", "acc2", "acc3", "acc4", "dist1", "dist2"])],
        );
        assert_eq!(
            open[0]["title"], "core1 down (6 child devices affected)",
            "order {i}"
        );
        let id = open[0]["id"].as_i64().unwrap();
        let (_, detail) = api.get(&format!("/v1/incidents/{id}"));
        let acc1 = detail["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["device"] == "acc1")
            .unwrap()
            .clone();
        assert_eq!(acc1["role"], "child");
        assert!(
            acc1["reason"]
                .as_str()
                .unwrap()
                .contains("goes through core1"),
            "{acc1}"
        );
        let (_, list) = api.get("/v1/alerts?device=acc1");
        assert_eq!(list["alerts"][0]["decision"], "suppressed", "{list}");
    }
}

#[test]
fn a_redundancy_group_with_a_member_up_suppresses_nothing_and_recovery_re_decides() {
    let server = Server::start(BIN);
    let (api, push) = tenant(&server, "acme", "1s");
    let t = "2026-12-01T10:00:00Z";
    // dist1 is down; acc4 still reaches core1 through dist2: its alert is its own incident.
    post(
        &push,
        vec![
            down("dist1", "firing", t),
            down("acc1", "firing", t),
            down("acc4", "firing", t),
        ],
    );
    wait_incidents(&api, &[("dist1", &["acc1"]), ("acc4", &[])]);

    // Now core1 goes down too: everything folds under it, transitively.
    post(&push, vec![down("core1", "firing", t)]);
    post(&push, vec![down("acc2", "firing", t)]);
    let open = incidents(&api, "open");
    let core = open
        .iter()
        .find(|i| i["root"] == "core1")
        .expect("core1's incident");
    assert!(
        core["children"]
            .as_array()
            .unwrap()
            .contains(&json!("acc2")),
        "{core}"
    );

    // core1 recovers: its incident closes; what is still down behind it is decided again —
    // dist1's outage is its own incident, acc1 and acc2 under it — not released as a flood.
    let out = post(&push, vec![down("core1", "resolved", t)]);
    assert_eq!(
        out["correlated"]["closed"].as_array().unwrap().len(),
        1,
        "{out}"
    );
    let open = incidents(&api, "open");
    let dist1 = open
        .iter()
        .find(|i| i["root"] == "dist1")
        .expect("dist1's incident");
    let children: Vec<&str> = dist1["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        children.contains(&"acc1") && children.contains(&"acc2"),
        "{dist1}"
    );
    let (_, resolved) = api.get("/v1/incidents?status=resolved");
    let closed = &resolved["incidents"][0];
    assert_eq!(closed["root"], "core1");
    let (_, detail) = api.get(&format!("/v1/incidents/{}", closed["id"]));
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"root resolved") && kinds.contains(&"closed"),
        "{kinds:?}"
    );

    // A child's resolution passes and is recorded in its incident.
    post(&push, vec![down("acc1", "resolved", t)]);
    let (_, alerts) = api.get("/v1/alerts?device=acc1");
    assert_eq!(alerts["alerts"][0]["status"], "resolved");
    assert_eq!(alerts["alerts"][0]["decision"], "passed");
}

#[test]
fn a_hot_swap_keeps_open_incidents_and_a_failing_policy_fails_open() {
    let server = Server::start(BIN);
    let (api, push) = tenant(&server, "acme", "1s");
    let t = "2026-12-01T10:00:00Z";
    post(
        &push,
        vec![down("core1", "firing", t), down("dist1", "firing", t)],
    );
    wait_incidents(&api, &[("core1", &["dist1"])]);
    // Hot swap mid-storm (a new version with another hold-down): the incident stays open and
    // the next alerts fold into it.
    api.push(&manifest("1.1.0", "2s"), TOPOLOGY_CORRELATION);
    post(&push, vec![down("acc1", "firing", t)]);
    wait_incidents(&api, &[("core1", &["acc1", "dist1"])]);

    // A trapping, looping or erring policy: the batch passes unfolded, nothing is lost.
    let evil =
        "name = \"evil\"\nversion = \"1\"\nworld = \"correlation-policy\"\n[limits]\ncpu_ms = 50\n";
    let other = server.tenant("other");
    assert_eq!(other.post("/v1/devices/import", topology()).0, 200);
    other.push(evil, EVIL_POLICY);
    let push2 = other.scoped("am", &["ingest"]);
    for (i, mode) in ["panic", "loop", "error"].iter().enumerate() {
        let mut a = down("acc1", "firing", t);
        a["labels"]["evil"] = json!(mode);
        a["labels"]["n"] = json!(i.to_string());
        let out = post(&push2, vec![a]);
        assert!(
            out["correlated"]["policy_error"].is_string(),
            "{mode}: {out}"
        );
        assert_eq!(out["correlated"]["passed"], 1, "{mode}: {out}");
    }
    let (_, alerts) = other.get("/v1/alerts");
    assert_eq!(
        alerts["alerts"].as_array().unwrap().len(),
        3,
        "no alert lost"
    );
    let (_, comp) = other.get("/v1/components/evil");
    assert!(
        comp["last_error"].is_object() || comp["last_error"].is_string(),
        "{comp}"
    );
    // The policy still works on other batches.
    post(&push2, vec![down("core1", "firing", t)]);
    assert_eq!(incidents(&other, "open").len(), 1);
    assert!(
        server
            .metrics_text()
            .contains("sotp_correlation_policy_failures_total 3")
    );

    // Isolation: neither tenant sees or touches the other's incidents.
    let mine = incidents(&api, "open")[0]["id"].as_i64().unwrap();
    let theirs = incidents(&other, "open")[0]["id"].as_i64().unwrap();
    assert_eq!(api.get(&format!("/v1/incidents/{}", theirs + 100)).0, 404);
    assert_eq!(
        other.get("/v1/incidents?status=open").1["incidents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let read = api.scoped("viewer", &["read"]);
    assert_eq!(
        read.post(&format!("/v1/incidents/{mine}/acknowledge"), json!({}))
            .0,
        403
    );
    let (status, acked) = api.post(&format!("/v1/incidents/{mine}/acknowledge"), json!({}));
    assert_eq!(
        (status, &acked["acknowledged"]),
        (200, &json!(true)),
        "{acked}"
    );
    let (status, _) = api.post("/v1/incidents/999/resolve", json!({}));
    assert_eq!(status, 404);
}

#[test]
fn a_parent_up_with_its_link_down_is_the_root_cause() {
    let server = Server::start(BIN);
    let api = server.tenant("acme");
    let devices = json!([
        { "name": "core1", "address": "10.77.255.1",
          "links": [{ "interface": "eth1", "neighbor": "acc1" }, { "interface": "eth2", "neighbor": "acc2" }] },
        { "name": "acc1", "address": "10.77.255.11", "parents": ["core1"] },
        { "name": "acc2", "address": "10.77.255.12", "parents": ["core1"] },
        { "name": "host1", "address": "10.77.1.14", "parents": ["acc1"] },
    ]);
    assert_eq!(api.post("/v1/devices/import", devices).0, 200);
    api.push(&manifest("1.0.0", "1s"), TOPOLOGY_CORRELATION);
    let push = api.scoped("am", &["ingest"]);
    let t = "2026-12-01T10:00:00Z";
    // node_exporter names the interface in `device`; the alert's device is core1 by `instance`.
    let link = json!({ "status": "firing", "startsAt": t, "endsAt": ZERO,
        "labels": { "alertname": "LinkDown", "instance": "10.77.255.1:9100", "device": "eth1" } });
    post(
        &push,
        vec![down("host1", "firing", t), down("acc1", "firing", t)],
    );
    post(&push, vec![link]);
    let open = wait_incidents(&api, &[("core1", &["acc1", "host1"])]);
    assert_eq!(
        open[0]["title"],
        "core1: eth1 down (2 child devices affected)"
    );
    // acc2, behind core1's eth2 which is up, is an outage of its own.
    post(&push, vec![down("acc2", "firing", t)]);
    wait_incidents(&api, &[("acc2", &[]), ("core1", &["acc1", "host1"])]);
}

/// LinkDown per interface of every node (node_exporter's `device` label collides with the
/// target's `device`, so Prometheus names the interface `exported_device`; the rule copies it
/// to `interface`).
const LINK_DOWN_RULES: &str = r#"groups:
  - name: links
    rules:
      - alert: LinkDown
        expr: label_replace(node_network_up{exported_device=~"eth[1-9]"} == 0, "interface", "$1", "exported_device", "(.*)")
        for: 3s
        labels:
          severity: warning
"#;

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_real_storm_from_alertmanager_is_one_incident_and_goes_back_to_alertmanager() {
    let topology = sotp_labs::Topology::load(&sotp_labs::topology_path("star")).unwrap();
    let mut log = |m: &str| eprintln!("lab 26: {m}");
    let lab = sotp_labs::Lab::up_fresh(&topology, 26, &mut log).expect("lab up (needs root)");
    lab.check_until(Duration::from_secs(60), &mut log)
        .expect("lab healthy");

    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let api = server.tenant("acme");
    let address = |node: &str| lab.plan.node(node).unwrap().management_address.to_string();
    let mut devices = vec![json!({ "name": "core1", "address": address("core1"), "links": [] })];
    for i in 1..=3 {
        let (acc, host) = (format!("acc{i}"), format!("host{i}"));
        let iface = lab.interface_toward("core1", &acc).unwrap();
        devices[0]["links"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "interface": iface, "neighbor": acc }));
        devices.push(json!({ "name": acc, "address": address(&acc), "parents": ["core1"] }));
        devices.push(json!({ "name": host, "address": address(&host), "parents": [acc] }));
    }
    assert_eq!(api.post("/v1/devices/import", json!(devices)).0, 200);
    api.push(&manifest("1.0.0", "5s"), TOPOLOGY_CORRELATION);
    let ingest = api.scoped("alertmanager", &["ingest"]);

    // Alertmanager delivers everything to SOTP, except SOTP's own incidents (a blackhole
    // route: they are for people, and must not loop back).
    let webhook = format!("{}/v1/alerts/webhook", server.base);
    let am = Alertmanager::builder(&webhook, &ingest.token)
        .routes("- matchers: ['origin=\"sotp\"']\n  receiver: blackhole\n")
        .start();
    let (status, body) = api.put(
        "/v1/alerts/settings",
        json!({ "alertmanager": { "url": am.base(), "silence_children": true } }),
    );
    assert_eq!(status, 200, "{body}");
    let prom = Prometheus::builder()
        .job(Job::new("lab", Target::lab(&lab.plan)))
        .rules(TARGET_DOWN_RULES)
        .rules(LINK_DOWN_RULES)
        .alertmanager(&am.address())
        .interval("1s")
        .start();
    prom.wait_targets_up("lab", 7, Duration::from_secs(60));

    // The core's links to the access routers go down: six nodes stop answering.
    let links: Vec<String> = (1..=3)
        .map(|i| lab.interface_toward("core1", &format!("acc{i}")).unwrap())
        .collect();
    for l in &links {
        lab.link_down("core1", l).unwrap();
    }
    let children = ["acc1", "acc2", "acc3", "host1", "host2", "host3"];
    let deadline = Instant::now() + Duration::from_secs(90);
    let incident = loop {
        let open = incidents(&api, "open");
        if open.len() == 1 && open[0]["root"] == "core1" && open[0]["children"] == json!(children) {
            break open[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no single incident at core1:\nincidents: {}\nalerts: {}",
            api.get("/v1/incidents").1,
            api.get("/v1/alerts").1
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        incident["title"]
            .as_str()
            .unwrap()
            .ends_with("down (6 child devices affected)"),
        "{incident}"
    );
    // The super-alert is in Alertmanager's API.
    let pushed = wait(
        "SOTP's incident in Alertmanager",
        Duration::from_secs(30),
        || {
            let found = am.alerts_matching(&["alertname=\"SotpIncident\""]);
            (!found.is_empty()).then_some(found)
        },
    );
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0]["labels"]["root"], "core1");
    assert_eq!(pushed[0]["annotations"]["suppressed_devices"], "6");
    // The children's alerts are silenced there by SOTP while the incident is open (its
    // LinkDown alerts, the root's, are not).
    let muted = wait(
        "the children's alerts silenced in Alertmanager",
        Duration::from_secs(30),
        || {
            let down = am.alerts_matching(&["alertname=\"TargetDown\""]);
            let all = down.len() >= children.len()
                && down.iter().all(|a| {
                    a["status"]["silencedBy"]
                        .as_array()
                        .is_some_and(|s| !s.is_empty())
                });
            all.then_some(down)
        },
    );
    let ours = sotp_silences(&am);
    assert!(!ours.is_empty(), "{:?}", am.silences());
    for a in &muted {
        let by = a["status"]["silencedBy"][0].as_str().unwrap();
        assert!(
            ours.iter().any(|s| s["id"] == by),
            "{a} silenced by {by}, not SOTP's"
        );
    }
    let links_down = am.alerts_matching(&["alertname=\"LinkDown\""]);
    assert!(!links_down.is_empty());
    assert!(
        links_down.iter().all(|a| a["status"]["silencedBy"]
            .as_array()
            .is_none_or(Vec::is_empty)),
        "the root's alerts stay loud: {links_down:?}"
    );
    let (_, outputs) = api.get("/v1/alerts/outputs");
    assert!(outputs["silences"]["last_error"].is_null(), "{outputs}");
    let (_, other) = server.tenant("globex").get("/v1/alerts/outputs");
    assert!(
        other["silences"]["last_ok_ms"].is_null(),
        "another tenant sees none of it: {other}"
    );

    // The links come back: the incident resolves and every child's resolution is recorded.
    for l in &links {
        lab.link_up("core1", l).unwrap();
    }
    let id = incident["id"].as_i64().unwrap();
    let detail = wait(
        "the incident resolved with every child",
        Duration::from_secs(120),
        || {
            let (_, d) = api.get(&format!("/v1/incidents/{id}"));
            let all_resolved = d["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .filter(|x| x["role"] == "child")
                    .all(|x| !x["resolved_ms"].is_null())
            });
            (d["status"] == "resolved" && all_resolved).then_some(d)
        },
    );
    let resolved_children = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "child resolved")
        .count();
    assert!(resolved_children >= 6, "{detail}");
    wait("no incident left open", Duration::from_secs(60), || {
        incidents(&api, "open").is_empty().then_some(())
    });
    wait(
        "the super-alert resolved in Alertmanager",
        Duration::from_secs(90),
        || {
            am.alerts_matching(&["alertname=\"SotpIncident\""])
                .is_empty()
                .then_some(())
        },
    );
    // The silences ended with the incident.
    wait("SOTP's silences expired", Duration::from_secs(30), || {
        sotp_silences(&am).is_empty().then_some(())
    });
    drop(prom);
}

/// SOTP's active silences in `am`.
fn sotp_silences(am: &Alertmanager) -> Vec<Value> {
    am.silences()
        .into_iter()
        .filter(|s| s["createdBy"] == "sotp" && s["status"]["state"] == "active")
        .collect()
}

#[test]
fn a_replay_shows_how_a_draft_policy_would_have_decided_a_recorded_storm() {
    let server = Server::start(BIN);
    let (api, push) = tenant(&server, "acme", "1s");
    let t = "2026-12-01T10:00:00Z";
    for device in ["acc1", "dist1", "core1", "acc2"] {
        post(&push, vec![down(device, "firing", t)]);
    }
    wait_incidents(&api, &[("core1", &["acc1", "acc2", "dist1"])]);

    // A draft that folds only `DeviceDown` alerts: stored, not activated, replayed.
    let draft = manifest("2.0.0", "1s").replace(
        "alertnames = [\"InstanceDown\", \"DeviceDown\", \"HostDown\", \"NodeDown\", \"TargetDown\"]",
        "alertnames = [\"DeviceDown\"]",
    );
    let (status, up) = api.upload(&draft, &std::fs::read(TOPOLOGY_CORRELATION).unwrap(), false);
    assert_eq!(status, 201, "{up}");
    let path = "/v1/incidents/replay?component=topology-correlation&version=2&since=1h";
    let (status, replay) = api.post(path, json!({}));
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["intakes"], 4, "{replay}");
    let active = &replay["active"]["incidents"];
    assert_eq!(active.as_array().unwrap().len(), 1, "{replay}");
    assert_eq!(active[0]["root"], "core1");
    assert_eq!(active[0]["children"], json!(["acc1", "acc2", "dist1"]));
    assert_eq!(replay["draft"]["incidents"], json!([]), "{replay}");
    let mut changed: Vec<(String, Value, Value)> = replay["alerts_changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["device"].as_str().unwrap().to_string(),
                a["active"]["decision"].clone(),
                a["draft"]["decision"].clone(),
            )
        })
        .collect();
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changed,
        [
            ("acc1".to_string(), json!("suppressed"), json!("passed")),
            ("acc2".to_string(), json!("suppressed"), json!("passed")),
            ("core1".to_string(), json!("incident"), json!("passed")),
            ("dist1".to_string(), json!("suppressed"), json!("passed")),
        ]
    );
    // The replay changed nothing real: the incident is as it was, version 1 still active.
    wait_incidents(&api, &[("core1", &["acc1", "acc2", "dist1"])]);
    assert_eq!(api.component("topology-correlation")["active_version"], 1);
    // Another tenant cannot replay it; a read token cannot replay.
    let other = server.tenant("other");
    assert_eq!(other.post(path, json!({})).0, 404);
    let read = api.scoped("viewer", &["read"]);
    assert_eq!(read.post(path, json!({})).0, 403);
    let (status, err) = api.post("/v1/incidents/replay", json!({}));
    assert_eq!(status, 400, "{err}");
}

#[test]
fn incidents_go_to_the_tenants_webhook_through_the_egress_policy() {
    let hook_receiver = sotp_tests::http_recorder::HttpRecorder::start(200);
    let url = format!("http://127.0.0.1:{}/sotp-incidents", hook_receiver.port);
    // The default egress policy refuses loopback: the push fails, and says why.
    let server = Server::start(BIN);
    let (api, push) = tenant(&server, "acme", "1s");
    let (status, body) = api.put("/v1/alerts/settings", json!({ "webhook": { "url": url } }));
    assert_eq!(status, 200, "{body}");
    post(&push, vec![down("core1", "firing", "2026-12-01T10:00:00Z")]);
    let refused = wait("the refused push", Duration::from_secs(10), || {
        let (_, out) = api.get("/v1/alerts/outputs");
        out["webhook"]["last_error"].as_str().map(String::from)
    });
    assert!(refused.contains("not reachable from SOTP"), "{refused}");
    assert!(hook_receiver.requests().is_empty());

    // An operator who allows it: the incidents arrive.
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let (api, push) = tenant(&server, "acme", "1s");
    assert_eq!(
        api.put("/v1/alerts/settings", json!({ "webhook": { "url": url } }))
            .0,
        200
    );
    post(
        &push,
        vec![
            down("core1", "firing", "2026-12-01T10:00:00Z"),
            down("dist1", "firing", "2026-12-01T10:00:00Z"),
        ],
    );
    let body = wait("the webhook call", Duration::from_secs(10), || {
        hook_receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/sotp-incidents")
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .find(|b| b["incidents"][0]["children"] == json!(["dist1"]))
    });
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["incidents"][0]["root"], "core1");
    // Recorded once SOTP has read the receiver's answer (just after the receiver has the body).
    wait("the push recorded as ok", Duration::from_secs(10), || {
        let (_, out) = api.get("/v1/alerts/outputs");
        out["webhook"]["last_ok_ms"].is_i64().then_some(())
    });
    let (status, err) = api.put(
        "/v1/alerts/settings",
        json!({ "webhook": { "url": "ftp://example/x" } }),
    );
    assert_eq!(status, 400, "{err}");
}
