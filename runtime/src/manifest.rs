//! The manifest that travels with every component upload: identity, world, schedule, limits,
//! grants and free-form config.
//!
//! A manifest is the component's whole claim on the host: nothing it does not list here can
//! be touched. Parsing goes through `serde_path_to_error` so a mistake is reported with the
//! dotted key that caused it (`limits.memory: ...`), which is what a user fixing a TOML file
//! needs.

use crate::grants::{validate_secret_name, validate_topic_filter};
use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The worlds a component can target. The world decides which exports the host calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Collector,
    ComplianceRule,
    CorrelationPolicy,
}

impl World {
    pub const ALL: [World; 3] = [
        World::Collector,
        World::ComplianceRule,
        World::CorrelationPolicy,
    ];

    /// The fully qualified WIT world this host serves for this name.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Collector => "sotp:telemetry/collector@0.1.0",
            World::ComplianceRule => "sotp:telemetry/compliance-rule@0.1.0",
            World::CorrelationPolicy => "sotp:telemetry/correlation-policy@0.1.0",
        }
    }

    /// The name a manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            World::Collector => "collector",
            World::ComplianceRule => "compliance-rule",
            World::CorrelationPolicy => "correlation-policy",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique per tenant: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// The author's version label ("1.2.0", "v2"); the host also numbers each upload.
    pub version: String,
    pub world: World,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    /// Handed to the component's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Interval between ticks, e.g. "10s".
    pub every: HumanDuration,
    /// Ticks start at a random offset up to this much into the interval, chosen once per
    /// activation, so many components (probes of one target) do not tick in step. At most
    /// `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
}

/// When a collector ticks: every `every`, offset by up to `jitter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickPlan {
    pub every: Duration,
    pub jitter: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap of one instance.
    #[serde(default = "Limits::default_memory")]
    pub memory: ByteSize,
    /// CPU time one call (init, on-tick, on-message) may spend in guest code, in milliseconds.
    /// Time spent waiting in host calls does not count.
    #[serde(default = "Limits::default_cpu_ms")]
    pub cpu_ms: u64,
    /// Samples plus log records one call may emit.
    #[serde(default = "Limits::default_max_emit")]
    pub max_emit_per_call: u32,
    /// What one call may hand the host in all: emitted samples and records (metric, labels,
    /// messages) and the arguments of every host call, counted in bytes.
    #[serde(default = "Limits::default_max_emit_bytes")]
    pub max_emit_bytes: ByteSize,
    /// Wall-clock time one call may take, host calls included (waiting on a slow device
    /// counts here, not against `cpu_ms`). A host call that would outlast it is cut short.
    #[serde(default = "Limits::default_wall_ms")]
    pub wall_ms: u64,
}

impl Limits {
    fn default_memory() -> ByteSize {
        ByteSize::mib(32)
    }
    fn default_cpu_ms() -> u64 {
        100
    }
    fn default_max_emit() -> u32 {
        100_000
    }
    fn default_max_emit_bytes() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_wall_ms() -> u64 {
        60_000
    }
    pub fn wall(&self) -> Duration {
        Duration::from_millis(self.wall_ms)
    }
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Self::default_memory(),
            cpu_ms: Self::default_cpu_ms(),
            max_emit_per_call: Self::default_max_emit(),
            max_emit_bytes: Self::default_max_emit_bytes(),
            wall_ms: Self::default_wall_ms(),
        }
    }
}

/// What the component may touch. Empty lists grant nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// MQTT topic filters the component may subscribe to (`home/+/temperature`, `sensors/#`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// MQTT topic filters the component may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Names of tenant secrets the component may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Inventory devices it may reach (SNMP, SSH): names, `tag:x`, `site:x`, `role:x`, or
    /// address ranges like `10.0.0.0/8`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// A private directory of this size, kept across restarts and versions, preopened as
    /// `/scratch` (see `host::scratch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<ByteSize>,
    /// URLs it may request over `http`: `scheme://host[:port]` patterns (see
    /// `grants::HttpGrant`); addresses outside the public Internet only when named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// The tenant's file_sd directory (`<data_dir>/file_sd/<tenant>/`, Prometheus target
    /// group files), mounted read-only as `/file_sd`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_sd: bool,
}

impl Grants {
    /// `grants.http` parsed (validated when the manifest was; a bad entry is skipped).
    pub fn http_grants(&self) -> Vec<crate::grants::HttpGrant> {
        self.http
            .iter()
            .filter_map(|g| crate::grants::HttpGrant::parse(g).ok())
            .collect()
    }
}

/// A manifest that failed to parse or validate, with the dotted key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ManifestError {
    pub key: String,
    pub message: String,
}

impl ManifestError {
    fn at(key: &str, message: impl Into<String>) -> Self {
        ManifestError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Bounds the host enforces on every manifest (from the runtime config).
#[derive(Clone, Debug)]
pub struct ManifestBounds {
    pub max_memory: ByteSize,
    pub max_cpu_ms: u64,
    pub min_tick: Duration,
    pub max_emit_per_call: u32,
    pub max_emit_bytes: ByteSize,
    pub max_wall_ms: u64,
    pub max_scratch: ByteSize,
}

impl Default for ManifestBounds {
    fn default() -> Self {
        ManifestBounds {
            max_memory: ByteSize::mib(512),
            max_cpu_ms: 10_000,
            min_tick: Duration::from_millis(10),
            max_emit_per_call: 1_000_000,
            max_emit_bytes: ByteSize::mib(256),
            max_wall_ms: 600_000,
            max_scratch: ByteSize::mib(64),
        }
    }
}

impl Manifest {
    pub fn parse(text: &str, bounds: &ManifestBounds) -> Result<Manifest, ManifestError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ManifestError::at("(toml)", e.message().to_string()))?;
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            // A missing field is reported at its parent; name the field itself.
            let key = match missing_field(&message) {
                Some(field) if path == "." || path.is_empty() => field.to_string(),
                Some(field) => format!("{path}.{field}"),
                None if path == "." || path.is_empty() => "(manifest)".to_string(),
                None => path,
            };
            ManifestError { key, message }
        })?;
        manifest.validate(bounds)?;
        Ok(manifest)
    }

    fn validate(&self, bounds: &ManifestBounds) -> Result<(), ManifestError> {
        if !is_component_name(&self.name) {
            return Err(ManifestError::at(
                "name",
                format!(
                    "`{}` is not a valid name: use 1-63 lowercase letters, digits and `-`, starting with a letter",
                    self.name
                ),
            ));
        }
        if self.version.trim().is_empty() || self.version.len() > 64 {
            return Err(ManifestError::at("version", "must be 1-64 characters"));
        }
        if let Some(schedule) = &self.schedule
            && schedule.every.0 < bounds.min_tick
        {
            return Err(ManifestError::at(
                "schedule.every",
                format!(
                    "{} is shorter than the host's minimum of {}",
                    schedule.every,
                    HumanDuration(bounds.min_tick)
                ),
            ));
        }
        if let Some(schedule) = &self.schedule
            && schedule.jitter.is_some_and(|j| j.0 > schedule.every.0)
        {
            return Err(ManifestError::at(
                "schedule.jitter",
                "must not be longer than schedule.every",
            ));
        }
        let limits = &self.limits;
        if limits.memory < ByteSize::mib(1) || limits.memory > bounds.max_memory {
            return Err(ManifestError::at(
                "limits.memory",
                format!(
                    "{} is outside the allowed range 1MiB..={}",
                    limits.memory, bounds.max_memory
                ),
            ));
        }
        if limits.cpu_ms == 0 || limits.cpu_ms > bounds.max_cpu_ms {
            return Err(ManifestError::at(
                "limits.cpu_ms",
                format!(
                    "{} is outside the allowed range 1..={}",
                    limits.cpu_ms, bounds.max_cpu_ms
                ),
            ));
        }
        if limits.max_emit_per_call == 0 || limits.max_emit_per_call > bounds.max_emit_per_call {
            return Err(ManifestError::at(
                "limits.max_emit_per_call",
                format!(
                    "{} is outside the allowed range 1..={}",
                    limits.max_emit_per_call, bounds.max_emit_per_call
                ),
            ));
        }
        if limits.max_emit_bytes < ByteSize::kib(64)
            || limits.max_emit_bytes > bounds.max_emit_bytes
        {
            return Err(ManifestError::at(
                "limits.max_emit_bytes",
                format!(
                    "{} is outside the allowed range 64KiB..={}",
                    limits.max_emit_bytes, bounds.max_emit_bytes
                ),
            ));
        }
        if limits.wall_ms < limits.cpu_ms || limits.wall_ms > bounds.max_wall_ms {
            return Err(ManifestError::at(
                "limits.wall_ms",
                format!(
                    "{} is outside the allowed range limits.cpu_ms ({})..={}",
                    limits.wall_ms, limits.cpu_ms, bounds.max_wall_ms
                ),
            ));
        }
        for (i, filter) in self.grants.topics.iter().enumerate() {
            validate_topic_filter(filter)
                .map_err(|m| ManifestError::at(&format!("grants.topics[{i}]"), m))?;
        }
        for (i, filter) in self.grants.publish.iter().enumerate() {
            validate_topic_filter(filter)
                .map_err(|m| ManifestError::at(&format!("grants.publish[{i}]"), m))?;
        }
        for (i, grant) in self.grants.devices.iter().enumerate() {
            crate::inventory::validate_device_grant(grant)
                .map_err(|m| ManifestError::at(&format!("grants.devices[{i}]"), m))?;
        }
        if let Some(size) = self.grants.scratch
            && (size < ByteSize::kib(4) || size > bounds.max_scratch)
        {
            return Err(ManifestError::at(
                "grants.scratch",
                format!(
                    "{size} is outside the allowed range 4KiB..={}",
                    bounds.max_scratch
                ),
            ));
        }
        for (i, grant) in self.grants.http.iter().enumerate() {
            crate::grants::HttpGrant::parse(grant)
                .map_err(|m| ManifestError::at(&format!("grants.http[{i}]"), m))?;
        }
        for (i, name) in self.grants.secrets.iter().enumerate() {
            validate_secret_name(name)
                .map_err(|m| ManifestError::at(&format!("grants.secrets[{i}]"), m))?;
        }
        Ok(())
    }

    /// The `[config]` table as the JSON text handed to `init`.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn tick_plan(&self) -> Option<TickPlan> {
        self.schedule.as_ref().map(|s| TickPlan {
            every: s.every.0,
            jitter: s.jitter.map(|j| j.0).unwrap_or_default(),
        })
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Component and tenant names share one shape so they are safe in paths, labels and URLs.
pub fn is_component_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, &ManifestBounds::default())
    }

    const GOOD: &str = r#"
name = "tick-counter"
version = "1.0.0"
world = "collector"
[schedule]
every = "1s"
[limits]
memory = "16MiB"
cpu_ms = 50
[grants]
topics = ["home/+/temperature"]
secrets = ["api-token"]
[config]
marker = "v1"
"#;

    #[test]
    fn a_complete_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "tick-counter");
        assert_eq!(m.limits.memory, ByteSize::mib(16));
        assert_eq!(m.tick_plan().map(|p| p.every), Some(Duration::from_secs(1)));
        assert_eq!(m.config_json(), r#"{"marker":"v1"}"#);
    }

    #[test]
    fn a_missing_key_is_named() {
        let err = parse("name = \"x\"\nworld = \"collector\"\n").unwrap_err();
        assert_eq!(err.key, "version", "{err}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = parse(&GOOD.replace("cpu_ms = 50", "cpu_ms = 50\ncpu = 3")).unwrap_err();
        assert_eq!(err.key, "limits.cpu", "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse(&GOOD.replace("\"16MiB\"", "\"16 parsecs\"")).unwrap_err();
        assert_eq!(err.key, "limits.memory", "{err}");
        let err = parse(&GOOD.replace("\"16MiB\"", "\"4GiB\"")).unwrap_err();
        assert_eq!(err.key, "limits.memory", "{err}");
        let err = parse(&GOOD.replace("\"collector\"", "\"toaster\"")).unwrap_err();
        assert_eq!(err.key, "world", "{err}");
        let err = parse(&GOOD.replace("home/+/temperature", "home/#/x")).unwrap_err();
        assert_eq!(err.key, "grants.topics[0]", "{err}");
        let err = parse(&GOOD.replace("tick-counter", "Tick Counter")).unwrap_err();
        assert_eq!(err.key, "name", "{err}");
        let err = parse(&GOOD.replace("\"1s\"", "\"1ms\"")).unwrap_err();
        assert_eq!(err.key, "schedule.every", "{err}");
    }

    #[test]
    fn per_call_budgets_are_bounded() {
        let with =
            |extra: &str| parse(&GOOD.replace("cpu_ms = 50", &format!("cpu_ms = 50\n{extra}")));
        let err = with("max_emit_per_call = 4000000000").unwrap_err();
        assert_eq!(err.key, "limits.max_emit_per_call", "{err}");
        let err = with("max_emit_bytes = \"4GiB\"").unwrap_err();
        assert_eq!(err.key, "limits.max_emit_bytes", "{err}");
        let err = with("wall_ms = 10").unwrap_err();
        assert_eq!(err.key, "limits.wall_ms", "{err}");
        assert!(err.message.contains("cpu_ms"), "{err}");
        let err = with("wall_ms = 86400000").unwrap_err();
        assert_eq!(err.key, "limits.wall_ms", "{err}");
        let ok = with("wall_ms = 5000\nmax_emit_bytes = \"1MiB\"").unwrap();
        assert_eq!(ok.limits.wall(), Duration::from_secs(5));
        let defaults = parse(GOOD).unwrap().limits;
        assert_eq!(
            (defaults.max_emit_bytes, defaults.wall_ms),
            (ByteSize::mib(16), 60_000)
        );
    }

    #[test]
    fn broken_toml_is_reported() {
        let err = parse("name = ").unwrap_err();
        assert_eq!(err.key, "(toml)");
    }
}
