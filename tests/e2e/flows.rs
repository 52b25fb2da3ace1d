//! Flows end to end against a running `sotp`: exports sent over UDP to its listeners,
//! templates surviving a restart, a real softflowd exporting real packets, the query API's
//! answers checked against the traffic generated, the same flows in a real QuestDB through the
//! sink, and a real Prometheus scraping the aggregates.

use serde_json::Value;
use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
use sotp_tests::harness::Server;
use sotp_tests::mosquitto::free_port;
use sotp_tests::pcap;
use sotp_tests::questdb::QuestDb;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOTP: &str = env!("CARGO_BIN_EXE_sotp");

struct Ports {
    netflow: u16,
    ipfix: u16,
    sflow: u16,
}

/// A sotp with all three listeners on loopback; every exporter's flows go to tenant acme.
/// The sFlow capture's agent (10.0.0.1) is replayed from loopback, which is bound to speak
/// for it. `extra` is appended to its config (sinks).
fn start(config_dir: &Path, extra: &str) -> (Server, Ports) {
    let ports = Ports {
        netflow: free_port(),
        ipfix: free_port(),
        sflow: free_port(),
    };
    let config = config_dir.join("sotp.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{}\"]\nipfix = [\"127.0.0.1:{}\"]\nsflow = [\"127.0.0.1:{}\"]\n\
             default_tenant = \"acme\"\nflush_interval = \"200ms\"\n[runtime.flows.applications]\n\"tcp/40000\" = \"test-app\"\n\
             [runtime.flows.sflow_agents]\n\"10.0.0.1\" = \"127.0.0.1\"\n{extra}",
            ports.netflow, ports.ipfix, ports.sflow
        ),
    )
    .unwrap();
    let server = Server::start_with(SOTP, &["--config", config.to_str().unwrap()]);
    (server, ports)
}

fn send(frames: &[&pcap::Datagram], port: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in frames {
        socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Records SOTP's decoder finds in `frames` starting from no template state.
fn records_without_templates(frames: &[&pcap::Datagram]) -> usize {
    let mut d = FlowDecoder::new(TemplateCache::default(), Default::default());
    let mut out = DecodeOutput::default();
    for f in frames {
        let _ = d.decode(f.source, 0, &f.payload, &mut out);
    }
    out.flows.len()
}

/// Whether a NetFlow v9 datagram carries a template or options template flowset.
fn has_v9_template(payload: &[u8]) -> bool {
    let mut pos = 20;
    while pos + 4 <= payload.len() {
        let id = u16::from_be_bytes([payload[pos], payload[pos + 1]]);
        let len = u16::from_be_bytes([payload[pos + 2], payload[pos + 3]]) as usize;
        if id <= 1 {
            return true;
        }
        pos += len.max(4);
    }
    false
}

#[test]
fn templates_survive_a_restart_and_every_protocol_is_stored() {
    let config_dir = tempfile::tempdir().unwrap();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let (mut server, ports) = start(config_dir.path(), "");
    let acme = server.tenant("acme");

    let v9 = pcap::read_udp(&pcaps.path().join("nfv9.pcap")).unwrap();
    let all: Vec<&pcap::Datagram> = v9.iter().collect();
    send(&all, ports.netflow);
    server.wait_flows_stored(40);
    assert!(server.flow_status()["templates"].as_u64().unwrap() >= 3);

    // After a restart, only the data: no template flowsets are sent again.
    server.stop();
    server.restart();
    let data_only: Vec<&pcap::Datagram> =
        v9.iter().filter(|d| !has_v9_template(&d.payload)).collect();
    let expected = {
        // Records of the data-only frames, decoded with the templates learned before them.
        let mut n = 0;
        let mut d = FlowDecoder::new(TemplateCache::default(), Default::default());
        for f in &v9 {
            let mut o = DecodeOutput::default();
            let _ = d.decode(f.source, 0, &f.payload, &mut o);
            if !has_v9_template(&f.payload) {
                n += o.flows.len();
            }
        }
        n
    };
    assert!(
        !data_only.is_empty() && expected > 0,
        "the capture must have data-only datagrams"
    );
    assert_eq!(
        records_without_templates(&data_only),
        0,
        "those datagrams cannot decode without templates"
    );
    let before = server.flow_status()["stored_rows"].as_u64().unwrap_or(0);
    assert_eq!(before, 0, "counters restart at 0");
    send(&data_only, ports.netflow);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = server.flow_status();
        if s["records"]["netflow9"].as_u64() == Some(expected as u64) {
            assert_eq!(
                s["pending_held"].as_u64(),
                Some(0),
                "nothing waited for a template: {s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "data after restart not decoded: {s}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The other protocols, on their own listeners; malformed input is counted, not fatal.
    for (file, port) in [
        ("nfv5.pcap", ports.netflow),
        ("ipfix.pcap", ports.ipfix),
        ("sflow.pcap", ports.sflow),
    ] {
        let frames = pcap::read_udp(&pcaps.path().join(file)).unwrap();
        send(&frames.iter().collect::<Vec<_>>(), port);
    }
    let junk = pcap::Datagram {
        source: "127.0.0.1".parse().unwrap(),
        dst_port: 0,
        payload: vec![0, 9, 0, 1, 2],
    };
    let truncated_v5 = pcap::Datagram {
        source: junk.source,
        dst_port: 0,
        payload: vec![0, 5, 0, 30, 0, 0, 0, 0],
    };
    send(&[&junk, &truncated_v5], ports.netflow);
    let s = loop {
        let s = server.flow_status();
        let r = &s["records"];
        if r["netflow5"] == 48 && r["ipfix"] == 40 && r["sflow"] == 20 && s["malformed"] == 2 {
            break s;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "not all decoded: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s["unmapped"], 0);

    // Interface names: the loopback exporter is inventory device edge1, whose interface table
    // names ifIndex 0..=31; the sFlow agent (10.0.0.1) is no device and stays unnamed.
    let acme = server.api(&acme.token); // the restarted server listens on a new port
    server.wait_flows_stored(expected as u64 + 48 + 40 + 20); // stored since the restart
    let (code, body) = acme.put(
        "/v1/devices/edge1",
        serde_json::json!({ "name": "edge1", "address": "127.0.0.1" }),
    );
    assert_eq!(code, 201, "{body}");
    let names: Vec<Value> = (0..32)
        .map(|i| serde_json::json!({ "index": i, "name": format!("ge-0/0/{i}") }))
        .collect();
    let (code, body) = acme.put(
        "/v1/devices/edge1/interfaces",
        serde_json::json!({ "interfaces": names }),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = acme.put(
        "/v1/devices/edge1/interfaces",
        serde_json::json!({ "interfaces": [{ "index": 1, "name": " " }] }),
    );
    assert_eq!(code, 400, "an empty name is refused: {body}");
    let (code, top) = acme.get("/v1/flows/top?start=0&end=now&by=exporter,in_if&limit=200");
    assert_eq!(code, 200, "{top}");
    let rows = top["rows"].as_array().unwrap();
    let mut named = 0;
    for r in rows {
        let g = &r["group"];
        if g["exporter"] == "127.0.0.1" && g["in_if"].as_u64().unwrap() < 32 {
            assert_eq!(g["in_if_name"], format!("ge-0/0/{}", g["in_if"]), "{r}");
            named += 1;
        } else {
            assert!(g.get("in_if_name").is_none(), "{r}");
        }
    }
    assert!(named > 0 && named < rows.len(), "{top}");

    // Tenant scoping: another tenant sees none of acme's flows.
    let other = server.tenant("globex");
    let (code, body) = other.get("/v1/flows/top?start=0&end=now&by=src_addr");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 0, "{body}");
    // A bad grouping is a 400 that says what is allowed.
    let (code, body) = other.get("/v1/flows/top?by=colour");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("src_addr"),
        "{body}"
    );
}

/// Per (source address, application): bytes in traffic.pcap, from gen_traffic.py's totals.
fn traffic_truth(json: &Value) -> BTreeMap<(String, String), u64> {
    let mut by = BTreeMap::new();
    for (name, c) in json.as_object().unwrap() {
        let host = |s: &str| s.rsplit_once(':').unwrap().0.to_string();
        let port = |s: &str| s.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
        let (a, b) = (c["a"].as_str().unwrap(), c["b"].as_str().unwrap());
        let app = match (c["proto"].as_str().unwrap(), port(b)) {
            ("tcp", 22) => "ssh",
            (_, 53) => "dns",
            ("tcp", 80) => "http",
            ("tcp", 443) => "https",
            (_, 5201) => "iperf3",
            other => panic!("conversation {name}: no application for {other:?}"),
        };
        for (src, dir) in [(a, "a_to_b_packets_bytes"), (b, "b_to_a_packets_bytes")] {
            let bytes = c[dir][1].as_u64().unwrap();
            if bytes > 0 {
                *by.entry((host(src), app.to_string())).or_default() += bytes;
            }
        }
    }
    by
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn softflowd_real_traffic_answers_top_talkers_questdb_holds_it_and_prometheus_scrapes() {
    let config_dir = tempfile::tempdir().unwrap();
    // QuestDB receives the flows through SOTP's sink.
    let qdb_dir = tempfile::tempdir().unwrap();
    let qdb = QuestDb::start(qdb_dir.path());
    let (server, ports) = start(
        config_dir.path(),
        &format!(
            "[runtime.flows.sinks.questdb]\ntype = \"questdb\"\nconf = \"{}\"\n",
            qdb.conf()
        ),
    );
    let acme = server.tenant("acme");
    let traffic = config_dir.path().join("traffic.pcap");
    let ok = Command::new("/usr/bin/python3")
        .arg(pcap::flows_dir().join("gen_traffic.py"))
        .arg(&traffic)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let truth: Value = serde_json::from_slice(
        &std::fs::read(config_dir.path().join("traffic.pcap.json")).unwrap(),
    )
    .unwrap();
    let truth = traffic_truth(&truth);

    // softflowd reads the packets and exports IPFIX straight to sotp's listener.
    let out = Command::new("softflowd")
        .args(["-d", "-r"])
        .arg(&traffic)
        .args([
            "-n",
            &format!("127.0.0.1:{}", ports.ipfix),
            "-v",
            "10",
            "-a",
        ])
        .output()
        .expect("softflowd (scripts/setup installs it)");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Flows exported"), "softflowd: {log}");
    server.wait_flows_stored(11);

    // Top talkers by bytes, and bytes/s by source and application in 5-minute buckets (the
    // packets carry 2023-11-14 timestamps, which softflowd -a keeps).
    let (code, top) = acme.get("/v1/flows/top?start=0&end=now&by=src_addr,app&limit=50");
    assert_eq!(code, 200, "{top}");
    let got: BTreeMap<(String, String), u64> = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                (
                    r["group"]["src_addr"].as_str().unwrap().to_string(),
                    r["group"]["app"].as_str().unwrap().to_string(),
                ),
                r["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got, truth,
        "top talkers by source and application vs the traffic generated"
    );
    let rows = top["rows"].as_array().unwrap();
    assert!(
        rows.windows(2)
            .all(|w| w[0]["bytes"].as_u64() >= w[1]["bytes"].as_u64()),
        "ordered by bytes"
    );

    let (code, rate) = acme.get(
        "/v1/flows/rate?start=1699999800000&end=1700001000000&by=src_addr,app&step=5m&limit=100",
    );
    assert_eq!(code, 200, "{rate}");
    let mut per_group: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in rate["rows"].as_array().unwrap() {
        let key = (
            r["group"]["src_addr"].as_str().unwrap().to_string(),
            r["group"]["app"].as_str().unwrap().to_string(),
        );
        *per_group.entry(key).or_default() += r["bytes_per_second"].as_f64().unwrap() * 300.0;
    }
    let per_group: BTreeMap<_, u64> = per_group
        .into_iter()
        .map(|(k, v)| (k, v.round() as u64))
        .collect();
    assert_eq!(
        per_group, truth,
        "bytes/s × 300 s per source and application"
    );

    // The seed's LogQL query, sent exactly as written to the Loki-compatible API: at each
    // step, bytes/s of the 5 minutes before it per source and application — the same
    // numbers as the flow rate buckets, and as `sotp flows rate --by src_addr,app`.
    let by_bucket = |rows: &Value| -> BTreeMap<(String, String, i64), f64> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    (
                        r["group"]["src_addr"].as_str().unwrap().to_string(),
                        r["group"]["app"].as_str().unwrap().to_string(),
                        r["bucket_ms"].as_i64().unwrap(),
                    ),
                    r["bytes_per_second"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let expected = by_bucket(&rate["rows"]);
    let query = "sum by (src_ip, app_protocol) (rate(flow_bytes[5m]))";
    let (code, loki) = acme.get(&format!(
        "/loki/api/v1/query_range?query={}&start=1700000100&end=1700001000&step=300",
        sotp_tests::harness::urlencode(query)
    ));
    assert_eq!(code, 200, "{loki}");
    assert_eq!(loki["data"]["resultType"], "matrix");
    let mut answered: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    for s in loki["data"]["result"].as_array().unwrap() {
        let (src, app) = (
            s["metric"]["src_ip"].as_str().unwrap().to_string(),
            s["metric"]["app_protocol"].as_str().unwrap().to_string(),
        );
        for v in s["values"].as_array().unwrap() {
            let t = v[0].as_i64().unwrap() * 1000;
            let value: f64 = v[1].as_str().unwrap().parse().unwrap();
            answered.insert((src.clone(), app.clone(), t - 300_000), value);
        }
    }
    assert_eq!(answered, expected, "LogQL vs the flow rate buckets");
    let cli = Command::new(env!("CARGO_BIN_EXE_sotp"))
        .args([
            "flows",
            "rate",
            "--server",
            &server.base,
            "--token",
            &acme.token,
            "--json",
        ])
        .args([
            "--start",
            "1699999800000",
            "--end",
            "1700001000000",
            "--by",
            "src_addr,app",
        ])
        .args(["--step", "5m", "--limit", "100"])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(
        by_bucket(&cli["rows"]),
        answered,
        "sotp flows rate --by src_addr,app"
    );
    // Another tenant asks the same: nothing of acme's.
    let (code, theirs) = server.tenant("globex").get(&format!(
        "/loki/api/v1/query_range?query={}&start=1700000100&end=1700001000&step=300",
        sotp_tests::harness::urlencode(query)
    ));
    assert_eq!(code, 200);
    assert_eq!(theirs["data"]["result"], serde_json::json!([]));
    let (code, body) = acme.get(&format!(
        "/loki/api/v1/query?query={}",
        sotp_tests::harness::urlencode("avg by (src_ip) (rate(flow_bytes[5m]))")
    ));
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("`avg`"), "{body}");
    assert_eq!(
        server.metric_value("sotp_query_refused_total{api=\"logql\",reason=\"invalid\"}"),
        Some(1.0)
    );

    // The real QuestDB holds the same flows: bytes by source and application.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = qdb.exec(
            "SELECT src_addr, app, sum(bytes_scaled) FROM flows WHERE tenant = 'acme' \
             GROUP BY src_addr, app",
        );
        let got: Option<BTreeMap<(String, String), u64>> = body.ok().map(|b| {
            b["dataset"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()),
                        r[2].as_u64().unwrap(),
                    )
                })
                .collect()
        });
        if got.as_ref() == Some(&truth) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QuestDB's flows by source and application: {got:?}, want {truth:?}; {}",
            server.flow_status()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A real Prometheus scrapes the aggregates.
    let prom_port = free_port();
    let prom_dir = tempfile::tempdir().unwrap();
    let target = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers/prometheus");
    // It scrapes the tenant's own view, with a read-only token of acme's.
    let scraper = acme.scoped("prometheus", &["read"]);
    let _prom = Prometheus(
        Command::new(script)
            .env("PROMETHEUS_METRICS_PATH", "/v1/metrics")
            .env("PROMETHEUS_BEARER_TOKEN", &scraper.token)
            .arg("run")
            .arg(prom_dir.path())
            .arg(prom_port.to_string())
            .arg(&target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/setup installs it)"),
    );
    let client = reqwest::blocking::Client::new();
    let total: u64 = truth.values().sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query=sum(sotp_flow_bytes_total{{tenant=\"acme\"}})"
        );
        let body: Option<Value> = client.get(&url).send().ok().and_then(|r| r.json().ok());
        let value = body.as_ref().and_then(|b| {
            b["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        });
        if let Some(v) = value {
            assert_eq!(
                v.parse::<f64>().unwrap() as u64,
                total,
                "Prometheus' sum of sotp_flow_bytes_total"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the flow aggregates: {body:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A sotp with one listener of `kind` on loopback and this extra `[runtime.flows]` config.
fn start_listener(config_dir: &Path, kind: &str, flows: &str) -> (Server, u16) {
    let port = free_port();
    let config = config_dir.join("sotp.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime.flows]\n{kind} = [\"127.0.0.1:{port}\"]\nflush_interval = \"200ms\"\n{flows}"
        ),
    )
    .unwrap();
    (
        Server::start_with(SOTP, &["--config", config.to_str().unwrap()]),
        port,
    )
}

#[test]
fn a_spoofed_sflow_agent_lands_nowhere() {
    let config_dir = tempfile::tempdir().unwrap();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    // The victim owns agent 10.0.0.1; datagrams from anywhere else are the spoofer's.
    let (server, port) = start_listener(
        config_dir.path(),
        "sflow",
        "default_tenant = \"spoofer\"\n[runtime.flows.exporters]\n\"10.0.0.1\" = \"victim\"\n",
    );
    let victim = server.tenant("victim");
    let spoofer = server.tenant("spoofer");
    // The capture's datagrams name agent 10.0.0.1, but come from loopback.
    let frames = pcap::read_udp(&pcaps.path().join("sflow.pcap")).unwrap();
    send(&frames.iter().collect::<Vec<_>>(), port);
    server.wait_flows_stored(20);
    let status = server.flow_status();
    assert!(
        status["sflow_agent_mismatch"].as_u64().unwrap() >= 20,
        "{status}"
    );
    let (_, top) = victim.get("/v1/flows/top?start=0&end=now&by=exporter");
    assert_eq!(top["rows"], serde_json::json!([]), "{top}");
    let (_, top) = spoofer.get("/v1/flows/top?start=0&end=now&by=exporter");
    let rows = top["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{top}");
    assert_eq!(rows[0]["group"]["exporter"], "127.0.0.1", "{top}");
    // Each tenant's status shows its own exporters only.
    let (_, mine) = spoofer.get("/v1/flows/status");
    assert_eq!(mine["exporters"][0]["exporter"], "127.0.0.1", "{mine}");
    assert!(mine.get("templates").is_none(), "{mine}");
    let (_, theirs) = victim.get("/v1/flows/status");
    assert_eq!(theirs["exporters"], serde_json::json!([]), "{theirs}");

    // Without a default tenant, a source no tenant owns is not even decoded.
    let other_dir = tempfile::tempdir().unwrap();
    let (strict, port) = start_listener(
        other_dir.path(),
        "sflow",
        "[runtime.flows.exporters]\n\"10.0.0.1\" = \"victim\"\n",
    );
    let victim = strict.tenant("victim");
    send(&frames.iter().collect::<Vec<_>>(), port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = strict.flow_status();
        if s["unmapped_datagrams"].as_u64() == Some(frames.len() as u64) {
            break s;
        }
        assert!(Instant::now() < deadline, "datagrams not dropped: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["records"]["sflow"], 0, "{status}");
    assert_eq!(status["stored_rows"], 0, "{status}");
    let (_, top) = victim.get("/v1/flows/top?start=0&end=now&by=exporter");
    assert_eq!(top["rows"], serde_json::json!([]), "{top}");
}

/// An IPFIX datagram of observation domain `domain` announcing template 256 (eight fields).
fn ipfix_template(domain: u32) -> Vec<u8> {
    let fields: [(u16, u16); 8] = [
        (8, 4),
        (12, 4),
        (1, 8),
        (2, 8),
        (7, 2),
        (11, 2),
        (4, 1),
        (153, 8),
    ];
    let mut set = vec![0, 2];
    set.extend_from_slice(&((4 + 4 + fields.len() * 4) as u16).to_be_bytes());
    set.extend_from_slice(&256u16.to_be_bytes());
    set.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (ie, len) in fields {
        set.extend_from_slice(&ie.to_be_bytes());
        set.extend_from_slice(&len.to_be_bytes());
    }
    let mut m = vec![0, 10];
    m.extend_from_slice(&((16 + set.len()) as u16).to_be_bytes());
    m.extend_from_slice(&[0x65, 0, 0, 0, 0, 0, 0, 0]); // export time, sequence
    m.extend_from_slice(&domain.to_be_bytes());
    m.extend_from_slice(&set);
    m
}

#[test]
fn a_hundred_thousand_fake_exporters_cost_bounded_memory_and_stall_no_one() {
    let config_dir = tempfile::tempdir().unwrap();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let (server, port) = start_listener(config_dir.path(), "ipfix", "default_tenant = \"acme\"\n");
    server.tenant("acme");
    // The real exporter (loopback): templates and data.
    let frames = pcap::read_udp(&pcaps.path().join("ipfix.pcap")).unwrap();
    let all: Vec<&pcap::Datagram> = frames.iter().collect();
    send(&all, port);
    server.wait_flows_stored(40);
    let rss_before = server.rss_bytes();

    // 100,000 exporters (127.1.0.0 and up: loopback's /8), each with a template; and one
    // exporter cycling through observation domains.
    let template = ipfix_template(1);
    for i in 0..100_000u32 {
        let source = std::net::Ipv4Addr::from(0x7f01_0000 + i);
        let Ok(socket) = UdpSocket::bind((source, 0)) else {
            continue;
        };
        let _ = socket.send_to(&template, ("127.0.0.1", port));
        if i % 2000 == 0 {
            // The real exporter goes on meanwhile.
            send(&all, port);
        }
    }
    let churner = UdpSocket::bind("127.0.0.2:0").unwrap();
    for domain in 0..5000 {
        let _ = churner.send_to(&ipfix_template(domain), ("127.0.0.1", port));
    }
    // The flood is taken in soon (what the socket buffer could not hold the kernel dropped),
    // and the real exporter is decoded at once after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    loop {
        let seen = server.flow_status()["datagrams"]["ipfix"].as_u64().unwrap();
        if seen == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood is still being decoded"
        );
        last = seen;
        std::thread::sleep(Duration::from_millis(500));
    }
    let stored = server.flow_status()["stored_rows"].as_u64().unwrap();
    send(&all, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.flow_status()["stored_rows"].as_u64().unwrap() < stored + 40 {
        assert!(
            Instant::now() < deadline,
            "the real exporter's flows stalled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = server.flow_status();
    assert!(
        status["template_exporters"].as_u64().unwrap() <= 10_000,
        "{status}"
    );
    assert!(
        status["templates_refused"].as_u64().unwrap() > 10_000,
        "{status}"
    );
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 150 << 20,
        "template state grew sotp by {} MiB",
        growth >> 20
    );
    // What was learned is saved (by its own thread) and loads again.
    let file = server.data_path().join("flow-templates.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "flow-templates.json not written");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn damaged_template_and_name_files_do_not_stop_a_start() {
    let config_dir = tempfile::tempdir().unwrap();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let (mut server, port) =
        start_listener(config_dir.path(), "ipfix", "default_tenant = \"acme\"\n");
    let acme = server.tenant("acme");
    let frames = pcap::read_udp(&pcaps.path().join("ipfix.pcap")).unwrap();
    send(&frames.iter().collect::<Vec<_>>(), port);
    server.wait_flows_stored(40);
    server.stop();
    let data = server.data_path().to_path_buf();
    std::fs::write(data.join("flow-templates.json"), b"[{\"protocol\": ").unwrap();
    std::fs::write(data.join("flows-raw/names.json"), b"\0\0\0").unwrap();
    server.restart();
    let status = server.flow_status();
    assert_eq!(status["template_state_damaged"], 1, "{status}");
    assert_eq!(status["templates"], 0, "{status}");
    // The names came back from their copy: acme's flows are still acme's.
    let acme = server.api(&acme.token);
    let (_, top) = acme.get("/v1/flows/top?start=0&end=now&by=src_addr&limit=100");
    assert!(!top["rows"].as_array().unwrap().is_empty(), "{top}");
    for name in ["flow-templates.json", "flows-raw/names.json"] {
        let (dir, file) = match name.rsplit_once('/') {
            Some((d, f)) => (data.join(d), f),
            None => (data.clone(), name),
        };
        let kept = std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{file}.damaged-"))
        });
        assert!(kept, "{name} was set aside");
    }
}
