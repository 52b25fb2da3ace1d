//! One rule against one device's configuration: which lines are missing, which are extra,
//! and what would fix it.
//!
//! Matching is multiset matching: each expected line takes one running line, so a line the
//! running config holds twice where once is intended leaves one copy extra (netutils#364
//! reported the opposite). Children are compared under the parent they matched.

use super::config::{self, Config, Node, Syntax};
use super::remediation;
use super::rules::{self, Expected, LineRegex, MatchKind, Pattern, Rule, RuleLines, RuleSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

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
    pub node: Node<'static>,
    pub add: bool,
}

/// Evaluate `rule` on a parsed configuration with the device's template variables
/// (`template_vars`): the result, and the changes behind its remediation (a device's plan
/// orders all of them).
pub fn evaluate(
    set: &RuleSet,
    rule: &Rule,
    running: &Config,
    syntax: Syntax,
    vars: &TemplateVars,
) -> (RuleResult, Vec<Change>) {
    let source = set.source();
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
                source: source.to_string(),
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
            RuleResult::error(&rule.id, &rule.feature, source, message),
            Vec::new(),
        ),
    }
}

/// A device's template variables (`rules::device_vars`), converted once for every template
/// of its rules rather than at each render.
pub type TemplateVars = minijinja::Value;

/// `vars` made ready for templates.
pub fn template_vars(vars: &Map<String, Value>) -> TemplateVars {
    minijinja::Value::from_serialize(vars)
}

fn render(set: &RuleSet, name: &str, vars: &TemplateVars) -> Result<String, String> {
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
    vars: &TemplateVars,
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
                owned.extend(Expected::tree(&nodes, rule.match_kind)?);
            }
        }
    }
    if let Some(name) = &rule.intended {
        let text = render(set, name, vars)?;
        let intended = config::parse(&text, syntax).map_err(|e| format!("intended lines: {e}"))?;
        owned.extend(Expected::tree(&intended.roots, MatchKind::Exact)?);
    }
    // The fixed required lines (in the rule's order), then the templated ones, then the
    // intended lines.
    let owned: &'r Vec<Expected> = owned;
    fixed.extend(owned.iter());
    Ok(fixed)
}

/// What `rule` expects of a device with `vars`, as indented configuration text: its
/// section's parent lines as written, the expected lines under them (templates rendered),
/// then its forbidden lines as `! not:` comments. For people — the editor's preview and the
/// report's intended side — not for matching.
pub fn intended_text(
    set: &RuleSet,
    rule: &Rule,
    syntax: Syntax,
    vars: &TemplateVars,
) -> Result<String, String> {
    let mut owned = Vec::new();
    let expected = expected(set, rule, syntax, vars, &mut owned)?;
    let mut out = String::new();
    let depth = rule.section.len();
    for (level, parent) in rule.section.iter().enumerate() {
        push_line(&mut out, level, parent.text());
    }
    for e in expected {
        push_node(&mut out, depth, &e.to_node());
    }
    let forbidden =
        rule.forbidden_patterns(&|i| render(set, &format!("{}#forbidden{i}", rule.id), vars))?;
    for f in forbidden.iter() {
        push_line(&mut out, depth, &format!("! not: {}", f.text()));
    }
    Ok(out)
}

fn push_line(out: &mut String, level: usize, text: &str) {
    out.push_str(&" ".repeat(level));
    out.push_str(text);
    out.push('\n');
}

fn push_node(out: &mut String, level: usize, node: &crate::compliance::config::Node<'_>) {
    push_line(out, level, &node.text);
    for child in &node.children {
        push_node(out, level + 1, child);
    }
}

type Outcome = (Vec<Change>, String);

fn evaluate_inner(
    set: &RuleSet,
    rule: &Rule,
    running: &Config,
    syntax: Syntax,
    vars: &TemplateVars,
) -> Result<Outcome, String> {
    let mut rendered = Vec::new();
    let expected = expected(set, rule, syntax, vars, &mut rendered)?;
    let forbidden =
        rule.forbidden_patterns(&|i| render(set, &format!("{}#forbidden{i}", rule.id), vars))?;
    let ignore: Vec<&LineRegex> = set.ignore.iter().chain(&rule.ignore).collect();
    let sections = sections(rule, running, syntax);
    let mut changes = Vec::new();
    let mut message = String::new();
    if sections.list.is_empty() {
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
                            node: want.to_node(),
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
    let forbidden_heads = config::head_bits(forbidden.iter().map(Pattern::head));
    // One vector of running lines for every section, cleared for the next.
    let mut running: Vec<&Node> = Vec::new();
    for (range, children) in &sections.list {
        let parents = &sections.paths[range.clone()];
        // Junos: the section is the lines under the prefix of words; changes are whole
        // `set` lines, without parents.
        let prefix = match syntax {
            Syntax::Set => parents.join(" "),
            Syntax::Indented => String::new(),
        };
        running.clear();
        running.extend(
            children
                .iter()
                .filter(|n| !ignore.iter().any(|re| re.is_match(&n.text)))
                .filter(|n| syntax == Syntax::Indented || within_prefix(&n.text, &prefix)),
        );
        let parents: &[&str] = match syntax {
            Syntax::Set => &[],
            Syntax::Indented => parents,
        };
        compare(
            rule,
            &expected,
            &running,
            &ignore,
            parents,
            &mut changes,
            &mut message,
            true,
        );
        forbid(&forbidden, forbidden_heads, &running, parents, &mut changes);
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

/// The sections a rule checks: the parent lines of each (a range of `paths`, so that a
/// rule matching 180 interfaces allocates one vector, not 180) and the lines in it.
struct Sections<'a, 'c> {
    paths: Vec<&'a str>,
    list: Vec<(Range<usize>, &'a [Node<'c>])>,
}

/// The sections the rule checks. Junos: one section, the flat list, filtered by the prefix
/// later.
fn sections<'a, 'c>(rule: &'a Rule, running: &'a Config<'c>, syntax: Syntax) -> Sections<'a, 'c> {
    let mut paths: Vec<&str> = Vec::new();
    if rule.section.is_empty() {
        return Sections {
            paths,
            list: vec![(0..0, &running.roots)],
        };
    }
    if syntax == Syntax::Set {
        paths.extend(rule.section.iter().map(Pattern::text));
        let prefix = paths.join(" ");
        let any = running
            .roots
            .iter()
            .any(|n| within_prefix(&n.text, &prefix));
        let list = if any {
            vec![(0..paths.len(), &running.roots[..])]
        } else {
            Vec::new()
        };
        return Sections { paths, list };
    }
    let mut level: Vec<(Range<usize>, &Node)> = Vec::new();
    for n in running
        .roots
        .iter()
        .filter(|n| rule.section[0].matches(&n.text))
    {
        paths.push(&n.text);
        level.push((paths.len() - 1..paths.len(), n));
    }
    for pattern in &rule.section[1..] {
        let mut next = Vec::new();
        for (path, node) in level {
            for c in node.children.iter().filter(|c| pattern.matches(&c.text)) {
                let start = paths.len();
                paths.extend_from_within(path.clone());
                paths.push(&c.text);
                next.push((start..paths.len(), c));
            }
        }
        level = next;
    }
    let list = level
        .into_iter()
        .map(|(path, node)| (path, node.children.as_slice()))
        .collect();
    Sections { paths, list }
}

/// Which running lines of a level are taken: bits for up to 64 (most sections), else one
/// flag each.
enum Taken {
    Bits(u64),
    Flags(Vec<bool>),
}

impl Taken {
    fn new(lines: usize) -> Taken {
        if lines <= 64 {
            Taken::Bits(0)
        } else {
            Taken::Flags(vec![false; lines])
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Taken::Bits(bits) => bits & (1 << i) != 0,
            Taken::Flags(flags) => flags[i],
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Taken::Bits(bits) => *bits |= 1 << i,
            Taken::Flags(flags) => flags[i] = true,
        }
    }
}

fn owned(parents: &[&str]) -> Vec<String> {
    parents.iter().map(|p| p.to_string()).collect()
}

/// Expected and running lines from which `compare` looks exact lines up by their text
/// instead of trying every running line (a whole config as `intended`).
const INDEX_FROM: usize = 16;

/// Compare expected nodes with running nodes at one level, recursing into matched pairs.
#[allow(clippy::too_many_arguments)]
fn compare(
    rule: &Rule,
    expected: &[&Expected],
    running: &[&Node],
    ignore: &[&LineRegex],
    parents: &[&str],
    changes: &mut Vec<Change>,
    message: &mut String,
    top: bool,
) {
    let mut taken = Taken::new(running.len());
    // The running lines matched, in the expected order (for `ordered`).
    let mut order = Vec::new();
    let index = (expected.len() >= INDEX_FROM && running.len() >= INDEX_FROM)
        .then(|| ExactIndex::new(running));
    for want in expected {
        let found = match (&index, &want.pattern) {
            (Some(index), Pattern::Exact(text)) => index.find(text, running, &taken),
            _ => (0..running.len())
                .find(|&i| !taken.get(i) && want.pattern.matches(&running[i].text)),
        };
        match found {
            Some(i) => {
                taken.set(i);
                if rule.ordered {
                    order.push(i);
                }
                // Children of a regex-matched line are only checked, never extra.
                let check_children =
                    !want.children.is_empty() || (rule.extra_lines_fail && want.exact());
                if check_children {
                    let running_kids: Vec<&Node> = running[i]
                        .children
                        .iter()
                        .filter(|n| !ignore.iter().any(|re| re.is_match(&n.text)))
                        .collect();
                    // Nothing expected and nothing there: nothing to find (this saves
                    // the path's allocation for most lines of an intended config).
                    if want.children.is_empty() && running_kids.is_empty() {
                        continue;
                    }
                    let mut path = parents.to_vec();
                    path.push(&running[i].text);
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
                parents: owned(parents),
                node: want.to_node(),
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
                parents: owned(parents),
                node: running[i].to_owned_node(),
                add: false,
            });
        }
        for want in expected {
            if want.exact() {
                changes.push(Change {
                    parents: owned(parents),
                    node: want.to_node(),
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
            if !taken.get(i) && like {
                changes.push(Change {
                    parents: owned(parents),
                    node: node.to_owned_node(),
                    add: false,
                });
            }
        }
    }
}

/// Running lines by their text with blanks squashed, for exact lines to find without
/// trying each running line: the candidates are confirmed with the same comparison, so the
/// line found is the one the plain search finds (the first one not taken that matches; an
/// exact pattern's text is squashed, so every line it matches has it as key).
struct ExactIndex<'r> {
    lines: HashMap<Cow<'r, str>, Vec<usize>>,
}

impl<'r> ExactIndex<'r> {
    fn new(running: &[&'r Node]) -> Self {
        let mut lines: HashMap<Cow<'r, str>, Vec<usize>> = HashMap::with_capacity(running.len());
        for (i, node) in running.iter().enumerate() {
            lines.entry(squash_key(&node.text)).or_default().push(i);
        }
        ExactIndex { lines }
    }

    fn find(&self, text: &str, running: &[&Node], taken: &Taken) -> Option<usize> {
        self.lines
            .get(text)?
            .iter()
            .copied()
            .find(|&i| !taken.get(i) && rules::squashed_eq(text, &running[i].text))
    }
}

/// A running line's key in `ExactIndex`: the text an exact pattern must equal to match it
/// (its blanks squashed when it has runs of them or tabs, as `squashed_eq` compares).
fn squash_key<'r>(line: &Cow<'r, str>) -> Cow<'r, str> {
    if rules::squashes(line) {
        Cow::Owned(rules::squash(line))
    } else {
        match line {
            Cow::Borrowed(text) => Cow::Borrowed(text),
            Cow::Owned(text) => Cow::Owned(text.clone()),
        }
    }
}

/// Forbidden lines at any depth of the section. The path of parents is a stack of borrowed
/// lines, copied only for a line that is found; sections holding no line that starts as a
/// forbidden pattern must (`heads`, `Node::may_hold`) are skipped.
fn forbid(
    forbidden: &[Pattern],
    heads: u64,
    running: &[&Node],
    parents: &[&str],
    changes: &mut Vec<Change>,
) {
    if forbidden.is_empty() {
        return;
    }
    let mut path: Vec<&str> = parents.to_vec();
    for node in running {
        forbid_under(forbidden, heads, node, &mut path, changes);
    }
}

fn forbid_under<'a>(
    forbidden: &[Pattern],
    heads: u64,
    node: &'a Node,
    path: &mut Vec<&'a str>,
    changes: &mut Vec<Change>,
) {
    if !node.may_hold_any(heads) {
        return;
    }
    if forbidden.iter().any(|p| p.matches(&node.text)) {
        changes.push(Change {
            parents: owned(path),
            node: Node::new(node.text.to_string()),
            add: false,
        });
        return;
    }
    if node.children.is_empty() {
        return;
    }
    path.push(&node.text);
    for child in &node.children {
        forbid_under(forbidden, heads, child, path, changes);
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
            .map(|r| evaluate(&set, r, &cfg, syntax, &template_vars(&vars)).0)
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
    fn the_index_finds_what_the_plain_search_finds() {
        let texts = [
            "ntp server 1",
            "ntp  server 1",
            "ntp\tserver 1",
            "ntp server 1",
            " ntp server 1",
            "ntp server 1 ",
            "ntp\u{a0}server 1",
            "ntp\u{a0}\tserver 1",
            "ntp server 2",
            "a",
            "",
        ];
        let nodes: Vec<Node> = texts.iter().map(|t| Node::new(*t)).collect();
        let running: Vec<&Node> = nodes.iter().collect();
        let index = ExactIndex::new(&running);
        for want in [
            "ntp server 1",
            "ntp  server 2",
            "a",
            "",
            "b",
            "ntp\u{a0}server 1",
        ] {
            let pattern = Pattern::new(want, MatchKind::Exact).unwrap();
            let mut taken = Taken::new(running.len());
            loop {
                let plain = (0..running.len())
                    .find(|&i| !taken.get(i) && pattern.matches(&running[i].text));
                assert_eq!(
                    index.find(pattern.text(), &running, &taken),
                    plain,
                    "{want:?}"
                );
                match plain {
                    Some(i) => taken.set(i),
                    None => break,
                }
            }
        }
    }

    #[test]
    fn a_whole_config_as_intended_lines() {
        // Enough lines for `compare` to look them up by text.
        let mut want = String::new();
        let mut have = String::new();
        for i in 0..20 {
            want.push_str(&format!("interface Gi0/{i}\n description port {i}\n"));
            let desc = match i {
                3 => "port  3".to_string(), // blanks squashed: the same line
                7 => "other".to_string(),
                _ => format!("port {i}"),
            };
            have.push_str(&format!("interface Gi0/{i}\n description {desc}\n"));
        }
        have.push_str("interface Gi0/3\n description port 3\n");
        let rules = format!("rules:\n  - id: all\n    intended: |\n{}", indent(&want));
        let r = &run(&rules, &have, Syntax::Indented)[0];
        assert_eq!(r.status, Status::Missing, "{r:?}");
        assert_eq!(r.missing, ["interface Gi0/7", " description port 7"]);
        assert_eq!(
            r.extra,
            [
                "interface Gi0/7",
                " description other",
                "interface Gi0/3",
                " description port 3"
            ]
        );
    }

    fn indent(text: &str) -> String {
        text.lines().map(|l| format!("      {l}\n")).collect()
    }

    #[test]
    fn forbidden_lines_are_found_at_any_depth_and_short_ones_too() {
        let rules = "rules:\n  - id: no\n    forbidden: ['zz top', 'x']\n";
        let cfg = "x\nrouter a\n neighbor 1\n  zz top\nrouter b\n neighbor 2\n";
        let r = &run(rules, cfg, Syntax::Indented)[0];
        assert_eq!(
            r.remediation,
            [
                "no x",
                "router a",
                " neighbor 1",
                "  no zz top",
                "  exit",
                " exit"
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
