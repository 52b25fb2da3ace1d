//! `kill -9` while a component emits: every acknowledged sample survives.
//!
//! A sample is acknowledged once its invocation's batch is committed; the query API reads
//! only committed data, so whatever a query returned before the kill was acknowledged.

use sotp_tests::guests::TICK_COUNTER;
use sotp_tests::harness::{Api, Server, manifest};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sotp");
const PER_TICK: usize = 200;

fn snapshot(api: &Api) -> (BTreeSet<u64>, BTreeMap<u64, usize>) {
    let ticks: BTreeSet<u64> = api
        .points("ticks", "1h")
        .into_iter()
        .map(|p| p.2 as u64)
        .collect();
    let counts = api.query(&[
        ("metric", "tick_load"),
        ("since", "1h"),
        ("step", "1h"),
        ("agg", "count"),
        ("by", "seq"),
    ]);
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for series in counts["series"].as_array().unwrap() {
        let seq: u64 = series["labels"]["seq"].as_str().unwrap().parse().unwrap();
        let n: f64 = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .sum();
        *load.entry(seq).or_default() += n as usize;
    }
    (ticks, load)
}

#[test]
fn acknowledged_samples_survive_sigkill() {
    let mut server = Server::start(BIN);
    let acme = server.tenant("acme");
    acme.push(
        &manifest(
            "tick-counter",
            "1",
            "20ms",
            &format!("[config]\nsamples_per_tick = {PER_TICK}\n"),
        ),
        TICK_COUNTER,
    );
    acme.wait_for("emission under way", Duration::from_secs(30), |api| {
        (api.points("ticks", "1h").len() >= 30).then_some(())
    });
    let (acked, _) = snapshot(&acme);
    server.kill9();
    assert!(!server.is_running());

    server.restart();
    let acme = server.api(&acme.token);
    let (after, load) = snapshot(&acme);
    let lost: Vec<&u64> = acked.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "acknowledged ticks lost after kill -9: {lost:?}"
    );
    // Batches are atomic: every tick that survived has all of its samples, never a part.
    for seq in &after {
        assert_eq!(
            load.get(seq),
            Some(&(PER_TICK - 1)),
            "tick {seq} is partially stored"
        );
    }
    // The component is back and numbering moves on without reuse.
    let max_before = *after.iter().max().unwrap();
    acme.wait_for("ticks after the restart", Duration::from_secs(30), |api| {
        let (t, _) = snapshot(api);
        (t.iter().filter(|s| **s > max_before).count() >= 5).then_some(())
    });
    let (ticks, load) = snapshot(&acme);
    for seq in ticks.iter().filter(|s| **s > max_before) {
        assert_eq!(load.get(seq), Some(&(PER_TICK - 1)));
    }
}
