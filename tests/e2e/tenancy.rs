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
