//! Out: each incident as one alert in the tenant's own Alertmanager (`POST /api/v2/alerts`),
//! so the people and routes already there see "core1 down (6 child devices affected)" and
//! not the storm; and the incidents as JSON to a webhook of the tenant's (a chat bridge, a
//! ticketing system). The incidents are the state: every push sends the open incidents and
//! those closed in the last [`RESOLVED_FOR`] (with `endsAt`), so a push that fails is simply
//! repeated by the next one (each change, and once a minute — which also keeps the alerts
//! alive within Alertmanager's `resolve_timeout`). Nothing queues up while it is down.
//!
//! The URL is the tenant's, so the connection goes through the operator's egress policy:
//! the host is resolved and checked, and the request goes to the checked address (plain
//! HTTP only for now: with TLS the certificate names the host, not the address).

use super::incidents::Incident;
use crate::egress::EgressPolicy;
pub use crate::outbound::call;
use crate::outbound::target;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a closed incident keeps being pushed as resolved.
pub const RESOLVED_FOR_MS: i64 = 10 * 60 * 1000;

/// Where a tenant's incidents go (`alertmanager` in the alert settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerOut {
    /// Its base URL, e.g. `http://alertmanager.example:9093`.
    pub url: String,
    /// A tenant secret holding a bearer token to send, if Alertmanager sits behind one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_secret: Option<String>,
    /// Also silence the suppressed children's alerts there while their incident is open
    /// (see `silences`). Only for the Alertmanager that sends SOTP its alerts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silence_children: bool,
}

impl AlertmanagerOut {
    pub fn check(&self) -> Result<(), String> {
        target(&self.url)
            .map(|_| ())
            .map_err(|e| format!("url: {e}"))
    }
}

/// A webhook the incidents are posted to (`webhook` in the alert settings): the body is
/// `{"version": "1", "tenant", "incidents": [...]}` — the open incidents and those closed in
/// the last ten minutes, each with its root, title, status, children and times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookOut {
    /// `http://host[:port]/path`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_secret: Option<String>,
}

impl WebhookOut {
    pub fn check(&self) -> Result<(), String> {
        target(&self.url)
            .map(|_| ())
            .map_err(|e| format!("url: {e}"))
    }
}

/// The webhook's body.
pub fn webhook_body(tenant: &str, incidents: &[Incident]) -> Value {
    json!({ "version": "1", "tenant": tenant, "incidents": incidents })
}

/// `http://host[:port][/prefix]` → (host, port, prefix without a trailing `/`).
/// One incident as an Alertmanager alert.
pub fn super_alert(tenant: &str, i: &Incident) -> Value {
    let mut alert = json!({
        "labels": {
            "alertname": "SotpIncident",
            "origin": "sotp",
            "sotp_tenant": tenant,
            "sotp_incident": i.id.to_string(),
            "root": i.root,
            "severity": "critical",
        },
        "annotations": {
            "summary": i.title,
            "children": i.children.join(", "),
            "suppressed_devices": i.children.len().to_string(),
        },
        "startsAt": rfc3339(i.opened_ms),
    });
    if let Some(closed) = i.closed_ms {
        alert["endsAt"] = json!(rfc3339(closed));
    }
    alert
}

pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// POST `alerts` to the Alertmanager at `out`, through `egress`.
pub fn push(
    out: &AlertmanagerOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    alerts: &[Value],
) -> Result<(), String> {
    let body = serde_json::to_vec(alerts).unwrap_or_default();
    post_json(&out.url, "/api/v2/alerts", bearer, egress, &body)
}

/// POST the incidents to the webhook at `out`, through `egress`.
pub fn post_webhook(
    out: &WebhookOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    body: &Value,
) -> Result<(), String> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    post_json(&out.url, "", bearer, egress, &body)
}

/// POST `body` (JSON) to `base` + `path`, connecting to the address `egress` checked.
fn post_json(
    base: &str,
    path: &str,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    body: &[u8],
) -> Result<(), String> {
    call(
        "POST",
        base,
        path,
        bearer,
        egress,
        Some((body, "application/json")),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_is_one_alert_ending_when_it_closes() {
        let mut i = Incident {
            id: 7,
            root: "core1".into(),
            title: "core1 down (2 child devices affected)".into(),
            status: "open".into(),
            acknowledged: false,
            opened_ms: 1_796_119_200_000,
            updated_ms: 0,
            closed_ms: None,
            policy: "p".into(),
            children: vec!["acc1".into(), "acc2".into()],
        };
        let a = super_alert("acme", &i);
        assert_eq!(a["labels"]["sotp_incident"], "7");
        assert_eq!(a["annotations"]["children"], "acc1, acc2");
        assert_eq!(a["startsAt"], "2026-12-01T10:00:00.000Z");
        assert!(a.get("endsAt").is_none());
        i.closed_ms = Some(1_796_119_260_000);
        assert_eq!(
            super_alert("acme", &i)["endsAt"],
            "2026-12-01T10:01:00.000Z"
        );
    }
}
