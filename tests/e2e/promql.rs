//! The Prometheus-compatible read API (`/api/v1/*`) with real clients: `promtool query
//! instant|range` (Debian's prometheus 2.42, basic auth with the token as the password) and
//! plain HTTP as Grafana's data source sends it. Samples come from the `prometheus-scrape`
//! component scraping the test web app's exposition, and (in a lab, as root) from SNMP, MQTT
//! and node_exporter collectors. Another tenant sees nothing; what is not supported is a 400
//! naming it; too much is a 422.

use serde_json::Value;
use sotp_tests::guests::PROMETHEUS_SCRAPE;
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server, manifest};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

/// `GET /api/v1/<path>` as the caller: (status, body).
fn prom(api: &Api, path: &str) -> (u16, Value) {
    api.get(&format!("/api/v1/{path}"))
}

fn promtool(server: &Server, token: &str, args: &[&str]) -> (bool, String) {
    let url =
        server
            .base
            .trim_end_matches('/')
            .replacen("http://", &format!("http://sotp:{token}@"), 1);
    let mut cmd = Command::new("promtool");
    cmd.arg("query")
        .arg(args[0])
        .args(&args[1..args.len() - 1])
        .arg(&url)
        .arg(args[args.len() - 1]);
    let out = cmd
        .output()
        .expect("running promtool (Debian's prometheus package)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_clients_query_a_tenants_samples() {
    let app = sotp_tests::webapp::WebApp::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    acme.push(
        &manifest(
            "scrape",
            "1",
            "1s",
            &format!(
                "[grants]\nhttp = [\"http://127.0.0.1:{}\"]\n[config]\njob = \"app\"\ntargets = [\"{}\"]\n",
                app.port,
                app.url("/metrics/good")
            ),
        ),
        PROMETHEUS_SCRAPE,
    );
    acme.wait_for("a few scrapes", Duration::from_secs(30), |api| {
        (api.points("app_requests_total", "1m").len() >= 3).then_some(())
    });

    // An instant query, the plain HTTP way: Prometheus's envelope, the series' labels.
    let (status, body) = prom(&acme, "query?query=app_requests_total");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    let result = &body["data"]["result"][0];
    assert_eq!(result["metric"]["__name__"], "app_requests_total");
    assert_eq!(result["metric"]["code"], "200");
    assert_eq!(result["metric"]["job"], "app");
    assert_eq!(result["value"][1], "42");

    // What dashboards use: aggregation, arithmetic with a scalar, rate, topk, comparisons.
    let value = |q: &str| {
        let (status, body) = prom(
            &acme,
            &format!("query?query={}", sotp_tests::harness::urlencode(q)),
        );
        assert_eq!(status, 200, "{q}: {body}");
        body["data"]["result"].clone()
    };
    let by_job = value("sum by (job) (app_requests_total)");
    assert_eq!(by_job[0]["metric"], serde_json::json!({ "job": "app" }));
    assert_eq!(by_job[0]["value"][1], "42");
    let doubled = value("app_requests_total * 2");
    assert_eq!(doubled[0]["value"][1], "84");
    assert!(
        doubled[0]["metric"].get("__name__").is_none(),
        "arithmetic drops the name"
    );
    assert_eq!(value("rate(app_requests_total[30s])")[0]["value"][1], "0");
    assert_eq!(value("count(app_up)")[0]["value"][1], "1");
    assert_eq!(value("topk(1, app_up)")[0]["metric"]["__name__"], "app_up");
    assert_eq!(value("app_up > 5").as_array().unwrap().len(), 0);
    let (_, scalar) = prom(&acme, "query?query=1%2B1");
    assert_eq!(scalar["data"]["result"][1], "2");

    // promtool, a real Prometheus client: instant and range, the token as the password.
    let (ok, out) = promtool(&server, &acme.token, &["instant", "app_requests_total"]);
    assert!(ok && out.contains("=> 42 @"), "{out}");
    let now = sotp_runtime::now_ms() / 1000;
    let (start, end) = ((now - 20).to_string(), now.to_string());
    let (ok, out) = promtool(
        &server,
        &acme.token,
        &[
            "range",
            "--start",
            &start,
            "--end",
            &end,
            "--step",
            "5s",
            "sum(app_up)",
        ],
    );
    assert!(ok && out.contains("1 @["), "{out}");

    // Series, labels and label values, as Grafana's query editor asks.
    let (_, series) = prom(&acme, "series?match[]=app_up");
    assert_eq!(series["data"][0]["job"], "app");
    let (_, labels) = prom(&acme, "labels");
    let labels = labels["data"].to_string();
    assert!(
        labels.contains("\"code\"") && labels.contains("\"__name__\""),
        "{labels}"
    );
    let (_, names) = prom(&acme, "label/__name__/values");
    assert!(
        names["data"].to_string().contains("app_requests_total"),
        "{names}"
    );

    // Another tenant: the same queries find nothing of acme's.
    let globex = server.tenant("globex");
    let (status, theirs) = prom(&globex, "query?query=app_requests_total");
    assert_eq!(status, 200);
    assert_eq!(theirs["data"]["result"], serde_json::json!([]));
    let (ok, out) = promtool(&server, &globex.token, &["instant", "app_requests_total"]);
    assert!(ok && !out.contains("42"), "{out}");
    let (_, names) = prom(&globex, "label/__name__/values");
    assert_eq!(names["data"], serde_json::json!([]));

    // Bad input: a 4xx that says why.
    let (status, body) = prom(&acme, "query?query=holt_winters(app_up%5B5m%5D,0.5,0.5)");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("holt_winters"),
        "{body}"
    );
    let (status, body) = prom(&acme, "query?query=rate(app_up%5B5m%5D%5B10m:1m%5D)");
    assert!(status == 400, "{body}");
    let (status, body) = prom(&acme, "query?query=sum(");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errorType"], "bad_data");
    let (status, body) = prom(
        &acme,
        &format!("query_range?query=app_up&start=0&end={now}&step=1"),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("11000"), "{body}");
    let anonymous = reqwest::blocking::get(format!("{}/api/v1/query?query=app_up", server.base))
        .unwrap()
        .status();
    assert_eq!(anonymous.as_u16(), 401);
    // Each refusal counted for the operator, by reason.
    let refused = |reason: &str| {
        server
            .metric_value(&format!(
                "sotp_query_refused_total{{api=\"promql\",reason=\"{reason}\"}}"
            ))
            .unwrap()
    };
    assert_eq!(refused("invalid"), 3.0);
    assert_eq!(refused("too_large"), 1.0);
}

/// Every query of every example dashboard (docs/dashboards) is one SOTP answers: the
/// Prometheus ones through `/api/v1/query_range`, the Loki ones through
/// `/loki/api/v1/query_range`, each a 200 — nothing in them is a construct SOTP refuses.
#[test]
fn the_example_dashboards_use_only_what_sotp_answers() {
    let port = sotp_tests::mosquitto::free_port();
    let server = Server::start_with_config(
        BIN,
        &format!("[runtime.flows]\nipfix = [\"127.0.0.1:{port}\"]\ndefault_tenant = \"acme\"\n"),
        &[],
    );
    let acme = server.tenant("acme");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboards");
    let mut checked = 0;
    let now = sotp_runtime::now_ms() / 1000;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let board: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let api = match target["datasource"]["type"].as_str().unwrap() {
                    "prometheus" => "api/v1",
                    "loki" => "loki/api/v1",
                    other => panic!("{}: a {other} data source", path.display()),
                };
                let (status, body) = acme.get(&format!(
                    "/{api}/query_range?query={}&start={}&end={now}&step=60",
                    sotp_tests::harness::urlencode(expr),
                    now - 6 * 3600
                ));
                assert_eq!(status, 200, "{}: `{expr}`: {body}", path.display());
                assert_eq!(body["status"], "success");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} queries");
}

/// `promtool query instant|range` over the three kinds of samples operators chart first:
/// SNMP (snmp-interfaces polling net-snmp on a lab router), MQTT (mqtt-sensors on a real
/// Mosquitto) and node_exporter (prometheus-scrape of Debian's node_exporter in a lab host).
/// Each answers with its series and values; another tenant's token finds none of them.
/// Needs root (a lab).
#[test]
fn promtool_reads_snmp_mqtt_and_node_exporter_samples() {
    use sotp_tests::guests::{MQTT_SENSORS, SNMP_INTERFACES};
    let lab = sotp_tests::harness::basic_lab(28);
    let (exporter, _) = sotp_tests::harness::start_node_exporter(&lab, "access1");
    let core1 = lab.node("core1").unwrap().management_address.to_string();
    let broker = sotp_tests::mosquitto::Mosquitto::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");

    // SNMP: core1 over v2c, its community a secret.
    let (status, _) = acme.put(
        "/v1/secrets/lab-community",
        serde_json::json!({ "value": sotp_labs::lab::COMMUNITY }),
    );
    assert_eq!(status, 204);
    let (status, body) = acme.put(
        "/v1/devices/core1",
        serde_json::json!({ "name": "core1", "address": core1, "tags": ["snmp"],
            "snmp": { "version": "2c", "community_secret": "lab-community" } }),
    );
    assert_eq!(status, 201, "{body}");
    acme.push(
        &manifest(
            "snmp-interfaces",
            "1",
            "2s",
            "[limits]\ncpu_ms = 500\n[grants]\ndevices = [\"tag:snmp\"]\n",
        ),
        SNMP_INTERFACES,
    );
    // node_exporter.
    acme.push(
        &manifest(
            "node-scrape",
            "1",
            "3s",
            &format!(
                "[limits]\nmemory = \"64MiB\"\ncpu_ms = 2000\nwall_ms = 14000\n\
                 [grants]\nhttp = [\"http://{exporter}\"]\n\
                 [config]\njob = \"node\"\ntargets = [\"http://{exporter}/metrics\"]\n"
            ),
        ),
        PROMETHEUS_SCRAPE,
    );
    // MQTT: home/<room>/<quantity> → sensor_<quantity>{room, device}.
    let (status, body) = acme.put(
        "/v1/mqtt",
        serde_json::json!({ "host": "127.0.0.1", "port": broker.port }),
    );
    assert_eq!(status, 200, "{body}");
    acme.push(
        &manifest(
            "mqtt-sensors",
            "1",
            "1h",
            "[grants]\ntopics = [\"home/#\"]\n\
             [[config.routes]]\nfilter = \"home/+/+\"\npattern = \"home/{room}/{quantity}\"\n\
             metric = \"sensor_{quantity}\"\nvalue_field = \"value\"\ndevice_field = \"device\"\n",
        ),
        MQTT_SENSORS,
    );
    acme.wait_for("the MQTT subscription", Duration::from_secs(30), |api| {
        let (_, s) = api.get("/v1/mqtt");
        (s["connected"] == true && s["subscriptions"].to_string().contains("home/+/+"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    sotp_tests::mosquitto::publish_lines_to(
        broker.port,
        "home/kitchen/temperature",
        "{\"value\": 21.5, \"device\": \"dev-kitchen\"}\n",
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for metric in [
        "if_oper_status",
        "sensor_temperature",
        "node_memory_MemTotal_bytes",
    ] {
        while acme.points(metric, "5m").is_empty() {
            if std::time::Instant::now() > deadline {
                let (_, components) = acme.get("/v1/components");
                let (_, logs) = acme.get("/v1/logs?limit=20");
                panic!("no {metric} samples:\n{components}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_secs(5)); // a few more polls and scrapes for the range

    let instant = |token: &str, q: &str| promtool(&server, token, &["instant", q]);
    let (ok, out) = instant(
        &acme.token,
        "if_oper_status{device=\"core1\", ifname=\"eth1\"}",
    );
    assert!(
        ok && out.contains("device=\"core1\"") && out.contains("=> 1 @"),
        "{out}"
    );
    let (ok, out) = instant(&acme.token, "sensor_temperature{room=\"kitchen\"}");
    assert!(
        ok && out.contains("device=\"dev-kitchen\"") && out.contains("=> 21.5 @"),
        "{out}"
    );
    let (ok, out) = instant(&acme.token, "node_memory_MemTotal_bytes{job=\"node\"}");
    assert!(
        ok && out.contains(&format!("instance=\"{exporter}\"")),
        "{out}"
    );
    let total: f64 = out
        .split("=> ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a value in {out}"));
    assert!(total > 1e8, "{out}");

    let now = sotp_runtime::now_ms() / 1000;
    let (start, end) = ((now - 30).to_string(), now.to_string());
    let range = |token: &str, q: &str| {
        promtool(
            &server,
            token,
            &["range", "--start", &start, "--end", &end, "--step", "5s", q],
        )
    };
    let (ok, out) = range(
        &acme.token,
        "sum by (device) (rate(if_in_octets_total{device=\"core1\"}[30s]))",
    );
    assert!(ok && out.contains("{device=\"core1\"} =>"), "{out}");
    let (ok, out) = range(
        &acme.token,
        "avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[30s]))",
    );
    assert!(
        ok && out.contains(&format!("{{instance=\"{exporter}\"}} =>")),
        "{out}"
    );

    // Another tenant's token: nothing of acme's, for any of them.
    let globex = server.tenant("globex");
    for q in [
        "if_oper_status",
        "sensor_temperature",
        "node_memory_MemTotal_bytes",
    ] {
        let (ok, out) = instant(&globex.token, q);
        assert!(ok && !out.contains("=>"), "{q}: {out}");
    }
    let (ok, out) = range(&globex.token, "rate(if_in_octets_total[30s])");
    assert!(ok && !out.contains("=>"), "{out}");
}
