//! Compliance rule `interface-descriptions`: each interface the inventory links to a neighbour
//! has a `description` naming that neighbour, so whoever reads the configuration (or an SNMP
//! `ifAlias`, a flow record, an alert) knows what is at the other end of the cable without
//! the inventory at hand — and a description that names another device shows a cabling change
//! nobody wrote down.
//!
//! The links come from the inventory (`inventory.links`, the import a rule's manifest grants
//! with `[grants] devices`); a device the grant does not cover is an `err` naming the grant to
//! add. Devices without links are not in scope, nor Junos ones (its `set interfaces X
//! description` syntax is not read here); every other platform is read as indentation-nested
//! sections: IOS-style `interface GigabitEthernet0/1` and FRR `interface eth1`, each with a
//! ` description ...` line under it. The interface names are compared case-insensitively but
//! otherwise as they are: the inventory must use the configuration's names, not abbreviations.
//!
//! The check: the description contains the neighbour's inventory name, case-insensitive,
//! between non-alphanumeric characters (`to-core1` and `core1:eth2` name `core1`, `core10`
//! does not). One finding, `missing` when some linked interface has no description, one that
//! does not name its neighbour, or no section at all; its lines and remediation are each such
//! interface's header and the description `[config] template` writes (default
//! `to {neighbor} {neighbor_interface}`), the remediation leaving the section with ` exit` as
//! the host's own remediation does.

use sotp_rule::config::{Section, sections};
use sotp_rule::host::inventory::{self, Link};
use sotp_rule::{Device, Finding, Rule, Status};

const RULE: &str = "interface-descriptions";
const FEATURE: &str = "interfaces";
const DEFAULT_TEMPLATE: &str = "to {neighbor} {neighbor_interface}";

struct InterfaceDescriptions {
    template: String,
}

impl Rule for InterfaceDescriptions {
    fn init(config: &sotp_rule::serde_json::Value) -> Result<Self, String> {
        let template = config["template"]
            .as_str()
            .unwrap_or(DEFAULT_TEMPLATE)
            .trim();
        if !template.contains("{neighbor}") {
            return Err(format!(
                "config `template`: `{template}` does not name the neighbour (`{{neighbor}}`)"
            ));
        }
        Ok(InterfaceDescriptions {
            template: template.to_string(),
        })
    }

    fn evaluate(&mut self, device: &Device, config: &str) -> Result<Vec<Finding>, String> {
        if is_junos(device) {
            return Ok(Vec::new()); // not in scope
        }
        let links = inventory::links(&device.name).map_err(|e| links_error(&device.name, e))?;
        if links.is_empty() {
            return Ok(Vec::new()); // not in scope
        }
        Ok(vec![check(config, &links, &self.template)])
    }
}

sotp_rule::rule!(InterfaceDescriptions);

fn is_junos(device: &Device) -> bool {
    device
        .platform
        .as_deref()
        .is_some_and(|p| p.to_ascii_lowercase().contains("junos"))
}

fn links_error(device: &str, error: inventory::Error) -> String {
    match error {
        inventory::Error::Denied(reason) => format!(
            "inventory links of `{device}` denied ({reason}): add the device to the manifest's \
             `[grants] devices`"
        ),
        inventory::Error::Unavailable(reason)
        | inventory::Error::Invalid(reason)
        | inventory::Error::Timeout(reason) => {
            format!("inventory links of `{device}`: {reason}")
        }
    }
}

/// A linked interface whose description does not name its neighbour.
struct Problem<'a> {
    link: &'a Link,
    /// The interface's section header, if the configuration has one.
    header: Option<&'a str>,
    description: Option<&'a str>,
}

/// The finding on a configuration, for the device's links.
fn check(config: &str, links: &[Link], template: &str) -> Finding {
    let interfaces = sections(config, |l| interface_name(l).is_some());
    let failing: Vec<Problem> = links
        .iter()
        .filter_map(|link| problem(&interfaces, link))
        .collect();
    finding(&failing, template)
}

/// `GigabitEthernet0/1` of `interface GigabitEthernet0/1` (FRR: `interface eth1 vrf red`).
fn interface_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    (words.next() == Some("interface"))
        .then(|| words.next())
        .flatten()
}

fn description<'a>(section: &Section<'a>) -> Option<&'a str> {
    section
        .direct_children()
        .find_map(|l| l.strip_prefix("description "))
        .map(str::trim)
}

fn problem<'a>(interfaces: &[Section<'a>], link: &'a Link) -> Option<Problem<'a>> {
    let section = interfaces.iter().find(|s| {
        interface_name(s.header).is_some_and(|n| n.eq_ignore_ascii_case(&link.interface))
    });
    let description = section.and_then(description);
    if description.is_some_and(|d| names(d, &link.neighbor)) {
        return None;
    }
    Some(Problem {
        link,
        header: section.map(|s| s.header),
        description,
    })
}

/// Whether `description` names `neighbor`: case-insensitive, not inside a longer word.
fn names(description: &str, neighbor: &str) -> bool {
    let text = description.to_ascii_lowercase();
    let name = neighbor.to_ascii_lowercase();
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && text.match_indices(&name).any(|(at, _)| {
            !alphanumeric(text[..at].chars().next_back())
                && !alphanumeric(text[at + name.len()..].chars().next())
        })
}

/// The template with the link's names, runs of blanks made one (an unknown neighbour
/// interface leaves no trailing blank).
fn render(template: &str, link: &Link) -> String {
    template
        .replace(
            "{neighbor_interface}",
            link.neighbor_interface.as_deref().unwrap_or(""),
        )
        .replace("{neighbor}", &link.neighbor)
        .replace("{interface}", &link.interface)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn reason(problem: &Problem) -> String {
    let Problem {
        link,
        header,
        description,
    } = problem;
    let what = match (header, description) {
        (None, _) => "not in the configuration".to_string(),
        (Some(_), None) => "no description".to_string(),
        (Some(_), Some(d)) => format!("description `{d}` does not name it"),
    };
    format!("`{}` links to {}: {what}", link.interface, link.neighbor)
}

fn finding(failing: &[Problem], template: &str) -> Finding {
    let mut f = Finding::compliant(RULE, FEATURE);
    if failing.is_empty() {
        return f;
    }
    for problem in failing {
        let header = problem
            .header
            .map(String::from)
            .unwrap_or_else(|| format!("interface {}", problem.link.interface));
        let line = format!(" description {}", render(template, problem.link));
        f.lines.extend([header.clone(), line.clone()]);
        f.remediation.extend([header, line, " exit".to_string()]);
    }
    f.status = Status::Missing;
    f.message = failing.iter().map(reason).collect::<Vec<_>>().join("; ");
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(interface: &str, neighbor: &str, neighbor_interface: Option<&str>) -> Link {
        Link {
            interface: interface.into(),
            neighbor: neighbor.into(),
            neighbor_interface: neighbor_interface.map(String::from),
        }
    }

    const IOS: &str = "\
interface GigabitEthernet0/0
 description uplink-to-CORE1
 ip address 10.0.0.2 255.255.255.252
!
interface GigabitEthernet0/1
 description users
 service instance 10 ethernet
  description to core2
!
interface GigabitEthernet0/2
 no shutdown
!
";

    #[test]
    fn descriptions_naming_the_neighbour_are_compliant() {
        let links = [link("GigabitEthernet0/0", "core1", Some("Gi1/0/1"))];
        let f = check(IOS, &links, DEFAULT_TEMPLATE);
        assert_eq!(
            (f.rule.as_str(), f.feature.as_str()),
            ("interface-descriptions", "interfaces")
        );
        assert_eq!(f.status, Status::Compliant);
    }

    #[test]
    fn wrong_and_absent_descriptions_are_missing() {
        let links = [
            link("GigabitEthernet0/1", "core2", Some("Gi1/0/2")),
            link("gigabitethernet0/2", "access3", None),
        ];
        let f = check(IOS, &links, DEFAULT_TEMPLATE);
        assert_eq!(f.status, Status::Missing);
        assert_eq!(
            f.lines,
            [
                "interface GigabitEthernet0/1",
                " description to core2 Gi1/0/2",
                "interface GigabitEthernet0/2",
                " description to access3",
            ]
        );
        assert_eq!(
            f.remediation,
            [
                "interface GigabitEthernet0/1",
                " description to core2 Gi1/0/2",
                " exit",
                "interface GigabitEthernet0/2",
                " description to access3",
                " exit",
            ]
        );
        assert_eq!(
            f.message,
            "`GigabitEthernet0/1` links to core2: description `users` does not name it; \
             `gigabitethernet0/2` links to access3: no description"
        );
    }

    #[test]
    fn frr_interfaces_are_read_too() {
        let frr = "interface eth1\n description to r2 eth1\n ip ospf area 0\nexit\n!\ninterface eth2\nexit\n";
        let ok = check(frr, &[link("eth1", "r2", Some("eth1"))], DEFAULT_TEMPLATE);
        assert_eq!(ok.status, Status::Compliant);
        let f = check(frr, &[link("eth2", "r3", Some("eth1"))], DEFAULT_TEMPLATE);
        assert_eq!(f.lines, ["interface eth2", " description to r3 eth1"]);
    }

    #[test]
    fn an_interface_missing_from_the_config_is_reported() {
        let f = check(IOS, &[link("Gi0/9", "core1", None)], "{neighbor}");
        assert_eq!(f.lines, ["interface Gi0/9", " description core1"]);
        assert!(
            f.message.ends_with("not in the configuration"),
            "{}",
            f.message
        );
    }

    #[test]
    fn names_are_whole_words() {
        assert!(names("to-core1", "core1"));
        assert!(names("CORE1:eth2", "core1"));
        assert!(!names("to core10", "core1"));
        assert!(!names("to xcore1", "core1"));
        assert!(names("core10 core1", "core1"));
        assert!(!names("anything", ""));
    }

    #[test]
    fn templates_fill_in_the_link() {
        let l = link("eth1", "r2", None);
        assert_eq!(render("to {neighbor} {neighbor_interface}", &l), "to r2");
        let l = link("eth1", "r2", Some("eth3"));
        assert_eq!(
            render("{interface} -> {neighbor}:{neighbor_interface}", &l),
            "eth1 -> r2:eth3"
        );
        let init =
            |t: &str| InterfaceDescriptions::init(&sotp_rule::serde_json::json!({"template": t}));
        assert!(init("to {neighbor_interface}").is_err());
        assert!(init("peer {neighbor}").is_ok());
    }

    #[test]
    fn denied_links_say_which_grant_is_needed() {
        let e = links_error("r9", inventory::Error::Denied("not granted".into()));
        assert!(e.contains("`r9`") && e.contains("[grants] devices"), "{e}");
    }
}
