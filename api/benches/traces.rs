//! OTLP trace intake: SOTP beside Jaeger's own OTLP receiver (Jaeger v2, memory storage), on
//! the same generated batches (protobuf, 500 spans each, five spans per trace, attributes
//! like a browser's fetch spans), sent by four concurrent senders.
//!
//! Prints for each: spans/s (wall), the CPU seconds the receiving process used (from
//! `/proc/<pid>/stat`) and spans per CPU-second, and the ratio. SOTP's answer comes once the
//! spans are committed to `traces.sqlite` (deduplicated, searchable); Jaeger answers before
//! its batch processor stores them, so its CPU is read after a settle of one second.
//!
//! `cargo bench -p sotp --bench traces [-- --batches 200]`

use reqwest::blocking::Client;
use serde_json::json;
use sotp_tests::harness::{Server, process_cpu};
use sotp_tests::jaeger::Jaeger;
use sotp_tests::otlp::{SpanSpec, json_request, now_ms, protobuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const SPANS_PER_BATCH: usize = 500;
const SENDERS: usize = 4;

fn batches(n: usize) -> Vec<Vec<u8>> {
    let t0 = now_ms() - 60_000;
    (0..n)
        .map(|b| {
            let spans: Vec<SpanSpec> = (0..SPANS_PER_BATCH)
                .map(|i| {
                    let trace = format!("{:016x}{:016x}", b + 1, i / 5 + 1);
                    let mut s = SpanSpec::new(1, 1, 0, "HTTP GET", t0 + i as i64, 12.5)
                        .attr(
                            "http.url",
                            json!(format!("https://shop.example/api/item/{i}")),
                        )
                        .attr("http.method", json!("GET"))
                        .attr("http.status_code", json!(200))
                        .attr("component", json!("fetch"));
                    s.trace_id = trace;
                    s.span_id = format!("{:08x}{:08x}", b + 1, i + 1);
                    s.parent_id = if i % 5 == 0 {
                        String::new()
                    } else {
                        format!("{:08x}{:08x}", b + 1, i - i % 5 + 1)
                    };
                    s
                })
                .collect();
            protobuf(&json_request("shop-web", &spans))
        })
        .collect()
}

/// Post every batch from `SENDERS` threads; the wall time.
fn send_all(url: &str, token: Option<&str>, batches: &Arc<Vec<Vec<u8>>>) -> Duration {
    let started = Instant::now();
    let threads: Vec<_> = (0..SENDERS)
        .map(|k| {
            let (url, token, batches) = (url.to_string(), token.map(String::from), batches.clone());
            std::thread::spawn(move || {
                let client = Client::new();
                for body in batches.iter().skip(k).step_by(SENDERS) {
                    let mut req = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .body(body.clone());
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    let status = req.send().expect("posting a batch").status();
                    assert!(status.is_success(), "{url}: {status}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    started.elapsed()
}

fn main() {
    let n: usize = sotp_tests::harness::bench_arg("--batches", 200);
    let batches = Arc::new(batches(n));
    let spans = (n * SPANS_PER_BATCH) as f64;
    let mb = batches.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!("{n} batches of {SPANS_PER_BATCH} spans ({mb:.1} MB protobuf), {SENDERS} senders");

    let server = Server::start_with_config(
        BIN,
        "[runtime.traces]\nspans_per_second = 10000000\nspans_burst = 10000000\nmax_spans = 100000000\n",
        &[],
    );
    let acme = server.tenant("acme");
    let token = acme.scoped("bench", &["ingest"]).token;
    let url = format!("{}/v1/traces", server.base);
    // Warm up (connections, statements), then measure.
    send_all(&url, Some(&token), &Arc::new(batches[..SENDERS].to_vec()));
    let cpu0 = process_cpu(server.pid());
    let wall = send_all(&url, Some(&token), &batches);
    let sotp_cpu = (process_cpu(server.pid()) - cpu0).as_secs_f64();
    let sotp_rate = spans / sotp_cpu;
    println!(
        "sotp:   {:>9.0} spans/s wall, {sotp_cpu:>6.2} CPU s, {sotp_rate:>9.0} spans per CPU-second (stored, deduplicated, searchable)",
        spans / wall.as_secs_f64()
    );

    let jaeger = Jaeger::start(&[]);
    send_all(
        &jaeger.otlp_url(),
        None,
        &Arc::new(batches[..SENDERS].to_vec()),
    );
    let cpu0 = process_cpu(jaeger.pid());
    let wall = send_all(&jaeger.otlp_url(), None, &batches);
    std::thread::sleep(Duration::from_secs(1));
    let jaeger_cpu = (process_cpu(jaeger.pid()) - cpu0).as_secs_f64();
    let jaeger_rate = spans / jaeger_cpu;
    println!(
        "jaeger: {:>9.0} spans/s wall, {jaeger_cpu:>6.2} CPU s, {jaeger_rate:>9.0} spans per CPU-second (memory storage)",
        spans / wall.as_secs_f64()
    );
    println!(
        "ratio (sotp / jaeger, spans per CPU-second): {:.2}",
        sotp_rate / jaeger_rate
    );
}
