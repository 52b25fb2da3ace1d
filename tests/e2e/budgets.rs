//! Budgets a hostile tenant cannot exceed: the series quota, per-call records and bytes,
//! the wall-clock budget, host-call data and WASI resources, the log rate, a tenant's
//! instances and concurrent calls. Each attack is stopped and named, the process stays
//! bounded, and other tenants carry on.

use serde_json::{Value, json};
use sotp_tests::guests::{ATTACKER, TICK_COUNTER};
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server, manifest};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn attacker_manifest(name: &str, mode: &str, every: &str, limits: &str, extra: &str) -> String {
    manifest(
        name,
        "1",
        every,
        &format!("[limits]\n{limits}\n{extra}\n[config]\nmode = \"{mode}\"\ntarget = \"mute\"\n"),
    )
}

fn tenant_with(server: &Server, id: &str, quotas: Value) -> Api {
    let mut body = quotas;
    body["id"] = json!(id);
    let (status, created) = server.admin().post("/v1/tenants", body);
    assert_eq!(status, 201, "{created}");
    server.api(created["token"]["token"].as_str().unwrap())
}

fn usage(api: &Api) -> Value {
    let (status, body) = api.get("/v1/tenant");
    assert_eq!(status, 200, "{body}");
    body["usage"].clone()
}

/// A device on this host's loopback whose SNMP port never answers.
fn mute_device(api: &Api) -> UdpSocket {
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let (status, body) = api.put("/v1/secrets/community", json!({ "value": "public" }));
    assert_eq!(status, 204, "{body}");
    let (status, body) = api.put(
        "/v1/devices/mute",
        json!({ "name": "mute", "address": "127.0.0.1", "snmp": {
            "version": "2c", "community_secret": "community", "port": port,
            "timeout_ms": 1000, "retries": 0 } }),
    );
    assert!(status == 200 || status == 201, "{body}");
    hole
}

#[test]
fn unbounded_label_sets_hit_the_series_quota_while_others_tick_and_memory_stays_bounded() {
    let server = Server::start(BIN);
    let bystander = server.tenant("bystander");
    bystander.push(&manifest("ticker", "1", "100ms", ""), TICK_COUNTER);
    let hostile = tenant_with(&server, "hostile", json!({ "max_series": 10000 }));

    // A manifest cannot ask for unbounded batches.
    let wasm = std::fs::read(ATTACKER).unwrap();
    let greedy = attacker_manifest(
        "bomb",
        "series-bomb",
        "200ms",
        "memory = \"64MiB\"\ncpu_ms = 10000\nmax_emit_per_call = 4000000000",
        "",
    );
    let (status, body) = hostile.upload(&greedy, &wasm, true);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["key"], "limits.max_emit_per_call", "{body}");

    bystander.wait_for("the bystander to tick", Duration::from_secs(30), |api| {
        (api.points("ticks", "1h").len() >= 5).then_some(())
    });
    let rss_before = server.rss_bytes();
    let ticks_before = bystander.points("ticks", "1h").len();
    let started = Instant::now();
    hostile.push(
        &attacker_manifest(
            "bomb",
            "series-bomb",
            "200ms",
            "memory = \"64MiB\"\ncpu_ms = 10000\nmax_emit_per_call = 100000\nmax_emit_bytes = \"64MiB\"",
            "",
        ),
        ATTACKER,
    );
    let at_quota = hostile.wait_for(
        "the series quota to refuse",
        Duration::from_secs(60),
        |api| {
            let u = usage(api);
            (u["series_refused"].as_u64().unwrap_or(0) >= 3).then_some(u)
        },
    );
    // Batches are refused whole: the tenant stops within one batch (1,000) of its quota.
    let series = at_quota["series"].as_u64().unwrap();
    assert!((9000..=10000).contains(&series), "{at_quota}");
    assert_eq!(at_quota["limits"]["max_series"], 10000);
    // Keep the attack going for a while: memory stays bounded.
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(20) {
        peak = peak.max(server.rss_bytes());
        std::thread::sleep(Duration::from_millis(500));
    }
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 200 << 20,
        "sotp grew by {} MiB under the attack",
        growth >> 20
    );
    assert_eq!(
        usage(&hostile)["series"],
        series,
        "no series past the quota"
    );
    let view = hostile.component("bomb");
    let log = view["recent_log"].to_string();
    assert!(
        log.contains("series quota"),
        "the guest was told why: {log}"
    );
    assert!(
        view["counters"]["series_refused"].as_u64().unwrap() >= 3,
        "{view}"
    );
    // The other tenant ticked all along (10 per second; half of that is plenty).
    let ticks = bystander.points("ticks", "1h").len() - ticks_before;
    let expected = started.elapsed().as_secs() as usize * 10;
    assert!(
        ticks * 2 >= expected,
        "the bystander ticked {ticks} times in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_call_looping_on_a_slow_device_is_stopped_by_its_wall_clock_budget() {
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    let _hole = mute_device(&acme);
    acme.push(
        &attacker_manifest(
            "looper",
            "slow-snmp",
            "1s",
            "cpu_ms = 2000\nwall_ms = 3000",
            "[grants]\ndevices = [\"mute\"]\n",
        ),
        ATTACKER,
    );
    // Stopped twice: the thread the first call held came back, and the next tick ran.
    let view = acme.wait_for_trap("looper", "wall_clock", 2);
    let reason = view["last_error"]["message"].as_str().unwrap();
    assert!(
        reason.contains("wall-clock budget exceeded (limits.wall_ms = 3000"),
        "{reason}"
    );
    assert_eq!(view["counters"]["traps"]["cpu_deadline"], 0, "{view}");
    let log = view["recent_log"].to_string();
    assert!(
        log.contains("no SNMP answer"),
        "the host call timed out first: {log}"
    );
    // Sleeping (a wait inside WASI's clock) is cut at the budget too.
    acme.push(
        &attacker_manifest("sleeper", "sleep", "1s", "cpu_ms = 100\nwall_ms = 1500", ""),
        ATTACKER,
    );
    let view = acme.wait_for_trap("sleeper", "wall_clock", 2);
    assert!(acme.points("slept", "1h").is_empty(), "{view}");
    // Devices cannot ask for timeouts or retries that would hold a thread for long.
    let (status, body) = acme.put(
        "/v1/devices/slow",
        json!({ "name": "slow", "address": "10.0.0.1", "snmp": {
            "version": "2c", "community_secret": "community", "timeout_ms": 3600000 } }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("snmp.timeout_ms"),
        "{body}"
    );
    let (status, body) = acme.put(
        "/v1/devices/slow",
        json!({ "name": "slow", "address": "10.0.0.1", "snmp": {
            "version": "2c", "community_secret": "community", "retries": 1000 } }),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn host_call_data_wasi_resources_and_log_lines_are_bounded() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let limits = "memory = \"32MiB\"\ncpu_ms = 2000";
    acme.push(
        &attacker_manifest(
            "big",
            "big-call",
            "500ms",
            &format!("{limits}\nmax_emit_bytes = \"1MiB\""),
            "",
        ),
        ATTACKER,
    );
    acme.push(
        &attacker_manifest("leaker", "leak-resources", "500ms", limits, ""),
        ATTACKER,
    );
    acme.push(
        &attacker_manifest("chatty", "log-flood", "500ms", limits, ""),
        ATTACKER,
    );

    let big = acme.wait_for_trap("big", "hostcall_data", 1);
    let reason = big["last_error"]["message"].as_str().unwrap();
    assert!(reason.contains("limits.max_emit_bytes = 1MiB"), "{reason}");

    let leaker = acme.wait_for("the leaker to fail", Duration::from_secs(60), |api| {
        let view = api.component("leaker");
        view["last_error"].is_object().then_some(view)
    });
    let reason = leaker["last_error"]["message"].as_str().unwrap();
    assert!(reason.contains("resource table"), "{reason}");
    assert!(acme.points("resources_leaked", "1h").is_empty());

    // 20,000 lines a call, a burst of 1,000 and 100 a second let through.
    let chatty = acme.wait_for("log lines to be dropped", Duration::from_secs(60), |api| {
        let view = api.component("chatty");
        (view["counters"]["log_dropped"].as_u64().unwrap_or(0) >= 30_000).then_some(view)
    });
    let calls = chatty["counters"]["calls"]["tick"].as_u64().unwrap();
    let (_, logs) = acme.get("/v1/components/chatty/logs?lines=500");
    let lines = logs["lines"].as_array().unwrap();
    assert!(lines.len() <= 500, "{}", lines.len());
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("log lines dropped")),
        "the ring says lines were dropped"
    );
    assert!(calls >= 1, "{chatty}");
}

#[test]
fn a_tenants_concurrent_calls_and_live_instances_are_capped() {
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let busy = tenant_with(&server, "busy", json!({ "max_concurrent_calls": 1 }));
    let _hole = mute_device(&busy);
    for name in ["slow-a", "slow-b"] {
        busy.push(
            &attacker_manifest(
                name,
                "slow-snmp",
                "500ms",
                "cpu_ms = 1000\nwall_ms = 2000",
                "[grants]\ndevices = [\"mute\"]\n",
            ),
            ATTACKER,
        );
    }
    // Both want to run all the time; with one call slot one waits while the other runs.
    busy.wait_for(
        "a call to wait for its slot",
        Duration::from_secs(60),
        |api| {
            let u = usage(api);
            assert!(u["running_calls"].as_u64().unwrap() <= 1, "{u}");
            (u["waiting_calls"].as_u64().unwrap() >= 1 && u["calls_waited"].as_u64().unwrap() >= 2)
                .then_some(u)
        },
    );

    // Instances: two live ones fill a quota of two, and a third component finds no slot.
    let small = tenant_with(&server, "small", json!({ "max_instances": 2 }));
    for name in ["one", "two"] {
        small.push(&manifest(name, "1", "1s", ""), TICK_COUNTER);
    }
    assert_eq!(usage(&small)["live_instances"], 2);
    let wasm = std::fs::read(TICK_COUNTER).unwrap();
    let (status, body) = small.upload(&manifest("three", "1", "1s", ""), &wasm, true);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("instance quota"),
        "{body}"
    );
    assert!(usage(&small)["instances_refused"].as_u64().unwrap() >= 1);
    // Deleting a component gives its slot back.
    assert_eq!(small.delete("/v1/components/one").0, 204);
    let (status, body) = small.upload(&manifest("three", "2", "1s", ""), &wasm, true);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_granted_scratch_directory_keeps_state_within_its_quota() {
    let mut server = Server::start(BIN);
    let acme = server.tenant("acme");
    let keeper = |bytes: u64| {
        manifest(
            "keeper",
            "1",
            "200ms",
            &format!(
                "[grants]\nscratch = \"64KiB\"\n[config]\nmode = \"scratch\"\nbytes = {bytes}\n"
            ),
        )
    };
    acme.push(&keeper(1 << 20), ATTACKER);
    let counted = acme.wait_for("the counter to grow", Duration::from_secs(30), |api| {
        let points = api.points("scratch_counter", "1h");
        points
            .iter()
            .map(|p| p.2)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            .filter(|max| *max >= 3.0)
    });
    assert!(
        acme.points("scratch_big_written", "1h")
            .iter()
            .all(|p| p.2 == 0.0),
        "1 MiB does not fit a 64 KiB quota"
    );
    // A write past the quota fails like one to a full disk (wasi-libc says EIO, 29).
    let log = acme.component("keeper")["recent_log"].to_string();
    assert!(log.contains("writing 1048576 bytes: I/O error"), "{log}");
    // What fits is written.
    let wasm = std::fs::read(ATTACKER).unwrap();
    let (status, body) = acme.upload(&keeper(16 << 10), &wasm, true);
    assert_eq!(status, 201, "{body}");
    acme.wait_for("a write within the quota", Duration::from_secs(30), |api| {
        api.points("scratch_big_written", "1h")
            .iter()
            .any(|p| p.2 == 1.0)
            .then_some(())
    });
    // The state outlives a restart (and the new version).
    server.stop();
    server.restart();
    let acme = server.api(&acme.token);
    acme.wait_for("the counter to go on", Duration::from_secs(30), |api| {
        let after = api
            .points("scratch_counter", "1h")
            .iter()
            .map(|p| p.2)
            .fold(0.0, f64::max);
        (after > counted + 1.0).then_some(())
    });
    let dir = server.data_path().join("scratch/acme/keeper");
    assert!(dir.join("counter").exists());
    // A manifest cannot ask for more than the operator allows; deleting the component
    // deletes its directory.
    let (status, body) = acme.upload(
        &manifest("greedy", "1", "1s", "[grants]\nscratch = \"1GiB\"\n"),
        &wasm,
        true,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["key"], "grants.scratch");
    assert_eq!(acme.delete("/v1/components/keeper").0, 204);
    assert!(!dir.exists());
}
