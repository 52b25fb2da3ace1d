//! When each tenant's audit runs by itself: a cron expression in the tenant's time zone
//! (croner for the expression, chrono-tz for the zone, daylight-saving changes included).
//! Default: nightly at 02:00 UTC. A seconds field is allowed (`*/30 * * * * *`).

use chrono::{TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five fields (minute hour day month weekday) or six with seconds first.
    pub cron: String,
    /// An IANA zone name (`Europe/Amsterdam`); the cron is read in it.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn enabled() -> bool {
    true
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            cron: "0 2 * * *".into(),
            timezone: utc(),
            enabled: true,
        }
    }
}

impl Schedule {
    fn parsed(&self) -> Result<(Cron, chrono_tz::Tz), String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&self.cron)
            .map_err(|e| format!("cron `{}`: {e}", self.cron))?;
        let tz: chrono_tz::Tz = self
            .timezone
            .parse()
            .map_err(|_| format!("time zone `{}`: not an IANA zone name", self.timezone))?;
        Ok((cron, tz))
    }

    /// Check the expression and the zone.
    pub fn check(&self) -> Result<(), String> {
        self.parsed().map(|_| ())
    }

    /// The first scheduled time after `after_ms` (milliseconds since the epoch); `None` when
    /// disabled or never.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        let (cron, tz) = self.parsed().ok()?;
        let start = Utc
            .timestamp_millis_opt(after_ms)
            .single()?
            .with_timezone(&tz);
        cron.find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn nightly_in_the_tenants_zone_across_daylight_saving() {
        let s = Schedule {
            cron: "0 2 * * *".into(),
            timezone: "Europe/Amsterdam".into(),
            enabled: true,
        };
        // 02:00 in Amsterdam is 01:00 UTC in winter...
        assert_eq!(
            s.next_after(ms("2026-12-01T12:00:00Z")),
            Some(ms("2026-12-02T01:00:00Z"))
        );
        // ... and 00:00 UTC in summer.
        assert_eq!(
            s.next_after(ms("2026-07-01T12:00:00Z")),
            Some(ms("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn seconds_are_optional_and_bad_input_is_named() {
        let s = Schedule {
            cron: "*/10 * * * * *".into(),
            ..Default::default()
        };
        assert_eq!(
            s.next_after(ms("2026-12-01T12:00:01Z")),
            Some(ms("2026-12-01T12:00:10Z"))
        );
        let bad = Schedule {
            cron: "61 * * * *".into(),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().contains("cron `61 * * * *`"));
        let zone = Schedule {
            timezone: "Mars/Olympus".into(),
            ..Default::default()
        };
        assert!(zone.check().unwrap_err().contains("Mars/Olympus"));
        let off = Schedule {
            enabled: false,
            ..Default::default()
        };
        assert_eq!(off.next_after(0), None);
    }
}
