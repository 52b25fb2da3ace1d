//! The flow bus: how several `sotp` processes share the flow path through Kafka
//! (docs/SCALE.md, issue #20). In — an inlet's enriched flows; out — Kafka messages a store
//! (or any reader of goflow2's protobuf flows) consumes.
//!
//! `schema.rs`: the versioned encoding on the bus (protobuf in goflow2's numbering, batches
//! of length-delimited flows, a `sotp-schema` header). `publish.rs`: an inlet's producer
//! (idempotent, `acks=all`) with its bounded disk spool for when the brokers are away.
//! `consume.rs`: a store's consumer-group member, offsets committed after the rows.

pub mod consume;
pub mod counters;
pub mod peers;
pub mod publish;
pub mod schema;
pub mod templates;
pub mod topics;

use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[runtime.flows.bus]`: this node's part in a scaled-out flow path. Unset, one process
/// receives, decodes and stores (the default).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `inlet`: listeners, decoders and enrichment as usual, then flows published to Kafka
    /// instead of stored. `store`: a member of the consumer group `group`, storing what it
    /// reads.
    pub role: BusRole,
    /// Kafka's bootstrap servers, `host:port,...`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// A store's consumer group.
    #[serde(default = "default_group")]
    pub group: String,
    /// This node's name in batch ids (default: the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The disk spool for batches the brokers cannot take (`<data_dir>/bus-spool`).
    #[serde(default = "default_spool_max")]
    pub spool_max: ByteSize,
    /// How long a batch may wait for the brokers before it is spooled.
    #[serde(default = "default_message_timeout")]
    pub message_timeout: HumanDuration,
    /// A store's fellow stores (their API's base URLs): flow queries to this store answer for
    /// the whole store tier (`peers.rs`). A URL whose host is this node's name (or starts
    /// with `<name>.`) is this store itself and skipped, so every store can share one list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// The secret the stores share to ask each other (32+ characters; with `peers`).
    #[serde(default, skip_serializing)]
    pub peer_token: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusRole {
    Inlet,
    Store,
}

fn default_topic() -> String {
    "sotp-flows".into()
}
fn default_group() -> String {
    "sotp-store".into()
}
fn default_spool_max() -> ByteSize {
    ByteSize::mib(1024)
}
fn default_message_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl BusConfig {
    /// The fellow stores, if this store has any.
    pub fn peers(&self) -> Result<Option<peers::Peers>, String> {
        if self.peers.is_empty() {
            return Ok(None);
        }
        if self.role != BusRole::Store {
            return Err("runtime.flows.bus.peers: only a store asks other stores".into());
        }
        let token = self
            .peer_token
            .as_deref()
            .ok_or("runtime.flows.bus.peers needs peer_token (a secret every store shares)")?;
        // One config serves every store: each skips itself (its name is its host name).
        let me = self.node_name();
        let mut others = Vec::new();
        for url in &self.peers {
            let (host, _, _) = crate::outbound::target(url)
                .map_err(|e| format!("runtime.flows.bus.peers: {e}"))?;
            if host != me && !host.starts_with(&format!("{me}.")) {
                others.push(url.clone());
            }
        }
        peers::Peers::new(&others, token, &me).map(Some)
    }

    /// The node's name: `name`, else the host name.
    pub fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "inlet".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_skips_itself_in_the_shared_peer_list() {
        let config: BusConfig = toml::from_str(
            r#"
            role = "store"
            brokers = "k:9092"
            name = "sotp-store-1"
            peers = ["http://sotp-store-0.sotp-store:8787", "http://sotp-store-1.sotp-store:8787"]
            peer_token = "0123456789abcdef0123456789abcdef"
            "#,
        )
        .unwrap();
        let peers = config.peers().unwrap().unwrap();
        assert_eq!(peers.urls(), ["http://sotp-store-0.sotp-store:8787"]);
        let inlet = BusConfig {
            role: BusRole::Inlet,
            ..config.clone()
        };
        assert!(inlet.peers().err().unwrap().contains("only a store"));
        let no_token = BusConfig {
            peer_token: None,
            ..config
        };
        assert!(no_token.peers().err().unwrap().contains("peer_token"));
    }
}
