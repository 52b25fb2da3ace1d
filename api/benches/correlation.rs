//! Alert-storm benchmark: a core router's outage over a 754-node topology (1 core, 13
//! distribution, 740 access devices — the size of the Internet Topology Zoo's Kdl network;
//! generated here, not shipped, with the same node count and a tree shape), as 10,000
//! `TargetDown` alerts (13 scrape jobs per device, 10,000 in all) posted as Alertmanager
//! webhook batches of 100 to a real `sotp` with the default policy.
//!
//! Prints, in one run:
//! - SOTP's intake: webhook posts/s and alerts/s (each post durable and correlated before the
//!   answer) from one sender and from four concurrent ones, the cost per alert of intake +
//!   policy + incident updates, and the policy's share of it (`decide` with its topology
//!   reads, from `/metrics`);
//! - how long after the last alert the one incident is complete (the core's alert first, so
//!   no hold-down is involved), and how many alerts SOTP emits (incidents);
//! - a real Alertmanager 0.25 with inhibit rules on the same storm (`TargetDown` of the core
//!   inhibits every other `TargetDown` with the same `site`: the most its equal-labels
//!   inhibition can say here), receiving the same batches on its API: how long it takes and
//!   how many alerts its webhook receives.
//!
//! `cargo bench -p sotp --bench correlation`

use serde_json::{Value, json};
use sotp_tests::alertmanager::Alertmanager;
use sotp_tests::guests::TOPOLOGY_CORRELATION;
use sotp_tests::harness::{Api, Server};
use sotp_tests::http_recorder::HttpRecorder;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const NODES: usize = 754;
const DISTRIBUTION: usize = 13;
const ALERTS: usize = 10_000;
const BATCH: usize = 100;

fn node(i: usize) -> String {
    match i {
        0 => "core1".into(),
        i if i <= DISTRIBUTION => format!("dist{i}"),
        i => format!("acc{i}"),
    }
}

fn topology() -> Value {
    let devices: Vec<Value> = (0..NODES)
        .map(|i| {
            let parents: Vec<String> = match i {
                0 => vec![],
                i if i <= DISTRIBUTION => vec![node(0)],
                i => vec![node(1 + i % DISTRIBUTION)],
            };
            json!({ "name": node(i), "address": format!("10.{}.{}.{}", 80 + i / 65536, i / 256 % 256, i % 256),
                    "parents": parents, "site": "lab", "role": if i == 0 { "core" } else { "edge" } })
        })
        .collect();
    json!(devices)
}

/// Alert `k` of the storm: device `k % NODES`, job `k / NODES`; the core's alerts first.
fn alert(k: usize) -> Value {
    let i = k % NODES;
    json!({
        "status": "firing",
        "labels": { "alertname": "TargetDown", "device": node(i), "job": format!("job{}", k / NODES),
                    "instance": format!("{}:{}", node(i), 9100 + k / NODES), "site": "lab",
                    "role": if i == 0 { "core" } else { "edge" } },
        "annotations": { "summary": "target down" },
        "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
    })
}

fn storm() -> Vec<Value> {
    // The core's alerts first (then no hold-down is involved), the rest in device order.
    let mut order: Vec<usize> = (0..ALERTS).filter(|k| k % NODES == 0).collect();
    order.extend((0..ALERTS).filter(|k| k % NODES != 0));
    order.into_iter().map(alert).collect()
}

/// A fresh `sotp` with the topology and the default policy: the server, the tenant's API and
/// an ingest-only token's.
fn seeded_server() -> (Server, Api, Api) {
    let server = Server::start(BIN);
    let api = server.tenant("bench");
    assert_eq!(api.post("/v1/devices/import", topology()).0, 200);
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/topology-correlation/sotp.toml"
    ))
    .unwrap();
    api.push(&manifest, TOPOLOGY_CORRELATION);
    let push = api.scoped("am", &["ingest"]);
    (server, api, push)
}

fn sotp_run(storm: &[Value]) {
    let (server, api, push) = seeded_server();
    let bodies: Vec<Value> = storm
        .chunks(BATCH)
        .enumerate()
        .map(|(n, chunk)| {
            json!({ "version": "4", "status": "firing", "receiver": "sotp",
                    "groupKey": format!("{{}}:{n}"), "truncatedAlerts": 0, "alerts": chunk })
        })
        .collect();
    let started = Instant::now();
    for body in &bodies {
        let (status, out) = push.post("/v1/alerts/webhook", body.clone());
        assert_eq!(status, 200, "{out}");
    }
    let posting = started.elapsed();
    let last = Instant::now();
    let complete = wait_one_incident(&api);
    let after_last = last.elapsed();
    let secs = posting.as_secs_f64();
    let posts = bodies.len();
    println!("SOTP (webhook intake, default policy, {NODES}-node topology)");
    println!(
        "  {posts} posts of {BATCH} alerts in {secs:.2} s, one sender: {:.0} posts/s, {:.0} alerts/s, {:.0} µs per alert (intake, policy, incidents, durable)",
        posts as f64 / secs,
        storm.len() as f64 / secs,
        secs * 1e6 / storm.len() as f64
    );
    let metrics = server.metrics_text();
    let offered = metric(&metrics, "sotp_correlation_policy_alerts_total");
    let spent = metric(&metrics, "sotp_correlation_policy_seconds_total");
    println!(
        "  the policy's share: {:.0} µs per alert offered ({offered:.0} alerts, {spent:.2} s in decide, topology reads included)",
        spent * 1e6 / offered.max(1.0)
    );
    println!(
        "  one incident complete {:.3} s after the last alert: \"{}\"",
        after_last.as_secs_f64(),
        complete["title"].as_str().unwrap_or_default()
    );
    println!(
        "  alerts emitted: 1 (the incident; {} suppressed devices)",
        complete["children"].as_array().map_or(0, Vec::len)
    );
    concurrent_run(&bodies);
}

/// The same storm from `SENDERS` concurrent senders (Alertmanager delivers groups in
/// parallel) into a fresh server: what the intake takes when posts overlap.
fn concurrent_run(bodies: &[Value]) {
    const SENDERS: usize = 4;
    let (_server, api, push) = seeded_server();
    let started = Instant::now();
    std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let push = &push;
            s.spawn(move || {
                for body in bodies.iter().skip(sender).step_by(SENDERS) {
                    let (status, out) = push.post("/v1/alerts/webhook", body.clone());
                    assert_eq!(status, 200, "{out}");
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let complete = wait_one_incident(&api);
    println!(
        "  {} posts from {SENDERS} concurrent senders in {secs:.2} s: {:.0} posts/s, {:.0} alerts/s; then \"{}\"",
        bodies.len(),
        bodies.len() as f64 / secs,
        (bodies.len() * BATCH) as f64 / secs,
        complete["title"].as_str().unwrap_or_default()
    );
}

/// A counter's value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn wait_one_incident(api: &Api) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = api.get("/v1/incidents?status=open");
        let open = body["incidents"].as_array().cloned().unwrap_or_default();
        if open.len() == 1 && open[0]["children"].as_array().map_or(0, Vec::len) == NODES - 1 {
            return open[0].clone();
        }
        assert!(Instant::now() < deadline, "no single incident: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alertmanager_run(storm: &[Value]) {
    let receiver = HttpRecorder::start(200);
    let am = Alertmanager::builder(&format!("http://127.0.0.1:{}/", receiver.port), "")
        .group_by(&["alertname", "site"])
        .group_wait("1s")
        .group_interval("1s")
        .inhibit_rules(
            "- source_matchers: ['alertname=\"TargetDown\"', 'role=\"core\"']\n  target_matchers: ['alertname=\"TargetDown\"', 'role=\"edge\"']\n  equal: [site]\n",
        )
        .start();
    let started = Instant::now();
    let mut posts = 0;
    for chunk in storm.chunks(BATCH) {
        am.post_alerts(&json!(chunk))
            .expect("posting to Alertmanager");
        posts += 1;
    }
    let posting = started.elapsed();
    // Until its webhook has been quiet for 3 s (group_wait and group_interval are 1 s).
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    let mut first_delivery = None;
    while quiet_since.elapsed() < Duration::from_secs(3) {
        let n = receiver.requests().len();
        if n != seen {
            seen = n;
            quiet_since = Instant::now();
            first_delivery.get_or_insert(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let delivered: usize = receiver
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .map(|b| b["alerts"].as_array().map_or(0, Vec::len))
        .sum();
    let secs = posting.as_secs_f64();
    println!(
        "Alertmanager 0.25 with an inhibit rule (role=core inhibits role=edge, equal: [site])"
    );
    println!(
        "  {posts} posts of {BATCH} alerts to /api/v2/alerts in {secs:.2} s: {:.0} posts/s, {:.0} alerts/s",
        posts as f64 / secs,
        storm.len() as f64 / secs
    );
    println!(
        "  first notification {:.2} s after the first post; {} webhook calls, {delivered} alerts delivered",
        first_delivery.map_or(f64::NAN, |d| d.as_secs_f64()),
        receiver.requests().len()
    );
    println!(
        "  (the rule needs every device labelled with its role and a shared site; it cannot say \"behind core1\", and is not transitive)"
    );
}

fn main() {
    let storm = storm();
    println!("Alert storm: {ALERTS} alerts over {NODES} devices, batches of {BATCH}\n");
    sotp_run(&storm);
    println!();
    alertmanager_run(&storm);
}
