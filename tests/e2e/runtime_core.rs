//! The runtime core end to end: a real `sotp` process, real HTTP, real guest components.

use serde_json::{Value, json};
use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::{Api, Server, manifest};
use std::collections::BTreeMap;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

/// `ticks` points keyed by sequence number, with the marker label of each.
fn ticks_by_seq(api: &Api) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = api
        .points("ticks", "1h")
        .into_iter()
        .map(|(labels, _, v)| {
            (
                v as u64,
                labels["marker"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn assert_contiguous_and_unique(ticks: &[(u64, String)]) {
    for pair in ticks.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "tick {} handled twice", pair[0].0);
        assert_eq!(
            pair[0].0 + 1,
            pair[1].0,
            "tick(s) lost between {} and {}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[test]
fn uploaded_guest_samples_are_queryable_with_labels_and_counts() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let body = acme.push(
        &manifest(
            "tick-counter",
            "1.0.0",
            "100ms",
            "[config]\nmarker = \"v1\"\nsamples_per_tick = 5\n",
        ),
        TICK_COUNTER,
    );
    assert_eq!(body["version"], 1);
    assert_eq!(body["activated"], true);

    let ticks = acme.wait_for("10 ticks", Duration::from_secs(30), |api| {
        let t = ticks_by_seq(api);
        (t.len() >= 10).then_some(t)
    });
    assert_eq!(ticks[0].0, 1, "the first tick has sequence number 1");
    assert_contiguous_and_unique(&ticks);
    assert!(ticks.iter().all(|(_, m)| m == "v1"));

    // Labels: the guest's own plus the host's `component`.
    let series = acme.query(&[("metric", "ticks"), ("since", "1h")]);
    let labels = &series["series"][0]["labels"];
    assert_eq!(
        labels,
        &json!({ "component": "tick-counter", "marker": "v1" })
    );

    // Counts: every tick committed its 4 `tick_load` samples together with its `ticks` one.
    let load = acme.points("tick_load", "1h");
    let mut per_seq: BTreeMap<String, usize> = BTreeMap::new();
    for (labels, _, _) in &load {
        *per_seq
            .entry(labels["seq"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (seq, _) in &ticks {
        assert_eq!(
            per_seq.get(&seq.to_string()),
            Some(&4),
            "tick {seq} has 4 tick_load samples"
        );
    }

    // Matchers and aggregation over the same data.
    let one = acme.query(&[
        ("metric", "tick_load"),
        ("match", "slot=3"),
        ("since", "1h"),
    ]);
    assert!(
        one["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["labels"]["slot"] == "3")
    );
    let summed = acme.query(&[
        ("metric", "tick_load"),
        ("since", "1h"),
        ("step", "1h"),
        ("agg", "count"),
        ("by", ""),
    ]);
    let total: f64 = summed["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert!(
        total >= (ticks.len() * 4) as f64,
        "count aggregation sees every sample"
    );

    let view = acme.component("tick-counter");
    assert_eq!(view["state"], "running");
    assert!(view["counters"]["calls"]["tick"].as_u64().unwrap() >= 10);
    assert_eq!(view["counters"]["traps"]["other"], 0);
    let log: Vec<String> = view["recent_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        log.iter()
            .any(|l| l.contains("tick-counter starting with marker v1")),
        "{log:?}"
    );
}

#[test]
fn hot_swap_init_failure_and_rollback() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let m = |version: &str, config: &str| {
        manifest(
            "tick-counter",
            version,
            "50ms",
            &format!("[config]\n{config}\n"),
        )
    };
    acme.push(&m("1.0.0", "marker = \"v1\""), TICK_COUNTER);
    acme.wait_for("20 v1 ticks", Duration::from_secs(30), |api| {
        (ticks_by_seq(api).len() >= 20).then_some(())
    });

    // v2 while ticks run.
    let v2 = acme.push(&m("2.0.0", "marker = \"v2\""), TICK_COUNTER);
    assert_eq!(v2["version"], 2);
    let ticks = acme.wait_for("20 v2 ticks", Duration::from_secs(30), |api| {
        let t = ticks_by_seq(api);
        (t.iter().filter(|(_, m)| m == "v2").count() >= 20).then_some(t)
    });
    assert_contiguous_and_unique(&ticks);
    let last_v1 = ticks
        .iter()
        .filter(|(_, m)| m == "v1")
        .map(|(s, _)| *s)
        .max()
        .unwrap();
    let first_v2 = ticks
        .iter()
        .filter(|(_, m)| m == "v2")
        .map(|(s, _)| *s)
        .min()
        .unwrap();
    assert_eq!(last_v1 + 1, first_v2, "v2 takes over at the very next tick");

    // v3's init fails: 422 with the reason, v2 keeps running.
    let wasm = std::fs::read(TICK_COUNTER).unwrap();
    let (status, body) = acme.upload(
        &m("3.0.0", "fail_init = \"database unreachable\""),
        &wasm,
        true,
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "init_failed");
    assert_eq!(body["version"], 3);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("database unreachable"),
        "{body}"
    );
    let view = acme.component("tick-counter");
    assert_eq!(view["active_version"], 2);
    assert_eq!(view["state"], "running");
    assert!(
        view["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("database unreachable")
    );
    let v3 = view["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 3)
        .unwrap()
        .clone();
    assert_eq!(v3["status"], "failed");
    assert!(
        v3["status_detail"]
            .as_str()
            .unwrap()
            .contains("database unreachable")
    );
    let before = ticks_by_seq(&acme).len();
    acme.wait_for("v2 still ticking", Duration::from_secs(30), |api| {
        let t = ticks_by_seq(api);
        (t.len() >= before + 5 && t.last().unwrap().1 == "v2").then_some(())
    });

    // Roll back to v1 explicitly, then back (default) to the previously active v2.
    let (status, body) = acme.post(
        "/v1/components/tick-counter/rollback",
        json!({ "version": 1 }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["previous"], 2);
    let ticks = acme.wait_for("v1 ticks after rollback", Duration::from_secs(30), |api| {
        let t = ticks_by_seq(api);
        (t.last().unwrap().1 == "v1" && t.iter().rev().take_while(|(_, m)| m == "v1").count() >= 5)
            .then_some(t)
    });
    assert_contiguous_and_unique(&ticks);
    let (status, body) = acme.post("/v1/components/tick-counter/rollback", json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["version"], 2,
        "a plain rollback returns to the previously active version"
    );

    // Activating an unknown version is a 404 naming it.
    let (status, body) = acme.post(
        "/v1/components/tick-counter/activate",
        json!({ "version": 9 }),
    );
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("no version 9"));
}

#[test]
fn health_metrics_and_openapi() {
    let server = Server::start(BIN);
    let anon = Api::new(&server.base, "");
    let (status, body) = anon.get("/healthz");
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    assert_eq!(anon.get("/readyz").0, 200);

    let acme = server.tenant("acme");
    acme.push(&manifest("tick-counter", "1", "100ms", ""), TICK_COUNTER);
    acme.wait_for("a tick", Duration::from_secs(30), |api| {
        (!ticks_by_seq(api).is_empty()).then_some(())
    });
    let metrics = server.metrics_text();
    assert!(metrics.contains("# TYPE sotp_component_calls_total counter"));
    assert!(
        metrics
            .contains(r#"sotp_component_active_version{tenant="acme",component="tick-counter"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("sotp_store_commits_total"));

    // Every documented path is routed, and every routed path is documented.
    let (status, doc) = anon.get("/v1/openapi.json");
    assert_eq!(status, 200);
    let documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for path in &documented {
        let concrete = path
            .replace("{name}", "tick-counter")
            .replace("{id}", "acme");
        let (status, body) = acme.get(&concrete);
        assert_ne!(
            body["detail"]
                .as_str()
                .map(|d| d.starts_with("no such endpoint")),
            Some(true),
            "{path} is documented but not routed ({status})"
        );
    }
    let router_src = include_str!("../../api/src/server/mod.rs");
    for chunk in router_src.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap();
        let top_level = ["/healthz", "/readyz", "/metrics", "/", "/rum.js"].contains(&path)
            || path.starts_with("/ui");
        let full = if top_level {
            path.to_string()
        } else {
            format!("/v1{path}")
        };
        assert!(
            documented.contains(&full),
            "{full} is routed but not in openapi.json"
        );
    }
}

#[test]
fn components_come_back_after_a_clean_restart() {
    let mut server = Server::start(BIN);
    let acme = server.tenant("acme");
    acme.push(
        &manifest("tick-counter", "1", "50ms", "[config]\nmarker = \"a\""),
        TICK_COUNTER,
    );
    acme.wait_for("5 ticks", Duration::from_secs(30), |api| {
        (ticks_by_seq(api).len() >= 5).then_some(())
    });
    server.stop();
    server.restart();
    let acme = server.api(&acme.token);
    let before = ticks_by_seq(&acme);
    let after = acme.wait_for("ticks after restart", Duration::from_secs(30), |api| {
        let t = ticks_by_seq(api);
        (t.len() >= before.len() + 5).then_some(t)
    });
    // Numbering continues: nothing before the restart is repeated.
    let mut seqs: Vec<u64> = after.iter().map(|(s, _)| *s).collect();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        after.len(),
        "no tick number reused across the restart"
    );
    let view: Value = acme.component("tick-counter");
    assert_eq!(view["active_version"], 1);
}
