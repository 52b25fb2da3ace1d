//! Compliance rule `ntp-servers`: a device's NTP servers are exactly the ones its inventory
//! variables list (`vars.ntp_servers`, or the variable `[config] var` names). Devices without
//! that variable are not in scope. Extra servers are removed (`no ...`, Junos `delete ...`),
//! missing ones added.

use sotp_rule::{Device, Finding, Rule};

struct NtpServers {
    var: String,
    command: String,
}

impl Rule for NtpServers {
    fn init(config: &sotp_rule::serde_json::Value) -> Result<Self, String> {
        let get =
            |key: &str, default: &str| config[key].as_str().unwrap_or(default).trim().to_string();
        Ok(NtpServers {
            var: get("var", "ntp_servers"),
            command: get("command", "ntp server"),
        })
    }

    fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String> {
        let vars = device.vars();
        let Some(wanted) = vars.get(&self.var) else {
            return Ok(Vec::new()); // not in scope
        };
        let Some(wanted) = wanted.as_array() else {
            return Ok(vec![Finding::error(
                "ntp-servers",
                "time",
                format!("variable `{}` is not a list of addresses", self.var),
            )]);
        };
        let wanted: Vec<String> = wanted
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let prefix = format!("{} ", self.command);
        // Configured servers: the first word after the command (options such as `prefer`
        // may follow it).
        let configured: Vec<(String, String)> = config
            .lines()
            .filter_map(|l| {
                let line = l.trim_end();
                let rest = line.strip_prefix(&prefix)?;
                let addr = rest.split_whitespace().next()?;
                Some((addr.to_string(), line.to_string()))
            })
            .collect();
        let missing = wanted
            .iter()
            .filter(|w| !configured.iter().any(|(a, _)| a == *w))
            .map(|w| format!("{prefix}{w}"))
            .collect();
        let extra = configured
            .iter()
            .filter(|(a, _)| !wanted.contains(a))
            .map(|(_, line)| line.clone())
            .collect();
        let remove = |line: &str| match line.strip_prefix("set ") {
            Some(rest) => format!("delete {rest}"),
            None => format!("no {line}"),
        };
        Ok(vec![Finding::from_lines(
            "ntp-servers",
            "time",
            missing,
            extra,
            remove,
        )])
    }
}

sotp_rule::rule!(NtpServers);
