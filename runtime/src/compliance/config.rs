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

/// One configuration line with the lines nested under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The line without its indentation or trailing blanks.
    pub text: String,
    /// 1-based line number in the text it came from (0 for lines made by SOTP).
    pub line: usize,
    pub children: Vec<Node>,
}

impl Node {
    pub fn new(text: impl Into<String>) -> Node {
        Node {
            text: text.into(),
            line: 0,
            children: Vec::new(),
        }
    }
}

/// A parsed configuration: its top-level lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub roots: Vec<Node>,
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
pub fn parse(text: &str, syntax: Syntax) -> Result<Config, ParseError> {
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

fn parse_indented(text: &str) -> Config {
    // The path of open sections: (indentation, index path into the tree).
    let mut roots: Vec<Node> = Vec::new();
    let mut open: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let raw = raw.trim_end();
        let body = raw.trim_start();
        if body.is_empty() || is_comment(body) || is_terminator(body) {
            continue;
        }
        let indent = indentation(raw);
        while open.last().is_some_and(|(at, _)| *at >= indent) {
            open.pop();
        }
        let mut node = Node {
            text: body.to_string(),
            line: i + 1,
            children: Vec::new(),
        };
        if let Some(delim) = banner_delimiter(body) {
            // The banner's text up to the closing delimiter, kept verbatim as children.
            if !closes_on_same_line(body, &delim) {
                for (j, banner_line) in lines.by_ref() {
                    let done = banner_line.contains(delim.as_str());
                    node.children.push(Node {
                        text: banner_line.trim_end().to_string(),
                        line: j + 1,
                        children: Vec::new(),
                    });
                    if done {
                        break;
                    }
                }
            }
        }
        let path = match open.last() {
            None => {
                roots.push(node);
                vec![roots.len() - 1]
            }
            Some((_, parent)) => {
                let siblings = &mut node_at(&mut roots, parent).children;
                siblings.push(node);
                let mut path = parent.clone();
                path.push(siblings.len() - 1);
                path
            }
        };
        open.push((indent, path));
    }
    Config { roots }
}

fn node_at<'a>(roots: &'a mut [Node], path: &[usize]) -> &'a mut Node {
    let mut node = &mut roots[path[0]];
    for &i in &path[1..] {
        node = &mut node.children[i];
    }
    node
}

/// `banner motd ^C` → `^C`; IOS writes the delimiter as `^C` (two characters) or one.
fn banner_delimiter(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("banner") {
        return None;
    }
    let _kind = words.next()?;
    let rest = words.next()?;
    let delim: String = if rest.starts_with("^C") {
        "^C".into()
    } else {
        rest.chars().next()?.to_string()
    };
    Some(delim)
}

fn closes_on_same_line(line: &str, delim: &str) -> bool {
    line.find(delim)
        .is_some_and(|first| line[first + delim.len()..].contains(delim))
}

/// Junos: `set` lines as they are; the brace form turned into `set` lines. Everything else
/// (`delete`, `deactivate`, annotations) is not part of a configuration's state.
fn parse_set(text: &str) -> Result<Config, ParseError> {
    let braces = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_comment(l) && !l.starts_with("/*"))
        .is_some_and(|l| !l.starts_with("set "));
    let lines = if braces {
        braces_to_set(text)?
    } else {
        text.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let l = l.trim();
                l.starts_with("set ").then(|| (i + 1, squash_spaces(l)))
            })
            .collect()
    };
    Ok(Config {
        roots: lines
            .into_iter()
            .map(|(line, text)| Node {
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

    fn texts(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.text.as_str()).collect()
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
