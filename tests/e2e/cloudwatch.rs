//! The CloudWatch collector against a real AWS emulator (moto, with IAM authentication and
//! signature checks on): metrics put by the test with boto3 come back with their dimensions
//! and timestamps; a datapoint that arrives late fills its gap and none is stored twice;
//! throttling replies (a proxy in front of moto answers them) back off, slow the account's
//! limiter and recover; AssumeRole works; wrong keys give a clear error; the run's API calls
//! and price are reported; another tenant cannot use the keys.

use serde_json::{Value, json};
use sotp_tests::guests::CLOUDWATCH;
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server, manifest};
use sotp_tests::moto::{ACCOUNT, Moto, ROLE_ARN, ThrottlingProxy};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const NAMESPACE: &str = "SOTP/Test";

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn collector(api: &Api, name: &str, endpoint: &str, secret: &str, role: Option<&str>) {
    let role = role
        .map(|r| format!("role_arn = \"{r}\"\n"))
        .unwrap_or_default();
    api.push(
        &manifest(
            name,
            "1",
            "2s",
            &format!(
                r#"[limits]
wall_ms = 20000
[grants]
secrets = ["{secret}"]
http = ["{endpoint}"]
[config]
region = "us-east-1"
credentials_secret = "{secret}"
endpoint = "{endpoint}"
sts_endpoint = "{endpoint}"
{role}period_s = 60
delay_s = 0
lookback_s = 900
timeout_ms = 15000
[[config.metrics]]
namespace = "{NAMESPACE}"
dimensions = ["Host"]
statistics = ["Average", "Maximum"]
"#
            ),
        ),
        CLOUDWATCH,
    );
}

/// Points of `metric` from `component`: (dimension_Host, timestamp ms) → values.
fn points(api: &Api, metric: &str, component: &str) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for (labels, t, v) in api.points(metric, "1h") {
        if labels["component"] == component {
            let host = labels["dimension_Host"].as_str().unwrap_or("").to_string();
            out.entry((host, t)).or_default().push(v);
        }
    }
    out
}

fn newest(api: &Api, metric: &str, component: &str) -> Option<(Value, f64)> {
    api.points(metric, "10m")
        .into_iter()
        .filter(|(l, _, _)| l["component"] == component)
        .max_by_key(|(_, t, _)| *t)
        .map(|(l, _, v)| (l, v))
}

/// The component's own log (host lines, its errors) and the lines it emitted.
fn log_of(api: &Api, component: &str) -> String {
    let (_, emitted) = api.get(&format!("/v1/logs?component={component}&limit=200"));
    format!("{}\n{emitted}", api.component(component)["recent_log"])
}

#[test]
fn cloudwatch_metrics_come_back_with_dimensions_through_throttling_and_late_data() {
    let moto = Moto::start();
    let proxy = ThrottlingProxy::start(&moto.endpoint());
    let t0 = now_s() / 60 * 60 - 240;
    moto.put_metric(
        NAMESPACE,
        &[
            ("Latency", vec![("Host", "web1")], t0, 10.0),
            ("Latency", vec![("Host", "web1")], t0, 30.0),
            ("Latency", vec![("Host", "web1")], t0 + 60, 12.0),
            ("Latency", vec![("Host", "web2")], t0 + 60, 7.5),
            // No Host dimension: not discovered by a job asking for Host.
            ("Latency", vec![("Zone", "a")], t0 + 60, 99.0),
        ],
    );

    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/aws", json!({ "value": moto.keys_json() }))
            .0,
        204
    );
    collector(&acme, "cw", &proxy.url(), "aws", None);

    // The datapoints, with their dimensions and CloudWatch's timestamps (period 60 s).
    let seen = acme.wait_for(
        "the CloudWatch datapoints",
        Duration::from_secs(60),
        |api| {
            let avg = points(api, "aws_sotp_test_latency_average", "cw");
            (avg.len() >= 3).then_some(avg)
        },
    );
    let t0_ms = t0 * 1000;
    assert_eq!(seen[&("web1".into(), t0_ms)], vec![20.0], "{seen:?}");
    assert_eq!(seen[&("web1".into(), t0_ms + 60_000)], vec![12.0]);
    assert_eq!(seen[&("web2".into(), t0_ms + 60_000)], vec![7.5]);
    assert!(
        !seen.keys().any(|(h, _)| h.is_empty()),
        "Zone-only metric discovered: {seen:?}"
    );
    let max = points(&acme, "aws_sotp_test_latency_maximum", "cw");
    assert_eq!(max[&("web1".into(), t0_ms)], vec![30.0]);
    let (labels, _) = newest(&acme, "aws_sotp_test_latency_average", "cw").unwrap();
    assert_eq!(labels["account_id"], ACCOUNT);
    assert_eq!(labels["region"], "us-east-1");

    // What a run costs, planned and actual, and the calls it made.
    let (_, planned) = newest(&acme, "cloudwatch_run_planned_cost_usd", "cw").unwrap();
    assert!(
        (planned - 4.0 * 0.01 / 1000.0).abs() < 1e-12,
        "2 metrics × 2 statistics: {planned}"
    );
    let (labels, calls) = acme.wait_for("GetMetricData counted", Duration::from_secs(10), |api| {
        api.points("cloudwatch_api_requests", "10m")
            .into_iter()
            .find(|(l, _, _)| l["component"] == "cw" && l["action"] == "GetMetricData")
            .map(|(l, _, v)| (l, v))
    });
    assert!(calls >= 1.0, "{labels} {calls}");
    assert!(
        log_of(&acme, "cw").contains("GetMetricData"),
        "the run's log line"
    );
    // A month of runs at the interval seen (2 s): the run's cost × 1,296,000.
    let (_, monthly) = acme.wait_for("the monthly projection", Duration::from_secs(10), |api| {
        newest(api, "cloudwatch_monthly_cost_usd", "cw")
    });
    assert!(monthly > 0.0, "{monthly}");
    assert!(log_of(&acme, "cw").contains("a month at one run every"));

    // Late data: a datapoint put now for a minute already read fills its gap on a later
    // run; nothing is stored twice.
    moto.put_metric(
        NAMESPACE,
        &[("Latency", vec![("Host", "web2")], t0 - 60, 5.0)],
    );
    acme.wait_for("the late datapoint", Duration::from_secs(30), |api| {
        points(api, "aws_sotp_test_latency_average", "cw")
            .get(&("web2".into(), t0_ms - 60_000))
            .cloned()
    });
    std::thread::sleep(Duration::from_secs(5));
    let all = points(&acme, "aws_sotp_test_latency_average", "cw");
    for (key, values) in &all {
        assert_eq!(values.len(), 1, "{key:?} stored {} times", values.len());
    }

    // Throttling: three replies in a row back off and the run still completes.
    let before = proxy.counts();
    proxy.throttle_next(3);
    acme.wait_for("a throttled run", Duration::from_secs(60), |api| {
        api.points("cloudwatch_api_throttled", "10m")
            .into_iter()
            .any(|(l, _, v)| l["component"] == "cw" && v >= 1.0)
            .then_some(())
    });
    let after_throttle = proxy.counts();
    assert_eq!(after_throttle.1 - before.1, 3);
    let forwarded = after_throttle.0;
    acme.wait_for("a run after throttling", Duration::from_secs(30), |_| {
        (proxy.counts().0 > forwarded + 2).then_some(())
    });
    let metrics = server.metrics_text();
    let throttled: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sotp_component_aws_throttled_total") && l.contains("\"cw\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(throttled >= 3.0, "{metrics}");
    // The account's limiter slowed down for every component of the tenant (it recovers by
    // one request a second per quiet 10 s, so it is still below 10 here).
    let rate: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("sotp_aws_account_requests_per_second")
                && l.contains("\"acme\"")
                && l.contains(ACCOUNT)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN);
    assert!(rate < 10.0, "{metrics}");
    let view = acme.component("cw");
    let traps = view["counters"]["traps"].as_object().unwrap();
    assert!(traps.values().all(|v| v == 0), "no trap: {view}");
    assert_eq!(view["counters"]["errors"], 0, "no failed run: {view}");

    // AssumeRole: the same metrics, called as the role.
    collector(&acme, "cw-role", &moto.endpoint(), "aws", Some(ROLE_ARN));
    acme.wait_for("datapoints as the role", Duration::from_secs(60), |api| {
        (points(api, "aws_sotp_test_latency_average", "cw-role").len() >= 3).then_some(())
    });

    // Wrong keys: a clear error naming AWS's answer, the secret never shown.
    let wrong = json!({ "access_key_id": moto.key_id, "secret_access_key": "not-the-secret" });
    assert_eq!(
        acme.put(
            "/v1/secrets/aws-wrong",
            json!({ "value": wrong.to_string() })
        )
        .0,
        204
    );
    collector(&acme, "cw-wrong", &moto.endpoint(), "aws-wrong", None);
    let log = acme.wait_for("the refused signature", Duration::from_secs(60), |api| {
        let log = log_of(api, "cw-wrong");
        log.contains("SignatureDoesNotMatch").then_some(log)
    });
    assert!(
        log.contains("GetCallerIdentity") || log.contains("ListMetrics"),
        "{log}"
    );
    assert!(!log.contains("not-the-secret"), "the secret leaked: {log}");
    let unknown = json!({ "access_key_id": "AKIAUNKNOWN000000000", "secret_access_key": "x" });
    assert_eq!(
        acme.put(
            "/v1/secrets/aws-unknown",
            json!({ "value": unknown.to_string() })
        )
        .0,
        204
    );
    collector(&acme, "cw-unknown", &moto.endpoint(), "aws-unknown", None);
    acme.wait_for("the unknown key", Duration::from_secs(60), |api| {
        log_of(api, "cw-unknown")
            .contains("InvalidClientTokenId")
            .then_some(())
    });

    // Another tenant: acme's keys are not its to use, and its series are its own.
    let globex = server.tenant("globex");
    collector(&globex, "cw", &moto.endpoint(), "aws", None);
    globex.wait_for("no such secret", Duration::from_secs(30), |api| {
        log_of(api, "cw")
            .contains("no secret named `aws`")
            .then_some(())
    });
    assert!(
        globex
            .points("aws_sotp_test_latency_average", "1h")
            .is_empty()
    );
}

/// The newest `metric` of `component` (value, labels).
fn newest_value(api: &Api, metric: &str, component: &str) -> Option<(f64, Value)> {
    newest(api, metric, component).map(|(l, v)| (v, l))
}

fn secret_reader(api: &Api, component: &str, name: &str) {
    api.push(
        &manifest(
            component,
            "1",
            "300ms",
            &format!(
                "[grants]\nsecrets = [\"{name}\"]\n[config]\nmode = \"read-secret\"\ntarget = \"{name}\"\n"
            ),
        ),
        sotp_tests::guests::ATTACKER,
    );
}

#[test]
fn secrets_manager_secrets_rotate_after_their_ttl() {
    let moto = Moto::start();
    moto.python(
        r#"client("secretsmanager").create_secret(Name="app/db", SecretString=json.dumps({"password": "first-pass", "user": "app"}))"#,
    );
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/aws", json!({ "value": moto.keys_json() }))
            .0,
        204
    );
    let (status, body) = acme.put(
        "/v1/secret-providers",
        json!({ "aws_secrets_manager": { "region": "us-east-1", "credentials_secret": "aws",
                "endpoint": moto.endpoint(), "sts_endpoint": moto.endpoint(), "ttl": "1s" } }),
    );
    assert_eq!(status, 200, "{body}");
    secret_reader(&acme, "db-reader", "aws-sm:app/db#password");
    acme.wait_for("the secret read", Duration::from_secs(30), |api| {
        (newest_value(api, "secret_len", "db-reader")?.0 == 10.0).then_some(())
    });

    // Rotated in Secrets Manager (boto3): picked up after the TTL, the component untouched.
    moto.python(
        r#"client("secretsmanager").put_secret_value(SecretId="app/db", SecretString=json.dumps({"password": "second-password!", "user": "app"}))"#,
    );
    acme.wait_for("the rotated value", Duration::from_secs(15), |api| {
        (newest_value(api, "secret_len", "db-reader")?.0 == 16.0).then_some(())
    });
    assert_eq!(acme.component("db-reader")["active_version"], 1);

    // A secret that does not exist: said so, no value.
    secret_reader(&acme, "missing-reader", "aws-sm:app/nope#password");
    acme.wait_for("a missing secret", Duration::from_secs(15), |api| {
        let (v, l) = newest_value(api, "secret_error", "missing-reader")?;
        (v == 1.0 && l["kind"] == "invalid").then_some(())
    });

    // Wrong keys: unavailable, naming AWS's refusal, never a value.
    let wrong = json!({ "access_key_id": moto.key_id, "secret_access_key": "not-it" });
    assert_eq!(
        acme.put("/v1/secrets/aws", json!({ "value": wrong.to_string() }))
            .0,
        204
    );
    secret_reader(&acme, "wrong-reader", "aws-sm:app/db#user");
    let log = acme.wait_for("the refused signature", Duration::from_secs(15), |api| {
        let log = log_of(api, "wrong-reader");
        log.contains("SignatureDoesNotMatch").then_some(log)
    });
    assert!(
        !log.contains("not-it") && !log.contains("second-password"),
        "{log}"
    );

    // Another tenant: no provider of its own, so nothing of acme's.
    let globex = server.tenant("globex");
    secret_reader(&globex, "db-reader", "aws-sm:app/db#password");
    globex.wait_for("no provider", Duration::from_secs(15), |api| {
        log_of(api, "db-reader")
            .contains("no aws_secrets_manager provider")
            .then_some(())
    });
    let (_, shown) = acme.get("/v1/secret-providers");
    assert_eq!(shown["aws_secrets_manager"]["credentials_secret"], "aws");
    let (status, body) = acme.put(
        "/v1/secret-providers",
        json!({ "aws_secrets_manager": { "region": "us-east-1", "credentials_secret": "aws",
                "role_arn": "not-an-arn" } }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("role_arn"), "{body}");
}
