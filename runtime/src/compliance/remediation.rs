//! Remediation: the lines that make a device compliant, in its own syntax and in an order
//! that applies.
//!
//! Order matters when one line binds a name another defines: an ACL bound before it exists
//! can drop traffic, a prefix list deleted while a route map still names it can be refused.
//! hier_config orders by static per-line weights (its PR #304 shows where that falls short);
//! SOTP orders by what each change does, in four phases:
//! 1. add definitions (prefix lists, ACLs, route maps, community lists, ...),
//! 2. remove other lines (unbinding what is going away),
//! 3. add other lines (binding the new definitions),
//! 4. remove definitions no longer wanted.
//!
//! Within a phase, changes keep the order of the rules and of the intended config. Indented
//! syntax enters each section by its parent lines and leaves it with `exit`; Junos uses
//! `set` and `delete`.

use super::config::{Node, Syntax, render};
use super::evaluate::Change;
use regex::RegexSet;
use std::sync::LazyLock;

/// Lines that define a named object others refer to.
static DEFINITIONS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"^(?:ip|ipv6) prefix-list \S+",
        r"^(?:ip|ipv6|mac) access-list ",
        r"^access-list \S+",
        r"^route-map \S+",
        r"^(?:ip )?as-path access-list \S+",
        r"^(?:ip |bgp )?(?:community|extcommunity|large-community|as-path)-list ",
        r"^object-group \S+ \S+",
        r"^class-map ",
        r"^policy-map ",
        r"^key chain \S+",
        r"^set policy-options (?:prefix-list|policy-statement|community|as-path) ",
        r"^set firewall (?:family \S+ )?filter ",
    ])
    .expect("definition patterns")
});

fn defines(change: &Change) -> bool {
    let head = change
        .parents
        .first()
        .map_or(&*change.node.text, String::as_str);
    DEFINITIONS.is_match(head)
}

fn phase(change: &Change) -> u8 {
    match (change.add, defines(change)) {
        (true, true) => 0,
        (false, false) => 1,
        (true, false) => 2,
        (false, true) => 3,
    }
}

/// The node as a removal or an addition, without its parents.
fn change_lines(change: &Change, syntax: Syntax, depth: usize) -> Vec<String> {
    let pad = " ".repeat(depth);
    match (syntax, change.add) {
        (Syntax::Set, true) => vec![change.node.text.to_string()],
        (Syntax::Set, false) => vec![match change.node.text.strip_prefix("set ") {
            Some(rest) => format!("delete {rest}"),
            None => format!("delete {}", change.node.text),
        }],
        (Syntax::Indented, true) => {
            let mut out = Vec::new();
            render(std::slice::from_ref(&change.node), depth, &mut out);
            out
        }
        (Syntax::Indented, false) => vec![format!("{pad}{}", negate(&change.node.text))],
    }
}

/// `no X` for `X`, and `X` for `no X`.
pub fn negate(line: &str) -> String {
    match line.strip_prefix("no ") {
        Some(rest) => rest.to_string(),
        None => format!("no {line}"),
    }
}

/// A line with its parents and children, indented: how the report shows it.
pub fn with_parents(parents: &[String], node: &Node, syntax: Syntax) -> Vec<String> {
    if syntax == Syntax::Set {
        return vec![node.text.to_string()];
    }
    let mut out: Vec<String> = parents
        .iter()
        .enumerate()
        .map(|(depth, p)| format!("{}{p}", " ".repeat(depth)))
        .collect();
    render(std::slice::from_ref(node), parents.len(), &mut out);
    out
}

/// The ordered remediation for a set of changes.
pub fn plan(changes: &[Change], syntax: Syntax) -> Vec<String> {
    // A line removed and added again (an ordered section rewritten) is removed just before
    // it is added, whatever its phase: removed last, it would be gone.
    let added: std::collections::HashSet<(&[String], &str)> = changes
        .iter()
        .filter(|c| c.add)
        .map(|c| (c.parents.as_slice(), &*c.node.text))
        .collect();
    let key = |c: &Change| {
        let rewrite = !c.add && added.contains(&(c.parents.as_slice(), &*c.node.text));
        if rewrite {
            phase(&Change {
                add: true,
                ..c.clone()
            })
        } else {
            phase(c)
        }
    };
    let mut ordered: Vec<&Change> = changes.iter().collect();
    ordered.sort_by_key(|c| key(c)); // stable: rule and config order within a phase
    let mut out = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut emitted = std::collections::HashSet::new();
    for change in ordered {
        let parents = if syntax == Syntax::Set {
            &[][..]
        } else {
            &change.parents[..]
        };
        // Leave the sections this change is not in, enter the ones it is.
        let common = open.iter().zip(parents).take_while(|(a, b)| a == b).count();
        while open.len() > common {
            open.pop();
            out.push(format!("{}exit", " ".repeat(open.len() + 1)));
        }
        for p in &parents[common..] {
            out.push(format!("{}{p}", " ".repeat(open.len())));
            open.push(p.clone());
        }
        // The same line twice in one section (removing `no X` is `X`, and so is adding
        // `X`) is said once.
        for line in change_lines(change, syntax, parents.len()) {
            if emitted.insert((open.clone(), line.clone())) {
                out.push(line);
            }
        }
    }
    while !open.is_empty() {
        open.pop();
        out.push(format!("{}exit", " ".repeat(open.len() + 1)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(parents: &[&str], text: &str, add: bool) -> Change {
        Change {
            parents: parents.iter().map(|p| p.to_string()).collect(),
            node: Node::new(text),
            add,
        }
    }

    #[test]
    fn definitions_are_added_before_the_lines_that_bind_them_and_removed_after() {
        let changes = [
            change(
                &["router bgp 65000"],
                "neighbor 10.0.0.2 prefix-list NEW in",
                true,
            ),
            change(
                &["router bgp 65000"],
                "neighbor 10.0.0.2 prefix-list OLD in",
                false,
            ),
            change(&[], "ip prefix-list OLD seq 5 permit 10.0.0.0/8", false),
            change(&[], "ip prefix-list NEW seq 5 permit 10.1.0.0/16", true),
        ];
        assert_eq!(
            plan(&changes, Syntax::Indented),
            [
                "ip prefix-list NEW seq 5 permit 10.1.0.0/16",
                "router bgp 65000",
                " no neighbor 10.0.0.2 prefix-list OLD in",
                " neighbor 10.0.0.2 prefix-list NEW in",
                " exit",
                "no ip prefix-list OLD seq 5 permit 10.0.0.0/8",
            ]
        );
    }

    #[test]
    fn nested_sections_are_entered_once_and_left_level_by_level() {
        let changes = [
            change(
                &["router bgp 1", "address-family ipv4 unicast"],
                "network 10.0.0.0/24",
                true,
            ),
            change(
                &["router bgp 1", "address-family ipv4 unicast"],
                "network 10.0.1.0/24",
                true,
            ),
            change(&["line vty"], "no transport input telnet", true),
        ];
        assert_eq!(
            plan(&changes, Syntax::Indented),
            [
                "router bgp 1",
                " address-family ipv4 unicast",
                "  network 10.0.0.0/24",
                "  network 10.0.1.0/24",
                "  exit",
                " exit",
                "line vty",
                " no transport input telnet",
                " exit",
            ]
        );
    }

    #[test]
    fn negation_of_a_no_line_is_the_line() {
        assert_eq!(negate("no ip http server"), "ip http server");
        assert_eq!(negate("ip http server"), "no ip http server");
    }
}
