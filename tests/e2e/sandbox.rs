//! Hostile guests and bad uploads against a real `sotp`: each attack is stopped and named,
//! the host and its other components carry on.

use serde_json::json;
use sotp_tests::guests::{ATTACKER, TICK_COUNTER, WRONG_WORLD};
use sotp_tests::harness::{Api, Server, manifest};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn attacker(api: &Api, name: &str, mode: &str, extra: &str) {
    api.push(
        &manifest(
            name,
            "1",
            "200ms",
            &format!(
                "[limits]\nmemory = \"16MiB\"\ncpu_ms = 50\n{extra}\n[config]\nmode = \"{mode}\"\n"
            ),
        ),
        ATTACKER,
    );
}

fn last_point(api: &Api, metric: &str) -> Option<f64> {
    api.points(metric, "1h").last().map(|p| p.2)
}

#[test]
fn attacks_are_stopped_named_and_contained() {
    let mut server = Server::start(BIN);
    let acme = server.tenant("acme");
    acme.push(&manifest("tick-counter", "1", "100ms", ""), TICK_COUNTER);
    attacker(&acme, "spinner", "spin", "");
    attacker(&acme, "bomber", "bomb", "");
    attacker(&acme, "panicker", "panic", "");

    let spin = acme.wait_for_trap("spinner", "cpu_deadline", 2);
    let reason = spin["last_error"]["message"].as_str().unwrap();
    assert!(reason.contains("CPU deadline exceeded"), "{reason}");
    assert!(
        spin["counters"]["emitted_dropped"].as_u64().unwrap() >= 2,
        "a trapped call's output is dropped"
    );
    assert!(
        acme.points("attacker_alive", "1h").is_empty(),
        "nothing a trapped call emitted is stored"
    );

    let bomb = acme.wait_for_trap("bomber", "memory_limit", 2);
    let reason = bomb["last_error"]["message"].as_str().unwrap();
    assert!(reason.contains("memory limit exceeded"), "{reason}");
    assert!(!reason.contains("unreachable"), "{reason}");

    let panic = acme.wait_for_trap("panicker", "panic", 2);
    let reason = panic["last_error"]["message"].as_str().unwrap();
    assert!(
        reason.starts_with("panicked: sensor table corrupt at tick"),
        "{reason}"
    );
    let stderr_seen = panic["recent_log"].as_array().unwrap().iter().any(|l| {
        l["source"] == "stderr"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("sensor table corrupt")
    });
    assert!(stderr_seen, "the guest's stderr is in its log");

    // Each trap got a fresh instance: the next call ran again (and trapped again).
    assert!(spin["counters"]["calls"]["init"].as_u64().unwrap() >= 2);

    // The well-behaved neighbour kept ticking throughout, and keeps ticking.
    let before = acme.points("ticks", "1h").len();
    assert!(before >= 5, "tick-counter ran while the attackers trapped");
    acme.wait_for(
        "tick-counter to keep ticking",
        Duration::from_secs(30),
        |api| (api.points("ticks", "1h").len() >= before + 5).then_some(()),
    );
    assert_eq!(
        acme.component("tick-counter")["counters"]["traps"]["cpu_deadline"],
        0
    );
    assert!(server.is_running(), "the host never crashes");
    let (status, _) = server.admin().get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn grants_and_ambient_authority() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    for (name, value) in [
        ("granted-secret", "abc123"),
        ("forbidden-secret", "topsecret"),
    ] {
        let (status, body) = acme.put(&format!("/v1/secrets/{name}"), json!({ "value": value }));
        assert_eq!(status, 204, "{body}");
    }
    attacker(
        &acme,
        "prober",
        "secrets",
        "[grants]\nsecrets = [\"granted-secret\"]\n",
    );
    attacker(&acme, "escaper", "escape", "");

    acme.wait_for("the secrets probe", Duration::from_secs(30), |api| {
        last_point(api, "secret_forbidden_denied").map(|_| ())
    });
    assert_eq!(
        last_point(&acme, "secret_granted_len"),
        Some(6.0),
        "a granted secret is readable"
    );
    assert_eq!(
        last_point(&acme, "secret_forbidden_denied"),
        Some(1.0),
        "an ungranted one is denied"
    );
    assert!(acme.points("secret_forbidden_leaked", "1h").is_empty());
    let view = acme.component("prober");
    assert!(
        view["counters"]["denied"].as_u64().unwrap() >= 1,
        "denials are counted"
    );
    assert!(view["recent_log"].as_array().unwrap().iter().any(|l| {
        l["source"] == "host" && l["message"].as_str().unwrap().contains("forbidden-secret")
    }));

    acme.wait_for("the escape attempt", Duration::from_secs(30), |api| {
        last_point(api, "escape_tcp_connected").map(|_| ())
    });
    assert_eq!(
        last_point(&acme, "escape_file_read"),
        Some(0.0),
        "no host files"
    );
    assert_eq!(
        last_point(&acme, "escape_dir_entries"),
        Some(0.0),
        "no directories at all"
    );
    assert_eq!(
        last_point(&acme, "escape_tcp_connected"),
        Some(0.0),
        "no sockets"
    );
    assert_eq!(
        last_point(&acme, "escape_env_vars"),
        Some(0.0),
        "no host environment"
    );
    let view = acme.component("escaper");
    assert!(view["recent_log"].as_array().unwrap().iter().any(|l| {
        l["message"]
            .as_str()
            .unwrap()
            .contains("reading /etc/passwd")
    }));

    // The API never hands a secret's value back.
    let (_, list) = acme.get("/v1/secrets");
    assert!(!list.to_string().contains("abc123"));
}

#[test]
fn bad_uploads_get_a_4xx_naming_the_problem() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let good = manifest("x", "1", "1s", "");
    let tick = std::fs::read(TICK_COUNTER).unwrap();

    let (status, body) = acme.upload(&good, b"#!/bin/sh\necho not wasm\n", true);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("not_wasm")),
        "{body}"
    );

    let core_module = b"\0asm\x01\0\0\0";
    let (status, body) = acme.upload(&good, core_module, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("not_a_component")),
        "{body}"
    );

    let wrong = std::fs::read(WRONG_WORLD).unwrap();
    let (status, body) = acme.upload(&good, &wrong, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("wrong_world")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("collector"),
        "{body}"
    );

    let no_version = "name = \"x\"\nworld = \"collector\"\n";
    let (status, body) = acme.upload(no_version, &tick, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_manifest")),
        "{body}"
    );
    assert_eq!(body["key"], "version");

    let bad_memory = manifest("x", "1", "1s", "[limits]\nmemory = \"4TiB\"\n");
    let (status, body) = acme.upload(&bad_memory, &tick, true);
    assert_eq!(
        (status, body["key"].as_str()),
        (400, Some("limits.memory")),
        "{body}"
    );

    let mut huge = b"\0asm\x0d\0\x01\0".to_vec();
    huge.resize(33 * 1024 * 1024, 0);
    let (status, body) = acme.upload(&good, &huge, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("upload_too_large")),
        "{body}"
    );

    let (status, body) = acme.post("/v1/components/x/activate", json!({ "nope": 1 }));
    assert!((400..500).contains(&status), "{status} {body}");
    let (status, body) = Api::new(&server.base, "sotp_wrong").get("/v1/components");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = acme.get("/v1/nowhere");
    assert_eq!(status, 404);

    // Nothing was stored by any of them.
    let (_, list) = acme.get("/v1/components");
    assert_eq!(list["components"], json!([]));
}
