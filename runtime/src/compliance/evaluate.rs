//! One rule against one device's configuration: which lines are missing, which are extra,
//! and what would fix it.
//!
//! Matching is multiset matching: each expected line takes one running line, so a line the
//! running config holds twice where once is intended leaves one copy extra (netutils#364
//! reported the opposite). Children are compared under the parent they matched.

use super::config::{self, Config, Node, Syntax};
use super::remediation;
use super::rules::{Expected, LineRegex, MatchKind, Pattern, Rule, RuleLines, RuleSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Compliant,
    Missing,
    Extra,
    Error,
    Waived,
}

/// The outcome of one rule on one device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleResult {
    pub rule: String,
    pub feature: String,
    /// The rule file and its version.
    pub source: String,
    pub status: Status,
    /// Missing lines with their parents, indented as in the device's syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Lines that make the device compliant with this rule, in the device's syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediation: Vec<String>,
    /// Waived: the waiver's reason and expiry (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverNote>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WaiverNote {
    pub reason: String,
    pub expires_ms: i64,
}

impl RuleResult {
    /// An `error` result of rule `rule` (of `feature`, from `source`).
    pub fn error(rule: &str, feature: &str, source: &str, message: String) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            feature: feature.into(),
            source: source.into(),
            status: Status::Error,
            missing: Vec::new(),
            extra: Vec::new(),
            message,
            remediation: Vec::new(),
            waiver: None,
        }
    }
}

/// A change to make, at a path of parent lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub parents: Vec<String>,
    pub node: Node,
    pub add: bool,
}

/// Evaluate `rule` on a parsed configuration with the device's template variables: the
/// result, and the changes behind its remediation (a device's plan orders all of them).
pub fn evaluate(
    set: &RuleSet,
    rule: &Rule,
    running: &Config,
    syntax: Syntax,
    vars: &Map<String, Value>,
) -> (RuleResult, Vec<Change>) {
    let source = format!("{}@{}", set.file, set.version);
    match evaluate_inner(set, rule, running, syntax, vars) {
        Ok((changes, message)) => {
            let mut missing = Vec::new();
            let mut extra = Vec::new();
            for c in &changes {
                let lines = remediation::with_parents(&c.parents, &c.node, syntax);
                if c.add {
                    missing.extend(lines);
                } else {
                    extra.extend(lines);
                }
            }
            let status = if !missing.is_empty() || !message.is_empty() {
                Status::Missing
            } else if !extra.is_empty() {
                Status::Extra
            } else {
                Status::Compliant
            };
            let result = RuleResult {
                rule: rule.id.clone(),
                feature: rule.feature.clone(),
                source,
                status,
                missing,
                extra,
                message,
                remediation: remediation::plan(&changes, syntax),
                waiver: None,
            };
            (result, changes)
        }
        Err(message) => (
            RuleResult::error(&rule.id, &rule.feature, &source, message),
            Vec::new(),
        ),
    }
}

fn render(set: &RuleSet, name: &str, vars: &Map<String, Value>) -> Result<String, String> {
    let template = set
        .env
        .get_template(name)
        .map_err(|e| format!("template: {e}"))?;
    template.render(vars).map_err(|e| {
        let mut msg = format!("template: {}", e.kind());
        if let Some(detail) = e.detail() {
            msg.push_str(": ");
            msg.push_str(detail);
        }
        if let Some(line) = e.line() {
            msg.push_str(&format!(" (its line {line})"));
        }
        msg
    })
}

/// Expected lines for the rule on this device: the required lines (compiled once when fixed,
/// and borrowed: a cloned `Regex` starts with a cold cache of its own), and per device the
/// templated required lines and the intended lines (exact).
fn expected<'r>(
    set: &RuleSet,
    rule: &'r Rule,
    syntax: Syntax,
    vars: &Map<String, Value>,
    owned: &'r mut Vec<Expected>,
) -> Result<Vec<&'r Expected>, String> {
    let mut fixed = Vec::new();
    for lines in &rule.required {
        match lines {
            RuleLines::Fixed(expected) => fixed.extend(expected.iter()),
            RuleLines::Templated(name) => {
                let text = render(set, name, vars)?;
                let nodes = config::parse(&text, Syntax::Indented)
                    .map_err(|e| format!("required lines: {e}"))?
                    .roots;
                owned.extend(Expected::tree(nodes, rule.match_kind)?);
            }
        }
    }
    if let Some(name) = &rule.intended {
        let text = render(set, name, vars)?;
        let intended = config::parse(&text, syntax).map_err(|e| format!("intended lines: {e}"))?;
        owned.extend(Expected::tree(intended.roots, MatchKind::Exact)?);
    }
    // The fixed required lines (in the rule's order), then the templated ones, then the
    // intended lines.
    let owned: &'r Vec<Expected> = owned;
    fixed.extend(owned.iter());
    Ok(fixed)
}

type Outcome = (Vec<Change>, String);

fn evaluate_inner(
    set: &RuleSet,
    rule: &Rule,
    running: &Config,
    syntax: Syntax,
    vars: &Map<String, Value>,
) -> Result<Outcome, String> {
    let mut rendered = Vec::new();
    let expected = expected(set, rule, syntax, vars, &mut rendered)?;
    let forbidden =
        rule.forbidden_patterns(&|i| render(set, &format!("{}#forbidden{i}", rule.id), vars))?;
    let ignore: Vec<&LineRegex> = set.ignore.iter().chain(&rule.ignore).collect();
    let sections = sections(rule, running, syntax);
    let mut changes = Vec::new();
    let mut message = String::new();
    if sections.is_empty() {
        if expected.is_empty() {
            return Ok((changes, message)); // only forbidden lines, and nowhere to hold them
        }
        // The section is missing: all of it, if its parent lines are literal.
        let literal: Option<Vec<String>> = rule
            .section
            .iter()
            .map(|p| match p {
                Pattern::Exact(t) => Some(t.clone()),
                Pattern::Regex(_) => None,
            })
            .collect();
        match literal {
            Some(parents) if syntax == Syntax::Indented => {
                for want in expected {
                    if want.exact() {
                        changes.push(Change {
                            parents: parents.clone(),
                            node: want.node.clone(),
                            add: true,
                        });
                    }
                }
                if changes.is_empty() {
                    message = format!("no section `{}`", section_text(rule));
                }
            }
            _ => message = format!("no section matches `{}`", section_text(rule)),
        }
        return Ok((changes, message));
    }
    for (parents, children) in sections {
        let prefix = parents.join(" ");
        let running: Vec<&Node> = children
            .iter()
            .filter(|n| !ignore.iter().any(|re| re.is_match(&n.text)))
            .filter(|n| syntax == Syntax::Indented || within_prefix(&n.text, &prefix))
            .collect();
        let parents_for_changes = if syntax == Syntax::Set {
            Vec::new()
        } else {
            parents.clone()
        };
        compare(
            rule,
            &expected,
            &running,
            &ignore,
            &parents_for_changes,
            &mut changes,
            &mut message,
            true,
        );
        forbid(&forbidden, &running, &parents_for_changes, &mut changes);
    }
    dedupe(&mut changes);
    Ok((changes, message))
}

fn section_text(rule: &Rule) -> String {
    rule.section
        .iter()
        .map(Pattern::text)
        .collect::<Vec<_>>()
        .join(" > ")
}

/// A Junos line within the section whose words are `prefix` (empty: the whole config).
fn within_prefix(line: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || line
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// The sections the rule checks: (parent lines, their children). Junos: one section, the
/// flat list, filtered by the prefix later.
fn sections<'a>(
    rule: &Rule,
    running: &'a Config,
    syntax: Syntax,
) -> Vec<(Vec<String>, &'a [Node])> {
    if rule.section.is_empty() {
        return vec![(Vec::new(), &running.roots)];
    }
    if syntax == Syntax::Set {
        let words: Vec<String> = rule.section.iter().map(|p| p.text().to_string()).collect();
        let prefix = words.join(" ");
        let any = running
            .roots
            .iter()
            .any(|n| within_prefix(&n.text, &prefix));
        return if any {
            vec![(words, &running.roots)]
        } else {
            Vec::new()
        };
    }
    let mut level: Vec<(Vec<String>, &Node)> = running
        .roots
        .iter()
        .filter(|n| rule.section[0].matches(&n.text))
        .map(|n| (vec![n.text.clone()], n))
        .collect();
    for pattern in &rule.section[1..] {
        level = level
            .into_iter()
            .flat_map(|(path, node)| {
                node.children
                    .iter()
                    .filter(|c| pattern.matches(&c.text))
                    .map(move |c| {
                        let mut p = path.clone();
                        p.push(c.text.clone());
                        (p, c)
                    })
            })
            .collect();
    }
    level
        .into_iter()
        .map(|(path, node)| (path, node.children.as_slice()))
        .collect()
}

/// Compare expected nodes with running nodes at one level, recursing into matched pairs.
#[allow(clippy::too_many_arguments)]
fn compare(
    rule: &Rule,
    expected: &[&Expected],
    running: &[&Node],
    ignore: &[&LineRegex],
    parents: &[String],
    changes: &mut Vec<Change>,
    message: &mut String,
    top: bool,
) {
    let mut taken = vec![false; running.len()];
    let mut order = Vec::new();
    for want in expected {
        let found =
            (0..running.len()).find(|&i| !taken[i] && want.pattern.matches(&running[i].text));
        match found {
            Some(i) => {
                taken[i] = true;
                order.push(i);
                // Children of a regex-matched line are only checked, never extra.
                let check_children =
                    !want.children.is_empty() || (rule.extra_lines_fail && want.exact());
                if check_children {
                    let running_kids: Vec<&Node> = running[i]
                        .children
                        .iter()
                        .filter(|n| !ignore.iter().any(|re| re.is_match(&n.text)))
                        .collect();
                    let mut path = parents.to_vec();
                    path.push(running[i].text.clone());
                    let kids: Vec<&Expected> = want.children.iter().collect();
                    compare(
                        rule,
                        &kids,
                        &running_kids,
                        ignore,
                        &path,
                        changes,
                        message,
                        false,
                    );
                }
            }
            None if want.exact() => changes.push(Change {
                parents: parents.to_vec(),
                node: want.node.clone(),
                add: true,
            }),
            None => {
                if !message.is_empty() {
                    message.push_str("; ");
                }
                let at = if parents.is_empty() {
                    String::new()
                } else {
                    format!(" under `{}`", parents.join(" > "))
                };
                message.push_str(&format!("no line matches `{}`{at}", want.node.text));
            }
        }
    }
    if rule.ordered && order.windows(2).any(|w| w[0] > w[1]) {
        // Remove the matched lines and add them again in the intended order.
        for &i in &order {
            changes.push(Change {
                parents: parents.to_vec(),
                node: running[i].clone(),
                add: false,
            });
        }
        for want in expected {
            if want.exact() {
                changes.push(Change {
                    parents: parents.to_vec(),
                    node: want.node.clone(),
                    add: true,
                });
            }
        }
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str("lines out of order");
    }
    let extra_counts =
        rule.extra_lines_fail && (top || !expected.is_empty() || !rule.section.is_empty());
    if extra_counts {
        for (i, node) in running.iter().enumerate() {
            let like = rule
                .lines_like
                .as_ref()
                .is_none_or(|re| re.is_match(&node.text));
            if !taken[i] && like {
                changes.push(Change {
                    parents: parents.to_vec(),
                    node: (*node).clone(),
                    add: false,
                });
            }
        }
    }
}

/// Forbidden lines at any depth of the section. The path of parents is a stack of borrowed
/// lines, copied only for a line that is found.
fn forbid(forbidden: &[Pattern], running: &[&Node], parents: &[String], changes: &mut Vec<Change>) {
    if forbidden.is_empty() {
        return;
    }
    let mut path: Vec<&str> = parents.iter().map(String::as_str).collect();
    for node in running {
        forbid_under(forbidden, node, &mut path, changes);
    }
}

fn forbid_under<'a>(
    forbidden: &[Pattern],
    node: &'a Node,
    path: &mut Vec<&'a str>,
    changes: &mut Vec<Change>,
) {
    if forbidden.iter().any(|p| p.matches(&node.text)) {
        changes.push(Change {
            parents: path.iter().map(|p| p.to_string()).collect(),
            node: Node::new(node.text.clone()),
            add: false,
        });
        return;
    }
    if node.children.is_empty() {
        return;
    }
    path.push(&node.text);
    for child in &node.children {
        forbid_under(forbidden, child, path, changes);
    }
    path.pop();
}

/// A line both forbidden and extra is reported once.
fn dedupe(changes: &mut Vec<Change>) {
    let mut seen = std::collections::HashSet::new();
    changes.retain(|c| seen.insert((c.add, c.parents.clone(), c.node.text.clone(), c.node.line)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::rules::compile;

    fn run(rules: &str, config_text: &str, syntax: Syntax) -> Vec<RuleResult> {
        let set = compile("t.yaml", 1, rules).unwrap();
        let cfg = config::parse(config_text, syntax).unwrap();
        let vars: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "ntp_servers": ["10.0.0.1", "10.0.0.2"]
        }))
        .unwrap();
        set.rules
            .iter()
            .map(|r| evaluate(&set, r, &cfg, syntax, &vars).0)
            .collect()
    }

    const NTP: &str = "rules:\n  - id: ntp\n    intended: |\n      {% for s in ntp_servers %}ntp server {{ s }}\n      {% endfor %}\n    lines_like: '^ntp server '\n";

    #[test]
    fn intended_lines_from_a_template_find_missing_and_extra() {
        let r = &run(
            NTP,
            "hostname r1\nntp server 10.0.0.1\nntp server 10.9.9.9\n",
            Syntax::Indented,
        )[0];
        assert_eq!(r.status, Status::Missing);
        assert_eq!(r.missing, ["ntp server 10.0.0.2"]);
        assert_eq!(r.extra, ["ntp server 10.9.9.9"]);
        assert_eq!(
            r.remediation,
            ["no ntp server 10.9.9.9", "ntp server 10.0.0.2"]
        );
        let ok = &run(
            NTP,
            "hostname r1\nntp server 10.0.0.2\nntp server 10.0.0.1\n",
            Syntax::Indented,
        )[0];
        assert_eq!(ok.status, Status::Compliant, "{ok:?}");
    }

    #[test]
    fn a_duplicated_line_is_extra_once() {
        let r = &run(
            NTP,
            "ntp server 10.0.0.1\nntp server 10.0.0.2\nntp server 10.0.0.1\n",
            Syntax::Indented,
        )[0];
        assert_eq!(r.status, Status::Extra);
        assert_eq!(r.extra, ["ntp server 10.0.0.1"]);
    }

    #[test]
    fn nested_required_lines_and_regex_sections() {
        let rules = "rules:\n  - id: vty-ssh\n    match: regex\n    section: ['line vty .*']\n    required: ['transport input ssh']\n    forbidden: ['transport input (telnet|all).*']\n";
        let cfg =
            "line vty 0 4\n transport input ssh\nline vty 5 15\n transport input telnet ssh\n";
        let r = &run(rules, cfg, Syntax::Indented)[0];
        assert_eq!(r.status, Status::Missing, "{r:?}");
        assert_eq!(r.extra, ["line vty 5 15", " transport input telnet ssh"]);
        assert!(r.message.contains("under `line vty 5 15`"), "{r:?}");
        assert_eq!(
            r.remediation,
            ["line vty 5 15", " no transport input telnet ssh", " exit"]
        );
    }

    #[test]
    fn a_missing_literal_section_is_created() {
        let rules = "rules:\n  - id: bgp-log\n    section: ['router bgp 65000']\n    required: ['bgp log-neighbor-changes']\n";
        let r = &run(rules, "hostname r1\n", Syntax::Indented)[0];
        assert_eq!(r.missing, ["router bgp 65000", " bgp log-neighbor-changes"]);
        assert_eq!(
            r.remediation,
            ["router bgp 65000", " bgp log-neighbor-changes", " exit"]
        );
    }

    #[test]
    fn order_matters_only_when_asked() {
        let rules = "rules:\n  - id: acl\n    section: ['ip access-list standard MGMT']\n    ordered: true\n    required: ['permit 10.0.0.0 0.0.0.255', 'deny any log']\n";
        let bad = "ip access-list standard MGMT\n deny any log\n permit 10.0.0.0 0.0.0.255\n";
        let r = &run(rules, bad, Syntax::Indented)[0];
        assert_eq!(r.status, Status::Missing);
        assert!(r.message.contains("out of order"));
        let unordered = rules.replace("ordered: true", "ordered: false");
        assert_eq!(
            run(&unordered, bad, Syntax::Indented)[0].status,
            Status::Compliant
        );
    }

    #[test]
    fn ignored_lines_are_not_extra() {
        let rules = "ignore: ['^username .* secret ']\nrules:\n  - id: users\n    intended: 'username admin privilege 15'\n    lines_like: '^username '\n";
        let cfg = "username admin privilege 15\nusername admin secret 9 $9$abc\n";
        assert_eq!(
            run(rules, cfg, Syntax::Indented)[0].status,
            Status::Compliant
        );
    }

    #[test]
    fn junos_set_lines_use_set_and_delete() {
        let rules = "rules:\n  - id: ntp\n    section: ['set system ntp']\n    intended: |\n      {% for s in ntp_servers %}set system ntp server {{ s }}\n      {% endfor %}\n";
        let cfg = "set system host-name r1\nset system ntp server 10.0.0.1\nset system ntp server 10.9.9.9\n";
        let r = &run(rules, cfg, Syntax::Set)[0];
        assert_eq!(
            r.remediation,
            [
                "delete system ntp server 10.9.9.9",
                "set system ntp server 10.0.0.2"
            ]
        );
    }

    #[test]
    fn a_template_error_is_an_error_result_not_a_failure_of_the_audit() {
        let rules = "rules:\n  - id: ntp\n    intended: '{{ no_such_var }}'\n";
        let r = &run(rules, "hostname r1\n", Syntax::Indented)[0];
        assert_eq!(r.status, Status::Error);
        assert!(r.message.contains("template"), "{r:?}");
    }
}
