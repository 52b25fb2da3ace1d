//! Host side of the WIT contract: the generated bindings, the per-instance state (`HostState`)
//! and one module per imported interface, each a flat `impl <interface>::Host for HostState`
//! that checks grants and limits on its first lines (the shape of wasmtime-wasi's `p2/host`).

mod aws;
mod backups;
mod deadline;
mod emit;
mod exposition;
mod http;
mod inventory;
mod log;
mod mqtt;
mod scrape;
pub(crate) mod scratch;
mod secrets;
mod snmp;
mod ssh;
pub(crate) mod stdio;
mod topology;

pub use stdio::GuestOutput;

use crate::budget::TenantBudget;
use crate::inventory::Device;
use crate::manifest::Manifest;
use crate::stats::ComponentStats;
use crate::telemetry::{LogRow, Samples, TelemetryStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "collector",
});

/// The `compliance-rule` world: its own bindings, sharing the interfaces (types, log,
/// inventory) and so their host implementations with the collector's.
pub mod rule_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "compliance-rule",
        with: {
            "sotp:telemetry/types": super::sotp::telemetry::types,
            "sotp:telemetry/log": super::sotp::telemetry::log,
            "sotp:telemetry/inventory": super::sotp::telemetry::inventory,
        },
    });
}

/// The `correlation-policy` world, sharing `types` and `log` with the others.
pub mod policy_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "correlation-policy",
        with: {
            "sotp:telemetry/types": super::sotp::telemetry::types,
            "sotp:telemetry/log": super::sotp::telemetry::log,
        },
    });
}

pub use policy_world::sotp::telemetry::correlation_types::{
    Alert as WitAlert, AlertStatus as WitAlertStatus, Annotation as WitAnnotation,
    Decision as WitDecision, HoldAlert as WitHold, Incident as WitIncident,
    OpenIncident as WitOpen, Retitle as WitRetitle, SuppressAlert as WitSuppress,
};
pub use policy_world::sotp::telemetry::topology::{LinkInfo as WitLinkInfo, NodeInfo as WitNode};
pub use policy_world::{CorrelationPolicy, CorrelationPolicyPre};

/// What a correlation policy reads through `topology` during one `decide`: a snapshot the
/// correlation engine builds for the batch (the inventory's dependencies, what is firing,
/// the open incidents). A trait so the host does not depend on the engine that calls it.
pub trait TopologyView: Send + Sync {
    fn node(&self, device: &str) -> Option<WitNode>;
    fn children(&self, device: &str) -> Vec<String>;
    fn links(&self, device: &str) -> Vec<WitLinkInfo>;
    fn firing(&self, device: &str) -> Vec<WitAlert>;
    fn incidents(&self) -> Vec<WitIncident>;
}

pub use rule_world::sotp::telemetry::compliance_types::{
    Device as WitRuleDevice, Finding as WitFinding, Status as WitFindingStatus,
};
pub use rule_world::{ComplianceRule, ComplianceRulePre};

pub use sotp::telemetry::types::{
    Error as WitError, Label as WitLabel, Level as WitLevel, LogRecord as WitLogRecord,
    Sample as WitSample, Tick as WitTick,
};

/// What host capabilities need from the rest of SOTP: secrets, the inventory, pinned SSH
/// host keys. A trait so the engine can run without the stores (benchmarks).
pub trait HostServices: Send + Sync {
    /// `Ok(None)` when the tenant has no secret of that name.
    fn read_secret(&self, tenant: &str, name: &str) -> Result<Option<String>, String>;

    fn device(&self, _tenant: &str, _name: &str) -> Result<Option<Device>, String> {
        Ok(None)
    }

    fn devices(&self, _tenant: &str) -> Result<Vec<Device>, String> {
        Ok(Vec::new())
    }

    fn set_interface_names(
        &self,
        _tenant: &str,
        _device: &str,
        _names: &[(u32, String)],
    ) -> Result<(), String> {
        Err("no inventory".into())
    }

    fn ssh_host_key(&self, _tenant: &str, _device: &str) -> Result<Option<String>, String> {
        Ok(None)
    }

    fn pin_ssh_host_key(&self, _tenant: &str, _device: &str, _key: &str) -> Result<(), String> {
        Err("no inventory".into())
    }

    /// The address to connect to for `host:port` on a tenant's behalf: resolved, and
    /// checked against the operator's egress policy (`denied` if it refuses it). Connect to
    /// this address, never to the name again.
    fn connect_address(&self, host: &str, port: u16) -> Result<std::net::SocketAddr, WitError> {
        crate::egress::EgressPolicy::default()
            .resolve(host, port)
            .map_err(|e| match e {
                crate::egress::EgressError::Refused(r) => WitError::Denied(r.to_string()),
                other => WitError::Unavailable(other.to_string()),
            })
    }

    fn store_backup(
        &self,
        _tenant: &str,
        _device: &str,
        _author: &str,
        _text: &str,
    ) -> Result<crate::backups::Saved, String> {
        Err("no backup repository".into())
    }
}

/// The tenant's MQTT session as the `mqtt` capability uses it. A trait, implemented by the
/// MQTT hub (`crate::mqtt`), so the host capabilities do not depend on the hub, which
/// depends on components, which depend on the host: one direction only.
pub trait Broker: Send + Sync {
    /// Route `filter` to an active component at once (a `subscribe` outside `init`).
    fn add_filter(&self, tenant: &str, component: &str, filter: &str);

    /// Publish at QoS 1 without waiting; `Err` says why not (no broker, queue full).
    fn publish(
        &self,
        tenant: &str,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), String>;
}

/// Where the tenant's file_sd directory appears to a component granted it.
pub const FILE_SD_PATH: &str = "/file_sd";

/// What every instance of one component version shares.
pub struct InstanceEnv {
    pub tenant: String,
    pub component: String,
    pub version: u32,
    pub manifest: Arc<Manifest>,
    pub stats: Arc<ComponentStats>,
    pub services: Arc<dyn HostServices>,
    pub mqtt: Arc<dyn Broker>,
    /// The store samples are committed to: emitting checks the tenant's series quota here.
    pub telemetry: Arc<TelemetryStore>,
    /// The tenant's budget: series quota, instance slots, call slots.
    pub budget: Arc<TenantBudget>,
    /// The component's scratch directory on the host, if its manifest grants one.
    pub scratch_dir: Option<std::path::PathBuf>,
    /// The tenant's file_sd directory, if the manifest grants it (mounted read-only).
    pub file_sd_dir: Option<std::path::PathBuf>,
    /// MQTT filters this version subscribed to (applied when it becomes active).
    pub subscriptions: parking_lot::Mutex<BTreeSet<String>>,
    /// Whether this version is the component's active one.
    pub active: AtomicBool,
}

impl InstanceEnv {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Release);
    }
}

/// Telemetry a call has emitted and not yet committed.
#[derive(Default, Debug)]
pub struct Emitted {
    pub samples: Samples,
    pub logs: Vec<LogRow>,
    /// What holding it costs (series keys, points, log records), for `limits.max_emit_bytes`.
    pub bytes: usize,
}

impl Emitted {
    pub fn len(&self) -> usize {
        self.samples.len() + self.logs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Move `other`'s records after these.
    pub fn append(&mut self, other: Emitted) {
        self.samples.append(other.samples);
        self.logs.extend(other.logs);
        self.bytes += other.bytes;
    }
}

/// Time accounting for one call: guest CPU time (wall time minus time inside host calls)
/// against `limits.cpu_ms`, and wall-clock time, host calls included, against
/// `limits.wall_ms`.
pub struct CallClock {
    pub started: Instant,
    pub in_host: Duration,
    pub limit: Duration,
    pub wall_limit: Duration,
}

impl CallClock {
    pub fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.in_host)
    }

    /// Wall-clock time this call has left.
    pub fn wall_remaining(&self) -> Duration {
        self.wall_limit.saturating_sub(self.started.elapsed())
    }

    pub fn wall_exceeded(&self) -> bool {
        self.started.elapsed() > self.wall_limit
    }
}

/// The memory cap of one store. Refusing a grow with an error (rather than `Ok(false)`)
/// traps at the `memory.grow` itself, so the host can report "memory limit exceeded"
/// instead of whatever the guest's allocator does on failure.
pub struct MemoryCap {
    pub max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the guest asked for {desired} bytes, its limit is {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("CPU deadline exceeded: more than {0:?} of guest CPU time in one call")]
pub struct CpuDeadlineExceeded(pub Duration);

#[derive(Debug, thiserror::Error)]
#[error("wall-clock budget exceeded: the call took more than {0:?}, host calls included")]
pub struct WallClockExceeded(pub Duration);

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.max_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

// WASI's own limits, set here rather than left to wasmtime-wasi's defaults (which suit a
// trusted command-line program, not a tenant's component in a shared process):

/// Host resources (streams, pollables, descriptors) one instance may hold at once;
/// wasmtime's default is a million. A collector needs a handful.
pub const MAX_RESOURCES: usize = 1024;
/// Bytes one `wasi:random` call may ask for (default: 64 MiB).
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// Elements of a guest's function tables.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Bytes a guest may pass into one host call (strings, lists), whatever its
/// `limits.max_emit_bytes` says: wasmtime's "hostcall fuel" (default 128 MiB), which bounds
/// what the host allocates while it lifts the arguments, before any check of ours runs.
pub fn hostcall_fuel(manifest: &Manifest) -> usize {
    (manifest.limits.max_emit_bytes.0 as usize).saturating_add(1 << 20)
}

/// The data of one component instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub memory: MemoryCap,
    pub env: Arc<InstanceEnv>,
    pub out: Emitted,
    pub clock: CallClock,
    /// SNMP sessions by device, kept for the instance's life (v3 engine discovery once).
    pub(crate) snmp_sessions: std::collections::HashMap<String, snmp::Session>,
    /// Hashes of series this call emitted that the store did not know (the series quota
    /// counts each once per call).
    pub(crate) new_series: std::collections::HashSet<u64>,
    /// The quota of the scratch directory, if one is granted.
    pub(crate) scratch: Option<scratch::ScratchQuota>,
    /// What `topology` answers during a correlation policy's `decide`.
    pub(crate) topology: Option<Arc<dyn TopologyView>>,
    /// Cookies `http` responses set during this call (one probe run).
    pub(crate) http_cookies: Option<http::CookieJar>,
}

impl HostState {
    pub fn new(env: Arc<InstanceEnv>, stdout: GuestOutput, stderr: GuestOutput) -> Self {
        // No preopened directories, no network, no inherited environment: the guest's only
        // way out is the SOTP interfaces, each checked against its grants.
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES);
        // The one directory a component may be given: its own scratch space.
        let scratch = match (&env.scratch_dir, env.manifest.grants.scratch) {
            (Some(dir), Some(size)) => {
                // The quota first: the directory is never preopened without one.
                let opened = scratch::ScratchQuota::open(dir, size.0)
                    .map_err(|e| e.to_string())
                    .and_then(|quota| {
                        builder
                            .preopened_dir(
                                dir,
                                scratch::GUEST_PATH,
                                wasmtime_wasi::FsPerms::ReadWrite,
                            )
                            .map(|_| quota)
                            .map_err(|e| e.to_string())
                    });
                match opened {
                    Ok(quota) => Some(quota),
                    Err(e) => {
                        env.stats.log(
                            crate::stats::LogLevel::Error,
                            crate::stats::LogSource::Host,
                            Some(env.version),
                            &format!("the scratch directory is not available: {e}"),
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        // And, read-only, the tenant's file_sd documents (target lists it maintains).
        if let Some(dir) = &env.file_sd_dir
            && let Err(e) =
                builder.preopened_dir(dir, FILE_SD_PATH, wasmtime_wasi::FsPerms::ReadOnly)
        {
            env.stats.log(
                crate::stats::LogLevel::Error,
                crate::stats::LogSource::Host,
                Some(env.version),
                &format!("the file_sd directory is not available: {e}"),
            );
        }
        let wasi = builder.build();
        let memory = MemoryCap {
            max_bytes: env.manifest.limits.memory.0 as usize,
        };
        let limits = &env.manifest.limits;
        let clock = CallClock {
            started: Instant::now(),
            in_host: Duration::ZERO,
            limit: limits.cpu(),
            wall_limit: limits.wall(),
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        HostState {
            wasi,
            table,
            memory,
            env,
            out: Emitted::default(),
            snmp_sessions: Default::default(),
            new_series: Default::default(),
            scratch,
            clock,
            topology: None,
            http_cookies: None,
        }
    }

    /// Count and describe a refused host call; the text is what the guest receives.
    fn deny(&self, reason: String) -> WitError {
        let env = &self.env;
        env.stats
            .denied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        env.stats.log(
            crate::stats::LogLevel::Warn,
            crate::stats::LogSource::Host,
            Some(env.version),
            &format!("denied: {reason}"),
        );
        WitError::Denied(reason)
    }
}

impl HostState {
    /// The named device, if it exists and the grants cover it (a refusal is counted).
    ///
    /// A device the grants do not cover and a device that does not exist get the same
    /// refusal, so a component cannot map the tenant's inventory beyond its grants by
    /// probing names. Only a name granted by name is reported as missing.
    pub(crate) fn granted_device(&mut self, name: &str) -> Result<Device, WitError> {
        let started = Instant::now();
        let found = self.env.services.device(&self.env.tenant, name);
        self.clock.in_host += started.elapsed();
        let grants = &self.env.manifest.grants;
        let refusal = || {
            format!(
                "device `{name}` is not covered by grants.devices {:?}",
                grants.devices
            )
        };
        match found.map_err(WitError::Unavailable)? {
            Some(device) if crate::grants::deny_device(grants, &device).is_none() => Ok(device),
            None if grants.devices.iter().any(|g| g == name) => Err(WitError::Invalid(format!(
                "no device named `{name}` in the inventory"
            ))),
            _ => Err(self.deny(refusal())),
        }
    }
}

impl HostState {
    /// The address to connect to for `host:port`, as the operator's egress policy allows
    /// (a refusal is counted and logged like any other).
    pub(crate) fn egress_address(
        &mut self,
        host: &str,
        port: u16,
    ) -> Result<std::net::SocketAddr, WitError> {
        let started = Instant::now();
        let checked = self.env.services.connect_address(host, port);
        self.clock.in_host += started.elapsed();
        checked.map_err(|e| match e {
            WitError::Denied(reason) => self.deny(reason),
            other => other,
        })
    }
}

impl HostState {
    /// `wasi:filesystem/types` as this instance sees it: wasmtime-wasi's, with the scratch
    /// directory's quota.
    fn scratch_view(&mut self) -> scratch::ScratchView<'_> {
        scratch::ScratchView {
            inner: wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            quota: self.scratch.as_mut(),
        }
    }

    /// `wasi:clocks/monotonic-clock` as this instance sees it: its pollables fire by the end
    /// of the call's wall-clock budget.
    fn deadline_clock(&mut self) -> deadline::DeadlineClockView<'_> {
        deadline::DeadlineClockView {
            remaining: self.clock.wall_remaining(),
            inner: wasmtime_wasi::clocks::WasiClocksCtxView {
                ctx: self.wasi.clocks(),
                table: &mut self.table,
            },
        }
    }

    /// Start a call: the scratch directory's quota is measured again.
    pub(crate) fn begin_call(&mut self) {
        self.clock.started = Instant::now();
        self.clock.in_host = Duration::ZERO;
        self.new_series.clear();
        self.http_cookies = None;
        if let Some(q) = self.scratch.as_mut() {
            q.begin_call();
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl sotp::telemetry::types::Host for HostState {}
impl rule_world::sotp::telemetry::compliance_types::Host for HostState {}

/// The linker every collector is instantiated with: WASI 0.2 (sandboxed by `HostState::new`)
/// plus the SOTP interfaces.
/// WASI 0.2 as every world gets it: the filesystem with the scratch directory's quota
/// (host::scratch) and the monotonic clock with the call's wall-clock budget (host::deadline).
fn wasi_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::sync::filesystem::types::add_to_linker::<
        HostState,
        scratch::ScratchFs,
    >(&mut linker, HostState::scratch_view)?;
    wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<
        HostState,
        deadline::DeadlineClock,
    >(&mut linker, HostState::deadline_clock)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// The collector world's linker: WASI and every collector capability.
pub fn collector_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = wasi_linker(engine)?;
    Collector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The compliance-rule world's linker: WASI, `log` and `inventory` only, so a rule
/// component cannot even link `ssh` or `mqtt`.
pub fn rule_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = wasi_linker(engine)?;
    ComplianceRule::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The `correlation-policy` world's linker: WASI (no sockets, no files), `log`, `topology`.
pub fn policy_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = wasi_linker(engine)?;
    CorrelationPolicy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// One linker per world.
pub struct Linkers {
    pub collector: Linker<HostState>,
    pub rule: Linker<HostState>,
    pub policy: Linker<HostState>,
}

impl Linkers {
    pub fn new(engine: &Engine) -> wasmtime::Result<Linkers> {
        Ok(Linkers {
            collector: collector_linker(engine)?,
            rule: rule_linker(engine)?,
            policy: policy_linker(engine)?,
        })
    }

    pub fn for_world(&self, world: crate::manifest::World) -> &Linker<HostState> {
        match world {
            crate::manifest::World::Collector => &self.collector,
            crate::manifest::World::ComplianceRule => &self.rule,
            crate::manifest::World::CorrelationPolicy => &self.policy,
        }
    }
}

/// A `HostState` outside any engine, for unit tests of host functions.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::manifest::ManifestBounds;
    use crate::stats::LogSource;

    pub struct NoServices;
    impl HostServices for NoServices {
        fn read_secret(&self, _: &str, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
    }

    /// No MQTT broker: publishing fails as it does for a tenant without one.
    pub struct NoBroker;
    impl Broker for NoBroker {
        fn add_filter(&self, _: &str, _: &str, _: &str) {}
        fn publish(&self, _: &str, _: &str, _: Vec<u8>, _: bool) -> Result<(), String> {
            Err("the tenant has no MQTT broker configured".into())
        }
    }

    /// A host state for a component of tenant `acme` with `manifest_extra` appended to a
    /// minimal collector manifest. Keep the directory alive as long as the state.
    pub fn state(
        manifest_extra: &str,
        services: Arc<dyn HostServices>,
    ) -> (tempfile::TempDir, HostState) {
        state_of("collector", manifest_extra, services)
    }

    /// As [`state`], for a component of `world`.
    pub fn state_of(
        world: &str,
        manifest_extra: &str,
        services: Arc<dyn HostServices>,
    ) -> (tempfile::TempDir, HostState) {
        let (dir, env) = env_of(world, manifest_extra, services);
        let out = GuestOutput::new(env.stats.clone(), LogSource::Stdout, 1);
        let err = GuestOutput::new(env.stats.clone(), LogSource::Stderr, 1);
        (dir, HostState::new(env, out, err))
    }

    /// What every instance of such a component shares.
    pub fn env(
        manifest_extra: &str,
        services: Arc<dyn HostServices>,
    ) -> (tempfile::TempDir, Arc<InstanceEnv>) {
        env_of("collector", manifest_extra, services)
    }

    fn env_of(
        world: &str,
        manifest_extra: &str,
        services: Arc<dyn HostServices>,
    ) -> (tempfile::TempDir, Arc<InstanceEnv>) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(crate::telemetry::TelemetryStore::open(&dir.path().join("t.duckdb")).unwrap());
        let budget = TenantBudget::unlimited("acme");
        let text =
            format!("name = \"probe\"\nversion = \"1\"\nworld = \"{world}\"\n{manifest_extra}");
        let env = Arc::new(InstanceEnv {
            tenant: "acme".into(),
            component: "probe".into(),
            version: 1,
            manifest: Arc::new(Manifest::parse(&text, &ManifestBounds::default()).unwrap()),
            stats: Arc::new(ComponentStats::default()),
            services,
            mqtt: Arc::new(NoBroker),
            telemetry: store,
            budget,
            scratch_dir: None,
            file_sd_dir: None,
            subscriptions: Default::default(),
            active: Default::default(),
        });
        (dir, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Inventory(Vec<Device>);
    impl HostServices for Inventory {
        fn read_secret(&self, _: &str, _: &str) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn device(&self, _: &str, name: &str) -> Result<Option<Device>, String> {
            Ok(self.0.iter().find(|d| d.name == name).cloned())
        }
    }

    fn device(name: &str, tag: &str) -> Device {
        serde_json::from_value(serde_json::json!({
            "name": name, "address": "192.0.2.1", "tags": [tag]
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_and_an_ungranted_device_look_the_same() {
        let services = Arc::new(Inventory(vec![
            device("core1", "lab"),
            device("vault", "secret"),
        ]));
        let (_dir, mut state) =
            testing::state("[grants]\ndevices = [\"tag:lab\", \"edge9\"]\n", services);
        assert_eq!(state.granted_device("core1").unwrap().name, "core1");
        let text = |e: WitError| match e {
            WitError::Denied(m) => format!("denied: {m}"),
            WitError::Invalid(m) => format!("invalid: {m}"),
            other => format!("{other:?}"),
        };
        let exists = text(state.granted_device("vault").unwrap_err());
        let missing = text(state.granted_device("nosuch").unwrap_err());
        assert_eq!(
            exists.replace("vault", "X"),
            missing.replace("nosuch", "X"),
            "an existing device beyond the grants must not be told apart from a missing one"
        );
        assert!(exists.starts_with("denied:"), "{exists}");
        // A device granted by its name may be reported missing: that tells nothing new.
        assert!(text(state.granted_device("edge9").unwrap_err()).contains("no device named"));
        assert_eq!(state.env.stats.denied.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_rule_reads_links_of_granted_devices_and_cannot_change_the_inventory() {
        use crate::host::sotp::telemetry::inventory::Host;
        let mut core1 = device("core1", "lab");
        core1.links = vec![crate::inventory::Link {
            interface: "eth1".into(),
            neighbor: "edge9".into(),
            neighbor_interface: None,
        }];
        let services = Arc::new(Inventory(vec![core1, device("vault", "secret")]));
        let grants = "[grants]\ndevices = [\"tag:lab\"]\n";
        let (_dir, mut rule) = testing::state_of("compliance-rule", grants, services.clone());
        let links = rule.links("core1".into()).unwrap();
        assert_eq!(
            (links[0].interface.as_str(), links[0].neighbor.as_str()),
            ("eth1", "edge9")
        );
        assert!(matches!(
            rule.links("vault".into()),
            Err(WitError::Denied(_))
        ));
        let denied = rule.set_interface_names("core1".into(), vec![(1, "eth1".into())]);
        assert!(
            matches!(&denied, Err(WitError::Denied(m)) if m.contains("compliance-rule")),
            "{denied:?}"
        );
    }
}
