//! Sync jobs in the daemon: `every:` schedules, one-shot runs asked for over
//! the API (the controller's final syncs), and the point-of-no-return flag.
//! The runner is blocking (it drives rsync and walks maildirs), so every run
//! happens on the blocking pool; the runner's lock keeps one run per job.

use std::collections::HashMap;
use std::sync::Arc;

use mailctl_schemas::model::SyncJob;
use tokio::task::JoinHandle;

use super::status::StatusBoard;
use crate::sync::{SyncError, SyncRunner};

/// The scheduled jobs of the current desired state.
#[derive(Debug)]
pub struct SyncJobs {
    runner: Arc<SyncRunner>,
    schedules: HashMap<String, JoinHandle<()>>,
}

impl SyncJobs {
    /// Opens the sync state and records runs a previous agent left running
    /// as failed (never as half-known); damaged job states are reported on
    /// the status board.
    pub fn open(runner: SyncRunner, board: &StatusBoard) -> Self {
        match runner.recover() {
            Ok(recovery) => {
                for job in recovery.interrupted {
                    tracing::warn!(job = %job, "a sync run was interrupted by an agent restart; recorded as failed");
                }
                for damage in recovery.damaged {
                    tracing::error!("damaged agent state: {damage}");
                    board.add_state_warning(damage);
                }
            }
            Err(e) => {
                tracing::error!("sync state: {e}");
                board.add_state_warning(format!("sync state: {e}"));
            }
        }
        SyncJobs {
            runner: Arc::new(runner),
            schedules: HashMap::new(),
        }
    }

    pub fn runner(&self) -> Arc<SyncRunner> {
        self.runner.clone()
    }

    /// Replace the schedules by those of `jobs` (jobs without `every` run on demand only).
    pub fn schedule(&mut self, jobs: &[SyncJob]) {
        for (_, task) in self.schedules.drain() {
            task.abort();
        }
        for job in jobs {
            let Some(every) = job.every else { continue };
            let runner = self.runner.clone();
            let name = job.name.clone();
            let job = job.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every.0);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = run(&runner, &job).await {
                        tracing::warn!(job = %job.name, "scheduled sync: {e}");
                    }
                }
            });
            self.schedules.insert(name, task);
        }
    }
}

impl Drop for SyncJobs {
    fn drop(&mut self) {
        for task in self.schedules.values() {
            task.abort();
        }
    }
}

/// Begins a run of `job` (lock taken, recorded as running under a new run
/// number) and lets it go on in the background; returns the run number.
pub async fn start(runner: &Arc<SyncRunner>, job: &SyncJob) -> Result<u64, SyncError> {
    let begin_runner = runner.clone();
    let begin_job = job.clone();
    let started = tokio::task::spawn_blocking(move || begin_runner.begin(&begin_job))
        .await
        .map_err(|join| SyncError::Other(format!("starting the run: {join}")))??;
    let number = started.run();
    let runner = runner.clone();
    let job = job.clone();
    tokio::spawn(async move {
        let name = job.name.clone();
        let outcome =
            tokio::task::spawn_blocking(move || runner.finish(started, &job, &mut |_| {})).await;
        log_outcome(&name, outcome);
    });
    Ok(number)
}

fn log_outcome(
    name: &str,
    outcome: Result<Result<crate::sync::RunReport, SyncError>, tokio::task::JoinError>,
) {
    match outcome {
        Ok(Ok(report)) => {
            tracing::info!(job = %name, verified = report.verification.verified(), "{report}");
        }
        Ok(Err(e)) => tracing::warn!(job = %name, "sync run: {e}"),
        Err(join) => tracing::error!(job = %name, "sync run panicked or was cancelled: {join}"),
    }
}

/// One run of `job` on the blocking pool; logs the outcome.
pub async fn run(runner: &Arc<SyncRunner>, job: &SyncJob) -> Result<(), SyncError> {
    let runner = runner.clone();
    let job = job.clone();
    let name = job.name.clone();
    let outcome = tokio::task::spawn_blocking(move || runner.run(&job, &mut |_| {})).await;
    match outcome {
        Ok(Err(e)) => Err(e),
        other => {
            log_outcome(&name, other);
            Ok(())
        }
    }
}
