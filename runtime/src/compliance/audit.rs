//! An audit: every active rule set over the newest backup of every device in scope, into a
//! report; and the difference between two reports (the dry run).
//!
//! Nothing a device or a rule does stops an audit: an unparsable config, a template error or
//! a bad rendered regex becomes an `error` result naming the device and rule, is counted,
//! and everything else is still evaluated. Devices are spread over the machine's cores.

use super::components::RuleComponent;
use super::config::{self, Syntax};
use super::evaluate::{
    Change, RuleResult, Status, TemplateVars, WaiverNote, evaluate, template_vars,
};
use super::remediation;
use super::rules::{RuleSet, device_vars};
use crate::inventory::Device;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The newest backup of a device (commit, text), or why there is none.
pub type Backup = Result<(String, String), String>;

/// A device and how to load its newest backup: called when the device's turn comes, so an
/// audit holds one configuration per thread rather than every tenant's config at once.
pub struct DeviceInput {
    pub device: Device,
    pub backup: Box<dyn Fn() -> Backup + Send + Sync>,
}

impl DeviceInput {
    /// A device whose backup is already in memory.
    pub fn loaded(device: Device, backup: Backup) -> DeviceInput {
        DeviceInput {
            device,
            backup: Box::new(move || backup.clone()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Waiver {
    pub id: String,
    pub device: String,
    pub rule: String,
    pub reason: String,
    pub expires_ms: i64,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceReport {
    pub device: String,
    /// The backup commit audited; `None`: no backup (every rule in scope is an error).
    pub commit: Option<String>,
    /// compliant features / (features − fully waived features), 0–100.
    pub percent: f64,
    pub features: usize,
    pub compliant_features: usize,
    pub waived_features: usize,
    pub compliant: bool,
    pub results: Vec<RuleResult>,
    /// Every non-waived rule's changes, in one applicable order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediation: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleSummary {
    pub rule: String,
    pub feature: String,
    pub source: String,
    pub pass: usize,
    pub fail: usize,
    pub waived: usize,
    pub error: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub devices: usize,
    pub compliant_devices: usize,
    /// Compliant devices / devices audited, 0–100 ("92 % of devices compliant").
    pub percent_devices: f64,
    /// The mean of the devices' feature percentages.
    pub percent_features: f64,
    pub errors: usize,
    pub waived: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The rule files and versions the audit ran (`file@version`).
    pub sources: Vec<String>,
    pub summary: Summary,
    pub rules: Vec<RuleSummary>,
    pub devices: Vec<DeviceReport>,
}

/// Run `sets` and rule `components` over `inputs`; `done` counts devices finished (for
/// progress).
pub fn audit(
    sets: &[Arc<RuleSet>],
    components: &[Arc<dyn RuleComponent>],
    inputs: &[DeviceInput],
    waivers: &[Waiver],
    now_ms: i64,
    done: &AtomicUsize,
) -> Report {
    let waivers: HashMap<(&str, &str), &Waiver> = waivers
        .iter()
        .filter(|w| w.expires_ms > now_ms)
        .map(|w| ((w.device.as_str(), w.rule.as_str()), w))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(inputs.len().max(1));
    let chunk = inputs.len().div_ceil(threads).max(1);
    let mut devices: Vec<DeviceReport> = std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                let waivers = &waivers;
                s.spawn(move || {
                    part.iter()
                        .filter_map(|input| {
                            let report = audit_device(sets, components, input, waivers);
                            done.fetch_add(1, Ordering::Relaxed);
                            report
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    let rules = summarize_rules(&devices);
    let summary = summarize(&devices);
    Report {
        sources: sets
            .iter()
            .map(|s| format!("{}@{}", s.file, s.version))
            .chain(components.iter().map(|c| c.source()))
            .collect(),
        summary,
        rules,
        devices,
    }
}

/// One device against every rule in scope; `None` if no rule covers it.
fn audit_device(
    sets: &[Arc<RuleSet>],
    components: &[Arc<dyn RuleComponent>],
    input: &DeviceInput,
    waivers: &HashMap<(&str, &str), &Waiver>,
) -> Option<DeviceReport> {
    let device = &input.device;
    let in_scope: Vec<(&RuleSet, &super::rules::Rule)> = sets
        .iter()
        .flat_map(|set| set.rules.iter().map(move |r| (&**set, r)))
        .filter(|(_, r)| r.scope.covers(device))
        .collect();
    if in_scope.is_empty() && components.is_empty() {
        return None;
    }
    let syntax = Syntax::of_platform(device.platform.as_deref());
    let backup = (input.backup)();
    // Parsed for the rule files only (components get the text): no rule file in scope, no
    // parsing.
    let parsed = match &backup {
        _ if in_scope.is_empty() => Err(String::new()),
        Ok((_, text)) => config::parse(text, syntax).map_err(|e| format!("config: {e}")),
        Err(e) => Err(e.clone()),
    };
    let mut results = Vec::with_capacity(in_scope.len());
    let mut changes: Vec<Change> = Vec::new();
    let mut vars_by_set: HashMap<*const RuleSet, TemplateVars> = HashMap::new();
    for (set, rule) in in_scope {
        let (mut result, rule_changes) = match &parsed {
            Ok(cfg) => {
                let vars = vars_by_set
                    .entry(set as *const RuleSet)
                    .or_insert_with(|| template_vars(&device_vars(set, device)));
                evaluate(set, rule, cfg, syntax, vars)
            }
            Err(e) => (
                RuleResult::error(&rule.id, &rule.feature, set.source(), e.clone()),
                Vec::new(),
            ),
        };
        if waive(&mut result, device, waivers) {
            changes.extend(rule_changes);
        }
        results.push(result);
    }
    let mut component_fixes = Vec::new();
    for component in components {
        for mut result in component_results(component.as_ref(), device, &backup) {
            if waive(&mut result, device, waivers) {
                component_fixes.extend(result.remediation.iter().cloned());
            }
            results.push(result);
        }
    }
    if results.is_empty() {
        return None;
    }
    let (features, compliant_features, waived_features) = feature_counts(&results);
    let counted = features - waived_features;
    let percent = if counted == 0 {
        100.0
    } else {
        100.0 * compliant_features as f64 / counted as f64
    };
    Some(DeviceReport {
        device: device.name.clone(),
        commit: backup.as_ref().ok().map(|(c, _)| c.clone()),
        percent,
        features,
        compliant_features,
        waived_features,
        compliant: compliant_features == counted,
        remediation: remediation::plan(&changes, syntax)
            .into_iter()
            .chain(component_fixes)
            .collect(),
        results,
    })
}

/// Mark a failing result waived if a waiver covers it; true if it still needs fixing.
fn waive(
    result: &mut RuleResult,
    device: &Device,
    waivers: &HashMap<(&str, &str), &Waiver>,
) -> bool {
    match waivers.get(&(device.name.as_str(), result.rule.as_str())) {
        Some(w) if result.status != Status::Compliant => {
            result.status = Status::Waived;
            result.waiver = Some(WaiverNote {
                reason: w.reason.clone(),
                expires_ms: w.expires_ms,
            });
            false
        }
        _ => true,
    }
}

/// A rule component's results on one device; its failure is one error result named after it.
fn component_results(
    component: &dyn RuleComponent,
    device: &Device,
    backup: &Backup,
) -> Vec<RuleResult> {
    let source = component.source();
    let name = component.name();
    let error = |message: String| RuleResult::error(name, name, &source, message);
    let text = match backup {
        Ok((_, text)) => text,
        Err(e) => return vec![error(e.clone())],
    };
    match component.evaluate(device, text) {
        Ok(findings) => findings
            .into_iter()
            .map(|f| {
                let (missing, extra) = match f.status {
                    Status::Missing => (f.lines, Vec::new()),
                    Status::Extra => (Vec::new(), f.lines),
                    _ => (Vec::new(), Vec::new()),
                };
                RuleResult {
                    rule: f.rule,
                    feature: f.feature,
                    source: source.clone(),
                    status: f.status,
                    missing,
                    extra,
                    message: f.message,
                    remediation: f.remediation,
                    waiver: None,
                }
            })
            .collect(),
        Err(message) => vec![error(format!("component {}: {message}", component.name()))],
    }
}

/// (features, compliant features, waived features). A feature is compliant when every rule
/// of it is; waived when every rule of it is compliant or waived and at least one is waived;
/// otherwise it fails.
fn feature_counts(results: &[RuleResult]) -> (usize, usize, usize) {
    let mut by_feature: BTreeMap<&str, (bool, bool)> = BTreeMap::new(); // (all ok, any waived)
    for r in results {
        let e = by_feature.entry(&r.feature).or_insert((true, false));
        match r.status {
            Status::Compliant => {}
            Status::Waived => e.1 = true,
            _ => e.0 = false,
        }
    }
    let features = by_feature.len();
    let waived = by_feature.values().filter(|(ok, w)| *ok && *w).count();
    let compliant = by_feature.values().filter(|(ok, w)| *ok && !*w).count();
    (features, compliant, waived)
}

fn summarize_rules(devices: &[DeviceReport]) -> Vec<RuleSummary> {
    let mut by_rule: BTreeMap<(String, String), RuleSummary> = BTreeMap::new();
    for d in devices {
        for r in &d.results {
            let s = by_rule
                .entry((r.source.clone(), r.rule.clone()))
                .or_insert_with(|| RuleSummary {
                    rule: r.rule.clone(),
                    feature: r.feature.clone(),
                    source: r.source.clone(),
                    ..Default::default()
                });
            match r.status {
                Status::Compliant => s.pass += 1,
                Status::Waived => s.waived += 1,
                Status::Error => s.error += 1,
                Status::Missing | Status::Extra => s.fail += 1,
            }
        }
    }
    by_rule.into_values().collect()
}

fn summarize(devices: &[DeviceReport]) -> Summary {
    let n = devices.len();
    let compliant = devices.iter().filter(|d| d.compliant).count();
    let count = |status| {
        devices
            .iter()
            .flat_map(|d| &d.results)
            .filter(|r| r.status == status)
            .count()
    };
    Summary {
        devices: n,
        compliant_devices: compliant,
        percent_devices: if n == 0 {
            100.0
        } else {
            100.0 * compliant as f64 / n as f64
        },
        percent_features: if n == 0 {
            100.0
        } else {
            devices.iter().map(|d| d.percent).sum::<f64>() / n as f64
        },
        errors: count(Status::Error),
        waived: count(Status::Waived),
    }
}

/// What a draft would change: devices whose compliance changes, results that appear, go
/// away, or change status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DryRun {
    pub active: Summary,
    pub draft: Summary,
    pub devices_changed: Vec<DeviceChange>,
    pub findings_new: Vec<Finding>,
    pub findings_gone: Vec<Finding>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeviceChange {
    pub device: String,
    pub compliant_before: bool,
    pub compliant_after: bool,
    pub percent_before: f64,
    pub percent_after: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub device: String,
    pub rule: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn findings(report: &Report) -> Vec<Finding> {
    report
        .devices
        .iter()
        .flat_map(|d| {
            d.results
                .iter()
                .filter(|r| r.status != Status::Compliant)
                .map(|r| Finding {
                    device: d.device.clone(),
                    rule: r.rule.clone(),
                    status: r.status,
                    missing: r.missing.clone(),
                    extra: r.extra.clone(),
                    message: r.message.clone(),
                })
        })
        .collect()
}

pub fn diff(active: &Report, draft: &Report) -> DryRun {
    let before: HashMap<&str, &DeviceReport> = active
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d))
        .collect();
    let after: HashMap<&str, &DeviceReport> = draft
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d))
        .collect();
    let mut names: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let devices_changed = names
        .into_iter()
        .filter_map(|name| {
            let b = before.get(name);
            let a = after.get(name);
            let (cb, pb) = b.map_or((true, 100.0), |d| (d.compliant, d.percent));
            let (ca, pa) = a.map_or((true, 100.0), |d| (d.compliant, d.percent));
            (cb != ca).then(|| DeviceChange {
                device: name.to_string(),
                compliant_before: cb,
                compliant_after: ca,
                percent_before: pb,
                percent_after: pa,
            })
        })
        .collect();
    let old = findings(active);
    let new = findings(draft);
    DryRun {
        active: active.summary.clone(),
        draft: draft.summary.clone(),
        devices_changed,
        findings_new: new.iter().filter(|f| !old.contains(f)).cloned().collect(),
        findings_gone: old.iter().filter(|f| !new.contains(f)).cloned().collect(),
    }
}

/// The report as CSV: one row per device and rule.
pub fn to_csv(report: &Report) -> Result<String, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "device",
        "commit",
        "rule",
        "feature",
        "source",
        "status",
        "missing",
        "extra",
        "message",
        "remediation",
    ])
    .map_err(|e| e.to_string())?;
    for d in &report.devices {
        for r in &d.results {
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            w.write_record([
                d.device.as_str(),
                d.commit.as_deref().unwrap_or(""),
                &r.rule,
                &r.feature,
                &r.source,
                &status,
                &r.missing.join("\n"),
                &r.extra.join("\n"),
                &r.message,
                &r.remediation.join("\n"),
            ])
            .map_err(|e| e.to_string())?;
        }
    }
    String::from_utf8(w.into_inner().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::rules::compile;

    fn device(name: &str, platform: &str) -> Device {
        serde_json::from_value(serde_json::json!({
            "name": name, "address": "192.0.2.1", "platform": platform
        }))
        .unwrap()
    }

    const RULES: &str = "vars: { ntp_servers: [10.0.0.1] }\nrules:\n  - id: ntp\n    intended: 'ntp server {{ ntp_servers[0] }}'\n    lines_like: '^ntp server '\n  - id: no-http\n    feature: mgmt\n    forbidden: ['ip http server']\n";

    fn inputs() -> Vec<DeviceInput> {
        vec![
            DeviceInput::loaded(
                device("good", "ios"),
                Ok(("c1".into(), "ntp server 10.0.0.1\n".into())),
            ),
            DeviceInput::loaded(
                device("bad", "ios"),
                Ok(("c2".into(), "ntp server 10.9.9.9\nip http server\n".into())),
            ),
            DeviceInput::loaded(
                device("junk", "junos"),
                Ok(("c3".into(), "system {\n".into())),
            ),
            DeviceInput::loaded(device("none", "ios"), Err("no backup".into())),
        ]
    }

    #[test]
    fn every_device_is_audited_whatever_the_others_do() {
        let set = Arc::new(compile("base.yaml", 3, RULES).unwrap());
        let done = AtomicUsize::new(0);
        let report = audit(&[set], &[], &inputs(), &[], 0, &done);
        assert_eq!(done.load(Ordering::Relaxed), 4);
        let by: HashMap<_, _> = report
            .devices
            .iter()
            .map(|d| (d.device.as_str(), d))
            .collect();
        assert!(by["good"].compliant);
        assert_eq!(by["bad"].percent, 0.0);
        assert_eq!(
            by["bad"].remediation,
            [
                "no ntp server 10.9.9.9",
                "no ip http server",
                "ntp server 10.0.0.1"
            ]
        );
        assert!(by["junk"].results.iter().all(|r| r.status == Status::Error));
        assert!(by["junk"].results[0].message.contains("config: line"));
        assert_eq!(report.summary.devices, 4);
        assert_eq!(report.summary.compliant_devices, 1);
        assert_eq!(report.summary.errors, 4);
        assert_eq!(report.sources, ["base.yaml@3"]);
        let ntp = report.rules.iter().find(|r| r.rule == "ntp").unwrap();
        assert_eq!((ntp.pass, ntp.fail, ntp.error), (1, 1, 2));
    }

    #[test]
    fn a_waiver_shows_as_waived_until_it_expires() {
        let set = Arc::new(compile("base.yaml", 1, RULES).unwrap());
        let waiver = Waiver {
            id: "w1".into(),
            device: "bad".into(),
            rule: "no-http".into(),
            reason: "legacy UI until the migration".into(),
            expires_ms: 1_000,
            created_ms: 0,
        };
        let done = AtomicUsize::new(0);
        let report = audit(
            std::slice::from_ref(&set),
            &[],
            &inputs(),
            std::slice::from_ref(&waiver),
            500,
            &done,
        );
        let bad = report.devices.iter().find(|d| d.device == "bad").unwrap();
        let http = bad.results.iter().find(|r| r.rule == "no-http").unwrap();
        assert_eq!(http.status, Status::Waived);
        assert_eq!(http.waiver.as_ref().unwrap().reason, waiver.reason);
        assert_eq!(
            (bad.features, bad.waived_features, bad.percent),
            (2, 1, 0.0)
        );
        assert!(!bad.remediation.iter().any(|l| l.contains("http")));
        let later = audit(&[set], &[], &inputs(), &[waiver], 1_000, &done);
        let bad = later.devices.iter().find(|d| d.device == "bad").unwrap();
        assert!(bad.results.iter().all(|r| r.status != Status::Waived));
    }

    #[test]
    fn a_dry_run_names_exactly_the_devices_whose_status_changes() {
        let active = Arc::new(compile("base.yaml", 1, RULES).unwrap());
        let draft =
            Arc::new(compile("base.yaml", 2, &RULES.replace("10.0.0.1]", "10.9.9.9]")).unwrap());
        let done = AtomicUsize::new(0);
        let a = audit(&[active], &[], &inputs(), &[], 0, &done);
        let b = audit(&[draft], &[], &inputs(), &[], 0, &done);
        let dry = diff(&a, &b);
        let changed: Vec<_> = dry
            .devices_changed
            .iter()
            .map(|d| d.device.as_str())
            .collect();
        assert_eq!(changed, ["good"]);
        assert!(
            dry.findings_new
                .iter()
                .any(|f| f.device == "good" && f.rule == "ntp")
        );
        assert!(
            dry.findings_gone
                .iter()
                .any(|f| f.device == "bad" && f.rule == "ntp")
        );
    }
}
