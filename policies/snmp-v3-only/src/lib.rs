//! Compliance rule component `snmp-v3-only`: SNMP is SNMPv3 with authentication and privacy,
//! never SNMPv1/v2c, whose community string crosses the network in clear and is the whole
//! credential. Two rules of the feature `snmp`, so each can be waived on its own (e.g. keep
//! the communities while the NMS moves to v3):
//!
//! - `snmp-no-community`: no `snmp-server community ...` line; each one is `extra`, removed by
//!   `no ` and the line as it is.
//! - `snmp-v3-required`: at least one `snmp-server group NAME v3 LEVEL` or `snmp-server user`
//!   line of SNMPv3 at `[config] min_level` (`auth` or `priv`, default `priv`) or above;
//!   otherwise `missing`, with the line `snmp-server group <group> v3 <min_level>` (`[config]
//!   group`, default `SNMPV3`) as remediation. IOS never shows its users in the running
//!   configuration, so there the group is the evidence; NX-OS has no groups (users carry a role
//!   and their keys), so there the finding has no lines and its message says to add a user —
//!   its keys are secrets this rule cannot write.
//!
//! Community strings are secrets. The finding's lines show them masked
//! (`snmp-server community ***** RO`) and its message never names them: findings travel —
//! reports, CSV exports, the trend, tickets, screenshots. The remediation keeps the real name
//! (`no snmp-server community public RO`): it is what the operator pastes, IOS cannot remove a
//! community without its name, and a masked `no` line would fail on the device. It is no more
//! secret than the backup it is computed from, which the same `read` scope already shows.
//!
//! Scope: devices whose platform is in `[config] platforms` (default `ios`, `iosxe`, `nxos`,
//! `eos`: the `snmp-server` syntaxes); both rules report on every one of them. Trap
//! destinations (`snmp-server host ... version 2c NAME`) are not checked.
//!
//! `policies/snmp-v3-only-py` is the same rule in Python; both give the same findings.

use sotp_rule::{Device, Finding, Rule, Status};

const FEATURE: &str = "snmp";
const NO_COMMUNITY: &str = "snmp-no-community";
const V3_REQUIRED: &str = "snmp-v3-required";
const MASK: &str = "*****";
const DEFAULT_PLATFORMS: [&str; 4] = ["ios", "iosxe", "nxos", "eos"];

/// SNMPv3 security levels, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    NoAuth,
    Auth,
    Priv,
}

impl Level {
    fn parse(word: &str) -> Option<Level> {
        match word {
            "noauth" => Some(Level::NoAuth),
            "auth" => Some(Level::Auth),
            "priv" => Some(Level::Priv),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::NoAuth => "noauth",
            Level::Auth => "auth",
            Level::Priv => "priv",
        }
    }
}

struct SnmpV3Only {
    platforms: Vec<String>,
    min_level: Level,
    group: String,
}

impl Rule for SnmpV3Only {
    fn init(config: &sotp_rule::serde_json::Value) -> Result<Self, String> {
        let min_level = match config["min_level"].as_str().unwrap_or("priv") {
            "auth" => Level::Auth,
            "priv" => Level::Priv,
            other => return Err(format!("config `min_level`: `{other}` is not auth or priv")),
        };
        let group = config["group"].as_str().unwrap_or("SNMPV3").trim();
        if group.is_empty() || group.contains(char::is_whitespace) {
            return Err(format!("config `group`: `{group}` is not one word"));
        }
        Ok(SnmpV3Only {
            platforms: platforms(config)?,
            min_level,
            group: group.to_string(),
        })
    }

    fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String> {
        if !device.platform_in(&self.platforms) {
            return Ok(Vec::new()); // not in scope
        }
        Ok(vec![
            community_finding(&communities(config)),
            v3_finding(config, self.min_level, &self.group, is_nxos(device)),
        ])
    }
}

sotp_rule::rule!(SnmpV3Only);

/// `[config] platforms`: a list of platform names, or the default.
fn platforms(config: &sotp_rule::serde_json::Value) -> Result<Vec<String>, String> {
    let Some(list) = config.get("platforms") else {
        return Ok(DEFAULT_PLATFORMS.map(String::from).to_vec());
    };
    list.as_array()
        .and_then(|l| l.iter().map(|p| p.as_str().map(String::from)).collect())
        .ok_or_else(|| "config `platforms` is not a list of platform names".to_string())
}

fn is_nxos(device: &Device) -> bool {
    device
        .platform
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("nxos"))
}

/// The top-level lines of the configuration, trimmed at the end.
fn top_level(config: &str) -> impl Iterator<Item = &str> {
    config
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
}

/// The `snmp-server community NAME ...` lines.
fn communities(config: &str) -> Vec<&str> {
    top_level(config)
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() >= 3 && words[..2] == ["snmp-server", "community"]
        })
        .collect()
}

/// `snmp-server community public RO` as `snmp-server community ***** RO`.
fn mask(line: &str) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    words[2] = MASK;
    words.join(" ")
}

fn community_finding(communities: &[&str]) -> Finding {
    let mut f = Finding::compliant(NO_COMMUNITY, FEATURE);
    if communities.is_empty() {
        return f;
    }
    f.status = Status::Extra;
    f.lines = communities.iter().map(|l| mask(l)).collect();
    f.remediation = communities.iter().map(|l| format!("no {l}")).collect();
    f.message = format!(
        "{} SNMPv1/v2c community line(s) (names masked): SNMPv3 only",
        communities.len()
    );
    f
}

/// The SNMPv3 security level a `snmp-server group` or `snmp-server user` line sets up, if it
/// is one of SNMPv3.
fn v3_level(line: &str) -> Option<Level> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["snmp-server", "group", _, "v3", level, ..] => Level::parse(level),
        ["snmp-server", "user", _, options @ ..] => user_level(options),
        _ => None,
    }
}

/// A user's level from the words after its name: IOS and EOS say `GROUP v3 [auth ...
/// [priv ...]]`, NX-OS (always v3) `[ROLE] auth ... [priv ...]`.
fn user_level(options: &[&str]) -> Option<Level> {
    if options.iter().any(|w| matches!(*w, "v1" | "v2c")) {
        None
    } else if options.contains(&"priv") {
        Some(Level::Priv)
    } else if options.contains(&"auth") {
        Some(Level::Auth)
    } else {
        Some(Level::NoAuth)
    }
}

fn v3_finding(config: &str, min_level: Level, group: &str, nxos: bool) -> Finding {
    let mut f = Finding::compliant(V3_REQUIRED, FEATURE);
    if top_level(config).any(|l| v3_level(l).is_some_and(|level| level >= min_level)) {
        return f;
    }
    let min = min_level.name();
    f.status = Status::Missing;
    if nxos {
        f.message = format!(
            "no SNMPv3 user at `{min}` level or above: add one with `snmp-server user` \
             (its keys are secrets this rule cannot write)"
        );
    } else {
        let line = format!("snmp-server group {group} v3 {min}");
        f.lines = vec![line.clone()];
        f.remediation = vec![line];
        f.message = format!("no SNMPv3 group or user at `{min}` level or above");
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotp_rule::serde_json::json;

    fn device(platform: &str) -> Device {
        Device {
            name: "r1".into(),
            platform: Some(platform.into()),
            role: None,
            site: None,
            tags: Vec::new(),
            vars_json: "{}".into(),
        }
    }

    fn evaluate(
        config_json: sotp_rule::serde_json::Value,
        platform: &str,
        config: &str,
    ) -> Vec<Finding> {
        let mut rule = SnmpV3Only::init(&config_json).unwrap();
        rule.evaluate(&device(platform), config).unwrap()
    }

    const V2C: &str = "\
hostname r1
snmp-server community public RO
snmp-server community s3cr3t-rw RW 10
snmp-server location lab
";

    #[test]
    fn communities_are_extra_and_masked() {
        let findings = evaluate(json!({}), "ios", V2C);
        let f = &findings[0];
        assert_eq!(
            (f.rule.as_str(), f.feature.as_str()),
            ("snmp-no-community", "snmp")
        );
        assert_eq!(f.status, Status::Extra);
        assert_eq!(
            f.lines,
            [
                "snmp-server community ***** RO",
                "snmp-server community ***** RW 10"
            ]
        );
        assert_eq!(
            f.message,
            "2 SNMPv1/v2c community line(s) (names masked): SNMPv3 only"
        );
        assert_eq!(
            f.remediation,
            [
                "no snmp-server community public RO",
                "no snmp-server community s3cr3t-rw RW 10"
            ]
        );
        for text in f.lines.iter().chain([&f.message]) {
            assert!(
                !text.contains("public") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
    }

    #[test]
    fn without_v3_the_group_is_missing() {
        let findings = evaluate(json!({}), "ios", V2C);
        let f = &findings[1];
        assert_eq!(
            (f.rule.as_str(), f.feature.as_str()),
            ("snmp-v3-required", "snmp")
        );
        assert_eq!(f.status, Status::Missing);
        assert_eq!(f.lines, ["snmp-server group SNMPV3 v3 priv"]);
        assert_eq!(f.remediation, ["snmp-server group SNMPV3 v3 priv"]);
        assert_eq!(
            f.message,
            "no SNMPv3 group or user at `priv` level or above"
        );
    }

    #[test]
    fn v3_priv_without_communities_is_compliant() {
        let config = "snmp-server group OPS v3 priv read ALL\nsnmp-server location lab\n";
        let findings = evaluate(json!({}), "iosxe", config);
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.status == Status::Compliant));
    }

    #[test]
    fn the_minimum_level_is_configurable() {
        let config = "snmp-server group OPS v3 auth\n";
        assert_eq!(
            evaluate(json!({}), "ios", config)[1].status,
            Status::Missing
        );
        let auth = json!({"min_level": "auth", "group": "NMS"});
        assert_eq!(
            evaluate(auth.clone(), "ios", config)[1].status,
            Status::Compliant
        );
        let none = evaluate(auth, "ios", "snmp-server group OPS v3 noauth\n");
        assert_eq!(none[1].lines, ["snmp-server group NMS v3 auth"]);
        assert!(SnmpV3Only::init(&json!({"min_level": "noauth"})).is_err());
        assert!(SnmpV3Only::init(&json!({"group": "two words"})).is_err());
    }

    #[test]
    fn users_count_by_their_own_level() {
        assert_eq!(
            v3_level("snmp-server user ops OPS v3 auth sha x priv aes 128 y"),
            Some(Level::Priv)
        );
        assert_eq!(
            v3_level("snmp-server user ops OPS v3 auth sha x"),
            Some(Level::Auth)
        );
        assert_eq!(v3_level("snmp-server user ops OPS v2c"), None);
        assert_eq!(v3_level("snmp-server group OPS v2c"), None);
        assert_eq!(
            v3_level("snmp-server user admin network-admin auth md5 0x11 priv 0x22 localizedkey"),
            Some(Level::Priv)
        );
    }

    #[test]
    fn nxos_is_told_to_add_a_user() {
        let config = "snmp-server user admin network-admin auth md5 0x11 localizedkey\n";
        let f = &evaluate(json!({}), "nxos", config)[1];
        assert_eq!(f.status, Status::Missing);
        assert!(f.lines.is_empty() && f.remediation.is_empty());
        assert!(f.message.contains("snmp-server user"), "{}", f.message);
    }

    #[test]
    fn other_platforms_are_out_of_scope() {
        assert!(evaluate(json!({}), "frr", V2C).is_empty());
        assert!(evaluate(json!({}), "junos", V2C).is_empty());
    }

    #[test]
    fn indented_lines_are_not_communities() {
        assert!(communities(" snmp-server community public RO\n").is_empty());
    }
}
