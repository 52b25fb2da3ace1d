//! Flow queries answered across the store tier. A tenant's exporters are spread over the flows
//! topic's partitions, so its flows sit on several stores; a store with `peers` answers
//! `/v1/flows/top` and `/v1/flows/rate` for the whole tenant by asking the other stores
//! (scatter) and merging their rows with its own (gather). Any store can be the front: users
//! and dashboards keep one URL (the stores' Service).
//!
//! In: a query's parameters (absolute window) and the tenant. Out: each peer's rows, read
//! with the **peer token** — a secret the stores share (`peer_token`), accepted only by the
//! two flow queries, only with `X-Sotp-Peer` (a peer answers from its own store, never asks
//! further) and `X-Sotp-Tenant` naming the tenant. A peer that does not answer fails the
//! query (502 naming it) rather than returning a silently partial total.
//!
//! Merging is exact: each store returns up to [`MAX_GROUPS`] groups (the query API's own
//! cap), summed by group, ranked, and cut to the asked limit — exact while every store's
//! groups fit in it.

use crate::flow::query::{Measure, RateRow, TopRow};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// Groups each store returns for a merged query.
pub const MAX_GROUPS: usize = 10_000;
/// The header marking a peer's request.
pub const PEER_HEADER: &str = "x-sotp-peer";
const TIMEOUT: Duration = Duration::from_secs(15);

/// The header a store answers a peer's request with: its name, so that a store listed
/// among its own peers (which would count its rows twice) is caught.
pub const NODE_HEADER: &str = "x-sotp-node";
/// Merged queries running at once on a store; more wait (each holds a thread per peer and
/// every peer's rows).
pub const MAX_FAN_OUTS: usize = 8;

/// The other stores, and the secret they share.
pub struct Peers {
    urls: Vec<String>,
    token: String,
    /// This store's name (`runtime.flows.bus.name`).
    me: String,
    agent: ureq::Agent,
    /// Bounds the merged queries running at once ([`MAX_FAN_OUTS`]).
    pub fan_outs: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A peer's answer: only its rows are read.
#[derive(serde::Deserialize)]
struct Answer<R> {
    rows: Vec<R>,
}

impl Peers {
    pub fn new(urls: &[String], token: &str, me: &str) -> Result<Peers, String> {
        if token.len() < 32 {
            return Err("runtime.flows.bus.peer_token: at least 32 characters (a secret every store shares)".into());
        }
        for url in urls {
            crate::outbound::target(url).map_err(|e| format!("runtime.flows.bus.peers: {e}"))?;
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Peers {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            token: token.to_string(),
            me: me.to_string(),
            agent,
            fan_outs: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_FAN_OUTS)),
        })
    }

    /// This store's name, sent back to peers ([`NODE_HEADER`]).
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The peers' base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether `token` is the peer token (digests compared, as tokens are: no timing
    /// signal about the secret's bytes).
    pub fn accepts(&self, token: &str) -> bool {
        crate::tokens::hash_token(token) == crate::tokens::hash_token(&self.token)
    }

    /// Every peer's rows of `path?query` for `tenant`, asked at once; the first failure
    /// names its peer.
    pub fn ask<R: DeserializeOwned + Send>(
        &self,
        path: &str,
        query: &str,
        tenant: &str,
    ) -> Result<Vec<Vec<R>>, String> {
        std::thread::scope(|scope| {
            let asks: Vec<_> = self
                .urls
                .iter()
                .map(|base| scope.spawn(move || self.ask_one::<R>(base, path, query, tenant)))
                .collect();
            asks.into_iter()
                .map(|a| {
                    a.join()
                        .unwrap_or_else(|_| Err("a peer query panicked".into()))
                })
                .collect()
        })
    }

    fn ask_one<R: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        query: &str,
        tenant: &str,
    ) -> Result<Vec<R>, String> {
        let url = format!("{base}{path}?{query}");
        let failed = |e: String| format!("the store at {base} did not answer: {e}");
        let mut response = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .header(PEER_HEADER, "1")
            .header("x-sotp-tenant", tenant)
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if response
            .headers()
            .get(NODE_HEADER)
            .is_some_and(|n| n.as_bytes() == self.me.as_bytes())
        {
            return Err(failed(
                "it is this store itself: remove it from runtime.flows.bus.peers".into(),
            ));
        }
        let body = response.body_mut().with_config().limit(64 * 1024 * 1024);
        if !status.is_success() {
            let text = body.read_to_string().unwrap_or_default();
            return Err(failed(format!("{status}: {text}")));
        }
        body.read_json::<Answer<R>>()
            .map(|a| a.rows)
            .map_err(|e| failed(e.to_string()))
    }
}

/// A group's identity across stores: its values without the interface names each store
/// added from its own inventory (`in_if_name`, `out_if_name`), which may differ.
fn group_key(group: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut key = group.clone();
    key.retain(|k, _| !k.ends_with("_name"));
    serde_json::Value::Object(key).to_string()
}

/// The stores' top rows as one: summed by group (saturating, as the stores' sums are),
/// largest first by `measure` (ties in group order), at most `limit`.
pub fn merge_top(parts: Vec<Vec<TopRow>>, measure: Measure, limit: usize) -> Vec<TopRow> {
    let mut groups: BTreeMap<String, TopRow> = BTreeMap::new();
    for row in parts.into_iter().flatten() {
        let key = group_key(&row.group);
        match groups.get_mut(&key) {
            Some(sum) => {
                sum.bytes = sum.bytes.saturating_add(row.bytes);
                sum.packets = sum.packets.saturating_add(row.packets);
                sum.flows = sum.flows.saturating_add(row.flows);
            }
            None => {
                groups.insert(key, row);
            }
        }
    }
    let of = |r: &TopRow| match measure {
        Measure::Bytes => r.bytes,
        Measure::Packets => r.packets,
        Measure::Flows => r.flows,
    };
    let mut rows: Vec<TopRow> = groups.into_values().collect();
    // Stable: equal totals stay in group order.
    rows.sort_by_key(|r| std::cmp::Reverse(of(r)));
    rows.truncate(limit);
    rows
}

/// The stores' rate rows as one: summed by (bucket, group), per-second rates over `step_ms`,
/// at most `limit` groups per bucket (largest by bytes), ordered by bucket.
pub fn merge_rate(parts: Vec<Vec<RateRow>>, step_ms: i64, limit: usize) -> Vec<RateRow> {
    let mut buckets: BTreeMap<i64, BTreeMap<String, RateRow>> = BTreeMap::new();
    for row in parts.into_iter().flatten() {
        let key = group_key(&row.group);
        let bucket = buckets.entry(row.bucket_ms).or_default();
        match bucket.get_mut(&key) {
            Some(sum) => {
                sum.bytes = sum.bytes.saturating_add(row.bytes);
                sum.packets = sum.packets.saturating_add(row.packets);
                sum.flows = sum.flows.saturating_add(row.flows);
            }
            None => {
                bucket.insert(key, row);
            }
        }
    }
    let seconds = (step_ms.max(1) as f64) / 1000.0;
    let mut out = Vec::new();
    for (_, groups) in buckets {
        let mut rows: Vec<RateRow> = groups.into_values().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.bytes));
        rows.truncate(limit);
        for mut r in rows {
            r.bytes_per_second = r.bytes as f64 / seconds;
            r.packets_per_second = r.packets as f64 / seconds;
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(exporter: &str, bytes: u64, flows: u64) -> TopRow {
        let mut group = serde_json::Map::new();
        group.insert("exporter".into(), exporter.into());
        TopRow {
            group,
            bytes,
            packets: 1,
            flows,
        }
    }

    #[test]
    fn top_rows_of_several_stores_sum_by_group_and_rank_again() {
        let a = vec![top("192.0.2.1", 100, 1), top("192.0.2.2", 50, 5)];
        let b = vec![top("192.0.2.2", 70, 2), top("192.0.2.3", 10, 9)];
        let merged = merge_top(vec![a.clone(), b.clone()], Measure::Bytes, 10);
        assert_eq!(
            merged,
            vec![
                top("192.0.2.2", 120, 7),
                top("192.0.2.1", 100, 1),
                top("192.0.2.3", 10, 9)
            ]
            .into_iter()
            .map(|mut r| {
                r.packets = if r.group["exporter"] == "192.0.2.2" {
                    2
                } else {
                    1
                };
                r
            })
            .collect::<Vec<_>>()
        );
        // One interface, named by one store's inventory and not the other's: one row.
        let named = |name: &str, bytes| {
            let mut r = top("192.0.2.9", bytes, 1);
            r.group.insert("in_if".into(), 3.into());
            r.group.insert("in_if_name".into(), name.into());
            r
        };
        let one = merge_top(
            vec![vec![named("eth3", 5)], vec![named("", 7)]],
            Measure::Bytes,
            9,
        );
        assert_eq!((one.len(), one[0].bytes), (1, 12));
        let max = merge_top(
            vec![vec![top("x", u64::MAX, 1)], vec![top("x", 9, 1)]],
            Measure::Bytes,
            1,
        );
        assert_eq!(max[0].bytes, u64::MAX, "saturated, as the stores' sums");
        let by_flows = merge_top(vec![a, b], Measure::Flows, 1);
        assert_eq!(by_flows.len(), 1);
        assert_eq!(by_flows[0].group["exporter"], "192.0.2.3");
    }

    #[test]
    fn rate_rows_sum_per_bucket_and_group_with_rates_over_the_step() {
        let row = |bucket_ms: i64, e: &str, bytes: u64| RateRow {
            bucket_ms,
            group: top(e, 0, 0).group,
            bytes,
            packets: 2,
            flows: 1,
            bytes_per_second: 0.0,
            packets_per_second: 0.0,
        };
        let merged = merge_rate(
            vec![
                vec![row(0, "a", 600), row(60_000, "a", 60)],
                vec![row(0, "a", 600), row(0, "b", 6000)],
            ],
            60_000,
            1,
        );
        assert_eq!(merged.len(), 2, "one group per bucket: {merged:?}");
        assert_eq!(
            (merged[0].group["exporter"].as_str(), merged[0].bytes),
            (Some("b"), 6000)
        );
        assert_eq!(merged[0].bytes_per_second, 100.0);
        assert_eq!((merged[1].bucket_ms, merged[1].bytes), (60_000, 60));
    }

    #[test]
    fn the_peer_token_is_a_long_secret_and_peers_are_urls() {
        let token = "x".repeat(32);
        assert!(Peers::new(&["http://store-1:8080".into()], "short", "s0").is_err());
        assert!(Peers::new(&["store-1:8080".into()], &token, "s0").is_err());
        let peers = Peers::new(&["http://store-1:8080/".into()], &token, "s0").unwrap();
        assert!(peers.accepts(&token));
        assert!(!peers.accepts(&"y".repeat(32)));
    }
}
