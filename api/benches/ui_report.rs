//! The web UI's compliance report with 10,000 devices: a real `sotp` is filled with 10,000
//! devices, a backup of each (a quarter of them missing the NTP server) and one rule file,
//! audited, then `ui/bench/report.mjs` opens the report in headless chromium (Debian's) 7
//! times and prints the median time until the device table is drawn (goal: <= 1 s).
//!
//! `cargo bench -p sotp --bench ui_report` (needs `scripts/build-ui` and chromium, which
//! `scripts/setup` installs). `DEVICES=N` changes the size.

use serde_json::json;
use sotp_tests::harness::Server;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn main() {
    let devices: usize = std::env::var("DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let server = Server::start(BIN);
    let api = server.tenant("bench");
    let started = Instant::now();
    let inventory: Vec<_> = (0..devices)
        .map(|i| json!({ "name": format!("r{i:05}"), "address": format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256), "platform": "ios" }))
        .collect();
    assert_eq!(api.post("/v1/devices/import", json!(inventory)).0, 200);
    // The backups, from 4 threads (each import is a Git commit).
    std::thread::scope(|s| {
        for t in 0..4 {
            let api = &api;
            s.spawn(move || {
                for i in (t..devices).step_by(4) {
                    let ntp = if i % 4 == 0 {
                        ""
                    } else {
                        "ntp server 10.0.0.1\n"
                    };
                    let config =
                        format!("hostname r{i:05}\n{ntp}interface Gi0/1\n description uplink\n");
                    let (status, out) =
                        api.send_text("PUT", &format!("/v1/backups/r{i:05}/text"), &config);
                    assert!(status < 300, "{out}");
                }
            });
        }
    });
    let (status, out) = api.send_text(
        "PUT",
        "/v1/compliance/rules/ntp.yaml?activate=true",
        "rules:\n  - id: ntp\n    required:\n      - ntp server 10.0.0.1\n",
    );
    assert!(status < 300, "{out}");
    // Started, then awaited (an HTTP request waiting for all of it would time out).
    let (status, out) = api.post("/v1/compliance/audits", json!({}));
    assert!(status < 300, "{out}");
    let audit_started = Instant::now();
    loop {
        let (_, audits) = api.get("/v1/compliance/audits");
        if audits["audits"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            audit_started.elapsed().as_secs() < 1200,
            "no audit after 20 min"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    println!(
        "the audit of {devices} devices took {:.1} s",
        audit_started.elapsed().as_secs_f64()
    );
    println!(
        "{devices} devices, backups and an audit in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let status = std::process::Command::new("node")
        .arg(format!("{ROOT}/ui/bench/report.mjs"))
        .current_dir(format!("{ROOT}/ui"))
        .env("SOTP_URL", &server.base)
        .env("SOTP_TOKEN", &api.token)
        .env("DEVICES", devices.to_string())
        .status()
        .expect("running node");
    assert!(status.success());
}
