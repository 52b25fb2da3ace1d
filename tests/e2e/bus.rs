//! The flow bus against a real Kafka (4.4.0, KRaft, started by scripts/peers/kafka): an
//! inlet's publisher delivers batches a Kafka consumer reads back and decodes; with the
//! broker SIGKILLed, batches go to the disk spool (counted), and once the broker is back the
//! spool empties into Kafka — every batch there, each once.

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use sotp_flow::{FlowProtocol, FlowRecord};
use sotp_runtime::bus::publish::{BATCH_HEADER, Publisher, PublisherConfig};
use sotp_runtime::bus::schema::{self, SCHEMA_HEADER};
use sotp_tests::kafka::Kafka;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const TOPIC: &str = "sotp-flows";
const FLOWS_PER_BATCH: usize = 10;

fn batch(n: u64) -> Vec<u8> {
    let flows: Vec<_> = (0..FLOWS_PER_BATCH as u64)
        .map(|i| {
            let mut f = FlowRecord::empty(FlowProtocol::Ipfix, "192.0.2.1".parse().unwrap(), 1);
            f.src_addr = "10.0.0.1".parse().unwrap();
            f.dst_addr = "10.0.0.2".parse().unwrap();
            f.bytes = n * 100 + i;
            f.packets = 1;
            f.start_ms = 1_700_000_000_000;
            f.end_ms = 1_700_000_000_000;
            schema::to_message(&f, "acme", "https", 1_700_000_000_000)
        })
        .collect();
    schema::encode_batch(&flows)
}

/// An inlet's publisher on `kafka`, spooling into `spool` after 5 s.
fn publisher(kafka: &Kafka, spool: &std::path::Path) -> std::sync::Arc<Publisher> {
    Publisher::start(PublisherConfig {
        brokers: kafka.bootstrap(),
        topic: TOPIC.into(),
        inlet: "inlet-a".into(),
        spool_dir: spool.to_path_buf(),
        spool_max: sotp_runtime::units::ByteSize::mib(64),
        message_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// Every batch on the topic: batch id → its flows' bytes.
fn read_all(kafka: &Kafka, want: usize) -> BTreeMap<String, Vec<u64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", format!("reader-{}", sotp_runtime::now_ms()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut copies = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        // Before the first batch creates the topic, the consumer hears it does not exist.
        let Ok(m) = m else { continue };
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                .map(|v| v.to_vec())
        };
        let flows = schema::decode_batch(header(SCHEMA_HEADER).as_deref(), m.payload().unwrap())
            .expect("a batch of schema version 1");
        assert_eq!(flows.len(), FLOWS_PER_BATCH);
        assert!(flows.iter().all(|f| f.tenant == "acme"));
        assert_eq!(m.key(), Some(&b"acme/192.0.2.1"[..]));
        let id = String::from_utf8(header(BATCH_HEADER).unwrap()).unwrap();
        if got
            .insert(id, flows.iter().map(|f| f.bytes).collect())
            .is_some()
        {
            copies += 1;
        }
    }
    assert_eq!(copies, 0, "a batch arrived twice");
    got
}

/// `[runtime.flows.bus]` for `role` on `kafka`.
fn bus_config(kafka: &Kafka, role: &str) -> String {
    named_bus_config(kafka, role, &format!("{role}-1"))
}

/// `[runtime.flows.bus]` for `role` on `kafka`, the node called `name`.
fn named_bus_config(kafka: &Kafka, role: &str, name: &str) -> String {
    format!(
        "[runtime.flows.bus]\nrole = \"{role}\"\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\nname = \"{name}\"\n",
        kafka.bootstrap()
    )
}

/// Send each capture to its port (loopback) and return what the decoder finds in them:
/// (flows, scaled bytes) per exporter.
fn replay_expecting(
    pcaps: &std::path::Path,
    sends: &[(&str, u16)],
) -> BTreeMap<String, (u64, u64)> {
    use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
    let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut decoder = FlowDecoder::new(TemplateCache::default(), Default::default());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for &(file, port) in sends {
        for d in sotp_tests::pcap::read_udp(&pcaps.join(file)).unwrap() {
            let mut out = DecodeOutput::default();
            let _ = decoder.decode("127.0.0.1".parse().unwrap(), 0, &d.payload, &mut out);
            for f in &out.flows {
                let e = expected.entry(f.exporter.to_string()).or_default();
                *e = (e.0 + 1, e.1 + f.bytes * f.sampling_rate.max(1) as u64);
            }
            socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    expected
}

/// (flows, scaled bytes) per exporter, from a store's query API.
fn exporter_totals(api: &sotp_tests::harness::Api) -> BTreeMap<String, (u64, u64)> {
    let (code, top) = api.get("/v1/flows/top?start=0&end=now&by=exporter&limit=100");
    assert_eq!(code, 200, "{top}");
    top["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["group"]["exporter"].as_str().unwrap().to_string(),
                        (r["flows"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_inlet_publishes_batches_and_spools_them_while_the_broker_is_down() {
    let mut kafka = Kafka::single();
    let spool = tempfile::tempdir().unwrap();
    let publisher = publisher(&kafka, spool.path());

    for n in 0..50 {
        publisher.publish("acme/192.0.2.1", &batch(n));
    }
    publisher.flush(Duration::from_secs(30));
    assert_eq!(publisher.counters.delivered.load(Relaxed), 50);
    let first = read_all(&kafka, 50);
    assert_eq!(first.len(), 50);
    let mut bytes: Vec<u64> = first.values().flatten().copied().collect();
    bytes.sort();
    assert_eq!(
        bytes,
        (0..50u64)
            .flat_map(|n| (0..10).map(move |i| n * 100 + i))
            .collect::<Vec<_>>()
    );

    // The broker SIGKILLed: what cannot be delivered within the timeout goes to disk.
    kafka.kill(0);
    for n in 50..80 {
        publisher.publish("acme/192.0.2.1", &batch(n));
    }
    wait("every batch spooled", 30, || publisher.spooled_now() == 30);
    assert_eq!(publisher.counters.spooled.load(Relaxed), 30);
    assert!(publisher.counters.spool_bytes.load(Relaxed) > 0);

    // Back: the spool empties into Kafka, every batch there once.
    kafka.restart(0);
    wait("the spool replayed", 60, || publisher.spooled_now() == 0);
    assert_eq!(publisher.counters.replayed.load(Relaxed), 30);
    assert_eq!(publisher.counters.spool_bytes.load(Relaxed), 0);
    let all = read_all(&kafka, 80);
    assert_eq!(all.len(), 80);
    let mut bytes: Vec<u64> = all.values().flatten().copied().collect();
    bytes.sort();
    assert_eq!(
        bytes,
        (0..80u64)
            .flat_map(|n| (0..10).map(move |i| n * 100 + i))
            .collect::<Vec<_>>()
    );
}

/// A batch Kafka will never take (larger than a record may be) is dropped and counted, not
/// spooled: the spool would replay it forever and every later batch would wait behind it.
#[test]
fn a_batch_kafka_refuses_for_good_is_dropped_and_the_next_goes_through() {
    let kafka = Kafka::single();
    let spool = tempfile::tempdir().unwrap();
    let publisher = publisher(&kafka, spool.path());
    // 2 MB that lz4 cannot shrink below librdkafka's 1 MB record limit.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let huge: Vec<u8> = (0..2_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    publisher.publish("acme/192.0.2.1", &huge);
    publisher.publish("acme/192.0.2.1", &batch(1));
    publisher.flush(Duration::from_secs(30));
    assert_eq!(publisher.counters.spool_dropped.load(Relaxed), 1);
    assert_eq!(publisher.counters.spooled.load(Relaxed), 0);
    assert_eq!(publisher.counters.delivered.load(Relaxed), 1);
    assert_eq!(read_all(&kafka, 1).len(), 1);

    // SOTP's own topics: created compacted, taken as they are when they exist compacted,
    // refused with a reason when not (the flows topic, auto-created, deletes by age).
    use sotp_runtime::bus::topics::{COMMITS_SEGMENT, ensure_compacted};
    let brokers = kafka.bootstrap();
    ensure_compacted(&brokers, "sotp-flows-commits", 1, COMMITS_SEGMENT).unwrap();
    ensure_compacted(&brokers, "sotp-flows-commits", 1, COMMITS_SEGMENT).unwrap();
    let refused = ensure_compacted(&brokers, TOPIC, 1, COMMITS_SEGMENT).unwrap_err();
    assert!(refused.contains("cleanup.policy=delete"), "{refused}");
}

/// `sotp run` as an inlet (`[runtime.flows.bus] role = "inlet"`): NetFlow v5/v9, IPFIX and
/// sFlow exports replayed to its listeners come out of Kafka as schema-1 batches whose
/// (exporter, protocol) totals equal what the decoder (held to tshark by flow_oracle.rs) finds
/// in the captures; malformed datagrams are counted at the inlet and never reach the bus.
#[test]
fn an_inlet_publishes_every_protocols_flows_and_keeps_bad_input_off_the_bus() {
    use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
    use sotp_tests::pcap;
    let kafka = Kafka::single();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let (netflow, ipfix, sflow) = (
        sotp_tests::mosquitto::free_port(),
        sotp_tests::mosquitto::free_port(),
        sotp_tests::mosquitto::free_port(),
    );
    let config = format!(
        "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\nipfix = [\"127.0.0.1:{ipfix}\"]\n\
         sflow = [\"127.0.0.1:{sflow}\"]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n\
         [runtime.flows.sflow_agents]\n\"10.0.0.1\" = \"127.0.0.1\"\n\
         [runtime.flows.bus]\nrole = \"inlet\"\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\nname = \"inlet-a\"\n",
        kafka.bootstrap()
    );
    let server =
        sotp_tests::harness::Server::start_with_config(env!("CARGO_BIN_EXE_sotp"), &config, &[]);

    // What the decoder finds in the captures: flows, bytes and packets per (exporter, type).
    let mut expected: BTreeMap<(String, i32), (u64, u64, u64)> = BTreeMap::new();
    let mut decoder = FlowDecoder::new(TemplateCache::default(), Default::default());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (file, port) in [
        ("nfv9.pcap", netflow),
        ("nfv5.pcap", netflow),
        ("ipfix.pcap", ipfix),
        ("sflow.pcap", sflow),
    ] {
        for d in pcap::read_udp(&pcaps.path().join(file)).unwrap() {
            let mut out = DecodeOutput::default();
            let _ = decoder.decode("127.0.0.1".parse().unwrap(), 0, &d.payload, &mut out);
            for f in &out.flows {
                let m = schema::to_message(f, "acme", "", 0);
                let e = expected
                    .entry((f.exporter.to_string(), m.r#type))
                    .or_default();
                *e = (e.0 + 1, e.1 + f.bytes, e.2 + f.packets);
            }
            socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Bad input: counted at the inlet, not published.
    socket
        .send_to(&[0, 9, 0, 1, 2], ("127.0.0.1", netflow))
        .unwrap();
    socket
        .send_to(&[0, 5, 0, 30, 0, 0, 0, 0], ("127.0.0.1", netflow))
        .unwrap();
    let flows: u64 = expected.values().map(|v| v.0).sum();
    assert!(flows > 100 && expected.len() >= 4, "{expected:?}");

    // Off the bus: every flow, each batch once, totals equal.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("group.id", "checker")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut got: BTreeMap<(String, i32), (u64, u64, u64)> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().map(|v| v.0).sum::<u64>() < flows {
        assert!(
            Instant::now() < deadline,
            "on the bus: {got:?}, expected {expected:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        // Before the first batch creates the topic, the consumer hears it does not exist.
        let Ok(m) = m else { continue };
        let header = |name: &str| {
            m.headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                .map(|v| v.to_vec())
        };
        assert!(ids.insert(header(BATCH_HEADER).unwrap()), "a batch twice");
        let batch =
            schema::decode_batch(header(SCHEMA_HEADER).as_deref(), m.payload().unwrap()).unwrap();
        for f in batch {
            assert_eq!(f.tenant, "acme");
            let record = schema::to_record(&f).unwrap();
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            assert_eq!(
                key,
                format!("acme/{}", record.exporter),
                "keyed by exporter"
            );
            let e = got
                .entry((record.exporter.to_string(), f.r#type))
                .or_default();
            *e = (e.0 + 1, e.1 + f.bytes, e.2 + f.packets);
        }
    }
    assert_eq!(got, expected);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "nothing more"
    );
    let status = server.flow_status();
    assert_eq!(status["malformed"], 2, "{status}");
    assert_eq!(
        status["stored_rows"], 0,
        "an inlet stores nothing: {status}"
    );
    assert_eq!(status["bus"]["delivered"], ids.len(), "{status}");
    assert_eq!(
        server.metric_value("sotp_bus_batches_delivered_total"),
        Some(ids.len() as f64)
    );
}

/// One inlet and one store on a Kafka: the captures replayed to the inlet come out of the
/// store's query API with every exporter's flows and (scaled) bytes equal to the decoder's;
/// the store's lag is on `/metrics`; a record of an unknown schema version is refused with a
/// clear reason, its partition paused, nothing after it skipped.
#[test]
fn an_inlet_and_a_store_carry_flows_through_kafka_into_the_query_api() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use sotp_tests::harness::Server;
    use sotp_tests::pcap;
    const BIN: &str = env!("CARGO_BIN_EXE_sotp");
    let kafka = Kafka::single();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let bus = |role: &str| bus_config(&kafka, role);
    let store = Server::start_with_config(
        BIN,
        &format!(
            "[runtime.flows]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n{}",
            bus("store")
        ),
        &[],
    );
    let acme = store.tenant("acme");
    let (netflow, ipfix, sflow) = (
        sotp_tests::mosquitto::free_port(),
        sotp_tests::mosquitto::free_port(),
        sotp_tests::mosquitto::free_port(),
    );
    let _inlet = Server::start_with_config(
        BIN,
        &format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\nipfix = [\"127.0.0.1:{ipfix}\"]\n\
             sflow = [\"127.0.0.1:{sflow}\"]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n\
             [runtime.flows.sflow_agents]\n\"10.0.0.1\" = \"127.0.0.1\"\n{}",
            bus("inlet")
        ),
        &[],
    );

    let expected = replay_expecting(
        pcaps.path(),
        &[
            ("nfv9.pcap", netflow),
            ("nfv5.pcap", netflow),
            ("ipfix.pcap", ipfix),
            ("sflow.pcap", sflow),
        ],
    );
    let flows: u64 = expected.values().map(|v| v.0).sum();
    wait("the store to hold every flow", 60, || {
        store.flow_status()["stored_rows"].as_u64() == Some(flows)
    });
    // A commit's rollups show once Kafka confirmed its offsets (a moment after the rows).
    let mut got = BTreeMap::new();
    wait("the query API to answer every flow", 30, || {
        got = exporter_totals(&acme);
        got.values().map(|v| v.0).sum::<u64>() >= flows
    });
    assert_eq!(got, expected, "per exporter: (flows, bytes)");
    wait("the lag measured at 0", 20, || {
        store.metric_value("sotp_bus_consumer_lag") == Some(0.0)
            && store.metric_value("sotp_bus_flows_total") == Some(flows as f64)
    });

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    // One batch sent twice (an inlet's spool replaying what the broker had taken): stored once.
    let mut flow = FlowRecord::empty(FlowProtocol::Ipfix, "192.0.2.98".parse().unwrap(), 1);
    flow.bytes = 1000;
    flow.packets = 1;
    let twice = schema::encode_batch(&[schema::to_message(&flow, "acme", "", 0)]);
    for _ in 0..2 {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: SCHEMA_HEADER,
                value: Some("1"),
            })
            .insert(rdkafka::message::Header {
                key: BATCH_HEADER,
                value: Some("inlet-z-1"),
            });
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .key("acme/192.0.2.98")
                    .payload(&twice)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    wait("the copy skipped", 30, || {
        store.metric_value("sotp_bus_duplicate_batches_total") == Some(1.0)
    });
    wait("the batch stored once", 30, || {
        exporter_totals(&acme).get("192.0.2.98") == Some(&(1, 1000))
    });
    let flows = flows + 1;

    // A record of schema version 2: refused, said why, its partition paused there.
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: SCHEMA_HEADER,
        value: Some("2"),
    });
    producer
        .send(
            BaseRecord::to(TOPIC)
                .key("acme/192.0.2.99")
                .payload(&b"from the future"[..])
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    wait("the refusal", 30, || {
        store.flow_status()["bus"]["refused"].as_u64() == Some(1)
    });
    let status = store.flow_status();
    let paused = &status["bus"]["paused"][0];
    assert!(
        paused["reason"]
            .as_str()
            .unwrap()
            .contains("schema version 2"),
        "{status}"
    );
    assert!(store.log().contains("bus record refused"), "logged");
    assert_eq!(
        store.flow_status()["stored_rows"].as_u64(),
        Some(flows),
        "nothing else stored"
    );
}

/// A store killed after storing rows but before Kafka took their offsets (a failpoint aborts
/// it there) leaves its intent. Another store of the group takes the partitions over, reads
/// those records again from the last committed offsets and commits past them — so Kafka's
/// offsets now lie beyond the dead store's rows. At its restart the dead store still cuts
/// them: its commit marker (written in the same Kafka transaction as offsets) shows the
/// commit never happened. Every flow is then in exactly one store, once.
#[test]
fn a_store_killed_between_its_rows_and_its_offsets_stores_every_flow_once() {
    use sotp_tests::harness::Server;
    use sotp_tests::pcap;
    const BIN: &str = env!("CARGO_BIN_EXE_sotp");
    const FAILPOINT: &str = "SOTP_FAILPOINT_BUS_ABORT_AFTER_ROWS";
    let kafka = Kafka::single();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let store_config = |name: &str| {
        format!(
            "[runtime.flows]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n{}",
            named_bus_config(&kafka, "store", name)
        )
    };
    let mut store = Server::start_with_config(BIN, &store_config("store-a"), &[(FAILPOINT, "1")]);
    let acme_token = store.tenant("acme").token;
    let netflow = sotp_tests::mosquitto::free_port();
    let _inlet = Server::start_with_config(
        BIN,
        &format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\ndefault_tenant = \"acme\"\n\
             flush_interval = \"200ms\"\n{}",
            bus_config(&kafka, "inlet")
        ),
        &[],
    );
    let expected = replay_expecting(
        pcaps.path(),
        &[("nfv9.pcap", netflow), ("nfv5.pcap", netflow)],
    );
    let flows: u64 = expected.values().map(|v| v.0).sum();

    // The first commit of rows aborts the store before the offsets; the intent stays.
    wait("the store to abort at the failpoint", 60, || {
        !store.is_running()
    });
    assert!(
        store
            .log()
            .contains("failpoint: aborting after a bus commit")
    );
    let intent = store.data_path().join("bus-intent.json");
    assert!(intent.exists(), "the unconfirmed commit's intent");

    // Meanwhile another store takes the partitions over and stores every flow.
    let other = Server::start_with_config(BIN, &store_config("store-b"), &[]);
    let other_api = other.tenant("acme");
    wait("the other store to hold every flow", 60, || {
        exporter_totals(&other_api)
            .values()
            .map(|v| v.0)
            .sum::<u64>()
            >= flows
    });
    assert_eq!(exporter_totals(&other_api), expected);

    store.remove_env(FAILPOINT);
    store.restart();
    assert!(
        store
            .log()
            .contains("were cut from the raw log and will be read again"),
        "{}",
        store.log()
    );
    assert!(!intent.exists());
    std::thread::sleep(Duration::from_secs(3)); // nothing more arrives
    let acme = store.api(&acme_token);
    assert!(
        exporter_totals(&acme).is_empty(),
        "the dead store's uncommitted rows are gone: {:?}",
        exporter_totals(&acme)
    );
    assert_eq!(exporter_totals(&other_api), expected, "every flow once");
    assert!(store.flow_status()["bus"]["halted"].is_null());
}

/// Three Kafka brokers (replication factor 3), one inlet, two stores in one group: the
/// captures replayed twice — the second time with one store SIGKILLed (its partitions move to
/// the other) and a broker SIGKILLed (acks go on) — and the two stores together hold every
/// flow exactly twice per replay: nothing lost that was acknowledged, nothing stored twice.
#[test]
fn stores_and_brokers_killed_mid_stream_lose_nothing_and_store_nothing_twice() {
    use sotp_runtime::flow::{DecodeOutput, FlowDecoder, TemplateCache};
    use sotp_tests::harness::Server;
    use sotp_tests::pcap;
    const BIN: &str = env!("CARGO_BIN_EXE_sotp");
    let mut kafka = Kafka::cluster();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let bus = |role: &str| bus_config(&kafka, role);
    let mut stores: Vec<(Server, String)> = (1..=2)
        .map(|i| {
            let store_config = format!(
                "[runtime.flows]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n{}",
                named_bus_config(&kafka, "store", &format!("store-{i}"))
            );
            let s = Server::start_with_config(BIN, &store_config, &[]);
            let token = s.tenant("acme").token;
            (s, token)
        })
        .collect();
    let netflow = sotp_tests::mosquitto::free_port();
    let _inlet = Server::start_with_config(
        BIN,
        &format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{netflow}\"]\ndefault_tenant = \"acme\"\n\
             flush_interval = \"200ms\"\n{}",
            bus("inlet")
        ),
        &[],
    );
    let frames: Vec<_> = ["nfv9.pcap", "nfv5.pcap"]
        .iter()
        .flat_map(|f| pcap::read_udp(&pcaps.path().join(f)).unwrap())
        .collect();
    // Each replay's totals as the inlet's decoder sees them: the second replay is decoded
    // with the first's template and sampling state (its early records are scaled).
    let mut decoder = FlowDecoder::new(TemplateCache::default(), Default::default());
    let mut decode_replay = || {
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for d in &frames {
            let mut out = DecodeOutput::default();
            let _ = decoder.decode("127.0.0.1".parse().unwrap(), 0, &d.payload, &mut out);
            for f in &out.flows {
                let e = totals.entry(f.exporter.to_string()).or_default();
                *e = (e.0 + 1, e.1 + f.bytes * f.sampling_rate.max(1) as u64);
            }
        }
        totals
    };
    let once = decode_replay();
    let second = decode_replay();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let replay = || {
        for d in &frames {
            socket.send_to(&d.payload, ("127.0.0.1", netflow)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let sum = |parts: &[BTreeMap<String, (u64, u64)>]| -> BTreeMap<String, (u64, u64)> {
        let mut sum: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for part in parts {
            for (exporter, (f, b)) in part {
                let e = sum.entry(exporter.clone()).or_default();
                *e = (e.0 + f, e.1 + b);
            }
        }
        sum
    };
    let of = |store: &(Server, String)| exporter_totals(&store.0.api(&store.1));
    let both = sum(&[once.clone(), second.clone()]);
    let flows = |m: &BTreeMap<String, (u64, u64)>| m.values().map(|v| v.0).sum::<u64>();

    replay();
    wait("the first replay in the stores", 60, || {
        flows(&sum(&[of(&stores[0]), of(&stores[1])])) >= flows(&once)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sum(&[of(&stores[0]), of(&stores[1])]), once);
    // The exporter's key puts its flows on one partition: the store holding it is killed.
    let (dead, live) = if flows(&of(&stores[0])) > 0 {
        (0, 1)
    } else {
        (1, 0)
    };
    let first = of(&stores[dead]);
    assert_eq!(first, once);
    assert!(of(&stores[live]).is_empty());

    // That store and a broker SIGKILLed while the second replay streams in: the live store
    // takes the dead one's partitions over (after its 10 s session), acks go on.
    stores[dead].0.kill9();
    std::thread::scope(|scope| {
        let sender = scope.spawn(replay);
        std::thread::sleep(Duration::from_millis(300));
        kafka.kill(2);
        sender.join().unwrap();
    });
    // The dead store's flows of the first replay stay on its disk.
    // Everything of the second replay lands on the live store (it held nothing before).
    let live_should = second.clone();
    wait("the second replay in the live store", 90, || {
        flows(&of(&stores[live])) >= flows(&live_should)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(of(&stores[live]), live_should, "the live store");

    // Back: the dead store holds what it held, the two together every flow of both replays.
    stores[dead].0.restart();
    kafka.restart(2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(of(&stores[dead]), first, "the restarted store");
    assert_eq!(sum(&[of(&stores[0]), of(&stores[1])]), both);
}

/// The first Must-show: a three-broker Kafka, two inlets, two stores. Five exporters
/// (each its own loopback address, each one protocol: NetFlow v9 with options sampling, v9
/// with sampler ids, v5, IPFIX with selectors, sFlow) replayed to the inlets come out of the
/// query API with every exporter's flows and sampling-scaled bytes equal to what **tshark**
/// reads in the captures — from either store, each asking the other (`peers`) for the
/// tenant's partitions it does not hold; the peer token opens nothing else, another tenant
/// sees none of it. The inlet receiving the v9 exporter is SIGKILLed after
/// the exporter's templates and sampling options; the exporter's remaining packets (data
/// only) go to the other inlet, which decodes them at once from the template state the first
/// one shared on the compacted template topic: nothing held waiting for a template, the
/// sampling rate applied.
#[test]
fn two_inlets_and_two_stores_store_what_tshark_reads_and_a_killed_inlets_templates_move() {
    use sotp_tests::harness::Server;
    use sotp_tests::{pcap, tshark};
    const BIN: &str = env!("CARGO_BIN_EXE_sotp");
    let kafka = Kafka::cluster();
    let pcaps = tempfile::tempdir().unwrap();
    pcap::generate(pcaps.path()).unwrap();
    let file = |f: &str| pcaps.path().join(f);
    let peer_token = "a-secret-the-two-stores-share-0123456789";
    let ports = [(); 2].map(|_| sotp_tests::mosquitto::free_port());
    let stores: Vec<(Server, String)> = (0..2)
        .map(|i| {
            let config = format!(
                "[runtime.flows]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n{}\
                 peers = [\"http://127.0.0.1:{}\"]\npeer_token = \"{peer_token}\"\n",
                named_bus_config(&kafka, "store", &format!("store-{i}")),
                ports[1 - i]
            );
            let listen = format!("127.0.0.1:{}", ports[i]);
            let s = Server::start_with_config_at(BIN, &config, &[], &listen);
            let token = s.tenant("acme").token;
            (s, token)
        })
        .collect();
    let inlet = |name: &str| {
        let ports = [(); 3].map(|_| sotp_tests::mosquitto::free_port());
        let config = format!(
            "[runtime.flows]\nnetflow = [\"127.0.0.1:{}\"]\nipfix = [\"127.0.0.1:{}\"]\n\
             sflow = [\"127.0.0.1:{}\"]\ndefault_tenant = \"acme\"\nflush_interval = \"200ms\"\n\
             [runtime.flows.sflow_agents]\n\"10.0.0.1\" = \"127.0.0.6\"\n{}",
            ports[0],
            ports[1],
            ports[2],
            named_bus_config(&kafka, "inlet", name)
        );
        (Server::start_with_config(BIN, &config, &[]), ports)
    };
    let (mut a, [a_netflow, _, _]) = inlet("inlet-a");
    let (b, [b_netflow, b_ipfix, b_sflow]) = inlet("inlet-b");
    // An exporter sends from its own address; `frames` of a capture, to an inlet's port.
    let send = |from: &str, capture: &str, frames: std::ops::Range<usize>, port: u16| {
        let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
        let all = pcap::read_udp(&file(capture)).unwrap();
        for d in &all[frames.start..frames.end.min(all.len())] {
            socket.send_to(&d.payload, ("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let all = 0..usize::MAX;
    let expected: BTreeMap<String, (u64, u64)> = [
        (
            "127.0.0.2",
            tshark::cflow_totals(&file("nfv9.pcap"), 2055, all.clone()),
        ),
        (
            "127.0.0.3",
            tshark::cflow_totals(&file("nfv5.pcap"), 2055, all.clone()),
        ),
        (
            "127.0.0.4",
            tshark::cflow_totals(&file("ipfix_selector.pcap"), 4739, all.clone()),
        ),
        (
            "127.0.0.5",
            tshark::cflow_totals(&file("nfv9_sampler.pcap"), 2055, all.clone()),
        ),
        ("10.0.0.1", tshark::sflow_totals(&file("sflow.pcap"))),
    ]
    .into_iter()
    .map(|(e, t)| (e.to_string(), t.unwrap()))
    .collect();
    let first_part = tshark::cflow_totals(&file("nfv9.pcap"), 2055, 0..3).unwrap();
    assert!(first_part.0 > 0 && first_part.0 < expected["127.0.0.2"].0);
    // What the first store answers for the tenant: its own rows and the other store's.
    let stored = || exporter_totals(&stores[0].0.api(&stores[0].1));

    // Inlet A: the v9 exporter's templates, options (sampling 1 in 512) and first data, and
    // the sampler-id exporter. Inlet B: v5, IPFIX and sFlow.
    send("127.0.0.2", "nfv9.pcap", 0..3, a_netflow);
    send("127.0.0.5", "nfv9_sampler.pcap", all.clone(), a_netflow);
    send("127.0.0.3", "nfv5.pcap", all.clone(), b_netflow);
    send("127.0.0.4", "ipfix_selector.pcap", all.clone(), b_ipfix);
    send("127.0.0.6", "sflow.pcap", all.clone(), b_sflow);
    // B took in A's two template spaces; A's flows are in the stores.
    wait("inlet B to take in inlet A's template spaces", 60, || {
        b.flow_status()["bus"]["templates_applied"].as_u64() >= Some(2)
    });
    wait("inlet A's flows in the stores", 60, || {
        stored().get("127.0.0.2") == Some(&first_part)
    });
    assert!(a.flow_status()["bus"]["templates_shared"].as_u64() >= Some(2));

    // A SIGKILLed; the v9 exporter's traffic moves to B: data records only from here on.
    a.kill9();
    send("127.0.0.2", "nfv9.pcap", 3..5, b_netflow);
    wait("every exporter's flows in the stores", 60, || {
        stored().values().map(|v| v.0).sum::<u64>() >= expected.values().map(|v| v.0).sum()
    });
    std::thread::sleep(Duration::from_secs(2)); // nothing more arrives
    assert_eq!(
        stored(),
        expected,
        "per exporter: (flows, scaled bytes), stores vs tshark"
    );
    let second = stores[1].0.api(&stores[1].1);
    assert_eq!(
        exporter_totals(&second),
        expected,
        "the other store answers the same"
    );
    let (code, rate) = second.get("/v1/flows/rate?start=0&end=now&step=3000d&by=exporter");
    assert_eq!(code, 200, "{rate}");
    let rated: u64 = rate["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["flows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        rated,
        expected.values().map(|v| v.0).sum::<u64>(),
        "rates merged: {rate}"
    );
    // Another tenant (on both stores, as tenants must be) asks either store: nothing of
    // acme's.
    let others: Vec<_> = stores.iter().map(|(s, _)| s.tenant("other")).collect();
    for other in &others {
        assert!(exporter_totals(other).is_empty());
    }
    // The peer header with a tenant's token, or the peer token on anything else: refused.
    let client = reqwest::blocking::Client::new();
    let ask = |path: &str, token: &str, peer: bool| {
        let mut r = client
            .get(format!("{}{path}", stores[0].0.base))
            .bearer_auth(token)
            .header("x-sotp-tenant", "acme");
        if peer {
            r = r.header("x-sotp-peer", "1");
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(ask("/v1/flows/top?by=exporter", &stores[0].1, true), 401);
    assert_eq!(ask("/v1/flows/top?by=exporter", peer_token, true), 200);
    let answered = client
        .get(format!("{}/v1/flows/top?by=exporter", stores[0].0.base))
        .bearer_auth(peer_token)
        .header("x-sotp-tenant", "acme")
        .header("x-sotp-peer", "1")
        .send()
        .unwrap();
    assert_eq!(
        answered.headers()["x-sotp-node"],
        "store-0",
        "a peer names itself"
    );
    assert_eq!(ask("/v1/flows/status", peer_token, false), 401);
    assert_eq!(ask("/v1/components", peer_token, true), 401);
    // sFlow's interface counters went the same way: the capture's two samples stored once.
    wait("the interface counters in the stores", 60, || {
        let stored: u64 = stores
            .iter()
            .map(|(s, _)| {
                s.flow_status()["bus"]["counter_samples"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        stored == 2
    });
    let status = b.flow_status();
    assert_eq!(
        status["pending_held"], 0,
        "nothing waited for a template: {status}"
    );
    assert_eq!(
        status["records"]["netflow9"].as_u64(),
        Some(expected["127.0.0.2"].0 - first_part.0),
        "{status}"
    );
}
