//! `mailctl plan` and `mailctl apply --local`: converge this host directly,
//! without an agent daemon, through the same reconciler the agent uses.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mailctl_agent::address::AddressError;
use mailctl_agent::{ApplyReport, Config, Effect, Error, Reconciler, ResourcePlan, error_chain};
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
        let mut plans = reconciler.plan(&spec).await;
        if let Some(at) = plans.iter().position(|p| {
            matches!(
                p.changes,
                Err(Error::Address(AddressError::NoSuchInterface { .. }))
            )
        }) {
            let addresses = plan_addresses_around_missing_interfaces(&reconciler, &spec).await;
            plans.splice(at..=at, addresses);
        }
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

/// The addresses' plan when some are on interfaces this host lacks: the
/// driver stops at the first such address, which would hide every other
/// address change, so the others are planned again without the interfaces
/// found missing. One error per missing interface, then the rest.
async fn plan_addresses_around_missing_interfaces(
    reconciler: &Reconciler,
    spec: &HostSpec,
) -> Vec<ResourcePlan> {
    let mut remaining = HostSpec {
        addresses: spec.addresses.clone(),
        ..HostSpec::default()
    };
    let mut plans = Vec::new();
    loop {
        let mut plan = reconciler.plan(&remaining).await;
        let Some(addresses) = plan.pop() else {
            // Every address was on a missing interface.
            return plans;
        };
        match &addresses.changes {
            Err(Error::Address(AddressError::NoSuchInterface { interface, .. })) => {
                let missing = interface.clone();
                remaining.addresses.retain(|a| a.interface != missing);
                plans.push(addresses);
            }
            _ => {
                plans.push(addresses);
                return plans;
            }
        }
    }
}

/// Signs that a mailctl agent converges this host, which would undo what
/// `apply --local` changes at its next resync: an agent running with this
/// state directory (the agent's and apply's by default), its generations
/// there, or its unit enabled.
fn agent_signs(state_dir: &Path) -> Vec<String> {
    let mut signs = Vec::new();
    // A running agent holds an exclusive lock on this file, which names its pid.
    let lock = state_dir.join("agent.lock");
    if let Ok(file) = fs::File::open(&lock)
        && let Err(fs::TryLockError::WouldBlock) = file.try_lock_shared()
    {
        let pid = fs::read_to_string(&lock).unwrap_or_default();
        signs.push(format!(
            "a mailctl agent (pid {}) runs with the state directory {}",
            pid.trim(),
            state_dir.display()
        ));
    }
    let generations = fs::read_dir(state_dir.join("desired")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .count()
    });
    let ledger = state_dir.join("ledger.json");
    if generations > 0 || ledger.exists() {
        signs.push(format!(
            "{} holds an agent's desired states ({generations} generation(s){})",
            state_dir.display(),
            if ledger.exists() { ", ledger.json" } else { "" }
        ));
    }
    let units = Path::new("/etc/systemd/system");
    for wants in fs::read_dir(units)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let unit = wants.path().join(AGENT_UNIT);
        if wants.file_name().to_string_lossy().ends_with(".wants") && unit.exists() {
            signs.push(format!("{AGENT_UNIT} is enabled ({})", unit.display()));
        }
    }
    signs
}

/// The agent's unit, as `dist/` ships it.
const AGENT_UNIT: &str = "mailctl-agent.service";

/// Converge, then print what changed as observed afterwards. Refused
/// without `force` on a host an agent manages (see [`agent_signs`]).
pub fn apply(
    files: &[PathBuf],
    selection: &Selection<'_>,
    state_dir: &Path,
    force: bool,
) -> Result<ExitCode> {
    let (name, spec) = host_spec(files, selection)?;
    let signs = agent_signs(state_dir);
    if !signs.is_empty() {
        let signs = signs.join("; ");
        if !force {
            eprintln!(
                "mailctl apply --local: a mailctl agent manages this host ({signs}): it would undo \
                 this change at its next resync. Change the agent's desired state instead, or stop \
                 the agent and run again with --force. Nothing was changed."
            );
            return Ok(ExitCode::from(1));
        }
        eprintln!(
            "warning: a mailctl agent manages this host ({signs}); applying anyway (--force): \
             a running agent undoes this at its next resync"
        );
    }
    runtime()?.block_on(async {
        let reconciler = Reconciler::connect(Config::default().state_dir(state_dir))
            .context("connecting to the kernel")?;
        let report = reconciler.apply(&spec).await;
        println!("host {name}:");
        print_report(&report);
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

/// What an apply did, resource by resource: each change as observed
/// afterwards, then, indented, its announcements and every handler it made
/// due, run or skipped (with why).
fn print_report(report: &ApplyReport) {
    for resource in &report.resources {
        match &resource.result {
            Ok(applied) if applied.changes.is_empty() && applied.handlers.is_empty() => {
                println!("= {}: up to date", resource.resource);
            }
            Ok(applied) => {
                for change in &applied.changes {
                    println!("{change}");
                }
                for effect in &applied.effects {
                    // Shown below, with the handlers that did not run.
                    if !matches!(effect, Effect::HandlerRan { .. }) {
                        println!("  {effect}");
                    }
                }
                for handler in &applied.handlers {
                    println!("  {handler}");
                }
            }
            Err(error) => println!("! {}", error_chain(error)),
        }
    }
}
