//! Flow exports against their receivers: a real QuestDB that is stopped for a minute while
//! flows keep arriving (nothing may be lost); a real Loki-push receiver (VictoriaLogs; Grafana
//! Loki is AGPL) that is stopped while flows arrive; and Loki push requests checked against
//! golden cases written from Loki's documented push format,
//! including a receiver that is down (503: replayed) and one that refuses a batch (400: skipped
//! and counted, the export goes on).
//!
//! Regenerate the golden files after a deliberate format change with
//! `SOTP_BLESS=1 cargo test -p sotp --test flow_sinks loki` and review the diff.

use serde_json::Value;
use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
use sotp_tests::harness::Server;
use sotp_tests::http_recorder::HttpRecorder;
use sotp_tests::mosquitto::free_port;
use sotp_tests::pcap;
use sotp_tests::questdb::QuestDb;
use sotp_tests::victorialogs::VictoriaLogs;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SOTP: &str = env!("CARGO_BIN_EXE_sotp");

/// A sotp with NetFlow and sFlow listeners on loopback, every exporter's flows in tenant acme,
/// and `sinks` appended to its config. Raw retention is long: the generated captures carry
/// 2023 timestamps, which the default week would delete. The sFlow capture's agent
/// (10.0.0.1) is replayed from loopback, bound to speak for it.
fn start(dir: &Path, sinks: &str) -> (Server, u16, u16) {
    let (netflow, sflow) = (free_port(), free_port());
    let config = dir.join("sotp.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\nsflow = [\"127.0.0.1:{sflow}\"]\n\
             default_tenant = \"acme\"\nflush_interval = \"200ms\"\nraw_retention = \"3650days\"\n\
             [runtime.flows.sflow_agents]\n\"10.0.0.1\" = \"127.0.0.1\"\n{sinks}"
        ),
    )
    .unwrap();
    let server = Server::start_with(SOTP, &["--config", config.to_str().unwrap()]);
    (server, netflow, sflow)
}

fn sink(server: &Server, name: &str) -> Value {
    server.flow_status()["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name} in {}", server.flow_status()))
}

fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let Some(state) = ok() else { return };
        assert!(Instant::now() < deadline, "waiting for {what}: {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn generated(name: &str) -> Vec<pcap::Datagram> {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        pcap::generate(d.path()).unwrap();
        d
    });
    pcap::read_udp(&dir.path().join(name)).unwrap()
}

fn send(frames: &[pcap::Datagram], port: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in frames {
        socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn golden_path(name: &str) -> PathBuf {
    pcap::flows_dir().join("golden").join(name)
}

/// Loki's documented push format, checked independently of the golden files: streams of
/// string labels with valid names, values of [nanosecond timestamp string, line], in time
/// order within a stream, lines that `| json` can parse with the fields the seed query uses.
fn check_push_format(body: &Value) {
    let streams = body["streams"].as_array().expect("streams array");
    assert!(!streams.is_empty());
    for s in streams {
        let labels = s["stream"].as_object().expect("stream labels object");
        for (k, v) in labels {
            let mut c = k.chars();
            assert!(
                c.next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && c.all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {k}"
            );
            assert!(v.is_string(), "label {k} value {v}");
        }
        for l in ["tenant", "exporter", "app"] {
            assert!(labels.contains_key(l), "stream label {l} missing: {s}");
        }
        let mut last = 0u128;
        for entry in s["values"].as_array().expect("values array") {
            let entry = entry.as_array().expect("[ts, line]");
            assert_eq!(entry.len(), 2);
            let ts: u128 = entry[0].as_str().expect("ts string").parse().expect("ns");
            assert!(ts >= last, "entries in time order within a stream");
            last = ts;
            let line: Value = serde_json::from_str(entry[1].as_str().expect("line string"))
                .expect("line is JSON");
            assert!(line["src_ip"].is_string() && line["app_protocol"].is_string());
            assert!(line["bytes"].is_u64() && line["seq"].is_u64());
            assert_eq!(
                line["app_protocol"], labels["app"],
                "the line's application is its stream's"
            );
        }
    }
}

/// sFlow carries no flow times: SOTP stamps samples with their arrival. Those times are
/// checked to be recent and then replaced by 0 so the golden files stay fixed.
fn mask_arrival_times(body: &mut Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for s in body["streams"].as_array_mut().unwrap() {
        for entry in s["values"].as_array_mut().unwrap() {
            let line: Value = serde_json::from_str(entry[1].as_str().unwrap()).unwrap();
            if line["flow_protocol"] != "sflow" {
                continue;
            }
            let mut text = entry[1].as_str().unwrap().to_string();
            for key in ["start_ms", "end_ms"] {
                let t = line[key].as_i64().unwrap();
                assert!((now - t).abs() < 600_000, "{key} {t} is the arrival time");
                text = text.replace(&format!("\"{key}\":{t}"), &format!("\"{key}\":0"));
            }
            assert_eq!(
                entry[0].as_str().unwrap(),
                format!("{}000000", line["end_ms"])
            );
            entry[0] = Value::from("0");
            entry[1] = Value::from(text);
        }
    }
}

fn compare_golden(name: &str, body: &[u8]) {
    let mut got: Value = serde_json::from_slice(body).expect("push body is JSON");
    check_push_format(&got);
    mask_arrival_times(&mut got);
    let path = golden_path(name);
    if std::env::var_os("SOTP_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    assert!(
        got == want,
        "push body differs from {}:\n{}",
        path.display(),
        serde_json::to_string_pretty(&got).unwrap()
    );
}

/// Send `frames` while Loki answers 503, then let it recover: the sink replays everything
/// stored meanwhile in one request. Returns that accepted request.
fn deliver_after_outage(
    server: &Server,
    loki: &HttpRecorder,
    frames: &[pcap::Datagram],
    port: u16,
) -> sotp_tests::http_recorder::Request {
    loki.set_default(503);
    let before = server.flow_status()["stored_rows"].as_u64().unwrap();
    let failures = sink(server, "loki")["failures"].as_u64().unwrap();
    send(frames, port);
    let records = pcap_records(server, before);
    server.wait_flows_stored(before + records);
    wait("a refused push", 30, || {
        let s = sink(server, "loki");
        (s["failures"].as_u64().unwrap() <= failures).then(|| s.to_string())
    });
    let seen = loki.requests().len();
    loki.set_default(204);
    wait("the backlog replayed", 30, || {
        let s = sink(server, "loki");
        (s["backlog"].as_u64() != Some(0)).then(|| s.to_string())
    });
    let accepted: Vec<_> = loki.requests()[seen..]
        .iter()
        .filter(|r| r.status == 204)
        .cloned()
        .collect();
    assert_eq!(accepted.len(), 1, "one replay request after the outage");
    accepted.into_iter().next().unwrap()
}

/// Records decoded so far beyond `before`, once the listener has settled.
fn pcap_records(server: &Server, before: u64) -> u64 {
    let mut last = before;
    let mut stable = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let now = server.flow_status()["stored_rows"].as_u64().unwrap();
        if now == last && now > before {
            stable += 1;
            if stable >= 5 {
                break;
            }
        } else {
            stable = 0;
        }
        last = now;
    }
    last - before
}

#[test]
fn loki_push_requests_match_golden_cases_and_survive_outages_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let loki = HttpRecorder::start(503);
    let (server, netflow, sflow) = start(
        dir.path(),
        &format!(
            "[runtime.flows.sinks.loki]\ntype = \"loki\"\n\
             url = \"http://127.0.0.1:{}/loki/api/v1/push\"\nbatch_rows = 1000\n\
             labels = {{ job = \"sotp-flows\", site = \"lab\" }}\n\
             headers = {{ X-Scope-OrgID = \"acme-org\" }}\n",
            loki.port
        ),
    );
    server.tenant("acme");

    // Case 1: NetFlow v5 (48 records, header sampling 1 in 10 on half the packets).
    let v5 = generated("nfv5.pcap");
    let request = deliver_after_outage(&server, &loki, &v5, netflow);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/loki/api/v1/push");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["x-scope-orgid"], "acme-org");
    compare_golden("loki-push-netflow5.json", &request.body);
    assert!(
        loki.requests().iter().any(|r| r.status == 503),
        "the outage was seen"
    );

    // Case 2: sFlow v5 (20 flow samples, IPv4 and IPv6, sampling rates scale bytes).
    let sflow_frames = generated("sflow.pcap");
    let request = deliver_after_outage(&server, &loki, &sflow_frames, sflow);
    compare_golden("loki-push-sflow.json", &request.body);

    // A batch Loki refuses (400) is skipped and counted; the export carries on after it.
    loki.set_default(400);
    let before = server.flow_status()["stored_rows"].as_u64().unwrap();
    send(&v5, netflow);
    server.wait_flows_stored(before + 48);
    wait("the refused batch skipped", 30, || {
        let s = sink(&server, "loki");
        (s["rejected_rows"].as_u64() != Some(48) || s["backlog"].as_u64() != Some(0))
            .then(|| s.to_string())
    });
    assert!(
        sink(&server, "loki")["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 400"),
        "the reason is kept"
    );
    let request = deliver_after_outage(&server, &loki, &sflow_frames, sflow);
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let seqs: Vec<u64> = body["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().clone())
        .map(|v| {
            serde_json::from_str::<Value>(v[1].as_str().unwrap()).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let first = before + 48 + 1;
    assert_eq!(seqs.len(), 20);
    assert!(
        seqs.iter().all(|s| (first..first + 20).contains(s)),
        "{seqs:?}"
    );

    let metrics = server.metrics_text();
    assert!(
        metrics.contains("sotp_flow_sink_rejected_rows_total{sink=\"loki\",type=\"loki\"} 48"),
        "{metrics}"
    );
}

#[test]
fn the_loki_sink_feeds_a_real_loki_push_receiver_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut vl = VictoriaLogs::start();
    let (server, netflow, sflow) = start(
        dir.path(),
        &format!(
            "[runtime.flows.sinks.loki]\ntype = \"loki\"\nurl = \"{}\"\nbatch_rows = 1000\n\
             labels = {{ job = \"sotp-flows\" }}\n",
            vl.push_url()
        ),
    );
    server.tenant("acme");
    let flows = "_stream:{job=\"sotp-flows\"}";
    send(&generated("nfv5.pcap"), netflow);
    wait("48 NetFlow v5 rows in VictoriaLogs", 30, || {
        let n = vl.count(flows);
        (n != 48).then(|| format!("{n} rows"))
    });
    // Found by a LogsQL query on the stream's labels and the line's fields.
    let rows = vl.query(&format!("{flows} tenant:acme seq:1"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["tenant"], "acme");
    assert!(rows[0]["bytes"].as_str().is_some(), "{:?}", rows[0]);

    // The receiver goes down while flows arrive: they are replayed when it is back, once.
    vl.stop();
    let failures = sink(&server, "loki")["failures"].as_u64().unwrap();
    let before = server.flow_status()["stored_rows"].as_u64().unwrap();
    send(&generated("sflow.pcap"), sflow);
    server.wait_flows_stored(before + 20);
    wait("a failed push", 30, || {
        let s = sink(&server, "loki");
        (s["failures"].as_u64().unwrap() <= failures).then(|| s.to_string())
    });
    vl.resume();
    wait("the backlog replayed", 60, || {
        let s = sink(&server, "loki");
        (s["backlog"].as_u64() != Some(0)).then(|| s.to_string())
    });
    wait("68 rows in VictoriaLogs", 30, || {
        let n = vl.count(flows);
        (n != 68).then(|| format!("{n} rows"))
    });
    assert_eq!(vl.count(&format!("{flows} flow_protocol:sflow")), 20);
}

/// Sends the same NetFlow v9 capture (templates included) over and over at a steady pace.
struct Stream {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(frames: Vec<pcap::Datagram>, port: u16, every: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            while !s.load(Ordering::Relaxed) {
                for d in &frames {
                    socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        Stream {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.rounds.load(Ordering::Relaxed)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.finish();
    }
}

fn qdb_count(qdb: &QuestDb) -> Option<u64> {
    qdb.row("SELECT count() FROM flows")
        .ok()
        .and_then(|r| r[0].as_u64())
}

#[test]
fn questdb_holds_every_row_through_a_one_minute_outage() {
    let dir = tempfile::tempdir().unwrap();
    let qdb_dir = tempfile::tempdir().unwrap();
    let mut qdb = QuestDb::start(qdb_dir.path());
    let (server, netflow, _) = start(
        dir.path(),
        &format!(
            "[runtime.flows.sinks.questdb]\ntype = \"questdb\"\nconf = \"{}\"\nbatch_rows = 5000\n",
            qdb.conf()
        ),
    );
    server.tenant("acme");
    let v9 = generated("nfv9.pcap");
    // 40 records every 100 ms: a steady 400 flows/s.
    let mut stream = Stream::start(v9.clone(), netflow, Duration::from_millis(100));
    wait("rows in QuestDB", 60, || {
        let n = qdb_count(&qdb);
        (n.unwrap_or(0) == 0).then(|| format!("{n:?}; sink {}", sink(&server, "questdb")))
    });

    // QuestDB goes away for a minute while the exporter keeps sending.
    qdb.stop();
    let stored_at_stop = server.flow_status()["stored_rows"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    let during = sink(&server, "questdb");
    assert!(
        during["failures"].as_u64().unwrap() > 0,
        "the sink saw the outage: {during}"
    );
    assert!(
        during["backlog"].as_u64().unwrap() > 0,
        "rows wait in the store: {during}"
    );
    assert!(server.flow_status()["stored_rows"].as_u64().unwrap() > stored_at_stop + 10_000);

    qdb.restart();
    std::thread::sleep(Duration::from_secs(3));
    let rounds = stream.finish();
    let stored = {
        let expect = rounds * 40;
        server.wait_flows_stored(expect);
        expect
    };
    wait("the sink caught up", 120, || {
        let s = sink(&server, "questdb");
        (s["backlog"].as_u64() != Some(0)).then(|| s.to_string())
    });
    // QuestDB applies WAL tables asynchronously: rows become visible shortly after the ack.
    wait("QuestDB to show every row", 60, || {
        let n = qdb_count(&qdb);
        (n != Some(stored)).then(|| format!("{n:?} of {stored}"))
    });
    let row = qdb
        .row("SELECT count(), count_distinct(seq), min(seq), max(seq) FROM flows")
        .unwrap();
    let n = |i: usize| row[i].as_u64().unwrap();
    assert_eq!(n(0), stored, "rows in QuestDB");
    assert_eq!(n(1), stored, "every sequence number once");
    assert_eq!((n(2), n(3)), (1, stored), "no gap");
    // Every record of the capture, field for field, once per round sent.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut decoder = FlowDecoder::new(TemplateCache::default(), Default::default());
        let mut out = DecodeOutput::default();
        for d in &v9 {
            let _ = decoder.decode(d.source, 0, &d.payload, &mut out);
        }
        for r in &out.flows {
            let key = format!(
                "{} {} {} {} {} {}",
                r.src_addr, r.dst_addr, r.src_port, r.dst_port, r.bytes, r.packets
            );
            *want.entry(key).or_default() += rounds;
        }
    }
    let body = qdb
        .exec(
            "SELECT src_addr, dst_addr, src_port, dst_port, bytes, packets, count() FROM flows \
             GROUP BY src_addr, dst_addr, src_port, dst_port, bytes, packets",
        )
        .unwrap();
    let got: BTreeMap<String, u64> = body["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            let f = |i: usize| match &r[i] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let key = format!("{} {} {} {} {} {}", f(0), f(1), f(2), f(3), f(4), f(5));
            (key, r[6].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, want, "QuestDB's rows vs the capture × {rounds} rounds");
    let s = sink(&server, "questdb");
    assert_eq!(s["lost_rows"], 0, "{s}");
    assert_eq!(s["rejected_rows"], 0, "{s}");
}
