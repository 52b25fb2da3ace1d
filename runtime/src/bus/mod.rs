//! The flow bus: how several `sotp` processes share the flow path through Kafka
//! (docs/SCALE.md, issue #20). In — an inlet's enriched flows; out — Kafka messages a store
//! (or any reader of goflow2's protobuf flows) consumes.
//!
//! `schema.rs`: the versioned encoding on the bus (protobuf in goflow2's numbering, batches
//! of length-delimited flows, a `sotp-schema` header). `publish.rs`: an inlet's producer
//! (idempotent, `acks=all`) with its bounded disk spool for when the brokers are away. The
//! store's consumer and the roles of `sotp run` build on them.

pub mod publish;
pub mod schema;
