//! Prometheus scraping end to end: Debian's node_exporter started inside lab hosts (network
//! namespaces), found by the shipped `prometheus-scrape` component in the inventory, in a
//! file_sd document and by scanning the lab's management range (`cidr_sd`), scraped, its CPU and memory series queryable; an exporter that stops is
//! `up = 0` within one interval; a host added to the file is scraped without a restart; and a
//! real Prometheus (Debian) scraping the same exporter finds the same series and values.
//! Needs root (the lab). Without the lab: bad targets fail alone, and windows_exporter's
//! families (tests/data/windows_exporter) appear under node_exporter's names.

use serde_json::{Value, json};
use sotp_tests::guests::PROMETHEUS_SCRAPE;
use sotp_tests::harness::{Api, Server, basic_lab, manifest, start_node_exporter};
use sotp_tests::prometheus::{Job, Prometheus, Target};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

/// The newest `up` of `instance` in the `node` job (inventory and file_sd).
fn up(api: &Api, instance: &str) -> Option<(i64, f64)> {
    api.points("up", "10m")
        .into_iter()
        .filter(|(l, _, _)| l["instance"] == instance && l["job"] == "node")
        .map(|(_, t, v)| (t, v))
        .max_by_key(|(t, _)| *t)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn node_exporters_in_lab_hosts_are_discovered_scraped_and_agree_with_prometheus() {
    let lab = basic_lab(27);
    let (first, first_pid) = start_node_exporter(&lab, "access1");
    let (second, _) = start_node_exporter(&lab, "access2");
    let first_ip = first.trim_end_matches(":9100").to_string();
    let second_ip = second.trim_end_matches(":9100").to_string();

    let server = Server::start(BIN);
    let acme = server.tenant("acme");
    let (status, body) = acme.put(
        "/v1/devices/access1",
        json!({ "name": "access1", "address": first_ip, "tags": ["node-exporter"], "site": "lab" }),
    );
    assert_eq!(status, 201, "{body}");
    // The file_sd directory starts empty: the second host comes later.
    let file_sd = server.data_dir.path().join("file_sd/acme");
    std::fs::create_dir_all(&file_sd).unwrap();
    std::fs::write(file_sd.join("nodes.json"), "[]").unwrap();
    acme.push(
        &manifest(
            "node-scrape",
            "1",
            "3s",
            &format!(
                "[limits]\nmemory = \"64MiB\"\ncpu_ms = 2000\nwall_ms = 14000\n\
                 [grants]\ndevices = [\"tag:node-exporter\"]\n\
                 http = [\"http://{first_ip}:9100\", \"http://{second_ip}:9100\"]\nfile_sd = true\n\
                 [config]\njob = \"node\"\nfile_sd = [\"*.json\"]\nscrape_timeout_ms = 2000\n\
                 [config.inventory]\ntag = \"node-exporter\"\nport = 9100\n\
                 [[config.relabel_configs]]\nsource_labels = [\"__meta_sotp_device\"]\ntarget_label = \"device\"\n"
            ),
        ),
        PROMETHEUS_SCRAPE,
    );

    // The same exporters found by scanning the lab's management range for port 9100.
    let range = scan_range(&first_ip, &second_ip);
    acme.push(
        &manifest(
            "cidr-scrape",
            "1",
            "3s",
            &format!(
                "[limits]\nmemory = \"64MiB\"\ncpu_ms = 2000\nwall_ms = 14000\n\
                 [grants]\nhttp = [\"http://{range}:9100\"]\n\
                 [config]\njob = \"cidr\"\nscrape_timeout_ms = 2000\n\
                 [config.cidr_sd]\ncidrs = [\"{range}\"]\nport = 9100\nprobe_timeout_ms = 300\n"
            ),
        ),
        PROMETHEUS_SCRAPE,
    );

    // Found in the inventory, scraped: CPU and memory series with the target's labels.
    acme.wait_for("the first scrape", Duration::from_secs(30), |api| {
        let (_, v) = up(api, &first)?;
        (v == 1.0).then_some(())
    });
    let cpu = acme.points("node_cpu_seconds_total", "10m");
    let mine: Vec<&(Value, i64, f64)> = cpu
        .iter()
        .filter(|(l, _, _)| l["instance"] == first)
        .collect();
    assert!(!mine.is_empty(), "{cpu:?}");
    assert_eq!(mine[0].0["job"], "node");
    assert_eq!(
        mine[0].0["device"], "access1",
        "relabeled from __meta_sotp_device"
    );
    assert!(mine.iter().any(|(l, _, _)| l["mode"] == "idle"));
    let mem = acme.points("node_memory_MemTotal_bytes", "10m");
    assert!(
        mem.iter()
            .any(|(l, _, v)| l["instance"] == first && *v > 1e8),
        "{mem:?}"
    );

    // A host added to the file is scraped, no restart.
    std::fs::write(
        file_sd.join("nodes.json"),
        format!("[{{\"targets\": [\"{second}\"], \"labels\": {{\"env\": \"lab\"}}}}]"),
    )
    .unwrap();
    acme.wait_for("the file_sd host", Duration::from_secs(30), |api| {
        let (_, v) = up(api, &second)?;
        (v == 1.0).then_some(())
    });
    let load = acme.points("node_load1", "10m");
    assert!(
        load.iter()
            .any(|(l, _, _)| l["instance"] == second && l["env"] == "lab"),
        "{load:?}"
    );

    // The scan found both exporters, and nothing else in the range.
    let scanned = acme.wait_for("both exporters scanned", Duration::from_secs(60), |api| {
        let found = scanned_instances(api);
        (found.len() >= 2).then_some(found)
    });
    assert_eq!(
        scanned,
        [first.clone(), second.clone()].into_iter().collect(),
        "only the hosts with an exporter"
    );

    // An exporter that stops: up = 0 within one interval (3 s), its reason logged.
    lab.exec("access1", &format!("kill {first_pid}")).unwrap();
    let stopped = now_ms();
    acme.wait_for("up = 0", Duration::from_secs(10), |api| {
        let (t, v) = up(api, &first)?;
        (t > stopped && v == 0.0).then_some(())
    });
    let (_, logs) = acme.get("/v1/logs?component=node-scrape&limit=100");
    assert!(
        logs.to_string()
            .contains(&format!("scrape of http://{first}/metrics failed")),
        "{logs}"
    );
    assert_eq!(
        up(&acme, &second).unwrap().1,
        1.0,
        "the other target is unaffected"
    );
    // The scan drops the stopped exporter when it probes its address again: no more
    // scrapes of it in the `cidr` job, while the other goes on.
    let newest = |instance: &str| {
        acme.points("up", "1m")
            .into_iter()
            .filter(|(l, _, _)| l["job"] == "cidr" && l["instance"] == instance)
            .map(|(_, t, v)| (t, v))
            .max_by_key(|(t, _)| *t)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (first_up, second_up) = (newest(&first), newest(&second));
        // Two intervals (6 s) of the other target scraped since the stopped one last was.
        let last_first = first_up.map_or(stopped, |(t, _)| t);
        let second_after = second_up.is_some_and(|(t, _)| t > last_first.max(stopped) + 6_000);
        let first_gone = last_first < stopped + 6_000;
        if second_after && first_gone {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scan still scrapes the stopped exporter: {first_up:?} / {second_up:?} (stopped at {stopped})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each target's state, through the API and the CLI.
    let (_, state) = acme.get("/v1/scrape/targets");
    let targets = state["targets"].as_array().unwrap();
    let down = targets
        .iter()
        .find(|t| t["instance"] == first.as_str() && t["job"] == "node")
        .unwrap();
    assert_eq!(down["up"], false, "{state}");
    assert!(
        down["last_error"].as_str().unwrap().contains("connect"),
        "{state}"
    );
    let fine = targets
        .iter()
        .find(|t| t["instance"] == second.as_str() && t["job"] == "node")
        .unwrap();
    assert_eq!(fine["up"].as_bool(), Some(true), "{state}");
    assert!(
        targets
            .iter()
            .any(|t| t["instance"] == second.as_str() && t["job"] == "cidr"),
        "the scanned target is listed too: {state}"
    );
    assert!(fine["samples"].as_f64().unwrap() > 10.0, "{state}");
    let cli = std::process::Command::new(BIN)
        .args([
            "scrape",
            "targets",
            "--server",
            &server.base,
            "--token",
            &acme.token,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("DOWN") && text.contains(&second), "{text}");

    // A real Prometheus on the same exporter: the same series, the same values.
    let prom = Prometheus::builder()
        .job(Job::new("node", vec![Target::new(&second)]))
        .interval("3s")
        .start();
    prom.wait_targets_up("node", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    let theirs = prom
        .query(&format!(
            "node_memory_MemTotal_bytes{{instance=\"{second}\"}}"
        ))
        .unwrap();
    let theirs: f64 = theirs[0]["value"][1].as_str().unwrap().parse().unwrap();
    let ours = acme
        .points("node_memory_MemTotal_bytes", "10m")
        .into_iter()
        .filter(|(l, _, _)| l["instance"] == second)
        .max_by_key(|(_, t, _)| *t)
        .map(|(_, _, v)| v)
        .unwrap();
    assert_eq!(ours, theirs);
    let their_series: std::collections::BTreeSet<String> = prom
        .query(&format!(
            "{{instance=\"{second}\", __name__=~\"node_(cpu|memory|load).*\"}}"
        ))
        .unwrap()
        .iter()
        .map(|s| series_key(&s["metric"]))
        .collect();
    let our_series: std::collections::BTreeSet<String> = [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_load1",
    ]
    .iter()
    .flat_map(|m| {
        acme.points(m, "1m").into_iter().map(move |(mut l, _, _)| {
            l["__name__"] = json!(m);
            l
        })
    })
    .filter(|l| l["instance"] == second)
    .map(|l| series_key(&l))
    .collect();
    assert!(
        our_series.len() >= 3 && their_series.len() >= our_series.len(),
        "{our_series:?}"
    );
    for s in &our_series {
        assert!(
            their_series.contains(s),
            "{s} is not in Prometheus: {their_series:?}"
        );
    }
    // A counter's values at close timestamps agree within what it moves in between.
    // Raw samples with their own timestamps: a range selector.
    let their_idle = prom
        .query(&format!(
            "node_cpu_seconds_total{{instance=\"{second}\",cpu=\"0\",mode=\"idle\"}}[30s]"
        ))
        .unwrap();
    let last = their_idle[0]["values"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let (their_t, their_v): (f64, f64) = (
        last[0].as_f64().unwrap(),
        last[1].as_str().unwrap().parse().unwrap(),
    );
    let ours = acme
        .points("node_cpu_seconds_total", "1m")
        .into_iter()
        .filter(|(l, _, _)| l["instance"] == second && l["cpu"] == "0" && l["mode"] == "idle")
        .min_by_key(|(_, t, _)| (t - (their_t * 1000.0) as i64).abs())
        .unwrap();
    let dt = (ours.1 as f64 / 1000.0 - their_t).abs();
    assert!(
        (ours.2 - their_v).abs() <= dt + 0.05,
        "idle seconds {} vs Prometheus {their_v} ({dt:.1} s apart)",
        ours.2
    );
    lab.down().unwrap();
}

/// A series' identity without the labels that differ by scraper (`job`, and what SOTP adds).
/// The smallest range (at least a /28) holding both lab addresses.
fn scan_range(a: &str, b: &str) -> String {
    let a: std::net::Ipv4Addr = a.parse().unwrap();
    let b: std::net::Ipv4Addr = b.parse().unwrap();
    let (a, b) = (u32::from(a), u32::from(b));
    let mut prefix = 28;
    while prefix > 20 && (a >> (32 - prefix)) != (b >> (32 - prefix)) {
        prefix -= 1;
    }
    let base = std::net::Ipv4Addr::from(a & (u32::MAX << (32 - prefix)));
    format!("{base}/{prefix}")
}

/// Instances the `cidr` job scraped successfully in the last 10 s.
fn scanned_instances(api: &Api) -> std::collections::BTreeSet<String> {
    let since = now_ms() - 10_000;
    api.points("up", "1m")
        .into_iter()
        .filter(|(l, t, v)| l["job"] == "cidr" && *t > since && *v == 1.0)
        .map(|(l, _, _)| l["instance"].as_str().unwrap_or("").to_string())
        .collect()
}

fn series_key(labels: &Value) -> String {
    let mut pairs: Vec<String> = labels
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !["job", "env", "device", "component"].contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

#[test]
fn bad_expositions_huge_scrapes_and_hanging_targets_fail_alone() {
    let app = sotp_tests::webapp::WebApp::start();
    let server = Server::start_with_config(BIN, sotp_tests::harness::LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    let targets: Vec<String> = ["/metrics/good", "/metrics/bad", "/metrics/huge", "/hang"]
        .iter()
        .map(|p| app.url(p))
        .collect();
    acme.push(
        &manifest(
            "scrape",
            "1",
            "2s",
            &format!(
                "[limits]\ncpu_ms = 2000\nwall_ms = 10000\n[grants]\nhttp = [\"http://127.0.0.1:{}\"]\n\
                 [config]\njob = \"app\"\nscrape_timeout_ms = 1500\nmax_bytes = 1048576\ntargets = {:?}\n",
                app.port, targets
            ),
        ),
        PROMETHEUS_SCRAPE,
    );
    let instance = format!("127.0.0.1:{}", app.port);
    // `instance` is the same for all four (one host): tell them apart by the log.
    acme.wait_for("a round of scrapes", Duration::from_secs(30), |api| {
        let (_, logs) = api.get("/v1/logs?component=scrape&limit=100");
        let text = logs.to_string();
        (text.contains("(parse)") && text.contains("(size)") && text.contains("timeout"))
            .then_some(())
    });
    let (_, logs) = acme.get("/v1/logs?component=scrape&limit=100");
    let text = logs.to_string();
    assert!(
        text.contains("line 2"),
        "the parse error names the line: {text}"
    );
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
    // The good target's samples are stored, whatever the others did.
    let good = acme.points("app_requests_total", "10m");
    assert!(
        good.iter()
            .any(|(l, _, v)| l["instance"] == instance && *v == 42.0),
        "{good:?}"
    );
    let ups: Vec<f64> = acme
        .points("up", "10m")
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    assert!(ups.contains(&1.0) && ups.contains(&0.0), "{ups:?}");
    // Another tenant sees none of acme's targets.
    let (status, theirs) = server.tenant("globex").get("/v1/scrape/targets");
    assert_eq!(
        (status, theirs["targets"].clone()),
        (200, json!([])),
        "{theirs}"
    );

    // A relabel rule with a bad regex: refused at upload, the reason named.
    let (status, body) = acme.upload(
        &manifest(
            "bad-relabel",
            "1",
            "10s",
            "[config]\n[[config.relabel_configs]]\nsource_labels = [\"a\"]\nregex = \"(unclosed\"\ntarget_label = \"b\"\n",
        ),
        &std::fs::read(PROMETHEUS_SCRAPE).unwrap(),
        true,
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("relabel_configs[0]"), "{body}");
}

/// The newest value of `metric` whose labels include all of `want`.
fn newest_with(api: &Api, metric: &str, want: &[(&str, &str)]) -> Option<f64> {
    api.points(metric, "10m")
        .into_iter()
        .filter(|(l, _, _)| want.iter().all(|(k, v)| l[*k] == *v))
        .max_by_key(|(_, t, _)| *t)
        .map(|(_, _, v)| v)
}

#[test]
fn windows_exporter_families_appear_under_node_exporter_names() {
    let app = sotp_tests::webapp::WebApp::start();
    let server = Server::start_with_config(BIN, sotp_tests::harness::LOOPBACK_EGRESS, &[]);
    let acme = server.tenant("acme");
    let push = |name: &str, extra: &str| {
        acme.push(
            &manifest(
                name,
                "1",
                "2s",
                &format!(
                    "[grants]\nhttp = [\"http://127.0.0.1:{}\"]\n[config]\njob = \"{name}\"\ntargets = [\"{}\"]\n{extra}",
                    app.port,
                    app.url("/metrics/windows")
                ),
            ),
            PROMETHEUS_SCRAPE,
        )
    };
    push("windows", "");
    push("windows-raw", "windows_node_names = false\n");
    let job = [("job", "windows")];
    acme.wait_for("the node names", Duration::from_secs(30), |api| {
        newest_with(api, "node_cpu_seconds_total", &job)
    });
    let cpu = |cpu: &str, mode: &str| {
        newest_with(
            &acme,
            "node_cpu_seconds_total",
            &[("job", "windows"), ("cpu", cpu), ("mode", mode)],
        )
    };
    // privileged → system, interrupt → irq, dpc → softirq; core "0,1" → cpu "1".
    assert_eq!(cpu("1", "system"), Some(1512.375));
    assert_eq!(cpu("0", "idle"), Some(19035.96875));
    assert_eq!(cpu("0", "irq"), Some(18.53125));
    assert_eq!(cpu("1", "softirq"), Some(101.5));
    assert_eq!(
        newest_with(&acme, "node_memory_MemTotal_bytes", &job),
        Some(8.589463552e9)
    );
    assert_eq!(
        newest_with(&acme, "node_memory_MemAvailable_bytes", &job),
        Some(4.23706624e9)
    );
    assert_eq!(
        newest_with(
            &acme,
            "node_filesystem_avail_bytes",
            &[("job", "windows"), ("mountpoint", "C:")]
        ),
        Some(4.294967296e10)
    );
    assert_eq!(
        newest_with(
            &acme,
            "node_network_receive_bytes_total",
            &[
                ("job", "windows"),
                ("device", "Microsoft_Hyper_V_Network_Adapter")
            ]
        ),
        Some(1.05848279e8)
    );
    assert_eq!(
        newest_with(
            &acme,
            "node_disk_written_bytes_total",
            &[("job", "windows"), ("device", "D:")]
        ),
        Some(5.24288e8)
    );
    let unit = |name: &str, state: &str| {
        newest_with(
            &acme,
            "node_systemd_unit_state",
            &[("job", "windows"), ("name", name), ("state", state)],
        )
    };
    assert_eq!(unit("dhcp", "active"), Some(1.0));
    assert_eq!(unit("wuauserv", "inactive"), Some(1.0));
    assert_eq!(unit("wuauserv", "active"), Some(0.0));
    assert_eq!(unit("w3svc", "activating"), Some(1.0));
    assert_eq!(
        newest_with(&acme, "node_boot_time_seconds", &job),
        Some(1.796112e9)
    );
    // The windows_* series stay as scraped; with the mapping off there are only those.
    assert_eq!(
        newest_with(
            &acme,
            "windows_cpu_time_total",
            &[("job", "windows"), ("core", "0,1"), ("mode", "privileged")]
        ),
        Some(1512.375)
    );
    acme.wait_for("the raw job", Duration::from_secs(30), |api| {
        newest_with(api, "windows_cpu_time_total", &[("job", "windows-raw")])
    });
    assert_eq!(
        newest_with(&acme, "node_cpu_seconds_total", &[("job", "windows-raw")]),
        None
    );
}
