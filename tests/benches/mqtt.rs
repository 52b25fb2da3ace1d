//! MQTT pipeline benchmark: messages per second and CPU per message from a real Mosquitto
//! into the store, three ways, on the same pre-queued messages:
//!
//! 1. `mosquitto_sub -q 1 > /dev/null`: the broker's own ceiling on this machine;
//! 2. SOTP: the tenant session, routing, the `mqtt-sensors` guest (WebAssembly), DuckDB
//!    commits, PUBACK after commit;
//! 3. SOTP again, with the same collector source file compiled natively (against
//!    `sotp-guest-native`) and run as a native component: the same pipeline, only the
//!    WebAssembly boundary removed — the guest/native ratio compares 2 and 3;
//! 4. for reference, a bare pipeline around that native code: rumqttc with manual acks,
//!    batches of up to 512, one DuckDB commit per batch, PUBACK after commit — no routing,
//!    no ordered acknowledgement queue, no ledger.
//!
//! Each run drains N messages queued for a persistent session (the publisher is out of the
//! measurement). Medians of 3 runs; CPU is this process's (or mosquitto_sub's) user + system
//! time, and the broker's own CPU is shown beside it.
//!
//! `cargo bench -p sotp-tests --bench mqtt` (N from SOTP_BENCH_MESSAGES, default 20000).

#[path = "../../guests/mqtt-sensors/src/lib.rs"]
mod sensors;

use sotp_runtime::mqtt::MqttSettings;
use sotp_runtime::native::{NativeCollector, NativeHost};
use sotp_runtime::telemetry::{
    Batch, Samples, TelemetryStore, normalize_labels, validate_metric_name,
};
use sotp_tests::guests::MQTT_SENSORS;
use sotp_tests::mosquitto::Mosquitto;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC_FILTER: &str = "home/+/+";
const ROUNDS: usize = 3;

struct Run {
    wall: Duration,
    cpu: Duration,
    broker_cpu: Duration,
}

fn cpu_of(who: i32) -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

fn payloads(n: usize) -> String {
    let rooms = ["kitchen", "hall", "bedroom", "office"];
    let mut out = String::with_capacity(n * 64);
    for i in 0..n {
        out.push_str(&format!(
            "{{\"value\": {}.{}, \"device\": \"dev-{}\", \"ts\": {}}}\n",
            15 + i % 20,
            i % 10,
            rooms[i % 4],
            1_700_000_000_000i64 + i as i64
        ));
    }
    out
}

/// Queue `n` messages for every persistent session subscribed to home/+/+.
fn queue(broker: &Mosquitto, n: usize) {
    sotp_tests::mosquitto::publish_lines_to(broker.port, "home/kitchen/temperature", &payloads(n));
}

/// Remove a persistent session (connect once with a clean session), so later queued messages
/// no longer pile up for it.
fn drop_session(broker: &Mosquitto, id: &str) {
    let _ = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-i", id])
        .args(["-t", "nothing/here", "-W", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Register a persistent session with a QoS 1 subscription (then leave it).
fn register_sub_session(broker: &Mosquitto, id: &str) {
    let _ = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-c",
            "-i",
            id,
            "-q",
            "1",
        ])
        .args(["-t", TOPIC_FILTER, "-W", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn ceiling(broker: &Mosquitto, n: usize, round: usize) -> Run {
    let id = format!("ceiling-{round}");
    register_sub_session(broker, &id);
    queue(broker, n);
    let (cpu0, b0, start) = (
        cpu_of(libc::RUSAGE_CHILDREN),
        process_cpu(broker.pid()),
        Instant::now(),
    );
    let status = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-c",
            "-i",
            &id,
            "-q",
            "1",
        ])
        .args(["-t", TOPIC_FILTER, "-C", &n.to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let run = Run {
        wall: start.elapsed(),
        cpu: cpu_of(libc::RUSAGE_CHILDREN) - cpu0,
        broker_cpu: process_cpu(broker.pid()) - b0,
    };
    drop_session(broker, &id);
    run
}

/// The collector's own source file, compiled natively, as a SOTP native component.
struct NativeSensors {
    inner: Option<Box<dyn sotp_guest::NativeCollector + Send>>,
}

impl NativeCollector for NativeSensors {
    fn init(&mut self, config_json: &str, host: &mut NativeHost<'_>) -> Result<(), String> {
        let config = sotp_guest::Config::parse(config_json)?;
        self.inner = Some(sensors::native_init(&config)?);
        for filter in sotp_guest::take_subscriptions() {
            host.subscribe(&filter)?;
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        host: &mut NativeHost<'_>,
    ) -> Result<(), String> {
        let result = self
            .inner
            .as_mut()
            .expect("init ran")
            .on_message(topic, payload);
        for s in sotp_guest::take_emitted() {
            let labels = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            host.emit_sample(&s.metric, labels, s.value, s.timestamp_ms)?;
        }
        result
    }
}

async fn sotp_pipeline(broker: &Mosquitto, n: usize, rounds: usize, native: bool) -> Vec<Run> {
    // Separate broker sessions (client ids are `sotp-<tenant>`) for the two runs.
    let tenant = if native { "bench-native" } else { "bench" };
    let client_id = sotp_runtime::mqtt::client_id(tenant);
    let dir = tempfile::tempdir().unwrap();
    let runtime = sotp_runtime::Runtime::open(sotp_runtime::RuntimeConfig {
        data_dir: dir.path().to_path_buf(),
        egress: sotp_runtime::egress::EgressConfig {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    runtime.restore().await;
    runtime
        .create_tenant(tenant, sotp_runtime::TenantSpec::default())
        .unwrap();
    let settings = MqttSettings {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: None,
        username: None,
        password_secret: None,
        tls: false,
        tls_ca_pem: None,
        keep_alive_s: 30,
    };
    runtime.set_mqtt(tenant, Some(settings.clone())).unwrap();
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guests/mqtt-sensors/sotp.toml"
    ))
    .unwrap();
    if native {
        let collector = Box::new(NativeSensors { inner: None });
        runtime
            .activate_native(tenant, &manifest, collector)
            .await
            .unwrap();
    } else {
        let wasm = std::fs::read(MQTT_SENSORS).unwrap();
        runtime
            .upload(tenant, &manifest, &wasm, true, sotp_runtime::Scopes::all())
            .await
            .unwrap();
    }
    wait(
        || runtime.mqtt_status(tenant).unwrap().connected,
        "SOTP to connect",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // SUBACK
    let mut runs = Vec::new();
    for _ in 0..rounds {
        runtime.set_mqtt(tenant, None).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        queue(broker, n);
        let (cpu0, b0, start) = (
            cpu_of(libc::RUSAGE_SELF),
            process_cpu(broker.pid()),
            Instant::now(),
        );
        runtime.set_mqtt(tenant, Some(settings.clone())).unwrap();
        let mut last_report = Instant::now();
        wait(
            || {
                let s = runtime.mqtt.status(tenant);
                if std::env::var_os("SOTP_BENCH_DEBUG").is_some()
                    && last_report.elapsed() > Duration::from_secs(2)
                {
                    last_report = Instant::now();
                    let c = runtime
                        .component(tenant, "mqtt-sensors", 0)
                        .unwrap()
                        .counters;
                    eprintln!("status: {s:?}\ncounters: {c:?}");
                }
                s.acknowledged >= n as u64
            },
            "SOTP to acknowledge every message",
        )
        .await;
        runs.push(Run {
            wall: start.elapsed(),
            cpu: cpu_of(libc::RUSAGE_SELF) - cpu0,
            broker_cpu: process_cpu(broker.pid()) - b0,
        });
    }
    runtime.shutdown();
    drop_session(broker, &client_id);
    runs
}

async fn wait(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The collector's own code, natively, in the same pipeline shape as SOTP's.
async fn native_pipeline(broker: &Mosquitto, n: usize, round: usize) -> Run {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap());
    let manifest: toml::Table = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guests/mqtt-sensors/sotp.toml"
    ))
    .unwrap()
    .parse()
    .unwrap();
    let config = serde_json::to_value(&manifest["config"]).unwrap();
    let mut collector = sensors::native_init(&sotp_guest::Config(config)).unwrap();
    let filters = sotp_guest::take_subscriptions();

    assert_eq!(filters, vec![TOPIC_FILTER.to_string()]);
    let id = format!("native-{round}");
    register_sub_session(broker, &id);
    let mut options = MqttOptions::new(id.clone(), "127.0.0.1", broker.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(1000);
    options.set_keep_alive(Duration::from_secs(30));
    queue(broker, n);

    let (cpu0, b0, start) = (
        cpu_of(libc::RUSAGE_SELF),
        process_cpu(broker.pid()),
        Instant::now(),
    );
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    // Unbounded, as in SOTP's hub: the task polling the connection must not wait on the
    // worker, which waits on that task to send its PUBACKs.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<rumqttc::Publish>();
    let poller = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let mut acked = 0usize;
    while acked < n {
        let first = rx.recv().await.expect("broker connection");
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut samples = Samples::default();
        let hasher = store.hasher();
        for p in &batch {
            let _ = collector.on_message(&p.topic, &p.payload);
            for s in sotp_guest::take_emitted() {
                let labels: Vec<(String, String)> =
                    s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                validate_metric_name(&s.metric).unwrap();
                let labels = normalize_labels("mqtt-sensors", labels).unwrap();
                let key = hasher.key("bench", s.metric, labels);
                let ts = s.timestamp_ms.unwrap_or_else(sotp_runtime::now_ms);
                samples.push(key, ts, s.value);
            }
        }
        store
            .commit(Batch {
                tenant: "bench".into(),
                component: "mqtt-sensors".into(),
                samples,
                max_series: u64::MAX,
                ..Default::default()
            })
            .await
            .unwrap();
        for p in &batch {
            client.ack(p).await.unwrap();
        }
        acked += batch.len();
    }
    let run = Run {
        wall: start.elapsed(),
        cpu: cpu_of(libc::RUSAGE_SELF) - cpu0,
        broker_cpu: process_cpu(broker.pid()) - b0,
    };
    // Let the last PUBACKs out before leaving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = client.disconnect().await;
    poller.abort();
    drop_session(broker, &id);
    run
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.wall);
    runs.swap_remove(runs.len() / 2)
}

fn row(name: &str, run: &Run, n: usize) {
    println!(
        "{:<46} {:>10.0} {:>12.2} {:>14.2}",
        name,
        n as f64 / run.wall.as_secs_f64(),
        run.cpu.as_secs_f64() * 1e6 / n as f64,
        run.broker_cpu.as_secs_f64() * 1e6 / n as f64,
    );
}

fn main() {
    let n: usize = std::env::var("SOTP_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let broker = Mosquitto::start_in_memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "MQTT pipeline benchmark: {n} QoS 1 messages queued at a local Mosquitto, drained {ROUNDS}x each\n"
    );

    if std::env::var("SOTP_BENCH_ONLY").as_deref() == Ok("sotp") {
        // For profiling the SOTP pipeline alone.
        let sotp = median(rt.block_on(sotp_pipeline(&broker, n, ROUNDS, false)));
        row("SOTP, mqtt-sensors as a guest", &sotp, n);
        return;
    }
    let ceiling = median((0..ROUNDS).map(|r| ceiling(&broker, n, r)).collect());
    let guest = median(rt.block_on(sotp_pipeline(&broker, n, ROUNDS, false)));
    let in_sotp = median(rt.block_on(sotp_pipeline(&broker, n, ROUNDS, true)));
    let bare = median(
        (0..ROUNDS)
            .map(|r| rt.block_on(native_pipeline(&broker, n, r)))
            .collect(),
    );

    println!(
        "{:<46} {:>10} {:>12} {:>14}",
        "pipeline (median of 3)", "msg/s", "CPU µs/msg", "broker µs/msg"
    );
    println!("{}", "-".repeat(85));
    row("mosquitto_sub -q 1 > /dev/null (ceiling)", &ceiling, n);
    row("SOTP, mqtt-sensors as a guest", &guest, n);
    row("SOTP, mqtt-sensors compiled natively", &in_sotp, n);
    row("bare rumqttc + same code + store (reference)", &bare, n);
    println!(
        "\nguest / native in the same SOTP pipeline: {:.2}x the wall time, {:.2}x the CPU per message",
        guest.wall.as_secs_f64() / in_sotp.wall.as_secs_f64(),
        guest.cpu.as_secs_f64() / in_sotp.cpu.as_secs_f64(),
    );
    println!(
        "SOTP (guest) reaches {:.0}% of the broker's ceiling; the bare reference pipeline is {:.2}x faster",
        100.0 * ceiling.wall.as_secs_f64() / guest.wall.as_secs_f64(),
        guest.wall.as_secs_f64() / bare.wall.as_secs_f64(),
    );
}
