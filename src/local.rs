//! `mailctl plan` and `mailctl apply --local`: converge this host directly,
//! without an agent daemon, through the same reconciler the agent uses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mailctl_agent::{Config, Reconciler};
use mailctl_schemas::load;
use mailctl_schemas::model::HostSpec;
use mailctl_schemas::select::{self, Selection};

/// How error messages name the files read.
fn shown(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Load `files` as one set and pick the host state `selection` names.
pub fn host_spec(files: &[PathBuf], selection: &Selection<'_>) -> Result<(String, HostSpec)> {
    let set = match load::load_paths(files) {
        Ok(set) => set,
        Err(diags) => bail!(
            "{} is not valid; nothing was changed\n{diags}",
            shown(files)
        ),
    };
    crate::cli::print_warnings(&set);
    let selected = select::host_state(&set, selection)
        .with_context(|| format!("{}: nothing was changed", shown(files)))?;
    Ok((selected.host, selected.spec))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Exit 0: nothing to change; 2: changes pending; 1: a resource could not be planned.
pub fn plan(files: &[PathBuf], selection: &Selection<'_>, state_dir: &Path) -> Result<ExitCode> {
    let (name, spec) = host_spec(files, selection)?;
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
pub fn apply(files: &[PathBuf], selection: &Selection<'_>, state_dir: &Path) -> Result<ExitCode> {
    let (name, spec) = host_spec(files, selection)?;
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
