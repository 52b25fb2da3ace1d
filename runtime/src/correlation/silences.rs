//! Optional silences (`alertmanager.silence_children`): while an incident is open, the
//! alerts it suppressed are silenced in the tenant's Alertmanager too, so its other
//! receivers (the pager, the chat room) see the one `SotpIncident` and not the storm; the
//! silences end when the incident does.
//!
//! In: the suppressed children's alerts that came by Alertmanager's webhook, and the
//! silences and alerts that Alertmanager lists. Out: silences created, extended and expired
//! there; and the fingerprints of children that Alertmanager no longer holds as firing.
//!
//! Like the super-alert push, it reconciles rather than queues: every push computes the
//! silences the open incidents want — one per incident, alert name and the label that names
//! the device (`alertname="TargetDown", instance=~"10.0.0.2:9100|10.0.0.3:9100"`), tagged
//! `createdBy: sotp` with a comment naming tenant and incident — and makes Alertmanager's
//! match: missing ones created, changed or ending ones (they last an hour, renewed while the
//! incident is open, so a SOTP that goes away leaves nothing silenced for long) re-posted
//! under their id, and ours that no incident wants expired.
//!
//! A silence mutes a child for *every* receiver, SOTP's webhook included, and Alertmanager
//! drops an alert that resolves while muted without notifying anyone: SOTP would hold that
//! child firing for ever (the frozen child states users of other tools complain of). So each
//! push also reads Alertmanager's alerts under the silences' names: a silenced child that
//! SOTP has seen there and that is gone is resolved in SOTP (through the intake, so it is
//! recorded and replayable), not frozen — also when its incident closes at the same push.

use super::mapping::{AlertSettings, DeviceIndex};
use super::outputs::{self, AlertmanagerOut};
use super::store::SilenceableAlert;
use crate::egress::EgressPolicy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// How long a silence lasts; it is renewed once less than half is left.
pub const SILENCE_FOR_MS: i64 = 60 * 60 * 1000;
/// Who SOTP's silences say created them.
pub const CREATED_BY: &str = "sotp";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence the open incidents want.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// Its comment: what identifies it among ours.
    pub comment: String,
    pub matchers: Vec<Matcher>,
    /// The children's alerts it covers.
    pub fingerprints: Vec<String>,
}

/// One silence as Alertmanager lists it.
#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
    #[serde(default)]
    matchers: Vec<Matcher>,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "createdBy", default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    status: ListedStatus,
}

#[derive(Debug, Deserialize)]
struct ListedStatus {
    state: String,
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reconciled {
    pub created: usize,
    pub renewed: usize,
    pub expired: usize,
    /// Silences of ours that stay as they are.
    pub kept: usize,
}

/// The comment that marks a silence as the tenant's incident's.
fn comment_prefix(tenant: &str) -> String {
    format!("sotp tenant={tenant} incident=")
}

/// The silences the tenant's open incidents want, from their suppressed children's alerts.
pub fn wanted(
    tenant: &str,
    children: &[SilenceableAlert],
    index: &DeviceIndex,
    settings: &AlertSettings,
) -> Vec<Wanted> {
    // (incident, alertname, device label) → values, fingerprints.
    type Key = (i64, String, String);
    let mut groups: BTreeMap<Key, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    for a in children {
        let (Some(alertname), Some((label, value))) = (
            a.labels.get("alertname"),
            index.label_of(&a.labels, settings),
        ) else {
            continue;
        };
        let group = groups
            .entry((a.incident, alertname.clone(), label.to_string()))
            .or_default();
        group.0.insert(value.to_string());
        group.1.push(a.fingerprint.clone());
    }
    groups
        .into_iter()
        .map(|((incident, alertname, label), (values, fingerprints))| {
            let device = if values.len() == 1 {
                Matcher {
                    name: label.clone(),
                    value: values.into_iter().next().unwrap_or_default(),
                    is_regex: false,
                    is_equal: true,
                }
            } else {
                let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
                Matcher {
                    name: label.clone(),
                    value: alternatives.join("|"),
                    is_regex: true,
                    is_equal: true,
                }
            };
            Wanted {
                comment: format!(
                    "{}{incident} alertname={alertname} label={label}: suppressed by SOTP incident {incident}, ends with it",
                    comment_prefix(tenant)
                ),
                matchers: vec![
                    Matcher {
                        name: "alertname".into(),
                        value: alertname,
                        is_regex: false,
                        is_equal: true,
                    },
                    device,
                ],
                fingerprints,
            }
        })
        .collect()
}

/// Make the silences of `tenant` in the Alertmanager at `out` what `wanted` says.
pub fn reconcile(
    out: &AlertmanagerOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    tenant: &str,
    wanted: &[Wanted],
    now_ms: i64,
) -> Result<Reconciled, String> {
    let text = outputs::call("GET", &out.url, "/api/v2/silences", bearer, egress, None)?;
    let listed: Vec<Listed> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "GET {}/api/v2/silences: not a list of silences: {e}",
            out.url
        )
    })?;
    let prefix = comment_prefix(tenant);
    let mut ours: HashMap<&str, &Listed> = HashMap::new();
    let mut done = Reconciled::default();
    for s in &listed {
        let live = s.status.state == "active" || s.status.state == "pending";
        if !live || s.created_by != CREATED_BY || !s.comment.starts_with(&prefix) {
            continue;
        }
        if ours.insert(s.comment.as_str(), s).is_some() {
            expire(out, bearer, egress, &s.id)?; // a duplicate (a lost answer): one is enough
            done.expired += 1;
        }
    }
    let ends = now_ms + SILENCE_FOR_MS;
    for w in wanted {
        match ours.remove(w.comment.as_str()) {
            None => {
                post(out, bearer, egress, None, w, now_ms, ends)?;
                done.created += 1;
            }
            Some(s) => {
                let ending =
                    parse_ms(&s.ends_at).is_none_or(|end| end - now_ms < SILENCE_FOR_MS / 2);
                let mut have = s.matchers.clone();
                let mut want = w.matchers.clone();
                have.sort();
                want.sort();
                if ending || have != want {
                    post(out, bearer, egress, Some(&s.id), w, now_ms, ends)?;
                    done.renewed += 1;
                } else {
                    done.kept += 1;
                }
            }
        }
    }
    for s in ours.into_values() {
        expire(out, bearer, egress, &s.id)?;
        done.expired += 1;
    }
    Ok(done)
}

fn post(
    out: &AlertmanagerOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    id: Option<&str>,
    w: &Wanted,
    now_ms: i64,
    ends_ms: i64,
) -> Result<(), String> {
    let mut body = json!({
        "matchers": w.matchers,
        "startsAt": outputs::rfc3339(now_ms),
        "endsAt": outputs::rfc3339(ends_ms),
        "createdBy": CREATED_BY,
        "comment": w.comment,
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    outputs::call(
        "POST",
        &out.url,
        "/api/v2/silences",
        bearer,
        egress,
        Some((&body, "application/json")),
    )
    .map(|_| ())
}

fn expire(
    out: &AlertmanagerOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    id: &str,
) -> Result<(), String> {
    let path = format!("/api/v2/silence/{id}");
    outputs::call("DELETE", &out.url, &path, bearer, egress, None).map(|_| ())
}

fn parse_ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The fingerprints Alertmanager holds as firing (silenced or not) under `alertnames`.
pub fn firing_there<'n>(
    out: &AlertmanagerOut,
    bearer: Option<&str>,
    egress: &EgressPolicy,
    alertnames: impl IntoIterator<Item = &'n str>,
) -> Result<HashSet<String>, String> {
    let names: BTreeSet<&str> = alertnames.into_iter().collect();
    let mut firing = HashSet::new();
    for name in names {
        let filter = urlencode(&format!("alertname=\"{name}\""));
        let path = format!(
            "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true&filter={filter}"
        );
        let text = outputs::call("GET", &out.url, &path, bearer, egress, None)?;
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| format!("GET {}/api/v2/alerts: not a list of alerts: {e}", out.url))?;
        firing.extend(
            alerts
                .iter()
                .filter_map(|a| a["fingerprint"].as_str().map(str::to_string)),
        );
    }
    Ok(firing)
}

/// The alert names to ask Alertmanager about: those of the silences wanted and of the
/// children seen silenced before (their silence may be ending now).
pub fn alertnames<'a>(wanted: &'a [Wanted], seen: &'a Seen) -> BTreeSet<&'a str> {
    wanted
        .iter()
        .filter_map(|w| w.matchers.first().map(|m| m.value.as_str()))
        .chain(seen.values().map(String::as_str))
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Silenced children seen firing in Alertmanager: fingerprint → alert name.
pub type Seen = HashMap<String, String>;

/// Which silenced children have gone from Alertmanager: those seen there under a silence at
/// an earlier push and no longer there. A child stays tracked until it is gone — also once
/// its incident closed and its silence ended: what resolved while muted may only then be
/// dropped, and Alertmanager tells nobody. `seen` keeps the ones still there, plus the
/// children silenced now that are there.
pub fn vanished(seen: &mut Seen, wanted: &[Wanted], firing: &HashSet<String>) -> Vec<String> {
    let mut gone: Vec<String> = seen
        .keys()
        .filter(|fp| !firing.contains(fp.as_str()))
        .cloned()
        .collect();
    gone.sort();
    seen.retain(|fp, _| firing.contains(fp));
    for w in wanted {
        let alertname = w
            .matchers
            .first()
            .map(|m| m.value.clone())
            .unwrap_or_default();
        for fp in w
            .fingerprints
            .iter()
            .filter(|fp| firing.contains(fp.as_str()))
        {
            seen.insert(fp.clone(), alertname.clone());
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Device;

    fn device(name: &str, address: &str) -> Device {
        serde_json::from_value(json!({ "name": name, "address": address })).unwrap()
    }

    fn child(incident: i64, fp: &str, pairs: &[(&str, &str)]) -> SilenceableAlert {
        SilenceableAlert {
            incident,
            fingerprint: fp.into(),
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn one_silence_per_incident_alertname_and_device_label_with_escaped_values() {
        let index = DeviceIndex::new(&[
            device("acc1", "10.0.0.2"),
            device("acc2", "10.0.0.3"),
            device("acc3", "10.0.0.4"),
        ]);
        let settings = AlertSettings::default();
        let children = [
            child(
                1,
                "a",
                &[("alertname", "TargetDown"), ("instance", "10.0.0.2:9100")],
            ),
            child(
                1,
                "b",
                &[("alertname", "TargetDown"), ("instance", "10.0.0.3:9100")],
            ),
            child(1, "c", &[("alertname", "NodeDown"), ("device", "acc3")]),
            child(
                1,
                "d",
                &[("alertname", "TargetDown"), ("instance", "nowhere:9100")],
            ),
            child(2, "e", &[("instance", "10.0.0.4:9100")]),
        ];
        let w = wanted("acme", &children, &index, &settings);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].matchers[0].value, "NodeDown");
        assert_eq!(
            w[0].matchers[1],
            Matcher {
                name: "device".into(),
                value: "acc3".into(),
                is_regex: false,
                is_equal: true,
            }
        );
        assert_eq!(w[1].matchers[1].value, r"10\.0\.0\.2:9100|10\.0\.0\.3:9100");
        assert!(w[1].matchers[1].is_regex);
        assert_eq!(w[1].fingerprints, ["a", "b"]);
        assert!(
            w[1].comment
                .starts_with("sotp tenant=acme incident=1 alertname=TargetDown label=instance:")
        );
    }

    #[test]
    fn a_child_is_gone_only_once_it_was_seen_there() {
        let w = vec![Wanted {
            comment: "c".into(),
            matchers: vec![Matcher {
                name: "alertname".into(),
                value: "TargetDown".into(),
                is_regex: false,
                is_equal: true,
            }],
            fingerprints: vec!["a".into(), "b".into()],
        }];
        let mut seen = Seen::new();
        let only_a: HashSet<String> = ["a".to_string()].into();
        assert!(
            vanished(&mut seen, &w, &only_a).is_empty(),
            "b was never seen there"
        );
        assert_eq!(alertnames(&[], &seen), BTreeSet::from(["TargetDown"]));
        // The incident closed (nothing wanted), a still there: still tracked.
        assert!(vanished(&mut seen, &[], &only_a).is_empty());
        assert_eq!(alertnames(&[], &seen), BTreeSet::from(["TargetDown"]));
        // ... until it resolves there.
        assert_eq!(vanished(&mut seen, &[], &HashSet::new()), ["a"]);
        assert!(seen.is_empty());
    }

    #[test]
    fn filters_are_url_encoded() {
        assert_eq!(urlencode("alertname=\"A b\""), "alertname%3D%22A%20b%22");
    }
}
