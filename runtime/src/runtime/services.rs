//! What host capabilities and the MQTT hub reach of the stores (`HostServices`,
//! `CredentialSource`), and the tenant settings they use: MQTT broker, secrets, backups.

use super::Runtime;

use crate::backups::{BackupSettings, Backups, Saved};
use crate::error::RuntimeError;
use crate::host::{HostServices, WitError};
use crate::inventory::Device;
use crate::mqtt::{CredentialSource, MqttSettings, MqttStatus};
use crate::state::StateStore;
use std::sync::Arc;

/// What host capabilities reach through `HostServices`: the state store, the backups, and
/// the operator's egress policy.
pub(super) struct StateSecrets {
    pub(super) state: Arc<StateStore>,
    pub(super) backups: Arc<Backups>,
    pub(super) egress: crate::egress::EgressPolicy,
    /// Secrets held by the tenant's providers (Vault), cached for their TTL.
    pub(super) providers: Arc<crate::secret_providers::SecretProviders>,
}

/// Where a tenant's secret provider settings live in the state database.
pub(super) const PROVIDERS: &str = "secret_providers";

impl HostServices for StateSecrets {
    fn read_secret(&self, tenant: &str, name: &str) -> Result<Option<String>, String> {
        use crate::secret_providers::{ProviderContext, ProviderSettings, SecretProviders};
        if !SecretProviders::is_provided(name) {
            return self.state.secret(tenant, name).map_err(|e| e.to_string());
        }
        let settings: ProviderSettings = self
            .state
            .setting(tenant, PROVIDERS)
            .map_err(|e| e.to_string())?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let builtin = |n: &str| self.state.secret(tenant, n).map_err(|e| e.to_string());
        let ctx = ProviderContext {
            settings: &settings,
            builtin: &builtin,
            egress: &self.egress,
        };
        self.providers.read(tenant, name, &ctx)
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

pub(super) const BACKUP_SETTING: &str = "backups";

pub(super) fn backup_settings(state: &StateStore, tenant: &str) -> Result<BackupSettings, String> {
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

pub(super) const MQTT_SETTING: &str = "mqtt";

impl Runtime {
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
}

/// A refused or unresolvable address, as a host call reports it to the guest.
pub(super) fn egress_error(e: crate::egress::EgressError) -> WitError {
    match e {
        crate::egress::EgressError::Refused(r) => WitError::Denied(r.to_string()),
        other => WitError::Unavailable(other.to_string()),
    }
}

impl Runtime {
    /// The tenant's secret providers (names of secrets, never values).
    pub fn secret_providers(
        &self,
        tenant: &str,
    ) -> Result<crate::secret_providers::ProviderSettings, RuntimeError> {
        self.tenant(tenant)?;
        Ok(self
            .state
            .setting(tenant, PROVIDERS)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    /// Set them; what was cached from the old ones is forgotten.
    pub fn set_secret_providers(
        &self,
        tenant: &str,
        settings: &crate::secret_providers::ProviderSettings,
    ) -> Result<(), RuntimeError> {
        self.tenant(tenant)?;
        settings.check().map_err(RuntimeError::Invalid)?;
        let text = serde_json::to_string(settings).unwrap_or_default();
        self.state.put_setting(tenant, PROVIDERS, &text)?;
        self.secret_providers.forget(tenant);
        Ok(())
    }
}
