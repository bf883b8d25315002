//! Bounded input: any manifest up to the API's 2 MB body limit is handled
//! by `mailctl validate` in at most 256 MiB, with a bounded report.
//!
//! Each input is one a stranger could send: a long key over a long list (a
//! 140 KB file once took 2 GB), long keys nested, alias bombs, deep nesting,
//! many documents, many small mappings, long flow lists, and files with a
//! problem in every node. Memory is the children's peak resident size as the
//! kernel accounts it (`getrusage(RUSAGE_CHILDREN)`): the largest child so
//! far, so checking it after each input names the first input past the limit.
//! The other tests in this binary spawn only small children.
//!
//! Each child also runs under an address-space limit of 2 GiB, so a version
//! that does not bound its input fails here (allocation failure) instead of
//! taking the machine's memory.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use nix::sys::resource::{UsageWho, getrusage};

/// The agent's API takes bodies up to this size (axum's default body limit).
const API_BODY_LIMIT: usize = 2_000_000;
/// What one `validate` of such an input may take at its peak.
const PEAK_LIMIT_KIB: i64 = 256 * 1024;
/// A report longer than this is not read by anyone.
const REPORT_LIMIT: usize = 100_000;

const HOST: &str = "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: a}\nspec:\n";

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
fn inputs() -> Vec<(&'static str, String, &'static str)> {
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

fn children_peak_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss()
}

/// `mailctl validate FILE` under a 2 GiB address-space limit.
fn validate(file: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2097152 && exec \"$0\" validate \"$1\"")
        .arg(env!("CARGO_BIN_EXE_mailctl"))
        .arg(file)
        .output()
        .expect("mailctl runs")
}

#[test]
fn any_input_up_to_the_api_body_limit_is_refused_within_256_mib() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let before = children_peak_kib();
    assert!(before < PEAK_LIMIT_KIB, "no large child before the inputs");
    for (name, text, expected) in inputs() {
        assert!(
            text.len() <= API_BODY_LIMIT,
            "{name}: {} bytes",
            text.len()
        );
        let file = dir.path().join("input.yaml");
        fs::write(&file, &text).expect("write input");
        let started = std::time::Instant::now();
        let out = validate(&file);
        let report = String::from_utf8_lossy(&out.stderr);
        let peak = children_peak_kib();
        eprintln!(
            "{name}: {} bytes, {:.2} s, peak of the children so far {} MiB",
            text.len(),
            started.elapsed().as_secs_f64(),
            peak / 1024
        );
        assert!(
            peak <= PEAK_LIMIT_KIB,
            "{name} ({} bytes): mailctl validate peaked at {} MiB (limit 256 MiB)",
            text.len(),
            peak / 1024
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: refused with a report, not a crash:\n{}",
            report.chars().take(2000).collect::<String>()
        );
        assert!(
            out.stderr.len() <= REPORT_LIMIT,
            "{name}: a {} byte report",
            out.stderr.len()
        );
        assert!(
            report.contains(expected),
            "{name}: the report says `{expected}`:\n{}",
            report.chars().take(2000).collect::<String>()
        );
        // Every line is located in the input file, the summary excepted.
        for line in report.lines() {
            assert!(
                line.starts_with(file.to_str().expect("utf-8 path"))
                    || line.starts_with("  hint:")
                    || line.starts_with("... and ")
                    || line.ends_with("nothing was changed"),
                "{name}: unlocated line: {}",
                line.chars().take(300).collect::<String>()
            );
        }
    }
}

/// A budget error is the only problem reported for its file: what follows
/// the node that crossed the limit was not read, so it cannot be judged.
#[test]
fn a_crossed_limit_is_one_located_error_naming_the_limit() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = dir.path().join("deep.yaml");
    let mut text = format!("{HOST}  bogus: 1\n");
    let mut indent = String::from("  ");
    for _ in 0..70 {
        let _ = writeln!(text, "{indent}a:");
        indent.push_str("  ");
    }
    // A syntax error after the limit, and unknown fields before it: only the limit is told.
    text.push_str("  : : :\n");
    fs::write(&file, &text).expect("write");
    let out = validate(&file);
    let report = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines.len(), 3, "{report}");
    // The 65th level opens on line 5 + 64.
    assert!(
        lines[0].starts_with(&format!("{}:69:", file.display())),
        "{report}"
    );
    assert!(lines[0].contains("at most 64 levels"), "{report}");
    assert!(lines[1].starts_with("  hint: "), "{report}");
    assert_eq!(lines[2], "1 problem(s) found; nothing was changed");
}

/// Manifest text is counted across the files of one load, and a file is
/// read no further than the room left (a named device is not read to its end).
#[test]
fn a_load_reads_at_most_4_mib_of_manifest_text() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let line = "# a comment line of a manifest that is mostly comments\n";
    let mut text = String::from(HOST);
    while text.len() + line.len() < 1_500_000 {
        text.push_str(line);
    }
    for name in ["a.yaml", "b.yaml", "c.yaml"] {
        fs::write(dir.path().join(name), &text).expect("write");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("mailctl runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.starts_with(&format!(
            "{}:1:1: too large: the manifests of one load may hold at most 4194304 bytes",
            dir.path().join("c.yaml").display()
        )),
        "{report}"
    );
    assert!(report.ends_with("1 problem(s) found; nothing was changed\n"), "{report}");

    let out = validate(Path::new("/dev/zero"));
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.starts_with("/dev/zero:1:1: too large"), "{report}");
}
