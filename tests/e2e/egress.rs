//! The operator's egress policy: what tenants cannot make SOTP connect to — this host's
//! loopback, the cloud metadata service, link-local neighbours — for MQTT brokers and for
//! devices reached over SNMP and SSH, unless the operator allows it; and MQTT client ids are
//! the host's to choose.

use serde_json::json;
use sotp_tests::guests::ATTACKER;
use sotp_tests::harness::{Server, manifest};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

#[test]
fn tenants_cannot_make_sotp_connect_to_the_hosts_surroundings() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    for host in [
        "127.0.0.1",
        "localhost",
        "169.254.169.254",
        "::1",
        "fe80::1",
    ] {
        let (status, body) = acme.put("/v1/mqtt", json!({ "host": host, "port": 1883 }));
        assert_eq!(status, 400, "{host}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("runtime.egress"), "{host}: {detail}");
    }
    let (status, body) = acme.put(
        "/v1/mqtt",
        json!({ "host": "10.255.0.1", "port": 1883, "client_id": "sotp-globex" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("client_id"),
        "{body}"
    );

    // Devices: the grant checks pass, the address does not.
    assert_eq!(
        acme.put("/v1/secrets/community", json!({ "value": "public" }))
            .0,
        204
    );
    for (name, address) in [("self", "127.0.0.1"), ("metadata", "169.254.169.254")] {
        let (status, body) = acme.put(
            &format!("/v1/devices/{name}"),
            json!({ "name": name, "address": address,
                    "snmp": { "version": "2c", "community_secret": "community" } }),
        );
        assert_eq!(status, 201, "{body}");
        acme.push(
            &manifest(
                &format!("probe-{name}"),
                "1",
                "200ms",
                &format!(
                    "[grants]\ndevices = [\"{name}\"]\n[config]\nmode = \"snmp\"\ntarget = \"{name}\"\n"
                ),
            ),
            ATTACKER,
        );
    }
    let results = acme.wait_for("both probes to run", Duration::from_secs(30), |api| {
        let points = api.points("snmp_result", "1h");
        let seen = |t: &str| points.iter().any(|(l, _, _)| l["target"] == t);
        (seen("self") && seen("metadata")).then_some(points)
    });
    for (labels, _, value) in &results {
        assert_eq!(*value, 0.0, "denied, not attempted: {labels}");
    }
    let view = acme.component("probe-metadata");
    let log = view["recent_log"].to_string();
    assert!(
        log.contains("169.254.169.254 is not reachable from SOTP"),
        "{log}"
    );
    assert!(view["counters"]["denied"].as_u64().unwrap() >= 1, "{view}");
}
