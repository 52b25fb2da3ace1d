//! `Runtime`: the host library's front door. It owns the engine, the stores and the running
//! components, and offers the operations the API exposes — every one of them scoped to a
//! tenant, so isolation is decided here and not in each HTTP handler.

use crate::backups::{BackupSettings, Backups, DeviceBackup, Revision, Saved};
use crate::budget::{TenantBudget, TenantLimits, Usage};
use crate::component::{ComponentHandle, ComponentState, Deps};
use crate::config::RuntimeConfig;
use crate::crypto::SecretBox;
use crate::engine::{Allocation, EngineSettings, WasmEngine};
use crate::error::RuntimeError;
use crate::flow;
use crate::flow::query::{FlowQueryError, RateQuery, RateRow, TopQuery, TopRow};
use crate::flow::service::FlowService;
use crate::host::{HostServices, InstanceEnv, Linkers, WitError};
use crate::instance::LoadedVersion;
use crate::inventory::Device;
use crate::manifest::{Manifest, is_component_name};
use crate::mqtt::{CredentialSource, MqttHub, MqttSettings, MqttStatus};
use crate::state::{RevokeError, StateStore, Tenant, VersionRecord};
use crate::stats::{LastError, LogLine, StatsSnapshot};
use crate::telemetry::{SampleQuery, SeriesPoints, TelemetryStore};
use crate::tokens::{AuthError, Role, Scope, Scopes, TokenInfo, hash_token};
use parking_lot::RwLock;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

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
}

#[derive(Clone, Debug, Serialize)]
pub struct UploadOutcome {
    pub component: String,
    pub version: u32,
    pub label: String,
    pub wasm_sha256: String,
    pub activated: bool,
    pub compile_ms: f64,
    pub compiled_from: crate::engine::CompileSource,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActivationOutcome {
    pub component: String,
    pub version: u32,
    pub previous: Option<u32>,
    pub warm_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentSummary {
    pub name: String,
    #[serde(flatten)]
    pub state: ComponentState,
    pub active_version: Option<u32>,
    pub active_label: Option<String>,
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentView {
    pub name: String,
    #[serde(flatten)]
    pub state: ComponentState,
    pub active_version: Option<u32>,
    pub manifest: Option<Manifest>,
    pub versions: Vec<VersionRecord>,
    pub counters: StatsSnapshot,
    pub last_error: Option<LastError>,
    pub recent_log: Vec<LogLine>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    pub id: String,
    /// Shown once; only its hash is stored.
    pub token: String,
    pub tenant: Option<String>,
    pub scopes: Scopes,
    pub expires_ms: Option<i64>,
}

/// A new tenant's name and quotas; `None`: the configured default (`tenant_defaults`).
#[derive(Clone, Debug, Default)]
pub struct TenantSpec {
    pub name: Option<String>,
    pub max_components: Option<u32>,
    pub max_memory: Option<u64>,
    pub max_series: Option<u64>,
    pub max_instances: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
}

/// What a new token may do and for how long.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub name: String,
    /// For a tenant token; the platform admin's tokens are unscoped.
    pub scopes: Scopes,
    pub expires_ms: Option<i64>,
}

impl TokenRequest {
    /// A tenant token with every scope that never expires (a tenant's first token).
    pub fn full(name: &str) -> Self {
        TokenRequest {
            name: name.to_string(),
            scopes: Scopes::all(),
            expires_ms: None,
        }
    }
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
}

/// What host capabilities reach through `HostServices`: the state store, the backups, and
/// the operator's egress policy.
struct StateSecrets {
    state: Arc<StateStore>,
    backups: Arc<Backups>,
    egress: crate::egress::EgressPolicy,
}

impl HostServices for StateSecrets {
    fn read_secret(&self, tenant: &str, name: &str) -> Result<Option<String>, String> {
        self.state.secret(tenant, name).map_err(|e| e.to_string())
    }

    fn device(&self, tenant: &str, name: &str) -> Result<Option<Device>, String> {
        self.state.device(tenant, name).map_err(|e| e.to_string())
    }

    fn devices(&self, tenant: &str) -> Result<Vec<Device>, String> {
        self.state.devices(tenant).map_err(|e| e.to_string())
    }

    fn set_interface_names(
        &self,
        tenant: &str,
        device: &str,
        names: &[(u32, String)],
    ) -> Result<(), String> {
        self.state
            .set_interface_names(tenant, device, names)
            .map_err(|e| e.to_string())
    }

    fn ssh_host_key(&self, tenant: &str, device: &str) -> Result<Option<String>, String> {
        self.state
            .ssh_host_key(tenant, device)
            .map_err(|e| e.to_string())
    }

    fn pin_ssh_host_key(&self, tenant: &str, device: &str, key: &str) -> Result<(), String> {
        self.state
            .pin_ssh_host_key(tenant, device, key)
            .map_err(|e| e.to_string())
    }

    fn connect_address(&self, host: &str, port: u16) -> Result<std::net::SocketAddr, WitError> {
        self.egress.resolve(host, port).map_err(egress_error)
    }

    fn store_backup(
        &self,
        tenant: &str,
        device: &str,
        author: &str,
        text: &str,
    ) -> Result<Saved, String> {
        let ignore = backup_settings(&self.state, tenant)?.compile()?;
        self.backups
            .store(tenant, device, author, text, &ignore)
            .map_err(|e| e.to_string())
    }
}

const BACKUP_SETTING: &str = "backups";

fn backup_settings(state: &StateStore, tenant: &str) -> Result<BackupSettings, String> {
    match state
        .setting(tenant, BACKUP_SETTING)
        .map_err(|e| e.to_string())?
    {
        Some(text) => serde_json::from_str(&text).map_err(|e| e.to_string()),
        None => Ok(BackupSettings::default()),
    }
}

impl CredentialSource for StateSecrets {
    fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, String> {
        self.read_secret(tenant, name)
    }
}

const MQTT_SETTING: &str = "mqtt";

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
        let mqtt = Arc::new(MqttHub::new(
            telemetry.clone(),
            Arc::new(StateSecrets {
                state: state.clone(),
                backups: backups.clone(),
                egress: egress.clone(),
            }),
            egress,
        ));
        let flows = if config.flows.enabled() {
            let service = FlowService::start(config.flows.clone(), dir)?;
            // Flows are stored only for tenants that exist.
            let live: Vec<String> = state.tenants()?.into_iter().map(|t| t.id).collect();
            for missing in service.mapped_tenants().filter(|t| !live.contains(t)) {
                tracing::warn!(tenant = %missing, "runtime.flows maps exporters to a tenant that does not exist: its flows are dropped (sotp_flow_unmapped_total) until it is created");
            }
            service.store.set_live_tenants(Some(live));
            Some(service)
        } else {
            None
        };
        let compliance = crate::compliance::Compliance::new(
            state.clone(),
            backups.clone(),
            config.compliance.clone(),
        );
        Ok(Arc::new(Runtime {
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

    // ---- authentication and tenants --------------------------------------------------------

    /// The caller a token stands for, and when the token expires. Memory only (see
    /// `tokens`): no database access per request.
    pub fn authenticate(&self, token: &str) -> Result<(Principal, Option<i64>), RuntimeError> {
        match self.state.authenticate(token, crate::now_ms()) {
            Ok(TokenInfo {
                role: Role::Admin,
                expires_ms,
                ..
            }) => Ok((Principal::Admin, expires_ms)),
            Ok(TokenInfo {
                tenant: Some(tenant),
                scopes,
                expires_ms,
                ..
            }) => Ok((Principal::Tenant { tenant, scopes }, expires_ms)),
            Ok(_) | Err(AuthError::Unknown) => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::Unauthorized(
                    "missing or unknown token".into(),
                ))
            }
            Err(e @ AuthError::Expired(_)) => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::Unauthorized(e.to_string()))
            }
        }
    }

    pub fn create_tenant(
        &self,
        id: &str,
        spec: TenantSpec,
    ) -> Result<(Tenant, IssuedToken), RuntimeError> {
        if !is_component_name(id) {
            return Err(RuntimeError::Invalid(format!(
                "`{id}` is not a tenant id: use 1-63 lowercase letters, digits and `-`, starting with a letter"
            )));
        }
        if spec.max_concurrent_calls == Some(0) || spec.max_instances == Some(0) {
            return Err(RuntimeError::Invalid(
                "max_instances and max_concurrent_calls must be at least 1".into(),
            ));
        }
        let defaults = &self.config.tenant_defaults;
        let tenant = Tenant {
            id: id.to_string(),
            name: spec.name.unwrap_or_else(|| id.to_string()),
            created_ms: crate::now_ms(),
            max_components: spec.max_components.unwrap_or(defaults.max_components),
            max_memory_bytes: spec.max_memory.unwrap_or(defaults.max_memory.0),
            max_series: spec.max_series,
            max_instances: spec.max_instances,
            max_concurrent_calls: spec.max_concurrent_calls,
        };
        if !self.state.create_tenant(&tenant)? {
            return Err(RuntimeError::Conflict(format!(
                "tenant `{id}` already exists"
            )));
        }
        let token = self.issue_token(Some(id), TokenRequest::full("initial"))?;
        if let Some(flows) = &self.flows {
            flows.store.tenant_created(id);
        }
        Ok((tenant, token))
    }

    /// The tenant's budget (see `budget`), shared by all its components.
    pub fn budget(&self, tenant: &str) -> Result<Arc<TenantBudget>, RuntimeError> {
        if let Some(b) = self.budgets.read().get(tenant) {
            return Ok(b.clone());
        }
        let row = self.tenant(tenant)?;
        let d = self.default_limits();
        let limits = TenantLimits {
            max_series: row.max_series.unwrap_or(d.max_series),
            max_instances: row.max_instances.unwrap_or(d.max_instances),
            max_concurrent_calls: row.max_concurrent_calls.unwrap_or(d.max_concurrent_calls),
        };
        Ok(self
            .budgets
            .write()
            .entry(tenant.to_string())
            .or_insert_with(|| TenantBudget::new(tenant, limits))
            .clone())
    }

    fn default_limits(&self) -> TenantLimits {
        let d = &self.config.tenant_defaults;
        TenantLimits {
            max_series: d.max_series,
            max_instances: d.max_instances,
            max_concurrent_calls: d.max_concurrent_calls,
        }
    }

    /// What the tenant holds now against its limits.
    pub fn usage(&self, tenant: &str) -> Result<Usage, RuntimeError> {
        let budget = self.budget(tenant)?;
        Ok(budget.usage(self.telemetry.tenant_series(tenant)))
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>, RuntimeError> {
        Ok(self.state.tenants()?)
    }

    pub fn tenant(&self, id: &str) -> Result<Tenant, RuntimeError> {
        self.state
            .tenant(id)?
            .ok_or_else(|| RuntimeError::NotFound(format!("no tenant `{id}`")))
    }

    /// Delete a tenant and everything it owns, in every store: its tokens stop working first,
    /// its components are stopped (and what they were doing finishes), then its telemetry,
    /// backups, flows, component files and compiled artifacts are deleted, and last its
    /// rows. A tenant created again with the same id starts empty. If a store cannot be
    /// purged the tenant stays (without tokens), and deleting it again resumes.
    pub async fn delete_tenant(self: &Arc<Self>, id: &str) -> Result<(), RuntimeError> {
        self.tenant(id)?;
        let tenant = id.to_string();
        self.blocking(move |rt| Ok(rt.state.delete_tenant_tokens(&tenant)?))
            .await?;
        let handles: Vec<Arc<ComponentHandle>> = {
            let mut components = self.components.write();
            self.deleting.lock().insert(id.to_string());
            let keys: Vec<Key> = components
                .keys()
                .filter(|(t, _)| t == id)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| components.remove(k)).collect()
        };
        let result = self.purge_tenant(id, handles).await;
        self.deleting.lock().remove(id);
        result
    }

    /// Stop a tenant's components, then delete what it owns (see `delete_tenant`).
    async fn purge_tenant(
        self: &Arc<Self>,
        id: &str,
        handles: Vec<Arc<ComponentHandle>>,
    ) -> Result<(), RuntimeError> {
        for h in &handles {
            h.retire().await;
        }
        for h in &handles {
            h.stopped().await;
        }
        self.mqtt.remove_tenant(id);
        let points =
            self.telemetry.purge_tenant(id).await.map_err(|e| {
                RuntimeError::Internal(format!("deleting the tenant's telemetry: {e}"))
            })?;
        let rt = self.clone();
        let tenant = id.to_string();
        tokio::task::spawn_blocking(move || rt.purge_files(&tenant))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let tenant = id.to_string();
        self.blocking(move |rt| Ok(rt.state.delete_tenant(&tenant)?))
            .await?;
        self.budgets.write().remove(id);
        self.compliance.forget(id);
        tracing::info!(tenant = %id, points, "tenant deleted");
        Ok(())
    }

    /// The tenant's files: backups, component binaries, compiled artifacts, flows.
    fn purge_files(&self, tenant: &str) -> Result<(), RuntimeError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            RuntimeError::Internal(format!("deleting the tenant's {what}: {e}"))
        };
        self.backups
            .remove_tenant(tenant)
            .map_err(|e| failed("backups", &e))?;
        {
            let _guard = self.wasm.lock();
            self.wasm
                .remove_tenant(tenant)
                .map_err(|e| failed("components", &e))?;
        }
        self.engine
            .remove_namespace(tenant)
            .map_err(|e| failed("compiled components", &e))?;
        self.remove_scratch(tenant, None)
            .map_err(|e| failed("scratch directories", &e))?;
        if let Some(flows) = &self.flows {
            flows
                .store
                .forget_tenant(tenant)
                .map_err(|e| failed("flows", &e))?;
        }
        Ok(())
    }

    /// Issue a token for a tenant, or (tenant `None`) a platform admin token.
    pub fn issue_token(
        &self,
        tenant: Option<&str>,
        request: TokenRequest,
    ) -> Result<IssuedToken, RuntimeError> {
        if let Some(t) = tenant {
            self.tenant(t)?;
        }
        if request.scopes.is_empty() {
            return Err(RuntimeError::Invalid(
                "give the token at least one scope".into(),
            ));
        }
        if request.expires_ms.is_some_and(|at| at <= crate::now_ms()) {
            return Err(RuntimeError::Invalid(
                "the token would be expired already".into(),
            ));
        }
        if request.name.trim().is_empty() || request.name.len() > 100 {
            return Err(RuntimeError::Invalid(
                "name: give 1 to 100 characters".into(),
            ));
        }
        let (info, token) = new_token(tenant, &request);
        self.state.insert_token(&info, &hash_token(&token))?;
        Ok(IssuedToken {
            id: info.id,
            token,
            tenant: tenant.map(str::to_string),
            scopes: info.scopes,
            expires_ms: info.expires_ms,
        })
    }

    pub fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, RuntimeError> {
        Ok(self.state.tokens(tenant)?)
    }

    /// Revoke a token of `tenant` (`None`: a platform admin token). The last unexpired
    /// admin token cannot be revoked: nobody could issue another.
    pub fn revoke_token(&self, tenant: Option<&str>, id: &str) -> Result<(), RuntimeError> {
        match self.state.delete_token(id, tenant, crate::now_ms()) {
            Ok(()) => Ok(()),
            Err(RevokeError::NotFound) => Err(RuntimeError::NotFound(format!("no token `{id}`"))),
            Err(e @ RevokeError::LastAdmin) => {
                Err(RuntimeError::Conflict(format!("cannot revoke `{id}`: {e}")))
            }
            Err(RevokeError::State(e)) => Err(e.into()),
        }
    }

    // ---- components ------------------------------------------------------------------------

    /// Store a new version of a component; activate it (hot swap) unless told not to.
    /// `scopes` are the uploader's: deploying needs `deploy`, and a manifest that grants
    /// secrets or devices also needs `secrets`.
    pub async fn upload(
        self: &Arc<Self>,
        tenant: &str,
        manifest_text: &str,
        wasm: &[u8],
        activate: bool,
        scopes: Scopes,
    ) -> Result<UploadOutcome, RuntimeError> {
        let result = self
            .upload_inner(tenant, manifest_text, wasm, activate, scopes)
            .await;
        match &result {
            Ok(_) | Err(RuntimeError::InitFailed { .. }) => {
                self.counters.uploads.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => self
                .counters
                .uploads_rejected
                .fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    async fn upload_inner(
        self: &Arc<Self>,
        tenant: &str,
        manifest_text: &str,
        wasm: &[u8],
        activate: bool,
        scopes: Scopes,
    ) -> Result<UploadOutcome, RuntimeError> {
        let manifest = Manifest::parse(manifest_text, &self.config.limits.manifest_bounds())?;
        check_grant_authority(&manifest, scopes)?;
        if wasm.len() as u64 > self.config.limits.max_upload.0 {
            return Err(RuntimeError::Invalid(format!(
                "the component is {} bytes, over the limit of {}",
                wasm.len(),
                self.config.limits.max_upload
            )));
        }
        let sha256 = hex::encode(Sha256::digest(wasm));
        let (component, source, compile_time) = {
            let rt = self.clone();
            let sha = sha256.clone();
            let bytes = wasm.to_vec();
            let namespace = tenant.to_string();
            tokio::task::spawn_blocking(move || rt.engine.compile(&namespace, &sha, &bytes))
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))??
        };
        // Link it once now so a wrong world is refused at upload, not at activation.
        let probe_env =
            self.instance_env(tenant, &manifest.name, 0, Arc::new(manifest.clone()), None);
        let linker = self.linkers.for_world(manifest.world);
        if let Err(e) = LoadedVersion::new(self.engine.engine(), linker, &component, probe_env) {
            return Err(RuntimeError::WrongWorld(
                self.wrong_world(tenant, &manifest, &component, e),
            ));
        }

        {
            let (tenant, checked) = (tenant.to_string(), manifest.clone());
            self.blocking(move |rt| {
                let existing = rt.state.component(&tenant, &checked.name)?;
                let tenant_row = rt.tenant(&tenant)?;
                if existing.is_none() {
                    let count = rt.state.components(&tenant)?.len() as u32;
                    if count >= tenant_row.max_components {
                        return Err(RuntimeError::Quota(format!(
                            "tenant `{tenant}` already has {count} components, its quota is {}",
                            tenant_row.max_components
                        )));
                    }
                }
                if activate {
                    rt.check_memory_quota(&tenant_row, &checked.name, &checked)?;
                }
                Ok(())
            })
            .await?;
        }
        let version = {
            let rt = self.clone();
            let (tenant, sha256, wasm) = (tenant.to_string(), sha256.clone(), wasm.to_vec());
            let (name, label, text) = (
                manifest.name.clone(),
                manifest.version.clone(),
                manifest_text.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                // The file and the row that refers to it change together (see wasm_store).
                let _guard = rt.wasm.lock();
                rt.wasm
                    .put(&tenant, &sha256, &wasm)
                    .map_err(|e| RuntimeError::Internal(format!("storing the component: {e}")))?;
                let len = wasm.len() as u64;
                Ok::<_, RuntimeError>(
                    rt.state
                        .add_version(&tenant, &name, &label, &text, &sha256, len)?,
                )
            })
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??
        };
        let name = manifest.name.clone();
        self.handle(tenant, &name, 0)?.host_log(
            crate::stats::LogLevel::Info,
            Some(version),
            &format!(
                "uploaded version {version} ({}, {} bytes)",
                manifest.version,
                wasm.len()
            ),
        );
        if activate {
            self.activate(tenant, &name, version).await?;
        }
        Ok(UploadOutcome {
            component: name,
            version,
            label: manifest.version,
            wasm_sha256: sha256,
            activated: activate,
            compile_ms: compile_time.as_secs_f64() * 1e3,
            compiled_from: source,
        })
    }

    /// Switch a component to `version` (hot swap). A failing `init` leaves the active
    /// version running and returns the reason.
    pub async fn activate(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<ActivationOutcome, RuntimeError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        let handle = self
            .blocking(move |rt| {
                let record = rt.state.version(&t, &n, version)?.ok_or_else(|| {
                    RuntimeError::NotFound(format!("component `{n}` has no version {version}"))
                })?;
                let manifest =
                    Manifest::parse(&record.manifest, &rt.config.limits.manifest_bounds())?;
                rt.check_memory_quota(&rt.tenant(&t)?, &n, &manifest)?;
                rt.handle(&t, &n, 0)
            })
            .await?;
        let previous = handle.active().map(|v| v.version());
        if previous == Some(version) {
            return Ok(ActivationOutcome {
                component: name.to_string(),
                version,
                previous,
                warm_ms: 0.0,
            });
        }
        let warm = self.start_version(&handle, version).await?;
        Ok(ActivationOutcome {
            component: name.to_string(),
            version,
            previous,
            warm_ms: warm.as_secs_f64() * 1e3,
        })
    }

    /// Roll back to `to`, or to the version that was active before the current one.
    pub async fn rollback(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        to: Option<u32>,
    ) -> Result<ActivationOutcome, RuntimeError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        let target = self
            .blocking(move |rt| {
                rt.require_component(&t, &n)?;
                match to {
                    Some(v) => Ok(v),
                    None => rt.state.previous_active(&t, &n)?.ok_or_else(|| {
                        RuntimeError::Conflict(format!(
                            "component `{n}` has no earlier active version to roll back to"
                        ))
                    }),
                }
            })
            .await?;
        self.activate(tenant, name, target).await
    }

    pub fn delete_component(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        self.require_component(tenant, name)?;
        if let Some(handle) = self
            .components
            .write()
            .remove(&(tenant.to_string(), name.to_string()))
        {
            handle.deactivate();
        }
        self.mqtt.remove_component(tenant, name);
        let _guard = self.wasm.lock();
        let versions = self.state.versions(tenant, name)?;
        self.state.delete_component(tenant, name)?;
        for v in versions {
            if !self.state.wasm_in_use(tenant, &v.wasm_sha256)?
                && let Err(e) = self.wasm.remove(tenant, &v.wasm_sha256)
            {
                tracing::warn!(%tenant, component = %name, error = %e, "could not remove a component file");
            }
        }
        if let Err(e) = self.remove_scratch(tenant, Some(name)) {
            tracing::warn!(%tenant, component = %name, error = %e, "could not remove the scratch directory");
        }
        Ok(())
    }

    pub fn list_components(&self, tenant: &str) -> Result<Vec<ComponentSummary>, RuntimeError> {
        let records = self.state.components(tenant)?;
        Ok(records
            .into_iter()
            .map(|r| {
                let handle = self.existing_handle(tenant, &r.name);
                let active = handle.as_ref().and_then(|h| h.active());
                ComponentSummary {
                    name: r.name,
                    state: handle
                        .as_ref()
                        .map(|h| h.state())
                        .unwrap_or(ComponentState::Inactive),
                    active_version: active.as_ref().map(|v| v.version()),
                    active_label: active.map(|v| v.env.manifest.version.clone()),
                    last_error: handle.and_then(|h| h.stats.last_error()),
                }
            })
            .collect())
    }

    pub fn component(
        &self,
        tenant: &str,
        name: &str,
        log_lines: usize,
    ) -> Result<ComponentView, RuntimeError> {
        self.require_component(tenant, name)?;
        let versions = self.state.versions(tenant, name)?;
        let handle = self.handle(tenant, name, 0)?;
        let active = handle.active();
        Ok(ComponentView {
            name: name.to_string(),
            state: handle.state(),
            active_version: active.as_ref().map(|v| v.version()),
            manifest: active.as_ref().map(|v| (*v.env.manifest).clone()),
            versions,
            counters: handle.stats.snapshot(),
            last_error: handle.stats.last_error(),
            recent_log: handle.stats.recent_log(log_lines),
        })
    }

    pub fn component_log(
        &self,
        tenant: &str,
        name: &str,
        lines: usize,
    ) -> Result<Vec<LogLine>, RuntimeError> {
        self.require_component(tenant, name)?;
        Ok(self.handle(tenant, name, 0)?.stats.recent_log(lines))
    }

    /// Push a message to a component's `on-message`; resolves when its output is durable.
    pub async fn deliver(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), RuntimeError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        let handle = self
            .blocking(move |rt| {
                rt.require_component(&t, &n)?;
                rt.handle(&t, &n, 0)
            })
            .await?;
        handle.deliver(topic, payload).await.map_err(|e| match e {
            crate::component::DeliveryError::Inactive => RuntimeError::Conflict(e.to_string()),
            crate::component::DeliveryError::QueueFull => RuntimeError::Conflict(e.to_string()),
            other => RuntimeError::Invalid(other.to_string()),
        })
    }

    /// Run `collector` as the active version of a component, natively (see `native`). It
    /// lives in this process only: nothing is stored, and a restart does not bring it back.
    pub async fn activate_native(
        self: &Arc<Self>,
        tenant: &str,
        manifest_text: &str,
        collector: Box<dyn crate::native::NativeCollector>,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        let manifest = Arc::new(Manifest::parse(
            manifest_text,
            &self.config.limits.manifest_bounds(),
        )?);
        let name = manifest.name.clone();
        let handle = self.handle(tenant, &name, 0)?;
        let env = self.instance_env(tenant, &name, 0, manifest, Some(&handle));
        let loaded = LoadedVersion::native(env.clone(), collector);
        handle
            .activate(Arc::new(loaded))
            .await
            .map_err(|reason| RuntimeError::InitFailed { version: 0, reason })?;
        let filters = env.subscriptions.lock().clone();
        self.mqtt.set_routes(tenant, &name, &handle, &filters);
        Ok(())
    }

    // ---- devices -------------------------------------------------------------------------

    /// Create or replace one device; true if it is new.
    pub fn put_device(
        &self,
        tenant: &str,
        device: Device,
        scopes: Scopes,
    ) -> Result<bool, RuntimeError> {
        Ok(self.import_devices(tenant, vec![device], scopes)? == 1)
    }

    /// Create or replace devices in one transaction, after checking every one of them and
    /// that every parent they name exists (in the inventory or the same import). Returns how
    /// many were new.
    ///
    /// `scopes` are the caller's: a device's credentials are secrets of the tenant, used by
    /// whatever component is granted the device, so creating a device that names secrets, or
    /// changing such a device's address, ports or secret references (which could send its
    /// password to another host), needs the `secrets` scope on top of `inventory`.
    pub fn import_devices(
        &self,
        tenant: &str,
        devices: Vec<Device>,
        scopes: Scopes,
    ) -> Result<usize, RuntimeError> {
        self.tenant(tenant)?;
        if !scopes.allows(Scope::Secrets) {
            let stored: HashMap<String, Device> = self
                .state
                .devices(tenant)?
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect();
            if let Some(d) = devices
                .iter()
                .find(|d| d.uses_secrets() && !stored.get(&d.name).is_some_and(|s| s.same_reach(d)))
            {
                return Err(RuntimeError::Forbidden(format!(
                    "device `{}` uses secrets: creating it, or changing its address, ports or secret references, needs a token with the `secrets` scope",
                    d.name
                )));
            }
        }
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for d in &devices {
            if let Err(e) = d.validate() {
                problems.push(format!("{}: {e}", d.name));
            }
            if !names.insert(d.name.clone()) {
                problems.push(format!("{}: listed twice", d.name));
            }
        }
        let existing: std::collections::BTreeSet<String> = self
            .state
            .devices(tenant)?
            .into_iter()
            .map(|d| d.name)
            .collect();
        for d in &devices {
            for p in d.all_parents() {
                if !names.contains(p) && !existing.contains(p) {
                    problems.push(format!("{}: parent `{p}` is not in the inventory", d.name));
                }
            }
        }
        if !problems.is_empty() {
            return Err(RuntimeError::Invalid(problems.join("; ")));
        }
        Ok(self.state.put_devices(tenant, &devices)?)
    }

    pub fn devices(&self, tenant: &str) -> Result<Vec<Device>, RuntimeError> {
        Ok(self.state.devices(tenant)?)
    }

    pub fn device(&self, tenant: &str, name: &str) -> Result<Device, RuntimeError> {
        self.state
            .device(tenant, name)?
            .ok_or_else(|| RuntimeError::NotFound(format!("no device `{name}`")))
    }

    /// Delete a device no other device depends on.
    pub fn delete_device(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        self.device(tenant, name)?;
        let dependents: Vec<String> = self
            .state
            .devices(tenant)?
            .into_iter()
            .filter(|d| d.all_parents().contains(name))
            .map(|d| d.name)
            .collect();
        if !dependents.is_empty() {
            return Err(RuntimeError::Conflict(format!(
                "devices {dependents:?} depend on `{name}`; change them first"
            )));
        }
        self.state.delete_device(tenant, name)?;
        Ok(())
    }

    pub fn interface_names(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<(u32, String)>, RuntimeError> {
        self.device(tenant, name)?;
        Ok(self.state.interface_names(tenant, name)?)
    }

    /// Replace a device's interface-name table (what the SNMP collector does through
    /// `inventory.set-interface-names`, for devices it does not poll).
    pub fn set_interface_names(
        &self,
        tenant: &str,
        name: &str,
        names: &[(u32, String)],
    ) -> Result<(), RuntimeError> {
        self.device(tenant, name)?;
        if let Some((index, _)) = names.iter().find(|(_, n)| n.trim().is_empty()) {
            return Err(RuntimeError::Invalid(format!(
                "interface {index}: the name is empty"
            )));
        }
        self.state.set_interface_names(tenant, name, names)?;
        Ok(())
    }

    /// Forget a device's pinned SSH host key (after a legitimate key change). The next
    /// connection trusts whatever key it is offered, so the API asks for the `secrets` scope.
    pub fn forget_ssh_host_key(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        self.device(tenant, name)?;
        self.state.forget_ssh_host_key(tenant, name)?;
        Ok(())
    }

    // ---- configuration backups ------------------------------------------------------------

    pub fn backup_settings(&self, tenant: &str) -> Result<BackupSettings, RuntimeError> {
        self.tenant(tenant)?;
        backup_settings(&self.state, tenant).map_err(RuntimeError::Internal)
    }

    pub fn set_backup_settings(
        &self,
        tenant: &str,
        settings: BackupSettings,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        settings.compile().map_err(RuntimeError::Invalid)?;
        let text =
            serde_json::to_string(&settings).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok(self.state.put_setting(tenant, BACKUP_SETTING, &text)?)
    }

    pub fn backups(&self, tenant: &str) -> Result<Vec<DeviceBackup>, RuntimeError> {
        self.tenant(tenant)?;
        self.backups.list(tenant).map_err(backup_error)
    }

    pub fn backup_history(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<Revision>, RuntimeError> {
        self.tenant(tenant)?;
        let history = self.backups.history(tenant, device).map_err(backup_error)?;
        if history.is_empty() {
            return Err(RuntimeError::NotFound(format!(
                "no backup of device `{device}`"
            )));
        }
        Ok(history)
    }

    pub fn backup_text(
        &self,
        tenant: &str,
        device: &str,
        at: Option<&str>,
    ) -> Result<String, RuntimeError> {
        self.tenant(tenant)?;
        self.backups.text(tenant, device, at).map_err(backup_error)
    }

    pub fn backup_diff(
        &self,
        tenant: &str,
        device: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<String, RuntimeError> {
        self.tenant(tenant)?;
        self.backups
            .diff(tenant, device, from, to)
            .map_err(backup_error)
    }

    // ---- compliance ------------------------------------------------------------------------

    pub fn compliance_counters(&self) -> &crate::compliance::ComplianceCounters {
        &self.compliance.counters
    }

    /// The active versions of the tenant's `compliance-rule` components, for an audit.
    pub fn rule_components(&self, tenant: &str) -> Vec<Arc<dyn crate::compliance::RuleComponent>> {
        let handles: Vec<(String, Arc<ComponentHandle>)> = self
            .components
            .read()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, name), h)| (name.clone(), h.clone()))
            .collect();
        let mut rules: Vec<Arc<dyn crate::compliance::RuleComponent>> = handles
            .into_iter()
            .filter_map(|(name, handle)| {
                let version = handle.active()?;
                (version.env.manifest.world == crate::manifest::World::ComplianceRule).then(|| {
                    Arc::new(crate::compliance::ActiveRule { name, version })
                        as Arc<dyn crate::compliance::RuleComponent>
                })
            })
            .collect();
        rules.sort_by(|a, b| a.name().cmp(b.name()));
        rules
    }

    /// The compliance subsystem, once `tenant` is known to exist; every method takes the
    /// tenant again, so isolation is the same single argument as everywhere else.
    pub fn compliance(&self, tenant: &str) -> Result<&crate::compliance::Compliance, RuntimeError> {
        self.tenant(tenant)?;
        Ok(&self.compliance)
    }

    // ---- MQTT ------------------------------------------------------------------------------

    /// Set (or, with `None`, remove) the tenant's broker and (re)start its session.
    pub fn set_mqtt(
        self: &Arc<Self>,
        tenant: &str,
        settings: Option<MqttSettings>,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        match &settings {
            Some(s) => {
                s.validate().map_err(RuntimeError::Invalid)?;
                let own_id = crate::mqtt::client_id(tenant);
                if s.client_id.as_ref().is_some_and(|id| *id != own_id) {
                    return Err(RuntimeError::Invalid(format!(
                        "client_id: set by the host (`{own_id}`), so no tenant can take over another's session"
                    )));
                }
                if let Some(name) = &s.password_secret
                    && self.state.secret(tenant, name)?.is_none()
                {
                    return Err(RuntimeError::Invalid(format!(
                        "password_secret: no secret named `{name}` (set it with PUT /v1/secrets/{name})"
                    )));
                }
                self.mqtt
                    .configure(tenant, settings.clone())
                    .map_err(RuntimeError::Invalid)?;
                let text =
                    serde_json::to_string(s).map_err(|e| RuntimeError::Internal(e.to_string()))?;
                self.state.put_setting(tenant, MQTT_SETTING, &text)?;
            }
            None => {
                self.mqtt
                    .configure(tenant, None)
                    .map_err(RuntimeError::Invalid)?;
                self.state.delete_setting(tenant, MQTT_SETTING)?;
            }
        }
        Ok(())
    }

    pub fn mqtt_status(&self, tenant: &str) -> Result<MqttStatus, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self.mqtt.status(tenant))
    }

    // ---- secrets ---------------------------------------------------------------------------

    pub fn put_secret(&self, tenant: &str, name: &str, value: &str) -> Result<(), RuntimeError> {
        crate::grants::validate_secret_name(name).map_err(RuntimeError::Invalid)?;
        Ok(self.state.put_secret(tenant, name, value)?)
    }

    pub fn secret_names(&self, tenant: &str) -> Result<Vec<(String, i64)>, RuntimeError> {
        Ok(self.state.secret_names(tenant)?)
    }

    pub fn delete_secret(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        if self.state.delete_secret(tenant, name)? {
            Ok(())
        } else {
            Err(RuntimeError::NotFound(format!("no secret `{name}`")))
        }
    }

    // ---- queries ---------------------------------------------------------------------------

    pub async fn query(&self, query: SampleQuery) -> Result<Vec<SeriesPoints>, RuntimeError> {
        let store = self.telemetry.clone();
        Ok(tokio::task::spawn_blocking(move || store.query(&query))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??)
    }

    fn flow_service(&self) -> Result<Arc<FlowService>, RuntimeError> {
        self.flows.clone().ok_or_else(|| {
            RuntimeError::NotFound(
                "flow collection is off: set runtime.flows.netflow / ipfix / sflow listen addresses".into(),
            )
        })
    }

    /// Top groups of the tenant's flows over a window.
    pub async fn flow_top(self: &Arc<Self>, q: TopQuery) -> Result<Vec<TopRow>, RuntimeError> {
        let (tenant, exporter, by) = (q.tenant.clone(), q.filter.exporter.clone(), q.by.clone());
        self.flow_query(
            tenant,
            by,
            exporter,
            |r: &mut TopRow| &mut r.group,
            move |store| flow::query::top(store, &q),
        )
        .await
    }

    /// Rates per group per time bucket of the tenant's flows.
    pub async fn flow_rate(self: &Arc<Self>, q: RateQuery) -> Result<Vec<RateRow>, RuntimeError> {
        let (tenant, exporter, by) = (q.tenant.clone(), q.filter.exporter.clone(), q.by.clone());
        self.flow_query(
            tenant,
            by,
            exporter,
            |r: &mut RateRow| &mut r.group,
            move |store| flow::query::rate(store, &q),
        )
        .await
    }

    /// Run a flow query and name the interfaces of its rows, off the async threads.
    async fn flow_query<R: Send + 'static>(
        self: &Arc<Self>,
        tenant: String,
        by: Vec<flow::query::GroupBy>,
        exporter: Option<String>,
        group: fn(&mut R) -> &mut serde_json::Map<String, serde_json::Value>,
        run: impl FnOnce(&flow::store::FlowStore) -> Result<Vec<R>, flow::query::FlowQueryError>
        + Send
        + 'static,
    ) -> Result<Vec<R>, RuntimeError> {
        let flows = self.flow_service()?;
        self.blocking(move |rt| {
            let mut rows = run(&flows.store).map_err(flow_query_error)?;
            rt.name_flow_interfaces(
                &tenant,
                &by,
                exporter.as_deref(),
                rows.iter_mut().map(group),
            );
            Ok(rows)
        })
        .await
    }

    /// Add interface names to rows grouped by interface, from the interface table of the
    /// inventory device whose address is the exporter (see `flow::enrich::name_interfaces`).
    fn name_flow_interfaces<'a>(
        &self,
        tenant: &str,
        by: &[flow::query::GroupBy],
        exporter: Option<&str>,
        groups: impl Iterator<Item = &'a mut serde_json::Map<String, serde_json::Value>>,
    ) {
        use flow::query::GroupBy;
        if !by
            .iter()
            .any(|g| matches!(g, GroupBy::InIf | GroupBy::OutIf))
        {
            return;
        }
        let Ok(devices) = self.state.devices(tenant) else {
            return;
        };
        flow::enrich::name_interfaces(groups, exporter, |exporter| {
            let ip: std::net::IpAddr = exporter.parse().ok()?;
            let device = devices
                .iter()
                .find(|d| d.address.trim().parse::<std::net::IpAddr>().ok() == Some(ip))?;
            let names = self.state.interface_names(tenant, &device.name).ok()?;
            Some(names.into_iter().collect())
        });
    }

    /// Listeners, template state and counters of the whole flow pipeline (the operator's
    /// view), or (`Some(tenant)`) what one tenant may see of it.
    pub fn flow_status(&self, tenant: Option<&str>) -> Result<serde_json::Value, RuntimeError> {
        let flows = self.flow_service()?;
        Ok(match tenant {
            None => flows.status(),
            Some(t) => flows.tenant_status(t),
        })
    }

    pub async fn telemetry_logs(
        &self,
        tenant: &str,
        component: Option<String>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, RuntimeError> {
        let store = self.telemetry.clone();
        let tenant = tenant.to_string();
        Ok(tokio::task::spawn_blocking(move || {
            store.recent_logs(&tenant, component.as_deref(), limit)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??)
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

    fn require_component(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        match self.state.component(tenant, name)? {
            Some(_) => Ok(()),
            None => Err(RuntimeError::NotFound(format!("no component `{name}`"))),
        }
    }

    fn existing_handle(&self, tenant: &str, name: &str) -> Option<Arc<ComponentHandle>> {
        self.components
            .read()
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }

    /// The component's handle, made (and its queue task started) if it has none. Refused
    /// for a tenant that does not exist or is being deleted, so nothing can bring back a
    /// component of a deleted tenant.
    fn handle(
        &self,
        tenant: &str,
        name: &str,
        last_tick_seq: u64,
    ) -> Result<Arc<ComponentHandle>, RuntimeError> {
        if let Some(h) = self.existing_handle(tenant, name) {
            return Ok(h);
        }
        let budget = self.budget(tenant)?;
        let last_tick_seq = if last_tick_seq == 0 {
            self.state
                .component(tenant, name)?
                .map(|c| c.last_tick_seq)
                .unwrap_or(0)
        } else {
            last_tick_seq
        };
        let mut components = self.components.write();
        if self.deleting.lock().contains(tenant) || self.state.tenant(tenant)?.is_none() {
            return Err(RuntimeError::NotFound(format!("no tenant `{tenant}`")));
        }
        Ok(components
            .entry((tenant.to_string(), name.to_string()))
            .or_insert_with(|| {
                let handle = ComponentHandle::spawn(
                    tenant,
                    name,
                    last_tick_seq,
                    Deps {
                        telemetry: self.telemetry.clone(),
                        state: self.state.clone(),
                        budget,
                    },
                );
                let limits = &self.config.limits;
                handle
                    .stats
                    .set_log_rate(limits.log_lines_per_second, limits.log_burst);
                handle
            })
            .clone())
    }

    fn instance_env(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
        manifest: Arc<Manifest>,
        handle: Option<&ComponentHandle>,
    ) -> Arc<InstanceEnv> {
        // Made for a version that runs, not for the probe of an upload.
        let scratch_dir = manifest
            .grants
            .scratch
            .filter(|_| handle.is_some())
            .and_then(|_| self.scratch_dir(tenant, name));
        Arc::new(InstanceEnv {
            tenant: tenant.to_string(),
            component: name.to_string(),
            version,
            manifest,
            stats: handle.map(|h| h.stats.clone()).unwrap_or_default(),
            services: Arc::new(StateSecrets {
                state: self.state.clone(),
                backups: self.backups.clone(),
                egress: crate::egress::EgressPolicy::new(self.config.egress.clone()),
            }),
            mqtt: self.mqtt.clone(),
            telemetry: self.telemetry.clone(),
            budget: self
                .budget(tenant)
                .unwrap_or_else(|_| TenantBudget::new(tenant, self.default_limits())),
            scratch_dir,
            subscriptions: Default::default(),
            active: Default::default(),
        })
    }

    /// The component's scratch directory (created if missing), if its manifest grants one.
    fn scratch_dir(&self, tenant: &str, component: &str) -> Option<PathBuf> {
        let made = crate::datadir::subdir(&self.scratch, tenant)
            .and_then(|t| crate::datadir::subdir(&t, component));
        match made {
            Ok(_) => Some(
                self.config
                    .data_dir
                    .join("scratch")
                    .join(tenant)
                    .join(component),
            ),
            Err(e) => {
                tracing::error!(%tenant, %component, error = %e, "cannot create the scratch directory");
                None
            }
        }
    }

    /// Remove a component's scratch directory (`None`: every one of the tenant's).
    fn remove_scratch(&self, tenant: &str, component: Option<&str>) -> std::io::Result<()> {
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        match component {
            None => gone(self.scratch.remove_dir_all(tenant)),
            Some(c) => match self.scratch.open_dir(tenant) {
                Ok(dir) => gone(dir.remove_dir_all(c)),
                Err(e) => gone(Err(e)),
            },
        }
    }

    /// Compile (from cache), link, warm and switch `handle` to `version`.
    async fn start_version(
        self: &Arc<Self>,
        handle: &Arc<ComponentHandle>,
        version: u32,
    ) -> Result<std::time::Duration, RuntimeError> {
        let (tenant, name) = (handle.tenant.as_str(), handle.name.as_str());
        let (t, n) = (tenant.to_string(), name.to_string());
        let record = self
            .blocking(move |rt| {
                rt.state.version(&t, &n, version)?.ok_or_else(|| {
                    RuntimeError::NotFound(format!("component `{n}` has no version {version}"))
                })
            })
            .await?;
        let manifest = Arc::new(Manifest::parse(
            &record.manifest,
            &self.config.limits.manifest_bounds(),
        )?);
        let (component, _, _) = {
            let rt = self.clone();
            let sha = record.wasm_sha256.clone();
            let namespace = tenant.to_string();
            tokio::task::spawn_blocking(move || {
                let wasm = rt.wasm.read(&namespace, &sha).map_err(|e| {
                    RuntimeError::Internal(format!("reading stored component: {e}"))
                })?;
                Ok::<_, RuntimeError>(rt.engine.compile(&namespace, &sha, &wasm)?)
            })
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??
        };
        let env = self.instance_env(tenant, name, version, manifest, Some(handle));
        let loaded = LoadedVersion::new(
            self.engine.engine(),
            self.linkers.for_world(env.manifest.world),
            &component,
            env.clone(),
        )
        .map_err(|e| RuntimeError::WrongWorld(e.to_string()))?;
        let (t, n) = (tenant.to_string(), name.to_string());
        match handle.activate(Arc::new(loaded)).await {
            Ok(warm) => {
                let filters = env.subscriptions.lock().clone();
                self.mqtt.set_routes(tenant, name, handle, &filters);
                self.blocking(move |rt| Ok(rt.state.record_activation(&t, &n, version)?))
                    .await?;
                self.counters.activations.fetch_add(1, Ordering::Relaxed);
                Ok(warm)
            }
            Err(reason) => {
                let detail = reason.clone();
                self.blocking(move |rt| {
                    Ok(rt
                        .state
                        .record_failed_activation(&t, &n, version, &detail)?)
                })
                .await?;
                self.counters
                    .activations_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::InitFailed { version, reason })
            }
        }
    }

    /// Why a component does not link as its manifest's world, naming the world it does
    /// implement when it is one this host serves.
    fn wrong_world(
        &self,
        tenant: &str,
        manifest: &crate::manifest::Manifest,
        component: &wasmtime::component::Component,
        error: crate::instance::LoadError,
    ) -> String {
        for world in crate::manifest::World::ALL {
            if world == manifest.world {
                continue;
            }
            let mut probe = manifest.clone();
            probe.world = world;
            let env = self.instance_env(tenant, &manifest.name, 0, Arc::new(probe), None);
            let linker = self.linkers.for_world(world);
            if LoadedVersion::new(self.engine.engine(), linker, component, env).is_ok() {
                return format!(
                    "the manifest says world `{}` but the component implements world `{}` ({})",
                    manifest.world.name(),
                    world.name(),
                    world.wit_name()
                );
            }
        }
        format!(
            "the manifest says world `{}`; {error}",
            manifest.world.name()
        )
    }

    fn check_memory_quota(
        &self,
        tenant: &Tenant,
        component: &str,
        manifest: &Manifest,
    ) -> Result<(), RuntimeError> {
        // A component may hold several instances (a rule's pool): each counts.
        let memory = |m: &Manifest| m.limits.memory.0 * crate::instance::pool_size(m.world) as u64;
        let mut total = memory(manifest);
        for (name, text) in self.state.active_manifests(&tenant.id)? {
            if name == component {
                continue;
            }
            if let Ok(m) = Manifest::parse(&text, &self.config.limits.manifest_bounds()) {
                total += memory(&m);
            }
        }
        if total > tenant.max_memory_bytes {
            return Err(RuntimeError::Quota(format!(
                "activating `{component}` would bring tenant `{}` to {} of component memory, its quota is {}",
                tenant.id,
                crate::units::ByteSize(total),
                crate::units::ByteSize(tenant.max_memory_bytes)
            )));
        }
        Ok(())
    }
}

/// Scheduled compliance audits: once a second, every tenant whose schedule is due and that
/// has rules (files or components) gets an audit (one at a time per tenant: a run still going
/// when the next is due makes that one a no-op, logged). The pass reads schedules and rule
/// files from SQLite, so it runs on the blocking pool, as the audits do.
async fn run_audit_schedule(rt: std::sync::Weak<Runtime>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || start_due_audits(&rt)).await;
    }
}

fn start_due_audits(rt: &Arc<Runtime>) {
    let now = crate::now_ms();
    for tenant in rt.state.tenant_ids() {
        if !rt.compliance.take_due(&tenant, now) {
            continue;
        }
        let rules = rt.rule_components(&tenant);
        if rules.is_empty() && !rt.compliance.has_active_rules(&tenant) {
            continue;
        }
        let Ok(ticket) = rt.compliance.begin_audit(&tenant) else {
            tracing::warn!(%tenant, "scheduled audit skipped: one is still running");
            continue;
        };
        let job = rt.clone();
        tokio::task::spawn_blocking(move || {
            match job.compliance.finish_audit(ticket, "schedule", &rules) {
                Ok((id, report)) => tracing::info!(
                    %tenant, id, compliant = report.summary.compliant_devices,
                    devices = report.summary.devices, "scheduled compliance audit"
                ),
                Err(e) => tracing::warn!(%tenant, error = %e, "scheduled compliance audit failed"),
            }
        });
    }
}

/// A refused or unresolvable address, as a host call reports it to the guest.
fn egress_error(e: crate::egress::EgressError) -> WitError {
    match e {
        crate::egress::EgressError::Refused(r) => WitError::Denied(r.to_string()),
        other => WitError::Unavailable(other.to_string()),
    }
}

fn backup_error(e: crate::backups::BackupError) -> RuntimeError {
    use crate::backups::BackupError;
    match e {
        BackupError::NoBackup(_) | BackupError::NoRevision(_) => {
            RuntimeError::NotFound(e.to_string())
        }
        BackupError::Git(_) | BackupError::Io(_) => RuntimeError::Internal(e.to_string()),
    }
}

/// Deploying needs `deploy`; granting a component secrets or devices (whose credentials it
/// then uses) also needs `secrets`.
fn check_grant_authority(manifest: &Manifest, scopes: Scopes) -> Result<(), RuntimeError> {
    if !scopes.allows(Scope::Deploy) {
        return Err(RuntimeError::Forbidden(
            "uploading a component needs a token with the `deploy` scope".into(),
        ));
    }
    let grants = &manifest.grants;
    let sensitive: Vec<&str> = [
        ("grants.secrets", !grants.secrets.is_empty()),
        ("grants.devices", !grants.devices.is_empty()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if !sensitive.is_empty() && !scopes.allows(Scope::Secrets) {
        return Err(RuntimeError::Forbidden(format!(
            "the manifest sets {}: granting those needs a token with the `secrets` scope",
            sensitive.join(" and ")
        )));
    }
    Ok(())
}

fn new_token(tenant: Option<&str>, request: &TokenRequest) -> (TokenInfo, String) {
    let (id, secret) = crate::tokens::new_secret();
    let (role, scopes) = match tenant {
        Some(_) => (Role::Tenant, request.scopes),
        None => (Role::Admin, Scopes::all()),
    };
    let info = TokenInfo {
        id,
        tenant: tenant.map(str::to_string),
        role,
        name: request.name.clone(),
        created_ms: crate::now_ms(),
        scopes,
        expires_ms: request.expires_ms,
    };
    (info, secret)
}

/// On first start, create the admin token and write it to `admin.token` (0600). The file
/// is only for the operator to read: SOTP never reads it, and it can be deleted.
fn bootstrap_admin(
    state: &StateStore,
    data: &crate::datadir::DataDir,
) -> anyhow::Result<Option<PathBuf>> {
    if state.has_admin_token()? {
        return Ok(None);
    }
    let (info, token) = new_token(None, &TokenRequest::full("bootstrap"));
    let name = "admin.token";
    crate::datadir::write_atomic(
        data.dir(),
        name,
        format!("{token}\n").as_bytes(),
        crate::datadir::FILE_MODE,
    )?;
    state.insert_token(&info, &hash_token(&token))?;
    Ok(Some(data.path().join(name)))
}

fn flow_query_error(e: FlowQueryError) -> RuntimeError {
    match e {
        FlowQueryError::Invalid(m) => RuntimeError::Invalid(m),
        FlowQueryError::Store(e) => RuntimeError::Internal(e.to_string()),
        FlowQueryError::Raw(e) => RuntimeError::Internal(e.to_string()),
    }
}
