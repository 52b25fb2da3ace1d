//! The SOTP rule SDK: a compliance rule is one file implementing [`Rule`] and a manifest with
//! `world = "compliance-rule"`.
//!
//! ```ignore
//! use sotp_rule::{Device, Finding, Rule};
//!
//! struct NoTelnet;
//!
//! impl Rule for NoTelnet {
//!     fn init(_config: &serde_json::Value) -> Result<Self, String> {
//!         Ok(NoTelnet)
//!     }
//!     fn evaluate(&mut self, _device: &Device, config: &str) -> Result<Vec<Finding>, String> {
//!         let bad: Vec<String> = config.lines().filter(|l| l.contains("telnet")).map(String::from).collect();
//!         Ok(vec![Finding::extra("no-telnet", "management", bad, |l| format!("no {}", l.trim()))])
//!     }
//! }
//!
//! sotp_rule::rule!(NoTelnet);
//! ```
//!
//! A crate of its own, not a module of the collector SDK: each SDK carries its world's
//! component type, and a rule must not carry the collector's.

/// The raw `wit-bindgen` bindings.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "compliance-rule",
        pub_export_macro: true,
        export_macro_name: "__export_compliance_rule_world",
        default_bindings_module: "sotp_rule::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::sotp::telemetry::compliance_types::{Device, Finding, Status};
pub use serde_json;

/// The host interfaces a rule may use.
pub mod host {
    pub use crate::bindings::sotp::telemetry::{inventory, log};
}

/// Reading indentation-nested configurations (IOS, IOS-XE, NX-OS, EOS, FRR): a line at the
/// left margin opens a section, the indented lines after it are its children.
pub mod config {
    /// A top-level line and the lines indented under it, as the configuration has them
    /// (indentation kept; trailing blanks and blank lines dropped).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Section<'a> {
        pub header: &'a str,
        pub children: Vec<&'a str>,
    }

    impl<'a> Section<'a> {
        /// The children one level down (the least indented), trimmed: an interface's own
        /// `description`, not that of a service instance nested under it.
        pub fn direct_children(&self) -> impl Iterator<Item = &'a str> + '_ {
            let depth = self.children.iter().map(|l| indent(l)).min();
            self.children
                .iter()
                .filter(move |l| Some(indent(l)) == depth)
                .map(|l| l.trim())
        }
    }

    /// The top-level sections whose header `wanted` accepts, in configuration order.
    pub fn sections<'a>(config: &'a str, wanted: impl Fn(&str) -> bool) -> Vec<Section<'a>> {
        let mut found = Vec::new();
        let mut open: Option<Section> = None;
        for line in config.lines().map(str::trim_end) {
            if line.is_empty() {
                continue;
            }
            if indent(line) > 0 {
                if let Some(section) = open.as_mut() {
                    section.children.push(line);
                }
                continue;
            }
            found.extend(open.take());
            if wanted(line) {
                open = Some(Section {
                    header: line,
                    children: Vec::new(),
                });
            }
        }
        found.extend(open);
        found
    }

    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const CONFIG: &str = "\
interface Gi0/1
 description uplink
 service instance 10 ethernet
  description customer
!
interface Gi0/2
line vty 0 4
 transport input ssh
";

        #[test]
        fn sections_end_at_the_next_top_level_line() {
            let found = sections(CONFIG, |l| l.starts_with("interface "));
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].header, "interface Gi0/1");
            assert_eq!(found[0].children.len(), 3);
            assert_eq!(found[1].header, "interface Gi0/2");
            assert!(found[1].children.is_empty());
        }

        #[test]
        fn direct_children_skip_nested_ones() {
            let found = sections(CONFIG, |l| l == "interface Gi0/1");
            let direct: Vec<&str> = found[0].direct_children().collect();
            assert_eq!(
                direct,
                ["description uplink", "service instance 10 ethernet"]
            );
        }
    }
}

/// What a rule component implements.
pub trait Rule: Sized + 'static {
    /// Build the rule's state from the manifest's `[config]` table (a JSON object).
    fn init(config: &serde_json::Value) -> Result<Self, String>;

    /// The findings of this component's rules on `device`, whose running configuration is
    /// `config`. Leave out the rules that do not apply to the device.
    fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String>;
}

impl Device {
    /// The device's inventory variables.
    pub fn vars(&self) -> serde_json::Value {
        serde_json::from_str(&self.vars_json).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// Whether the device's platform is one of `platforms` (case-insensitive); a device
    /// without a platform is on none.
    pub fn platform_in(&self, platforms: &[String]) -> bool {
        self.platform
            .as_deref()
            .is_some_and(|p| platforms.iter().any(|q| q.eq_ignore_ascii_case(p)))
    }
}

impl Finding {
    /// A finding with nothing to report.
    pub fn compliant(rule: &str, feature: &str) -> Finding {
        Finding {
            rule: rule.into(),
            feature: feature.into(),
            status: Status::Compliant,
            lines: Vec::new(),
            message: String::new(),
            remediation: Vec::new(),
        }
    }

    /// Compliant if `missing` and `extra` are empty; else missing (if anything is) or extra,
    /// with the remediation: `remove(line)` for each extra line, then the missing lines.
    pub fn from_lines(
        rule: &str,
        feature: &str,
        missing: Vec<String>,
        extra: Vec<String>,
        remove: impl Fn(&str) -> String,
    ) -> Finding {
        let mut f = Finding::compliant(rule, feature);
        if missing.is_empty() && extra.is_empty() {
            return f;
        }
        f.remediation = extra
            .iter()
            .map(|l| remove(l))
            .chain(missing.iter().cloned())
            .collect();
        f.status = if missing.is_empty() {
            Status::Extra
        } else {
            Status::Missing
        };
        f.message = match (missing.len(), extra.len()) {
            (0, e) => format!("{e} line(s) that should not be there"),
            (m, 0) => format!("{m} line(s) missing"),
            (m, e) => format!("{m} line(s) missing, {e} that should not be there"),
        };
        f.lines = missing.into_iter().chain(extra).collect();
        f
    }

    /// The rule could not be evaluated on this device.
    pub fn error(rule: &str, feature: &str, message: impl Into<String>) -> Finding {
        let mut f = Finding::compliant(rule, feature);
        f.status = Status::Error;
        f.message = message.into();
        f
    }
}

/// Export `$ty` (a [`Rule`]) as the component's `compliance-rule` world.
#[macro_export]
macro_rules! rule {
    ($ty:ty) => {
        const _: () = {
            use ::std::cell::RefCell;

            ::std::thread_local! {
                static STATE: RefCell<Option<$ty>> = const { RefCell::new(None) };
            }

            struct Export;

            impl $crate::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let config: $crate::serde_json::Value = $crate::serde_json::from_str(&config)
                        .map_err(|e| format!("config is not JSON: {e}"))?;
                    let state = <$ty as $crate::Rule>::init(&config)?;
                    STATE.with(|s| *s.borrow_mut() = Some(state));
                    Ok(())
                }

                fn evaluate(
                    device: $crate::Device,
                    config: String,
                ) -> Result<Vec<$crate::Finding>, String> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some(state) => $crate::Rule::evaluate(state, &device, &config),
                        None => Err("evaluate before init".to_string()),
                    })
                }
            }

            $crate::bindings::__export_compliance_rule_world!(Export with_types_in $crate::bindings);
        };
    };
}
