//! Loki sink: raw flows as log lines through Loki's push API (`POST /loki/api/v1/push`, JSON
//! body `{"streams":[{"stream":{labels},"values":[["<unix ns>","<line>"],...]}]}`).
//!
//! Stream labels are only the bounded-cardinality ones — `tenant`, `exporter`, `app` — plus the
//! static labels of the config (default `job="sotp-flows"`). Everything per flow (addresses,
//! ports, bytes) goes into the line as JSON, so Loki's index stays small and LogQL's `| json`
//! reads the fields back. The seed question "bytes/s by source and application over 5 minutes"
//! is then:
//!
//! ```text
//! sum by (src_ip, app_protocol) (rate({job="sotp-flows"} | json | unwrap bytes [5m]))
//! ```
//!
//! `bytes`/`packets` in the line are scaled by the sampling rate (what the network carried);
//! `bytes_raw`/`packets_raw` are as exported. The entry timestamp is the flow's end. Each line
//! carries SOTP's `seq`, so two identical flows ending in the same millisecond stay two
//! entries, and a replayed batch is dropped by Loki as duplicates.
//!
//! No Grafana Loki server can be installed on the machines this was built on; the request
//! shape is pinned by golden files (`tests/flows/golden/loki-*.json`) written from Loki's
//! documented push format.

use super::{ExportRow, FlowSink, SinkError};
use crate::units::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LokiConfig {
    /// The push endpoint, e.g. `http://127.0.0.1:3100/loki/api/v1/push`.
    pub url: String,
    /// Static labels on every stream (names `[a-zA-Z_][a-zA-Z0-9_]*`, not tenant/exporter/app).
    pub labels: BTreeMap<String, String>,
    /// Extra request headers: `X-Scope-OrgID` for a multi-tenant Loki, `Authorization`.
    pub headers: BTreeMap<String, String>,
    /// Flows per push request.
    pub batch_rows: usize,
    pub timeout: HumanDuration,
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            url: String::new(),
            labels: BTreeMap::from([("job".to_string(), "sotp-flows".to_string())]),
            headers: BTreeMap::new(),
            batch_rows: 5_000,
            timeout: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

const FLOW_LABELS: [&str; 3] = ["tenant", "exporter", "app"];

pub struct LokiSink {
    config: LokiConfig,
    agent: ureq::Agent,
}

impl LokiSink {
    pub fn new(config: LokiConfig) -> Result<Self, String> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(format!("url {:?}: must be http:// or https://", config.url));
        }
        for name in config.labels.keys() {
            if FLOW_LABELS.contains(&name.as_str()) {
                return Err(format!("label {name:?} is set per flow; pick another name"));
            }
            if !valid_label_name(name) {
                return Err(format!(
                    "label {name:?}: Loki label names match [a-zA-Z_][a-zA-Z0-9_]*"
                ));
            }
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout.0))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(LokiSink { config, agent })
    }
}

impl FlowSink for LokiSink {
    fn send(&mut self, rows: &[ExportRow]) -> Result<(), SinkError> {
        let body = push_body(rows, &self.config.labels);
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json");
        for (k, v) in &self.config.headers {
            request = request.header(k, v);
        }
        let mut response = request
            .send(&body[..])
            .map_err(|e| SinkError::Retry(format!("POST {}: {e}", self.config.url)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let reason = format!("POST {}: HTTP {status}: {}", self.config.url, text.trim());
        if status == 429 || status >= 500 {
            Err(SinkError::Retry(reason))
        } else {
            Err(SinkError::Rejected(reason))
        }
    }
}

/// One flow as a Loki log line. Field order is fixed (serde keeps declaration order), so the
/// same flow always gives the same line — Loki's duplicate detection depends on it.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    src_ip: &'a str,
    dst_ip: &'a str,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    app_protocol: &'a str,
    bytes: u64,
    packets: u64,
    bytes_raw: u64,
    packets_raw: u64,
    sampling_rate: u32,
    sampling_source: &'a str,
    tcp_flags: u16,
    tos: u8,
    in_if: u32,
    out_if: u32,
    direction: &'a str,
    src_as: u32,
    dst_as: u32,
    vlan: u16,
    start_ms: i64,
    end_ms: i64,
    flow_protocol: &'a str,
    domain: u32,
}

#[derive(Serialize)]
struct Push<'a> {
    streams: Vec<Stream<'a>>,
}

#[derive(Serialize)]
struct Stream<'a> {
    stream: BTreeMap<&'a str, &'a str>,
    values: Vec<[String; 2]>,
}

/// The push request body for `rows`: one stream per (tenant, exporter, app), streams in label
/// order, entries in time order within a stream (as Loki requires).
pub fn push_body(rows: &[ExportRow], static_labels: &BTreeMap<String, String>) -> Vec<u8> {
    let mut streams: BTreeMap<(&str, &str, &str), Vec<&ExportRow>> = BTreeMap::new();
    for r in rows {
        streams
            .entry((&r.tenant, &r.exporter, &r.app))
            .or_default()
            .push(r);
    }
    let streams = streams
        .into_iter()
        .map(|((tenant, exporter, app), mut rows)| {
            rows.sort_by_key(|r| (r.end_ms, r.seq));
            let mut stream: BTreeMap<&str, &str> = static_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            stream.insert("tenant", tenant);
            stream.insert("exporter", exporter);
            stream.insert("app", app);
            let values = rows
                .into_iter()
                .map(|r| {
                    let ns = i128::from(r.end_ms.max(0)) * 1_000_000;
                    [ns.to_string(), line(r)]
                })
                .collect();
            Stream { stream, values }
        })
        .collect();
    serde_json::to_vec(&Push { streams }).expect("a push body always serializes")
}

fn line(r: &ExportRow) -> String {
    let line = Line {
        seq: r.seq,
        src_ip: &r.src_addr,
        dst_ip: &r.dst_addr,
        src_port: r.src_port,
        dst_port: r.dst_port,
        proto: r.ip_protocol,
        app_protocol: &r.app,
        bytes: r.bytes_scaled,
        packets: r.packets_scaled,
        bytes_raw: r.bytes,
        packets_raw: r.packets,
        sampling_rate: r.sampling_rate,
        sampling_source: &r.sampling_source,
        tcp_flags: r.tcp_flags,
        tos: r.tos,
        in_if: r.in_if,
        out_if: r.out_if,
        direction: &r.direction,
        src_as: r.src_as,
        dst_as: r.dst_as,
        vlan: r.vlan,
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        flow_protocol: &r.protocol,
        domain: r.domain,
    };
    serde_json::to_string(&line).expect("a flow line always serializes")
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_problem() {
        let with = |url: &str, label: &str| {
            LokiSink::new(LokiConfig {
                url: url.into(),
                labels: BTreeMap::from([(label.to_string(), "x".to_string())]),
                ..Default::default()
            })
            .err()
        };
        assert!(with("127.0.0.1:3100", "job").unwrap().contains("http://"));
        assert!(
            with("http://127.0.0.1:3100/loki/api/v1/push", "app")
                .unwrap()
                .contains("per flow")
        );
        assert!(
            with("http://127.0.0.1:3100/loki/api/v1/push", "9x")
                .unwrap()
                .contains("label names")
        );
        assert!(with("http://127.0.0.1:3100/loki/api/v1/push", "site").is_none());
    }
}
