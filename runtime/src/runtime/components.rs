//! The component lifecycle the API drives: upload (compile, link as the manifest's world,
//! store), activate (hot swap), rollback, delete, the views, and message delivery — the same
//! path for every world. What runs a version is `crate::component`.

use super::Runtime;

use super::services::StateSecrets;
use crate::budget::TenantBudget;
use crate::component::{ComponentHandle, ComponentState, Deps};
use crate::error::RuntimeError;
use crate::host::InstanceEnv;
use crate::instance::LoadedVersion;
use crate::manifest::Manifest;
use crate::state::{Tenant, VersionRecord};
use crate::stats::{LastError, LogLine, StatsSnapshot};
use crate::tokens::{Scope, Scopes};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

impl Runtime {
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

    pub(super) async fn upload_inner(
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
                if existing.is_some() {
                    rt.check_same_world(&tenant, &checked)?;
                }
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

    pub(super) fn require_component(&self, tenant: &str, name: &str) -> Result<(), RuntimeError> {
        match self.state.component(tenant, name)? {
            Some(_) => Ok(()),
            None => Err(RuntimeError::NotFound(format!("no component `{name}`"))),
        }
    }

    pub(super) fn existing_handle(&self, tenant: &str, name: &str) -> Option<Arc<ComponentHandle>> {
        self.components
            .read()
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }

    /// The component's handle, made (and its queue task started) if it has none. Refused
    /// for a tenant that does not exist or is being deleted, so nothing can bring back a
    /// component of a deleted tenant.
    pub(super) fn handle(
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

    pub(super) fn instance_env(
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
        let manifest_file_sd = manifest.grants.file_sd;
        Arc::new(InstanceEnv {
            tenant: tenant.to_string(),
            component: name.to_string(),
            version,
            manifest,
            stats: handle.map(|h| h.stats.clone()).unwrap_or_default(),
            services: Arc::new(StateSecrets {
                state: self.state.clone(),
                backups: self.backups.clone(),
                egress: self.egress_for(tenant),
                providers: self.secret_providers.clone(),
            }),
            mqtt: self.mqtt.clone(),
            telemetry: self.telemetry.clone(),
            budget: self
                .budget(tenant)
                .unwrap_or_else(|_| TenantBudget::new(tenant, self.default_limits())),
            scratch_dir,
            file_sd_dir: (manifest_file_sd && handle.is_some())
                .then(|| self.file_sd_dir(tenant))
                .flatten(),
            subscriptions: Default::default(),
            active: Default::default(),
        })
    }

    /// The tenant's file_sd directory, `<data_dir>/file_sd/<tenant>/` (created if missing):
    /// Prometheus target group files the operator's tooling (or the tenant, through it)
    /// keeps there; components granted `file_sd` read it.
    pub fn file_sd_dir(&self, tenant: &str) -> Option<PathBuf> {
        let root = self.config.data_dir.join("file_sd");
        let made = std::fs::create_dir_all(root.join(tenant)).and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
        });
        match made {
            Ok(()) => Some(root.join(tenant)),
            Err(e) => {
                tracing::error!(%tenant, error = %e, "cannot create the file_sd directory");
                None
            }
        }
    }

    /// The component's scratch directory (created if missing), if its manifest grants one.
    pub(super) fn scratch_dir(&self, tenant: &str, component: &str) -> Option<PathBuf> {
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
    pub(super) fn remove_scratch(
        &self,
        tenant: &str,
        component: Option<&str>,
    ) -> std::io::Result<()> {
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
    pub(super) async fn start_version(
        self: &Arc<Self>,
        handle: &Arc<ComponentHandle>,
        version: u32,
    ) -> Result<std::time::Duration, RuntimeError> {
        let (tenant, name) = (handle.tenant.as_str(), handle.name.as_str());
        let loaded = self
            .load_version(tenant, name, version, Some(handle))
            .await?;
        let env = loaded.env.clone();
        let (t, n) = (tenant.to_string(), name.to_string());
        match handle.activate(loaded).await {
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

    /// A stored version compiled (from cache) and linked as its manifest's world, not yet
    /// warmed. Its instances report to `handle`'s stats, or to stats of their own (a dry run).
    pub(super) async fn load_version(
        self: &Arc<Self>,
        tenant: &str,
        name: &str,
        version: u32,
        handle: Option<&ComponentHandle>,
    ) -> Result<Arc<LoadedVersion>, RuntimeError> {
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
        let env = self.instance_env(tenant, name, version, manifest, handle);
        let loaded = LoadedVersion::new(
            self.engine.engine(),
            self.linkers.for_world(env.manifest.world),
            &component,
            env,
        )
        .map_err(|e| RuntimeError::WrongWorld(e.to_string()))?;
        Ok(Arc::new(loaded))
    }

    /// Why a component does not link as its manifest's world, naming the world it does
    /// implement when it is one this host serves.
    pub(super) fn wrong_world(
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

    /// Every version of a component implements one world: a rule uploaded under a
    /// collector's name is refused, not swapped in for it.
    pub(super) fn check_same_world(
        &self,
        tenant: &str,
        manifest: &Manifest,
    ) -> Result<(), RuntimeError> {
        let bounds = self.config.limits.manifest_bounds();
        let versions = self.state.versions(tenant, &manifest.name)?;
        let Some(world) = versions
            .last()
            .and_then(|v| Manifest::parse(&v.manifest, &bounds).ok())
            .map(|m| m.world)
        else {
            return Ok(());
        };
        if world == manifest.world {
            return Ok(());
        }
        Err(RuntimeError::Conflict(format!(
            "component `{}` is a {} component; a {} needs a name of its own",
            manifest.name,
            world.name(),
            manifest.world.name()
        )))
    }

    pub(super) fn check_memory_quota(
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

/// Deploying needs `deploy`; granting a component secrets or devices (whose credentials it
/// then uses) also needs `secrets`.
pub(super) fn check_grant_authority(
    manifest: &Manifest,
    scopes: Scopes,
) -> Result<(), RuntimeError> {
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
