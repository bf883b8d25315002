//! File system steps for a root agent in folders other users may own.
//!
//! Between the moment the agent looks at a path and the moment it writes,
//! renames or removes there, whoever owns a folder on the way can replace
//! it by a symbolic link: `/home/u/dir` -> `/etc`, a maildir's `cur/` ->
//! `/etc`, `tmp/KEY` -> `/etc/passwd`. A path handed to `open(2)` or
//! `rename(2)` follows such a link, and root writes where the link's owner
//! chose. So every step here works on an [`OpenDir`]: the folder is
//! opened one component at a time with `O_NOFOLLOW | O_DIRECTORY` (a link
//! anywhere on the way is refused, and named), and what happens in it goes
//! through `openat`, `renameat`, `unlinkat` and `mkdirat` on that
//! descriptor. Swapping a folder for a link after it was opened changes
//! nothing: the descriptor still names the folder that was checked. Files
//! are created `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted name is an error,
//! never followed), and their mode and owner are set through the open file,
//! never by path.
//!
//! This walk needs no `openat2(2)` (Linux 5.6), so it works on the older
//! kernels mail servers still run, and it can say which component was a
//! link. Roots the agent's own configuration names (its state directory, a
//! sync job's destination) are opened as named, links included: the admin
//! chose them; what lies beneath them is not the admin's to vouch for.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

const FOLDER_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Why a folder could not be opened without following a link.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    #[error("{} is a symbolic link (to {}), which is not followed", component.display(), target.display())]
    Symlink { component: PathBuf, target: PathBuf },
    #[error("{} is not a folder", component.display())]
    NotAFolder { component: PathBuf },
    #[error("{} does not exist", component.display())]
    Missing { component: PathBuf },
    #[error("{} has `.` or `..` components", path.display())]
    NotPlain { path: PathBuf },
    #[error("cannot open {}: {source}", component.display())]
    Io {
        component: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<WalkError> for io::Error {
    /// For callers that report plain I/O errors (sync): the message names
    /// the component.
    fn from(error: WalkError) -> io::Error {
        let kind = match &error {
            WalkError::Missing { .. } => io::ErrorKind::NotFound,
            WalkError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error.to_string())
    }
}

/// An open folder, and the path it was opened by (for messages).
#[derive(Debug)]
pub(crate) struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl OpenDir {
    /// Opens the absolute `path` from `/`, following no symbolic link.
    pub(crate) fn open(path: &Path) -> Result<OpenDir, WalkError> {
        let root =
            nix::fcntl::open("/", FOLDER_FLAGS, Mode::empty()).map_err(|errno| WalkError::Io {
                component: PathBuf::from("/"),
                source: errno.into(),
            })?;
        let root = OpenDir {
            fd: root,
            path: PathBuf::from("/"),
        };
        let relative = path.strip_prefix("/").map_err(|_| WalkError::NotPlain {
            path: path.to_owned(),
        })?;
        let mut opened = root.walk(relative, None)?;
        opened.path = path.to_owned();
        Ok(opened)
    }

    /// Opens `path` as named, following links in it: for roots the agent's
    /// configuration names.
    pub(crate) fn open_as_named(path: &Path) -> io::Result<OpenDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| with_path(errno.into(), path))?;
        Ok(OpenDir {
            fd,
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The folder `relative` (plain names separated by `/`) beneath this
    /// one, following no link. An empty `relative` is this folder again.
    pub(crate) fn subfolder(&self, relative: impl AsRef<Path>) -> Result<OpenDir, WalkError> {
        self.walk(relative.as_ref(), None)
    }

    /// [`subfolder`](Self::subfolder), creating what is missing (mode 0777
    /// less the umask, as `mkdir -p` does).
    pub(crate) fn create_subfolder(
        &self,
        relative: impl AsRef<Path>,
    ) -> Result<OpenDir, WalkError> {
        self.walk(relative.as_ref(), Some(Mode::from_bits_truncate(0o777)))
    }

    fn walk(&self, relative: &Path, create: Option<Mode>) -> Result<OpenDir, WalkError> {
        let mut path = self.path.clone();
        let mut fd =
            nix::fcntl::openat(&self.fd, ".", FOLDER_FLAGS, Mode::empty()).map_err(|errno| {
                WalkError::Io {
                    component: path.clone(),
                    source: errno.into(),
                }
            })?;
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(WalkError::NotPlain {
                    path: self.path.join(relative),
                });
            };
            path.push(name);
            fd = open_step(&fd, name, &path, create)?;
        }
        Ok(OpenDir { fd, path })
    }

    /// What `name` is, not following a link; `None` when there is nothing.
    pub(crate) fn stat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Opens the file `name` for reading; a link there is refused
    /// (`ELOOP`), a FIFO does not block.
    pub(crate) fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// Creates the file `name`, which must not exist (not even as a
    /// dangling link), for writing.
    pub(crate) fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Renames `from` here to `to` in `into`, replacing what is there.
    pub(crate) fn rename(&self, from: &OsStr, into: &OpenDir, to: &OsStr) -> io::Result<()> {
        nix::fcntl::renameat(&self.fd, from, &into.fd, to).map_err(io::Error::from)
    }

    /// Renames `from` here to `to` in `into`, failing (`AlreadyExists`)
    /// rather than replacing anything (`RENAME_NOREPLACE`).
    pub(crate) fn rename_new(&self, from: &OsStr, into: &OpenDir, to: &OsStr) -> io::Result<()> {
        nix::fcntl::renameat2(&self.fd, from, &into.fd, to, RenameFlags::RENAME_NOREPLACE)
            .map_err(io::Error::from)
    }

    /// Removes the file (or link) `name`, never a folder; `false` when it
    /// was gone already.
    pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<bool> {
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Flushes the folder itself: renames and removals in it survive a
    /// power cut.
    pub(crate) fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(io::Error::from)
    }

    /// The names in the folder (without `.` and `..`).
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", FOLDER_FLAGS, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(&name).to_owned());
            }
        }
        Ok(names)
    }

    /// Sets `name` to `bytes` so that a reader sees the old or the new
    /// content, never a mix, also after a crash: a temporary file created
    /// here (`O_EXCL | O_NOFOLLOW`, mode 0600 while it is written), owner
    /// and mode set on the open file, flushed, renamed over `name`, folder
    /// flushed. With `owner` `None` the file belongs to the agent.
    /// Temporaries an earlier crash left are removed first.
    pub(crate) fn replace(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        owner: Option<&Owner>,
    ) -> Result<(), FailedStep> {
        static TEMPORARIES: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(".{}.mailctl-", name.to_string_lossy());
        self.remove_stale_temporaries(&prefix);
        let temporary = OsString::from(format!(
            "{prefix}{}-{}.tmp",
            std::process::id(),
            TEMPORARIES.fetch_add(1, Ordering::Relaxed)
        ));
        let step = |what: String| {
            let temporary = self.path.join(&temporary).display().to_string();
            move |source| FailedStep {
                what: format!("{what} (temporary file {temporary})"),
                source,
            }
        };
        let mut file = self
            .create_new(&temporary, 0o600)
            .map_err(step("create a temporary file next to it".into()))?;
        let written = (|| {
            file.write_all(bytes).map_err(step("write it".into()))?;
            if let Some(owner) = owner {
                nix::unistd::fchown(
                    &file,
                    Some(Uid::from_raw(owner.uid)),
                    Some(Gid::from_raw(owner.gid)),
                )
                .map_err(|errno| {
                    let error = io::Error::from(errno);
                    step(chown_what(&owner.name, &error))(error)
                })?;
            }
            nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))
                .map_err(|errno| step(format!("set its mode to {mode:04o}"))(errno.into()))?;
            file.sync_all().map_err(step("flush it to disk".into()))?;
            self.rename(&temporary, self, name)
                .map_err(step("rename the new content over it".into()))
        })();
        if written.is_err() {
            // Best effort: a leftover is removed by the next write anyway.
            let _ = self.remove_file(&temporary);
        }
        written?;
        self.sync().map_err(|source| FailedStep {
            what: format!("flush its folder {}", self.path.display()),
            source,
        })
    }

    /// Removes temporaries of a write that a crash interrupted. A file is
    /// never written twice at once, so no other writer owns them.
    fn remove_stale_temporaries(&self, prefix: &str) {
        let Ok(names) = self.names() else {
            return;
        };
        for name in names {
            let text = name.to_string_lossy();
            if text.starts_with(prefix) && text.ends_with(".tmp") {
                // Best effort: one more leftover does no harm.
                let _ = self.remove_file(&name);
            }
        }
    }
}

/// One step into `name` below `at` (whose path with `name` is `path`).
fn open_step(
    at: &OwnedFd,
    name: &OsStr,
    path: &Path,
    create: Option<Mode>,
) -> Result<OwnedFd, WalkError> {
    let opened = match nix::fcntl::openat(at, name, FOLDER_FLAGS, Mode::empty()) {
        Err(Errno::ENOENT) if create.is_some() => {
            match nix::sys::stat::mkdirat(at, name, create.unwrap_or(Mode::empty())) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => {
                    return Err(WalkError::Io {
                        component: path.to_owned(),
                        source: errno.into(),
                    });
                }
            }
            nix::fcntl::openat(at, name, FOLDER_FLAGS, Mode::empty())
        }
        opened => opened,
    };
    match opened {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => Err(WalkError::Missing {
            component: path.to_owned(),
        }),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            let is_link = nix::sys::stat::fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|stat| {
                    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                });
            if is_link {
                let target = nix::fcntl::readlinkat(at, name).unwrap_or_default();
                Err(WalkError::Symlink {
                    component: path.to_owned(),
                    target: PathBuf::from(target),
                })
            } else {
                Err(WalkError::NotAFolder {
                    component: path.to_owned(),
                })
            }
        }
        Err(errno) => Err(WalkError::Io {
            component: path.to_owned(),
            source: errno.into(),
        }),
    }
}

/// Whether `stat` describes a regular file, a link, a folder, ...
pub(crate) fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// A step of writing a file that failed.
#[derive(Debug)]
pub(crate) struct FailedStep {
    pub(crate) what: String,
    pub(crate) source: io::Error,
}

impl fmt::Display for FailedStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl FailedStep {
    pub(crate) fn for_state_file(self, path: &Path) -> StateError {
        StateError::Io {
            path: path.to_owned(),
            what: self.what,
            source: self.source,
        }
    }
}

/// What can go wrong with a file in the agent's state directory (due
/// handlers, task records).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state file {}: cannot {what}; the agent needs a writable state directory",
        path.display()
    )]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("state file {} is not valid ({detail}); {hint}", path.display())]
    Invalid {
        path: PathBuf,
        detail: String,
        hint: &'static str,
    },
}

/// Who a written file is to belong to.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `postfix:postfix`, for messages.
    pub(crate) name: String,
}

/// What a failed `chown` tried, for its message: `give it to postfix:postfix`.
pub(crate) fn chown_what(name: &str, error: &io::Error) -> String {
    let hint = if error.kind() == io::ErrorKind::PermissionDenied {
        " (only root may give a file to another user)"
    } else {
        ""
    };
    format!("give it to {name}{hint}")
}

/// Replaces one of the agent's own files (state, ledgers, the desired-state
/// manifest) atomically ([`OpenDir::replace`]): owned by the agent, with
/// `mode`, in a folder its configuration names.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (folder, name) = split(path)?;
    OpenDir::open_as_named(folder)?
        .replace(name, bytes, mode, None)
        .map_err(|step| io::Error::new(step.source.kind(), step.to_string()))
}

/// Writes a file of the agent's own state (mode 0600) atomically, creating
/// the state directory (mode 0700) when needed.
pub(crate) fn write_state_file(
    state_dir: &Path,
    file: &Path,
    bytes: &[u8],
) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |what: String, source: io::Error| StateError::Io {
        path: file.to_owned(),
        what,
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| {
            failed(
                format!("create the state directory {}", state_dir.display()),
                source,
            )
        })?;
    let (folder, name) = split(file).map_err(|source| failed("name it".into(), source))?;
    let folder = OpenDir::open_as_named(folder)
        .map_err(|source| failed("open its folder".into(), source))?;
    folder
        .replace(name, bytes, 0o600, None)
        .map_err(|step| step.for_state_file(file))
}

/// The folder and the name of a file path.
pub(crate) fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok((parent, name))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )),
    }
}

pub(crate) fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Runs blocking file system work (reads, fsync) off the async threads, so
/// a slow disk does not hold up the netlink monitor or the API.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Seconds since the Unix epoch by the wall clock, for what is recorded for
/// people and later runs to read (a task's completion, a sync run's times,
/// the name of a damaged file set aside, a confirmation deadline that must
/// survive a restart). Waiting runs on tokio's clock, never on this.
#[allow(
    clippy::disallowed_methods,
    reason = "a recorded unix timestamp is wall-clock time"
)]
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Renames a damaged state file to `NAME.damaged-SECONDS` beside it, so an
/// admin can look at it and the agent never reads it again. `None` when
/// there was no such file.
pub(crate) fn set_aside(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{}", unix_now()));
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => Ok(Some(aside)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The hex SHA-256 of `bytes`: state files are named by it, for paths and
/// commands longer than a file name may be.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
