//! Device configurations as trees of lines, the shape every rule compares.
//!
//! Two syntaxes cover the platforms SOTP backs up:
//! - **Indented** (Cisco IOS/IOS-XE/NX-OS, Arista EOS, FRR, and their like): a line indented
//!   deeper than the one before it is that line's child. Comment lines (`!`, `#`), `end`, and
//!   the section terminators FRR writes (`exit`, `exit-address-family`, `exit-vrf`, ...) are not
//!   configuration and are dropped; a `banner <kind> <delim>` keeps its text as children up to
//!   the closing delimiter.
//! - **Set** (Junos): every statement is one flat `set a b c` line, and a section is a prefix
//!   of words. Junos' curly-brace form is turned into `set` lines first, so both forms of the
//!   same configuration compare equal.
//!
//! Written by hand: the libraries that parse these configs are Python (hier_config,
//! ciscoconfparse, netutils) and the format is a few dozen lines of rules.

use serde::Serialize;
use std::borrow::Cow;

/// How a platform writes its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    Indented,
    Set,
}

impl Syntax {
    /// The syntax of a device's platform (as the inventory names it); indented unless Junos.
    pub fn of_platform(platform: Option<&str>) -> Syntax {
        match platform {
            Some(p) if p.to_ascii_lowercase().contains("junos") => Syntax::Set,
            _ => Syntax::Indented,
        }
    }
}

/// One configuration line with the lines nested under it. A parsed line borrows its text from
/// the configuration (an audit parses ~2,000 lines per device, and one allocation per line was
/// a tenth of its time); lines made by SOTP own theirs.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    /// The line without its indentation or trailing blanks.
    pub text: Cow<'a, str>,
    /// 1-based line number in the text it came from (0 for lines made by SOTP).
    pub line: usize,
    pub children: Vec<Node<'a>>,
    /// One bit per pair of first bytes (`head_bit`) of this line and every line under it:
    /// a search for lines starting with known bytes skips the sections without them.
    heads: u64,
}

impl Node<'static> {
    pub fn new(text: impl Into<String>) -> Node<'static> {
        Node {
            text: Cow::Owned(text.into()),
            line: 0,
            children: Vec::new(),
            heads: u64::MAX,
        }
    }
}

impl<'a> Node<'a> {
    fn parsed(text: &'a str, line: usize) -> Node<'a> {
        Node {
            text: Cow::Borrowed(text),
            line,
            children: Vec::new(),
            heads: head_bit(text.as_bytes()),
        }
    }

    /// A copy that owns its text (and its children's).
    pub fn to_owned_node(&self) -> Node<'static> {
        Node {
            text: Cow::Owned(self.text.to_string()),
            line: self.line,
            children: self.children.iter().map(Node::to_owned_node).collect(),
            heads: self.heads,
        }
    }

    /// Whether this line or one under it may start with the bytes `head`: false only if
    /// none does.
    pub fn may_hold(&self, head: [u8; 2]) -> bool {
        self.heads & head_bit(&head) != 0
    }

    /// `may_hold` for any head whose bit is in `bits` (`head_bits`; all bits: any line).
    pub(crate) fn may_hold_any(&self, bits: u64) -> bool {
        bits == u64::MAX || self.heads & bits != 0
    }

    fn add_child(&mut self, child: Node<'a>) {
        self.heads |= child.heads;
        self.children.push(child);
    }
}

/// Nodes are equal when their lines and children are (`heads` is derived from them).
impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.line == other.line && self.children == other.children
    }
}

impl Eq for Node<'_> {}

/// The bit of a line's first two bytes in `Node::heads`; a line shorter than that has none
/// (no head of two bytes can start it).
fn head_bit(line: &[u8]) -> u64 {
    match line {
        [a, b, ..] => 1 << ((u32::from(*a) * 31 + u32::from(*b)) % 64),
        _ => 0,
    }
}

/// The bits of `heads`, or every bit if one of them is unknown (`None`).
pub(crate) fn head_bits(heads: impl IntoIterator<Item = Option<[u8; 2]>>) -> u64 {
    heads.into_iter().fold(0, |bits, head| match head {
        Some(head) => bits | head_bit(&head),
        None => u64::MAX,
    })
}

/// A parsed configuration: its top-level lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config<'a> {
    pub roots: Vec<Node<'a>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("line {line}: {reason}")]
    Bad { line: usize, reason: String },
    #[error("not a configuration: {0}")]
    NotText(String),
}

/// Lines that close a section rather than configure anything.
fn is_terminator(text: &str) -> bool {
    matches!(
        text,
        "end" | "exit" | "exit-address-family" | "exit-vrf" | "exit-vnc" | "exit-vni" | "quit"
    )
}

fn is_comment(text: &str) -> bool {
    text.starts_with('!') || text.starts_with('#')
}

/// Parse `text` in `syntax`.
pub fn parse(text: &str, syntax: Syntax) -> Result<Config<'_>, ParseError> {
    if text.contains('\0') {
        return Err(ParseError::NotText("it contains NUL bytes".into()));
    }
    match syntax {
        Syntax::Indented => Ok(parse_indented(text)),
        Syntax::Set => parse_set(text),
    }
}

fn indentation(raw: &str) -> usize {
    raw.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 8 } else { 1 })
        .sum()
}

fn parse_indented(text: &str) -> Config<'_> {
    // The open sections, innermost last: their indentation, line, and where their children
    // start in `done`. A line closes those indented as deep as it or deeper, and is a child
    // of the one left open. Closed lines wait in `done` until their parent closes and takes
    // them as its children, in one allocation of the right size.
    let mut open: Vec<(usize, Node, usize)> = Vec::new();
    let mut done: Vec<Node> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let raw = raw.trim_end();
        let body = raw.trim_start();
        if body.is_empty() || is_comment(body) || is_terminator(body) {
            continue;
        }
        let indent = indentation(raw);
        while open.last().is_some_and(|(at, _, _)| *at >= indent) {
            close_section(&mut open, &mut done);
        }
        let mut node = Node::parsed(body, i + 1);
        if let Some(delim) = banner_delimiter(body) {
            // The banner's text up to the closing delimiter, kept verbatim as children.
            if !closes_on_same_line(body, delim) {
                for (j, banner_line) in lines.by_ref() {
                    let end = banner_line.contains(delim);
                    node.add_child(Node::parsed(banner_line.trim_end(), j + 1));
                    if end {
                        break;
                    }
                }
            }
        }
        open.push((indent, node, done.len()));
    }
    while !open.is_empty() {
        close_section(&mut open, &mut done);
    }
    Config { roots: done }
}

/// Close the innermost open section: the lines closed since it opened are its children.
fn close_section<'a>(open: &mut Vec<(usize, Node<'a>, usize)>, done: &mut Vec<Node<'a>>) {
    let Some((_, mut node, first_child)) = open.pop() else {
        return;
    };
    if first_child < done.len() {
        let children: Vec<Node> = done.drain(first_child..).collect();
        for child in &children {
            node.heads |= child.heads;
        }
        if node.children.is_empty() {
            node.children = children;
        } else {
            node.children.extend(children); // after a banner's text
        }
    }
    done.push(node);
}

/// `banner motd ^C` → `^C`; IOS writes the delimiter as `^C` (two characters) or one.
fn banner_delimiter(line: &str) -> Option<&str> {
    if !line.starts_with("banner") {
        return None;
    }
    let mut words = line.split_whitespace();
    if words.next() != Some("banner") {
        return None;
    }
    let _kind = words.next()?;
    let rest = words.next()?;
    if rest.starts_with("^C") {
        Some("^C")
    } else {
        let first = rest.chars().next()?;
        Some(&rest[..first.len_utf8()])
    }
}

fn closes_on_same_line(line: &str, delim: &str) -> bool {
    line.find(delim)
        .is_some_and(|first| line[first + delim.len()..].contains(delim))
}

/// Junos: `set` lines as they are; the brace form turned into `set` lines. Everything else
/// (`delete`, `deactivate`, annotations) is not part of a configuration's state.
fn parse_set(text: &str) -> Result<Config<'_>, ParseError> {
    let braces = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_comment(l) && !l.starts_with("/*"))
        .is_some_and(|l| !l.starts_with("set "));
    let lines: Vec<(usize, Cow<str>)> = if braces {
        braces_to_set(text)?
            .into_iter()
            .map(|(i, l)| (i, Cow::Owned(l)))
            .collect()
    } else {
        text.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.trim();
                l.starts_with("set ").then(|| (i + 1, squashed(l)))
            })
            .collect()
    };
    Ok(Config {
        roots: lines
            .into_iter()
            .map(|(line, text)| Node {
                heads: head_bit(text.as_bytes()),
                text,
                line,
                children: Vec::new(),
            })
            .collect(),
    })
}

fn squash_spaces(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `line` with runs of blanks made one space; borrowed if it has none (a trimmed line).
fn squashed(line: &str) -> Cow<'_, str> {
    if line.contains("  ") || line.chars().any(|c| c.is_whitespace() && c != ' ') {
        Cow::Owned(squash_spaces(line))
    } else {
        Cow::Borrowed(line)
    }
}

/// `system { ntp { server 10.0.0.1; } }` → `set system ntp server 10.0.0.1`.
fn braces_to_set(text: &str) -> Result<Vec<(usize, String)>, ParseError> {
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut in_comment = false;
    // The depth of the outermost inactive section we are in.
    let mut inactive_from: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if in_comment {
            match line.find("*/") {
                Some(end) => {
                    in_comment = false;
                    line = line[end + 2..].trim();
                }
                None => continue,
            }
        }
        if let Some(start) = line.find("/*") {
            match line[start..].find("*/") {
                Some(_) => line = line[..start].trim(),
                None => {
                    in_comment = true;
                    line = line[..start].trim();
                }
            }
        }
        // A trailing `## SECRET-DATA`-style comment (Junos marks secrets so).
        if let Some(at) = line.find(" ##") {
            line = line[..at].trim_end();
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Junos marks statements and sections inactive: they are not in effect.
        let (inactive, line) = match line.strip_prefix("inactive: ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        if let Some(section) = line.strip_suffix('{') {
            if inactive && inactive_from.is_none() {
                inactive_from = Some(path.len());
            }
            path.push(squash_spaces(section));
        } else if line == "}" {
            if path.pop().is_none() {
                return Err(ParseError::Bad {
                    line: i + 1,
                    reason: "`}` closes nothing".into(),
                });
            }
            if inactive_from.is_some_and(|depth| path.len() <= depth) {
                inactive_from = None;
            }
        } else if let Some(statement) = line.strip_suffix(';') {
            if inactive || inactive_from.is_some() {
                continue;
            }
            let mut words = vec!["set".to_string()];
            words.extend(path.iter().cloned());
            words.push(squash_spaces(statement));
            out.push((i + 1, words.join(" ")));
        } else {
            return Err(ParseError::Bad {
                line: i + 1,
                reason: format!("`{line}` ends in neither `{{`, `}}` nor `;`"),
            });
        }
    }
    if !path.is_empty() {
        return Err(ParseError::Bad {
            line: text.lines().count(),
            reason: format!("unclosed section `{}`", path.join(" ")),
        });
    }
    Ok(out)
}

/// Render nodes back to text in `syntax`, one space of indentation per level.
pub fn render(nodes: &[Node], depth: usize, out: &mut Vec<String>) {
    for node in nodes {
        out.push(format!("{}{}", " ".repeat(depth), node.text));
        render(&node.children, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(nodes: &'a [Node]) -> Vec<&'a str> {
        nodes.iter().map(|n| &*n.text).collect()
    }

    #[test]
    fn indented_sections_nest_and_terminators_and_comments_go() {
        let c = parse(
            "!\nhostname r1\n!\nrouter bgp 65000\n neighbor 10.0.0.2 remote-as 65001\n address-family ipv4 unicast\n  network 10.1.0.0/24\n exit-address-family\nexit\n!\nline vty\n transport input ssh\nend\n",
            Syntax::Indented,
        )
        .unwrap();
        assert_eq!(
            texts(&c.roots),
            ["hostname r1", "router bgp 65000", "line vty"]
        );
        let bgp = &c.roots[1];
        assert_eq!(
            texts(&bgp.children),
            [
                "neighbor 10.0.0.2 remote-as 65001",
                "address-family ipv4 unicast"
            ]
        );
        assert_eq!(texts(&bgp.children[1].children), ["network 10.1.0.0/24"]);
        assert_eq!(bgp.children[1].children[0].line, 7);
    }

    #[test]
    fn a_dedent_closes_as_many_sections_as_it_skips() {
        let c = parse("a\n b\n  c\nd\n", Syntax::Indented).unwrap();
        assert_eq!(texts(&c.roots), ["a", "d"]);
        assert_eq!(texts(&c.roots[0].children[0].children), ["c"]);
    }

    #[test]
    fn a_banner_keeps_its_text_up_to_the_delimiter() {
        let c = parse(
            "banner motd ^C\n! not a comment here\n  keep out\n^C\nhostname r1\n",
            Syntax::Indented,
        )
        .unwrap();
        assert_eq!(texts(&c.roots), ["banner motd ^C", "hostname r1"]);
        assert_eq!(
            texts(&c.roots[0].children),
            ["! not a comment here", "  keep out", "^C"]
        );
    }

    #[test]
    fn junos_braces_and_set_lines_are_the_same_config() {
        let braces = parse(
            "## Last commit: 2026-11-30\nsystem {\n    host-name r1;\n    ntp {\n        server 10.0.0.1; /* primary */\n        inactive: server 10.0.0.9;\n    }\n    inactive: syslog {\n        host 10.0.0.5 {\n            any any;\n        }\n    }\n}\n",
            Syntax::Set,
        )
        .unwrap();
        let set = parse(
            "set system host-name r1\nset system ntp server 10.0.0.1\n",
            Syntax::Set,
        )
        .unwrap();
        assert_eq!(texts(&braces.roots), texts(&set.roots));
    }

    #[test]
    fn unbalanced_junos_braces_are_an_error_with_a_line() {
        assert!(matches!(
            parse("system {\n host-name r1;\n", Syntax::Set),
            Err(ParseError::Bad { line: 2, .. })
        ));
        assert!(matches!(
            parse("system {\n}\n}\n", Syntax::Set),
            Err(ParseError::Bad { line: 3, .. })
        ));
    }
}
