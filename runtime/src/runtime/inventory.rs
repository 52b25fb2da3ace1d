//! The device inventory and the configuration backups kept for its devices (Git).

use super::Runtime;

use super::services::{BACKUP_SETTING, backup_settings};
use crate::backups::{BackupSettings, DeviceBackup, Revision, Saved};
use crate::error::RuntimeError;
use crate::inventory::Device;
use crate::tokens::{Scope, Scopes};
use std::collections::HashMap;

impl Runtime {
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

    /// Commit a configuration collected elsewhere (Oxidized, RANCID, a file) as the newest
    /// backup of an inventory device, as `ssh-config-backup` would, volatile lines removed.
    pub fn import_backup(
        &self,
        tenant: &str,
        device: &str,
        text: &str,
    ) -> Result<Saved, RuntimeError> {
        self.device(tenant, device)?;
        if text.len() > crate::backups::MAX_CONFIG_BYTES {
            return Err(RuntimeError::Invalid(format!(
                "a configuration is at most {} bytes",
                crate::backups::MAX_CONFIG_BYTES
            )));
        }
        let ignore = backup_settings(&self.state, tenant)
            .and_then(|s| s.compile())
            .map_err(RuntimeError::Internal)?;
        self.backups
            .store(tenant, device, "api import", text, &ignore)
            .map_err(backup_error)
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
}

pub(super) fn backup_error(e: crate::backups::BackupError) -> RuntimeError {
    use crate::backups::BackupError;
    match e {
        BackupError::NoBackup(_) | BackupError::NoRevision(_) => {
            RuntimeError::NotFound(e.to_string())
        }
        BackupError::Git(_) | BackupError::Io(_) => RuntimeError::Internal(e.to_string()),
    }
}
