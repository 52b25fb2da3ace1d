//! A hostile correlation policy: on a batch holding an alert labelled `evil="panic"`,
//! `evil="loop"` or `evil="error"` it does that; any other batch it suppresses every firing
//! alert into an incident rooted at the alert's own device (so a test can tell it ran).

use sotp_policy::{Alert, AlertStatus, CorrelationPolicy, Decision, OpenIncident};

struct Evil;

impl CorrelationPolicy for Evil {
    fn init(_config: &sotp_policy::serde_json::Value) -> Result<Self, String> {
        Ok(Evil)
    }

    fn decide(&mut self, _now_ms: i64, batch: &[Alert]) -> Result<Vec<Decision>, String> {
        for alert in batch {
            match alert.label("evil") {
                Some("loop") => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                Some("panic") => panic!("evil policy on {}", alert.fingerprint),
                Some("error") => return Err(format!("cannot decide on {}", alert.fingerprint)),
                _ => {}
            }
        }
        Ok(batch
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .filter_map(|a| {
                Some(Decision::Open(OpenIncident {
                    root: a.device.clone()?,
                    title: "evil".into(),
                    alert: a.fingerprint.clone(),
                    reason: "evil".into(),
                }))
            })
            .collect())
    }
}

sotp_policy::policy!(Evil);
