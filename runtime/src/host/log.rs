//! `sotp:telemetry/log`: the component's own diagnostic log (the ring shown by the API).

use super::{HostState, WitLevel};
use crate::host::sotp::telemetry::log;
use crate::stats::{LogLevel, LogSource};

impl log::Host for HostState {
    fn write(&mut self, level: WitLevel, message: String) {
        let env = &self.env;
        env.stats.log(
            LogLevel::from(level),
            LogSource::Guest,
            Some(env.version),
            &message,
        );
    }
}
