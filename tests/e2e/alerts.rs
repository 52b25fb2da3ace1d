//! The alert intake through the API: Alertmanager's webhook payload and the plain JSON
//! intake, alerts mapped to inventory devices, redelivery and reordering changing nothing,
//! malformed bodies refused with the reason, and isolation (an `ingest` token pushes and
//! reads nothing; another tenant sees nothing).

use serde_json::{Value, json};
use sotp_tests::harness::{Api, Server};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn hook(status: &str, alerts: Value) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"InstanceDown\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "sotp", "groupLabels": {"alertname": "InstanceDown"},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    })
}

fn alert(status: &str, instance: &str, starts: &str, ends: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "InstanceDown", "instance": instance, "job": "node"},
        "annotations": {"summary": format!("{instance} is down")},
        "startsAt": starts, "endsAt": ends, "generatorURL": "http://127.0.0.1:9090/graph",
    })
}

const ZERO: &str = "0001-01-01T00:00:00Z";

fn alerts(api: &Api, query: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/v1/alerts{query}"));
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

fn by_device<'a>(list: &'a [Value], device: &str) -> &'a Value {
    list.iter()
        .find(|a| a["device"] == device)
        .unwrap_or_else(|| panic!("no alert of {device} in {list:?}"))
}

#[test]
fn webhook_alerts_map_to_devices_and_redelivery_or_reordering_changes_nothing() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let devices = json!([
        { "name": "core1", "address": "10.77.255.1" },
        { "name": "acc1", "address": "10.77.255.2" },
    ]);
    assert_eq!(acme.post("/v1/devices/import", devices).0, 200);
    let push = acme.scoped("alertmanager", &["ingest"]);

    let storm = hook(
        "firing",
        json!([
            alert("firing", "10.77.255.1:9100", "2026-12-01T10:00:00Z", ZERO),
            alert(
                "firing",
                "acc1.lab.example:9100",
                "2026-12-01T10:00:01Z",
                ZERO
            ),
            alert("firing", "10.9.9.9:9100", "2026-12-01T10:00:02Z", ZERO),
        ]),
    );
    let (status, first) = push.post("/v1/alerts/webhook", storm.clone());
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (&first["new"], &first["unmapped"], &first["duplicate"]),
        (&json!(3), &json!(1), &json!(false)),
        "{first}"
    );
    // Alertmanager retries on a 5xx or a timeout: the same body again changes nothing.
    let (status, again) = push.post("/v1/alerts/webhook", storm);
    assert_eq!(
        (status, &again["duplicate"]),
        (200, &json!(true)),
        "{again}"
    );
    let list = alerts(&acme, "?status=firing");
    assert_eq!(list.len(), 3);
    assert_eq!(
        by_device(&list, "core1")["labels"]["instance"],
        "10.77.255.1:9100"
    );
    assert_eq!(by_device(&list, "acc1")["status"], "firing");
    assert!(
        list.iter().any(|a| a["device"].is_null()),
        "the unmapped one is kept"
    );
    assert_eq!(alerts(&acme, "?device=core1").len(), 1);

    // core1 resolves; then a late redelivery of its firing (same startsAt) arrives: stale.
    let resolved = hook(
        "resolved",
        json!([alert(
            "resolved",
            "10.77.255.1:9100",
            "2026-12-01T10:00:00Z",
            "2026-12-01T10:05:00Z"
        )]),
    );
    let (_, r) = push.post("/v1/alerts/webhook", resolved);
    assert_eq!(r["resolved"], 1, "{r}");
    let late = hook(
        "firing",
        json!([alert(
            "firing",
            "10.77.255.1:9100",
            "2026-12-01T10:00:00Z",
            ZERO
        )]),
    );
    let (_, l) = push.post("/v1/alerts/webhook", late);
    assert_eq!(l["stale"], 1, "{l}");
    assert_eq!(by_device(&alerts(&acme, ""), "core1")["status"], "resolved");
    // A new outage of core1 (later startsAt) fires again.
    let again = hook(
        "firing",
        json!([alert(
            "firing",
            "10.77.255.1:9100",
            "2026-12-01T11:00:00Z",
            ZERO
        )]),
    );
    assert_eq!(push.post("/v1/alerts/webhook", again).1["updated"], 1);
    assert_eq!(by_device(&alerts(&acme, ""), "core1")["status"], "firing");

    // Every intake is recorded, duplicates too.
    let (_, intakes) = acme.get("/v1/alerts/intakes");
    let intakes = intakes["intakes"].as_array().unwrap().clone();
    assert_eq!(intakes.len(), 5);
    assert_eq!(intakes.iter().filter(|i| i["duplicate"] == true).count(), 1);
    assert!(
        server
            .metrics_text()
            .contains("sotp_alert_intake_duplicates_total 1")
    );
}

#[test]
fn the_plain_json_intake_takes_alertmanagers_api_shape() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let devices = json!([{ "name": "sw1", "address": "192.0.2.7" }]);
    assert_eq!(acme.post("/v1/devices/import", devices).0, 200);
    let body = json!([
        { "labels": { "alertname": "LinkDown", "device": "sw1", "ifName": "eth1" },
          "annotations": { "summary": "eth1 down" }, "startsAt": "2026-12-01T10:00:00Z" },
        { "labels": { "alertname": "LinkDown", "device": "sw1", "ifName": "eth2" },
          "startsAt": "2026-12-01T09:00:00Z", "endsAt": "2026-12-01T09:30:00Z" },
    ]);
    let (status, out) = acme.post("/v1/alerts", body);
    assert_eq!(status, 200, "{out}");
    let list = alerts(&acme, "");
    let status_of = |ifname: &str| {
        list.iter()
            .find(|a| a["labels"]["ifName"] == ifname)
            .map(|a| a["status"].clone())
    };
    assert_eq!(status_of("eth1"), Some(json!("firing")));
    assert_eq!(
        status_of("eth2"),
        Some(json!("resolved")),
        "endsAt in the past"
    );
    assert!(list.iter().all(|a| a["device"] == "sw1"));
}

#[test]
fn malformed_intakes_are_400_with_the_reason_and_store_nothing() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let cases = [
        ("{\"alerts\": [", "not an Alertmanager webhook payload"),
        (r#"{"version":"3","alerts":[]}"#, "version `3`"),
        (r#"{"alerts":[{"labels":{}}]}"#, "alerts[0]: labels"),
        (
            r#"{"alerts":[{"labels":{"a":"b"},"startsAt":"yesterday"}]}"#,
            "startsAt",
        ),
        (
            r#"{"alerts":[{"labels":{"a":"b"},"status":"pending"}]}"#,
            "`pending`",
        ),
    ];
    for (body, reason) in cases {
        let (status, err) = acme.send_text("POST", "/v1/alerts/webhook", body);
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["detail"].as_str().unwrap().contains(reason),
            "{body}: {err}"
        );
    }
    assert!(alerts(&acme, "").is_empty());
    assert_eq!(acme.get("/v1/alerts/intakes").1["intakes"], json!([]));
    assert!(
        server
            .metrics_text()
            .contains("sotp_alert_intakes_rejected_total 5")
    );
}

#[test]
fn an_ingest_token_only_pushes_and_tenants_see_only_their_alerts() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let other = server.tenant("other");
    let push = acme.scoped("alertmanager", &["ingest"]);
    let one = hook(
        "firing",
        json!([alert("firing", "x:1", "2026-12-01T10:00:00Z", ZERO)]),
    );
    assert_eq!(push.post("/v1/alerts/webhook", one).0, 200);
    assert_eq!(
        push.get("/v1/alerts").0,
        403,
        "an ingest token reads nothing"
    );
    assert_eq!(push.get("/v1/devices").0, 403);
    assert_eq!(push.get("/v1/alerts/settings").0, 403);
    let read = acme.scoped("viewer", &["read"]);
    assert_eq!(
        read.post("/v1/alerts", json!([{ "labels": { "a": "b" } }]))
            .0,
        403,
        "pushing needs ingest"
    );
    assert_eq!(alerts(&acme, "").len(), 1);
    assert!(alerts(&other, "").is_empty());
    assert_eq!(other.get("/v1/alerts/intakes").1["intakes"], json!([]));
    // The settings are the tenant's own.
    let (status, _) = other.put(
        "/v1/alerts/settings",
        json!({ "device_labels": ["node"], "hold_down": "10s" }),
    );
    assert_eq!(status, 200);
    assert_eq!(
        acme.get("/v1/alerts/settings").1["device_labels"][0],
        "device"
    );
    let (status, err) = other.put("/v1/alerts/settings", json!({ "device_labels": [] }));
    assert_eq!(status, 400, "{err}");
}
