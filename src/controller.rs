//! The controller's verbs: `mailctl controller` (the daemon), and the
//! admin's `status`, `history`, `approve`, `pause`, `resume`, `retry`,
//! `fence` and `apply -f DIR [--wait]`, through the controller's API with
//! an admin certificate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mailctl_api::ClientError;
use mailctl_api::client::client_files;
use mailctl_api::controller::{ControllerClient, MigrationView};
use mailctl_controller::clock::time_of_day;
use mailctl_controller::daemon::{self, ControllerConfig};
use mailctl_schemas::{load, render};

/// `mailctl controller --config FILE`.
pub fn run_daemon(config_file: &Path) -> Result<ExitCode> {
    let config = ControllerConfig::load(config_file)
        .map_err(|e| anyhow::anyhow!("controller configuration: {e}"))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        daemon::run(config, crate::agent::stop_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Where the admin's verbs find the controller.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a str,
    pub tls_dir: &'a Path,
}

impl Target<'_> {
    /// The controller answers admins only: an admin's folder is needed.
    fn client(&self) -> Result<ControllerClient> {
        let files = client_files(self.tls_dir);
        if !files.cert.ends_with("admin.pem") {
            bail!(
                "no admin certificate in {} (admin.pem and admin.key): the controller answers admins only; give --tls-dir the admin-NAME folder `mailctl certs init` or `certs add admin NAME` wrote",
                self.tls_dir.display()
            );
        }
        Ok(ControllerClient::new(self.url, &files)?)
    }
}

/// How a failed request reads: the controller's own message when it sent one.
fn said(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::Api { error, .. } => anyhow::anyhow!("{}", error.message),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The output formats of the read verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

fn print_json(value: &impl serde::Serialize, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
        // YAML is JSON's superset: pretty JSON is valid YAML, and needs no
        // second serializer.
        _ => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
    }
    Ok(())
}

/// `mailctl status [MIGRATION]`.
pub fn status(target: &Target<'_>, migration: Option<&str>, format: Format) -> Result<ExitCode> {
    let client = target.client()?;
    let views = crate::remote::runtime()?.block_on(async {
        match migration {
            Some(name) => client.migration(name).await.map(|v| vec![v]),
            None => client.migrations().await,
        }
    });
    let views = views.map_err(said)?;
    if format != Format::Table {
        print_json(&views, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("the controller holds no migration (`mailctl apply -f DIR` hands it one)");
    }
    let mut out = std::io::stdout().lock();
    for view in &views {
        write!(out, "{}", describe(view))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A migration in a few lines: where it is, what it waits for and why.
pub fn describe(view: &MigrationView) -> String {
    let mut text = format!("migration {}: {}\n", view.name, view.state);
    let marks: Vec<String> = view
        .phases
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if view.phase.as_deref() == Some(p.as_str()) {
                p = format!("[{p}]");
            }
            if view.target == p.trim_matches(['[', ']']) {
                p.push('*');
            }
            p
        })
        .collect();
    text.push_str(&format!(
        "  phases: {}   ([reached], *target{})\n",
        marks.join(" -> "),
        view.point_of_no_return
            .as_ref()
            .map(|p| format!(", point of no return: {p}"))
            .unwrap_or_default()
    ));
    if let Some(t) = &view.transition {
        let steps: Vec<String> = t
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == t.step {
                    format!(">{s}<")
                } else {
                    s.clone()
                }
            })
            .collect();
        text.push_str(&format!(
            "  {} {} -> {}: {} (step since {})\n",
            if t.rollback { "rollback" } else { "transition" },
            t.from.as_deref().unwrap_or("(start)"),
            t.to,
            steps.join(", "),
            time_of_day(t.step_since_unix)
        ));
        if let Some(waiting) = &t.waiting {
            text.push_str(&format!("  {waiting}\n"));
        }
        for gate in &t.gates {
            text.push_str(&format!(
                "  gate {} (run {}): {}{}\n",
                gate.gate,
                gate.run,
                gate.outcome,
                if gate.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", gate.reason)
                }
            ));
        }
    }
    if let Some(paused) = &view.paused {
        text.push_str(&format!(
            "  paused by {} at {}: {}\n",
            paused.by,
            time_of_day(paused.at_unix),
            paused.reason
        ));
    }
    for (host, h) in &view.hosts {
        let fenced = view
            .fenced
            .get(host)
            .map(|f| format!(", fenced by {}: {}", f.by, f.reason))
            .unwrap_or_default();
        text.push_str(&format!(
            "  host {host} ({}): {}{fenced}\n",
            h.agent,
            h.generation
                .map_or("no state confirmed yet".to_owned(), |g| format!(
                    "generation {g} confirmed"
                ))
        ));
    }
    text
}

/// `mailctl history MIGRATION`.
pub fn history(target: &Target<'_>, migration: &str, format: Format) -> Result<ExitCode> {
    let client = target.client()?;
    let entries = crate::remote::runtime()?
        .block_on(client.history(migration))
        .map_err(said)?;
    if format != Format::Table {
        print_json(&entries, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (i, entry) in entries.iter().enumerate() {
        let took = entries
            .get(i + 1)
            .map(|next| format!(" (+{}s)", next.at_unix.saturating_sub(entry.at_unix)))
            .unwrap_or_default();
        writeln!(out, "{} {}{took}", time_of_day(entry.at_unix), entry.what)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve`, `pause`, `resume`, `retry`.
pub fn intent(
    target: &Target<'_>,
    migration: &str,
    intent: &str,
    reason: &str,
) -> Result<ExitCode> {
    let client = target.client()?;
    let view = crate::remote::runtime()?
        .block_on(client.intent(migration, intent, reason))
        .map_err(said)?;
    print!("{}", describe(&view));
    Ok(ExitCode::SUCCESS)
}

/// `mailctl fence MIGRATION HOST --reason TEXT`.
pub fn fence(target: &Target<'_>, migration: &str, host: &str, reason: &str) -> Result<ExitCode> {
    let client = target.client()?;
    let view = crate::remote::runtime()?
        .block_on(client.fence(migration, host, reason))
        .map_err(said)?;
    print!("{}", describe(&view));
    Ok(ExitCode::SUCCESS)
}

/// Exit code of `apply --wait` when the migration was rolled back.
pub const ROLLED_BACK: u8 = 3;

/// `mailctl apply -f PATH... [--wait]`: validated here first (nothing is
/// sent when invalid), then handed to the controller with `source:` files
/// inlined.
pub fn apply(target: &Target<'_>, files: &[PathBuf], wait: bool) -> Result<ExitCode> {
    let set = match load::load_paths(files) {
        Ok(set) => set,
        Err(diags) => {
            let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            bail!(
                "{} is not valid; nothing was sent\n{diags}",
                shown.join(" + ")
            )
        }
    };
    if set.migrations.is_empty() {
        bail!(
            "no Migration in these files: the controller drives migrations (for one host, `mailctl apply --local -f FILE`)"
        );
    }
    let yaml = render::to_yaml(&set);
    let client = target.client()?;
    let runtime = crate::remote::runtime()?;
    let applied = runtime.block_on(client.apply(&yaml)).map_err(said)?;
    for a in &applied {
        println!("migration {}: target {}", a.migration, a.target);
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut code = ExitCode::SUCCESS;
    for a in &applied {
        let mut last = String::new();
        let view = runtime
            .block_on(
                client.follow(&a.migration, Duration::from_millis(500), |view| {
                    if view.state != last {
                        println!("{}: {}", view.name, view.state);
                        last = view.state.clone();
                    }
                    view.paused.is_some()
                        || (view.transition.is_none()
                            && view.phase.as_deref() == Some(&view.target))
                }),
            )
            .map_err(said)?;
        if let Some(paused) = &view.paused {
            eprintln!(
                "mailctl apply: migration {} paused: {}",
                view.name, paused.reason
            );
            code = ExitCode::from(1);
        } else if view.target != a.target {
            eprintln!(
                "mailctl apply: migration {} was rolled back to {} (its target was {})",
                view.name, view.target, a.target
            );
            code = ExitCode::from(ROLLED_BACK);
        }
    }
    Ok(code)
}

/// What `mailctl get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Migrations,
    Phases,
    Hosts,
}

/// Columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let mut widths = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `mailctl get migrations|phases|hosts [MIGRATION]`.
pub fn get(
    target: &Target<'_>,
    listing: Listing,
    migration: Option<&str>,
    format: Format,
) -> Result<ExitCode> {
    let client = target.client()?;
    let views = crate::remote::runtime()?.block_on(async {
        match migration {
            Some(name) => client.migration(name).await.map(|v| vec![v]),
            None => client.migrations().await,
        }
    });
    let views = views.map_err(said)?;
    let mut rows = Vec::new();
    match listing {
        Listing::Migrations => {
            rows.push(
                vec!["NAME", "PHASE", "TARGET", "STATE"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            );
            for v in &views {
                rows.push(vec![
                    v.name.clone(),
                    v.phase.clone().unwrap_or_else(|| "-".into()),
                    v.target.clone(),
                    v.state.clone(),
                ]);
            }
        }
        Listing::Phases => {
            rows.push(
                vec!["MIGRATION", "#", "PHASE", "STATE"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            );
            for v in &views {
                let reached = v
                    .phase
                    .as_ref()
                    .and_then(|p| v.phases.iter().position(|q| q == p));
                for (i, phase) in v.phases.iter().enumerate() {
                    let mut state = match (reached, &v.transition) {
                        (_, Some(t)) if &t.to == phase => {
                            if t.rollback {
                                "rolling back to".to_owned()
                            } else {
                                "moving to".to_owned()
                            }
                        }
                        (Some(r), _) if r == i => "reached".to_owned(),
                        (Some(r), _) if r > i => "passed".to_owned(),
                        _ => "ahead".to_owned(),
                    };
                    if &v.target == phase {
                        state.push_str(", target");
                    }
                    if v.point_of_no_return.as_ref() == Some(phase) {
                        state.push_str(", point of no return");
                    }
                    rows.push(vec![
                        v.name.clone(),
                        (i + 1).to_string(),
                        phase.clone(),
                        state,
                    ]);
                }
            }
        }
        Listing::Hosts => {
            rows.push(
                vec!["MIGRATION", "HOST", "AGENT", "CONFIRMED", "FENCED"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            );
            for v in &views {
                for (host, h) in &v.hosts {
                    rows.push(vec![
                        v.name.clone(),
                        host.clone(),
                        h.agent.clone(),
                        h.generation
                            .map_or("-".into(), |g| format!("generation {g}")),
                        v.fenced
                            .get(host)
                            .map_or("-".into(), |f| format!("by {}: {}", f.by, f.reason)),
                    ]);
                }
            }
        }
    }
    if format != Format::Table {
        let header = rows.first().cloned().unwrap_or_default();
        let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
            .iter()
            .skip(1)
            .map(|row| {
                header
                    .iter()
                    .zip(row)
                    .map(|(k, v)| (k.to_lowercase(), serde_json::Value::String(v.clone())))
                    .collect()
            })
            .collect();
        print_json(&objects, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `mailctl describe migration NAME`: the status, then the last history lines.
pub fn describe_migration(target: &Target<'_>, name: &str) -> Result<ExitCode> {
    let client = target.client()?;
    let runtime = crate::remote::runtime()?;
    let view = runtime.block_on(client.migration(name)).map_err(said)?;
    let history = runtime.block_on(client.history(name)).map_err(said)?;
    print!("{}", describe(&view));
    println!("  recent history:");
    for entry in history.iter().rev().take(10).rev() {
        println!("    {} {}", time_of_day(entry.at_unix), entry.what);
    }
    Ok(ExitCode::SUCCESS)
}
