//! Sync jobs (DESIGN.md §5): mail-aware copies run by the destination host.
//!
//! A run of a job, by [`SyncRunner::run`]:
//! 1. takes the job's lock (`sync-JOB.lock` in the state directory, an
//!    `flock`, released by the kernel when the process dies): one run per
//!    job at a time. A state file still saying `running` then belongs to a
//!    run that died, and is recorded as failed, never left half-known;
//! 2. refuses `delete: true` once the point of no return has passed
//!    ([`SyncRunner::set_point_of_no_return`]);
//! 3. in maildir mode lists both sides (the source over ssh with `find`, no
//!    agent needed there) and renames destination messages whose flags
//!    changed or that moved `new/` -> `cur/`, keeping one file per unique
//!    part, so rsync only sends new messages;
//! 4. runs the real `rsync -a` (over ssh for `HOST:PATH`), reporting
//!    progress; Dovecot control files travel in the same run, its index
//!    caches are skipped unless included;
//! 5. lists the destination again and verifies per folder that its unique
//!    parts, names and mtimes are the source's as listed at the start of the
//!    run (mail that arrived since is the next run's).
//!
//! mbox mode converts spool files into one maildir per user instead
//! ([`mbox`]).
//!
//! The runner is blocking: the daemon calls it on a blocking thread.

pub mod maildir;
pub mod mbox;
pub mod rsync;
pub mod source;

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use mailctl_schemas::model::{SyncJob, SyncSource};

pub use mailctl_api::sync::{
    JobStatus, Progress, RunDetails, RunState, Stats, SyncStep, Verification, summary,
};
pub use maildir::Listing;

/// Why a run did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync job {job}: a run is already in progress")]
    Busy { job: String },
    #[error(
        "sync job {job}: delete: true refused, the point of no return has passed (the destination takes mail of its own; deleting what the source lacks would lose it)"
    )]
    DeleteRefused { job: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed (exit {}): {stderr}", status.map_or("signal".to_owned(), |c| c.to_string()))]
    Command {
        what: String,
        status: Option<i32>,
        stderr: String,
    },
    #[error(
        "the ssh host key of {host} is not the pinned one ({pinned}); if the source's key really changed, put its new key in sshHostKey. ssh said: {detail}"
    )]
    HostKey {
        host: String,
        /// The pinned key's fingerprint.
        pinned: String,
        detail: String,
    },
    #[error("state file {}: {detail}", path.display())]
    State { path: PathBuf, detail: String },
    #[error("{0}")]
    Other(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Io { what, source }
}

/// A run that has begun ([`SyncRunner::begin`]): it holds the job's lock
/// until [`SyncRunner::finish`] is done with it (or it is dropped).
#[derive(Debug)]
pub struct Started {
    _lock: nix::fcntl::Flock<fs::File>,
    status: JobStatus,
}

impl Started {
    /// This run's number.
    pub fn run(&self) -> u64 {
        self.status.run
    }
}

/// What one finished run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub job: String,
    pub stats: Stats,
    pub renamed: usize,
    pub duplicates_removed: usize,
    /// Destination messages gone from the source, removed (`delete: true`).
    pub deleted: usize,
    /// mbox mode: messages converted.
    pub converted: Option<mbox::Converted>,
    pub verification: Verification,
    pub duration: Duration,
    /// Where the time went.
    pub phases: Vec<(SyncStep, Duration)>,
    /// Which messages were sent and renamed (maildir mode).
    pub details: RunDetails,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sync {}: {}",
            self.job,
            summary(&self.stats, self.renamed, self.duplicates_removed)
        )?;
        if self.deleted > 0 {
            write!(f, ", {} deleted", self.deleted)?;
        }
        if let Some(c) = &self.converted {
            write!(
                f,
                ", {} mbox messages ({} written, {} renamed)",
                c.messages, c.written, c.renamed
            )?;
        }
        write!(f, " in {:.1}s", self.duration.as_secs_f64())?;
        if !self.phases.is_empty() {
            let phases: Vec<String> = self
                .phases
                .iter()
                .map(|(phase, took)| format!("{phase} {:.2}s", took.as_secs_f64()))
                .collect();
            write!(f, " ({})", phases.join(", "))?;
        }
        write!(f, "\n{}", self.verification)
    }
}

use crate::fsutil::unix_now;

const POINT_OF_NO_RETURN: &str = "sync-point-of-no-return";

/// Runs sync jobs, keeping their state, locks and the point-of-no-return
/// flag in one state directory.
#[derive(Debug, Clone)]
pub struct SyncRunner {
    state_dir: PathBuf,
    limits: source::ListingLimits,
}

/// What start-up found in the sync state folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Jobs whose run died with a previous process, now recorded as failed.
    pub interrupted: Vec<String>,
    /// Job states that could not be read, each with what was done about it.
    pub damaged: Vec<String>,
}

impl SyncRunner {
    pub fn new(state_dir: impl Into<PathBuf>) -> SyncRunner {
        SyncRunner {
            state_dir: state_dir.into(),
            limits: source::ListingLimits::default(),
        }
    }

    /// How long a remote listing may take and how big it may be (default
    /// [`ListingLimits::default`](source::ListingLimits::default)).
    pub fn listing_limits(mut self, limits: source::ListingLimits) -> SyncRunner {
        self.limits = limits;
        self
    }

    /// The job's ssh known_hosts file: the pinned key, or the one ssh
    /// accepted on first use.
    fn known_hosts(&self, job: &SyncJob) -> PathBuf {
        self.state_dir
            .join(format!("sync-{}.known_hosts", job.name))
    }

    fn endpoint(&self, job: &SyncJob) -> Result<rsync::Endpoint, SyncError> {
        rsync::Endpoint::of(job, self.known_hosts(job))
    }

    fn ensure_state_dir(&self) -> Result<(), SyncError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state_dir)
            .map_err(io_error(format!(
                "creating the state directory {}",
                self.state_dir.display()
            )))
    }

    fn status_file(&self, job: &str) -> PathBuf {
        self.state_dir.join(format!("sync-{job}.json"))
    }

    /// Records that the destination now takes mail of its own (or, with
    /// `false`, that it does not again): `delete: true` is refused while set.
    pub fn set_point_of_no_return(&self, passed: bool) -> Result<(), SyncError> {
        self.ensure_state_dir()?;
        let file = self.state_dir.join(POINT_OF_NO_RETURN);
        if passed {
            write_atomically(&file, format!("{}\n", unix_now()).as_bytes())
        } else {
            match fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_error(format!("removing {}", file.display()))(e))
                }
                _ => Ok(()),
            }
        }
    }

    pub fn point_of_no_return_passed(&self) -> bool {
        self.state_dir.join(POINT_OF_NO_RETURN).exists()
    }

    /// The state of a job, if it ever ran.
    pub fn status(&self, job: &str) -> Result<Option<JobStatus>, SyncError> {
        let file = self.status_file(job);
        let mut text = Vec::new();
        match fs::File::open(&file) {
            Ok(mut f) => f
                .read_to_end(&mut text)
                .map_err(io_error(format!("reading {}", file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("reading {}", file.display()))(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| SyncError::State {
                path: file,
                detail: format!("{e} (remove it to forget the job's history)"),
            })
    }

    fn save(&self, status: &JobStatus) -> Result<(), SyncError> {
        let text = serde_json::to_vec_pretty(status).map_err(|e| SyncError::State {
            path: self.status_file(&status.job),
            detail: e.to_string(),
        })?;
        write_atomically(&self.status_file(&status.job), &text)
    }

    /// At start-up: every job whose state says `running` and whose lock is
    /// free died with a previous process; record it as failed. A job state
    /// that cannot be read is moved aside (`sync-JOB.json.damaged-SECONDS`):
    /// that job starts a fresh history, and the others are recovered all the
    /// same.
    pub fn recover(&self) -> Result<Recovery, SyncError> {
        let mut recovery = Recovery::default();
        let entries = match fs::read_dir(&self.state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(recovery),
            Err(e) => return Err(io_error("reading the state directory")(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(job) = name
                .strip_prefix("sync-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let Ok(_lock) = self.lock(job) else {
                continue; // running right now
            };
            match self.fail_interrupted(job) {
                Ok(true) => recovery.interrupted.push(job.to_owned()),
                Ok(false) => {}
                Err(e) => {
                    let moved = match crate::fsutil::set_aside(&self.status_file(job)) {
                        Ok(Some(aside)) => format!("moved aside to {}", aside.display()),
                        Ok(None) => "it is gone".to_owned(),
                        Err(rename) => format!("could not move it aside: {rename}"),
                    };
                    recovery
                        .damaged
                        .push(format!("sync job {job}: {e}; {moved}"));
                }
            }
        }
        recovery.interrupted.sort();
        recovery.damaged.sort();
        Ok(recovery)
    }

    /// Marks a `running` state as failed; the caller holds the lock.
    fn fail_interrupted(&self, job: &str) -> Result<bool, SyncError> {
        match self.status(job)? {
            Some(mut status) if status.state == RunState::Running => {
                // Saved under the file's job (whose lock is held), not over
                // another job's state should the file name a different one.
                status.job = job.to_owned();
                status.state = RunState::Failed;
                status.finished_at_unix = Some(unix_now());
                status.error = Some(
                    "interrupted: the process running it stopped before the run finished".into(),
                );
                status.progress = None;
                self.save(&status)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn lock(&self, job: &str) -> Result<nix::fcntl::Flock<fs::File>, SyncError> {
        self.ensure_state_dir()?;
        let path = self.state_dir.join(format!("sync-{job}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => SyncError::Busy {
                    job: job.to_owned(),
                },
                other => io_error(format!("locking {}", path.display()))(other.into()),
            },
        )
    }

    /// Runs one job to its end and records the outcome. `on_progress` sees
    /// every progress update (it is also in the state file, once a second).
    pub fn run(
        &self,
        job: &SyncJob,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunReport, SyncError> {
        let started = self.begin(job)?;
        self.finish(started, job, on_progress)
    }

    /// The first half of [`run`](Self::run): takes the job's lock, refuses
    /// a deleting run past the point of no return (not recorded: it is not
    /// a run), and records the run as running under a new run number. The
    /// agent answers a request for a run with that number once this
    /// returned, so the caller can tell this run's outcome from an earlier one.
    pub fn begin(&self, job: &SyncJob) -> Result<Started, SyncError> {
        let lock = self.lock(&job.name)?;
        self.fail_interrupted(&job.name)?;
        // A refusal is not a run: it takes no run number and leaves the
        // last run's record as it was (run numbers never skip).
        if job.delete && self.point_of_no_return_passed() {
            return Err(SyncError::DeleteRefused {
                job: job.name.clone(),
            });
        }
        let previous = self.status(&job.name)?;
        let status = JobStatus {
            job: job.name.clone(),
            run: previous.as_ref().map_or(1, |p| p.run + 1),
            state: RunState::Running,
            started_at_unix: unix_now(),
            finished_at_unix: None,
            progress: None,
            stats: None,
            renamed: 0,
            duplicates_removed: 0,
            verification: None,
            error: None,
            last_verified_at_unix: previous.as_ref().and_then(|p| p.last_verified_at_unix),
            host_key: previous.and_then(|p| p.host_key),
            details: None,
        };
        self.save(&status)?;
        Ok(Started {
            _lock: lock,
            status,
        })
    }

    /// The second half of [`run`](Self::run): the run itself, its progress
    /// saved every second, and its outcome recorded.
    pub fn finish(
        &self,
        started: Started,
        job: &SyncJob,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunReport, SyncError> {
        let Started { _lock, mut status } = started;
        let outcome = {
            let mut last_saved = Instant::now();
            let mut reporter = |progress: &Progress| {
                on_progress(progress);
                if last_saved.elapsed() >= Duration::from_secs(1) {
                    last_saved = Instant::now();
                    status.progress = Some(*progress);
                    let _ = self.save(&status);
                }
            };
            self.run_unlocked(job, &mut reporter)
        };
        status.finished_at_unix = Some(unix_now());
        status.progress = None;
        status.host_key = self
            .endpoint(job)
            .ok()
            .and_then(|endpoint| endpoint.host_key_status());
        match &outcome {
            Ok(report) => {
                status.state = RunState::Finished;
                status.stats = Some(report.stats);
                status.details = Some(report.details.clone());
                status.renamed = report.renamed;
                status.duplicates_removed = report.duplicates_removed;
                status.verification = Some(report.verification.clone());
                if report.verification.verified() {
                    status.last_verified_at_unix = status.finished_at_unix;
                }
            }
            Err(error) => {
                status.state = RunState::Failed;
                status.error = Some(error.to_string());
            }
        }
        self.save(&status)?;
        outcome
    }

    fn run_unlocked(
        &self,
        job: &SyncJob,
        on_progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunReport, SyncError> {
        let started = Instant::now();
        let endpoint = self.endpoint(job)?;
        endpoint.write_pinned_key()?;
        let outcome = if job.mbox {
            self.run_mbox(job, &endpoint, on_progress, started)
        } else {
            self.run_maildirs(job, &endpoint, on_progress, started)
        };
        outcome.map_err(|error| endpoint.explain_host_key(error))
    }

    /// A run in plain or maildir mode (not mbox).
    /// A maildir (or plain) job: list, plan, transfer while renaming,
    /// verify; each phase a step of its own.
    fn run_maildirs(
        &self,
        job: &SyncJob,
        endpoint: &rsync::Endpoint,
        on_progress: &mut dyn FnMut(&Progress),
        started: Instant,
    ) -> Result<RunReport, SyncError> {
        let destination = &job.destination;
        fs::create_dir_all(destination)
            .map_err(io_error(format!("creating {}", destination.display())))?;
        let mut report = RunReport {
            job: job.name.clone(),
            stats: Stats::default(),
            renamed: 0,
            duplicates_removed: 0,
            deleted: 0,
            converted: None,
            verification: Verification::default(),
            duration: Duration::ZERO,
            phases: Vec::new(),
            details: RunDetails::default(),
        };
        let mut clock = PhaseClock::start();
        let lister = source::Lister::new(endpoint, &self.state_dir, &job.name, self.limits);
        let (options, listed_options) = maildir_options(job);
        let planned = if job.maildir {
            plan_maildir_run(
                job,
                endpoint,
                &lister,
                &listed_options,
                &mut report,
                &mut clock,
                on_progress,
            )?
        } else {
            Planned::default()
        };
        let transfer = match planned.transfer {
            Some(transfer) => transfer,
            None => rsync::Transfer::start(&rsync::argv(endpoint, destination, &options))?,
        };
        let mut progress = Progress::starting(SyncStep::Transferring);
        progress.files_total = planned.to_send;
        progress.bytes_total = planned.bytes_to_send;
        on_progress(&progress);
        let listing_bytes = report.stats.listing_bytes;
        let (stats, local) = transfer_while_renaming(
            transfer,
            destination,
            planned.local_work,
            progress,
            on_progress,
        );
        if let Some(work) = local {
            let work = work?;
            report.renamed = work.applied.renamed;
            report.duplicates_removed = work.applied.duplicates_removed;
            report.deleted = work.deleted;
            report.phases.push((SyncStep::Renaming, work.took));
        }
        report.stats = stats?;
        report.stats.listing_bytes = listing_bytes;
        clock.done(&mut report, SyncStep::Transferring);
        on_progress(&Progress::starting(SyncStep::Verifying));
        let verification = verify_run(
            job,
            endpoint,
            &lister,
            planned.listed,
            &listed_options,
            &mut report,
        )?;
        report.verification = verification.allowing_extra(!job.delete);
        clock.done(&mut report, SyncStep::Verifying);
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Takes the job's lock like a run: the two share the cached listing.
    pub fn verify(&self, job: &SyncJob) -> Result<Verification, SyncError> {
        let _lock = self.lock(&job.name)?;
        let endpoint = self.endpoint(job)?;
        endpoint.write_pinned_key()?;
        let lister = source::Lister::new(&endpoint, &self.state_dir, &job.name, self.limits);
        let (source, dest) =
            list_both(&lister, &job.destination).map_err(|e| endpoint.explain_host_key(e))?;
        Ok(maildir::verify(&source.listing, &dest).allowing_extra(!job.delete))
    }

    fn run_mbox(
        &self,
        job: &SyncJob,
        endpoint: &rsync::Endpoint,
        on_progress: &mut dyn FnMut(&Progress),
        started: Instant,
    ) -> Result<RunReport, SyncError> {
        let mut stats = Stats::default();
        // A remote spool is copied into the state directory first.
        let spool_root = if endpoint.host.is_some() {
            let staging = self.state_dir.join(format!("mbox-{}", job.name));
            fs::create_dir_all(&staging)
                .map_err(io_error(format!("creating {}", staging.display())))?;
            let argv = rsync::argv(endpoint, &staging, &rsync::Options::default());
            on_progress(&Progress::starting(SyncStep::Transferring));
            stats = rsync::run(&argv, |_| {})?;
            let single = Path::new(&endpoint.path)
                .file_name()
                .map(|n| staging.join(n));
            match single {
                Some(file) if file.is_file() => file,
                _ => staging,
            }
        } else {
            match &job.source {
                SyncSource::Local(path) => path.clone(),
                SyncSource::Remote { path, .. } => path.clone(),
            }
        };
        let spools = mbox::spools(&spool_root).map_err(io_error("listing mbox spools"))?;
        let mut progress = Progress::starting(SyncStep::Converting);
        progress.files_total = spools.len() as u64;
        on_progress(&progress);
        let mut total = mbox::Converted::default();
        let mut expected = Listing::default();
        for (user, spool) in &spools {
            let maildir = job.destination.join(user);
            let done = mbox::convert(spool, &maildir)
                .map_err(io_error(format!("converting {}", spool.display())))?;
            total.messages += done.messages;
            total.written += done.written;
            total.renamed += done.renamed;
            total.unchanged += done.unchanged;
            total.bytes += done.bytes;
            let (text, _) = mbox::read_spool(spool)
                .map_err(io_error(format!("reading {}", spool.display())))?;
            let messages = mbox::parse(&text);
            expected
                .folders
                .entry(user.clone())
                .or_default()
                .messages
                .extend(mbox::expected(&messages, 0));
            progress.files_done += 1;
            progress.bytes_done = total.bytes;
            on_progress(&progress);
        }
        for folder in expected.folders.values_mut() {
            folder.sort();
        }
        on_progress(&Progress::starting(SyncStep::Verifying));
        let mut actual = Listing::default();
        for user in expected.folders.keys() {
            let listing = list_local(&job.destination.join(user))?;
            let mut messages = listing
                .folders
                .get("")
                .map(|f| f.messages.clone())
                .unwrap_or_default();
            // Mail delivered into the new maildir is not the spool's.
            messages.retain(|m| m.key.ends_with(".mbox"));
            actual
                .folders
                .insert(user.clone(), maildir::Folder { messages });
        }
        // Dates of undated messages fall back to the spool's mtime: compare names only.
        for listing in [&mut expected, &mut actual] {
            for folder in listing.folders.values_mut() {
                for m in &mut folder.messages {
                    m.mtime = 0;
                }
            }
        }
        Ok(RunReport {
            job: job.name.clone(),
            stats,
            renamed: 0,
            duplicates_removed: 0,
            deleted: 0,
            converted: Some(total),
            verification: maildir::verify(&expected, &actual),
            duration: started.elapsed(),
            phases: Vec::new(),
            details: RunDetails::default(),
        })
    }
}

fn list_local(root: &Path) -> Result<Listing, SyncError> {
    Listing::read_local(root).map_err(io_error(format!("listing {}", root.display())))
}

/// Times the phases of a run, one after the other.
struct PhaseClock {
    started: Instant,
}

impl PhaseClock {
    fn start() -> Self {
        PhaseClock {
            started: Instant::now(),
        }
    }

    /// Records `phase` as ended now; the next one starts.
    fn done(&mut self, report: &mut RunReport, phase: SyncStep) {
        report.phases.push((phase, self.started.elapsed()));
        self.started = Instant::now();
    }
}

/// The rsync options of a job: for rsync's own walk of the tree, and for
/// rsync with only the paths it is handed (maildir mode).
fn maildir_options(job: &SyncJob) -> (rsync::Options, rsync::Options) {
    let options = rsync::Options {
        delete: job.delete,
        with_index: job.include.iter().any(|p| p.contains("dovecot.index")),
        include: job.include.clone(),
        exclude: job.exclude.clone(),
        extra_args: Vec::new(),
        files_from_list: false,
        rsync_path: None,
    };
    let listed = rsync::Options {
        files_from_list: true,
        ..options.clone()
    };
    (options, listed)
}

/// What the listing phase of a maildir run decided.
#[derive(Default)]
struct Planned {
    /// How many messages the destination lacks.
    to_send: u64,
    /// Their bytes (from the source's listing).
    bytes_to_send: u64,
    /// The source as listed at the start of the run.
    listed: Option<Listing>,
    /// Renames and removals to make on the destination while rsync runs.
    local_work: Option<(Vec<maildir::Step>, Vec<String>)>,
    /// rsync, started already (during the listing, or with its list).
    transfer: Option<rsync::Transfer>,
}

/// The listing phase of a maildir run: list both sides, plan the renames
/// and removals, and choose how rsync learns what to send.
fn plan_maildir_run(
    job: &SyncJob,
    endpoint: &rsync::Endpoint,
    lister: &source::Lister<'_>,
    listed_options: &rsync::Options,
    report: &mut RunReport,
    clock: &mut PhaseClock,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Planned, SyncError> {
    let destination = &job.destination;
    on_progress(&Progress::starting(SyncStep::Listing));
    let (source, dest, mut transfer) = list_for_run(lister, endpoint, destination, listed_options)?;
    report.stats.listing_bytes += source.bytes;
    let source = source.listing;
    // The listing's count, once known (the step began at "0 files").
    let count = source.message_count() as u64;
    on_progress(&Progress {
        files_done: count,
        files_total: count,
        ..Progress::starting(SyncStep::Listing)
    });
    clock.done(report, SyncStep::Listing);
    let steps = maildir::plan(&source, &dest);
    let gone = deletions(job, &source, &dest)?;
    let lacking = maildir::lacking(&source, &dest);
    let to_send = lacking.len() as u64;
    let bytes_to_send = maildir::bytes_lacking(&source, &dest);
    let (sent, more_sent) = RunDetails::capped(lacking.iter().cloned());
    let (renamed, more_renamed) = RunDetails::capped(steps.iter().filter_map(|step| match step {
        maildir::Step::Rename { folder, from, to } => Some(if folder.is_empty() {
            format!("{from} -> {to}")
        } else {
            format!("{folder}/{from} -> {to}")
        }),
        maildir::Step::RemoveDuplicate { .. } => None,
    }));
    report.details = RunDetails {
        sent,
        more_sent,
        renamed,
        more_renamed,
    };
    let mut local_work = None;
    // Only what the destination lacks goes to rsync: not the names of
    // every message, which on a big maildir would cost more than the new
    // mail itself. When most of it is missing (a first run), rsync's own
    // walk of the tree is the cheaper way.
    if to_send.saturating_mul(2) <= source.message_count() as u64 {
        let mut started = match transfer.take() {
            Some(started) => started,
            None => rsync::Transfer::start(&rsync::argv(endpoint, destination, listed_options))?,
        };
        started.send_list(maildir::to_send(&source, &dest, lacking));
        transfer = Some(started);
        // rsync only touches messages the destination lacks, the renames
        // and removals only those it has: both at once.
        local_work = Some((steps, gone));
    } else {
        // No list after all: the early rsync ends with nothing to do.
        if let Some(mut unused) = transfer.take() {
            unused.send_list(Vec::new());
            unused.finish(|_| {})?;
        }
        // rsync walks the whole tree: rename first, or it would bring a
        // renamed message again under its new name.
        on_progress(&Progress::starting(SyncStep::Renaming));
        let work = rename_and_remove(destination, &steps, &gone)?;
        report.renamed = work.applied.renamed;
        report.duplicates_removed = work.applied.duplicates_removed;
        report.deleted = work.deleted;
        clock.done(report, SyncStep::Renaming);
    }
    Ok(Planned {
        to_send,
        bytes_to_send,
        listed: Some(source),
        local_work,
        transfer,
    })
}

/// The messages `delete: true` removes from the destination: those the
/// source no longer has. Nothing without `delete`.
fn deletions(job: &SyncJob, source: &Listing, dest: &Listing) -> Result<Vec<String>, SyncError> {
    if !job.delete {
        return Ok(Vec::new());
    }
    // An empty source is far likelier a wrong path or an unmounted disk
    // than a host whose users deleted all mail.
    if source.message_count() == 0 && dest.message_count() > 0 {
        return Err(SyncError::Other(format!(
            "sync job {}: the source lists no messages at all; refusing to delete the {} messages on the destination (check the source path; run without delete: true to copy only)",
            job.name,
            dest.message_count()
        )));
    }
    Ok(maildir::only_on_destination(source, dest))
}

/// The transfer phase: rsync runs, reporting progress, while the renames
/// and removals (if any are left) are made on a thread of their own.
fn transfer_while_renaming(
    transfer: rsync::Transfer,
    destination: &Path,
    local_work: Option<(Vec<maildir::Step>, Vec<String>)>,
    mut progress: Progress,
    on_progress: &mut dyn FnMut(&Progress),
) -> (
    Result<Stats, SyncError>,
    Option<Result<LocalWork, SyncError>>,
) {
    let known_total = progress.bytes_total;
    std::thread::scope(|scope| {
        let local = local_work.map(|(steps, gone)| {
            scope.spawn(move || rename_and_remove(destination, &steps, &gone))
        });
        let stats = transfer.finish(|event| {
            if let rsync::Event::Progress(p) = event {
                progress.files_done = p.files;
                progress.files_total = progress.files_total.max(p.files);
                progress.bytes_done = p.bytes;
                // The total is what the listing said the destination lacks
                // (maildir mode), known before rsync starts; rsync's own
                // estimate (from its percentage, which wanders as it
                // discovers files) only when nothing better is known.
                if known_total == 0 && p.percent > 0 {
                    progress.bytes_total = p.bytes.saturating_mul(100) / u64::from(p.percent);
                }
                progress.bytes_total = progress.bytes_total.max(p.bytes);
                progress.rate = p.rate;
                progress.eta_seconds =
                    (p.rate > 0).then(|| progress.bytes_total.saturating_sub(p.bytes) / p.rate);
                on_progress(&progress);
            }
        });
        let local = local.map(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(SyncError::Other("the renaming thread panicked".into())))
        });
        (stats, local)
    })
}

/// The verify phase: the destination is observed again. In maildir mode it
/// is held against the source as listed at the start of the run (`listed`):
/// a message that arrived or changed flags on a live source since then
/// belongs to the next run (the final one runs with the writers stopped).
/// Stale copies (the same name with another date or size) are sent again,
/// and the destination observed once more.
fn verify_run(
    job: &SyncJob,
    endpoint: &rsync::Endpoint,
    lister: &source::Lister<'_>,
    listed: Option<Listing>,
    listed_options: &rsync::Options,
    report: &mut RunReport,
) -> Result<Verification, SyncError> {
    let destination = &job.destination;
    let (source, dest) = match listed {
        Some(source) => (source, list_local(destination)?),
        None => {
            let (source, dest) = list_both(lister, destination)?;
            report.stats.listing_bytes += source.bytes;
            (source.listing, dest)
        }
    };
    let verification = maildir::verify(&source, &dest);
    // Stale copies are among the differing ones: rarely any.
    let stale = if job.maildir && verification.differing > 0 {
        maildir::stale(&source, &dest)
    } else {
        Vec::new()
    };
    if stale.is_empty() {
        return Ok(verification);
    }
    let mut again = rsync::Transfer::start(&rsync::argv(endpoint, destination, listed_options))?;
    again.send_list(stale);
    report.stats.absorb(&again.finish(|_| {})?);
    Ok(maildir::verify(&source, &list_local(destination)?))
}

/// What the renames and removals on the destination did.
struct LocalWork {
    applied: maildir::Applied,
    deleted: usize,
    took: Duration,
}

/// Renames (flag changes, new -> cur, duplicates) and removals (`delete:
/// true`) on the destination.
fn rename_and_remove(
    destination: &Path,
    steps: &[maildir::Step],
    gone: &[String],
) -> Result<LocalWork, SyncError> {
    let started = Instant::now();
    let applied =
        maildir::apply(destination, steps).map_err(io_error("renaming on the destination"))?;
    let deleted =
        maildir::remove(destination, gone).map_err(io_error("deleting on the destination"))?;
    Ok(LocalWork {
        applied,
        deleted,
        took: started.elapsed(),
    })
}

/// Lists both sides for a run, at the same time; the destination by names
/// only (enough to plan; mtimes are checked by the verification after the
/// transfer). A remote source is listed through the rsync that will
/// transfer: its `--rsync-path` runs the listing script first, on the same
/// ssh connection, and writes the listing to stderr, while rsync waits for
/// its list of paths. One ssh handshake a run instead of two; that rsync
/// comes back with the listing.
fn list_for_run(
    lister: &source::Lister<'_>,
    endpoint: &rsync::Endpoint,
    destination: &Path,
    options: &rsync::Options,
) -> Result<(source::SourceListing, Listing, Option<rsync::Transfer>), SyncError> {
    let list_source = || -> Result<_, SyncError> {
        if !lister.is_remote() {
            return Ok((lister.list()?, None));
        }
        let (listing, transfer) = lister.list_remote(|script| {
            let options = rsync::Options {
                // A shell of its own: `set -e` is void in a command left
                // of `&&`, and a listing cut short by an error must stop
                // the run, not pass for the whole source.
                rsync_path: Some(format!(
                    "sh -c {} >&2 </dev/null && rsync",
                    rsync::shell_quote(script)
                )),
                ..options.clone()
            };
            let argv = rsync::argv(endpoint, destination, &options);
            let mut transfer =
                rsync::Transfer::start_after_preamble(&argv, source::END, *lister.limits())?;
            let answer = transfer.preamble(&lister.what(), lister.limits())?;
            let answer = source::answer_text(&answer).map_err(|detail| lister.failed(&detail))?;
            Ok((answer, transfer))
        })?;
        Ok((listing, Some(transfer)))
    };
    std::thread::scope(|scope| {
        let dest = scope.spawn(|| {
            let mut dest = Listing::read_local_names(destination)?;
            // Which of two copies to keep goes by their dates.
            dest.stat_duplicates(destination)?;
            Ok(dest)
        });
        let source = list_source();
        let dest: io::Result<Listing> = dest
            .join()
            .map_err(|_| SyncError::Other("the destination listing thread panicked".into()))?;
        let (source, transfer) = source?;
        let dest = dest.map_err(io_error(format!("listing {}", destination.display())))?;
        Ok((source, dest, transfer))
    })
}

/// Lists the source and the destination at the same time (the source is
/// mostly waiting on ssh and the other host's disk).
fn list_both(
    lister: &source::Lister<'_>,
    destination: &Path,
) -> Result<(source::SourceListing, Listing), SyncError> {
    std::thread::scope(|scope| {
        let source = scope.spawn(|| lister.list());
        let dest = list_local(destination);
        let source = source
            .join()
            .map_err(|_| SyncError::Other("the source listing thread panicked".into()))?;
        Ok((source?, dest?))
    })
}

/// Replaces `file` by a rename, without flushing it to disk: for caches and
/// scratch lists, which a crash may lose (a lost listing cache means one
/// full listing, checked by its hash anyway), not for state.
fn write_scratch(file: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, bytes)
        .and_then(|()| fs::rename(&temporary, file))
        .map_err(io_error(format!("writing {}", file.display())))
}

fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    crate::fsutil::write_atomically(file, bytes, 0o600)
        .map_err(io_error(format!("writing {}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, source: &Path, destination: &Path) -> SyncJob {
        let local = SyncSource::Local(source.to_owned());
        SyncJob {
            maildir: true,
            ..SyncJob::new(name, local, destination.to_owned())
        }
    }

    #[test]
    fn interrupted_runs_are_recorded_as_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runner = SyncRunner::new(dir.path());
        let status = JobStatus {
            job: "maildirs".into(),
            run: 1,
            state: RunState::Running,
            started_at_unix: 1,
            finished_at_unix: None,
            progress: Some(Progress::starting(SyncStep::Transferring)),
            stats: None,
            renamed: 0,
            duplicates_removed: 0,
            verification: None,
            error: None,
            last_verified_at_unix: Some(1),
            host_key: None,
            details: None,
        };
        runner.save(&status).expect("save");
        // Held lock: the run is alive, leave it.
        let lock = runner.lock("maildirs").expect("lock");
        assert!(matches!(
            runner.lock("maildirs"),
            Err(SyncError::Busy { .. })
        ));
        assert_eq!(runner.recover().expect("recover"), Recovery::default());
        drop(lock);
        assert_eq!(
            runner.recover().expect("recover").interrupted,
            vec!["maildirs".to_owned()]
        );
        let after = runner.status("maildirs").expect("status").expect("some");
        assert_eq!(after.state, RunState::Failed);
        assert!(after.error.as_deref().unwrap_or("").contains("interrupted"));
        assert_eq!(after.last_verified_at_unix, Some(1));
    }

    /// A job's state with nothing recorded but its name and state.
    fn job_status(job: &str, state: RunState) -> JobStatus {
        JobStatus {
            job: job.into(),
            run: 1,
            state,
            started_at_unix: 1,
            finished_at_unix: None,
            progress: None,
            stats: None,
            renamed: 0,
            duplicates_removed: 0,
            verification: None,
            error: None,
            last_verified_at_unix: None,
            host_key: None,
            details: None,
        }
    }

    /// Found by the `state_files` fuzz target: a `sync-b.json` naming job
    /// `a` was recorded as failed into `sync-a.json`, and stayed `running`.
    #[test]
    fn an_interrupted_run_is_recorded_in_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runner = SyncRunner::new(dir.path());
        let finished = job_status("a", RunState::Finished);
        runner.save(&finished).expect("save");
        let misnamed = serde_json::to_vec(&job_status("a", RunState::Running)).expect("json");
        fs::write(dir.path().join("sync-b.json"), misnamed).expect("write");
        assert_eq!(
            runner.recover().expect("recover").interrupted,
            vec!["b".to_owned()]
        );
        let b = runner.status("b").expect("status").expect("some");
        assert_eq!((b.job.as_str(), b.state), ("b", RunState::Failed));
        assert_eq!(runner.status("a").expect("status"), Some(finished));
    }

    #[test]
    fn a_damaged_job_state_is_moved_aside_and_the_others_are_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runner = SyncRunner::new(dir.path());
        let running = JobStatus {
            run: 3,
            ..job_status("maildirs", RunState::Running)
        };
        runner.save(&running).expect("save");
        // Both a truncated and an empty state, whichever read_dir lists first.
        fs::write(dir.path().join("sync-aliases.json"), b"{\"job\": \"ali").expect("write");
        fs::write(dir.path().join("sync-queue.json"), b"").expect("write");

        let recovery = runner.recover().expect("recover");
        assert_eq!(recovery.interrupted, vec!["maildirs".to_owned()]);
        assert_eq!(recovery.damaged.len(), 2, "{recovery:?}");
        assert!(
            recovery.damaged[0].starts_with("sync job aliases: "),
            "{recovery:?}"
        );
        assert!(
            recovery.damaged[0].contains("moved aside to"),
            "{recovery:?}"
        );
        assert!(runner.status("aliases").expect("readable again").is_none());
        assert!(runner.status("queue").expect("readable again").is_none());
        let kept: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".damaged-"))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let after = runner.status("maildirs").expect("status").expect("some");
        assert_eq!(after.state, RunState::Failed);
    }

    #[test]
    fn delete_is_refused_after_the_point_of_no_return() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runner = SyncRunner::new(dir.path().join("state"));
        let mut job = job("maildirs", &dir.path().join("src"), &dir.path().join("dst"));
        job.delete = true;
        runner.set_point_of_no_return(true).expect("set");
        assert!(runner.point_of_no_return_passed());
        let error = runner.run(&job, &mut |_| {}).expect_err("refused");
        assert!(matches!(error, SyncError::DeleteRefused { .. }));
        assert!(error.to_string().contains("sync job maildirs"));
        // Not a run: no number taken, nothing recorded.
        assert_eq!(runner.status("maildirs").expect("status"), None);
        assert!(!dir.path().join("dst").exists());
        runner.set_point_of_no_return(false).expect("clear");
        assert!(!runner.point_of_no_return_passed());
        let started = runner.begin(&job).expect("begins");
        assert_eq!(started.run(), 1, "the refusal took no run number");
    }
}
