//! Compliance rule `vty-ssh-only`: every `line vty ...` section says `transport input ssh`,
//! exactly, so remote logins are encrypted. Telnet sends the password in clear, and on
//! older IOS a vty without a `transport input` line accepts telnet by default — so a missing
//! line fails the rule as much as `transport input telnet ssh` or `all` does.
//!
//! Scope: devices whose platform is in `[config] platforms` (default `ios`, `iosxe`), and of
//! those only devices with a `line vty` section. NX-OS and EOS are not in the default: they
//! switch telnet off elsewhere (`no feature telnet`, `management telnet` / `shutdown`) and take
//! no `transport input` under `line vty`; nor is FRR, whose `line vty` (the daemons' own vty)
//! has no `transport input` either. A device without a platform is in no list.
//!
//! One finding for all the device's vty sections:
//! - a section without a `transport input` line: `missing`, the lines being the section's
//!   header and ` transport input ssh`;
//! - a section with another `transport input` line: `extra`, the lines being the header and
//!   the wrong line.
//!
//! `missing` if any section is missing its line, else `extra`. The remediation enters each
//! failing section by its header, removes the wrong lines (` no transport input telnet ssh`),
//! adds ` transport input ssh` and leaves with ` exit`, as the host's own remediation does.

use sotp_rule::config::{Section, sections};
use sotp_rule::{Device, Finding, Rule, Status};

const RULE: &str = "vty-ssh-only";
const FEATURE: &str = "management";
const WANTED: &str = "transport input ssh";
const DEFAULT_PLATFORMS: [&str; 2] = ["ios", "iosxe"];

struct VtySshOnly {
    platforms: Vec<String>,
}

impl Rule for VtySshOnly {
    fn init(config: &sotp_rule::serde_json::Value) -> Result<Self, String> {
        Ok(VtySshOnly {
            platforms: platforms(config)?,
        })
    }

    fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String> {
        if !device.platform_in(&self.platforms) {
            return Ok(Vec::new()); // not in scope
        }
        Ok(check(config).into_iter().collect())
    }
}

sotp_rule::rule!(VtySshOnly);

/// `[config] platforms`: a list of platform names, or the default.
fn platforms(config: &sotp_rule::serde_json::Value) -> Result<Vec<String>, String> {
    let Some(list) = config.get("platforms") else {
        return Ok(DEFAULT_PLATFORMS.map(String::from).to_vec());
    };
    list.as_array()
        .and_then(|l| l.iter().map(|p| p.as_str().map(String::from)).collect())
        .ok_or_else(|| "config `platforms` is not a list of platform names".to_string())
}

/// What is wrong with one `line vty` section.
#[derive(Debug, PartialEq)]
enum Problem<'a> {
    /// No `transport input` line at all.
    NoTransport,
    /// `transport input` lines other than `transport input ssh` (trimmed).
    Wrong(Vec<&'a str>),
}

/// The finding on a configuration, `None` if it has no `line vty` section.
fn check(config: &str) -> Option<Finding> {
    let vtys = sections(config, is_vty);
    if vtys.is_empty() {
        return None;
    }
    let failing: Vec<(&Section, Problem)> = vtys
        .iter()
        .filter_map(|s| problem(s).map(|p| (s, p)))
        .collect();
    Some(finding(&failing))
}

fn is_vty(line: &str) -> bool {
    line.split_whitespace().take(2).eq(["line", "vty"])
}

fn is_transport_input(line: &str) -> bool {
    line.split_whitespace().take(2).eq(["transport", "input"])
}

/// Runs of blanks are one: `transport  input ssh` is the wanted line.
fn is_wanted(line: &str) -> bool {
    line.split_whitespace().eq(WANTED.split(' '))
}

fn problem<'a>(section: &Section<'a>) -> Option<Problem<'a>> {
    let transports: Vec<&str> = section
        .direct_children()
        .filter(|l| is_transport_input(l))
        .collect();
    let wrong: Vec<&str> = transports
        .iter()
        .copied()
        .filter(|l| !is_wanted(l))
        .collect();
    if !wrong.is_empty() {
        Some(Problem::Wrong(wrong))
    } else if transports.is_empty() {
        Some(Problem::NoTransport)
    } else {
        None
    }
}

fn finding(failing: &[(&Section, Problem)]) -> Finding {
    let mut f = Finding::compliant(RULE, FEATURE);
    if failing.is_empty() {
        return f;
    }
    let mut reasons = Vec::new();
    for (section, problem) in failing {
        reasons.extend(add_section(&mut f, section, problem));
    }
    let any_missing = failing.iter().any(|(_, p)| *p == Problem::NoTransport);
    f.status = if any_missing {
        Status::Missing
    } else {
        Status::Extra
    };
    f.message = format!("{}: only `{WANTED}` is allowed", reasons.join("; "));
    f
}

/// Add a failing section's lines and remediation to `f`; the reasons, for the message.
fn add_section(f: &mut Finding, section: &Section, problem: &Problem) -> Vec<String> {
    let header = section.header;
    f.lines.push(header.to_string());
    f.remediation.push(header.to_string());
    let reasons = match problem {
        Problem::NoTransport => {
            f.lines.push(format!(" {WANTED}"));
            vec![format!("`{header}` has no `{WANTED}`")]
        }
        Problem::Wrong(lines) => lines
            .iter()
            .map(|line| {
                f.lines.push(format!(" {line}"));
                f.remediation.push(format!(" no {line}"));
                format!("`{header}` has `{line}`")
            })
            .collect(),
    };
    f.remediation.push(format!(" {WANTED}"));
    f.remediation.push(" exit".to_string());
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(platform: Option<&str>) -> Device {
        Device {
            name: "r1".into(),
            platform: platform.map(String::from),
            role: None,
            site: None,
            tags: Vec::new(),
            vars_json: "{}".into(),
        }
    }

    fn rule() -> VtySshOnly {
        VtySshOnly::init(&sotp_rule::serde_json::json!({})).unwrap()
    }

    #[test]
    fn ssh_only_is_compliant() {
        let f = check("line vty 0 4\n transport input ssh\nline vty 5 15\n transport  input ssh\n")
            .unwrap();
        assert_eq!(f.status, Status::Compliant);
        assert!(f.lines.is_empty() && f.remediation.is_empty());
    }

    #[test]
    fn a_vty_without_transport_is_missing_its_line() {
        let f = check("line vty 0 4\n exec-timeout 5 0\n!\nline vty 5 15\n transport input ssh\n")
            .unwrap();
        assert_eq!(f.rule, "vty-ssh-only");
        assert_eq!(f.feature, "management");
        assert_eq!(f.status, Status::Missing);
        assert_eq!(f.lines, ["line vty 0 4", " transport input ssh"]);
        assert_eq!(
            f.remediation,
            ["line vty 0 4", " transport input ssh", " exit"]
        );
        assert_eq!(
            f.message,
            "`line vty 0 4` has no `transport input ssh`: only `transport input ssh` is allowed"
        );
    }

    #[test]
    fn telnet_or_all_is_extra_and_removed() {
        let config =
            "line vty 0 4\n transport input telnet ssh\nline vty 5 15\n transport input all\n";
        let f = check(config).unwrap();
        assert_eq!(f.status, Status::Extra);
        assert_eq!(
            f.lines,
            [
                "line vty 0 4",
                " transport input telnet ssh",
                "line vty 5 15",
                " transport input all"
            ]
        );
        assert_eq!(
            f.remediation,
            [
                "line vty 0 4",
                " no transport input telnet ssh",
                " transport input ssh",
                " exit",
                "line vty 5 15",
                " no transport input all",
                " transport input ssh",
                " exit"
            ]
        );
    }

    #[test]
    fn any_missing_section_makes_the_finding_missing() {
        let f = check("line vty 0 4\n transport input telnet\nline vty 5 15\n").unwrap();
        assert_eq!(f.status, Status::Missing);
        assert_eq!(
            f.lines,
            [
                "line vty 0 4",
                " transport input telnet",
                "line vty 5 15",
                " transport input ssh"
            ]
        );
    }

    #[test]
    fn no_vty_section_is_out_of_scope() {
        assert!(check("hostname r1\nline con 0\n transport input none\n").is_none());
    }

    #[test]
    fn platforms_decide_scope() {
        let config = "line vty\n exec-timeout 0 0\n";
        assert!(
            rule()
                .evaluate(&device(Some("frr")), config)
                .unwrap()
                .is_empty()
        );
        assert!(rule().evaluate(&device(None), config).unwrap().is_empty());
        assert_eq!(
            rule().evaluate(&device(Some("IOS")), config).unwrap().len(),
            1
        );
        let mut frr =
            VtySshOnly::init(&sotp_rule::serde_json::json!({"platforms": ["frr"]})).unwrap();
        assert_eq!(frr.evaluate(&device(Some("frr")), config).unwrap().len(), 1);
        assert!(VtySshOnly::init(&sotp_rule::serde_json::json!({"platforms": "ios"})).is_err());
    }
}
