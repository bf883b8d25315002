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
//! taking the machine's memory, and on a 2 MiB stack, the stack the agent
//! validates a `PUT` body on (deep block nesting once overflowed it).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

mod bounded_inputs;

use bounded_inputs::{
    API_BODY_LIMIT, HOST, PEAK_LIMIT_KIB, REPORT_LIMIT, children_peak_kib, inputs,
};

/// `mailctl validate FILE` under a 2 GiB address-space limit, with the
/// 2 MiB stack the agent's validation threads have (tokio's blocking pool).
fn validate(file: &Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2097152 && ulimit -s 2048 && exec \"$0\" validate \"$1\"")
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
        assert!(text.len() <= API_BODY_LIMIT, "{name}: {} bytes", text.len());
        let file = dir.path().join("input.yaml");
        fs::write(&file, &text).expect("write input");
        let started = tokio::time::Instant::now();
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
    assert!(
        report.ends_with("1 problem(s) found; nothing was changed\n"),
        "{report}"
    );

    let out = validate(Path::new("/dev/zero"));
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.starts_with("/dev/zero:1:1: too large"), "{report}");
}
