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
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use mailctl_agent::sync::SyncRunner;
use mailctl_api::client::{AgentClient, ClientError, SyncFollowError};
use mailctl_api::sync::count;
use mailctl_api::{ErrorKind, JobStatus, Progress, SyncStep};

/// How often the job's status is read while it runs.
const POLL: Duration = Duration::from_millis(500);

/// Where `mailctl sync run HOST JOB` finds the agent and its credentials.
#[derive(Debug)]
pub struct Remote<'a> {
    pub job: &'a str,
    /// List the messages sent and renamed.
    pub verbose: bool,
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

/// `-v`: the messages a run sent and renamed.
fn print_details(details: &mailctl_api::RunDetails) {
    let mut out = std::io::stdout().lock();
    for (what, names, more) in [
        ("sent", &details.sent, details.more_sent),
        ("renamed", &details.renamed, details.more_renamed),
    ] {
        for name in names {
            let _ = writeln!(out, "  {what} {name}");
        }
        if more > 0 {
            let _ = writeln!(out, "  ... and {more} more {what}");
        }
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
    if let (true, Some(details)) = (remote.verbose, &status.details) {
        print_details(details);
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
    verbose: bool,
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
            if verbose {
                print_details(&report.details);
            }
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
/// Totals are shown only when known: the agent sends 0 for "unknown", and a
/// bar with a guessed length (1 byte, then a wandering estimate) says
/// nothing true.
struct Display {
    bar: Option<ProgressBar>,
    terminal: bool,
    step: Option<SyncStep>,
    /// Whether the bar has a length (a known byte total).
    sized: bool,
    last_line: Option<Instant>,
}

/// The bar shows the share done; the words beside it (files, bytes, rate,
/// ETA) are the same as in plain output.
const BAR: &str = "{msg:12} [{bar:30}] {prefix}";
const SPINNER: &str = "{spinner} {msg:12} {prefix}";

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            bar: None,
            terminal,
            step: None,
            sized: false,
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
                let bar = ProgressBar::no_length();
                bar.set_style(style(SPINNER));
                bar.set_message(progress.step.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                self.bar = Some(bar);
                self.sized = false;
            }
            if let Some(bar) = &self.bar {
                if progress.bytes_total > 0 {
                    if !self.sized {
                        bar.set_style(style(BAR));
                        self.sized = true;
                    }
                    bar.set_length(progress.bytes_total.max(progress.bytes_done));
                }
                bar.set_position(progress.bytes_done);
                bar.set_prefix(details(progress));
            }
            return;
        }
        let due = self
            .last_line
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(2));
        if new_step || due {
            self.last_line = Some(Instant::now());
            let details = details(progress);
            let line = if details.is_empty() {
                progress.step.to_string()
            } else {
                format!("{}: {details}", progress.step)
            };
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

fn style(template: &str) -> ProgressStyle {
    match ProgressStyle::with_template(template) {
        Ok(style) => style.progress_chars("=> "),
        Err(_) => ProgressStyle::default_spinner(),
    }
}

/// `3/6 files, 1.14 MiB of 3.81 MiB, 32.23 MiB/s, ETA 2 seconds`: only what is known.
fn details(progress: &Progress) -> String {
    let mut parts = Vec::new();
    match (progress.files_done, progress.files_total) {
        (0, 0) => {}
        (done, 0) => parts.push(count(done, "file", "files")),
        (done, total) => parts.push(format!("{done}/{}", count(total, "file", "files"))),
    }
    if progress.bytes_done > 0 || progress.bytes_total > 0 {
        parts.push(if progress.bytes_total > 0 {
            format!(
                "{} of {}",
                HumanBytes(progress.bytes_done),
                HumanBytes(progress.bytes_total)
            )
        } else {
            HumanBytes(progress.bytes_done).to_string()
        });
    }
    if progress.rate > 0 {
        parts.push(format!("{}/s", HumanBytes(progress.rate)));
    }
    if let Some(eta) = progress.eta_seconds.filter(|_| progress.bytes_total > 0) {
        parts.push(format!("ETA {}", HumanDuration(Duration::from_secs(eta))));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: SyncStep) -> Progress {
        Progress::starting(step)
    }

    #[test]
    fn progress_says_only_what_is_known_in_human_units() {
        assert_eq!(details(&progress(SyncStep::Listing)), "");
        let mut p = progress(SyncStep::Listing);
        p.files_done = 6;
        assert_eq!(details(&p), "6 files");
        p.files_done = 1;
        assert_eq!(details(&p), "1 file");
        let mut p = progress(SyncStep::Transferring);
        p.files_done = 3;
        p.files_total = 6;
        p.bytes_done = 1_200_000;
        p.rate = 33_800_000;
        p.eta_seconds = Some(64);
        // No total known: neither a total nor an ETA made from it.
        assert_eq!(details(&p), "3/6 files, 1.14 MiB, 32.23 MiB/s");
        p.bytes_total = 4_000_000;
        p.eta_seconds = Some(2);
        assert_eq!(
            details(&p),
            "3/6 files, 1.14 MiB of 3.81 MiB, 32.23 MiB/s, ETA 2 seconds"
        );
    }
}
