//! Prometheus scraping, SOTP's guest vs a real Prometheus: 200 node_exporter-sized targets
//! (1,000 series each, counters that move every scrape; served by this process on 200
//! loopback ports) scraped every 15 s — by four `prometheus-scrape` components of 50 targets
//! each (parse on the host, relabel and label in the guest, samples committed to DuckDB), and
//! by Debian's Prometheus 2.42 (its TSDB). Each alone, for the same window.
//!
//! Prints the samples each scraped, the CPU seconds it used (`/proc/<pid>/stat`), the CPU per
//! scraped sample, and the ratio.
//!
//! `cargo bench -p sotp --bench scrape [-- --seconds 45]`

use serde_json::json;
use sotp_tests::guests::PROMETHEUS_SCRAPE;
use sotp_tests::harness::{LOOPBACK_EGRESS, Server, manifest, process_cpu};
use sotp_tests::prometheus::{Job, Prometheus, Target};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const TARGETS: usize = 200;
const SERIES: usize = 1000;
const PER_COMPONENT: usize = 50;

/// One exposition: 1,000 series like node_exporter's (cpu × mode counters, gauges).
fn exposition(target: usize, round: u64) -> String {
    let mut out = String::with_capacity(SERIES * 90);
    out.push_str("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\n");
    for i in 0..SERIES / 2 {
        out.push_str(&format!(
            "node_cpu_seconds_total{{cpu=\"{}\",mode=\"{}\"}} {}.{}\n",
            i / 8,
            [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"
            ][i % 8],
            round * 15 + i as u64,
            target % 100
        ));
    }
    out.push_str("# TYPE node_filesystem_avail_bytes gauge\n");
    for i in 0..SERIES / 2 {
        out.push_str(&format!(
            "node_filesystem_avail_bytes{{device=\"/dev/sd{i}\",fstype=\"ext4\",mountpoint=\"/mnt/{i}\"}} {}\n",
            1e10 + (round * 4096 + i as u64) as f64
        ));
    }
    out
}

/// 200 loopback listeners serving expositions; their ports, and how many were served.
fn targets(rt: &tokio::runtime::Runtime) -> (Vec<u16>, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let ports = (0..TARGETS)
        .map(|t| {
            let served = served.clone();
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let round = served.fetch_add(1, Ordering::Relaxed);
                    async move { exposition(t, round / TARGETS as u64) }
                }),
            );
            rt.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            port
        })
        .collect();
    (ports, served)
}

fn main() {
    let seconds: u64 = sotp_tests::harness::bench_arg("--seconds", 45);
    let window = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ports, _) = targets(&rt);
    println!("{TARGETS} targets × {SERIES} series, every 15 s, {seconds} s each");

    let server = Server::start_with_config(BIN, LOOPBACK_EGRESS, &[]);
    let (status, body) = server.admin().post(
        "/v1/tenants",
        json!({ "id": "bench", "max_series": 400_000, "max_memory": "2GiB" }),
    );
    assert_eq!(status, 201, "{body}");
    let bench = server.api(body["token"]["token"].as_str().unwrap());
    for (k, chunk) in ports.chunks(PER_COMPONENT).enumerate() {
        let urls: Vec<String> = chunk
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/metrics"))
            .collect();
        bench.push(
            &manifest(
                &format!("scrape-{k}"),
                "1",
                "15s",
                &format!(
                    "[limits]\nmemory = \"256MiB\"\ncpu_ms = 5000\nwall_ms = 14000\nmax_emit_bytes = \"64MiB\"\n\
                     [grants]\nhttp = [\"http://127.0.0.1:*\"]\n[config]\njob = \"bench\"\ntargets = {urls:?}\n"
                ),
            ),
            PROMETHEUS_SCRAPE,
        );
    }
    let scraped = |server: &Server| -> f64 {
        server
            .metrics_text()
            .lines()
            .filter(|l| {
                l.starts_with("sotp_component_samples_total{") && l.contains("tenant=\"bench\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    std::thread::sleep(Duration::from_secs(17)); // the first round (instances, series known)
    let (s0, c0) = (scraped(&server), process_cpu(server.pid()));
    std::thread::sleep(window);
    let (s1, c1) = (scraped(&server), process_cpu(server.pid()));
    let (sotp_samples, sotp_cpu) = (s1 - s0, (c1 - c0).as_secs_f64());
    println!(
        "sotp:       {sotp_samples:>9.0} samples, {sotp_cpu:>6.2} CPU s, {:>6.2} µs CPU per sample (stored)",
        sotp_cpu / sotp_samples * 1e6
    );
    drop(server);

    let targets: Vec<Target> = ports
        .iter()
        .map(|p| Target::new(&format!("127.0.0.1:{p}")))
        .collect();
    let prom = Prometheus::builder()
        .job(Job::new("bench", targets))
        .interval("15s")
        .start();
    prom.wait_targets_up("bench", TARGETS, Duration::from_secs(60));
    // Samples appended to its TSDB, from its own /metrics.
    let appended = |prom: &Prometheus| -> f64 {
        reqwest::blocking::get(format!("{}/metrics", prom.base()))
            .and_then(|r| r.text())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("prometheus_tsdb_head_samples_appended_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    std::thread::sleep(Duration::from_secs(2));
    let (p0, c0) = (appended(&prom), process_cpu(prom.pid()));
    std::thread::sleep(window);
    let (p1, c1) = (appended(&prom), process_cpu(prom.pid()));
    let (prom_samples, prom_cpu) = (p1 - p0, (c1 - c0).as_secs_f64());
    println!(
        "prometheus: {prom_samples:>9.0} samples, {prom_cpu:>6.2} CPU s, {:>6.2} µs CPU per sample (TSDB)",
        prom_cpu / prom_samples * 1e6
    );
    println!(
        "ratio (sotp / prometheus, CPU per scraped sample): {:.2}",
        (sotp_cpu / sotp_samples) / (prom_cpu / prom_samples)
    );
}
