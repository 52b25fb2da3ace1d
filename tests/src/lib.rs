//! Test support: the guest components built by `build.rs`, and a harness that runs a real
//! `sotp` process on a loopback port with its own data dir and talks to it over HTTP.

pub mod alertmanager;
pub mod azure;
pub mod blackbox;
pub mod harness;
pub mod http_recorder;
pub mod jaeger;
pub mod kafka;
pub mod mosquitto;
pub mod moto;
pub mod otlp;
pub mod pcap;
pub mod prometheus;
pub mod questdb;
pub mod tcp_proxy;
pub mod tshark;
pub mod vault;
pub mod victorialogs;
pub mod webapp;

/// Paths of the guest components built for the tests.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
