//! `mailctl plan` and `mailctl apply --local`: converge this host directly,
//! without an agent daemon, through the same reconciler the agent uses.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mailctl_agent::{Config, Reconciler};
use mailctl_schemas::load;
use mailctl_schemas::model::{HostSpec, ManifestSet};

/// The host specs a manifest set declares: Host documents, and the hosts of
/// a Phase (when the set holds exactly one phase).
fn candidates(set: &ManifestSet) -> Vec<(String, HostSpec)> {
    let mut out: Vec<(String, HostSpec)> = set
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.spec.clone()))
        .collect();
    if let [phase] = set.phases.as_slice() {
        out.extend(phase.hosts.iter().map(|(n, s)| (n.clone(), s.clone())));
    }
    out
}

/// Load `file` and pick the spec of `host` (or the only one).
pub fn host_spec(file: &Path, host: Option<&str>) -> Result<(String, HostSpec)> {
    let set = match load::load_paths(&[file]) {
        Ok(set) => set,
        Err(diags) => bail!(
            "{} is not valid; nothing was changed\n{diags}",
            file.display()
        ),
    };
    if set.phases.len() > 1 {
        bail!(
            "{} holds {} phases; plan or apply one phase file at a time",
            file.display(),
            set.phases.len()
        );
    }
    let all = candidates(&set);
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    match host {
        Some(wanted) => all
            .iter()
            .find(|(n, _)| n == wanted)
            .cloned()
            .with_context(|| {
                format!(
                    "{} declares no host \"{wanted}\" (it declares: {})",
                    file.display(),
                    names.join(", ")
                )
            }),
        None => match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!(
                "{} declares no host state (no Host document, no Phase)",
                file.display()
            ),
            _ => bail!(
                "{} declares several hosts ({}); pick one with --host NAME",
                file.display(),
                names.join(", ")
            ),
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Exit 0: nothing to change; 2: changes pending; 1: a resource could not be planned.
pub fn plan(file: &Path, host: Option<&str>, state_dir: &Path) -> Result<ExitCode> {
    let (name, spec) = host_spec(file, host)?;
    runtime()?.block_on(async {
        let reconciler = Reconciler::connect(Config::default().state_dir(state_dir))
            .context("connecting to the kernel")?;
        let plans = reconciler.plan(&spec).await;
        println!("host {name}:");
        let mut pending = false;
        let mut failed = false;
        for plan in &plans {
            match &plan.changes {
                Ok(changes) => pending |= !changes.is_empty(),
                Err(_) => failed = true,
            }
            println!("{plan}");
        }
        if plans.is_empty() {
            println!("= nothing declared");
        }
        Ok(if failed {
            ExitCode::from(1)
        } else if pending {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Converge, then print what changed as observed afterwards.
pub fn apply(file: &Path, host: Option<&str>, state_dir: &Path) -> Result<ExitCode> {
    let (name, spec) = host_spec(file, host)?;
    runtime()?.block_on(async {
        let reconciler = Reconciler::connect(Config::default().state_dir(state_dir))
            .context("connecting to the kernel")?;
        let report = reconciler.apply(&spec).await;
        println!("host {name}:");
        println!("{report}");
        let changed = report.changes().count();
        if report.is_success() {
            println!(
                "verified: {changed} change(s) made and observed; host {name} matches its manifest"
            );
            Ok(ExitCode::SUCCESS)
        } else {
            let failed = report.errors().count();
            eprintln!("{failed} resource(s) failed; {changed} change(s) were made and observed");
            Ok(ExitCode::from(1))
        }
    })
}
