//! `sotp:telemetry/backups`: hand a device's configuration to the tenant's Git repository.

use super::{HostState, WitError};
use crate::backups::MAX_CONFIG_BYTES as MAX_CONFIG;
use crate::host::sotp::telemetry::backups::{self, Saved};
use std::time::Instant;

impl backups::Host for HostState {
    fn store(&mut self, device: String, config: String) -> Result<Saved, WitError> {
        let device = self.granted_device(&device)?;
        if config.len() > MAX_CONFIG {
            return Err(WitError::Invalid(format!(
                "a configuration over {MAX_CONFIG} bytes"
            )));
        }
        let author = format!("{} v{}", self.env.component, self.env.version);
        let started = Instant::now();
        let result =
            self.env
                .services
                .store_backup(&self.env.tenant, &device.name, &author, &config);
        self.clock.in_host += started.elapsed();
        let saved = result.map_err(WitError::Unavailable)?;
        Ok(Saved {
            changed: saved.changed,
            commit: saved.commit,
        })
    }
}
