//! Tenants and tokens: authentication, creating and deleting tenants (and purging all they
//! own from every store), tenant budgets, issuing and revoking tokens.

use super::{Key, Principal, Runtime};

use crate::budget::{TenantBudget, TenantLimits, Usage};
use crate::component::ComponentHandle;
use crate::error::RuntimeError;
use crate::manifest::is_component_name;
use crate::state::{RevokeError, StateStore, Tenant};
use crate::tokens::{AuthError, Role, Scopes, TokenInfo, hash_token};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

impl Runtime {
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

    pub(super) fn default_limits(&self) -> TenantLimits {
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
    pub(super) async fn purge_tenant(
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
        self.correlation.forget(id);
        tracing::info!(tenant = %id, points, "tenant deleted");
        Ok(())
    }

    /// The tenant's files: backups, component binaries, compiled artifacts, flows.
    pub(super) fn purge_files(&self, tenant: &str) -> Result<(), RuntimeError> {
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
        self.traces
            .purge(tenant)
            .map_err(|e| failed("traces", &e))?;
        self.secret_providers.forget(tenant);
        crate::aws::shared().forget(tenant);
        let file_sd = self.config.data_dir.join("file_sd").join(tenant);
        if file_sd.exists() {
            std::fs::remove_dir_all(&file_sd).map_err(|e| failed("file_sd documents", &e))?;
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
}

pub(super) fn new_token(tenant: Option<&str>, request: &TokenRequest) -> (TokenInfo, String) {
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
pub(super) fn bootstrap_admin(
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
