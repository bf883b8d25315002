//! The adversarial manifests of the bounded-input tests (`tests/bounded.rs`
//! through `mailctl validate`, `tests/bounded_agent.rs` through the agent's
//! `PUT /v1/desired`): each at most the API's body limit.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::fmt::Write as _;

/// The agent's API takes bodies up to this size (axum's default body limit).
pub const API_BODY_LIMIT: usize = 2_000_000;
/// What one `validate` of such an input may take at its peak.
pub const PEAK_LIMIT_KIB: i64 = 256 * 1024;
/// A report longer than this is not read by anyone.
pub const REPORT_LIMIT: usize = 100_000;

pub const HOST: &str = "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: a}\nspec:\n";

/// `head`, then `line` repeated until the text would pass the body limit.
fn fill(head: &str, line: &str, tail: &str) -> String {
    let mut text = String::from(head);
    while text.len() + line.len() + tail.len() <= API_BODY_LIMIT {
        text.push_str(line);
    }
    text.push_str(tail);
    text
}

/// `head`, then `line(i)` for i = 0.. while it fits under the body limit and `i < most`.
fn numbered(head: &str, most: usize, line: impl Fn(usize) -> String) -> String {
    let mut text = String::from(head);
    for i in 0..most {
        let next = line(i);
        if text.len() + next.len() > API_BODY_LIMIT {
            break;
        }
        text.push_str(&next);
    }
    text
}

/// The adversarial inputs: name, text, and a piece of the report expected.
pub fn inputs() -> Vec<(&'static str, String, &'static str)> {
    let mut out = Vec::new();

    // The reported one: a 100,000-character key, then a 20,000-item list.
    let mut text = format!("{HOST}  ? {}\n  :\n", "k".repeat(100_000));
    text.push_str(&"    - x\n".repeat(20_000));
    out.push(("long key over a list", text, "at most 1024 bytes"));

    // Keys just under the key limit, over a list as long as the body allows.
    let head = format!("{HOST}  {}:\n", "k".repeat(1000));
    out.push((
        "1000-byte key over a list",
        fill(&head, "    - x\n", ""),
        "200000 YAML nodes",
    ));

    // Sixty nested 1000-byte keys, then a list whose every item is a problem
    // (each problem's field path is 60 KB long).
    let mut head = String::from(HOST);
    let mut indent = String::from("  ");
    for level in 0..60 {
        let _ = writeln!(head, "{indent}k{level:02}{}:", "k".repeat(1000));
        indent.push_str("  ");
    }
    out.push((
        "nested long keys over a list of problems",
        fill(&head, &format!("{indent}- !tag x\n"), ""),
        "more problem(s) not shown",
    ));

    // Billion laughs: ten anchors, each a list of ten aliases of the one before.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        let _ = writeln!(text, "a{i}: &a{i} [{refs}]");
    }
    out.push(("alias bomb", text, "counting each alias"));

    // One large scalar, aliased ten times.
    let big = "x".repeat(API_BODY_LIMIT - 1000);
    out.push((
        "aliased large scalar",
        format!("a: &a {big}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"),
        "8388608 bytes",
    ));

    // Nesting: block mappings as deep as the body allows, and flow lists.
    let mut text = String::new();
    let mut indent = String::new();
    while text.len() + indent.len() + 3 <= API_BODY_LIMIT && indent.len() < 1900 {
        let _ = writeln!(text, "{indent}a:");
        indent.push(' ');
    }
    out.push(("deep block nesting", text, "at most 64 levels"));
    let depth = API_BODY_LIMIT / 2 - 10;
    out.push((
        "deep flow nesting",
        format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        "deep",
    ));

    // Many documents, many small mappings, one long flow list.
    out.push((
        "many documents",
        fill("", "--- a\n", ""),
        "200000 YAML nodes",
    ));
    out.push((
        "many small mappings",
        fill(&format!("{HOST}  x:\n"), "    - {a: 1}\n", ""),
        "200000 YAML nodes",
    ));
    out.push((
        "long flow list",
        fill(&format!("{HOST}  tasks: ["), "a,", "a]\n"),
        "200000 YAML nodes",
    ));
    // Just under the node limit: every item a problem the schema reports.
    out.push((
        "long flow list of problems",
        numbered(&format!("{HOST}  tasks: [a"), 190_000, |_| ",a".into()) + "]\n",
        "more problem(s) not shown",
    ));

    // 95,000 unknown fields in one mapping (190,000 nodes, under the limit).
    out.push((
        "95,000 unknown fields",
        numbered(&format!("{HOST}  addresses: []\n"), 95_000, |i| {
            format!("  u{i}: 0\n")
        }),
        "more problem(s) not shown",
    ));
    // 35,000 addresses, each with a wrong value.
    out.push((
        "35,000 bad addresses",
        numbered(&format!("{HOST}  addresses:\n"), 35_000, |i| {
            format!("    - {{address: bad{i}, interface: eth0}}\n")
        }),
        "more problem(s) not shown",
    ));
    out
}

/// Peak resident size of the waited-for children so far (the largest one), in KiB.
pub fn children_peak_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss()
}
