//! SOTP's host library: the component engine, host capabilities, stores and tenancy.
//!
//! Map (see docs/ARCHITECTURE.md): `runtime` is the front door the API calls; `component`
//! runs one component (queue, schedule, hot swap); `instance` runs one version's instance
//! and names its traps; `host` implements the WIT interfaces, one file each; `engine` owns
//! Wasmtime and the artifact cache; `telemetry` (DuckDB) and `state` (SQLite) are the stores.

pub mod aws;
pub mod backups;
pub mod budget;
pub mod bus;
pub mod compliance;
pub mod component;
pub mod config;
pub mod correlation;
pub mod crypto;
pub mod datadir;
pub mod egress;
pub mod engine;
pub mod error;
pub mod flow;
pub mod grants;
pub mod host;
pub mod instance;
pub mod inventory;
pub mod logql;
pub mod manifest;
pub mod metrics;
pub mod mqtt;
pub mod native;
pub mod outbound;
pub mod platform;
pub mod promql;
pub mod runtime;
pub mod secret_providers;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod tokens;
pub mod traces;
pub mod units;
pub mod wasm_store;

pub use config::RuntimeConfig;
pub use error::RuntimeError;
pub use runtime::{Principal, Runtime, TenantSpec, TokenRequest};
pub use tokens::{Scope, Scopes};

/// Cap glibc's malloc arenas; call first thing in `main`, before any thread starts. glibc
/// gives threads that contend for the heap arenas of their own (up to 8 per core) and does
/// not hand memory freed in one arena to threads of another. DuckDB's worker threads take
/// turns writing the flow rollups each minute, so with the default the flow collector's heap
/// kept growing (+7.5 MiB over minutes 2–10 of a steady 50 k flows/s; two arenas: +5.9; one:
/// +3.1, then flat from minute 4 — docs/FLOWS.md, "Memory"). Small allocations go through
/// glibc's per-thread caches without the arena lock, and the flow path allocates nothing per
/// record, so one arena costs no measurable throughput (the flow benchmark runs with it).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// glibc malloc arenas for the whole process ([`limit_malloc_arenas`]).
pub const MALLOC_ARENAS: i32 = 1;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
