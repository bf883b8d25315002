//! `mailctl sync run HOST JOB`: ask HOST's agent to run one of its sync
//! jobs now, follow its progress and wait until it finished and verified.
//! `mailctl sync run --local -f FILE JOB`: run the job on this machine by
//! the same code the agent runs.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mailctl_agent::client::{AgentClient, Method, client_files};
use mailctl_agent::sync::{JobStatus, Phase, Progress, RunState, SyncRunner};
use mailctl_schemas::load;

/// How often the job's status is read while it runs.
const POLL: Duration = Duration::from_millis(500);

/// Where `mailctl sync run HOST JOB` finds the agent and its credentials.
#[derive(Debug)]
pub struct Remote<'a> {
    pub host: &'a str,
    pub job: &'a str,
    /// `--agent URL`, else looked up in the Migrations under `file`.
    pub agent: Option<&'a str>,
    pub file: Option<&'a Path>,
    /// A folder `mailctl certs init` wrote: an admin's or the controller's
    /// ([`mailctl_agent::client::client_files`]).
    pub tls_dir: &'a Path,
}

/// The agent's address: `--agent`, or `spec.hosts.HOST.agent` of a
/// Migration in `file`.
fn agent_url(remote: &Remote<'_>) -> Result<String> {
    if let Some(url) = remote.agent {
        return Ok(url.to_owned());
    }
    let Some(file) = remote.file else {
        bail!(
            "where does host {}'s agent listen? Give --agent https://ADDRESS:7443, or -f a file or folder whose Migration lists host {}",
            remote.host,
            remote.host
        );
    };
    let set = match load::load_paths(&[file]) {
        Ok(set) => set,
        Err(diags) => bail!("{} is not valid\n{diags}", file.display()),
    };
    let mut urls: Vec<&str> = set
        .migrations
        .iter()
        .filter_map(|m| m.hosts.get(remote.host).map(|h| h.agent.as_str()))
        .collect();
    urls.sort_unstable();
    urls.dedup();
    match urls.as_slice() {
        [url] => Ok((*url).to_owned()),
        [] => bail!(
            "no Migration in {} lists host {} (give --agent https://ADDRESS:7443)",
            file.display(),
            remote.host
        ),
        _ => bail!(
            "the Migrations in {} give host {} different agent addresses ({}); pick one with --agent",
            file.display(),
            remote.host,
            urls.join(", ")
        ),
    }
}

/// Runs the job through the agent; exit 0 only when the run finished and
/// both sides agree.
pub fn run_remote(remote: &Remote<'_>) -> Result<ExitCode> {
    let url = agent_url(remote)?;
    let client = AgentClient::new(&url, &client_files(remote.tls_dir))?.expect_agent(remote.host);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(follow(remote, &client))
}

async fn follow(remote: &Remote<'_>, client: &AgentClient) -> Result<ExitCode> {
    let path = format!("/v1/sync/{}", remote.job);
    let answer = client.request(Method::POST, &path).await?;
    let run = match answer.status.as_u16() {
        202 => serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["run"].as_u64())
            .with_context(|| {
                format!(
                    "the agent at {} started the job but sent no run number: {}",
                    client.url(),
                    answer.body.trim()
                )
            })?,
        404 => bail!(
            "host {}'s agent ({}) has no sync job {}: {}",
            remote.host,
            client.url(),
            remote.job,
            answer.body.trim()
        ),
        409 => bail!("host {}: {}", remote.host, answer.body.trim()),
        _ => bail!(
            "host {}'s agent ({}) answered {}: {}",
            remote.host,
            client.url(),
            answer.status,
            answer.body.trim()
        ),
    };
    println!(
        "sync {} on {}: run {run} started by the agent at {}",
        remote.job,
        remote.host,
        client.url()
    );
    let mut display = Display::new(std::io::stderr().is_terminal());
    let mut ticks = tokio::time::interval(POLL);
    let status = loop {
        ticks.tick().await;
        let answer = client.request(Method::GET, &path).await?;
        if !answer.status.is_success() {
            display.finish();
            bail!(
                "reading the status of sync {} on {}: {} {}",
                remote.job,
                remote.host,
                answer.status,
                answer.body.trim()
            );
        }
        let status: JobStatus = serde_json::from_str(&answer.body).with_context(|| {
            format!(
                "the agent at {} sent a status mailctl cannot read",
                client.url()
            )
        })?;
        // A run newer than ours means ours finished and another began.
        if status.run > run || (status.run == run && status.state != RunState::Running) {
            break status;
        }
        if let Some(progress) = &status.progress {
            display.update(progress);
        }
    };
    display.finish();
    if status.run != run {
        bail!(
            "sync {} on {}: run {run} finished, but run {} began before its outcome was read; see `GET /v1/sync/{}` or the agent's log",
            remote.job,
            remote.host,
            status.run,
            remote.job
        );
    }
    Ok(report_status(remote, &status))
}

/// Prints a finished run; exit 0 only when it verified.
fn report_status(remote: &Remote<'_>, status: &JobStatus) -> ExitCode {
    if let Some(error) = &status.error {
        eprintln!(
            "mailctl sync run: {} on {}: run {} failed: {error}",
            remote.job, remote.host, status.run
        );
        return ExitCode::from(1);
    }
    if let Some(stats) = &status.stats {
        println!(
            "sync {} on {}: {}",
            remote.job,
            remote.host,
            mailctl_agent::sync::summary(stats, status.renamed, status.duplicates_removed)
        );
    }
    match &status.verification {
        Some(verification) => println!("{verification}"),
        None => println!("not verified: the run reported no verification"),
    }
    if status.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs `job` of the host manifest in `file`. Exit 0 only when the run
/// finished and both sides agree.
pub fn run_local(
    file: &Path,
    host: Option<&str>,
    job_name: &str,
    state_dir: &Path,
) -> Result<ExitCode> {
    let (host_name, spec) = crate::local::host_spec(
        &[file.to_path_buf()],
        &mailctl_schemas::select::Selection {
            host,
            ..Default::default()
        },
    )?;
    let job = spec
        .sync_jobs
        .iter()
        .find(|j| j.name == job_name)
        .with_context(|| {
            let names: Vec<&str> = spec.sync_jobs.iter().map(|j| j.name.as_str()).collect();
            format!(
                "host {host_name} in {} declares no sync job \"{job_name}\" (it declares: {})",
                file.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let runner = SyncRunner::new(state_dir);
    let mut display = Display::new(std::io::stderr().is_terminal());
    let outcome = runner.run(job, &mut |progress| display.update(progress));
    display.finish();
    match outcome {
        Ok(report) => {
            println!("{report}");
            Ok(if report.verification.verified() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(error) => {
            eprintln!("mailctl sync run: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Progress bars on a terminal, a plain line every few seconds otherwise.
struct Display {
    bar: Option<ProgressBar>,
    terminal: bool,
    phase: Option<Phase>,
    last_line: Option<Instant>,
}

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            bar: None,
            terminal,
            phase: None,
            last_line: None,
        }
    }

    fn update(&mut self, progress: &Progress) {
        let new_phase = self.phase != Some(progress.phase);
        self.phase = Some(progress.phase);
        if self.terminal {
            if new_phase {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let bar = ProgressBar::new(progress.bytes_total.max(1));
                let template = match progress.phase {
                    Phase::Transferring => {
                        "{msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}"
                    }
                    _ => "{spinner} {msg} {prefix}",
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(progress.phase.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                self.bar = Some(bar);
            }
            if let Some(bar) = &self.bar {
                if progress.bytes_total > 0 {
                    bar.set_length(progress.bytes_total);
                }
                bar.set_position(progress.bytes_done);
                bar.set_prefix(files(progress));
            }
            return;
        }
        let due = self
            .last_line
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
        if new_phase || due {
            self.last_line = Some(Instant::now());
            let mut line = format!("{}: {}", progress.phase, files(progress));
            if progress.bytes_done > 0 {
                line.push_str(&format!(", {} bytes", progress.bytes_done));
                if progress.rate > 0 {
                    line.push_str(&format!(", {} B/s", progress.rate));
                }
                if let Some(eta) = progress.eta_seconds {
                    line.push_str(&format!(", ETA {eta}s"));
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn files(progress: &Progress) -> String {
    if progress.files_total > 0 {
        format!("{}/{} files", progress.files_done, progress.files_total)
    } else {
        format!("{} files", progress.files_done)
    }
}
