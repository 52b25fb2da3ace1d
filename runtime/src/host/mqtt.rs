//! `sotp:telemetry/mqtt`: subscribe and publish through the tenant's broker session.

use super::{HostState, WitError};
use crate::grants::{deny_publish, deny_topic, validate_topic_filter};
use crate::host::sotp::telemetry::mqtt;

const MAX_PAYLOAD: usize = 256 * 1024;

impl mqtt::Host for HostState {
    fn subscribe(&mut self, filter: String) -> Result<(), WitError> {
        if let Some(reason) = deny_topic(&self.env.manifest.grants, &filter) {
            return Err(self.deny(reason));
        }
        validate_topic_filter(&filter).map_err(WitError::Invalid)?;
        let added = self.env.subscriptions.lock().insert(filter.clone());
        // A version already serving (subscribing outside `init`) takes effect at once;
        // otherwise the set is applied when the version is activated.
        if added && self.env.is_active() {
            self.env
                .mqtt
                .add_filter(&self.env.tenant, &self.env.component, &filter);
        }
        Ok(())
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), WitError> {
        if let Some(reason) = deny_publish(&self.env.manifest.grants, &topic) {
            return Err(self.deny(reason));
        }
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(WitError::Invalid(format!(
                "`{topic}` is not a topic to publish to"
            )));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(WitError::Invalid(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit",
                payload.len()
            )));
        }
        self.env
            .mqtt
            .publish(&self.env.tenant, &topic, payload, retain)
            .map_err(WitError::Unavailable)
    }
}
