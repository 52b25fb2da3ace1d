//! Flow analysis in the runtime: listeners, enrichment, the flow store and its queries, the
//! exports. The decoders themselves live in the `sotp-flow` crate (re-exported here), which
//! has no dependency on the engine or the store.
//!
//! ```text
//! listener (UDP, recvmmsg) -> sotp_flow::FlowDecoder -> enrich -> store -> query API
//!                                                              \-> sinks (QuestDB, Loki)
//! ```

pub mod config;
pub mod enrich;
pub mod listener;
pub mod query;
pub mod rawlog;
pub mod rollup;
pub mod service;
pub mod sink;
pub mod store;

pub use sotp_flow::*;
