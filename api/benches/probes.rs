//! HTTP probes per CPU-second against one local target (the test web app's JSON API, in this
//! process on loopback): SOTP running the shipped `http-check` component (8 probe components,
//! each ticking every 20 ms: a Wasm call, the request with its phase timings, the status and
//! JSON assertions, and its samples committed to the store) beside Debian's
//! blackbox_exporter answering `/probe` (8 concurrent callers; it stores nothing — a
//! Prometheus scraping it would).
//!
//! Prints probes/s, the CPU seconds each prober used (`/proc/<pid>/stat`) and probes per
//! CPU-second, and their ratio.
//!
//! `cargo bench -p sotp --bench probes [-- --seconds 10]`

use sotp_tests::blackbox::Blackbox;
use sotp_tests::guests::HTTP_CHECK;
use sotp_tests::harness::{LOOPBACK_EGRESS, Server, manifest, process_cpu};
use sotp_tests::webapp::WebApp;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const PROBES: usize = 8;

/// Probe requests SOTP has sent so far (every component's, from `/metrics`).
fn sotp_requests(server: &Server) -> u64 {
    server
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("sotp_component_http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn main() {
    let seconds: u64 = sotp_tests::harness::bench_arg("--seconds", 10);
    let window = Duration::from_secs(seconds);
    let app = WebApp::start();
    let target = app.url("/api/status");

    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    for k in 0..PROBES {
        acme.push(
            &manifest(
                &format!("probe-{k}"),
                "1",
                "20ms",
                &format!(
                    "[limits]\ncpu_ms = 200\nwall_ms = 20000\n[grants]\nhttp = [\"http://127.0.0.1:{}\"]\n\
                     [config]\nprobe = \"p{k}\"\nurl = \"{target}\"\nexpect_status = [200]\n\
                     json = [{{ path = \"status\", equals = \"ok\" }}]\n",
                    app.port
                ),
            ),
            HTTP_CHECK,
        );
    }
    std::thread::sleep(Duration::from_secs(2)); // warm: instances made, series known
    let (r0, c0) = (sotp_requests(&server), process_cpu(server.pid()));
    std::thread::sleep(window);
    let (r1, c1) = (sotp_requests(&server), process_cpu(server.pid()));
    let sotp_probes = (r1 - r0) as f64;
    let sotp_cpu = (c1 - c0).as_secs_f64();
    let sotp_rate = sotp_probes / sotp_cpu;
    println!(
        "sotp:     {:>7.0} probes/s, {sotp_cpu:>5.2} CPU s, {sotp_rate:>7.0} probes per CPU-second ({PROBES} components every 20 ms, samples stored)",
        sotp_probes / window.as_secs_f64()
    );
    drop(server);

    let blackbox = Arc::new(Blackbox::start());
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..PROBES)
        .map(|_| {
            let (bb, done, stop, target) =
                (blackbox.clone(), done.clone(), stop.clone(), target.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = bb.probe(&target, "http_2xx");
                    assert_eq!(r.get("probe_success"), Some(&1.0), "{r:?}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (n0, c0, t0) = (
        done.load(Ordering::Relaxed),
        process_cpu(blackbox.pid()),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (n1, c1, wall) = (
        done.load(Ordering::Relaxed),
        process_cpu(blackbox.pid()),
        t0.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let bb_probes = (n1 - n0) as f64;
    let bb_cpu = (c1 - c0).as_secs_f64();
    let bb_rate = bb_probes / bb_cpu;
    println!(
        "blackbox: {:>7.0} probes/s, {bb_cpu:>5.2} CPU s, {bb_rate:>7.0} probes per CPU-second ({PROBES} concurrent /probe callers)",
        bb_probes / wall.as_secs_f64()
    );
    println!(
        "ratio (sotp / blackbox_exporter, probes per CPU-second): {:.2}",
        sotp_rate / bb_rate
    );
}
