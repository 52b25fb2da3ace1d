//! The Azure Monitor collector against a server following Azure's documented REST API with
//! recorded bodies (`tests/src/azure.rs`, `tests/data/azure/`: no emulator exists): it signs
//! in with client credentials (one token per audience, reused), reads metric definitions,
//! queries both VMs in one batch, stores their values at Azure's timestamps, fills a late
//! datapoint without storing any twice, reports a 429 and recovers, names a refused client
//! secret without showing it, and another tenant reads nothing of it.

use serde_json::json;
use sotp_tests::azure::{self, Azure, CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT_ID};
use sotp_tests::guests::AZURE_MONITOR;
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server, manifest};
use std::collections::BTreeMap;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

fn collector(api: &Api, name: &str, endpoint: &str, secret: &str) {
    api.push(
        &manifest(
            name,
            "1",
            "2s",
            &format!(
                r#"[limits]
wall_ms = 15000
[grants]
secrets = ["{secret}"]
http = ["{endpoint}"]
[config]
tenant_id = "{TENANT_ID}"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
region = "westeurope"
namespace = "Microsoft.Compute/virtualMachines"
metrics = ["Percentage CPU", "Network In Total", "Bogus Metric"]
resources = ["{web1}", "{web2}"]
delay_s = 0
lookback_s = 600
login_endpoint = "{endpoint}"
arm_endpoint = "{endpoint}"
metrics_endpoint = "{endpoint}"
"#,
                web1 = azure::vm("web1"),
                web2 = azure::vm("web2"),
            ),
        ),
        AZURE_MONITOR,
    );
}

/// (resource_name, timestamp) → values of `metric` from `component`.
fn points(api: &Api, metric: &str, component: &str) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for (labels, t, v) in api.points(metric, "1h") {
        if labels["component"] == component {
            let name = labels["resource_name"].as_str().unwrap_or("").to_string();
            out.entry((name, t)).or_default().push(v);
        }
    }
    out
}

fn log_of(api: &Api, component: &str) -> String {
    let (_, emitted) = api.get(&format!("/v1/logs?component={component}&limit=200"));
    format!("{}\n{emitted}", api.component(component)["recent_log"])
}

#[test]
fn azure_monitor_metrics_of_granted_resources() {
    let azure = Azure::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/azure", json!({ "value": CLIENT_SECRET }))
            .0,
        204
    );
    collector(&acme, "az", &azure.url(), "azure");

    // Both VMs, three minutes each, with the recorded values (average CPU is the metric's
    // primary aggregation, total for network: from the definitions).
    let cpu = acme.wait_for("the CPU series", Duration::from_secs(60), |api| {
        let cpu = points(api, "azure_virtualmachines_percentage_cpu_average", "az");
        (cpu.len() >= 6).then_some(cpu)
    });
    let web1: Vec<f64> = cpu
        .iter()
        .filter(|((n, _), _)| n == "web1")
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert_eq!(web1, vec![12.5, 14.25, 9.75], "{cpu:?}");
    let times: Vec<i64> = cpu
        .keys()
        .filter(|(n, _)| n == "web2")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(times[1] - times[0], 60_000);
    let (labels, _, _) = acme
        .points("azure_virtualmachines_percentage_cpu_average", "1h")
        .into_iter()
        .find(|(l, _, _)| l["resource_name"] == "web2")
        .unwrap();
    assert_eq!(labels["subscription_id"], SUBSCRIPTION);
    assert_eq!(labels["resource_group"], "web");
    assert_eq!(labels["resource_id"], azure::vm("web2").to_lowercase());
    let net = points(&acme, "azure_virtualmachines_network_in_total_total", "az");
    assert_eq!(net.len(), 4, "the third minute has no data yet: {net:?}");
    assert!(log_of(&acme, "az").contains("`Bogus Metric` is not defined"));

    // The third minute's network total arrives late: filled in, nothing stored twice.
    azure.arrive_late(524288.0);
    acme.wait_for("the late datapoint", Duration::from_secs(30), |api| {
        (points(api, "azure_virtualmachines_network_in_total_total", "az").len() == 6).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    for metric in [
        "azure_virtualmachines_percentage_cpu_average",
        "azure_virtualmachines_network_in_total_total",
    ] {
        for (key, values) in points(&acme, metric, "az") {
            assert_eq!(values.len(), 1, "{metric} {key:?} stored twice");
        }
    }
    // Signed in once per audience (Resource Manager, metrics), the tokens reused since.
    assert_eq!(azure.sign_ins(), 2);

    // Throttled: reported, then recovered on a later run.
    azure.throttle_next(1);
    acme.wait_for("the 429 reported", Duration::from_secs(30), |api| {
        api.points("azure_api_throttled", "10m")
            .into_iter()
            .any(|(l, _, v)| l["component"] == "az" && v == 1.0)
            .then_some(())
    });
    assert!(log_of(&acme, "az").contains("throttled by Azure (429)"));
    let queries = azure.queries();
    acme.wait_for("queries again", Duration::from_secs(30), |_| {
        (azure.queries() > queries).then_some(())
    });

    // A wrong client secret: Entra ID's refusal named, the secret never shown.
    assert_eq!(
        acme.put(
            "/v1/secrets/azure-wrong",
            json!({ "value": "not-the-secret" })
        )
        .0,
        204
    );
    collector(&acme, "az-wrong", &azure.url(), "azure-wrong");
    let log = acme.wait_for("the refused sign-in", Duration::from_secs(30), |api| {
        let log = log_of(api, "az-wrong");
        log.contains("AADSTS7000215").then_some(log)
    });
    assert!(log.contains("invalid_client"), "{log}");
    assert!(!log.contains("not-the-secret"), "the secret leaked: {log}");

    // Another tenant: no secret, no data of acme's.
    let globex = server.tenant("globex");
    collector(&globex, "az", &azure.url(), "azure");
    globex.wait_for("no such secret", Duration::from_secs(30), |api| {
        log_of(api, "az")
            .contains("no secret named `azure`")
            .then_some(())
    });
    assert!(
        globex
            .points("azure_virtualmachines_percentage_cpu_average", "1h")
            .is_empty()
    );
}
