//! Sync jobs as the API shows them: a run's step and progress, its state
//! file (`sync-JOB.json`, also the answer of `GET /v1/sync/{job}`), rsync's
//! counts and the verification of both sides.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The answer of `POST /v1/sync/{job}`: the run was recorded as running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStarted {
    pub job: String,
    pub run: u64,
}

/// What a run is doing (the step of a sync run; not a migration's Phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncStep {
    Listing,
    Renaming,
    Transferring,
    Converting,
    Verifying,
}

impl fmt::Display for SyncStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncStep::Listing => "listing",
            SyncStep::Renaming => "renaming",
            SyncStep::Transferring => "transferring",
            SyncStep::Converting => "converting",
            SyncStep::Verifying => "verifying",
        })
    }
}

/// Progress of a running job: files, bytes, rate and ETA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Read as `phase` too, the name before 0.2.
    #[serde(alias = "phase")]
    pub step: SyncStep,
    pub files_done: u64,
    /// Known or estimated; 0 when unknown.
    pub files_total: u64,
    pub bytes_done: u64,
    /// rsync's estimate; 0 when unknown.
    pub bytes_total: u64,
    /// Bytes per second.
    pub rate: u64,
    pub eta_seconds: Option<u64>,
}

impl Progress {
    /// Nothing done yet in `step`.
    pub fn starting(step: SyncStep) -> Progress {
        Progress {
            step,
            files_done: 0,
            files_total: 0,
            bytes_done: 0,
            bytes_total: 0,
            rate: 0,
            eta_seconds: None,
        }
    }
}

/// Where a job stands, as kept in `sync-JOB.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    Running,
    /// Finished; see `verification` for whether the sides agree.
    Finished,
    Failed,
}

/// Which messages a run sent and renamed (`mailctl sync run -v`), at most
/// [`DETAILS`] of each, with the count of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    /// `FOLDER/new/NAME` of each message sent.
    pub sent: Vec<String>,
    pub more_sent: usize,
    /// `FOLDER/cur/OLD -> cur/NEW` of each message renamed (flags changed).
    pub renamed: Vec<String>,
    pub more_renamed: usize,
}

/// How many names [`RunDetails`] keeps of each kind.
pub const DETAILS: usize = 1000;

impl RunDetails {
    /// Keeps the first [`DETAILS`] of `names`, counting the rest.
    pub fn capped(names: impl IntoIterator<Item = String>) -> (Vec<String>, usize) {
        let mut kept = Vec::new();
        let mut more = 0;
        for name in names {
            if kept.len() < DETAILS {
                kept.push(name);
            } else {
                more += 1;
            }
        }
        (kept, more)
    }
}

/// The state file of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub job: String,
    /// Counts the runs of this job, from 1.
    #[serde(default)]
    pub run: u64,
    pub state: RunState,
    pub started_at_unix: u64,
    pub finished_at_unix: Option<u64>,
    pub progress: Option<Progress>,
    pub stats: Option<Stats>,
    pub renamed: usize,
    pub duplicates_removed: usize,
    pub verification: Option<Verification>,
    pub error: Option<String>,
    /// When a run last finished verified (the lag is now minus this).
    pub last_verified_at_unix: Option<u64>,
    /// The source's ssh host key: `pinned: TYPE SHA256:...` (the job's
    /// `sshHostKey`), `accepted on first use: TYPE SHA256:...` (no pin: the
    /// first key seen is kept), or absent (a local source, or ssh never got
    /// that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// The messages the last finished run sent and renamed (maildir mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<RunDetails>,
}

impl JobStatus {
    /// Finished, and both sides agree.
    pub fn verified(&self) -> bool {
        self.state == RunState::Finished
            && self
                .verification
                .as_ref()
                .is_some_and(Verification::verified)
    }

    /// Seconds since the last verified run.
    pub fn lag_seconds(&self) -> Option<u64> {
        self.last_verified_at_unix
            .map(|at| unix_now().saturating_sub(at))
    }
}

/// What a run moved, in one line (`N files (B bytes) transferred, ...`):
/// the agent's log, `mailctl sync run` and its `--local` form say it alike.
pub fn summary(stats: &Stats, renamed: usize, duplicates_removed: usize) -> String {
    format!(
        "{} ({}) transferred, {} on the wire, {} renamed, {} removed",
        count(stats.files_transferred, "file", "files"),
        bytes(stats.transferred_file_size),
        bytes(stats.wire_bytes()),
        renamed,
        count(duplicates_removed as u64, "duplicate", "duplicates"),
    )
}

/// `1 file`, `6 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `512 B`, `79.3 KiB`, `1.2 GiB`: the units the progress display uses.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// rsync's closing statistics (`--info=stats2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub files: u64,
    pub files_transferred: u64,
    pub transferred_file_size: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Bytes of source listings received over ssh (before and after the
    /// transfer), besides rsync's own.
    #[serde(default)]
    pub listing_bytes: u64,
}

impl Stats {
    /// Adds another rsync's counts (a second pass of the same run).
    pub fn absorb(&mut self, other: &Stats) {
        self.files_transferred += other.files_transferred;
        self.transferred_file_size += other.transferred_file_size;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.listing_bytes += other.listing_bytes;
    }

    /// Bytes that crossed the wire, both ways: rsync's and the listings'.
    pub fn wire_bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received + self.listing_bytes
    }
}

/// The result of comparing the unique parts of both sides, folder by folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub folders: usize,
    pub messages: usize,
    /// On the source, not on the destination.
    pub missing: usize,
    /// On the destination, not on the source.
    pub extra: usize,
    /// On both, but named (flags, new/cur) or dated differently.
    pub differing: usize,
    /// Second copies of a unique part in one destination folder.
    pub duplicates: usize,
    pub missing_examples: Vec<String>,
    pub extra_examples: Vec<String>,
    pub differing_examples: Vec<String>,
    /// Messages only on the destination do not count against it: the job
    /// does not delete, so mail the source deleted stays (and after the
    /// point of no return, mail the destination took itself).
    #[serde(default)]
    pub extra_allowed: bool,
}

/// How many names a verification lists per kind of difference.
pub const EXAMPLES: usize = 5;

impl Verification {
    pub fn verified(&self) -> bool {
        self.missing == 0
            && self.differing == 0
            && self.duplicates == 0
            && (self.extra == 0 || self.extra_allowed)
    }

    /// The same, with messages only on the destination allowed or not
    /// (they are for a job that does not delete).
    pub fn allowing_extra(mut self, allowed: bool) -> Verification {
        self.extra_allowed = allowed;
        self
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.verified() {
            write!(
                f,
                "verified: {} in {}",
                count(self.messages as u64, "message", "messages"),
                count(self.folders as u64, "folder", "folders")
            )?;
            if self.extra > 0 {
                write!(
                    f,
                    " ({} more only on the destination, kept: the job does not delete)",
                    self.extra
                )?;
            }
            return Ok(());
        }
        write!(
            f,
            "not verified: {} missing, {} extra, {} differing, {} duplicates ({} in {})",
            self.missing,
            self.extra,
            self.differing,
            self.duplicates,
            count(self.messages as u64, "message", "messages"),
            count(self.folders as u64, "folder", "folders")
        )?;
        for (what, list) in [
            ("missing", &self.missing_examples),
            ("extra", &self.extra_examples),
            ("differing", &self.differing_examples),
        ] {
            if !list.is_empty() {
                write!(f, "\n  {what}: {}", list.join(", "))?;
            }
        }
        Ok(())
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "a job's lag is measured against recorded unix timestamps"
)]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
