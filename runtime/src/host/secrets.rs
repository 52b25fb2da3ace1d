//! `sotp:telemetry/secrets`: read a tenant secret the manifest grants by name.

use super::{HostState, WitError};
use crate::grants::deny_secret;
use crate::host::sotp::telemetry::secrets;
use std::time::Instant;

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, WitError> {
        granted_secret(self, &name)
    }
}

/// A secret the manifest grants (a refusal is counted), for `get` and for host capabilities
/// that take a secret's name (`http`'s CA bundle).
pub(crate) fn granted_secret(state: &mut HostState, name: &str) -> Result<String, WitError> {
    if let Some(reason) = deny_secret(&state.env.manifest.grants, name) {
        return Err(state.deny(reason));
    }
    let started = Instant::now();
    let result = state.env.services.read_secret(&state.env.tenant, name);
    state.clock.in_host += started.elapsed();
    match result {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(WitError::Invalid(format!("no secret named `{name}`"))),
        Err(e) => Err(WitError::Unavailable(e)),
    }
}
