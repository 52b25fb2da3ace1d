//! Host side of the WIT contract: the generated bindings, the per-instance state (`HostState`)
//! and one module per imported interface, each a flat `impl <interface>::Host for HostState`
//! that checks grants and limits on its first lines (the shape of wasmtime-wasi's `p2/host`).

mod backups;
mod emit;
mod inventory;
mod log;
mod mqtt;
mod secrets;
mod snmp;
mod ssh;
pub(crate) mod stdio;

pub use stdio::GuestOutput;

use crate::inventory::Device;
use crate::manifest::Manifest;
use crate::mqtt::MqttHub;
use crate::stats::ComponentStats;
use crate::telemetry::{LogRow, SampleRow};
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

/// What every instance of one component version shares.
pub struct InstanceEnv {
    pub tenant: String,
    pub component: String,
    pub version: u32,
    pub manifest: Arc<Manifest>,
    pub stats: Arc<ComponentStats>,
    pub services: Arc<dyn HostServices>,
    pub mqtt: Arc<MqttHub>,
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
    pub samples: Vec<SampleRow>,
    pub logs: Vec<LogRow>,
}

impl Emitted {
    pub fn len(&self) -> usize {
        self.samples.len() + self.logs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Guest CPU accounting for one call: wall time minus time spent inside host calls.
pub struct CallClock {
    pub started: Instant,
    pub in_host: Duration,
    pub limit: Duration,
}

impl CallClock {
    pub fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.in_host)
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
        Ok(desired <= 100_000)
    }
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
}

impl HostState {
    pub fn new(env: Arc<InstanceEnv>, stdout: GuestOutput, stderr: GuestOutput) -> Self {
        // No preopened directories, no network, no inherited environment: the guest's only
        // way out is the SOTP interfaces, each checked against its grants.
        let wasi = WasiCtx::builder()
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory = MemoryCap {
            max_bytes: env.manifest.limits.memory.0 as usize,
        };
        let limit = env.manifest.limits.cpu();
        HostState {
            wasi,
            table: ResourceTable::new(),
            memory,
            env,
            out: Emitted::default(),
            snmp_sessions: Default::default(),
            clock: CallClock {
                started: Instant::now(),
                in_host: Duration::ZERO,
                limit,
            },
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
    pub(crate) fn granted_device(&mut self, name: &str) -> Result<Device, WitError> {
        let started = Instant::now();
        let found = self.env.services.device(&self.env.tenant, name);
        self.clock.in_host += started.elapsed();
        let device = found.map_err(WitError::Unavailable)?.ok_or_else(|| {
            WitError::Invalid(format!("no device named `{name}` in the inventory"))
        })?;
        if let Some(reason) = crate::grants::deny_device(&self.env.manifest.grants, &device) {
            return Err(self.deny(reason));
        }
        Ok(device)
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

/// The linker every collector is instantiated with: WASI 0.2 (sandboxed by `HostState::new`)
/// plus the SOTP interfaces.
pub fn collector_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Collector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}
