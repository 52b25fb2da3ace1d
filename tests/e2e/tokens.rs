//! Scoped and expiring tokens: every endpoint refuses a token without the scope its
//! OpenAPI operation names (`x-sotp-scope`), a manifest that grants secrets or devices needs
//! the `secrets` scope, tokens expire, the last admin token cannot be revoked, and
//! `admin.token` is not needed once read.

use serde_json::{Value, json};
use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::{Api, Server, manifest};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

/// Call `method path` with `api`, with a small valid-looking body for writes.
fn call(api: &Api, method: &str, path: &str) -> (u16, Value) {
    match method {
        "get" => api.get(path),
        "delete" => api.delete(path),
        "put" => api.put(path, json!({})),
        "post" if path == "/v1/components" => api.upload("name = \"x\"", b"\0asm", true),
        _ => api.post(path, json!({})),
    }
}

#[test]
fn every_endpoint_refuses_a_token_without_its_scope() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let (_, doc) = acme.get("/v1/openapi.json");
    let mut checked = 0;
    for scope in ["read", "deploy", "inventory", "secrets", "ingest", "rum"] {
        let token = acme.scoped(&format!("only-{scope}"), &[scope]);
        for (path, ops) in doc["paths"].as_object().unwrap() {
            let concrete = path.replace("{name}", "nothing").replace("{id}", "nothing");
            for (method, op) in ops.as_object().unwrap() {
                let Some(needs) = op["x-sotp-scope"].as_str() else {
                    continue; // unauthenticated: /healthz, /readyz, the document itself
                };
                let (status, body) = call(&token, method, &concrete);
                // Every scope but ingest and rum (intake only) reads; ingest sends spans too.
                let write_only = scope == "ingest" || scope == "rum";
                let allowed = needs == scope
                    || (needs == "read" && !write_only)
                    || (needs == "rum" && scope == "ingest");
                let refused_for_scope = status == 403
                    && body["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("scope") || d.contains("admin token"));
                assert_eq!(
                    !refused_for_scope, allowed,
                    "{method} {path} (needs {needs}) with a {scope} token: {status} {body}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} calls checked");
}

#[test]
fn a_read_token_cannot_upload_and_granting_secrets_needs_the_secrets_scope() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let wasm = std::fs::read(TICK_COUNTER).unwrap();
    let plain = manifest("ticker", "1", "1s", "");
    let granting = manifest(
        "ticker",
        "2",
        "1s",
        "[grants]\nsecrets = [\"db-password\"]\ndevices = [\"tag:core\"]\n",
    );

    let read = acme.scoped("dashboards", &["read"]);
    let (status, body) = read.upload(&plain, &wasm, true);
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("`deploy` scope"));

    let deploy = acme.scoped("ci", &["deploy"]);
    assert_eq!(deploy.upload(&plain, &wasm, true).0, 201);
    let (status, body) = deploy.upload(&granting, &wasm, true);
    assert_eq!(status, 403, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("grants.secrets and grants.devices") && detail.contains("`secrets`"),
        "{detail}"
    );
    // The deploy token reads, but cannot touch secrets or hand out tokens.
    assert_eq!(deploy.get("/v1/components").0, 200);
    assert_eq!(
        deploy
            .put("/v1/secrets/db-password", json!({ "value": "x" }))
            .0,
        403
    );
    let (status, _) = deploy.post("/v1/tokens", json!({ "scopes": ["read"] }));
    assert_eq!(status, 403);

    let trusted = acme.scoped("release", &["deploy", "secrets"]);
    let (status, body) = trusted.upload(&granting, &wasm, true);
    assert_eq!(status, 201, "{body}");

    // Unknown scopes are a 400 that lists the real ones.
    let (status, body) = acme.post("/v1/tokens", json!({ "scopes": ["root"] }));
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("read, deploy"));
    // Listing shows scopes and expiry, never a token value.
    let (_, list) = acme.get("/v1/tokens");
    let ci = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    assert_eq!(ci["scopes"], json!(["deploy"]));
    assert_eq!(ci["expires_ms"], Value::Null);
    assert!(!list.to_string().contains(&deploy.token));
}

#[test]
fn tokens_expire() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let (status, body) = acme.post(
        "/v1/tokens",
        json!({ "name": "short", "scopes": ["read"], "expires_in": "2s" }),
    );
    assert_eq!(status, 201, "{body}");
    let short = server.api(body["token"].as_str().unwrap());
    assert_eq!(short.get("/v1/components").0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = short.get("/v1/components");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (status, _) = acme.post("/v1/tokens", json!({ "expires_in": "soon" }));
    assert_eq!(status, 400);
}

#[test]
fn the_last_admin_token_stays_and_admin_token_file_is_not_needed() {
    let mut server = Server::start(BIN);
    let admin = server.admin();
    let (_, list) = admin.get("/v1/tokens");
    let first = list["tokens"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = admin.delete(&format!("/v1/tokens/{first}"));
    assert_eq!(status, 409, "the only admin token: {body}");

    let (status, body) = admin.post("/v1/tokens", json!({ "name": "second" }));
    assert_eq!(status, 201, "{body}");
    let second = server.api(body["token"].as_str().unwrap());
    assert_eq!(second.delete(&format!("/v1/tokens/{first}")).0, 204);
    assert_eq!(admin.get("/v1/tenants").0, 401, "revoked");
    server.admin_token = second.token.clone();

    // A tenant's own last admin-scoped token is kept too.
    let acme = server.tenant("acme");
    let (_, list) = acme.get("/v1/tokens");
    let initial = list["tokens"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(acme.delete(&format!("/v1/tokens/{initial}")).0, 409);

    // admin.token can go once read: a restart neither needs nor rewrites it.
    std::fs::remove_file(server.data_path().join("admin.token")).unwrap();
    server.stop();
    server.restart();
    assert!(!server.data_path().join("admin.token").exists());
    assert_eq!(server.admin().get("/v1/tenants").0, 200);
}

#[test]
fn an_inventory_token_cannot_point_a_device_with_secrets_elsewhere() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let with_secret = |address: &str, tags: &[&str]| {
        json!({ "name": "r1", "address": address, "tags": tags,
                "ssh": { "user": "backup", "password_secret": "ssh-password" } })
    };
    let inventory = acme.scoped("cmdb-sync", &["inventory"]);

    // Creating a device that names a secret needs the secrets scope...
    let (status, body) = inventory.put("/v1/devices/r1", with_secret("192.0.2.1", &[]));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("`secrets` scope"),
        "{body}"
    );
    let (status, body) = inventory.post(
        "/v1/devices/import",
        json!({ "devices": [with_secret("192.0.2.1", &[])] }),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(acme.get("/v1/devices/r1").0, 404, "nothing stored");

    // ...so does sending its credentials to another address; retagging it does not.
    assert_eq!(
        acme.put("/v1/devices/r1", with_secret("192.0.2.1", &[])).0,
        201
    );
    let (status, body) = inventory.put("/v1/devices/r1", with_secret("192.0.2.1", &["core"]));
    assert_eq!(status, 200, "{body}");
    let (status, body) = inventory.put("/v1/devices/r1", with_secret("198.51.100.7", &["core"]));
    assert_eq!(status, 403, "{body}");
    let (_, stored) = acme.get("/v1/devices/r1");
    assert_eq!(stored["address"], "192.0.2.1");
    assert_eq!(stored["tags"], json!(["core"]));

    // Forgetting the pinned host key would trust the next key offered: secrets scope too.
    let (status, body) = inventory.delete("/v1/devices/r1/ssh-host-key");
    assert_eq!(status, 403, "{body}");
    let secrets = acme.scoped("keys", &["secrets"]);
    assert_eq!(secrets.delete("/v1/devices/r1/ssh-host-key").0, 204);
}

#[test]
fn a_token_cannot_outlive_the_token_that_made_it() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let (status, body) = acme.post(
        "/v1/tokens",
        json!({ "name": "hour", "scopes": ["admin"], "expires_in": "1h" }),
    );
    assert_eq!(status, 201, "{body}");
    let hour = server.api(body["token"].as_str().unwrap());
    for request in [
        json!({ "name": "forever" }),
        json!({ "name": "day", "expires_in": "24h" }),
    ] {
        let (status, body) = hour.post("/v1/tokens", request);
        assert_eq!(status, 201, "{body}");
    }
    let (_, list) = acme.get("/v1/tokens");
    let expiry = |name: &str| {
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no token {name}: {list}"))["expires_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} never expires: {list}"))
    };
    let creator = expiry("hour");
    assert!(expiry("forever") <= creator, "{list}");
    assert!(expiry("day") <= creator, "{list}");
}
