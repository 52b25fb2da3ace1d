//! Secrets from Vault (KV v2) through the `secrets` capability: a component granted
//! `vault:app/db#password` reads it with the tenant's Vault token or AppRole login; a rotated
//! value is picked up after the provider's TTL without touching the component; a sealed
//! Vault or a refused token is `unavailable` to the guest (never a value in a log or an
//! error); values are cached for the TTL; another tenant has its own provider or none.
//! The Vault is `sotp_tests::vault` (Vault's documented API; no Vault server is installable
//! here).

use serde_json::json;
use sotp_tests::guests::ATTACKER;
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server, manifest};
use sotp_tests::vault::{ROLE_ID, ROOT_TOKEN, SECRET_ID, Vault};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const NAME: &str = "vault:app/db#password";

fn reader(api: &Api, component: &str) {
    api.push(
        &manifest(
            component,
            "1",
            "300ms",
            &format!(
                "[grants]\nsecrets = [\"{NAME}\"]\n[config]\nmode = \"read-secret\"\ntarget = \"{NAME}\"\n"
            ),
        ),
        ATTACKER,
    );
}

/// The newest `metric` of `component` (value, labels).
fn newest(api: &Api, metric: &str, component: &str) -> Option<(f64, serde_json::Value)> {
    api.points(metric, "10m")
        .into_iter()
        .filter(|(l, _, _)| l["component"] == component)
        .max_by_key(|(_, t, _)| *t)
        .map(|(l, _, v)| (v, l))
}

#[test]
fn vault_secrets_rotate_after_their_ttl_and_a_down_vault_is_unavailable() {
    let vault = Vault::start();
    vault.put("app/db", &[("password", "first-pass"), ("user", "app")]);
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/vault-token", json!({ "value": ROOT_TOKEN }))
            .0,
        204
    );
    let (status, body) = acme.put(
        "/v1/secret-providers",
        json!({ "vault": { "address": vault.address(), "ttl": "1s",
                           "auth": { "method": "token", "token_secret": "vault-token" } } }),
    );
    assert_eq!(status, 200, "{body}");
    reader(&acme, "db-reader");
    acme.wait_for("the secret read", Duration::from_secs(30), |api| {
        (newest(api, "secret_len", "db-reader")?.0 == 10.0).then_some(())
    });

    // Rotated in Vault: picked up after the TTL, the component untouched.
    vault.put(
        "app/db",
        &[("password", "second-password!"), ("user", "app")],
    );
    acme.wait_for("the rotated value", Duration::from_secs(15), |api| {
        (newest(api, "secret_len", "db-reader")?.0 == 16.0).then_some(())
    });
    let view = acme.component("db-reader");
    assert_eq!(
        view["active_version"], 1,
        "no new version, no restart: {view}"
    );

    // Sealed: unavailable to the guest, with the reason and without the value.
    vault.seal(true);
    let (_, labels) = acme.wait_for("unavailable", Duration::from_secs(15), |api| {
        let (v, l) = newest(api, "secret_error", "db-reader")?;
        (v == 1.0 && l["kind"] == "unavailable").then_some((v, l))
    });
    assert_eq!(labels["kind"], "unavailable");
    let log = acme.component("db-reader")["recent_log"].to_string();
    assert!(log.contains("sealed"), "{log}");
    assert!(!log.contains("second-password"), "a value leaked: {log}");
    vault.seal(false);

    // A token Vault refuses: unavailable, saying so.
    assert_eq!(
        acme.put("/v1/secrets/vault-token", json!({ "value": "s.wrong" }))
            .0,
        204
    );
    acme.wait_for("a refused token", Duration::from_secs(15), |api| {
        let log = api.component("db-reader")["recent_log"].to_string();
        log.contains("refused the token").then_some(())
    });

    // Another tenant: no provider of its own, so no Vault secret — and AppRole once it sets one.
    let globex = server.tenant("globex");
    reader(&globex, "db-reader");
    globex.wait_for("no provider", Duration::from_secs(15), |api| {
        let log = api.component("db-reader")["recent_log"].to_string();
        log.contains("no Vault provider").then_some(())
    });
    assert_eq!(
        globex
            .put(
                "/v1/secrets/approle-secret-id",
                json!({ "value": SECRET_ID })
            )
            .0,
        204
    );
    let (status, body) = globex.put(
        "/v1/secret-providers",
        json!({ "vault": { "address": vault.address(), "ttl": "1h",
                           "auth": { "method": "approle", "role_id": ROLE_ID,
                                     "secret_id_secret": "approle-secret-id" } } }),
    );
    assert_eq!(status, 200, "{body}");
    globex.wait_for("the AppRole read", Duration::from_secs(15), |api| {
        (newest(api, "secret_len", "db-reader")?.0 == 16.0).then_some(())
    });
    // Cached for its TTL: ticks every 300 ms, Vault read once.
    let reads = vault.reads();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        vault.reads(),
        reads,
        "the value comes from the cache within its TTL"
    );
    assert_eq!(vault.logins(), 1);
    // What globex set is not acme's, and the settings show names only.
    let (_, shown) = globex.get("/v1/secret-providers");
    assert!(!shown.to_string().contains(SECRET_ID), "{shown}");
    let (_, acme_shown) = acme.get("/v1/secret-providers");
    assert_eq!(acme_shown["vault"]["auth"]["method"], "token");

    // Bad settings: a 400 naming the key.
    let (status, body) = acme.put(
        "/v1/secret-providers",
        json!({ "vault": { "address": "ftp://vault", "auth": { "method": "token", "token_secret": "t" } } }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("vault.address"), "{body}");
}
