//! On each tick, for every granted inventory device with SSH credentials: run
//! `show running-config` (or the configured `command`), hand the text to the host's Git
//! backups (a commit only when it changed), and emit `config_backup_ok` and
//! `config_backup_changed` per device. One unreachable device does not stop the others; the
//! failures are the call's error (visible as the component's last error).
//!
//! Config: `command` (default "show running-config"), `tags` (only devices with one of
//! these tags), `timeout_ms` (default 20000).

use sotp_guest::{Collector, Config, Samples, Tick};

struct Backup {
    command: String,
    tags: Vec<String>,
    timeout_ms: u32,
}

impl Collector for Backup {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Backup {
            command: config.str_or("command", "show running-config").to_string(),
            tags: config.strings("tags"),
            timeout_ms: config.u64_or("timeout_ms", 20_000) as u32,
        })
    }

    fn on_tick(&mut self, tick: Tick) -> Result<(), String> {
        let devices: Vec<_> = sotp_guest::inventory::devices()
            .into_iter()
            .filter(|d| {
                d.has_ssh && (self.tags.is_empty() || d.tags.iter().any(|t| self.tags.contains(t)))
            })
            .collect();
        let mut failures = Vec::new();
        let mut out = Samples::new();
        for device in devices {
            let result = self.back_up(&device.name);
            let (ok, changed) = match &result {
                Ok(changed) => (1.0, if *changed { 1.0 } else { 0.0 }),
                Err(_) => (0.0, 0.0),
            };
            out.push("config_backup_ok", ok)
                .label("device", &device.name)
                .at(tick.scheduled_at_ms);
            out.push("config_backup_changed", changed)
                .label("device", &device.name)
                .at(tick.scheduled_at_ms);
            if let Err(e) = result {
                failures.push(format!("{}: {e}", device.name));
            }
        }
        out.emit()?;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Backup {
    /// Fetch and store one device's configuration; true if it changed.
    fn back_up(&self, device: &str) -> Result<bool, String> {
        let outputs =
            sotp_guest::ssh::run(device, std::slice::from_ref(&self.command), self.timeout_ms)
                .map_err(|e| sotp_guest::describe(&e))?;
        let output = outputs.into_iter().next().ok_or("no output")?;
        if output.exit_status.is_some_and(|s| s != 0) {
            return Err(format!(
                "`{}` exited with {:?}: {}",
                self.command,
                output.exit_status,
                output.output.trim()
            ));
        }
        if output.truncated {
            return Err("the configuration is larger than the SSH output cap".into());
        }
        let saved = sotp_guest::backups::store(device, &output.output)
            .map_err(|e| sotp_guest::describe(&e))?;
        if saved.changed {
            sotp_guest::log::info(&format!(
                "{device}: configuration changed, commit {}",
                saved.commit
            ));
        }
        Ok(saved.changed)
    }
}

sotp_guest::collector!(Backup);
