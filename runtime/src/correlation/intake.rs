//! What arrives: Alertmanager's webhook payload (version 4) and, for every other source, the
//! alerts Alertmanager's own API takes (`POST /api/v2/alerts`: a list of `{labels,
//! annotations, startsAt, endsAt, generatorURL}`), both normalized into [`AlertEvent`]s.
//!
//! Lenient where the wire is: unknown fields are ignored (newer Alertmanagers add
//! `routeLabels`, `notification_reason`), every field past `alerts[].labels` is optional, and
//! the zero time `0001-01-01T00:00:00Z` Alertmanager sends for an open `endsAt` means none.
//! Strict where it must be: labels present and bounded, times parseable, so a bad payload is a
//! 400 naming what is wrong rather than a half-stored batch.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Labels per alert, and bytes per label name or value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_BYTES: usize = 1024;
/// Bytes of all annotations of one alert.
pub const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert as received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Alertmanager's fingerprint of the label set (computed the same way when absent).
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// What one request brought.
#[derive(Clone, Debug, PartialEq)]
pub struct Intake {
    pub source: &'static str,
    pub alerts: Vec<AlertEvent>,
    /// Alerts the sender left out of the payload (Alertmanager's `max_alerts`).
    pub truncated: u64,
    pub receiver: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct IntakeError(pub String);

#[derive(Deserialize)]
struct Webhook {
    version: Option<String>,
    #[serde(rename = "truncatedAlerts", default)]
    truncated_alerts: u64,
    receiver: Option<String>,
    alerts: Vec<WireAlert>,
}

#[derive(Deserialize)]
struct WireAlert {
    status: Option<String>,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
}

/// An Alertmanager webhook body (payload version 4).
pub fn parse_webhook(body: &[u8], max_alerts: usize) -> Result<Intake, IntakeError> {
    let hook: Webhook = serde_json::from_slice(body)
        .map_err(|e| IntakeError(format!("not an Alertmanager webhook payload: {e}")))?;
    if let Some(v) = &hook.version
        && v != "4"
    {
        return Err(IntakeError(format!(
            "webhook payload version `{v}`: only version 4 is understood"
        )));
    }
    let alerts = events(hook.alerts, max_alerts, None)?;
    Ok(Intake {
        source: "alertmanager",
        alerts,
        truncated: hook.truncated_alerts,
        receiver: hook.receiver,
    })
}

/// A list of alerts as Alertmanager's API v2 takes them; an alert whose `endsAt` is past at
/// `now_ms` is resolved, as there.
pub fn parse_alerts(body: &[u8], max_alerts: usize, now_ms: i64) -> Result<Intake, IntakeError> {
    let list: Vec<WireAlert> = serde_json::from_slice(body).map_err(|e| {
        IntakeError(format!(
            "not a list of alerts ({{labels, annotations, startsAt, endsAt}}): {e}"
        ))
    })?;
    Ok(Intake {
        source: "api",
        alerts: events(list, max_alerts, Some(now_ms))?,
        truncated: 0,
        receiver: None,
    })
}

fn events(
    wire: Vec<WireAlert>,
    max_alerts: usize,
    now_ms: Option<i64>,
) -> Result<Vec<AlertEvent>, IntakeError> {
    if wire.len() > max_alerts {
        return Err(IntakeError(format!(
            "{} alerts in one request, over the limit of {max_alerts}",
            wire.len()
        )));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, a)| event(a, now_ms).map_err(|e| IntakeError(format!("alerts[{i}]: {e}"))))
        .collect()
}

fn event(a: WireAlert, now_ms: Option<i64>) -> Result<AlertEvent, String> {
    check_labels(&a.labels)?;
    let annotation_bytes: usize = a.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        return Err(format!(
            "annotations: {annotation_bytes} bytes, over {MAX_ANNOTATION_BYTES}"
        ));
    }
    let starts_at_ms = time(a.starts_at.as_deref(), "startsAt")?;
    let ends_at_ms = time(a.ends_at.as_deref(), "endsAt")?;
    let status = match (a.status.as_deref(), now_ms) {
        (Some("firing"), _) => AlertStatus::Firing,
        (Some("resolved"), _) => AlertStatus::Resolved,
        (Some(other), _) => return Err(format!("status: `{other}` is not firing or resolved")),
        (None, Some(now)) if ends_at_ms.is_some_and(|end| end <= now) => AlertStatus::Resolved,
        (None, _) => AlertStatus::Firing,
    };
    let fingerprint = match a.fingerprint {
        Some(f) if !f.is_empty() && f.len() <= 64 => f,
        _ => fingerprint(&a.labels),
    };
    Ok(AlertEvent {
        fingerprint,
        status,
        labels: a.labels,
        annotations: a.annotations,
        starts_at_ms,
        ends_at_ms,
        generator_url: a.generator_url.filter(|u| u.len() <= MAX_LABEL_BYTES),
    })
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.is_empty() {
        return Err("labels: an alert needs at least one label".into());
    }
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "labels: {} labels, over the limit of {MAX_LABELS}",
            labels.len()
        ));
    }
    for (name, value) in labels {
        let valid = !name.is_empty()
            && name.len() <= MAX_LABEL_BYTES
            && name.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
        if !valid {
            return Err(format!("labels: `{name}` is not a label name"));
        }
        if value.len() > MAX_LABEL_BYTES {
            return Err(format!(
                "labels.{name}: {} bytes, over {MAX_LABEL_BYTES}",
                value.len()
            ));
        }
    }
    Ok(())
}

/// An RFC 3339 time in ms; absent, empty or Go's zero time (year 1) is none.
fn time(text: Option<&str>, key: &str) -> Result<Option<i64>, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{key}: `{text}` is not an RFC 3339 time ({e})"))?;
    if t.timestamp() <= 0 {
        return Ok(None);
    }
    Ok(Some(t.timestamp_millis()))
}

/// Prometheus's label-set fingerprint (FNV-1a 64 over the sorted names and values, each
/// followed by 0xff), as Alertmanager computes it, in 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes.iter().chain(std::iter::once(&0xffu8)) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(value.as_bytes());
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = r#"{
      "receiver": "sotp", "status": "firing", "version": "4", "groupKey": "{}:{}",
      "truncatedAlerts": 2, "routeLabels": {"x": "y"}, "notification_reason": "new",
      "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "InstanceDown", "instance": "core1:9100"},
         "annotations": {"summary": "down"}, "startsAt": "2026-12-01T10:00:00.123Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": "abc"},
        {"status": "resolved", "labels": {"alertname": "InstanceDown", "instance": "acc1:9100"},
         "startsAt": "2026-12-01T10:00:00Z", "endsAt": "2026-12-01T10:05:00Z"}
      ]
    }"#;

    #[test]
    fn a_webhook_payload_is_read_with_its_optional_and_unknown_fields() {
        let intake = parse_webhook(HOOK.as_bytes(), 100).unwrap();
        assert_eq!(intake.truncated, 2);
        assert_eq!(intake.receiver.as_deref(), Some("sotp"));
        let [a, b] = &intake.alerts[..] else { panic!() };
        assert_eq!(
            (a.status, a.fingerprint.as_str()),
            (AlertStatus::Firing, "abc")
        );
        assert_eq!(a.ends_at_ms, None, "the zero endsAt is no end");
        assert_eq!(a.starts_at_ms, Some(1_796_119_200_123));
        assert_eq!(b.status, AlertStatus::Resolved);
        assert_eq!(
            b.fingerprint,
            fingerprint(&b.labels),
            "computed when absent"
        );
    }

    #[test]
    fn bad_payloads_say_what_is_wrong() {
        let err = |body: &str| parse_webhook(body.as_bytes(), 100).unwrap_err().0;
        assert!(err("{").contains("not an Alertmanager webhook payload"));
        assert!(err(r#"{"version":"3","alerts":[]}"#).contains("version `3`"));
        assert!(err(r#"{"alerts":[{"labels":{}}]}"#).contains("alerts[0]: labels"));
        assert!(err(r#"{"alerts":[{"labels":{"a":"b"},"startsAt":"noon"}]}"#).contains("startsAt"));
        assert!(err(r#"{"alerts":[{"labels":{"1a":"b"}}]}"#).contains("`1a`"));
        let many = format!(
            r#"{{"alerts":[{}]}}"#,
            [r#"{"labels":{"a":"b"}}"#; 3].join(",")
        );
        assert!(
            parse_webhook(many.as_bytes(), 2)
                .unwrap_err()
                .0
                .contains("over the limit")
        );
    }

    #[test]
    fn api_alerts_resolve_by_their_end_time() {
        let body = r#"[{"labels":{"alertname":"A"},"endsAt":"2026-12-01T10:00:00Z"},
                       {"labels":{"alertname":"B"}}]"#;
        let now = 1_796_119_200_000 + 1;
        let intake = parse_alerts(body.as_bytes(), 10, now).unwrap();
        assert_eq!(intake.alerts[0].status, AlertStatus::Resolved);
        assert_eq!(intake.alerts[1].status, AlertStatus::Firing);
    }

    #[test]
    fn fingerprints_are_alertmanagers() {
        // Bodies Alertmanager 0.25 sent (tests/data): each alert's fingerprint is the one we
        // compute from its labels, and every field of the payload is read.
        for body in [
            include_str!("../../../tests/data/alertmanager-webhook-0.25.json"),
            include_str!("../../../tests/data/alertmanager-webhook-0.25-mixed.json"),
            include_str!("../../../tests/data/alertmanager-webhook-0.25-resolved.json"),
        ] {
            let intake = parse_webhook(body.as_bytes(), 100).unwrap();
            assert!(!intake.alerts.is_empty());
            for a in &intake.alerts {
                assert_eq!(fingerprint(&a.labels), a.fingerprint, "{:?}", a.labels);
            }
        }
        let mixed = include_str!("../../../tests/data/alertmanager-webhook-0.25-mixed.json");
        let statuses: Vec<AlertStatus> = parse_webhook(mixed.as_bytes(), 100)
            .unwrap()
            .alerts
            .iter()
            .map(|a| a.status)
            .collect();
        assert!(
            statuses.contains(&AlertStatus::Firing) && statuses.contains(&AlertStatus::Resolved),
            "each alert's own status, not the group's"
        );
    }
}
