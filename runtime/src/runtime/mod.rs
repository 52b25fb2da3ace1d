//! `Runtime`: the host library's front door. It owns the engine, the stores and the running
//! components, and offers the operations the API exposes — every one of them scoped to a
//! tenant, so isolation is decided here and not in each HTTP handler.

use self::compliance::run_audit_schedule;
use self::services::{MQTT_SETTING, StateSecrets};
use self::tenants::bootstrap_admin;
use crate::backups::Backups;
use crate::budget::TenantBudget;
use crate::component::ComponentHandle;
use crate::config::RuntimeConfig;
use crate::crypto::SecretBox;
use crate::engine::{Allocation, EngineSettings, WasmEngine};
use crate::error::RuntimeError;
use crate::flow::service::FlowService;
use crate::host::Linkers;
use crate::mqtt::{MqttHub, MqttSettings};
use crate::state::StateStore;
use crate::telemetry::TelemetryStore;
use crate::tokens::Scopes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

mod alerts;
mod compliance;
mod components;
mod inventory;
mod platform;
mod queries;
mod services;
mod tenants;
mod traces;

pub use components::{ActivationOutcome, ComponentSummary, ComponentView, UploadOutcome};
pub use queries::{QueryApi, QueryRefusals};
pub use tenants::{IssuedToken, TenantSpec, TokenRequest};

type Key = (String, String);

/// Who is calling: the platform admin, or one tenant with what its token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant { tenant: String, scopes: Scopes },
}

#[derive(Default)]
pub struct RuntimeCounters {
    pub uploads: AtomicU64,
    pub uploads_rejected: AtomicU64,
    pub activations: AtomicU64,
    pub activations_failed: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Refusals of the Prometheus- and Loki-compatible query APIs.
    pub query_refused: QueryRefusals,
}

pub struct Runtime {
    pub config: RuntimeConfig,
    engine: WasmEngine,
    /// One linker per world.
    linkers: Linkers,
    pub state: Arc<StateStore>,
    pub telemetry: Arc<TelemetryStore>,
    pub mqtt: Arc<MqttHub>,
    pub backups: Arc<Backups>,
    /// Golden-config rules, waivers and audits (see `compliance`).
    compliance: crate::compliance::Compliance,
    /// Alert intake and the tenant's alerts (see `correlation`).
    correlation: crate::correlation::Correlation,
    /// Spans from browsers and backends (see `traces`).
    traces: crate::traces::Traces,
    /// Secrets held by tenants' providers (Vault), cached for their TTL.
    secret_providers: Arc<crate::secret_providers::SecretProviders>,
    /// The flow pipeline, when `[flows]` configures a listener.
    pub flows: Option<Arc<FlowService>>,
    components: RwLock<HashMap<Key, Arc<ComponentHandle>>>,
    /// Tenants being deleted: no component handle is made for them (under `components`).
    deleting: parking_lot::Mutex<std::collections::HashSet<String>>,
    budgets: RwLock<HashMap<String, Arc<TenantBudget>>>,
    wasm: crate::wasm_store::WasmStore,
    /// `<data_dir>/scratch`: components' scratch directories, by tenant and component.
    scratch: cap_std::fs::Dir,
    ready: AtomicBool,
    started: Instant,
    pub counters: RuntimeCounters,
    /// Where the admin token was written on first start, if it was this start.
    pub admin_token_file: Option<PathBuf>,
    /// The platform tenant, once `start_platform` ran (see `platform`).
    platform: RwLock<Option<Arc<crate::platform::Active>>>,
}

impl Runtime {
    /// Open (or create) the data dir, the stores and the engine. Components are restored by
    /// [`Runtime::restore`].
    pub fn open(config: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let dir = &config.data_dir;
        let data = crate::datadir::DataDir::open(dir)
            .map_err(|e| anyhow::anyhow!("cannot open data dir {}: {e}", dir.display()))?;
        let secrets = SecretBox::load(&config.secrets, &data)?;
        let state = Arc::new(StateStore::open(&dir.join("state.sqlite"), secrets)?);
        match state.reseal_secrets()? {
            (0, 0) => {}
            (resealed, unreadable) => tracing::info!(
                resealed,
                unreadable,
                "secrets sealed again with the current key"
            ),
        }
        let wasm = crate::wasm_store::WasmStore::open(&data)?;
        let scratch = data.subdir("scratch")?;
        let moved = wasm.migrate_flat_layout(&state.version_hashes()?)?;
        if moved > 0 {
            tracing::info!(moved, "component files moved to per-tenant directories");
        }
        let telemetry = Arc::new(TelemetryStore::open(&dir.join("telemetry.duckdb"))?);
        let engine = WasmEngine::new(&EngineSettings {
            max_memory: config.limits.max_component_memory.0,
            pool_instances: config.engine.pool_instances,
            epoch_tick: config.engine.epoch_tick.0,
            cache_dir: dir.join("cache"),
            force_on_demand: config.engine.force_on_demand,
        })?;
        let linkers = Linkers::new(engine.engine())
            .map_err(|e| anyhow::anyhow!("building the component linkers: {e}"))?;
        let admin_token_file = bootstrap_admin(&state, &data)?;
        std::fs::create_dir_all(dir.join("backups"))?;
        let backups = Arc::new(Backups::new(dir.join("backups")));
        let egress = crate::egress::EgressPolicy::new(config.egress.clone());
        let secret_providers = Arc::new(crate::secret_providers::SecretProviders::default());
        let mqtt = Arc::new(MqttHub::new(
            telemetry.clone(),
            Arc::new(StateSecrets {
                state: state.clone(),
                backups: backups.clone(),
                egress: egress.clone(),
                providers: secret_providers.clone(),
            }),
            egress,
        ));
        let flows = if config.flows.enabled() {
            let service = FlowService::start(config.flows.clone(), dir)?;
            // Flows are stored only for tenants that exist.
            // An inlet publishes every mapped tenant's flows: the stores decide what exists.
            if !config.flows.is_bus(crate::bus::BusRole::Inlet) {
                let live: Vec<String> = state.tenants()?.into_iter().map(|t| t.id).collect();
                for missing in service.mapped_tenants().filter(|t| !live.contains(t)) {
                    tracing::warn!(tenant = %missing, "runtime.flows maps exporters to a tenant that does not exist: its flows are dropped (sotp_flow_unmapped_total) until it is created");
                }
                service.store.set_live_tenants(Some(live));
            }
            Some(service)
        } else {
            None
        };
        let compliance = crate::compliance::Compliance::new(
            state.clone(),
            backups.clone(),
            config.compliance.clone(),
        );
        let correlation =
            crate::correlation::Correlation::new(state.clone(), config.correlation.clone());
        let traces = crate::traces::Traces::open(&dir.join("traces.sqlite"), config.traces.clone())
            .map_err(|e| anyhow::anyhow!("cannot open the trace store: {e}"))?;
        Ok(Arc::new(Runtime {
            correlation,
            traces,
            secret_providers,
            flows,
            config,
            engine,
            linkers,
            state,
            telemetry,
            mqtt,
            compliance,
            backups,
            components: RwLock::new(HashMap::new()),
            deleting: Default::default(),
            budgets: RwLock::new(HashMap::new()),
            wasm,
            scratch,
            ready: AtomicBool::new(false),
            started: Instant::now(),
            counters: RuntimeCounters::default(),
            admin_token_file,
            platform: RwLock::new(None),
        }))
    }

    /// Bring back every component that had an active version, then report ready.
    pub async fn restore(self: &Arc<Self>) {
        let records = match self.blocking(|rt| Ok(rt.state.all_components()?)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list components to restore");
                Vec::new()
            }
        };
        for record in records {
            let handle = match self.handle(&record.tenant, &record.name, record.last_tick_seq) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(tenant = %record.tenant, component = %record.name, error = %e, "not restored");
                    continue;
                }
            };
            if let Some(version) = record.active_version {
                match self.start_version(&handle, version).await {
                    Ok(_) => {
                        tracing::info!(tenant = %record.tenant, component = %record.name, version, "restored")
                    }
                    Err(e) => {
                        tracing::error!(tenant = %record.tenant, component = %record.name, version, error = %e, "restore failed");
                    }
                }
            }
        }
        // Brokers connect only now that every component's subscriptions are back: a message
        // redelivered at connect time must find its component.
        // (On the blocking pool: reading the settings and resolving the brokers' names block.)
        let started = self
            .blocking(|rt| {
                for (tenant, text) in rt.state.settings(MQTT_SETTING)? {
                    let started = serde_json::from_str::<MqttSettings>(&text)
                        .map_err(|e| e.to_string())
                        .and_then(|s| rt.mqtt.configure(&tenant, Some(s)));
                    if let Err(e) = started {
                        tracing::error!(%tenant, error = %e, "cannot start the tenant's MQTT session");
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot read MQTT settings");
        }
        self.ready.store(true, Ordering::Release);
        tokio::spawn(run_audit_schedule(Arc::downgrade(self)));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn allocation(&self) -> Allocation {
        self.engine.allocation()
    }

    /// Stop every component and close the stores cleanly.
    pub fn shutdown(&self) {
        self.mqtt.shutdown();
        if let Some(flows) = &self.flows {
            flows.shutdown();
        }
        for handle in self.components.write().drain().map(|(_, h)| h) {
            handle.deactivate();
        }
        self.telemetry.close();
    }

    pub fn component_handles(&self) -> Vec<Arc<ComponentHandle>> {
        self.components.read().values().cloned().collect()
    }

    // ---- internals -------------------------------------------------------------------------

    /// Run what blocks (SQLite and its fsync, Git, files) on the blocking pool: async
    /// methods call this rather than the stores directly.
    async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(&Arc<Runtime>) -> Result<T, RuntimeError> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self.clone();
        tokio::task::spawn_blocking(move || f(&rt))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
    }
}
