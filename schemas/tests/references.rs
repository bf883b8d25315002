//! References between documents, as a new user gets them wrong: a broken
//! document still counts as there, misspelt names get a "did you mean",
//! and a sync source that is no host of the migration gets a warning.

use std::path::{Path, PathBuf};

use mailctl_schemas::model::ManifestSet;
use mailctl_schemas::{ContentReader, Source, Warning, validate};

struct NoFiles;

impl ContentReader for NoFiles {
    fn read(&self, _manifest: &Path, _source: &str) -> Result<String, String> {
        Err("no file access in this test".into())
    }
}

fn load(files: &[(&str, &str)]) -> Result<ManifestSet, Vec<String>> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, text)| Source {
            path: PathBuf::from(name),
            text: (*text).to_owned(),
        })
        .collect();
    validate(&sources, &NoFiles).map_err(|diags| diags.into_iter().map(|d| d.to_string()).collect())
}

const MIGRATION: &str = "apiVersion: mailctl/v1alpha1\nkind: Migration\nmetadata: {name: m}\nspec:\n  \
    hosts:\n    bob: {agent: \"https://192.0.2.11:7443\"}\n    eve: {agent: \"https://192.0.2.12:7443\"}\n  \
    phases: [prepare, cutover]\n  targetPhase: cutover\n";

const PREPARE: &str = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: prepare, migration: m}\nspec:\n  hosts: {bob: {}, eve: {}}\n";

#[test]
fn a_broken_phase_is_reported_once_not_also_as_missing() {
    let yaml_error = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts:\n    bob: {}\n     eve: {}\n";
    let shape_error = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts:\n    bob:\n      addresses: {address: 192.0.2.25/24}\n";
    let header_broken = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts: {bob: [}\n";
    for broken in [yaml_error, shape_error, header_broken] {
        let errors = load(&[
            ("m.yaml", MIGRATION),
            ("prepare.yaml", PREPARE),
            ("cutover.yaml", broken),
        ])
        .expect_err("the phase is broken");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("cutover.yaml:"), "{errors:#?}");
    }
    // The other documents of a file with a syntax error name themselves too,
    // before the error or after it.
    for two in [
        format!("{PREPARE}---\n{yaml_error}"),
        format!("{yaml_error}---\n{PREPARE}"),
    ] {
        let errors = load(&[("m.yaml", MIGRATION), ("phases.yaml", &two)]).expect_err("broken");
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }
    // A syntax error in the name itself: the document might be any phase.
    let nameless = yaml_error.replace("name: cutover,", "name: [cutover:");
    let errors = load(&[
        ("m.yaml", MIGRATION),
        ("prepare.yaml", PREPARE),
        ("cutover.yaml", &nameless),
    ])
    .expect_err("broken");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("cutover.yaml:3:"), "{errors:#?}");
    // A broken Migration leaves its phases alone ("unknown migration" would follow).
    let broken_migration = MIGRATION.replace("phases: [prepare, cutover]", "phases: {prepare: 1}");
    let errors =
        load(&[("m.yaml", &broken_migration), ("prepare.yaml", PREPARE)]).expect_err("broken");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("m.yaml:8:"), "{errors:#?}");
}

#[test]
fn misspelt_phase_host_and_service_names_get_a_did_you_mean() {
    let migration = MIGRATION.replace("targetPhase: cutover", "targetPhase: cutovr");
    let cutover = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutovr, migration: m}\nspec:\n  hosts:\n    \
        evee:\n      services: [{name: postfix, state: running}]\n      \
        files: [{path: /etc/x, content: x, onChange: [{reload: postfx}]}]\n";
    let prepare = PREPARE.replace("migration: m}", "migration: mm}");
    let errors = load(&[
        ("m.yaml", &migration),
        ("cutover.yaml", cutover),
        ("prepare.yaml", &prepare),
    ])
    .expect_err("misspelt names");
    let text = errors.join("\n");
    for (message, hint) in [
        (
            "spec.targetPhase: phase \"cutovr\" is not in spec.phases",
            "did you mean \"cutover\"?",
        ),
        (
            "spec.phases[1]: phase \"cutover\" has no Phase document",
            "did you mean \"cutovr\"?",
        ),
        (
            "metadata.name: phase \"cutovr\" is not listed in migration \"m\"",
            "did you mean \"cutover\"?",
        ),
        ("unknown service \"postfx\"", "did you mean \"postfix\"?"),
        (
            "metadata.migration: unknown migration \"mm\"",
            "did you mean \"m\"?",
        ),
    ] {
        let found = errors.iter().find(|e| e.contains(message));
        let found = found.unwrap_or_else(|| panic!("{message} in:\n{text}"));
        assert!(found.contains(&format!("hint: {hint}")), "{found}");
    }
    let prepare = PREPARE.replace("eve: {}", "evee: {}");
    let cutover = PREPARE.replace("prepare", "cutover");
    let errors = load(&[
        ("m.yaml", MIGRATION),
        ("prepare.yaml", &prepare),
        ("cutover.yaml", &cutover),
    ])
    .expect_err("misspelt host");
    assert_eq!(
        errors,
        [
            "prepare.yaml:5:20: spec.hosts.evee: host \"evee\" is not a host of migration \"m\"\n  hint: did you mean \"eve\"?"
        ]
    );
}

#[test]
fn the_exclusive_address_hint_names_the_host_that_must_release_it() {
    let cutover = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts:\n    \
        bob: {addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]}\n    \
        eve: {addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]}\n";
    let errors = load(&[
        ("m.yaml", MIGRATION),
        ("prepare.yaml", PREPARE),
        ("cutover.yaml", cutover),
    ])
    .expect_err("two holders");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let hint = "hint: a service IP lives on one host at a time: \"bob\" must release it in this phase: \
        set state: absent on \"bob\", or remove it from \"eve\"";
    assert!(errors[0].contains(hint), "{}", errors[0]);
    // Moving the IP from eve to bob: eve held it, eve lets it go.
    let prepare = PREPARE.replace(
        "eve: {}",
        "eve: {addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]}",
    );
    let errors = load(&[
        ("m.yaml", MIGRATION),
        ("prepare.yaml", &prepare),
        ("cutover.yaml", cutover),
    ])
    .expect_err("two holders");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let hint = "hint: a service IP lives on one host at a time: \"eve\" must release it in this phase \
        (it held it in phase \"prepare\"): set state: absent on \"eve\", or remove it from \"bob\"";
    assert!(errors[0].contains(hint), "{}", errors[0]);
}

#[test]
fn a_sync_source_that_is_no_host_of_the_migration_gets_a_located_warning() {
    let cutover = "apiVersion: mailctl/v1alpha1\nkind: Phase\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts:\n    \
        bob: {}\n    eve:\n      syncJobs:\n        \
        - {name: a, source: \"eev:/var/mail/\", destination: /var/mail/}\n        \
        - {name: b, source: \"root@bob.example.org:/var/mail/\", destination: /srv/b/}\n        \
        - {name: c, source: \"mx.example.org:/var/mail/\", destination: /srv/c/}\n        \
        - {name: d, source: \"192.0.2.11:/var/mail/\", destination: /srv/d/}\n        \
        - {name: e, source: \"zed:/var/mail/\", destination: /srv/e/}\n";
    let set = load(&[
        ("m.yaml", MIGRATION),
        ("prepare.yaml", PREPARE),
        ("cutover.yaml", cutover),
    ])
    .expect("warnings do not make a set invalid");
    let warnings: Vec<String> = set
        .warnings
        .iter()
        .map(|w| Warning(w).to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            "cutover.yaml:9:29: warning: spec.hosts.eve.syncJobs[0].source: source host \"eev\" is not a host of migration \"m\"\n  \
             hint: did you mean \"eve\"?",
            "cutover.yaml:13:29: warning: spec.hosts.eve.syncJobs[4].source: source host \"zed\" is not a host of migration \"m\"\n  \
             hint: hosts of migration m are: bob, eve; ignore this if ssh reaches the source as \"zed\"",
        ]
    );
}

#[test]
fn a_misspelt_kind_is_one_problem_not_also_a_missing_phase() {
    let misspelt = "apiVersion: mailctl/v1alpha1\nkind: Phse\nmetadata: {name: cutover, migration: m}\nspec:\n  hosts: {bob: {}, eve: {}}\n";
    let problems = load(&[
        ("m.yaml", MIGRATION),
        ("p.yaml", PREPARE),
        ("c.yaml", misspelt),
    ])
    .expect_err("invalid");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("unknown kind \"Phse\""),
        "{problems:#?}"
    );
}
