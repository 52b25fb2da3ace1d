//! CPU per flow of the scaled-out flow path, beside the single process, on the same exports in
//! one run (docs/SCALE.md's capacity model is computed from these numbers):
//!
//! - `single`: one `sotp` receiving, decoding, enriching and storing (raw log + rollups);
//! - `inlet`: receiving, decoding, enriching and publishing to Kafka (idempotent, lz4);
//! - `store`: consuming from Kafka and storing, offsets committed with each batch.
//!
//! The exports are the generated NetFlow v9 capture (tests/flows/gen_pcaps.py) replayed
//! `--rounds` times to a loopback listener at a steady pace (nothing dropped: the totals are
//! checked); each `sotp`'s CPU is its process's user + system time from /proc, from its first
//! flow to its last (its idle baseline over the same time subtracted). Kafka 4.4.0 runs as one
//! node (scripts/peers/kafka); its own CPU is not charged to SOTP.
//!
//! `cargo bench -p sotp --bench bus [-- --rounds 2000]`

use sotp_tests::harness::{Server, bench_arg, process_cpu};
use sotp_tests::kafka::Kafka;
use sotp_tests::pcap;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sotp");

struct Run {
    flows: u64,
    cpu: Duration,
    wall: Duration,
}

/// Send the capture `rounds` times to `port`; the flows it holds per round.
fn replay(frames: &[pcap::Datagram], port: u16, rounds: usize) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..rounds {
        for d in frames {
            socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_micros(1500));
    }
}

fn stored(server: &Server) -> u64 {
    server.flow_status()["stored_rows"].as_u64().unwrap_or(0)
}

fn delivered_flows(server: &Server) -> u64 {
    server.flow_status()["records"]["netflow9"]
        .as_u64()
        .unwrap_or(0)
}

/// CPU a process spends idle over `d` (subtracted from the measured runs).
fn idle(server: &Server, d: Duration) -> Duration {
    let before = process_cpu(server.pid());
    std::thread::sleep(d);
    process_cpu(server.pid()) - before
}

/// Wait until `done` holds, then the process's CPU and the wall time since `started`.
fn measure(
    server: &Server,
    cpu0: Duration,
    started: Instant,
    idle_per_s: f64,
    flows: u64,
    mut done: impl FnMut() -> bool,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() {
        assert!(Instant::now() < deadline, "not done after 10 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    let cpu = (process_cpu(server.pid()) - cpu0)
        .saturating_sub(Duration::from_secs_f64(idle_per_s * wall.as_secs_f64()));
    Run { flows, cpu, wall }
}

fn main() {
    let rounds: usize = bench_arg("--rounds", 2000);
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let frames = pcap::read_udp(&pcaps.path().join("nfv9.pcap")).unwrap();
    // Flows per round, and their size on the bus before compression (schema version 1).
    let (per_round, encoded) = {
        use sotp_runtime::bus::schema;
        use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
        let mut d = FlowDecoder::new(TemplateCache::default(), Default::default());
        let mut messages = Vec::new();
        for f in &frames {
            let mut out = DecodeOutput::default();
            let _ = d.decode(f.source, 0, &f.payload, &mut out);
            for r in &out.flows {
                messages.push(schema::to_message(
                    r,
                    "bench",
                    "https",
                    sotp_runtime::now_ms(),
                ));
            }
        }
        (messages.len() as u64, schema::encode_batch(&messages).len())
    };
    println!(
        "schema 1 before compression: {:.1} bytes/flow",
        encoded as f64 / per_round as f64
    );
    let flows = per_round * rounds as u64;
    println!("{rounds} rounds of the NetFlow v9 capture: {flows} flows");
    let listener = |port: u16| {
        format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{port}\"]\ndefault_tenant = \"bench\"\nflush_interval = \"200ms\"\n"
        )
    };

    // The single process.
    let port = sotp_tests::mosquitto::free_port();
    let single = Server::start_with_config(BIN, &listener(port), &[]);
    single.tenant("bench");
    let idle_single = idle(&single, Duration::from_secs(2)).as_secs_f64() / 2.0;
    let (cpu0, t0) = (process_cpu(single.pid()), Instant::now());
    replay(&frames, port, rounds);
    let single_run = measure(&single, cpu0, t0, idle_single, flows, || {
        stored(&single) >= flows
    });
    drop(single);

    // An inlet and a store on one Kafka node.
    let kafka = Kafka::single();
    let bus = |role: &str| {
        format!(
            "[runtime.flows.bus]\nrole = \"{role}\"\nbrokers = \"{}\"\n",
            kafka.bootstrap()
        )
    };
    let store = Server::start_with_config(
        BIN,
        &format!(
            "[runtime.flows]\ndefault_tenant = \"bench\"\nflush_interval = \"200ms\"\n{}",
            bus("store")
        ),
        &[],
    );
    store.tenant("bench");
    let port = sotp_tests::mosquitto::free_port();
    let inlet = Server::start_with_config(BIN, &format!("{}{}", listener(port), bus("inlet")), &[]);
    let idle_inlet = idle(&inlet, Duration::from_secs(2)).as_secs_f64() / 2.0;
    let idle_store = idle(&store, Duration::from_secs(2)).as_secs_f64() / 2.0;
    let (inlet_cpu0, store_cpu0, t0) = (
        process_cpu(inlet.pid()),
        process_cpu(store.pid()),
        Instant::now(),
    );
    replay(&frames, port, rounds);
    let inlet_run = measure(&inlet, inlet_cpu0, t0, idle_inlet, flows, || {
        delivered_flows(&inlet) >= flows
            && inlet.flow_status()["bus"]["spooled"].as_u64() == Some(0)
    });
    let store_run = measure(&store, store_cpu0, t0, idle_store, flows, || {
        stored(&store) >= flows
    });
    assert_eq!(stored(&store), flows, "every flow stored once");

    println!(
        "\n{:<8} {:>10} {:>14} {:>16} {:>10}",
        "role", "flows", "CPU µs/flow", "flows/CPU-s", "wall s"
    );
    for (name, r) in [
        ("single", &single_run),
        ("inlet", &inlet_run),
        ("store", &store_run),
    ] {
        let us = r.cpu.as_secs_f64() * 1e6 / r.flows as f64;
        println!(
            "{name:<8} {:>10} {:>14.2} {:>16.0} {:>10.1}",
            r.flows,
            us,
            1e6 / us,
            r.wall.as_secs_f64()
        );
    }
    let on_disk = kafka.topic_bytes(0, "sotp-flows");
    println!(
        "\non the bus: {on_disk} bytes in Kafka's log for {flows} flows = {:.1} bytes/flow (lz4, one replica; a capture replayed over and over compresses far better than real traffic)",
        on_disk as f64 / flows as f64
    );
    let us = |r: &Run| r.cpu.as_secs_f64() * 1e6 / r.flows as f64;
    println!(
        "\ninlet + store = {:.2} µs/flow, {:.2}× the single process ({:.2} µs/flow)",
        us(&inlet_run) + us(&store_run),
        (us(&inlet_run) + us(&store_run)) / us(&single_run),
        us(&single_run)
    );
}
