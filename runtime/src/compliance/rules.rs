//! Golden-config rule files: the YAML a tenant uploads, checked once at upload into a
//! [`RuleSet`] the audit runs.
//!
//! ```yaml
//! vars: { ntp_servers: [10.0.0.1, 10.0.0.2] }     # defaults for every device
//! group_vars:                                      # then these, in order, where in scope
//!   - scope: { site: [ams] }
//!     vars: { ntp_servers: [10.1.0.1] }
//! ignore: ['^ *password 7 ']                       # lines no rule of the file sees
//! rules:
//!   - id: ntp-servers
//!     feature: ntp
//!     scope: { platform: [frr, ios], role: [core] }
//!     section: []                                  # parent lines, outermost first
//!     intended: |                                  # Jinja2 (minijinja) over the variables
//!       {% for s in ntp_servers %}ntp server {{ s }}
//!       {% endfor %}
//!     extra_lines_fail: true                       # other `ntp server` lines fail
//!     lines_like: '^ntp server '                   # ... of those the section holds
//! ```
//!
//! Every error names the file, line, column and key (`rules[2].section[0]`), from the YAML
//! parser (serde-saphyr: maintained, pure Rust, with budgets against alias bombs) or from our
//! own checks (regexes, templates), which point at the rule's key.

use super::config::{self, Node, Syntax};
use crate::inventory::Device;
use minijinja::{Environment, UndefinedBehavior};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cell::RefCell;

/// Size limit of one compiled regex (Rust's regex is linear-time; this bounds its memory).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Template fuel per render: a template looping for ever stops with an error.
const TEMPLATE_FUEL: u64 = 2_000_000;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize)]
#[error("{file}:{line}:{column}: {key}: {reason}")]
pub struct RuleFileError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// The key the error is about, as a path (`rules[2].intended`); empty: the document.
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScopeDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site: Vec<String>,
    /// The device has at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

impl ScopeDoc {
    /// Every field given must match (a field matches if any of its values does).
    pub fn covers(&self, d: &Device) -> bool {
        fn one(wanted: &[String], have: Option<&String>) -> bool {
            wanted.is_empty() || have.is_some_and(|h| wanted.iter().any(|w| w == h))
        }
        one(&self.platform, d.platform.as_ref())
            && one(&self.role, d.role.as_ref())
            && one(&self.site, d.site.as_ref())
            && one(&self.devices, Some(&d.name))
            && (self.tags.is_empty() || self.tags.iter().any(|t| d.tags.contains(t)))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// Lines compare equal, blanks squashed.
    #[default]
    Exact,
    /// Each rule line is a regular expression a running line must match in full.
    Regex,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupVars {
    pub scope: ScopeDoc,
    pub vars: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: String,
    /// Rules of one feature make one line of the report; default: the rule's id.
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scope: ScopeDoc,
    /// The parent lines of the section checked, outermost first (patterns under `match`);
    /// empty: the top level. Junos: a prefix of words (`set system ntp`).
    #[serde(default)]
    pub section: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_kind: MatchKind,
    /// Lines the section must hold; an entry of several lines nests by indentation.
    /// May use `{{ variables }}`.
    #[serde(default)]
    pub required: Vec<String>,
    /// Lines the section must not hold, at any depth.
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// The section's intended lines, a Jinja2 template over the device's variables; always
    /// compared exactly.
    #[serde(default)]
    pub intended: Option<String>,
    /// The required and intended lines must appear in this order.
    #[serde(default)]
    pub ordered: bool,
    /// Lines in the section that no required or intended line accounts for fail the rule.
    /// Default: true when `intended` is given, else false.
    #[serde(default)]
    pub extra_lines_fail: Option<bool>,
    /// With `extra_lines_fail`: only running lines matching this regex can be extra (e.g.
    /// `^ntp server ` when the section is the top level).
    #[serde(default)]
    pub lines_like: Option<String>,
    /// Regexes of running lines this rule does not see (secret hashes, timestamps).
    #[serde(default)]
    pub ignore: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileDoc {
    #[serde(default)]
    pub vars: Map<String, Value>,
    #[serde(default)]
    pub group_vars: Vec<GroupVars>,
    #[serde(default)]
    pub ignore: Vec<String>,
    pub rules: Vec<RuleDoc>,
}

/// A line pattern: exact (blanks squashed) or a regex matched against the whole line.
#[derive(Clone, Debug)]
pub enum Pattern {
    Exact(String),
    Regex(LineRegex),
}

impl Pattern {
    pub fn new(text: &str, kind: MatchKind) -> Result<Pattern, String> {
        match kind {
            MatchKind::Exact => Ok(Pattern::Exact(squash(text))),
            MatchKind::Regex => LineRegex::full(text.trim()).map(Pattern::Regex),
        }
    }

    pub fn matches(&self, line: &str) -> bool {
        match self {
            Pattern::Exact(want) => squashed_eq(want, line),
            Pattern::Regex(re) => re.is_match(line),
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Pattern::Exact(t) => t,
            Pattern::Regex(re) => &re.source,
        }
    }

    /// The first two bytes of every line this pattern matches, when they are known: a
    /// search skips the sections that hold no line starting so (`Node::may_hold`).
    pub fn head(&self) -> Option<[u8; 2]> {
        match self {
            // A line equal to `want` with its blanks squashed starts with the same byte (an
            // ASCII one: the line cannot start with a blank) and the same first word.
            Pattern::Exact(want) => match want.as_bytes() {
                [a, b, ..] if a.is_ascii() && *b != b' ' => Some([*a, *b]),
                _ => None,
            },
            Pattern::Regex(re) => re.head(),
        }
    }
}

/// A regex over one configuration line, with the literal text every match must start with
/// checked first: most lines of a config fail that `starts_with`, and never reach the regex
/// engine (an audit asks millions of lines; this made one 3× faster). A pattern that is all
/// literal text (`transport input ssh`), or literal text then `.*` (`line vty .*`), is not
/// run as a regex at all.
#[derive(Clone, Debug)]
pub struct LineRegex {
    re: Regex,
    prefix: Literal,
    /// What follows the literal prefix in the pattern.
    tail: Tail,
    /// Anchored at both ends (`full`), or only at the start if at all (`search`).
    whole_line: bool,
    /// The pattern as written.
    source: String,
}

/// The rest of a pattern after its literal prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// Nothing: the pattern is the literal.
    Nothing,
    /// `.*`: anything but a line break.
    Any,
    /// Anything else: the regex decides.
    Regex,
}

impl LineRegex {
    /// `pattern` must match the whole line.
    pub fn full(pattern: &str) -> Result<LineRegex, String> {
        let (prefix, tail) = literal_prefix(pattern);
        Ok(LineRegex {
            re: compile_regex(&format!("^(?:{pattern})$"))?,
            prefix: Literal::new(prefix),
            tail,
            whole_line: true,
            source: pattern.to_string(),
        })
    }

    /// `pattern` may match anywhere, unless anchored with `^`.
    pub fn search(pattern: &str) -> Result<LineRegex, String> {
        let (prefix, tail) = match pattern.strip_prefix('^') {
            Some(anchored) => literal_prefix(anchored),
            None => (String::new(), Tail::Regex),
        };
        Ok(LineRegex {
            re: compile_regex(pattern)?,
            prefix: Literal::new(prefix),
            tail,
            whole_line: false,
            source: pattern.to_string(),
        })
    }

    pub fn is_match(&self, line: &str) -> bool {
        if !self.prefix.starts(line.as_bytes()) {
            return false;
        }
        let rest = &line.as_bytes()[self.prefix.text.len()..];
        match self.tail {
            // Anchored at the start only, the prefix is the match.
            Tail::Nothing | Tail::Any if !self.whole_line => true,
            Tail::Nothing => rest.is_empty(),
            Tail::Any => !rest.contains(&b'\n'),
            Tail::Regex => self.re.is_match(line),
        }
    }

    /// The first two bytes every matching line starts with, if known.
    fn head(&self) -> Option<[u8; 2]> {
        match self.prefix.text.as_bytes() {
            [a, b, ..] => Some([*a, *b]),
            _ => None,
        }
    }
}

/// Literal text a line must start with, its first and last eight bytes also kept as words:
/// nearly every line that does not start with it is told by one or two comparisons, without
/// a call to `memcmp`.
#[derive(Clone, Debug)]
struct Literal {
    text: String,
    head: u64,
    mask: u64,
    /// The last eight bytes, if longer than eight.
    tail: u64,
}

impl Literal {
    fn new(text: String) -> Literal {
        let bytes = text.as_bytes();
        let n = bytes.len().min(8);
        Literal {
            head: first_word(bytes),
            mask: if n == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            },
            tail: match bytes.len() {
                0..=8 => 0,
                len => first_word(&bytes[len - 8..]),
            },
            text,
        }
    }

    #[inline]
    fn starts(&self, line: &[u8]) -> bool {
        let want = self.text.as_bytes();
        let len = want.len();
        line.len() >= len
            && first_word(line) & self.mask == self.head
            && (len <= 8
                || (first_word(&line[len - 8..]) == self.tail
                    && (len <= 16 || line[8..len - 8] == want[8..len - 8])))
    }
}

/// The first eight bytes of `bytes` as a little-endian word, zeros after its end.
#[inline]
fn first_word(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        None => {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(word)
        }
    }
}

/// The literal text a match of `pattern` (anchored at its start) must begin with: the
/// characters up to the first regex operator, escaped punctuation included; nothing if the
/// pattern has an alternation outside a group. And what follows it in the pattern.
fn literal_prefix(pattern: &str) -> (String, Tail) {
    let mut depth = 0i32;
    let mut escaped = false;
    for c in pattern.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '(' | '[') => depth += 1,
            (false, ')' | ']') => depth -= 1,
            (false, '|') if depth <= 0 => return (String::new(), Tail::Regex),
            _ => {}
        }
    }
    let mut out = String::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let literal = match c {
            '\\' => match chars.peek() {
                Some(&(_, n)) if n.is_ascii_punctuation() => {
                    chars.next();
                    n
                }
                _ => return (out, Tail::Regex),
            },
            '.' | '^' | '$' | '|' | '?' | '*' | '+' | '(' | ')' | '[' | ']' | '{' | '}' => {
                let tail = if &pattern[at..] == ".*" {
                    Tail::Any
                } else {
                    Tail::Regex
                };
                return (out, tail);
            }
            c => c,
        };
        // A quantifier after it makes the character optional.
        if matches!(chars.peek(), Some((_, '?' | '*' | '{'))) {
            return (out, Tail::Regex);
        }
        out.push(literal);
    }
    (out, Tail::Nothing)
}

pub fn squash(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `a` (already squashed) equals `b` with its blanks squashed, without allocating. Lines
/// are trimmed, so most comparisons end at the first byte or the lengths.
pub(crate) fn squashed_eq(a: &str, b: &str) -> bool {
    let (a_bytes, b_bytes) = (a.as_bytes(), b.as_bytes());
    if a_bytes.first() != b_bytes.first() || b.len() < a.len() {
        return false;
    }
    if a.len() == b.len() && a == b {
        return true;
    }
    // `b` starts with `a`'s first word (it cannot start with a blank when `a` starts with
    // an ASCII character): if that word is two bytes or more, their second bytes are equal.
    if let [first, second, ..] = a_bytes
        && first.is_ascii()
        && *second != b' '
        && b_bytes.get(1) != Some(second)
    {
        return false;
    }
    squashes(b) && squashed_eq_slow(a, b)
}

/// Only a line with runs of blanks or tabs can squash to another text.
pub(crate) fn squashes(b: &str) -> bool {
    let mut blank_before = false;
    for &c in b.as_bytes() {
        let blank = c.is_ascii_whitespace();
        if c == b'\t' || (blank && blank_before) {
            return true;
        }
        blank_before = blank;
    }
    false
}

fn squashed_eq_slow(a: &str, b: &str) -> bool {
    let mut theirs = b.split_whitespace();
    for word in a.split(' ') {
        if theirs.next() != Some(word) {
            return false;
        }
    }
    theirs.next().is_none()
}

pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// An expected line: as written (for the report and remediation), its compiled pattern, and
/// its expected children.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The line as written, without its children (`to_node` has them).
    pub node: Node<'static>,
    pub pattern: Pattern,
    pub children: Vec<Expected>,
}

impl Expected {
    /// Compile `nodes` (and their children) as patterns of `kind`.
    pub fn tree(nodes: &[Node], kind: MatchKind) -> Result<Vec<Expected>, String> {
        nodes
            .iter()
            .map(|node| {
                let pattern = Pattern::new(&node.text, kind)
                    .map_err(|e| format!("regex `{}`: {e}", node.text))?;
                let children = Expected::tree(&node.children, kind)?;
                let mut line = Node::new(node.text.to_string());
                line.line = node.line;
                Ok(Expected {
                    node: line,
                    pattern,
                    children,
                })
            })
            .collect()
    }

    /// The expected line with its expected children: what to add when it is missing.
    pub fn to_node(&self) -> Node<'static> {
        let mut node = self.node.clone();
        node.children = self.children.iter().map(Expected::to_node).collect();
        node
    }

    pub fn exact(&self) -> bool {
        matches!(self.pattern, Pattern::Exact(_))
    }
}

/// A rule line as written: fixed (compiled once), or a template rendered per device.
#[derive(Clone, Debug)]
pub enum RuleLines {
    Fixed(Vec<Expected>),
    Templated(String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub feature: String,
    pub scope: ScopeDoc,
    pub section: Vec<Pattern>,
    pub match_kind: MatchKind,
    /// Each entry parsed as indented lines (an entry may nest).
    pub required: Vec<RuleLines>,
    pub forbidden: Vec<String>,
    forbidden_fixed: Vec<Pattern>,
    /// Name of the template in the rule set's environment.
    pub intended: Option<String>,
    pub ordered: bool,
    pub extra_lines_fail: bool,
    pub lines_like: Option<LineRegex>,
    pub ignore: Vec<LineRegex>,
}

impl Rule {
    /// The forbidden patterns, rendering templated ones (by their index) with `render`.
    /// Fixed ones are borrowed: a cloned `Regex` starts with a cold cache of its own.
    pub fn forbidden_patterns(
        &self,
        render: &dyn Fn(usize) -> Result<String, String>,
    ) -> Result<std::borrow::Cow<'_, [Pattern]>, String> {
        if self.forbidden_fixed.len() == self.forbidden.len() {
            return Ok(std::borrow::Cow::Borrowed(&self.forbidden_fixed));
        }
        self.forbidden
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let text = if is_template(f) {
                    render(i)?
                } else {
                    f.clone()
                };
                Pattern::new(&text, self.match_kind)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(std::borrow::Cow::Owned)
    }
}

/// A checked rule file, ready to evaluate.
pub struct RuleSet {
    pub file: String,
    pub version: u32,
    /// `file@version`, what each of its results records.
    source: String,
    pub vars: Map<String, Value>,
    pub group_vars: Vec<GroupVars>,
    pub ignore: Vec<LineRegex>,
    pub rules: Vec<Rule>,
    pub env: Environment<'static>,
}

impl RuleSet {
    /// `file@version`, what each of its results records.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("file", &self.file)
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The locations of keys in the document, found by re-reading it with spans: our own checks
/// (regexes, templates) point at the key they are about.
fn key_location(text: &str, path: &[KeyStep]) -> (u64, u64) {
    // A small walk over the YAML events is more than we need: find the key's line by
    // following the path through the text's indentation. Good enough for block-style YAML;
    // otherwise the error points at the rule's `- id:` line or the document start.
    let mut line_no = 0usize;
    let mut column = 1usize;
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut min_indent = 0usize;
    for step in path {
        match step {
            KeyStep::Key(key) => {
                let found = lines.iter().enumerate().skip(from).find(|(_, l)| {
                    let body = l.trim_start().trim_start_matches("- ");
                    let indent = l.len() - l.trim_start().len();
                    indent >= min_indent
                        && (body.starts_with(&format!("{key}:"))
                            || body.starts_with(&format!("\"{key}\":")))
                });
                if let Some((i, l)) = found {
                    line_no = i;
                    column = l.find(key.as_str()).unwrap_or(0) + 1;
                    from = i;
                    min_indent = l.len() - l.trim_start().len();
                }
            }
            KeyStep::Index(n) => {
                // The n-th `- ` item at the deepest indentation after `from`.
                let mut seen = 0;
                let mut item_indent = None;
                for (i, l) in lines.iter().enumerate().skip(from + 1) {
                    let indent = l.len() - l.trim_start().len();
                    if l.trim_start().starts_with("- ") || l.trim() == "-" {
                        let want = *item_indent.get_or_insert(indent);
                        if indent == want {
                            if seen == *n {
                                line_no = i;
                                column = indent + 1;
                                from = i;
                                min_indent = indent;
                                break;
                            }
                            seen += 1;
                        }
                    }
                }
            }
        }
    }
    ((line_no + 1) as u64, column as u64)
}

#[derive(Clone, Debug)]
enum KeyStep {
    Key(String),
    Index(usize),
}

fn path_string(path: &[KeyStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            KeyStep::Key(k) if out.is_empty() => out.push_str(k),
            KeyStep::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            KeyStep::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parse and check a rule file.
pub fn compile(file: &str, version: u32, text: &str) -> Result<RuleSet, RuleFileError> {
    let doc = parse_doc(file, text)?;
    let err = |path: Vec<KeyStep>, reason: String| {
        let (line, column) = key_location(text, &path);
        RuleFileError {
            file: file.into(),
            line,
            column,
            key: path_string(&path),
            reason,
        }
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    let ignore = doc
        .ignore
        .iter()
        .enumerate()
        .map(|(i, p)| {
            LineRegex::search(p)
                .map_err(|e| err(vec![KeyStep::Key("ignore".into()), KeyStep::Index(i)], e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = Vec::with_capacity(doc.rules.len());
    let mut ids = std::collections::HashSet::new();
    for (n, r) in doc.rules.into_iter().enumerate() {
        let at = |key: &str| {
            vec![
                KeyStep::Key("rules".into()),
                KeyStep::Index(n),
                KeyStep::Key(key.into()),
            ]
        };
        let at_item = |key: &str, i: usize| {
            let mut p = at(key);
            p.push(KeyStep::Index(i));
            p
        };
        if r.id.trim().is_empty() || r.id.len() > 128 {
            return Err(err(at("id"), "a rule id is 1 to 128 characters".into()));
        }
        if !ids.insert(r.id.clone()) {
            return Err(err(at("id"), format!("rule id `{}` is used twice", r.id)));
        }
        let section = r
            .section
            .iter()
            .enumerate()
            .map(|(i, s)| Pattern::new(s, r.match_kind).map_err(|e| err(at_item("section", i), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut required = Vec::new();
        for (i, line) in r.required.iter().enumerate() {
            if is_template(line) {
                env.add_template_owned(format!("{}#required{i}", r.id), line.clone())
                    .map_err(|e| err(at_item("required", i), template_error(&e)))?;
                required.push(RuleLines::Templated(format!("{}#required{i}", r.id)));
            } else {
                let nodes = config::parse(line, Syntax::Indented)
                    .map_err(|e| err(at_item("required", i), e.to_string()))?
                    .roots;
                let expected = Expected::tree(&nodes, r.match_kind)
                    .map_err(|e| err(at_item("required", i), e))?;
                required.push(RuleLines::Fixed(expected));
            }
        }
        let mut forbidden_fixed = Vec::new();
        for (i, line) in r.forbidden.iter().enumerate() {
            if is_template(line) {
                env.add_template_owned(format!("{}#forbidden{i}", r.id), line.clone())
                    .map_err(|e| err(at_item("forbidden", i), template_error(&e)))?;
            } else {
                forbidden_fixed.push(
                    Pattern::new(line, r.match_kind)
                        .map_err(|e| err(at_item("forbidden", i), e))?,
                );
            }
        }
        if r.forbidden.iter().any(|f| is_template(f)) {
            forbidden_fixed.clear();
        }
        let intended = match &r.intended {
            Some(source) => {
                let name = format!("{}#intended", r.id);
                env.add_template_owned(name.clone(), source.clone())
                    .map_err(|e| err(at("intended"), template_error(&e)))?;
                Some(name)
            }
            None => None,
        };
        if required.is_empty() && r.forbidden.is_empty() && intended.is_none() {
            return Err(err(
                at("id"),
                "a rule needs `required`, `forbidden` or `intended` lines".into(),
            ));
        }
        let lines_like = r
            .lines_like
            .as_deref()
            .map(|p| LineRegex::search(p).map_err(|e| err(at("lines_like"), e)))
            .transpose()?;
        let rule_ignore = r
            .ignore
            .iter()
            .enumerate()
            .map(|(i, p)| LineRegex::search(p).map_err(|e| err(at_item("ignore", i), e)))
            .collect::<Result<Vec<_>, _>>()?;
        rules.push(Rule {
            feature: r.feature.clone().unwrap_or_else(|| r.id.clone()),
            id: r.id,
            scope: r.scope,
            section,
            match_kind: r.match_kind,
            required,
            forbidden: r.forbidden,
            forbidden_fixed,
            extra_lines_fail: r.extra_lines_fail.unwrap_or(intended.is_some()),
            intended,
            ordered: r.ordered,
            lines_like,
            ignore: rule_ignore,
        });
    }
    Ok(RuleSet {
        file: file.into(),
        version,
        source: format!("{file}@{version}"),
        vars: doc.vars,
        group_vars: doc.group_vars,
        ignore,
        rules,
        env,
    })
}

fn template_error(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!(
            "Jinja2 template, its line {line}: {}",
            e.detail().unwrap_or(&e.to_string())
        ),
        None => format!("Jinja2 template: {e}"),
    }
}

fn parse_doc(file: &str, text: &str) -> Result<RuleFileDoc, RuleFileError> {
    let path = RefCell::new(String::new());
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            *path.borrow_mut() = e.path().to_string();
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let key = path.into_inner();
        RuleFileError {
            file: file.into(),
            line,
            column,
            key: if key == "." { String::new() } else { key },
            reason: first_line(&e.to_string()),
        }
    })
}

/// serde-saphyr's messages can carry a source snippet; the API wants the message.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// A device's variables for templates: its inventory fields, then the file's `vars`, the
/// `group_vars` in scope in order, and the device's own `vars` last (each overrides).
pub fn device_vars(set: &RuleSet, device: &Device) -> Map<String, Value> {
    let mut vars = set.vars.clone();
    for g in &set.group_vars {
        if g.scope.covers(device) {
            for (k, v) in &g.vars {
                vars.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in &device.vars {
        vars.insert(k.clone(), v.clone());
    }
    let facts = [
        ("name", Value::from(device.name.clone())),
        ("address", Value::from(device.address.clone())),
        ("platform", device.platform.clone().into()),
        ("role", device.role.clone().into()),
        ("site", device.site.clone().into()),
        ("tags", Value::from(device.tags.clone())),
    ];
    for (k, v) in facts {
        vars.entry(k.to_string()).or_insert(v);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_names_file_line_column_and_key() {
        let text = "rules:\n  - id: ntp\n    required: [ntp server 1.1.1.1]\n  - id: vty\n    requird: [x]\n";
        let e = compile("base.yaml", 1, text).unwrap_err();
        assert_eq!(e.file, "base.yaml");
        assert_eq!(e.line, 5, "{e}");
        assert!(e.key.starts_with("rules[1]"), "{e}");
        assert!(e.reason.contains("requird"), "{e}");
    }

    #[test]
    fn a_bad_regex_names_its_key_and_line() {
        let text =
            "rules:\n  - id: ntp\n    match: regex\n    required:\n      - 'ntp server (1.1.1.1'\n";
        let e = compile("base.yaml", 1, text).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("rules[0].required[0]", 5), "{e}");
    }

    #[test]
    fn a_template_syntax_error_is_caught_at_upload() {
        let text = "rules:\n  - id: ntp\n    intended: |\n      {% for s in ntp_servers %}ntp server {{ s }}\n";
        let e = compile("base.yaml", 1, text).unwrap_err();
        assert_eq!(e.key, "rules[0].intended", "{e}");
        assert!(e.reason.contains("Jinja2"), "{e}");
    }

    #[test]
    fn a_rule_with_nothing_to_check_is_refused() {
        let e = compile("f.yaml", 1, "rules:\n  - id: empty\n").unwrap_err();
        assert!(e.reason.contains("needs"), "{e}");
    }

    #[test]
    fn scope_fields_and_tags() {
        let d: Device = serde_json::from_value(serde_json::json!({
            "name": "r1", "address": "10.0.0.1", "platform": "frr", "role": "core", "tags": ["lab"]
        }))
        .unwrap();
        let s = |v: serde_json::Value| -> ScopeDoc { serde_json::from_value(v).unwrap() };
        assert!(s(serde_json::json!({})).covers(&d));
        assert!(
            s(serde_json::json!({"platform": ["ios", "frr"], "tags": ["x", "lab"]})).covers(&d)
        );
        assert!(!s(serde_json::json!({"platform": ["frr"], "site": ["ams"]})).covers(&d));
        assert!(!s(serde_json::json!({"role": ["edge"]})).covers(&d));
    }

    #[test]
    fn exact_patterns_ignore_runs_of_blanks() {
        let p = Pattern::new("ntp  server 1.1.1.1", MatchKind::Exact).unwrap();
        assert!(p.matches("ntp server   1.1.1.1"));
        assert!(!p.matches("ntp server 1.1.1.1 prefer"));
        let r = Pattern::new("ntp server .*", MatchKind::Regex).unwrap();
        assert!(r.matches("ntp server 1.1.1.1"));
        assert!(!r.matches("no ntp server 1.1.1.1"));
        assert_eq!(r.text(), "ntp server .*");
    }

    #[test]
    fn the_shortcuts_answer_as_the_regex_does() {
        let patterns = [
            "transport input ssh",
            "transport input (telnet|all).*",
            "line vty .*",
            "snmp-server community .*",
            "interface GigabitEthernet0/1[0-9]*",
            r"ntp server 10\.0\.0\.1",
            "ntp server 10.0.0.1",
            "a.*",
            "shutdown",
            "",
            "x|y",
            r"\S+ secret .*",
            "spanning-tree portfast",
            "ntp",
        ];
        let lines = [
            "transport input ssh",
            "transport input ssh telnet",
            "transport input telnet ssh",
            "transport input",
            "line vty 0 4",
            "line vty ",
            "line vty",
            "line vty 0\n4",
            "snmp-server community public RO",
            "interface GigabitEthernet0/1",
            "interface GigabitEthernet0/123",
            "interface GigabitEthernet0/1a",
            "interface GigabitEthernet0/2",
            "ntp server 10.0.0.1",
            "ntp server 10x0x0x1",
            "ntp server 10.0.0.12",
            "a",
            "",
            "shutdown",
            "no shutdown",
            "x",
            "username a secret 9 $9$x",
            "spanning-tree portfast",
            "ntp",
            "ntpd",
            "é accent",
        ];
        for p in patterns {
            let full = LineRegex::full(p).unwrap();
            let full_re = Regex::new(&format!("^(?:{p})$")).unwrap();
            let search = LineRegex::search(&format!("^{p}")).unwrap();
            let search_re = Regex::new(&format!("^{p}")).unwrap();
            for l in lines {
                assert_eq!(full.is_match(l), full_re.is_match(l), "full `{p}` on `{l}`");
                assert_eq!(
                    search.is_match(l),
                    search_re.is_match(l),
                    "search `^{p}` on `{l}`"
                );
            }
        }
    }

    #[test]
    fn the_literal_prefix_is_what_every_match_starts_with() {
        let prefix = |p| literal_prefix(p).0;
        assert_eq!(prefix("snmp-server community .*"), "snmp-server community ");
        assert_eq!(
            prefix(r"ntp server 10\.0\.0\.1( use-vrf \S+)?"),
            "ntp server 10.0.0.1"
        );
        assert_eq!(prefix("interface Gi0/1[0-9]*"), "interface Gi0/1");
        assert_eq!(prefix("transport inputs?"), "transport input");
        assert_eq!(prefix("a|b"), "");
        assert_eq!(prefix("(a|b)c"), "");
        assert_eq!(prefix(r"\S+ x"), "");
        // All literal, or literal then `.*`: never run as a regex.
        assert_eq!(
            literal_prefix(r"ip http server 10\.0\.0\.1"),
            ("ip http server 10.0.0.1".to_string(), Tail::Nothing)
        );
        assert_eq!(literal_prefix("line vty .*").1, Tail::Any);
        assert_eq!(literal_prefix(r"a\..*").1, Tail::Any);
        for regex in [
            "transport input ssh+",
            r"a\d",
            "a.*$",
            "a.+",
            r"a\.*",
            "a.*|b",
            "a.*b",
        ] {
            assert_eq!(literal_prefix(regex).1, Tail::Regex, "{regex}");
        }
        let vty = LineRegex::full("line vty .*").unwrap();
        assert!(vty.is_match("line vty 0 4") && vty.is_match("line vty "));
        assert!(!vty.is_match("line vty") && !vty.is_match("line vty 0\n4"));
        assert!(
            LineRegex::search("^ntp .*")
                .unwrap()
                .is_match("ntp server 1")
        );
        let ssh = LineRegex::full("transport input ssh").unwrap();
        assert!(ssh.is_match("transport input ssh"));
        assert!(!ssh.is_match("transport input ssh telnet") && !ssh.is_match("transport"));
        let dot = LineRegex::full(r"ip 10\.0\.0\.1").unwrap();
        assert!(dot.is_match("ip 10.0.0.1") && !dot.is_match("ip 10x0.0.1"));
        assert!(LineRegex::full("").unwrap().is_match(""));
        assert!(LineRegex::search("^").unwrap().is_match("anything"));
        let re = LineRegex::full("transport input (telnet|all).*").unwrap();
        assert!(re.is_match("transport input telnet ssh"));
        assert!(!re.is_match("transport input ssh"));
        let like = LineRegex::search("^ntp server ").unwrap();
        assert!(like.is_match("ntp server 10.0.0.1") && !like.is_match("no ntp server 1"));
        assert!(
            LineRegex::search("secret")
                .unwrap()
                .is_match("username a secret 9 x")
        );
    }
}
