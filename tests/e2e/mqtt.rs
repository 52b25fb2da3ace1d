//! MQTT end to end: a real Mosquitto, a real `sotp`, the `mqtt-sensors` collector.

use serde_json::{Value, json};
use sotp_tests::guests::{ATTACKER, MQTT_SENSORS};
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server};
use sotp_tests::mosquitto::{Mosquitto, Publisher};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn sensors_manifest(version: &str, marker: &str, topics_grant: &str) -> String {
    format!(
        r#"name = "mqtt-sensors"
version = "{version}"
world = "collector"

[limits]
memory = "16MiB"
cpu_ms = 50

[grants]
topics = ["{topics_grant}"]

[config]
marker = "{marker}"

[[config.routes]]
filter = "home/+/+"
pattern = "home/{{room}}/{{quantity}}"
metric = "sensor_{{quantity}}"
value_field = "value"
device_field = "device"
time_field = "ts"
"#
    )
}

/// Point the tenant at the broker and wait until the session is up with `home/+/+`.
fn connect(api: &Api, broker: &Mosquitto) {
    let (status, body) = api.put(
        "/v1/mqtt",
        json!({ "host": "127.0.0.1", "port": broker.port }),
    );
    assert_eq!(status, 200, "{body}");
}

fn wait_subscribed(api: &Api) {
    api.wait_for(
        "the MQTT session to subscribe",
        Duration::from_secs(30),
        |api| {
            let (_, s) = api.get("/v1/mqtt");
            (s["connected"] == true
                && s["subscriptions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f == "home/+/+"))
            .then_some(())
        },
    );
    // The SUBACK may trail the status by a moment.
    std::thread::sleep(Duration::from_millis(300));
}

/// Tenant `acme`, connected to `broker`, running mqtt-sensors v1 and subscribed.
fn sensors_tenant(server: &Server, broker: &Mosquitto) -> Api {
    let acme = server.tenant("acme");
    connect(&acme, broker);
    acme.push(&sensors_manifest("1.0.0", "v1", "home/#"), MQTT_SENSORS);
    wait_subscribed(&acme);
    acme
}

/// Every stored point of `metric`: (labels, value).
fn values(api: &Api, metric: &str) -> Vec<(Value, f64)> {
    api.points(metric, "7d")
        .into_iter()
        .map(|(l, _, v)| (l, v))
        .collect()
}

fn wait_count(api: &Api, metric: &str, n: usize, timeout: Duration) -> Vec<(Value, f64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = values(api, metric);
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{metric}: {} of {n} samples arrived",
            v.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn base_ms() -> i64 {
    // Recent enough for the default query range, unique per test run.
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        - 3_600_000
}

#[test]
fn ten_thousand_qos1_messages_become_ten_thousand_samples() {
    let broker = Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = sensors_tenant(&server, &broker);

    let base = base_ms();
    let rooms = ["kitchen", "hall", "bedroom", "office", "garage"];
    let quantities = ["temperature", "humidity"];
    let mut threads = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for (q, quantity) in quantities.iter().enumerate() {
            let lines: String = (0..1000)
                .map(|i| {
                    let ts = base + ((r * 2 + q) * 1000 + i) as i64;
                    format!("{{\"value\": {i}, \"device\": \"dev-{room}\", \"ts\": {ts}}}\n")
                })
                .collect();
            let topic = format!("home/{room}/{quantity}");
            let port = broker.port;
            threads.push(std::thread::spawn(move || {
                sotp_tests::mosquitto::publish_lines_to(port, &topic, &lines)
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let temps = wait_count(&acme, "sensor_temperature", 5000, Duration::from_secs(60));
    let hums = wait_count(&acme, "sensor_humidity", 5000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        values(&acme, "sensor_temperature").len(),
        5000,
        "exactly 5,000 temperatures"
    );
    assert_eq!(
        values(&acme, "sensor_humidity").len(),
        5000,
        "exactly 5,000 humidities"
    );

    let mut per_room: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (labels, _) in temps.iter().chain(hums.iter()) {
        let room = labels["room"].as_str().unwrap().to_string();
        let quantity = labels["quantity"].as_str().unwrap().to_string();
        assert_eq!(labels["device"], format!("dev-{room}"));
        assert_eq!(labels["component"], "mqtt-sensors");
        *per_room.entry((room, quantity)).or_default() += 1;
    }
    assert_eq!(per_room.len(), 10);
    assert!(per_room.values().all(|n| *n == 1000), "{per_room:?}");

    let (_, status) = acme.get("/v1/mqtt");
    assert_eq!(status["received"], 10_000);
    assert_eq!(status["acknowledged"], 10_000);
}

#[test]
fn malformed_payloads_are_counted_and_the_stream_goes_on() {
    let broker = Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = sensors_tenant(&server, &broker);
    broker.publish_lines(
        "home/kitchen/temperature",
        "21.5\nwarm-ish\n{\"value\": \"n/a\"}\n{broken json\n22.5\n",
    );
    let good = wait_count(&acme, "sensor_temperature", 2, Duration::from_secs(30));
    assert_eq!(
        good.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![21.5, 22.5]
    );
    let view = acme.wait_for("3 errors", Duration::from_secs(10), |api| {
        let v = api.component("mqtt-sensors");
        (v["counters"]["errors"] == 3).then_some(v)
    });
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither a number nor JSON"),
        "{view}"
    );
    assert_eq!(view["counters"]["traps"]["other"], 0);
    assert_eq!(view["state"], "running");
    let (_, s) = acme.get("/v1/mqtt");
    assert_eq!(
        s["acknowledged"], 5,
        "bad messages are acknowledged too (they were handled)"
    );
}

#[test]
fn subscriptions_outside_the_grants_are_denied() {
    let broker = Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    connect(&acme, &broker);
    let wasm = std::fs::read(MQTT_SENSORS).unwrap();
    let (status, body) = acme.upload(&sensors_manifest("1.0.0", "v1", "office/#"), &wasm, true);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("denied"),
        "{body}"
    );
    let view = acme.component("mqtt-sensors");
    assert!(view["counters"]["denied"].as_u64().unwrap() >= 1);
    let (_, s) = acme.get("/v1/mqtt");
    assert_eq!(
        s["subscriptions"],
        json!([]),
        "nothing was subscribed at the broker"
    );
}

fn distinct(values: &[(Value, f64)]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for (_, v) in values {
        *out.entry(*v as u64).or_default() += 1;
    }
    out
}

#[test]
fn hot_swap_under_load_loses_and_repeats_nothing() {
    let broker = Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = sensors_tenant(&server, &broker);

    // 11,000 messages paced at 1,100/s: at least 1,000 msg/s for 10 s.
    let total = 11_000;
    let started = Instant::now();
    let publisher = Publisher::start(
        broker.port,
        "load",
        "home/lab/temperature",
        total,
        1100,
        base_ms(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while publisher.sent() < total / 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    acme.push(&sensors_manifest("2.0.0", "v2", "home/#"), MQTT_SENSORS);
    while publisher.sent() < total {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    assert!(rate >= 1000.0, "published at only {rate:.0} msg/s");
    assert_eq!(publisher.finish(Duration::from_secs(60)), total);

    let stored = wait_count(
        &acme,
        "sensor_temperature",
        total as usize,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(1));
    let stored_again = values(&acme, "sensor_temperature");
    assert_eq!(
        stored_again.len(),
        stored.len(),
        "nothing arrives after the count is reached"
    );
    let counts = distinct(&stored);
    assert_eq!(counts.len(), total as usize, "every message is stored");
    assert!(
        counts.values().all(|n| *n == 1),
        "no message is handled twice"
    );
    let last_v1 = stored
        .iter()
        .filter(|(l, _)| l["marker"] == "v1")
        .map(|p| p.1 as u64)
        .max()
        .unwrap();
    let first_v2 = stored
        .iter()
        .filter(|(l, _)| l["marker"] == "v2")
        .map(|p| p.1 as u64)
        .min()
        .unwrap();
    assert_eq!(
        last_v1 + 1,
        first_v2,
        "v2 takes over at the very next message"
    );
    assert!(first_v2 < total, "v2 handled the rest of the stream");
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let mut broker = Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = sensors_tenant(&server, &broker);

    let total = 4000;
    let publisher = Publisher::start(
        broker.port,
        "restart",
        "home/lab/temperature",
        total,
        1000,
        base_ms(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    broker.start_again();
    assert_eq!(publisher.finish(Duration::from_secs(90)), total);
    let stored = wait_count(
        &acme,
        "sensor_temperature",
        total as usize,
        Duration::from_secs(90),
    );
    let counts = distinct(&stored);
    let missing: Vec<u64> = (1..=total).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost across the broker restart: {missing:?}"
    );
    let (_, s) = acme.get("/v1/mqtt");
    assert!(
        s["connects"].as_u64().unwrap() >= 2,
        "sotp reconnected: {s}"
    );
}

#[test]
fn sotp_killed_mid_stream_loses_and_doubles_nothing() {
    let broker = Mosquitto::start();
    // PUBACKs held 300 ms after the commit: the kill lands while committed messages still
    // await their acknowledgement, so the broker redelivers some that are already stored.
    let mut server = Server::start_with_config(
        BIN,
        LOOPBACK_EGRESS,
        &[("SOTP_FAILPOINT_MQTT_ACK_DELAY_MS", "300")],
    );
    let acme = sensors_tenant(&server, &broker);

    let total = 5000;
    let publisher = Publisher::start(
        broker.port,
        "kill",
        "home/lab/temperature",
        total,
        1000,
        base_ms(),
    );
    std::thread::sleep(Duration::from_millis(2000));
    server.kill9();
    std::thread::sleep(Duration::from_millis(1000));
    server.restart();
    assert_eq!(publisher.finish(Duration::from_secs(60)), total);
    let acme = server.api(&acme.token);
    wait_count(
        &acme,
        "sensor_temperature",
        total as usize,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(2));
    let stored = values(&acme, "sensor_temperature");
    let counts = distinct(&stored);
    let missing: Vec<u64> = (1..=total).filter(|i| !counts.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "lost across kill -9: {} messages, first {:?}",
        missing.len(),
        missing.first()
    );
    let doubled: Vec<(&u64, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "handled twice across kill -9: {doubled:?}"
    );
    let (_, s) = acme.get("/v1/mqtt");
    let skipped = s["duplicates_skipped"].as_u64().unwrap();
    eprintln!("after the restart: {skipped} redelivered duplicates recognised and skipped");
    assert!(
        skipped > 0,
        "the kill should have left committed, unacknowledged messages: {s}"
    );
}

#[test]
fn tls_credentials_from_a_secret_and_publish_grants() {
    let broker = Mosquitto::start_secure("sotp", "br0ker-pass");
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    let ca = broker.ca_pem.clone().unwrap();

    // A wrong password is refused by the broker and shown in the session's status.
    let (status, _) = acme.put("/v1/secrets/broker-pass", json!({ "value": "wrong" }));
    assert_eq!(status, 204);
    let settings = json!({ "host": "127.0.0.1", "port": broker.port, "username": "sotp",
        "password_secret": "broker-pass", "tls": true, "tls_ca_pem": ca });
    let (status, body) = acme.put("/v1/mqtt", settings.clone());
    assert_eq!(status, 200, "{body}");
    let refused = acme.wait_for("the refusal", Duration::from_secs(30), |api| {
        let (_, s) = api.get("/v1/mqtt");
        s["last_error"].as_str().map(str::to_string)
    });
    assert!(
        refused.to_lowercase().contains("not authorized")
            || refused.contains("BadUserNamePassword")
            || refused.contains("refused"),
        "{refused}"
    );
    let (_, s) = acme.get("/v1/mqtt");
    assert_eq!(s["connected"], false);

    // The right password, over TLS.
    let (status, _) = acme.put("/v1/secrets/broker-pass", json!({ "value": "br0ker-pass" }));
    assert_eq!(status, 204);
    let (status, body) = acme.put("/v1/mqtt", settings);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.to_string().contains("br0ker-pass"),
        "the password never comes back: {body}"
    );
    acme.push(&sensors_manifest("1.0.0", "v1", "home/#"), MQTT_SENSORS);
    wait_subscribed(&acme);
    broker.publish_lines("home/kitchen/temperature", "{\"value\": 21.5}\n");
    let got = wait_count(&acme, "sensor_temperature", 1, Duration::from_secs(30));
    assert_eq!(got[0].1, 21.5);

    // Publishing: allowed inside grants.publish, denied outside.
    let received = broker.subscribe_lines("out/#", 1);
    std::thread::sleep(Duration::from_millis(500));
    let manifest = "name = \"publisher\"\nversion = \"1\"\nworld = \"collector\"\n\
        [schedule]\nevery = \"300ms\"\n[grants]\npublish = [\"out/#\"]\n[config]\nmode = \"publish\"\n";
    acme.push(manifest, ATTACKER);
    let ok = wait_count(&acme, "publish_ok", 1, Duration::from_secs(30));
    assert_eq!(ok[0].1, 1.0, "publishing inside the grants works");
    assert_eq!(
        values(&acme, "publish_denied")[0].1,
        1.0,
        "publishing outside is denied"
    );
    let text = received.join().unwrap();
    assert!(
        text.contains("hello from a guest"),
        "the broker got the guest's message: {text:?}"
    );
    assert!(
        acme.component("publisher")["counters"]["denied"]
            .as_u64()
            .unwrap()
            >= 1
    );
}
