//! `mailctl plan -f DIR` on a set that holds a Migration (and no `--host`
//! or `--phase`): the whole migration as a runbook, from the manifests
//! alone — no agent is contacted, nothing on this host is read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use mailctl_controller::plan::plan_migration;
use mailctl_schemas::load;
use mailctl_schemas::model::ManifestSet;

/// The set, when `plan` should print runbooks: it holds a Migration and the
/// caller named no host or phase (`--migration` alone picks one).
pub fn wanted(files: &[PathBuf], host: Option<&str>, phase: Option<&str>) -> Option<ManifestSet> {
    if host.is_some() || phase.is_some() {
        return None;
    }
    let set = load::load_paths(files).ok()?;
    (!set.migrations.is_empty()).then_some(set)
}

/// Prints the runbook of each migration (or of `--migration NAME`).
/// Exit 0; 1 when a transition is refused.
pub fn print(set: &ManifestSet, migration: Option<&str>) -> Result<ExitCode> {
    let chosen: Vec<_> = set
        .migrations
        .iter()
        .filter(|m| migration.is_none_or(|name| m.name == name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = set.migrations.iter().map(|m| m.name.as_str()).collect();
        bail!(
            "no migration {:?} here (migrations: {})",
            migration.unwrap_or_default(),
            names.join(", ")
        );
    }
    let mut refused = false;
    for (index, m) in chosen.iter().enumerate() {
        if index > 0 {
            println!();
        }
        print!("{}", mailctl_controller::runbook::render(set, m));
        refused |= plan_migration(m, set.phases_of(m))
            .iter()
            .any(|(_, p)| p.is_err());
    }
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
