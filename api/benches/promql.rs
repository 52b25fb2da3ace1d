//! PromQL range queries, SOTP vs a real Prometheus holding the same samples: a day of 1,000
//! counter series at 15 s (5,760 points each, 5.76 M samples), loaded into SOTP's store
//! (through the store's own commit path) and into Debian's Prometheus 2.42 (backfilled with
//! `promtool tsdb create-blocks-from openmetrics`), then the same `query_range` over the whole
//! day at 15 s steps sent to both over HTTP.
//!
//! Prints, per query: the median wall time of five runs each, each server's resident memory
//! after them and its peak (VmHWM), the ratio, and whether the two answers agree (same
//! series, every value within 1e-9 relative).
//!
//! `cargo bench -p sotp --bench promql [-- --series 1000 --hours 24]`

use serde_json::Value;
use sotp_runtime::telemetry::{Batch, Samples, TelemetryStore, normalize_labels};
use sotp_tests::harness::{Server, bench_arg, urlencode};
use sotp_tests::mosquitto::free_port;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const STEP_S: i64 = 15;
const GROUPS: usize = 10;

/// The counter's value at point `i` of series `s`: moves by 1–7 per step, with a reset
/// halfway through the day for every tenth series.
fn value(s: usize, i: i64, points: i64) -> f64 {
    let i = if s.is_multiple_of(10) && i >= points / 2 {
        i - points / 2
    } else {
        i
    };
    (i * (1 + (s % 7) as i64)) as f64 + s as f64
}

fn labels(s: usize) -> Vec<(String, String)> {
    vec![
        ("instance".to_string(), format!("host-{s:04}")),
        ("group".to_string(), format!("g{}", s % GROUPS)),
    ]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Load the samples into SOTP's store under tenant `acme` (the server stopped meanwhile).
fn load_sotp(server: &mut Server, series: usize, start_s: i64, points: i64) {
    server.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = TelemetryStore::open(&server.data_path().join("telemetry.duckdb")).unwrap();
    let hasher = store.hasher();
    let started = Instant::now();
    for chunk in (0..series).collect::<Vec<_>>().chunks(25) {
        let mut samples = Samples::default();
        for &s in chunk {
            let key = hasher.key(
                "acme",
                "bench_requests_total".into(),
                normalize_labels("bench", labels(s)).unwrap(),
            );
            for i in 0..points {
                samples.push(
                    key.clone(),
                    (start_s + i * STEP_S) * 1000,
                    value(s, i, points),
                );
            }
        }
        let batch = Batch {
            tenant: "acme".into(),
            component: "bench".into(),
            samples,
            max_series: 1_000_000,
            ..Default::default()
        };
        rt.block_on(store.commit(batch)).unwrap();
    }
    store.close();
    drop(store);
    eprintln!(
        "SOTP: {} samples stored in {:.1} s",
        series as i64 * points,
        started.elapsed().as_secs_f64()
    );
    server.restart();
}

/// Backfill Prometheus's TSDB in `dir` with the same samples; then serve it.
fn load_prometheus(
    dir: &std::path::Path,
    series: usize,
    start_s: i64,
    points: i64,
) -> (std::process::Child, u16) {
    let file = dir.join("samples.om");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(out, "# TYPE bench_requests counter").unwrap();
    for s in 0..series {
        let l = labels(s);
        for i in 0..points {
            writeln!(
                out,
                "bench_requests_total{{component=\"bench\",group=\"{}\",instance=\"{}\"}} {} {}",
                l[1].1,
                l[0].1,
                value(s, i, points),
                start_s + i * STEP_S
            )
            .unwrap();
        }
    }
    writeln!(out, "# EOF").unwrap();
    drop(out);
    let data = dir.join("data");
    let started = Instant::now();
    let ok = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .expect("promtool (Debian's prometheus package)");
    assert!(ok.success(), "promtool backfill failed");
    std::fs::remove_file(&file).ok();
    eprintln!(
        "Prometheus: backfilled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reqwest::blocking::get(&ready).is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "prometheus did not get ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    (child, port)
}

/// (median wall time, the answer) of five runs of `url` (plus one warm-up).
fn timed(client: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> (Duration, Value) {
    let run = || {
        let mut request = client.get(url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let started = Instant::now();
        let body: Value = request.send().unwrap().json().unwrap();
        (started.elapsed(), body)
    };
    let (_, mut answer) = run();
    let mut times = Vec::new();
    for _ in 0..5 {
        let (t, body) = run();
        times.push(t);
        answer = body;
    }
    times.sort();
    assert_eq!(answer["status"], "success", "{url}: {answer}");
    (times[2], answer)
}

/// The answer as series key → values.
fn matrix(answer: &Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let values = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v[0].as_f64().unwrap(),
                        v[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            (s["metric"].to_string(), values)
        })
        .collect()
}

fn agree(a: &BTreeMap<String, Vec<(f64, f64)>>, b: &BTreeMap<String, Vec<(f64, f64)>>) -> String {
    if a.keys().ne(b.keys()) {
        return format!("different series ({} vs {})", a.len(), b.len());
    }
    let mut points = 0;
    for (k, va) in a {
        let vb = &b[k];
        if va.len() != vb.len() {
            return format!("{k}: {} vs {} points", va.len(), vb.len());
        }
        for (x, y) in va.iter().zip(vb) {
            let scale = x.1.abs().max(y.1.abs()).max(1e-12);
            if x.0 != y.0 || (x.1 - y.1).abs() / scale > 1e-9 {
                return format!("{k} at {}: {} vs {}", x.0, x.1, y.1);
            }
            points += 1;
        }
    }
    format!("yes ({} series, {points} points)", a.len())
}

fn main() {
    let series: usize = bench_arg("--series", 1000);
    let hours: i64 = bench_arg("--hours", 24);
    let points = hours * 3600 / STEP_S;
    let end_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 900
        * 900
        - 900;
    let start_s = end_s - points * STEP_S;

    let mut server = Server::start(BIN);
    let token = server.tenant("acme").token.clone();
    load_sotp(&mut server, series, start_s, points);
    let prom_dir = tempfile::tempdir().unwrap();
    let (mut prom, prom_port) = load_prometheus(prom_dir.path(), series, start_s, points);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();

    println!(
        "query_range over {hours} h of {series} series at {STEP_S} s ({} samples), step {STEP_S} s:",
        series as i64 * points
    );
    println!(
        "{:<58} {:>10} {:>10} {:>7}  {:>22} {:>22}  agree",
        "query", "SOTP ms", "Prom ms", "ratio", "SOTP RSS/peak MiB", "Prom RSS/peak MiB"
    );
    for query in [
        "sum by (group) (rate(bench_requests_total[5m]))",
        "max(increase(bench_requests_total[1h]))",
        "avg by (group) (bench_requests_total)",
    ] {
        let q = format!(
            "query={}&start={}&end={}&step={STEP_S}",
            urlencode(query),
            start_s + 3600,
            end_s
        );
        let (ours, our_answer) = timed(
            &client,
            &format!("{}/api/v1/query_range?{q}", server.base),
            Some(&token),
        );
        let (theirs, their_answer) = timed(
            &client,
            &format!("http://127.0.0.1:{prom_port}/api/v1/query_range?{q}"),
            None,
        );
        let mib = |pid: u32, f: &str| status_kib(pid, f) / 1024;
        println!(
            "{:<58} {:>10.0} {:>10.0} {:>7.2}  {:>10}/{:<11} {:>10}/{:<11}  {}",
            query,
            ours.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() * 1000.0,
            ours.as_secs_f64() / theirs.as_secs_f64(),
            mib(server.pid(), "VmRSS"),
            mib(server.pid(), "VmHWM"),
            mib(prom.id(), "VmRSS"),
            mib(prom.id(), "VmHWM"),
            agree(&matrix(&our_answer), &matrix(&their_answer)),
        );
    }
    let _ = prom.kill();
    let _ = prom.wait();
}
