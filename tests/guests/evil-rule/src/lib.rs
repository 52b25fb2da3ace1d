//! A hostile compliance rule: `[config] mode` is `panic` or `loop`, done on the devices
//! named in `[config] devices` (all if absent); other devices get a compliant finding.

use sotp_rule::{Device, Finding, Rule};

struct Evil {
    mode: String,
    devices: Option<Vec<String>>,
}

impl Rule for Evil {
    fn init(config: &sotp_rule::serde_json::Value) -> Result<Self, String> {
        Ok(Evil {
            mode: config["mode"].as_str().unwrap_or("panic").to_string(),
            devices: config["devices"].as_array().map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect()
            }),
        })
    }

    fn evaluate(&mut self, device: &Device, _config: &str) -> Result<Vec<Finding>, String> {
        let targeted = self
            .devices
            .as_ref()
            .is_none_or(|names| names.contains(&device.name));
        if targeted {
            match self.mode.as_str() {
                "loop" => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "error" => return Err(format!("cannot judge {}", device.name)),
                _ => panic!("evil rule on {}", device.name),
            }
        }
        Ok(vec![Finding::compliant("evil", "evil")])
    }
}

sotp_rule::rule!(Evil);
