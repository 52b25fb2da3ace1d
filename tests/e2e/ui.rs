//! The web UI end to end: a real `sotp` serving its embedded UI, filled with real data (an
//! inventory, an incident the default policy opened from alerts, another tenant's data that
//! must never show), driven in Debian's chromium by `ui/tests/browser.mjs` (playwright-core):
//! sign-in with a wrong, a good and an expiring token, the overview, an incident with its
//! topology graph, a component uploaded by drag and drop, the devices, an API error, the
//! phone layout, sign-out. Screenshots go to `$CARGO_TARGET_DIR/ui-artifacts`.
//!
//! `SOTP_UI_DOCS=docs/ui` also refreshes the screenshots docs/ shows.

use serde_json::{Value, json};
use sotp_tests::guests::{TICK_COUNTER, TOPOLOGY_CORRELATION};
use sotp_tests::harness::{Server, manifest};
use sotp_tests::mosquitto::free_port;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn down(device: &str) -> Value {
    json!({ "labels": { "alertname": "DeviceDown", "device": device },
            "startsAt": "2026-12-01T10:00:00Z" })
}

fn artifacts() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{ROOT}/target"));
    PathBuf::from(target).join("ui-artifacts")
}

/// One NetFlow v5 export of `flows` (source, destination, destination port, bytes) that
/// ended a second ago.
fn netflow_v5(flows: &[([u8; 4], [u8; 4], u16, u32)]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let uptime: u32 = 100_000;
    let mut p = Vec::new();
    p.extend(5u16.to_be_bytes());
    p.extend((flows.len() as u16).to_be_bytes());
    p.extend(uptime.to_be_bytes());
    p.extend(now.to_be_bytes());
    p.extend(0u32.to_be_bytes()); // nsecs
    p.extend(0u32.to_be_bytes()); // sequence
    p.extend([0u8, 0, 0, 0]); // engine type, id, sampling
    for (src, dst, port, bytes) in flows {
        p.extend(src);
        p.extend(dst);
        p.extend([0u8; 4]); // next hop
        p.extend(1u16.to_be_bytes());
        p.extend(2u16.to_be_bytes());
        p.extend((bytes / 1000).max(1).to_be_bytes()); // packets
        p.extend(bytes.to_be_bytes());
        p.extend((uptime - 50_000).to_be_bytes()); // first
        p.extend((uptime - 1_000).to_be_bytes()); // last
        p.extend(50_000u16.to_be_bytes());
        p.extend(port.to_be_bytes());
        p.extend([0u8, 0x18, 6, 0]); // pad, tcp flags, protocol tcp, tos
        p.extend([0u8; 8]); // AS numbers, masks, pad
    }
    p
}

#[test]
fn the_web_ui_in_a_real_browser() {
    let netflow = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sotp.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n\
             [runtime.flows.applications]\n\"tcp/40000\" = \"test-app\"\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(BIN, &["--config", config.to_str().unwrap()]);
    let (status, page) = {
        let r = reqwest::blocking::get(format!("{}/ui/", server.base)).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(
        status, 200,
        "the UI is not embedded (run scripts/build-ui): {page}"
    );
    assert!(page.contains("/ui/app.js"), "{page}");

    // acme: a small tree and an incident at its root.
    let acme = server.tenant("acme");
    let mut devices =
        vec![json!({ "name": "core1", "address": "10.77.0.1", "role": "core", "site": "lab" })];
    for i in 1..=2 {
        devices.push(json!({ "name": format!("dist{i}"), "address": format!("10.77.1.{i}"), "parents": ["core1"], "site": "lab" }));
    }
    for i in 1..=4 {
        devices.push(
            json!({ "name": format!("acc{i}"), "address": format!("10.77.2.{i}"),
                              "parents": [format!("dist{}", 1 + i % 2)], "site": "lab" }),
        );
    }
    assert_eq!(acme.post("/v1/devices/import", json!(devices)).0, 200);
    let policy =
        std::fs::read_to_string(format!("{ROOT}/policies/topology-correlation/sotp.toml")).unwrap();
    acme.push(&policy, TOPOLOGY_CORRELATION);
    let alerts: Vec<Value> = ["core1", "dist1", "dist2", "acc1", "acc2", "acc3", "acc4"]
        .into_iter()
        .map(down)
        .collect();
    let (status, out) = acme.post("/v1/alerts", json!(alerts));
    assert_eq!(status, 200, "{out}");
    let (_, open) = acme.get("/v1/incidents?status=open");
    let incident = open["incidents"][0]["id"]
        .as_i64()
        .expect("an open incident");

    // A real audit: backups of three devices, one rule file, dist2 failing it.
    for (device, config) in [
        ("core1", "hostname core1\nntp server 10.0.0.1\n"),
        ("dist1", "hostname dist1\nntp server 10.0.0.1\n"),
        ("dist2", "hostname dist2\n"),
    ] {
        let (status, out) = acme.send_text("PUT", &format!("/v1/backups/{device}/text"), config);
        assert!(status < 300, "backup of {device}: {out}");
    }
    let (status, out) = acme.send_text(
        "PUT",
        "/v1/compliance/rules/ntp.yaml?activate=true",
        "rules:\n  - id: ntp\n    required:\n      - ntp server 10.0.0.1\n",
    );
    assert!(status < 300, "{out}");
    // acc1 has no backup (an error), waived while it is replaced.
    let (status, out) = acme.post(
        "/v1/compliance/waivers",
        json!({ "device": "acc1", "rule": "ntp", "reason": "being replaced", "expires_in": "30d" }),
    );
    assert!(status < 300, "{out}");
    let (status, out) = acme.post("/v1/compliance/audits?wait=true", json!({}));
    assert!(status < 300, "{out}");
    let (_, audits) = acme.get("/v1/compliance/audits");
    let percent = audits["audits"][0]["summary"]["percent_devices"]
        .as_f64()
        .expect("a summary");
    // A second revision of core1's backup (its history has a diff).
    let (status, out) = acme.send_text(
        "PUT",
        "/v1/backups/core1/text",
        "hostname core1\nntp server 10.0.0.1\nlogging host 10.0.0.9\n",
    );
    assert!(status < 300, "{out}");

    // Flows from the exporter on loopback, all acme's (the listener's default tenant).
    let export = netflow_v5(&[
        ([10, 1, 0, 1], [10, 2, 0, 1], 40000, 5_000_000),
        ([10, 1, 0, 2], [10, 2, 0, 1], 443, 1_000_000),
    ]);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&export, ("127.0.0.1", netflow))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, top) = acme.get("/v1/flows/top?since=15m&by=src_addr");
        if top["rows"].as_array().is_some_and(|r| r.len() == 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flows not stored: {top}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // globex: data acme must never see.
    let globex = server.tenant("globex");
    assert_eq!(
        globex
            .post(
                "/v1/devices/import",
                json!([{ "name": "globex-only-router", "address": "10.99.0.1" }])
            )
            .0,
        200
    );
    globex.push(
        &manifest("globex-only-collector", "1.0.0", "1h", ""),
        TICK_COUNTER,
    );

    let upload = dir.path().join("upload.toml");
    std::fs::write(&upload, manifest("ui-uploaded", "1.0.0", "1h", "")).unwrap();
    let mut node = Command::new("node");
    node.arg(format!("{ROOT}/ui/tests/browser.mjs"))
        .current_dir(format!("{ROOT}/ui"))
        .env("SOTP_URL", &server.base)
        .env("SOTP_TOKEN", &acme.token)
        .env("SOTP_ADMIN", &server.admin().token)
        .env("SOTP_OTHER", "globex-only")
        .env("SOTP_INCIDENT", incident.to_string())
        .env("SOTP_PERCENT", format!("{percent:.1} %"))
        .env("SOTP_MANIFEST", &upload)
        .env("SOTP_WASM", TICK_COUNTER)
        .env("SOTP_ARTIFACTS", artifacts());
    if let Ok(docs) = std::env::var("SOTP_UI_DOCS") {
        node.env("SOTP_DOCS", PathBuf::from(ROOT).join(docs));
    }
    let out = node
        .output()
        .expect("running node (scripts/setup installs it)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{log}\nserver log:\n{}",
        server.log()
    );
    // The upload really happened, through the UI's session.
    assert_eq!(acme.component("ui-uploaded")["active_version"], 1);
    // The preview of acme's rule file is acme's.
    let (status, body) = globex.send_text(
        "POST",
        "/v1/compliance/rules/ntp.yaml/preview?device=core1",
        "",
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = acme.send_text(
        "POST",
        "/v1/compliance/rules/ntp.yaml/preview?device=core1",
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["rules"][0]["intended"]
            .as_str()
            .unwrap()
            .contains("ntp server 10.0.0.1"),
        "{body}"
    );
    let (_, theirs) = globex.get("/v1/components");
    assert!(!theirs.to_string().contains("ui-uploaded"), "{theirs}");
}

/// The UI's session cookie is the token behind it, no more: another tenant's data stays out
/// of reach, cookie writes need the UI's header, signing out ends it.
#[test]
fn a_ui_session_is_exactly_its_token() {
    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let globex = server.tenant("globex");
    assert_eq!(
        globex
            .post(
                "/v1/devices/import",
                json!([{ "name": "globex-only-router", "address": "10.99.0.1" }])
            )
            .0,
        200
    );
    let http = reqwest::blocking::Client::new();
    // `POST /ui/session` with `token`, over TLS if `tls` (a proxy's header says so).
    let sign_in = |token: &str, tls: bool| {
        let mut r = http.post(format!("{}/ui/session", server.base));
        if tls {
            r = r.header("X-Forwarded-Proto", "https");
        }
        r.json(&json!({ "token": token })).send().unwrap()
    };
    let signed = sign_in(&acme.token, false);
    assert_eq!(signed.status(), 200);
    let set_cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let who: Value = signed.json().unwrap();
    assert_eq!(who["tenant"], "acme");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert!(!cookie.contains(&acme.token), "the cookie is not the token");

    let call = |method: reqwest::Method, path: &str, ui: bool| {
        let mut r = http
            .request(method, format!("{}{path}", server.base))
            .header("Cookie", &cookie)
            .header("X-Sotp-Tenant", "globex");
        if ui {
            r = r.header("X-Sotp-UI", "1");
        }
        let r = r.json(&json!([])).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, devices) = call(reqwest::Method::GET, "/v1/devices", true);
    assert_eq!(status, 200, "{devices}");
    assert!(
        !devices.contains("globex-only"),
        "a tenant's session cannot act for another: {devices}"
    );
    let (status, body) = call(reqwest::Method::POST, "/v1/alerts", false);
    assert_eq!(status, 403, "a cookie write without X-Sotp-UI: {body}");
    assert_eq!(call(reqwest::Method::POST, "/v1/alerts", true).0, 200);

    // Behind TLS (a proxy says so), the cookie is Secure.
    let secure = sign_in(&acme.token, true);
    assert!(
        secure.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );

    let out = http
        .delete(format!("{}/ui/session", server.base))
        .header("Cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(out.status(), 204);
    let (status, body) = call(reqwest::Method::GET, "/v1/devices", true);
    assert_eq!(status, 401, "signed out: {body}");
    let wrong = sign_in("sotp_not_a_token", false);
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
}
