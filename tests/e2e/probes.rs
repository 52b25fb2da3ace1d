//! Synthetic monitoring end to end: the shipped `http-check` and `login-flow` components
//! (their own sotp.toml manifests, 30 s schedule) probe a real web app on loopback — a login
//! form with a CSRF token and a session cookie, and a JSON API — beside a real
//! blackbox_exporter (Debian) on the same targets. Breaking the app shows up within one
//! interval; a probe outside its grants is refused and counted; a target that hangs times
//! out without touching the CPU deadline or the other probes.

use serde_json::Value;
use sotp_tests::blackbox::Blackbox;
use sotp_tests::guests::{HTTP_CHECK, LOGIN_FLOW};
use sotp_tests::harness::{Api, LOOPBACK_EGRESS, Server};
use sotp_tests::webapp::{PASSWORD, USER, WebApp};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
/// The shipped manifests tick every 30 s with up to 5 s of jitter.
const INTERVAL: Duration = Duration::from_secs(35);

/// A shipped manifest with its name, `[grants]` and `[config]` replaced.
fn shipped(guest: &str, name: &str, grants: &str, config: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guests")
        .join(guest)
        .join("sotp.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let head = text.split("[grants]").next().unwrap();
    let head = head.replacen(
        &format!("name = \"{guest}\""),
        &format!("name = \"{name}\""),
        1,
    );
    format!("{head}[grants]\n{grants}\n[config]\n{config}\n")
}

/// The newest value of `metric` for probe `probe` (and `extra` label), with its timestamp.
fn latest(api: &Api, metric: &str, probe: &str, extra: Option<(&str, &str)>) -> Option<(i64, f64)> {
    api.points(metric, "1h")
        .into_iter()
        .filter(|(l, _, _)| l["probe"] == probe)
        .filter(|(l, _, _)| extra.is_none_or(|(k, v)| l[k] == v))
        .map(|(_, t, v)| (t, v))
        .max_by_key(|(t, _)| *t)
}

/// Phases reported for the newest run of `probe`.
fn phases(api: &Api, probe: &str) -> Vec<String> {
    let points = api.points("probe_http_duration_seconds", "1h");
    let Some(newest) = points
        .iter()
        .filter(|(l, _, _)| l["probe"] == probe)
        .map(|(_, t, _)| *t)
        .max()
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = points
        .iter()
        .filter(|(l, t, _)| l["probe"] == probe && *t == newest)
        .map(|(l, _, _)| l["phase"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn logs(api: &Api, component: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/v1/logs?component={component}&limit=1000"));
    assert_eq!(status, 200, "{body}");
    body["logs"].as_array().unwrap().clone()
}

fn label<'a>(log: &'a Value, name: &str) -> Option<&'a str> {
    log["labels"][name].as_str()
}

#[test]
fn probes_catch_a_broken_app_within_one_interval_and_agree_with_blackbox_exporter() {
    let app = WebApp::start();
    let blackbox = Blackbox::start();
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    for (name, value) in [("app-user", USER), ("app-password", PASSWORD)] {
        let (status, body) = acme.put(
            &format!("/v1/secrets/{name}"),
            serde_json::json!({ "value": value }),
        );
        assert_eq!(status, 204, "{body}");
    }
    let grant = format!("http = [\"http://127.0.0.1:{}\"]", app.port);
    let api_url = app.url("/api/status");
    acme.push(
        &shipped(
            "http-check",
            "api-check",
            &grant,
            &format!(
                "probe = \"api\"\nurl = \"{api_url}\"\nexpect_status = [200]\ntimeout_ms = 5000\nslow_ms = 2000\n\
                 json = [{{ path = \"status\", equals = \"ok\" }}, {{ path = \"checks.0.state\", equals = \"up\" }}]\n\
                 expect_headers = [{{ name = \"content-type\", regex = \"json\" }}]\n"
            ),
        ),
        HTTP_CHECK,
    );
    acme.push(
        &shipped(
            "login-flow",
            "login-check",
            &format!("{grant}\nsecrets = [\"app-user\", \"app-password\"]"),
            &format!(
                "probe = \"login\"\nlogin_url = \"{}\"\nusername_secret = \"app-user\"\n\
                 password_secret = \"app-password\"\nexpect_landing = \"Signed in as {USER}\"\n\
                 expect_path = \"/home\"\n",
                app.url("/login")
            ),
        ),
        LOGIN_FLOW,
    );
    acme.push(
        &shipped(
            "http-check",
            "hang-check",
            &grant,
            &format!(
                "probe = \"hang\"\nurl = \"{}\"\ntimeout_ms = 3000\n",
                app.url("/hang")
            ),
        ),
        HTTP_CHECK,
    );
    // Outside the grants: another port, and a granted name that resolves to loopback.
    acme.push(
        &shipped(
            "http-check",
            "other-port",
            &grant,
            &format!(
                "probe = \"other-port\"\nurl = \"http://127.0.0.1:{}/\"\n",
                app.port + 1
            ),
        ),
        HTTP_CHECK,
    );
    acme.push(
        &shipped(
            "http-check",
            "by-name",
            &format!("http = [\"http://localhost:{}\"]", app.port),
            &format!(
                "probe = \"by-name\"\nurl = \"http://localhost:{}/api/status\"\n",
                app.port
            ),
        ),
        HTTP_CHECK,
    );

    // The first runs: the app is healthy.
    let started = Instant::now();
    acme.wait_for(
        "the first probe runs",
        INTERVAL + Duration::from_secs(10),
        |api| {
            ["api", "login", "hang", "other-port", "by-name"]
                .iter()
                .all(|p| latest(api, "probe_success", p, None).is_some())
                .then_some(())
        },
    );
    eprintln!("first runs after {:?}", started.elapsed());
    assert_eq!(latest(&acme, "probe_success", "api", None).unwrap().1, 1.0);
    assert_eq!(
        latest(&acme, "probe_http_status_code", "api", None)
            .unwrap()
            .1,
        200.0
    );
    assert_eq!(
        phases(&acme, "api"),
        ["connect", "processing", "resolve", "transfer"],
        "an http:// probe has no TLS phase"
    );
    assert_eq!(
        latest(&acme, "probe_success", "login", None).unwrap().1,
        1.0
    );
    for step in ["login-page", "csrf", "submit", "landing"] {
        let (_, ok) = latest(&acme, "probe_step_success", "login", Some(("step", step)))
            .unwrap_or_else(|| panic!("no probe_step_success for {step}"));
        assert_eq!(ok, 1.0, "{step}");
    }
    // The login's redirect to /home went with the session cookie (else it lands on /login).
    assert!(app.seen().iter().any(|s| s.path == "/home"));

    // A hanging target: a timeout, only the phases it reached, no CPU-deadline trap.
    assert_eq!(latest(&acme, "probe_success", "hang", None).unwrap().1, 0.0);
    assert_eq!(phases(&acme, "hang"), ["connect", "resolve"]);
    assert!(latest(&acme, "probe_http_status_code", "hang", None).is_none());
    let hang_logs = logs(&acme, "hang-check");
    assert!(
        hang_logs
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("timeout")),
        "{hang_logs:?}"
    );
    let hang = acme.component("hang-check");
    assert_eq!(hang["counters"]["traps"]["cpu_deadline"], 0, "{hang}");

    // Refused by the grants, and counted.
    for (component, why) in [
        ("other-port", "not covered by grants.http"),
        ("by-name", "not a public address"),
    ] {
        let view = acme.component(component);
        assert!(view["counters"]["denied"].as_u64().unwrap() >= 1, "{view}");
        assert!(
            view["recent_log"].to_string().contains(why),
            "{component}: {view}"
        );
        assert_eq!(
            latest(&acme, "probe_success", component, None).unwrap().1,
            0.0
        );
    }
    assert!(
        app.seen().iter().all(|s| s.path != "/"),
        "nothing reached the app outside the grants"
    );
    let metrics = server.metrics_text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sotp_component_denied_total{")
                && l.contains("component=\"by-name\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );

    // blackbox_exporter agrees on the healthy app.
    let bb = blackbox.probe(&api_url, "http_2xx");
    assert_eq!(bb["probe_success"], 1.0, "{bb:?}");
    assert_eq!(bb["probe_http_status_code"], 200.0, "{bb:?}");
    let bb_hang = blackbox.probe(&app.url("/hang"), "http_2xx");
    assert_eq!(bb_hang["probe_success"], 0.0, "{bb_hang:?}");

    // Break the app three ways at once: a wrong status, a slow answer, a login that fails.
    let broken_at = sotp_runtime_now_ms();
    app.set_api_status(503);
    app.set_delay(Duration::from_millis(2500));
    app.break_login(true);
    acme.wait_for(
        "the probes to see it",
        INTERVAL + Duration::from_secs(15),
        |api| {
            let after = |p: &str| {
                latest(api, "probe_success", p, None).filter(|(t, _)| *t > broken_at + 2_600)
            };
            (after("api").is_some() && after("login").is_some()).then_some(())
        },
    );
    eprintln!("broken seen after {} ms", sotp_runtime_now_ms() - broken_at);
    assert_eq!(latest(&acme, "probe_success", "api", None).unwrap().1, 0.0);
    assert_eq!(
        latest(&acme, "probe_http_status_code", "api", None)
            .unwrap()
            .1,
        503.0
    );
    assert_eq!(
        latest(&acme, "probe_success", "login", None).unwrap().1,
        0.0
    );
    let api_logs = logs(&acme, "api-check");
    let status_line = api_logs
        .iter()
        .find(|l| l["message"].as_str().unwrap().contains("status 503"))
        .unwrap_or_else(|| panic!("{api_logs:?}"));
    assert!(
        api_logs.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("slower than slow_ms")),
        "{api_logs:?}"
    );
    assert_eq!(label(status_line, "step"), Some("assert"));
    // The failing check's trace id is the one the backend saw.
    let trace = label(status_line, "trace_id").expect("a trace id");
    assert!(
        app.seen().iter().any(|s| s.path == "/api/status"
            && s.traceparent.as_deref().is_some_and(|t| t.contains(trace))),
        "the app saw trace {trace}"
    );
    let login_logs = logs(&acme, "login-check");
    assert!(
        login_logs
            .iter()
            .any(|l| label(l, "step") == Some("landing")
                && l["message"].as_str().unwrap().contains("status 401")),
        "{login_logs:?}"
    );
    for l in login_logs.iter().chain(api_logs.iter()) {
        assert!(
            !l.to_string().contains(PASSWORD),
            "a credential leaked into {l}"
        );
    }
    let bb = blackbox.probe(&api_url, "http_2xx");
    assert_eq!(bb["probe_success"], 0.0, "{bb:?}");
    assert_eq!(bb["probe_http_status_code"], 503.0, "{bb:?}");

    // Another tenant sees none of it.
    let globex = server.tenant("globex");
    assert!(globex.points("probe_success", "1h").is_empty());
    assert_eq!(globex.get("/v1/components/api-check").0, 404);
    assert!(logs(&globex, "api-check").is_empty());
}

fn sotp_runtime_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A CA and a leaf certificate for 127.0.0.1 valid `days` days, made with the openssl CLI:
/// (ca.pem, leaf.pem, leaf.key).
fn certificates(dir: &Path, days: u32) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "365",
        "-subj",
        "/CN=SOTP test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=app.test",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        &days.to_string(),
        "-extfile",
        "ext.cnf",
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("ca.pem"), read("leaf.pem"), read("leaf.key"))
}

/// `every = "30s"` → `every`, without jitter (for the tests that need no 30 s wait).
fn every(manifest: String, every: &str) -> String {
    manifest
        .replace("every = \"30s\"", &format!("every = \"{every}\""))
        .replace("jitter = \"5s\"\n", "")
}

#[test]
fn https_probes_verify_with_the_tenants_ca_and_report_the_certificates_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = certificates(dir.path(), 10);
    std::fs::write(dir.path().join("ca-only.pem"), &ca).unwrap();
    let app = WebApp::start_tls(&leaf, &key);
    let url = app.url("/api/status");
    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    assert_eq!(
        acme.put("/v1/secrets/app-ca", serde_json::json!({ "value": ca }))
            .0,
        204
    );
    let grants = format!(
        "http = [\"https://127.0.0.1:{}\"]\nsecrets = [\"app-ca\"]",
        app.port
    );
    for (name, extra) in [
        ("system-roots", ""),
        ("tenant-ca", "ca_secret = \"app-ca\"\n"),
        ("insecure", "insecure = true\n"),
    ] {
        acme.push(
            &every(
                shipped(
                    "http-check",
                    name,
                    &grants,
                    &format!("probe = \"{name}\"\nurl = \"{url}\"\n{extra}"),
                ),
                "1s",
            ),
            HTTP_CHECK,
        );
    }
    acme.wait_for("the three probes", Duration::from_secs(30), |api| {
        ["system-roots", "tenant-ca", "insecure"]
            .iter()
            .all(|p| latest(api, "probe_success", p, None).is_some())
            .then_some(())
    });
    // Verification is on by default: our CA is not among the system's.
    assert_eq!(
        latest(&acme, "probe_success", "system-roots", None)
            .unwrap()
            .1,
        0.0
    );
    let refused = logs(&acme, "system-roots");
    assert!(
        refused.iter().any(|l| {
            let m = l["message"].as_str().unwrap();
            m.contains("(in tls)") && m.contains("certificate")
        }),
        "{refused:?}"
    );
    assert_eq!(phases(&acme, "system-roots"), ["connect", "resolve"]);
    // With the tenant's CA, and with verification off: up, a TLS phase, the expiry.
    for probe in ["tenant-ca", "insecure"] {
        assert_eq!(
            latest(&acme, "probe_success", probe, None).unwrap().1,
            1.0,
            "{probe}"
        );
        assert_eq!(
            phases(&acme, probe),
            ["connect", "processing", "resolve", "tls", "transfer"],
            "{probe}"
        );
    }
    let expiry = latest(&acme, "probe_ssl_earliest_cert_expiry", "tenant-ca", None)
        .unwrap()
        .1;
    let days_left = (expiry * 1000.0 - sotp_runtime_now_ms() as f64) / 86_400_000.0;
    assert!((9.0..=10.0).contains(&days_left), "{days_left} days");
    let warned = logs(&acme, "tenant-ca");
    assert!(
        warned.iter().any(|l| label(l, "step") == Some("tls")
            && l["message"].as_str().unwrap().contains("warning at tls")
            && l["message"].as_str().unwrap().contains("expires in")),
        "a certificate expiring within tls_expiry_warn_days is logged: {warned:?}"
    );

    // blackbox_exporter: the same verdicts and the same expiry.
    let blackbox = Blackbox::start_with(&format!(
        "  http_ca:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      tls_config:\n        ca_file: {}\n",
        dir.path().join("ca-only.pem").display()
    ));
    let bb = blackbox.probe(&url, "http_2xx");
    assert_eq!(bb["probe_success"], 0.0, "{bb:?}");
    let bb = blackbox.probe(&url, "http_ca");
    assert_eq!(bb["probe_success"], 1.0, "{bb:?}");
    assert_eq!(bb["probe_ssl_earliest_cert_expiry"], expiry, "{bb:?}");
}
