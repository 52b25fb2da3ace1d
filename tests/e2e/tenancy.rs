//! Tenant isolation and quotas: another tenant's token is refused everywhere.

use serde_json::json;
use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::{Server, manifest};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

#[test]
fn a_token_never_sees_or_changes_another_tenants_anything() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let globex = server.tenant("globex");
    acme.push(
        &manifest("tick-counter", "1", "100ms", "[config]\nmarker = \"acme\""),
        TICK_COUNTER,
    );
    let (status, _) = acme.put("/v1/secrets/db-password", json!({ "value": "s3cret" }));
    assert_eq!(status, 204);
    acme.wait_for("acme ticks", Duration::from_secs(30), |api| {
        (api.points("ticks", "1h").len() >= 3).then_some(())
    });
    let (_, tokens) = acme.get("/v1/tokens");
    let acme_token_id = tokens["tokens"][0]["id"].as_str().unwrap().to_string();

    // Reads see nothing.
    let (status, list) = globex.get("/v1/components");
    assert_eq!(status, 200);
    assert_eq!(list["components"], json!([]));
    assert_eq!(
        globex.query(&[("metric", "ticks"), ("since", "1h")])["series"],
        json!([])
    );
    assert_eq!(globex.get("/v1/secrets").1["secrets"], json!([]));
    assert_eq!(globex.get("/v1/logs").1["logs"], json!([]));
    let (_, their_tokens) = globex.get("/v1/tokens");
    assert!(!their_tokens.to_string().contains(&acme_token_id));

    // Every per-component endpoint answers as if acme's component did not exist.
    let name = "tick-counter";
    let attempts = [
        ("GET", format!("/v1/components/{name}"), json!(null)),
        (
            "GET",
            format!("/v1/components/{name}/versions"),
            json!(null),
        ),
        ("GET", format!("/v1/components/{name}/logs"), json!(null)),
        (
            "POST",
            format!("/v1/components/{name}/activate"),
            json!({ "version": 1 }),
        ),
        (
            "POST",
            format!("/v1/components/{name}/rollback"),
            json!({ "version": 1 }),
        ),
        (
            "POST",
            format!("/v1/components/{name}/messages"),
            json!({ "topic": "t", "payload": "p" }),
        ),
        ("DELETE", format!("/v1/components/{name}"), json!(null)),
        ("DELETE", "/v1/secrets/db-password".to_string(), json!(null)),
        ("DELETE", format!("/v1/tokens/{acme_token_id}"), json!(null)),
    ];
    for (method, path, body) in &attempts {
        let (status, resp) = match *method {
            "GET" => globex.get(path),
            "POST" => globex.post(path, body.clone()),
            _ => globex.delete(path),
        };
        assert_eq!(status, 404, "{method} {path} with globex's token: {resp}");
    }
    // Admin endpoints refuse tenant tokens.
    for path in ["/v1/tenants", "/v1/tenants/acme"] {
        let (status, body) = globex.get(path);
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _) = globex.post("/v1/tenants", json!({ "id": "evil" }));
    assert_eq!(status, 403);
    let (status, _) = globex.delete("/v1/tenants/acme");
    assert_eq!(status, 403);
    let (status, _) = globex.post("/v1/tokens", json!({ "tenant": "acme" }));
    assert_eq!(status, 403, "no tokens for someone else's tenant");

    // Same component name, separate namespaces and series.
    globex.push(
        &manifest(
            "tick-counter",
            "1",
            "100ms",
            "[config]\nmarker = \"globex\"",
        ),
        TICK_COUNTER,
    );
    globex.wait_for("globex ticks", Duration::from_secs(30), |api| {
        (!api.points("ticks", "1h").is_empty()).then_some(())
    });
    assert!(
        acme.points("ticks", "1h")
            .iter()
            .all(|(l, _, _)| l["marker"] == "acme")
    );
    assert!(
        globex
            .points("ticks", "1h")
            .iter()
            .all(|(l, _, _)| l["marker"] == "globex")
    );

    // Acme is untouched by all of the above.
    let view = acme.component(name);
    assert_eq!(view["active_version"], 1);
    assert_eq!(view["state"], "running");
    assert_eq!(
        acme.get("/v1/secrets").1["secrets"][0]["name"],
        "db-password"
    );
    assert_eq!(acme.get("/v1/tokens").0, 200);
}

#[test]
fn quotas_limit_components_and_memory() {
    let server = Server::start(BIN);
    let (status, body) = server.admin().post(
        "/v1/tenants",
        json!({ "id": "small", "max_components": 1, "max_memory": "24MiB" }),
    );
    assert_eq!(status, 201, "{body}");
    let small = server.api(body["token"]["token"].as_str().unwrap());
    let wasm = std::fs::read(TICK_COUNTER).unwrap();
    let big = manifest("a", "1", "1s", "[limits]\nmemory = \"32MiB\"\n");
    let (status, body) = small.upload(&big, &wasm, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("quota_exceeded")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("24MiB"), "{body}");
    let fits = manifest("a", "1", "1s", "[limits]\nmemory = \"16MiB\"\n");
    assert_eq!(small.upload(&fits, &wasm, true).0, 201);
    let second = manifest("b", "1", "1s", "[limits]\nmemory = \"1MiB\"\n");
    let (status, body) = small.upload(&second, &wasm, true);
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("quota_exceeded")),
        "{body}"
    );
}

/// A NetFlow v5 datagram with one flow from `src` of `bytes`, ending a second ago.
fn netflow_v5(src: [u8; 4], bytes: u32) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut d = Vec::new();
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&100_000u32.to_be_bytes()); // sysUptime
    d.extend_from_slice(&now.to_be_bytes());
    d.extend_from_slice(&[0; 4]); // nsecs
    d.extend_from_slice(&[0; 4]); // sequence
    d.extend_from_slice(&[0; 4]); // engine, sampling
    d.extend_from_slice(&src);
    d.extend_from_slice(&[10, 9, 9, 9]); // dst
    d.extend_from_slice(&[0; 4]); // next hop
    d.extend_from_slice(&[0, 1, 0, 2]); // in, out
    d.extend_from_slice(&1u32.to_be_bytes()); // packets
    d.extend_from_slice(&bytes.to_be_bytes());
    d.extend_from_slice(&98_000u32.to_be_bytes()); // first
    d.extend_from_slice(&99_000u32.to_be_bytes()); // last
    d.extend_from_slice(&[0x9c, 0x40, 0, 80]); // ports 40000 -> 80
    d.extend_from_slice(&[0, 0, 6, 0]); // pad, flags, tcp, tos
    d.extend_from_slice(&[0; 8]); // AS, masks, pad
    d
}

#[test]
fn a_recreated_tenant_sees_none_of_the_deleted_ones_data() {
    let port = sotp_tests::mosquitto::free_port();
    let config = format!(
        "[runtime.flows]\nnetflow = [\"127.0.0.1:{port}\"]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n"
    );
    let mut server = Server::start_with_config(BIN, &config, &[]);
    let admin = server.admin();
    let acme = server.tenant("acme");
    acme.push(
        &manifest("tick-counter", "1", "100ms", "[config]\nmarker = \"old\""),
        TICK_COUNTER,
    );
    acme.push(
        &manifest(
            "archivist",
            "1",
            "200ms",
            "[grants]\ndevices = [\"edge1\"]\n[config]\nmode = \"backup\"\ntarget = \"edge1\"\n",
        ),
        sotp_tests::guests::ATTACKER,
    );
    assert_eq!(
        acme.put("/v1/secrets/db", json!({ "value": "s3cret" })).0,
        204
    );
    let (status, body) = acme.put(
        "/v1/devices/edge1",
        json!({ "name": "edge1", "address": "192.0.2.1" }),
    );
    assert_eq!(status, 201, "{body}");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&netflow_v5([10, 1, 1, 1], 4242), ("127.0.0.1", port))
        .unwrap();
    server.wait_flows_stored(1);
    acme.wait_for("ticks, logs and a backup", Duration::from_secs(30), |api| {
        let (status, backups) = api.get("/v1/backups");
        assert_eq!(status, 200, "{backups}");
        (api.points("ticks", "1h").len() >= 3 && !backups["devices"].as_array().unwrap().is_empty())
            .then_some(())
    });
    let (_, top) = acme.get("/v1/flows/top?start=0&end=now&by=src_addr");
    assert_eq!(top["rows"].as_array().unwrap().len(), 1, "{top}");

    let (status, body) = admin.delete("/v1/tenants/acme");
    assert_eq!(status, 204, "{body}");
    assert_eq!(acme.get("/v1/components").0, 401, "its tokens are gone");
    let fresh = server.tenant("acme");
    let empty = |path: &str, key: &str| {
        let (status, body) = fresh.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body[key], json!([]), "{path}: {body}");
    };
    empty("/v1/components", "components");
    empty("/v1/secrets", "secrets");
    empty("/v1/devices", "devices");
    empty("/v1/backups", "devices");
    empty("/v1/logs", "logs");
    empty("/v1/flows/top?start=0&end=now&by=src_addr", "rows");
    assert_eq!(
        fresh.query(&[("metric", "ticks"), ("since", "1h")])["series"],
        json!([])
    );
    assert_eq!(fresh.get("/v1/tenant").1["usage"]["series"], 0);
    // Flows that arrive now are the new tenant's (the configuration maps them to it).
    udp.send_to(&netflow_v5([10, 2, 2, 2], 7), ("127.0.0.1", port))
        .unwrap();
    server.wait_flows_stored(2);
    let (_, top) = fresh.get("/v1/flows/top?start=0&end=now&by=src_addr");
    let rows = top["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{top}");
    assert_eq!(rows[0]["group"]["src_addr"], "10.2.2.2");
    // And after a restart too (every store was purged, not just hidden in memory).
    server.stop();
    server.restart();
    let fresh = server.api(&fresh.token);
    assert_eq!(
        fresh.query(&[("metric", "ticks"), ("since", "1h")])["series"],
        json!([])
    );
    let (_, top) = fresh.get("/v1/flows/top?start=0&end=now&by=src_addr");
    assert_eq!(top["rows"].as_array().unwrap().len(), 1, "{top}");
    assert!(
        !server
            .data_path()
            .join("wasm/acme")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "the deleted tenant's component files are gone"
    );
}

#[test]
fn metrics_without_the_admin_token_reveal_no_tenant() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let globex = server.tenant("globex");
    acme.push(&manifest("secret-project", "1", "100ms", ""), TICK_COUNTER);
    acme.wait_for("a tick", Duration::from_secs(30), |api| {
        (!api.points("ticks", "1h").is_empty()).then_some(())
    });
    let anonymous = reqwest::blocking::get(format!("{}/metrics", server.base)).unwrap();
    assert_eq!(anonymous.status(), 401);
    let text = anonymous.text().unwrap();
    assert!(
        !text.contains("acme") && !text.contains("secret-project"),
        "{text}"
    );
    let (status, _) = globex.get("/metrics");
    assert_eq!(status, 403, "a tenant token is not the operator's");
    // A tenant's own view: its series, nobody else's, and nothing process-wide.
    let (status, own) = globex.get("/v1/metrics");
    assert_eq!(status, 200);
    let own = own.as_str().unwrap().to_string();
    assert!(
        !own.contains("acme") && !own.contains("secret-project"),
        "{own}"
    );
    assert!(!own.contains("sotp_uploads_total"), "{own}");
    let (_, acme_view) = acme.get("/v1/metrics");
    let acme_view = acme_view.as_str().unwrap();
    assert!(
        acme_view.contains(
            r#"sotp_component_active_version{tenant="acme",component="secret-project"} 1"#
        ),
        "{acme_view}"
    );
    assert!(!acme_view.contains("globex"));
    // The operator sees everything.
    assert!(server.metrics_text().contains("secret-project"));
}

#[test]
fn an_upload_learns_nothing_of_another_tenants_identical_component() {
    let mut server = Server::start(BIN);
    let acme = server.tenant("acme");
    let globex = server.tenant("globex");
    let first = acme.push(&manifest("a", "1", "1s", ""), TICK_COUNTER);
    assert_eq!(first["compiled_from"], "compiled");
    let again = acme.push(&manifest("b", "1", "1s", ""), TICK_COUNTER);
    assert_eq!(again["compiled_from"], "cache", "the tenant's own cache");
    let theirs = globex.push(&manifest("a", "1", "1s", ""), TICK_COUNTER);
    assert_eq!(
        theirs["compiled_from"], "compiled",
        "identical bytes of another tenant are not a cache hit"
    );
    // Deleting one tenant's copy never removes what another upload relies on.
    assert_eq!(acme.delete("/v1/components/a").0, 204);
    server.stop();
    server.restart();
    for (api, name) in [(&acme, "b"), (&globex, "a")] {
        let api = server.api(&api.token);
        api.wait_for(
            &format!("{name} to run again"),
            Duration::from_secs(30),
            |api| (api.component(name)["state"] == "running").then_some(()),
        );
    }
}
