//! End-to-end checks of the `mailctl` binary: what an admin sees.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mailctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the mailctl binary runs")
}

/// Diagnostic lines (without hints and the summary line).
fn problems(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.starts_with("  hint:") && !l.ends_with("nothing was changed"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn examples_are_valid() {
    let out = mailctl(&["validate", "manifests/examples"]);
    assert!(
        out.status.success(),
        "examples must validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let examples: Vec<_> = fs::read_dir(root().join("manifests/examples"))
        .expect("examples folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(examples.len() >= 4, "four real-world examples");
    for example in examples {
        let path = example.path();
        assert!(
            path.join("README.md").is_file(),
            "{} has a README",
            path.display()
        );
        let out = mailctl(&["validate", path.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "{} validates on its own",
            path.display()
        );
    }
}

fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("folder").filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(manifest_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_example_file_names_its_schema() {
    for file in manifest_files(&root().join("manifests")) {
        let text = fs::read_to_string(&file).expect("readable");
        let first = text.lines().next().unwrap_or_default();
        let schema = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{} starts with a $schema line", file.display()));
        let target = file.parent().expect("folder").join(schema);
        assert!(target.is_file(), "{}: {schema} exists", file.display());
    }
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_error() {
    let dir = root().join("manifests/invalid");
    let mut fixtures: Vec<_> = fs::read_dir(&dir)
        .expect("invalid fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 20, "one fixture per rule");
    for fixture in fixtures {
        let relative = fixture.strip_prefix(root()).expect("under the repo");
        let relative = relative.to_str().expect("utf-8 path");
        let text = fs::read_to_string(&fixture).expect("readable");
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| format!("{relative}:{e}"))
            .collect();
        assert!(!expected.is_empty(), "{relative} says what it expects");
        let out = mailctl(&["validate", relative]);
        assert_eq!(out.status.code(), Some(1), "{relative} exits 1");
        assert_eq!(problems(&out), expected, "{relative}");
    }
}

/// The faults the issue lists, as a colleague might write them, in one folder:
/// each gets exactly one located error, and validation exits 1.
#[test]
fn a_colleagues_broken_manifests_get_one_error_per_fault() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).expect("write");
    write(
        "indent.yaml",
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: carol}\nspec:\n  services:\n    - name: postfix\n     state: running\n",
    );
    write(
        "eve.yaml",
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  adresses:\n    - {address: 192.0.2.25/24, interface: eth0}\n  firewall:\n    rules:\n      - {name: smtp, protocol: tcp, ports: [70000], action: accept}\n      - {name: imap, protocol: tcp, ports: [143], sources: [10.0.0.300/24], action: accept}\n",
    );
    write(
        "migration.yaml",
        "apiVersion: mailctl/v1alpha1\nkind: Migration\nmetadata: {name: m}\nspec:\n  hosts:\n    bob: {agent: \"https://192.0.2.11:7443\"}\n    eve: {agent: \"https://192.0.2.12:7443\"}\n  phases: [prepare, cutover, smtp-only]\n  targetPhase: prepare\n---\napiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: prepare, migration: m}\nspec:\n  hosts: {bob: {}, eve: {}}\n---\napiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts:\n    bob:\n      addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]\n    eve:\n      addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]\n",
    );
    let out = mailctl(&["validate", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let got = problems(&out);
    let d = dir.path().display().to_string();
    let want = [
        format!("{d}/eve.yaml:5:3: spec.adresses: unknown field `adresses`"),
        format!(
            "{d}/eve.yaml:9:45: spec.firewall.rules[0].ports[0]: port 70000 is out of range; a port is 1-65535"
        ),
        format!(
            "{d}/eve.yaml:10:61: spec.firewall.rules[1].sources[0]: \"10.0.0.300/24\" is not a valid IPv4 or IPv6 CIDR"
        ),
        format!(
            "{d}/indent.yaml:7:6: invalid YAML: while parsing a block collection, did not find expected '-' indicator"
        ),
        format!(
            "{d}/migration.yaml:8:30: spec.phases[2]: phase \"smtp-only\" has no Phase document"
        ),
        format!(
            "{d}/migration.yaml:25:29: spec.hosts.eve.addresses[0].address: exclusive address 192.0.2.25 is present on \"bob\" and \"eve\" in phase \"cutover\""
        ),
    ];
    assert_eq!(got, want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hint: did you mean `addresses`?"),
        "{stderr}"
    );
}

#[test]
fn committed_schemas_match_the_generator() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = mailctl(&["schema", "--out", dir.path().to_str().expect("utf-8")]);
    assert!(out.status.success());
    for kind in ["host", "migration", "phase"] {
        let generated =
            fs::read_to_string(dir.path().join(format!("{kind}.json"))).expect("generated");
        let committed = fs::read_to_string(root().join(format!("schemas/json/{kind}.json")))
            .expect("committed schema");
        assert!(
            generated == committed,
            "schemas/json/{kind}.json is stale: run `cargo run -- schema --out schemas/json`"
        );
        let schema: serde_json::Value = serde_json::from_str(&committed).expect("JSON");
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}

#[test]
fn every_designed_verb_is_in_help_and_unbuilt_ones_say_so() {
    let help = String::from_utf8(mailctl(&["--help"]).stdout).expect("utf-8");
    for verb in [
        "validate",
        "schema",
        "plan",
        "apply",
        "status",
        "get",
        "describe",
        "approve",
        "rollback",
        "pause",
        "resume",
        "history",
        "retry",
        "fence",
        "confirm",
        "sync",
        "certs",
        "agent",
        "controller",
        "lab",
        "completions",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "{verb} in --help"
        );
    }
    let out = mailctl(&["lab", "run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"));
    // A controller that cannot be reached: said, with where it was looked for.
    let out = mailctl(&[
        "approve",
        "bob-to-eve",
        "--controller",
        "https://127.0.0.1:9",
        "--tls-dir",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no admin certificate in /nonexistent (admin.pem and admin.key)"),
        "{err}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mailctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("validate"),
            "{shell}"
        );
    }
}

#[test]
fn unreadable_paths_are_reported_not_panicked_on() {
    let out = mailctl(&["validate", "no/such/manifest.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("no/such/manifest.yaml:1:1: cannot read:"),
        "{stderr}"
    );
}

#[test]
fn sync_run_finds_the_agent_in_the_migration_or_says_how_to_name_it() {
    // eve's agent is https://192.0.2.12:7443 in the askja example; the
    // lookup succeeds and the missing certificates are what stops it.
    let out = mailctl(&[
        "sync",
        "run",
        "eve",
        "mail",
        "-f",
        "manifests/examples/askja",
        "--tls-dir",
        "no/such/tls",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read client certificate no/such/tls/controller.pem"),
        "{stderr}"
    );
    let out = mailctl(&[
        "sync",
        "run",
        "zed",
        "mail",
        "-f",
        "manifests/examples/askja",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Migration in manifests/examples/askja lists host zed"),
        "{stderr}"
    );
    // A typo of a host the Migration does list: did you mean.
    let out = mailctl(&["confirm", "eev", "-f", "manifests/examples/askja"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lists host eev; did you mean \"eve\"?"),
        "{stderr}"
    );
    let out = mailctl(&["sync", "run", "eve", "mail"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--agent https://ADDRESS:7443"), "{stderr}");
    let out = mailctl(&["sync", "run", "eve", "mail", "--agent", "http://192.0.2.12"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTPS only"), "{stderr}");
}

#[test]
fn plan_names_a_phase_of_a_migration_folder_and_says_what_is_missing() {
    let dir = "manifests/examples/askja";
    let out = mailctl(&["plan", "-f", dir, "--phase", "cutovr", "--host", "eve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no phase \"cutovr\"; did you mean \"cutover\"?"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");

    let out = mailctl(&[
        "apply", "--local", "-f", dir, "--phase", "cutover", "--host", "eev",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no host \"eev\" in phase bob-to-eve/cutover; did you mean \"eve\"?"),
        "{err}"
    );

    // A lone Phase file lacks its Migration; the folder, or every file with -f, has it.
    let out = mailctl(&[
        "plan",
        "-f",
        &format!("{dir}/30-cutover.yaml"),
        "--host",
        "eve",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let mut files = vec!["plan"];
    let all: Vec<String> = manifest_files(&root().join(dir))
        .iter()
        .filter(|p| !p.ends_with("host-eve.yaml"))
        .map(|p| p.display().to_string())
        .collect();
    for f in &all {
        files.extend(["-f", f.as_str()]);
    }
    files.extend(["--phase", "freeze", "--host", "bobb"]);
    let out = mailctl(&files);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no host \"bobb\" in phase bob-to-eve/freeze; did you mean \"bob\"?"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_1_and_a_closed_pipe_ends_quietly() {
    let out = mailctl(&["plan", "--fiel", "x"]);
    assert_eq!(out.status.code(), Some(1), "2 means changes pending");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fiel"));
    let help = mailctl(&["plan", "--help"]);
    assert_eq!(help.status.code(), Some(0));

    // `mailctl schema | head -c 10`: the reader leaves after 10 bytes.
    for args in [&["schema"][..], &["completions", "bash"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailctl"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut first = [0u8; 10];
        std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut first)
            .expect("some output");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
    }
}

#[test]
fn plan_of_a_migration_folder_prints_its_runbook_without_contacting_anyone() {
    for example in ["askja", "arch-orion", "iwi", "vox-tech"] {
        let dir = format!("manifests/examples/{example}");
        let out = mailctl(&["plan", "-f", &dir]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("migration "), "{example}: {text}");
        assert!(text.contains("no agent contacted"), "{example}: {text}");
        // Every phase, in order, with its acquire step.
        let phases = text
            .lines()
            .filter(|l| !l.starts_with(' ') && l.contains('/') && l.contains(" from "))
            .count();
        assert!(phases >= 5, "{example}: {phases} phases\n{text}");
        assert_eq!(
            text.matches(". acquire").count(),
            phases,
            "{example}: {text}"
        );
        assert!(!text.contains("refused"), "{example}: {text}");
    }
    // askja's cutover: bob lets the service IP go before eve takes it, and
    // the final syncs run in between.
    let out = mailctl(&["plan", "-f", "manifests/examples/askja"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let cutover = &text[text.find("\ncutover (3/5)").expect("cutover")..];
    let cutover = &cutover[..cutover.find("\nlive (4/5)").expect("live")];
    let released = cutover
        .find("- address 192.0.2.25/24 from eth0")
        .expect("released");
    let synced = cutover.find("run sync job maildirs").expect("final sync");
    let acquired = cutover
        .find("+ address 192.0.2.25/24 on eth0")
        .expect("acquired");
    assert!(released < synced && synced < acquired, "{cutover}");
    assert!(cutover.contains("POINT OF NO RETURN"), "{cutover}");
    // --migration of another name: said, with the names there are.
    let out = mailctl(&[
        "plan",
        "-f",
        "manifests/examples/askja",
        "--migration",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no migration \"nope\" here (migrations: bob-to-eve)"),
        "{err}"
    );
}

/// A Host whose resources live in `dir`: one managed file with a handler
/// that needs shell quoting and a reload of each of two exec services, one
/// running and one stopped.
fn demo_host(dir: &Path, content: &str) -> PathBuf {
    let d = dir.display();
    let manifest = dir.join("demo.yaml");
    fs::write(
        &manifest,
        format!(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: demo}}\nspec:\n  services:\n    \
             - name: demo\n      state: running\n      driver: exec\n      reloadOn: [{d}/demo.conf]\n      exec:\n        \
             start: [touch, {d}/up]\n        stop: [rm, -f, {d}/up]\n        status: [test, -e, {d}/up]\n        \
             reload: [sh, -c, \"date >> {d}/reloads\"]\n    \
             - name: off\n      state: stopped\n      driver: exec\n      exec:\n        \
             start: [touch, {d}/off]\n        stop: [rm, -f, {d}/off]\n        status: [test, -e, {d}/off]\n  \
             files:\n    - path: {d}/demo.conf\n      content: \"{content}\\n\"\n      \
             onChange:\n        - {{run: [sh, -c, \"date >> {d}/handled\"]}}\n        - {{reload: off}}\n"
        ),
    )
    .expect("manifest");
    manifest
}

#[test]
fn plan_exits_2_with_changes_pending_and_usage_errors_never_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = demo_host(dir.path(), "v1");
    let m = manifest.to_str().expect("utf-8");
    let state = dir.path().join("state");
    let s = state.to_str().expect("utf-8");
    let plan = mailctl(&["plan", "-f", m, "--state-dir", s]);
    assert_eq!(plan.status.code(), Some(2), "{plan:?}");
    let apply = mailctl(&["apply", "--local", "-f", m, "--state-dir", s]);
    assert_eq!(apply.status.code(), Some(0), "{apply:?}");
    let plan = mailctl(&["plan", "-f", m, "--state-dir", s]);
    assert_eq!(plan.status.code(), Some(0), "{plan:?}");
    for usage in [
        &["plan", "--fiel", m][..],
        &["plan"][..],
        &["apply", "--force", "-f", m][..],
        &["validate"][..],
        &[][..],
    ] {
        let out = mailctl(usage);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{usage:?}: 2 means changes pending"
        );
    }
    let help = String::from_utf8(mailctl(&["plan", "--help"]).stdout).expect("utf-8");
    assert!(
        help.contains("status: 0 nothing to change, 2 changes pending, 1 an error"),
        "{help}"
    );
}

#[test]
fn apply_says_what_each_handler_did_quoted_and_why_one_was_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display().to_string();
    let state = dir.path().join("state");
    let s = state.to_str().expect("utf-8");
    let apply = |content: &str| {
        let manifest = demo_host(dir.path(), content);
        let out = mailctl(&[
            "apply",
            "--local",
            "-f",
            manifest.to_str().expect("utf-8"),
            "--state-dir",
            s,
        ]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = apply("v1");
    for line in [
        format!("  ran sh -c 'date >> {d}/handled'"),
        "  skipped reload of service off: it does not run, and a handler never starts a service"
            .to_owned(),
        "  skipped reload of service demo: it does not run yet, and starts below with the new file"
            .to_owned(),
        "+ service demo: start (exec)".to_owned(),
    ] {
        assert!(first.lines().any(|l| l == line), "{line:?} in:\n{first}");
    }
    let second = apply("v2");
    assert!(
        second
            .lines()
            .any(|l| l == "  reloaded service demo (exec)"),
        "{second}"
    );
    assert!(!second.contains("ran ~"), "{second}");
    assert!(dir.path().join("reloads").exists(), "demo was reloaded");
}

#[test]
fn apply_local_refuses_a_host_an_agent_manages_unless_forced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = demo_host(dir.path(), "v1");
    let m = manifest.to_str().expect("utf-8");
    let state = dir.path().join("state");
    fs::create_dir_all(state.join("desired")).expect("state dir");
    fs::write(state.join("desired/0000000003.yaml"), "kind: Host\n").expect("generation");
    let s = state.to_str().expect("utf-8");
    let out = mailctl(&["apply", "--local", "-f", m, "--state-dir", s]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a mailctl agent manages this host"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        !dir.path().join("demo.conf").exists(),
        "nothing was changed"
    );
    // A running agent holds STATE_DIR/agent.lock, naming its pid.
    let running = tempfile::tempdir().expect("temp dir");
    let lock = fs::File::create(running.path().join("agent.lock")).expect("lock file");
    fs::write(running.path().join("agent.lock"), "4242\n").expect("pid");
    lock.lock().expect("held as the agent holds it");
    let r = running.path().to_str().expect("utf-8");
    let out = mailctl(&["apply", "--local", "-f", m, "--state-dir", r]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a mailctl agent (pid 4242) runs with the state directory"),
        "{err}"
    );
    drop(lock);
    let out = mailctl(&["apply", "--local", "--force", "-f", m, "--state-dir", s]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: a mailctl agent manages this host")
    );
    assert!(dir.path().join("demo.conf").exists(), "applied");
}

#[test]
fn plan_shows_every_address_change_around_a_missing_interface() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("addresses.yaml");
    fs::write(
        &manifest,
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: demo}\nspec:\n  addresses:\n    \
         - {address: 192.0.2.25/24, interface: nosuch0}\n    - {address: 198.51.100.77/32, interface: lo}\n    \
         - {address: 192.0.2.26/24, interface: nosuch1}\n",
    )
    .expect("manifest");
    let state = dir.path().join("state");
    let out = mailctl(&[
        "plan",
        "-f",
        manifest.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[1].starts_with("! address 192.0.2.25/24 on nosuch0: no interface nosuch0"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("! address 192.0.2.26/24 on nosuch1: no interface nosuch1"),
        "{stdout}"
    );
    assert_eq!(lines[3], "+ address 198.51.100.77/32 on lo", "{stdout}");
}

#[test]
fn schema_prints_one_json_document() {
    let out = mailctl(&["schema"]);
    assert!(out.status.success());
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let kinds: Vec<&String> = all.as_object().expect("an object").keys().collect();
    assert_eq!(kinds, ["Host", "Migration", "Phase"]);
    let out = mailctl(&["schema", "phase"]);
    let phase: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(phase, all["Phase"]);
    let committed = fs::read_to_string(root().join("schemas/json/phase.json")).expect("committed");
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[test]
fn help_describes_the_options_and_marks_what_is_not_built() {
    let help = |args: &[&str]| String::from_utf8(mailctl(args).stdout).expect("utf-8");
    let top = help(&["--help"]);
    let lab = top
        .lines()
        .find(|l| l.trim_start().starts_with("lab"))
        .expect("listed");
    assert!(lab.contains("(not built yet)"), "{lab}");
    for verb in [
        "validate",
        "plan",
        "apply",
        "agent",
        "sync",
        "certs",
        "status",
        "controller",
        "approve",
    ] {
        let line = top
            .lines()
            .find(|l| l.trim_start().starts_with(verb))
            .expect("listed");
        assert!(!line.contains("not built"), "{line}");
    }
    let agent = help(&["agent", "--help"]);
    assert!(
        agent.contains("--config <FILE>") && agent.contains("/etc/mailctl/agent.toml"),
        "{agent}"
    );
    assert!(agent.contains("MAILCTL_*"), "{agent}");
    let apply = help(&["apply", "-h"]);
    for option in [
        "--local",
        "--force",
        "--state-dir <DIR>",
        "-f, --file <PATH>",
    ] {
        let line = apply.lines().find(|l| l.contains(option)).expect("listed");
        assert!(
            line.trim_end().len() > option.len() + 10,
            "{option} is described: {line}"
        );
    }
    let sync = help(&["sync", "run", "-h"]);
    for option in ["--local", "-f, --file <PATH>"] {
        let line = sync.lines().find(|l| l.contains(option)).expect("listed");
        assert!(
            line.trim_end().len() > option.len() + 10,
            "{option} is described: {line}"
        );
    }
    // validate -o table is a table of the documents, not the summary line.
    let plain = help(&["validate", "manifests/examples/askja"]);
    let table = help(&["validate", "-o", "table", "manifests/examples/askja"]);
    assert_ne!(plain, table);
    assert!(table.starts_with("KIND"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Phase") && l.contains("cutover")),
        "{table}"
    );
}

#[test]
fn validate_prints_warnings_and_still_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(
        dir.path().join("m.yaml"),
        "apiVersion: mailctl/v1alpha1\nkind: Migration\nmetadata: {name: m}\nspec:\n  hosts:\n    \
         bob: {agent: \"https://192.0.2.11:7443\"}\n    eve: {agent: \"https://192.0.2.12:7443\"}\n  \
         phases: [prepare]\n  targetPhase: prepare\n---\napiVersion: mailctl/v1alpha1\nkind: Phase\n\
         metadata: {name: prepare, migration: m}\nspec:\n  hosts:\n    bob: {}\n    eve:\n      \
         syncJobs: [{name: mail, source: \"bbo:/var/mail/\", destination: /var/mail/}]\n",
    )
    .expect("manifest");
    let out = mailctl(&["validate", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m.yaml:18:39: warning: spec.hosts.eve.syncJobs[0].source: source host \"bbo\" is not a host of migration \"m\"\n  hint: did you mean \"bob\"?"),
        "{err}"
    );
}

#[test]
fn sync_run_verbose_lists_the_messages_sent_and_renamed() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(src.join(sub)).expect("mkdir");
    }
    let names = ["1700000000.M1P1.old", "1700000001.M2P2.old"];
    for name in names {
        fs::write(src.join("new").join(name), "Subject: x\n\nbody\n").expect("mail");
    }
    let manifest = dir.path().join("host.yaml");
    fs::write(
        &manifest,
        format!(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n  syncJobs:\n    - {{name: maildirs, source: {}/, destination: {}/, maildir: true}}\n",
            src.display(),
            dst.display()
        ),
    )
    .expect("manifest");
    let state = dir.path().join("state");
    let run = || {
        mailctl(&[
            "sync",
            "run",
            "--local",
            "-f",
            manifest.to_str().expect("utf-8"),
            "maildirs",
            "--state-dir",
            state.to_str().expect("utf-8"),
            "-v",
        ])
    };
    let first = run();
    let said = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for name in names {
        assert!(said.contains(&format!("  sent new/{name}")), "{said}");
    }
    // Read in a mail client: new/ -> cur/ with the seen flag, a rename.
    fs::rename(
        src.join("new").join(names[0]),
        src.join("cur").join(format!("{}:2,S", names[0])),
    )
    .expect("rename");
    let second = run();
    let said = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("  renamed new/{0} -> cur/{0}:2,S", names[0])),
        "{said}"
    );
    assert!(!said.contains("  sent "), "{said}");
}
