//! Running the commands a manifest names (onChange handlers, tasks, exec
//! services): argv directly, never through a shell, no input, a time limit,
//! and the tail of stderr kept for the error message.

use std::fmt;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mailctl_schemas::model::Handler;
use tokio::io::AsyncReadExt;

/// A failed command's error carries at most this many of its last stderr
/// lines, from at most this many of its last stderr bytes.
const STDERR_LINES: usize = 10;
const STDERR_TAIL: usize = 4096;
/// How long to keep reading stderr after a command exited, for output still
/// in the pipe; a daemon the command started may hold the pipe open forever.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// The last lines it wrote to stderr, trimmed.
    pub stderr: String,
}

/// Runs `argv` and waits at most `timeout` for it; a command still running
/// then is killed. Fails only when it cannot start or runs too long.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<Finished, CommandFailure> {
    let (program, args) = argv.split_first().ok_or_else(|| {
        CommandFailure::Spawn(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))
    })?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(CommandFailure::Spawn)?;

    let tail = Arc::new(Mutex::new(Vec::new()));
    let reader = child.stderr.take().map(|mut pipe| {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                let mut kept = tail.lock().unwrap_or_else(PoisonError::into_inner);
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(STDERR_TAIL);
                kept.drain(..excess);
            }
        })
    });

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if waited.is_err() {
        // Best effort: it may have exited just now; kill_on_drop stays as a backstop.
        let _ = child.start_kill();
    }
    if let Some(mut reader) = reader
        && tokio::time::timeout(STDERR_GRACE, &mut reader)
            .await
            .is_err()
    {
        reader.abort();
    }
    let status = match waited {
        Ok(status) => status.map_err(CommandFailure::Spawn)?,
        Err(_) => return Err(CommandFailure::Timeout(timeout)),
    };
    let kept = tail.lock().unwrap_or_else(PoisonError::into_inner);
    let text = String::from_utf8_lossy(&kept);
    let lines: Vec<&str> = text.trim().lines().collect();
    let stderr = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
    Ok(Finished { status, stderr })
}

/// Like [`run`], and exit codes other than 0 are failures too.
pub(crate) async fn run_checked(argv: &[String], timeout: Duration) -> Result<(), CommandFailure> {
    let finished = run(argv, timeout).await?;
    if finished.status.success() {
        Ok(())
    } else {
        Err(CommandFailure::Exit {
            status: finished.status,
            stderr: finished.stderr,
        })
    }
}

/// An argv as a person would type it: arguments with spaces or quotes in
/// single quotes.
pub(crate) fn argv_text(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a command the agent ran (an `onChange` handler, a task) did not
/// succeed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started: no such program, not executable.
    Spawn(io::Error),
    /// It exited unsuccessfully; `stderr` holds the last lines it wrote there.
    Exit { status: ExitStatus, stderr: String },
    /// It was still running when its time was up, and was killed.
    Timeout(Duration),
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self {
            CommandFailure::Spawn(error) => write!(
                f,
                "could not be started ({error}); check that the program exists and is executable"
            ),
            CommandFailure::Exit { status, stderr } => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => write!(f, "failed (exit code {code})")?,
                    (None, Some(signal)) => write!(f, "failed (killed by signal {signal})")?,
                    (None, None) => write!(f, "failed ({status})")?,
                }
                match stderr.lines().count() {
                    0 => f.write_str(" and wrote nothing to stderr"),
                    1 => write!(f, ": {stderr}"),
                    _ => {
                        f.write_str(", last lines of stderr:")?;
                        for line in stderr.lines() {
                            write!(f, "\n    {line}")?;
                        }
                        Ok(())
                    }
                }
            }
            CommandFailure::Timeout(limit) => write!(
                f,
                "did not finish within {}s and was killed",
                limit.as_secs_f64()
            ),
        }
    }
}

/// `run postmap /etc/postfix/virtual; reload postfix`
pub(crate) fn describe_handlers(handlers: &[Handler]) -> String {
    handlers
        .iter()
        .map(|handler| match handler {
            Handler::Run(argv) => format!("run {}", argv_text(argv)),
            Handler::Reload(service) => format!("reload {service}"),
            Handler::Restart(service) => format!("restart {service}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
