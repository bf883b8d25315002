//! `mailctl sync run HOST JOB`: ask HOST's agent to run one of its sync
//! jobs now, follow its progress and wait until it finished and verified.
//! `mailctl sync run --local -f FILE JOB`: run the job on this machine by
//! the same code the agent runs.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mailctl_agent::sync::SyncRunner;
use mailctl_api::client::{AgentClient, ClientError, SyncFollowError};
use mailctl_api::{ErrorKind, JobStatus, Progress, SyncStep};

/// How often the job's status is read while it runs.
const POLL: Duration = Duration::from_millis(500);

/// Where `mailctl sync run HOST JOB` finds the agent and its credentials.
#[derive(Debug)]
pub struct Remote<'a> {
    pub job: &'a str,
    pub host: &'a str,
    pub agent: crate::remote::AgentArgs<'a>,
}

/// Runs the job through the agent; exit 0 only when the run finished and
/// both sides agree.
pub fn run_remote(remote: &Remote<'_>) -> Result<ExitCode> {
    let client = remote.agent.client(remote.host)?;
    crate::remote::runtime()?.block_on(follow(remote, &client))
}

async fn follow(remote: &Remote<'_>, client: &AgentClient) -> Result<ExitCode> {
    let mut display = Display::new(std::io::stderr().is_terminal());
    let outcome = client
        .sync_run(
            remote.job,
            POLL,
            |run| {
                println!(
                    "sync {} on {}: run {run} started by the agent at {}",
                    remote.job,
                    remote.host,
                    client.url()
                );
            },
            |progress| display.update(progress),
        )
        .await;
    display.finish();
    match outcome {
        Ok(status) => Ok(report_status(remote, &status)),
        Err(SyncFollowError::Client(e)) if e.kind() == Some(ErrorKind::NotFound) => {
            // The agent's message names the jobs the host does declare.
            let message = match &e {
                ClientError::Api { error, .. } => error.message.clone(),
                other => other.to_string(),
            };
            bail!("host {} ({}): {message}", remote.host, client.url())
        }
        Err(SyncFollowError::Client(ClientError::Api { error, .. }))
            if error.kind == ErrorKind::Conflict =>
        {
            bail!("host {}: {}", remote.host, error.message)
        }
        Err(e) => Err(e.into()),
    }
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
            mailctl_api::sync::summary(stats, status.renamed, status.duplicates_removed)
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
    step: Option<SyncStep>,
    last_line: Option<Instant>,
}

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            bar: None,
            terminal,
            step: None,
            last_line: None,
        }
    }

    fn update(&mut self, progress: &Progress) {
        let new_step = self.step != Some(progress.step);
        self.step = Some(progress.step);
        if self.terminal {
            if new_step {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let bar = ProgressBar::new(progress.bytes_total.max(1));
                let template = match progress.step {
                    SyncStep::Transferring => {
                        "{msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {prefix}"
                    }
                    _ => "{spinner} {msg} {prefix}",
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(progress.step.to_string());
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
        if new_step || due {
            self.last_line = Some(Instant::now());
            let mut line = format!("{}: {}", progress.step, files(progress));
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
