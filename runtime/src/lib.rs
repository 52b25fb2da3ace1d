//! SOTP's host library: the component engine, host capabilities, stores and tenancy.
//!
//! Map (see docs/ARCHITECTURE.md): `runtime` is the front door the API calls; `component`
//! runs one component (queue, schedule, hot swap); `instance` runs one version's instance
//! and names its traps; `host` implements the WIT interfaces, one file each; `engine` owns
//! Wasmtime and the artifact cache; `telemetry` (DuckDB) and `state` (SQLite) are the stores.

pub mod backups;
pub mod component;
pub mod config;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod flow;
pub mod grants;
pub mod host;
pub mod instance;
pub mod inventory;
pub mod manifest;
pub mod metrics;
pub mod mqtt;
pub mod native;
pub mod runtime;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod units;

pub use config::RuntimeConfig;
pub use error::RuntimeError;
pub use runtime::{Principal, Runtime};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Write a file readable only by its owner (tokens, keys), atomically.
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
