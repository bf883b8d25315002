//! Files: the configuration files a host manifest declares, with their mode,
//! owner and group, or their absence.
//!
//! A managed file is never seen half-written. New content goes to a
//! temporary file in the same folder, gets its mode and owner while only its
//! creator can read it, is flushed to disk and renamed over the target; then
//! the folder is flushed so that the rename itself survives a power cut. A
//! daemon reading `/etc/postfix/main.cf` at any moment sees the old or the
//! new file, and after a crash the disk holds one of the two, never a mix.
//! Changes of mode, owner or group alone are made in place. `state: absent`
//! removes a file or a symbolic link, never a folder. A missing folder
//! is an error, not created: a manifest naming `/etc/postfix/virtual` on a
//! host without Postfix is more likely wrong than early.
//!
//! The agent is root, and the folders on the way to a managed file may
//! belong to someone else. The folder is opened from `/` one component at
//! a time without following a symbolic link, and everything after happens
//! relative to it (`fsutil`): a managed path through a link (`/srv/conf`
//! -> `/etc`) is refused with an error naming the link, for every desired
//! state, `absent` included; so is `/var/run/...` where `/var/run` links
//! to `/run` (write `/run/...`). A regular file with more than one hard
//! link is not managed either: it shares mode and owner with its other
//! names, which a `chmod` would change too.
//!
//! Plans show a content diff only for files anyone may read (`o+r` before
//! and after the change). Keys, password maps and `/etc/shadow` appear with
//! their size only: plans end up in CI logs and pull requests.
//!
//! `onChange` handlers run once per change. Before it touches a file, the
//! driver records the handlers the change makes due in its state directory;
//! `apply` returns them as [`Effect::HandlersDue`]. Whoever runs them runs
//! `Run` handlers with [`FileDriver::run_handler`], `Reload` and `Restart`
//! through the service driver, and reports each of those with
//! [`FileDriver::handler_ran`]; a handler reported run leaves the record. An
//! agent killed between the change and its handlers finds the record on its
//! next run: the file is up to date by then, but its plan shows the handlers
//! as still due and the next apply returns them first. Handlers due from an
//! earlier change and due again from a new one run once: they act on the
//! file as it is now. A change that fails keeps its handlers recorded (the
//! file may have changed before the failure); running a handler once too
//! often is harmless, never running it is not.
//!
//! ```no_run
//! # async fn f(file: &mailctl_schemas::model::ManagedFile) -> Result<(), mailctl_agent::Error> {
//! use mailctl_agent::files::FileDriver;
//! use mailctl_agent::{Driver, Effect};
//! use mailctl_schemas::model::Handler;
//!
//! let files = FileDriver::new("/var/lib/mailctl/files");
//! let observed = files.observe(file).await?;
//! let changes = files.diff(file, &observed)?;
//! for effect in files.apply(&changes).await? {
//!     let Effect::HandlersDue { path, handlers } = effect else { continue };
//!     for handler in &handlers {
//!         match handler {
//!             Handler::Run(argv) => files.run_handler(&path, argv).await?,
//!             Handler::Reload(_) | Handler::Restart(_) => {
//!                 // ... through the service driver, then:
//!                 files.handler_ran(&path, handler).await?;
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailctl_schemas::model::{Handler, ManagedFile};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};
use similar::TextDiff;

use crate::command::CommandFailure;
use crate::command::{argv_text, describe_handlers};
use crate::driver::{Driver, Effect, Resource, ResourceChange};
use crate::fsutil::{
    self, OpenDir, Owner, StateError, WalkError, blocking, sha256_hex, write_state_file,
};

/// Mode of a new file whose manifest sets none: what a package installs.
const DEFAULT_MODE: u32 = 0o644;
const WORLD_READABLE: u32 = 0o004;
/// A plan shows at most this many lines of a content diff.
const DIFF_LINES: usize = 40;
/// Lines of context around each changed line in a plan's content diff.
const DIFF_CONTEXT: usize = 2;
/// Files larger than this (before or after) are compared but not diffed.
const DIFF_LIMIT: u64 = 256 * 1024;
const COMPARE_CHUNK: usize = 64 * 1024;
const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Converges one managed file per desired state.
#[derive(Debug, Clone)]
pub struct FileDriver {
    state_dir: PathBuf,
    handler_timeout: Duration,
}

impl FileDriver {
    /// `state_dir` keeps the `onChange` handlers due but not run yet, one
    /// file per managed file; it is created (mode 0700) when first needed.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        FileDriver {
            state_dir: state_dir.into(),
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
        }
    }

    /// How long a `Run` handler may take before it is killed (default 60 s).
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Runs a `Run` handler due for the file at `path`: `argv` directly, no
    /// shell, killed after the handler timeout. On success the handler
    /// leaves the file's record of due handlers; on failure it stays there,
    /// and the error carries the last lines of its stderr.
    pub async fn run_handler(&self, path: &Path, argv: &[String]) -> Result<(), FileError> {
        crate::command::run_checked(argv, self.handler_timeout)
            .await
            .map_err(|failure| FileError::Handler {
                path: path.to_owned(),
                argv: argv_text(argv),
                failure,
            })?;
        self.handler_ran(path, &Handler::Run(argv.to_vec())).await
    }

    /// Records that `handler`, due for the file at `path`, ran: the next
    /// plan no longer lists it. For `Reload` and `Restart` handlers, which the
    /// service driver runs.
    pub async fn handler_ran(&self, path: &Path, handler: &Handler) -> Result<(), FileError> {
        let state_dir = self.state_dir.clone();
        let path = path.to_owned();
        let handler = handler.clone();
        blocking(move || {
            let mut due = read_due_handlers(&state_dir, &path)?;
            if let Some(at) = due.iter().position(|h| *h == handler) {
                due.remove(at);
                write_due_handlers(&state_dir, &path, &due)?;
            }
            Ok(())
        })
        .await
    }
}

/// A user or group as this host knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: u32,
    /// `None` when the id has no name here (a file unpacked from elsewhere).
    pub name: Option<String>,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.id),
        }
    }
}

/// Mode, owner and group of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits, including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub owner: Account,
    pub group: Account,
}

impl Metadata {
    /// Equal as the kernel sees it: names are only for people.
    fn same_as(&self, other: &Metadata) -> bool {
        self.mode == other.mode
            && self.owner.id == other.owner.id
            && self.group.id == other.group.id
    }

    /// `mode 0600 -> 0640`, `owner root -> postfix`, ... for what differs.
    fn differences(&self, to: &Metadata) -> Vec<String> {
        let mut what = Vec::new();
        if self.mode != to.mode {
            what.push(format!("mode {:04o} -> {:04o}", self.mode, to.mode));
        }
        if self.owner.id != to.owner.id {
            what.push(format!("owner {} -> {}", self.owner, to.owner));
        }
        if self.group.id != to.group.id {
            what.push(format!("group {} -> {}", self.group, to.group));
        }
        what
    }
}

impl fmt::Display for Metadata {
    /// `0644 root:root`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o} {}:{}", self.mode, self.owner, self.group)
    }
}

/// The content a file must have. Its `Debug` shows the size only, so that
/// secrets never reach a log through a debug print of a change or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContent(Arc<str>);

impl FileContent {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for FileContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileContent({})", bytes(self.0.len() as u64))
    }
}

/// How a plan shows a content change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentDiff {
    /// Unified diff lines (hunk headers, ` `, `-` and `+` lines), cut to 40
    /// with a last line saying how many more there are.
    Shown(Vec<String>),
    /// The file is, or is to become, unreadable to others: it may hold secrets.
    NotWorldReadable,
    /// The old or the new content is too large to diff.
    TooLarge,
    /// The old content is not UTF-8 text.
    NotText,
}

/// What a [`FileChange`] does on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// Write the file, which does not exist yet.
    Create {
        content: FileContent,
        metadata: Metadata,
    },
    /// Write new content over the file (a new file renamed over it), with
    /// `to` as its metadata; undeclared mode, owner and group are kept.
    Rewrite {
        content: FileContent,
        from_len: u64,
        from: Metadata,
        to: Metadata,
        diff: ContentDiff,
    },
    /// Change mode, owner or group in place; the content is right.
    SetMetadata { from: Metadata, to: Metadata },
    /// Remove the file (`state: absent`).
    Remove,
    /// Nothing to do on disk: an earlier apply changed the file and was
    /// stopped before all its handlers ran.
    RunPendingHandlers,
}

/// One planned change of a managed file, and the handlers due after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: PathBuf,
    pub action: FileAction,
    /// Handlers an earlier apply left due, in order.
    pub pending: Vec<Handler>,
    /// The manifest's `onChange` handlers, due because of this change.
    pub on_change: Vec<Handler>,
}

impl FileChange {
    /// The handlers due once the change is made, in order: those left
    /// pending first, then the manifest's that are not among them.
    pub fn handlers(&self) -> Vec<Handler> {
        let mut due = self.pending.clone();
        for handler in &self.on_change {
            if !due.contains(handler) {
                due.push(handler.clone());
            }
        }
        due
    }
}

impl ResourceChange for FileChange {
    type Subject = PathBuf;

    fn subject(&self) -> PathBuf {
        self.path.clone()
    }
}

impl fmt::Display for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.action {
            FileAction::Create { content, metadata } => write!(
                f,
                "+ file {path} ({}, {metadata})",
                bytes(content.as_bytes().len() as u64)
            )?,
            FileAction::Rewrite {
                content,
                from_len,
                from,
                to,
                diff,
            } => {
                write!(
                    f,
                    "~ file {path}: content ({from_len} -> {} bytes)",
                    content.as_bytes().len()
                )?;
                for difference in from.differences(to) {
                    write!(f, ", {difference}")?;
                }
                match diff {
                    ContentDiff::Shown(lines) => {
                        for line in lines {
                            write!(f, "\n    {line}")?;
                        }
                    }
                    ContentDiff::NotWorldReadable => f.write_str(
                        "\n    content differs (not shown: file is not world-readable)",
                    )?,
                    ContentDiff::TooLarge => write!(
                        f,
                        "\n    content differs (not shown: larger than {} KiB)",
                        DIFF_LIMIT / 1024
                    )?,
                    ContentDiff::NotText => {
                        f.write_str("\n    content differs (not shown: not UTF-8 text)")?
                    }
                }
            }
            FileAction::SetMetadata { from, to } => {
                write!(f, "~ file {path}: {}", from.differences(to).join(", "))?
            }
            FileAction::Remove => write!(f, "- file {path}")?,
            FileAction::RunPendingHandlers => write!(
                f,
                "~ file {path}: onChange handlers of an interrupted apply are still due"
            )?,
        }
        let handlers = self.handlers();
        if !handlers.is_empty() {
            write!(f, "\n    then: {}", describe_handlers(&handlers))?;
        }
        Ok(())
    }
}

/// What is at a managed path, as far as its desired state is concerned.
#[derive(Debug, Clone)]
pub struct ObservedFile {
    /// The declared owner and group, resolved on this host.
    owner: Option<Account>,
    group: Option<Account>,
    /// Who a new file belongs to when the manifest names nobody: the agent.
    creator: (Account, Account),
    /// The folder a present file needs, when it does not exist.
    missing_parent: Option<PathBuf>,
    existing: Option<ExistingFile>,
    /// Handlers an earlier apply left due.
    pending: Vec<Handler>,
}

#[derive(Debug, Clone)]
struct ExistingFile {
    /// `regular file`, `directory`, `symbolic link`, ...
    kind: &'static str,
    len: u64,
    metadata: Metadata,
    /// `None` when not compared: the file is to go, or is no regular file.
    content: Option<ContentCheck>,
}

const REGULAR: &str = "regular file";
const SYMLINK: &str = "symbolic link";

#[derive(Debug, Clone)]
enum ContentCheck {
    Same,
    /// The old content is kept only when a plan may show it.
    Differs {
        old: Option<Vec<u8>>,
    },
}

impl Driver for FileDriver {
    type Desired = ManagedFile;
    type Observed = ObservedFile;
    type Change = FileChange;
    type Error = FileError;

    fn resource(&self, desired: &ManagedFile) -> Resource {
        Resource::File {
            path: desired.path.clone(),
        }
    }

    async fn observe(&self, desired: &ManagedFile) -> Result<ObservedFile, FileError> {
        let desired = desired.clone();
        let state_dir = self.state_dir.clone();
        blocking(move || observe(&desired, &state_dir)).await
    }

    fn diff(
        &self,
        desired: &ManagedFile,
        observed: &ObservedFile,
    ) -> Result<Vec<FileChange>, FileError> {
        diff(desired, observed)
    }

    async fn apply(&self, changes: &[FileChange]) -> Result<Vec<Effect>, FileError> {
        let mut effects = Vec::new();
        for change in changes {
            let state_dir = self.state_dir.clone();
            let owned = change.clone();
            blocking(move || apply(&state_dir, &owned)).await?;
            let handlers = change.handlers();
            if !handlers.is_empty() {
                effects.push(Effect::HandlersDue {
                    path: change.path.clone(),
                    handlers,
                });
            }
        }
        Ok(effects)
    }

    async fn verify(&self, desired: &ManagedFile) -> Result<Vec<FileChange>, FileError> {
        let observed = self.observe(desired).await?;
        let mut pending = self.diff(desired, &observed)?;
        // The handlers an apply just returned are recorded until they ran;
        // they are the caller's to run now, not a difference on disk.
        pending.retain(|change| change.action != FileAction::RunPendingHandlers);
        Ok(pending)
    }
}

fn observe(desired: &ManagedFile, state_dir: &Path) -> Result<ObservedFile, FileError> {
    let path = &desired.path;
    let owner = desired
        .owner
        .as_deref()
        .map(|name| user_named(path, name))
        .transpose()?;
    let group = desired
        .group
        .as_deref()
        .map(|name| group_named(path, name))
        .transpose()?;
    let creator = (
        user_with_id(nix::unistd::geteuid().as_raw()),
        group_with_id(nix::unistd::getegid().as_raw()),
    );
    let (parent, name) = parent_and_name(path)?;
    let mut missing_parent = None;
    let existing = match OpenDir::open(parent) {
        Ok(folder) => match folder.stat(name) {
            Ok(Some(found)) => Some(existing_file(desired, &folder, name, &found)?),
            Ok(None) => None,
            Err(error) => return Err(file_error(path, "read its metadata", error)),
        },
        Err(WalkError::Missing { .. }) => {
            if desired.content.is_some() {
                missing_parent = Some(parent.to_owned());
            }
            None
        }
        Err(error) => return Err(folder_error(path, error)),
    };
    Ok(ObservedFile {
        owner,
        group,
        creator,
        missing_parent,
        existing,
        pending: read_due_handlers(state_dir, path)?,
    })
}

fn existing_file(
    desired: &ManagedFile,
    folder: &OpenDir,
    name: &OsStr,
    found: &FileStat,
) -> Result<ExistingFile, FileError> {
    let kind = match fsutil::file_type(found) {
        SFlag::S_IFREG => REGULAR,
        SFlag::S_IFLNK => SYMLINK,
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        _ => "device",
    };
    refuse_hard_links(&desired.path, kind, found)?;
    let metadata = metadata_of(found);
    let len = found.st_size as u64;
    let content = match &desired.content {
        Some(wanted) if kind == REGULAR => Some(compare(
            &desired.path,
            folder,
            name,
            wanted.as_bytes(),
            len,
            showable(&desired.path, desired.mode, metadata.mode),
        )?),
        _ => None,
    };
    Ok(ExistingFile {
        kind,
        len,
        metadata,
        content,
    })
}

fn metadata_of(found: &FileStat) -> Metadata {
    Metadata {
        mode: found.st_mode & 0o7777,
        owner: user_with_id(found.st_uid),
        group: group_with_id(found.st_gid),
    }
}

/// A regular file with more than one name shares its inode, mode and owner
/// with the others: a `chmod 0666` of `/srv/x`, hard-linked to
/// `/etc/shadow`, would open up `/etc/shadow`. Such a file is not managed,
/// whatever its desired state, so the rule is the same for every change.
fn refuse_hard_links(path: &Path, kind: &str, found: &FileStat) -> Result<(), FileError> {
    if kind == REGULAR && found.st_nlink > 1 {
        // `nlink_t` is 64 bits on x86_64, 32 on aarch64.
        #[allow(clippy::unnecessary_cast)]
        let links = found.st_nlink as u64;
        return Err(FileError::HardLinked {
            path: path.to_owned(),
            links,
        });
    }
    Ok(())
}

/// Whether a plan may show the content: anyone can read the file now and
/// still can afterwards — its mode lets others read it, and every folder
/// above it lets others through (a 0644 file in a 0700 folder is private).
fn showable(path: &Path, desired_mode: Option<u32>, existing_mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    const OTHERS_SEARCH: u32 = 0o001;
    existing_mode & WORLD_READABLE != 0
        && desired_mode.is_none_or(|mode| mode & WORLD_READABLE != 0)
        && path.ancestors().skip(1).all(|folder| {
            fs::symlink_metadata(folder).is_ok_and(|m| m.permissions().mode() & OTHERS_SEARCH != 0)
        })
}

/// Compares the file with `wanted`, reading no more than needed: nothing
/// when the sizes differ, up to the first difference otherwise; all of it
/// only when a plan will show the difference.
fn compare(
    path: &Path,
    folder: &OpenDir,
    name: &OsStr,
    wanted: &[u8],
    len: u64,
    showable: bool,
) -> Result<ContentCheck, FileError> {
    let keep_old = showable && len <= DIFF_LIMIT && wanted.len() as u64 <= DIFF_LIMIT;
    if len != wanted.len() as u64 && !keep_old {
        return Ok(ContentCheck::Differs { old: None });
    }
    let read_error = |error| file_error(path, "read it", error);
    let mut file = folder.open_file(name).map_err(read_error)?;
    if keep_old {
        let mut old = Vec::new();
        file.take(DIFF_LIMIT + 1)
            .read_to_end(&mut old)
            .map_err(read_error)?;
        return Ok(if old == wanted {
            ContentCheck::Same
        } else {
            ContentCheck::Differs { old: Some(old) }
        });
    }
    let mut chunk = vec![0; COMPARE_CHUNK];
    let mut offset = 0;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(read_error(error)),
        };
        if n == 0 {
            return Ok(if offset == wanted.len() {
                ContentCheck::Same
            } else {
                ContentCheck::Differs { old: None }
            });
        }
        if wanted.get(offset..offset + n) != Some(&chunk[..n]) {
            return Ok(ContentCheck::Differs { old: None });
        }
        offset += n;
    }
}

fn diff(desired: &ManagedFile, observed: &ObservedFile) -> Result<Vec<FileChange>, FileError> {
    let path = &desired.path;
    let action = match (&desired.content, &observed.existing) {
        (Some(content), existing) => {
            if let Some(parent) = &observed.missing_parent {
                return Err(FileError::ParentMissing {
                    path: path.clone(),
                    parent: parent.clone(),
                });
            }
            match existing {
                None => Some(FileAction::Create {
                    content: FileContent(content.as_str().into()),
                    metadata: Metadata {
                        mode: desired.mode.unwrap_or(DEFAULT_MODE),
                        owner: observed.owner.clone().unwrap_or(observed.creator.0.clone()),
                        group: observed.group.clone().unwrap_or(observed.creator.1.clone()),
                    },
                }),
                Some(existing) => diff_existing(desired, content, observed, existing)?,
            }
        }
        (None, None) => None,
        (None, Some(existing)) if existing.kind == REGULAR || existing.kind == SYMLINK => {
            Some(FileAction::Remove)
        }
        (None, Some(existing)) => {
            return Err(FileError::NotRegular {
                path: path.clone(),
                kind: existing.kind,
            });
        }
    };
    let change = match action {
        Some(action) => FileChange {
            path: path.clone(),
            action,
            pending: observed.pending.clone(),
            on_change: desired.on_change.clone(),
        },
        None if !observed.pending.is_empty() => FileChange {
            path: path.clone(),
            action: FileAction::RunPendingHandlers,
            pending: observed.pending.clone(),
            on_change: Vec::new(),
        },
        None => return Ok(Vec::new()),
    };
    Ok(vec![change])
}

fn diff_existing(
    desired: &ManagedFile,
    content: &str,
    observed: &ObservedFile,
    existing: &ExistingFile,
) -> Result<Option<FileAction>, FileError> {
    if existing.kind != REGULAR {
        return Err(FileError::NotRegular {
            path: desired.path.clone(),
            kind: existing.kind,
        });
    }
    let from = existing.metadata.clone();
    let to = Metadata {
        mode: desired.mode.unwrap_or(from.mode),
        owner: observed.owner.clone().unwrap_or(from.owner.clone()),
        group: observed.group.clone().unwrap_or(from.group.clone()),
    };
    Ok(match &existing.content {
        Some(ContentCheck::Differs { old }) => Some(FileAction::Rewrite {
            content: FileContent(content.into()),
            from_len: existing.len,
            diff: content_diff(
                old.as_deref(),
                content,
                existing.len,
                showable(&desired.path, desired.mode, from.mode),
            ),
            from,
            to,
        }),
        // A regular file with declared content is always compared.
        Some(ContentCheck::Same) | None => {
            (!from.same_as(&to)).then_some(FileAction::SetMetadata { from, to })
        }
    })
}

fn content_diff(old: Option<&[u8]>, new: &str, old_len: u64, showable: bool) -> ContentDiff {
    if !showable {
        return ContentDiff::NotWorldReadable;
    }
    if old_len > DIFF_LIMIT || new.len() as u64 > DIFF_LIMIT {
        return ContentDiff::TooLarge;
    }
    let Some(Ok(old)) = old.map(std::str::from_utf8) else {
        return ContentDiff::NotText;
    };
    let diff = TextDiff::from_lines(old, new);
    let mut unified = diff.unified_diff();
    unified.context_radius(DIFF_CONTEXT);
    let text = unified.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take(DIFF_LINES)
        .map(|l| (*l).to_owned())
        .collect();
    if lines.len() > DIFF_LINES {
        shown.push(format!("... {} more diff lines", lines.len() - DIFF_LINES));
    }
    ContentDiff::Shown(shown)
}

fn apply(state_dir: &Path, change: &FileChange) -> Result<(), FileError> {
    let path = &change.path;
    // Recorded before the change: once the file changed, its handlers are
    // due even if the agent dies right after.
    let handlers = change.handlers();
    if handlers != change.pending {
        write_due_handlers(state_dir, path, &handlers)?;
    }
    if change.action == FileAction::RunPendingHandlers {
        return Ok(());
    }
    // Opened again, not taken from the plan: a folder on the way may have
    // been swapped for a link since.
    let (parent, name) = parent_and_name(path)?;
    let folder = OpenDir::open(parent).map_err(|error| match error {
        WalkError::Missing { .. } => FileError::ParentMissing {
            path: path.clone(),
            parent: parent.to_owned(),
        },
        error => folder_error(path, error),
    })?;
    match &change.action {
        FileAction::Create { content, metadata }
        | FileAction::Rewrite {
            content,
            to: metadata,
            ..
        } => {
            let owner = Owner {
                uid: metadata.owner.id,
                gid: metadata.group.id,
                name: format!("{}:{}", metadata.owner, metadata.group),
            };
            folder
                .replace(name, content.as_bytes(), metadata.mode, Some(&owner))
                .map_err(|step| file_error(path, step.what, step.source))
        }
        FileAction::SetMetadata { from, to } => set_metadata(path, &folder, name, from, to),
        FileAction::Remove => remove(path, &folder, name),
        FileAction::RunPendingHandlers => Ok(()),
    }
}

/// Changes owner, group and mode of the file itself (never what a symlink
/// in its place points to), keeping its content and inode.
fn set_metadata(
    path: &Path,
    folder: &OpenDir,
    name: &OsStr,
    from: &Metadata,
    to: &Metadata,
) -> Result<(), FileError> {
    let file = folder
        .open_file(name)
        .map_err(|error| file_error(path, "open it", error))?;
    // The file as opened now, not as planned: another name may have been
    // linked to it since.
    let found = nix::sys::stat::fstat(&file)
        .map_err(|errno| file_error(path, "read its metadata", errno.into()))?;
    if fsutil::file_type(&found) != SFlag::S_IFREG {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: "special file",
        });
    }
    refuse_hard_links(path, REGULAR, &found)?;
    let chown = from.owner.id != to.owner.id || from.group.id != to.group.id;
    if chown {
        nix::unistd::fchown(
            &file,
            (from.owner.id != to.owner.id).then_some(Uid::from_raw(to.owner.id)),
            (from.group.id != to.group.id).then_some(Gid::from_raw(to.group.id)),
        )
        .map_err(|errno| {
            let error = io::Error::from(errno);
            let what = fsutil::chown_what(&format!("{}:{}", to.owner, to.group), &error);
            file_error(path, what, error)
        })?;
    }
    // Changing the owner clears setuid and setgid: set the mode after.
    if from.mode != to.mode || (chown && to.mode & 0o6000 != 0) {
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(to.mode)).map_err(|errno| {
            file_error(
                path,
                format!("set its mode to {:04o}", to.mode),
                errno.into(),
            )
        })?;
    }
    file.sync_all()
        .map_err(|error| file_error(path, "flush it to disk", error))
}

/// Removes the file or link `name` from `folder`, never a folder, never a
/// file with other names.
fn remove(path: &Path, folder: &OpenDir, name: &OsStr) -> Result<(), FileError> {
    match folder.stat(name) {
        Ok(Some(found)) if fsutil::file_type(&found) == SFlag::S_IFREG => {
            refuse_hard_links(path, REGULAR, &found)?;
        }
        Ok(_) => {}
        Err(error) => return Err(file_error(path, "read its metadata", error)),
    }
    match folder.remove_file(name) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(error) => return Err(file_error(path, "remove it", error)),
    }
    folder.sync().map_err(|error| {
        file_error(
            path,
            format!("flush its folder {}", folder.path().display()),
            error,
        )
    })
}

/// The folder and the name of a managed path (validated absolute, so there
/// are both).
fn parent_and_name(path: &Path) -> Result<(&Path, &OsStr), FileError> {
    fsutil::split(path).map_err(|error| file_error(path, "name its folder", error))
}

/// Why the folder of a managed file could not be opened.
fn folder_error(path: &Path, error: WalkError) -> FileError {
    match error {
        WalkError::Symlink { component, target } => FileError::ThroughSymlink {
            path: path.to_owned(),
            link: component,
            target,
        },
        error => file_error(path, "open its folder", error.into()),
    }
}

fn file_error(path: &Path, what: impl Into<String>, source: io::Error) -> FileError {
    FileError::Io {
        path: path.to_owned(),
        what: what.into(),
        source,
    }
}

fn user_named(path: &Path, name: &str) -> Result<Account, FileError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(Account {
            id: user.uid.as_raw(),
            name: Some(user.name),
        }),
        Ok(None) => Err(FileError::UnknownAccount {
            path: path.to_owned(),
            field: "owner",
            name: name.to_owned(),
        }),
        Err(errno) => Err(file_error(
            path,
            format!("look up user {name}"),
            errno.into(),
        )),
    }
}

fn group_named(path: &Path, name: &str) -> Result<Account, FileError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(Account {
            id: group.gid.as_raw(),
            name: Some(group.name),
        }),
        Ok(None) => Err(FileError::UnknownAccount {
            path: path.to_owned(),
            field: "group",
            name: name.to_owned(),
        }),
        Err(errno) => Err(file_error(
            path,
            format!("look up group {name}"),
            errno.into(),
        )),
    }
}

/// The user with this id; a failed lookup only costs the name.
fn user_with_id(id: u32) -> Account {
    Account {
        id,
        name: User::from_uid(Uid::from_raw(id))
            .ok()
            .flatten()
            .map(|u| u.name),
    }
}

fn group_with_id(id: u32) -> Account {
    Account {
        id,
        name: Group::from_gid(Gid::from_raw(id))
            .ok()
            .flatten()
            .map(|g| g.name),
    }
}

// ------------------------------------------------------------ due handlers

/// The state file listing the handlers due for one managed file.
#[derive(Debug, Serialize, Deserialize)]
struct DueHandlers {
    path: PathBuf,
    handlers: Vec<StoredHandler>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum StoredHandler {
    Run(Vec<String>),
    Reload(String),
    Restart(String),
}

impl From<&Handler> for StoredHandler {
    fn from(handler: &Handler) -> Self {
        match handler {
            Handler::Run(argv) => StoredHandler::Run(argv.clone()),
            Handler::Reload(service) => StoredHandler::Reload(service.clone()),
            Handler::Restart(service) => StoredHandler::Restart(service.clone()),
        }
    }
}

impl From<StoredHandler> for Handler {
    fn from(handler: StoredHandler) -> Self {
        match handler {
            StoredHandler::Run(argv) => Handler::Run(argv),
            StoredHandler::Reload(service) => Handler::Reload(service),
            StoredHandler::Restart(service) => Handler::Restart(service),
        }
    }
}

/// One state file per managed file, named by a hash of its path: paths may
/// be longer than a file name can be.
fn due_handlers_file(state_dir: &Path, path: &Path) -> PathBuf {
    state_dir.join(format!(
        "due-handlers-{}.json",
        sha256_hex(path.as_os_str().as_encoded_bytes())
    ))
}

fn read_due_handlers(state_dir: &Path, path: &Path) -> Result<Vec<Handler>, FileError> {
    let file = due_handlers_file(state_dir, path);
    let text = match fs::read(&file) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FileError::State(StateError::Io {
                path: file,
                what: "read it".into(),
                source,
            }));
        }
    };
    let invalid = |detail: String| {
        FileError::State(StateError::Invalid {
            path: file.clone(),
            detail,
            hint: "it lists onChange handlers still due for a managed file: run them by hand, then remove it",
        })
    };
    let due: DueHandlers = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    if due.path != path {
        return Err(invalid(format!("it is about {}", due.path.display())));
    }
    Ok(due.handlers.into_iter().map(Handler::from).collect())
}

fn write_due_handlers(
    state_dir: &Path,
    path: &Path,
    handlers: &[Handler],
) -> Result<(), FileError> {
    let file = due_handlers_file(state_dir, path);
    if handlers.is_empty() {
        return match fs::remove_file(&file) {
            Ok(()) => OpenDir::open_as_named(state_dir)
                .and_then(|folder| folder.sync())
                .map_err(|source| {
                    FileError::State(StateError::Io {
                        path: file,
                        what: "flush the state directory after removing it".into(),
                        source,
                    })
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FileError::State(StateError::Io {
                path: file,
                what: "remove it".into(),
                source,
            })),
        };
    }
    let due = DueHandlers {
        path: path.to_owned(),
        handlers: handlers.iter().map(StoredHandler::from).collect(),
    };
    let text = serde_json::to_vec_pretty(&due).map_err(|error| {
        FileError::State(StateError::Io {
            path: file.clone(),
            what: "encode it".into(),
            source: error.into(),
        })
    })?;
    Ok(write_state_file(state_dir, &file, &text)?)
}

// ----------------------------------------------------------------- handlers

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

/// What can go wrong converging a managed file. Every message names the
/// file and, where there is one, the way out.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "file {}: folder {} does not exist; create it first (the package that reads the file usually does) or fix `path`: mailctl does not create folders",
        path.display(),
        parent.display()
    )]
    ParentMissing { path: PathBuf, parent: PathBuf },
    #[error(
        "file {}: is a {kind}, not a regular file; mailctl manages regular files only: remove it by hand or fix `path`",
        path.display()
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "file {}: {} is a symbolic link (to {}); mailctl follows no link in the folders of a managed file (whoever owns the link would choose where root writes): write `path` without it, or replace the link by a folder",
        path.display(),
        link.display(),
        target.display()
    )]
    ThroughSymlink {
        path: PathBuf,
        /// The component of the path that is a link.
        link: PathBuf,
        target: PathBuf,
    },
    #[error(
        "file {}: has {links} hard links; mailctl manages only files with one name (a change of mode or owner would change the other names too): find them with `find / -xdev -samefile {}` and remove them, or fix `path`",
        path.display(),
        path.display()
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error(
        "file {}: no {kind} {name} on this host; create it first (the package of the service usually does) or fix `{field}`",
        path.display(),
        kind = if *field == "owner" { "user" } else { "group" }
    )]
    UnknownAccount {
        path: PathBuf,
        /// `owner` or `group`, as the manifest calls it.
        field: &'static str,
        name: String,
    },
    #[error("file {}: cannot {what}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("file {}: onChange handler `{argv}` {failure}", path.display())]
    Handler {
        path: PathBuf,
        argv: String,
        failure: CommandFailure,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl FileError {
    /// Whether trying again, with the host as it is, can help: a path
    /// through a link, a file with other names, or a folder where the file
    /// should be is refused the same way until someone changes the host or
    /// the manifest.
    pub fn retry_can_help(&self) -> bool {
        !matches!(
            self,
            FileError::ThroughSymlink { .. }
                | FileError::HardLinked { .. }
                | FileError::NotRegular { .. }
        )
    }
}
