//! Rule components: the active version of each `compliance-rule` component, as an audit
//! calls it. The component's findings become rule results like the YAML rules' (source
//! `component:<name>@<version>`); its `err`, a failed `init` or a trap becomes an error
//! result naming the device and the component.

use super::evaluate::Status;
use crate::host::{WitFinding, WitFindingStatus, WitRuleDevice};
use crate::instance::LoadedVersion;
use crate::inventory::Device;
use std::sync::Arc;

/// What a rule component says about one rule on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentFinding {
    pub rule: String,
    pub feature: String,
    pub status: Status,
    pub lines: Vec<String>,
    pub message: String,
    pub remediation: Vec<String>,
}

/// A rule component's active version.
pub trait RuleComponent: Send + Sync {
    fn name(&self) -> &str;
    /// `component:<name>@<version>`, what each of its results records.
    fn source(&self) -> String;
    fn evaluate(&self, device: &Device, config: &str) -> Result<Vec<ComponentFinding>, String>;
}

/// A loaded `compliance-rule` version (see `LoadedVersion::evaluate`).
pub struct ActiveRule {
    pub name: String,
    pub version: Arc<LoadedVersion>,
}

impl RuleComponent for ActiveRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn source(&self) -> String {
        format!("component:{}@{}", self.name, self.version.version())
    }

    fn evaluate(&self, device: &Device, config: &str) -> Result<Vec<ComponentFinding>, String> {
        let wit = WitRuleDevice {
            name: device.name.clone(),
            platform: device.platform.clone(),
            role: device.role.clone(),
            site: device.site.clone(),
            tags: device.tags.clone(),
            vars_json: serde_json::Value::Object(device.vars.clone()).to_string(),
        };
        let findings = self.version.evaluate(&wit, config)?;
        Ok(findings.into_iter().map(finding).collect())
    }
}

fn finding(f: WitFinding) -> ComponentFinding {
    let status = match f.status {
        WitFindingStatus::Compliant => Status::Compliant,
        WitFindingStatus::Missing => Status::Missing,
        WitFindingStatus::Extra => Status::Extra,
        WitFindingStatus::Error => Status::Error,
    };
    ComponentFinding {
        feature: if f.feature.is_empty() {
            f.rule.clone()
        } else {
            f.feature
        },
        rule: f.rule,
        status,
        lines: f.lines,
        message: f.message,
        remediation: f.remediation,
    }
}
