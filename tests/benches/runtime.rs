//! Runtime benchmark: what a component costs the host, measured in one run.
//!
//! `cargo bench -p sotp-tests --bench runtime` prints: instantiation from `InstancePre`
//! (pooling and on-demand), the cost of a call through SOTP's call path for a no-op and with a
//! 64 KiB payload, one host import, a hot swap (compile from cache, instantiate, `init`,
//! switch), and the same sample-building logic run as a guest and natively on the same input,
//! with their ratio. Medians of repeated runs; read them as relative numbers on a shared box.

#[path = "../../guests/bench-guest/src/logic.rs"]
mod logic;

use sotp_runtime::engine::{EngineSettings, WasmEngine};
use sotp_runtime::host::{
    CollectorPre, GuestOutput, HostServices, HostState, InstanceEnv, collector_linker,
};
use sotp_runtime::instance::{Call, LoadedVersion, Outcome};
use sotp_runtime::manifest::{Manifest, ManifestBounds};
use sotp_runtime::mqtt::MqttHub;
use sotp_runtime::stats::{ComponentStats, LogSource};
use sotp_runtime::telemetry::{
    Samples, SeriesHasher, SeriesKey, TelemetryStore, normalize_labels, validate_metric_name,
};
use sotp_tests::guests::{BENCH_GUEST, TICK_COUNTER};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct NoSecrets;
impl HostServices for NoSecrets {
    fn read_secret(&self, _: &str, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

const MANIFEST: &str = "name = \"bench\"\nversion = \"1\"\nworld = \"collector\"\n[limits]\nmemory = \"64MiB\"\ncpu_ms = 10000\n";

impl sotp_runtime::mqtt::CredentialSource for NoSecrets {
    fn secret(&self, _: &str, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// A store and an MQTT hub with no broker: the bench guest never subscribes.
fn stores() -> (Arc<TelemetryStore>, Arc<MqttHub>) {
    type Stores = (tempfile::TempDir, Arc<TelemetryStore>, Arc<MqttHub>);
    static STORES: std::sync::OnceLock<Stores> = std::sync::OnceLock::new();
    let (_, store, hub) = STORES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap());
        let hub = Arc::new(MqttHub::new(
            store.clone(),
            Arc::new(NoSecrets),
            Default::default(),
        ));
        (dir, store, hub)
    });
    (store.clone(), hub.clone())
}

fn env() -> Arc<InstanceEnv> {
    Arc::new(InstanceEnv {
        tenant: "bench".into(),
        component: "bench".into(),
        version: 1,
        manifest: Arc::new(Manifest::parse(MANIFEST, &ManifestBounds::default()).unwrap()),
        stats: Arc::new(ComponentStats::default()),
        services: Arc::new(NoSecrets),
        mqtt: stores().1,
        telemetry: stores().0,
        budget: sotp_runtime::budget::TenantBudget::unlimited("bench"),
        scratch_dir: None,
        file_sd_dir: None,
        subscriptions: Default::default(),
        active: Default::default(),
    })
}

fn engine(on_demand: bool, dir: &std::path::Path) -> WasmEngine {
    WasmEngine::new(&EngineSettings {
        max_memory: 256 << 20,
        pool_instances: 200,
        epoch_tick: Duration::from_millis(10),
        cache_dir: dir.join(if on_demand { "cache-od" } else { "cache-pool" }),
        force_on_demand: on_demand,
    })
    .expect("engine")
}

/// Median time per iteration over `rounds` rounds of `iters` iterations.
fn median_per_iter(rounds: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters as u32
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

/// Guest and native measured in alternating rounds, so both see the same machine (a shared
/// VM's speed drifts by tens of percent within a run): (median guest time, median native
/// time, median of the per-round ratios).
fn paired(
    rounds: usize,
    iters: usize,
    mut guest: impl FnMut(),
    mut native: impl FnMut(),
) -> (Duration, Duration, f64) {
    let mut g = Vec::with_capacity(rounds);
    let mut n = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let a = median_per_iter(1, iters, &mut guest);
        let b = median_per_iter(1, iters, &mut native);
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
        g.push(a);
        n.push(b);
    }
    g.sort();
    n.sort();
    ratios.sort_by(f64::total_cmp);
    (g[rounds / 2], n[rounds / 2], ratios[rounds / 2])
}

/// The bench guest's `gather` natively: parse the payload into one column per device.
fn gather_columns(payload: &[u8]) -> sotp_guest::Columns {
    let mut parsed = Vec::with_capacity(2048);
    logic::parse_lines(payload, &mut parsed);
    let mut columns = sotp_guest::Columns::new();
    for p in parsed {
        columns.push(p.metric, &[("device", p.device)], p.value);
    }
    columns
}

/// What the host does with each series a guest emits (host/emit.rs): check the metric name,
/// normalize the labels, derive the key.
fn host_key(hasher: SeriesHasher, metric: String, labels: Vec<sotp_guest::Label>) -> SeriesKey {
    validate_metric_name(&metric).unwrap();
    let labels = labels.into_iter().map(|l| (l.name, l.value)).collect();
    let labels = normalize_labels("bench", labels).unwrap();
    hasher.key("bench", metric, labels)
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn instantiate_cost(engine: &WasmEngine, wasm: &[u8]) -> Duration {
    let (component, _, _) = engine.compile("bench", "bench-guest", wasm).unwrap();
    let linker = collector_linker(engine.engine()).unwrap();
    let pre = CollectorPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let env = env();
    median_per_iter(9, 300, || {
        let stdout = GuestOutput::new(env.stats.clone(), LogSource::Stdout, 1);
        let stderr = GuestOutput::new(env.stats.clone(), LogSource::Stderr, 1);
        let mut store =
            wasmtime::Store::new(engine.engine(), HostState::new(env.clone(), stdout, stderr));
        store.limiter(|s| &mut s.memory);
        store.set_epoch_deadline(1_000_000);
        black_box(pre.instantiate(&mut store).unwrap());
    })
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(BENCH_GUEST).expect("bench guest built by build.rs");
    let pooled = engine(false, dir.path());
    let on_demand = engine(true, dir.path());
    println!(
        "SOTP runtime benchmark (allocation: {:?})\n",
        pooled.allocation()
    );

    let inst_pool = instantiate_cost(&pooled, &wasm);
    let inst_od = instantiate_cost(&on_demand, &wasm);

    let (component, _, compile_time) = pooled.compile("bench", "bench-guest-2", &wasm).unwrap();
    let linker = collector_linker(pooled.engine()).unwrap();
    let version = LoadedVersion::new(pooled.engine(), &linker, &component, env()).unwrap();
    assert!(matches!(version.warm().outcome, Outcome::Ok));
    let call = |topic: &str, payload: Vec<u8>| Call::Message {
        topic: topic.into(),
        payload,
    };
    let noop = call("noop", Vec::new());
    let noop_64k = call("noop", vec![7u8; 64 * 1024]);
    let imports = call("imports:1000", Vec::new());
    let payload = logic::sample_payload(64 * 1024);
    let parse = call("parse", payload.clone());
    let run = |c: &Call| {
        let report = version.call(c);
        assert!(
            matches!(report.outcome, Outcome::Ok),
            "{:?}",
            report.outcome
        );
        black_box(report.emitted.len());
    };
    let t_noop = median_per_iter(9, 2000, || run(&noop));
    let t_64k = median_per_iter(9, 500, || run(&noop_64k));
    let t_imports = median_per_iter(9, 50, || run(&imports));
    let per_import = t_imports.saturating_sub(t_noop) / 1000;
    // The steady state of a collector: its series were stored by an earlier call, so the
    // host finds them rather than admitting new ones against the quota on every call.
    let first = version.call(&parse);
    let known = sotp_runtime::telemetry::Batch {
        tenant: "bench".into(),
        component: "bench".into(),
        samples: first.emitted.samples,
        max_series: u64::MAX,
        ..Default::default()
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(stores().0.commit(known))
        .expect("storing the guest's series");
    let parse_rows = call("parse-rows", payload.clone());
    let gather = call("gather", payload.clone());
    let hasher = stores().0.hasher();
    // The same logic natively, with the same output the host receives from the guest and
    // the same host-side checks and keys (host/emit.rs): column-wise ...
    let (t_guest, t_native, ratio) = paired(
        15,
        10,
        || run(&parse),
        || {
            gather_columns(&payload).emit().unwrap();
            let mut rows = Samples::default();
            for s in sotp_guest::take_emitted_series() {
                let key = host_key(hasher, s.metric, s.labels);
                rows.extend_series(key, s.values.into_iter().map(|v| (0, v)));
            }
            black_box(rows);
        },
    );
    // ... and a record per sample ...
    let (t_guest_rows, t_native_rows, ratio_rows) = paired(
        15,
        10,
        || run(&parse_rows),
        || {
            let mut parsed = Vec::with_capacity(2048);
            logic::parse_lines(&payload, &mut parsed);
            let mut out = sotp_guest::Samples::new();
            for p in parsed {
                out.push(p.metric, p.value).label("device", p.device);
            }
            out.emit().unwrap();
            let mut rows = Samples::default();
            for s in sotp_guest::take_emitted() {
                rows.push(host_key(hasher, s.metric, s.labels), 0, s.value);
            }
            black_box(rows);
        },
    );
    // ... and the guest's own work alone: parse and gather into columns, nothing emitted.
    let (t_guest_gather, t_native_gather, ratio_gather) = paired(
        15,
        10,
        || run(&gather),
        || {
            black_box(gather_columns(&payload).take());
        },
    );
    let samples_per_batch = {
        let mut v = Vec::new();
        logic::parse_lines(&payload, &mut v);
        v.len()
    };

    let swap = hot_swap_cost(dir.path());

    println!("{:<58} {:>12}", "measurement", "median");
    println!("{}", "-".repeat(71));
    println!(
        "{:<58} {:>12}",
        "JIT-compile the bench guest (once)",
        fmt(compile_time)
    );
    println!(
        "{:<58} {:>12}",
        "instantiate from InstancePre, pooling allocator",
        fmt(inst_pool)
    );
    println!(
        "{:<58} {:>12}",
        "instantiate from InstancePre, on-demand allocator",
        fmt(inst_od)
    );
    println!(
        "{:<58} {:>12}",
        "call through SOTP's call path, no-op",
        fmt(t_noop)
    );
    println!(
        "{:<58} {:>12}",
        "call with a 64 KiB payload (copy in), no-op",
        fmt(t_64k)
    );
    println!(
        "{:<58} {:>12}",
        "host import (emit.samples, empty batch), per call",
        fmt(per_import)
    );
    println!(
        "{:<58} {:>12}",
        "hot swap: activate a cached version (total)",
        fmt(swap.0)
    );
    println!(
        "{:<58} {:>12}",
        "hot swap: instantiate + init of the new version",
        fmt(swap.1)
    );
    println!(
        "{:<58} {:>12}",
        format!("parse 64 KiB into {samples_per_batch} samples, as a guest, columns"),
        fmt(t_guest)
    );
    println!(
        "{:<58} {:>12}",
        "the same logic natively, columns",
        fmt(t_native)
    );
    println!(
        "{:<58} {:>12}",
        "the same as a guest, a record per sample",
        fmt(t_guest_rows)
    );
    println!(
        "{:<58} {:>12}",
        "the same natively, a record per sample",
        fmt(t_native_rows)
    );
    println!(
        "{:<58} {:>12}",
        "parse and gather into columns, nothing emitted, as a guest",
        fmt(t_guest_gather)
    );
    println!("{:<58} {:>12}", "the same natively", fmt(t_native_gather));
    let per = |t: Duration| t.as_nanos() as f64 / samples_per_batch as f64;
    println!(
        "\nguest / native ratio for sample building, columns (emit.series): {ratio:.2}x  ({:.0} ns vs {:.0} ns per sample)",
        per(t_guest),
        per(t_native)
    );
    println!(
        "guest / native ratio for sample building, rows (emit.samples):    {ratio_rows:.2}x  ({:.0} ns vs {:.0} ns per sample)",
        per(t_guest_rows),
        per(t_native_rows)
    );
    println!(
        "guest / native ratio without emitting (parse + gather only):      {ratio_gather:.2}x  ({:.0} ns vs {:.0} ns per sample)",
        per(t_guest_gather),
        per(t_native_gather)
    );
    println!("(ratios: medians of 15 rounds alternating guest and native)");
}

/// Median (total activation, warm-up part) of swapping a running component between two
/// cached versions through `Runtime::activate`.
fn hot_swap_cost(dir: &std::path::Path) -> (Duration, Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = sotp_runtime::RuntimeConfig {
            data_dir: dir.join("swap-data"),
            ..Default::default()
        };
        let runtime = sotp_runtime::Runtime::open(config).unwrap();
        runtime.restore().await;
        runtime
            .create_tenant("bench", sotp_runtime::TenantSpec::default())
            .unwrap();
        let wasm = std::fs::read(TICK_COUNTER).unwrap();
        for marker in ["a", "b"] {
            let manifest = format!(
                "name = \"swap\"\nversion = \"{marker}\"\nworld = \"collector\"\n[schedule]\nevery = \"10ms\"\n[config]\nmarker = \"{marker}\"\n"
            );
            runtime
                .upload("bench", &manifest, &wasm, true, sotp_runtime::Scopes::all())
                .await
                .unwrap();
        }
        let mut totals = Vec::new();
        let mut warms = Vec::new();
        for i in 0..21 {
            let target = 1 + (i % 2);
            let start = Instant::now();
            let outcome = runtime.activate("bench", "swap", target).await.unwrap();
            totals.push(start.elapsed());
            warms.push(Duration::from_secs_f64(outcome.warm_ms / 1e3));
        }
        totals.sort();
        warms.sort();
        runtime.shutdown();
        (totals[10], warms[10])
    })
}
