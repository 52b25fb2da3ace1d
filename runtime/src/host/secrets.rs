//! `sotp:telemetry/secrets`: read a tenant secret the manifest grants by name.

use super::{HostState, WitError};
use crate::grants::deny_secret;
use crate::host::sotp::telemetry::secrets;
use std::time::Instant;

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, WitError> {
        if let Some(reason) = deny_secret(&self.env.manifest.grants, &name) {
            return Err(self.deny(reason));
        }
        let started = Instant::now();
        let result = self.env.services.read_secret(&self.env.tenant, &name);
        self.clock.in_host += started.elapsed();
        match result {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(WitError::Invalid(format!("no secret named `{name}`"))),
            Err(e) => Err(WitError::Unavailable(e)),
        }
    }
}
