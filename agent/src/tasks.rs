//! Tasks: one-shot commands a migration needs once on a host, such as
//! converting Courier maildirs to Dovecot's layout.
//!
//! A task with a `creates` guard runs while that path is missing: the guard
//! is the task's own statement that it is done, and it survives a lost state
//! directory. A task without a guard runs until the agent holds a completion
//! record for it: a file in the state directory with a SHA-256 of its argv
//! and the time it finished. A changed command in the manifest has another
//! hash, so it counts as a new task and runs again. The record is written
//! only after the command succeeded (and created its guard), so a task that
//! failed or was interrupted runs again on the next reconcile; a task must
//! therefore be safe to start over, as conversions that work folder by
//! folder are.
//!
//! Only the hash of the argv is kept: arguments may hold passwords.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailctl_schemas::model::Task;
use serde::{Deserialize, Serialize};

use crate::command::CommandFailure;
use crate::command::argv_text;
use crate::driver::{Driver, Effect, Resource, ResourceChange};
use crate::fsutil::{StateError, blocking, sha256_hex, write_state_file};

/// Conversions of a large mail spool take long; a task that hangs for
/// longer than this is killed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs one guarded one-shot command per desired state.
#[derive(Debug, Clone)]
pub struct TaskDriver {
    state_dir: PathBuf,
    timeout: Duration,
}

impl TaskDriver {
    /// `state_dir` keeps one completion record per task name; it is created
    /// (mode 0700) when first needed.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        TaskDriver {
            state_dir: state_dir.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How long a task may run before it is killed (default 1 h).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn record_file(&self, task: &str) -> PathBuf {
        // Task names are letters, digits and `-_.@` (validated): a file name.
        self.state_dir.join(format!("task-{task}.json"))
    }
}

/// Why a task is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskReason {
    /// Its `creates` path does not exist.
    GuardMissing,
    /// No guard, and no record that it ever ran.
    NeverRan,
    /// No guard, and the recorded run was of another command.
    CommandChanged,
}

/// A task to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskChange {
    pub task: String,
    pub argv: Vec<String>,
    pub creates: Option<PathBuf>,
    pub reason: TaskReason,
}

impl ResourceChange for TaskChange {
    type Subject = String;

    fn subject(&self) -> String {
        self.task.clone()
    }
}

impl fmt::Display for TaskChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+ task {}: run {}", self.task, argv_text(&self.argv))?;
        match (&self.creates, self.reason) {
            (Some(path), _) => write!(f, " (creates {})", path.display()),
            (None, TaskReason::CommandChanged) => {
                f.write_str(" (the command changed since it last ran)")
            }
            (None, _) => Ok(()),
        }
    }
}

/// Whether a task is done, as the host shows it.
#[derive(Debug, Clone)]
pub struct ObservedTask {
    /// Whether the `creates` path exists; `None` without a guard.
    guard_exists: Option<bool>,
    record: Option<CompletionRecord>,
}

/// The state file saying a task ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompletionRecord {
    task: String,
    argv_sha256: String,
    completed_at_unix: u64,
}

/// Each argument followed by a NUL, which no argument can contain: two
/// different argvs never hash the same bytes.
fn argv_hash(argv: &[String]) -> String {
    let mut bytes = Vec::new();
    for arg in argv {
        bytes.extend_from_slice(arg.as_bytes());
        bytes.push(0);
    }
    sha256_hex(&bytes)
}

impl Driver for TaskDriver {
    type Desired = Task;
    type Observed = ObservedTask;
    type Change = TaskChange;
    type Error = TaskError;

    fn resource(&self, desired: &Task) -> Resource {
        Resource::Task {
            name: desired.name.clone(),
        }
    }

    async fn observe(&self, desired: &Task) -> Result<ObservedTask, TaskError> {
        let task = desired.name.clone();
        let guard = desired.creates.clone();
        let record_file = self.record_file(&desired.name);
        blocking(move || {
            let guard_exists = guard.map(|path| guard_exists(&task, &path)).transpose()?;
            Ok(ObservedTask {
                guard_exists,
                record: read_record(&record_file)?,
            })
        })
        .await
    }

    fn diff(&self, desired: &Task, observed: &ObservedTask) -> Result<Vec<TaskChange>, TaskError> {
        let reason = match (observed.guard_exists, &observed.record) {
            (Some(true), _) => return Ok(Vec::new()),
            (Some(false), _) => TaskReason::GuardMissing,
            (None, None) => TaskReason::NeverRan,
            (None, Some(record)) if record.argv_sha256 != argv_hash(&desired.run) => {
                TaskReason::CommandChanged
            }
            (None, Some(_)) => return Ok(Vec::new()),
        };
        Ok(vec![TaskChange {
            task: desired.name.clone(),
            argv: desired.run.clone(),
            creates: desired.creates.clone(),
            reason,
        }])
    }

    async fn apply(&self, changes: &[TaskChange]) -> Result<Vec<Effect>, TaskError> {
        for change in changes {
            crate::command::run_checked(&change.argv, self.timeout)
                .await
                .map_err(|failure| TaskError::Failed {
                    task: change.task.clone(),
                    argv: argv_text(&change.argv),
                    failure,
                })?;
            let state_dir = self.state_dir.clone();
            let record_file = self.record_file(&change.task);
            let change = change.clone();
            blocking(move || {
                if let Some(path) = &change.creates
                    && !guard_exists(&change.task, path)?
                {
                    return Err(TaskError::NotCreated {
                        task: change.task,
                        path: path.clone(),
                    });
                }
                let record = CompletionRecord {
                    argv_sha256: argv_hash(&change.argv),
                    completed_at_unix: crate::fsutil::unix_now(),
                    task: change.task,
                };
                let text = serde_json::to_vec_pretty(&record).map_err(|error| {
                    TaskError::State(StateError::Io {
                        path: record_file.clone(),
                        what: "encode it".into(),
                        source: error.into(),
                    })
                })?;
                write_state_file(&state_dir, &record_file, &text).map_err(TaskError::from)
            })
            .await?;
        }
        Ok(Vec::new())
    }
}

fn guard_exists(task: &str, path: &Path) -> Result<bool, TaskError> {
    path.try_exists().map_err(|source| TaskError::Guard {
        task: task.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn read_record(file: &Path) -> Result<Option<CompletionRecord>, TaskError> {
    let text = match fs::read(file) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TaskError::State(StateError::Io {
                path: file.to_owned(),
                what: "read it".into(),
                source,
            }));
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|error| {
        TaskError::State(StateError::Invalid {
            path: file.to_owned(),
            detail: error.to_string(),
            hint: "it records that a task ran: remove it to run the task again",
        })
    })
}

/// What can go wrong running a task. Every message names the task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {task}: `{argv}` {failure}")]
    Failed {
        task: String,
        argv: String,
        failure: CommandFailure,
    },
    #[error(
        "task {task} ran but did not create {}; fix the command, or `creates` if the task makes something else",
        path.display()
    )]
    NotCreated { task: String, path: PathBuf },
    #[error("task {task}: cannot tell whether {} exists", path.display())]
    Guard {
        task: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}
