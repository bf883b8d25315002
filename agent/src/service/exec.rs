//! The exec driver: a service on a host without systemd, driven by the
//! commands its manifest names (`postfix start`, `postfix status`, ...).
//!
//! The commands are argv lists run directly, never through a shell, so a
//! manifest cannot smuggle shell syntax in. `status` exiting 0 means running,
//! anything else stopped (LSB says 3, `postfix status` says 1). A start or stop
//! counts only once `status` agrees: `postfix stop` returns before the master
//! process is gone, so the driver polls `status` until it does or the settle
//! time runs out.
//!
//! A daemon that a start command forks may keep the command's stderr open for
//! its whole life. So the driver waits for the *command* to exit, not for its
//! stderr to close, and keeps whatever the command wrote until then.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use mailctl_schemas::model::ExecCommands;

use crate::command::CommandFailure;

const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Which of a service's commands ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecAction {
    Start,
    Stop,
    Status,
    Reload,
}

impl fmt::Display for ExecAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecAction::Start => "start",
            ExecAction::Stop => "stop",
            ExecAction::Status => "status",
            ExecAction::Reload => "reload",
        })
    }
}

/// What can go wrong running a service's commands. Every message names the
/// service, the command and the argv.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("service {service}: cannot run the {action} command `{argv}`")]
    Spawn {
        service: String,
        action: ExecAction,
        argv: String,
        #[source]
        source: std::io::Error,
    },

    #[error("service {service}: the {action} command `{argv}` failed ({status}): {stderr}")]
    Failed {
        service: String,
        action: ExecAction,
        argv: String,
        status: ExitStatus,
        stderr: String,
    },

    #[error("service {service}: the {action} command `{argv}` did not exit within {timeout:?}")]
    Timeout {
        service: String,
        action: ExecAction,
        argv: String,
        timeout: Duration,
    },

    #[error(
        "service {service}: the {action} command succeeded, but `{status_argv}` still says {observed} after {settle:?}"
    )]
    NotSettled {
        service: String,
        action: ExecAction,
        status_argv: String,
        observed: &'static str,
        settle: Duration,
    },

    #[error(
        "service {service}: no reload command; add `exec.reload` to the manifest or use a restart handler"
    )]
    NoReloadCommand { service: String },
}

/// Runs exec commands with time limits.
#[derive(Debug, Clone)]
pub struct ExecDriver {
    command_timeout: Duration,
    settle_timeout: Duration,
}

impl Default for ExecDriver {
    fn default() -> Self {
        ExecDriver {
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
        }
    }
}

impl ExecDriver {
    /// How long one command may run before it is killed.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long after a start or stop `status` may take to agree.
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Runs the status command: `Ok(true)` when it exits 0.
    pub async fn is_running(
        &self,
        service: &str,
        commands: &ExecCommands,
    ) -> Result<bool, ExecError> {
        let outcome = self
            .run(service, ExecAction::Status, &commands.status)
            .await?;
        Ok(outcome.status.success())
    }

    /// Runs the start command, then waits until status says running.
    pub async fn start(&self, service: &str, commands: &ExecCommands) -> Result<(), ExecError> {
        self.run_checked(service, ExecAction::Start, &commands.start)
            .await?;
        self.settle(service, commands, ExecAction::Start, true)
            .await
    }

    /// Runs the stop command, then waits until status says stopped.
    pub async fn stop(&self, service: &str, commands: &ExecCommands) -> Result<(), ExecError> {
        self.run_checked(service, ExecAction::Stop, &commands.stop)
            .await?;
        self.settle(service, commands, ExecAction::Stop, false)
            .await
    }

    /// Runs the reload command. Reloading has no state `status` could show,
    /// so success is the command's exit code.
    pub async fn reload(&self, service: &str, commands: &ExecCommands) -> Result<(), ExecError> {
        let argv = commands
            .reload
            .as_ref()
            .ok_or_else(|| ExecError::NoReloadCommand {
                service: service.to_owned(),
            })?;
        self.run_checked(service, ExecAction::Reload, argv).await
    }

    async fn settle(
        &self,
        service: &str,
        commands: &ExecCommands,
        action: ExecAction,
        want_running: bool,
    ) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        loop {
            if self.is_running(service, commands).await? == want_running {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::NotSettled {
                    service: service.to_owned(),
                    action,
                    status_argv: commands.status.join(" "),
                    observed: if want_running { "stopped" } else { "running" },
                    settle: self.settle_timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn run_checked(
        &self,
        service: &str,
        action: ExecAction,
        argv: &[String],
    ) -> Result<(), ExecError> {
        let outcome = self.run(service, action, argv).await?;
        if outcome.status.success() {
            Ok(())
        } else {
            Err(ExecError::Failed {
                service: service.to_owned(),
                action,
                argv: argv.join(" "),
                status: outcome.status,
                stderr: outcome.stderr,
            })
        }
    }

    async fn run(
        &self,
        service: &str,
        action: ExecAction,
        argv: &[String],
    ) -> Result<Outcome, ExecError> {
        match crate::command::run(argv, self.command_timeout).await {
            Ok(finished) => Ok(Outcome {
                status: finished.status,
                stderr: finished.stderr,
            }),
            Err(CommandFailure::Timeout(timeout)) => Err(ExecError::Timeout {
                service: service.to_owned(),
                action,
                argv: argv.join(" "),
                timeout,
            }),
            Err(CommandFailure::Spawn(source)) => Err(ExecError::Spawn {
                service: service.to_owned(),
                action,
                argv: argv.join(" "),
                source,
            }),
            // `run` reports exit codes in its outcome, never as a failure.
            Err(CommandFailure::Exit { status, stderr }) => Ok(Outcome { status, stderr }),
        }
    }
}

struct Outcome {
    status: ExitStatus,
    stderr: String,
}
