//! SOTP watching itself (docs/PLATFORM.md): the platform tenant created on first start, its
//! built-in probes of SOTP's sign-in page and API through the URL users use (here a TCP
//! forwarder standing for a load balancer), the web UI in Debian's chromium sending its page
//! loads and API calls to the platform tenant, the API stopped for a moment and the probes
//! recording it within one interval, and a restart that deploys nothing again.

use serde_json::{Value, json};
use sotp_tests::harness::{Api, Server};
use sotp_tests::tcp_proxy::TcpProxy;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
/// The test's probe interval (the default is 30 s; what is tested is relative to it).
const INTERVAL_MS: i64 = 10_000;
const PROBES: [&str; 5] = [
    "api-components",
    "api-query",
    "api-ready",
    "sign-in-page",
    "ui-session",
];

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn address(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// `GET path` with the admin token acting for the platform tenant.
fn as_platform(server: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(&server.admin().token)
        .header("X-Sotp-Tenant", "platform")
        .send()
        .expect("HTTP request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The health view once every probe ran after `after_ms` and `up` holds for all of them.
fn probes_after(admin: &Api, after_ms: i64, up: bool, secs: u64) -> Value {
    wait(
        &format!(
            "every probe {} after {after_ms}",
            if up { "up" } else { "down" }
        ),
        secs,
        || {
            let (status, h) = admin.get("/v1/platform/health");
            let probes = h["probes"].as_array()?;
            let done = status == 200
                && probes.len() == PROBES.len()
                && probes.iter().all(|p| {
                    p["up"] == up && p["last_run_ms"].as_i64().is_some_and(|t| t > after_ms)
                });
            done.then_some(h)
        },
    )
}

/// Run ui/tests/platform.mjs: sign in, open the Platform page, reload.
fn browse(base: &str, token: &str) {
    let mut env = vec![
        ("SOTP_URL", base),
        ("SOTP_TOKEN", token),
        ("HOLD_MS", "2500"),
    ];
    // `SOTP_UI_DOCS=docs/ui` refreshes the page's screenshot in the docs, as tests/e2e/ui.rs does.
    let shot = std::env::var("SOTP_UI_DOCS").map(|dir| {
        format!(
            "{}/../{dir}/platform-desktop.png",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    if let Ok(path) = &shot {
        env.push(("SOTP_SHOT", path));
    }
    sotp_tests::harness::run_browser_script("platform.mjs", &env);
}

fn rum_key(server: &Server) -> String {
    let page = reqwest::blocking::get(format!("{}/ui/", server.base))
        .unwrap()
        .text()
        .unwrap();
    let at = page
        .find("data-key=\"")
        .unwrap_or_else(|| panic!("no RUM script in the UI's page:\n{page}"));
    page[at + 10..].split('"').next().unwrap().to_string()
}

#[test]
fn sotp_probes_its_own_ui_and_api_and_traces_its_ui_in_the_platform_tenant() {
    let mut proxy = TcpProxy::start();
    let base = format!("http://127.0.0.1:{}", proxy.port);
    let config = format!(
        "[platform]\nbase_url = \"{base}\"\nprobe_interval = \"{}s\"\nrum_sample_rate = 1.0\n",
        INTERVAL_MS / 1000
    );
    let started = now_ms();
    let mut server = Server::start_with_config(BIN, &config, &[("SOTP_PLATFORM__ENABLED", "true")]);
    proxy.set_upstream(address(&server));
    let admin = server.admin();

    // Created on first start, with one component per probe; all up within one interval
    // (plus the jitter spreading them, a tenth of it) of the start.
    let (status, tenant) = admin.get("/v1/tenants/platform");
    assert_eq!(status, 200, "{tenant}");
    let health = probes_after(&admin, started, true, 2 * INTERVAL_MS as u64 / 1000 + 10);
    let mut seen: Vec<&str> = health["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probe"].as_str().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, PROBES, "{health}");
    for p in health["probes"].as_array().unwrap() {
        assert!(
            p["target"].as_str().unwrap().starts_with(&base),
            "probes go through the base URL: {p}"
        );
        assert_eq!(p["status_code"], 200, "{p}");
    }
    let (_, components) = as_platform(&server, "/v1/components");
    assert_eq!(
        components["components"].as_array().unwrap().len(),
        PROBES.len(),
        "{components}"
    );

    // Only the admin and the platform tenant's own tokens see it.
    let acme = server.tenant("acme");
    let (status, body) = acme.get("/v1/platform/health");
    assert_eq!(status, 403, "another tenant: {body}");
    let (_, samples) = acme.get("/api/v1/query?query=probe_success");
    assert_eq!(samples["data"]["result"], json!([]), "{samples}");
    let (_, viewer) = admin.post(
        "/v1/tokens",
        json!({ "tenant": "platform", "name": "viewer", "scopes": ["read"] }),
    );
    let viewer = server.api(viewer["token"].as_str().expect("a platform token"));
    let (status, body) = viewer.get("/v1/platform/health");
    assert_eq!(status, 200, "{body}");
    let (_, who) = acme.get("/ui/session");
    assert_ne!(who["platform"], true);

    // The UI in a real browser: its page loads and API calls arrive in the platform tenant.
    browse(&server.base, &admin.token);
    let traces = wait("the UI's spans in the platform tenant", 30, || {
        let (_, found) = as_platform(&server, "/v1/traces?service=sotp-ui&since=10m&limit=200");
        let traces = found["traces"].as_array().cloned().unwrap_or_default();
        let loads = traces
            .iter()
            .filter(|t| t["name"] == "documentLoad")
            .count();
        let calls = traces
            .iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| n.contains("GET")))
            .count();
        (loads >= 2 && calls >= 1).then_some(traces)
    });
    let load = traces.iter().find(|t| t["name"] == "documentLoad").unwrap();
    assert_eq!(load["route"], "/ui/", "{load}");
    let (_, acme_traces) = acme.get("/v1/traces?since=10m");
    assert_eq!(acme_traces["traces"], json!([]), "{acme_traces}");
    let (_, h) = admin.get("/v1/platform/health");
    assert!(h["ui_page_loads"]["count"].as_u64().unwrap() >= 2, "{h}");
    assert!(h["ui_api_calls"]["count"].as_u64().unwrap() >= 1, "{h}");
    assert!(h["ui_page_loads"]["p95_ms"].as_f64().unwrap() > 0.0, "{h}");

    // The API unreachable for a moment: every probe records the failure at its next run,
    // within one interval, and recovers after.
    let stopped = now_ms();
    proxy.stop();
    let down = probes_after(&admin, stopped, false, INTERVAL_MS as u64 / 1000 + 5);
    for p in down["probes"].as_array().unwrap() {
        let at = p["last_run_ms"].as_i64().unwrap();
        assert!(
            at - stopped <= INTERVAL_MS + 1_000,
            "recorded {} ms after the stop: {p}",
            at - stopped
        );
        let why = p["last_error"].as_str().unwrap_or_default();
        assert!(why.contains("connect"), "{p}");
    }
    let cli = std::process::Command::new(BIN)
        .args(["platform", "health", "--server", &server.base])
        .args(["--token", &viewer.token])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success() && text.matches("DOWN").count() == PROBES.len(),
        "{text}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let resumed = now_ms();
    proxy.resume();
    probes_after(&admin, resumed, true, INTERVAL_MS as u64 / 1000 + 5);

    // A restart deploys nothing again and keeps the UI's RUM key.
    let key = rum_key(&server);
    server.stop();
    let restarted = now_ms();
    server.restart();
    proxy.set_upstream(address(&server));
    wait("the platform after the restart", 30, || {
        (server.admin().get("/v1/platform/health").0 == 200).then_some(())
    });
    assert_eq!(rum_key(&server), key);
    // The restored probes reach SOTP again (their egress exception is pinned before restore).
    probes_after(
        &server.admin(),
        restarted,
        true,
        2 * INTERVAL_MS as u64 / 1000 + 5,
    );
    for p in PROBES {
        let (_, versions) = as_platform(&server, &format!("/v1/components/probe-{p}/versions"));
        assert_eq!(
            versions["versions"].as_array().map(Vec::len),
            Some(1),
            "{versions}"
        );
    }
}
