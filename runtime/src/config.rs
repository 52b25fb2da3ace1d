//! Runtime configuration: where data lives and the limits the host enforces. Every field has
//! an embedded default, so `sotp run` with no config file works.

use crate::manifest::ManifestBounds;
use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Everything SOTP keeps: state.sqlite, telemetry.duckdb, wasm/, cache/, admin.token.
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub limits: LimitsConfig,
    /// Quotas given to a tenant created without explicit ones.
    pub tenant_defaults: TenantQuotas,
    /// Flow collection (NetFlow, IPFIX, sFlow); off until a listen address is set.
    pub flows: crate::flow::config::FlowConfig,
    /// Where the key sealing tenants' secrets comes from (see `crypto`).
    pub secrets: crate::crypto::SecretsConfig,
    /// Which addresses tenants' components may make SOTP connect to (see `egress`).
    pub egress: crate::egress::EgressConfig,
    /// What a tenant's golden-config compliance may hold (see `compliance`).
    pub compliance: crate::compliance::ComplianceConfig,
    /// What a tenant's alerts may hold (see `correlation`).
    pub correlation: crate::correlation::CorrelationConfig,
    /// What a tenant's spans may cost (see `traces`).
    pub traces: crate::traces::TracesConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Concurrent component instances the pooling allocator reserves slots for.
    pub pool_instances: u32,
    /// How often CPU deadlines are checked.
    pub epoch_tick: HumanDuration,
    /// Use on-demand allocation even when the pool could be reserved.
    pub force_on_demand: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest `limits.memory` a manifest may ask for.
    pub max_component_memory: ByteSize,
    /// The largest `limits.cpu_ms` a manifest may ask for.
    pub max_cpu_ms: u64,
    /// The shortest `schedule.every` a manifest may ask for.
    pub min_tick: HumanDuration,
    /// The largest component upload accepted.
    pub max_upload: ByteSize,
    /// Points (or buckets) one query may return.
    pub max_query_points: usize,
    /// Raw points one PromQL query (`/api/v1/query*`) may read: 16 bytes each in memory.
    pub max_promql_points: usize,
    /// The largest `limits.max_emit_per_call` a manifest may ask for.
    pub max_emit_per_call: u32,
    /// The largest `limits.max_emit_bytes` a manifest may ask for.
    pub max_emit_bytes: ByteSize,
    /// The largest `limits.wall_ms` a manifest may ask for.
    pub max_wall_ms: u64,
    /// Lines a component may add to its log per second (guest `log`, stdout, stderr
    /// together); more are dropped and counted.
    pub log_lines_per_second: u32,
    /// ... with bursts of up to this many lines.
    pub log_burst: u32,
    /// The largest `grants.scratch` a manifest may ask for.
    pub max_scratch: ByteSize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuotas {
    pub max_components: u32,
    /// Sum of `limits.memory` over the tenant's active components.
    pub max_memory: ByteSize,
    /// Distinct series (metric + label set) the tenant's components may create.
    pub max_series: u64,
    /// Live component instances (slots of the shared instance pool) at once.
    pub max_instances: u32,
    /// Calls of the tenant's components running at once (each holds a thread while it
    /// runs or waits on a device); more wait their turn.
    pub max_concurrent_calls: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: default_data_dir(),
            engine: EngineConfig::default(),
            limits: LimitsConfig::default(),
            tenant_defaults: TenantQuotas::default(),
            flows: Default::default(),
            secrets: Default::default(),
            egress: Default::default(),
            compliance: Default::default(),
            correlation: Default::default(),
            traces: Default::default(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pool_instances: 1000,
            epoch_tick: HumanDuration(Duration::from_millis(10)),
            force_on_demand: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_component_memory: ByteSize::mib(256),
            max_cpu_ms: 10_000,
            min_tick: HumanDuration(Duration::from_millis(10)),
            max_upload: ByteSize::mib(32),
            max_query_points: 100_000,
            max_promql_points: 8_000_000,
            max_emit_per_call: 100_000,
            max_emit_bytes: ByteSize::mib(64),
            max_wall_ms: 600_000,
            log_lines_per_second: 100,
            log_burst: 1000,
            max_scratch: ByteSize::mib(16),
        }
    }
}

impl Default for TenantQuotas {
    fn default() -> Self {
        TenantQuotas {
            max_components: 50,
            max_memory: ByteSize::mib(1024),
            max_series: 100_000,
            max_instances: 100,
            max_concurrent_calls: 4,
        }
    }
}

impl LimitsConfig {
    pub fn manifest_bounds(&self) -> ManifestBounds {
        ManifestBounds {
            max_memory: self.max_component_memory,
            max_cpu_ms: self.max_cpu_ms,
            min_tick: self.min_tick.0,
            max_emit_per_call: self.max_emit_per_call,
            max_emit_bytes: self.max_emit_bytes,
            max_wall_ms: self.max_wall_ms,
            max_scratch: self.max_scratch,
        }
    }
}

/// `$XDG_DATA_HOME/sotp`, else `~/.local/share/sotp`, else `./sotp-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("sotp");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/sotp");
    }
    PathBuf::from("sotp-data")
}
