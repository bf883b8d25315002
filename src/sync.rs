//! `mailctl sync run --local -f FILE JOB`: run one sync job on this machine
//! by the same code the agent runs, and wait until it finished and verified.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mailctl_agent::sync::{Phase, Progress, SyncRunner};

/// Runs `job` of the host manifest in `file`. Exit 0 only when the run
/// finished and both sides agree.
pub fn run_local(
    file: &Path,
    host: Option<&str>,
    job_name: &str,
    state_dir: &Path,
) -> Result<ExitCode> {
    let (host_name, spec) = crate::local::host_spec(file, host)?;
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
