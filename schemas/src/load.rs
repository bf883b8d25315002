//! Reading manifests from disk: files, and folders walked recursively.
//!
//! This is the crate's only I/O. Unreadable paths become diagnostics like any
//! other problem, so `mailctl validate a.yaml missing.yaml` reports both.
//!
//! Manifests come from repositories anyone may send a pull request to, and
//! `validate -o yaml` inlines what they read: a path in a manifest must not
//! reach outside the folder it was found in.
//!
//! - Every folder is read once: folders are remembered by device and inode,
//!   so a symbolic link back up the tree (`a -> .`, `b -> ..`) is reported
//!   where it is instead of walked for ever, and a second name of a folder
//!   (`current -> 2026`) adds nothing read already. Symbolic links inside
//!   a walked folder are followed only while they stay inside the folder
//!   named on the command line; one leading out is an error at the link
//!   (silently leaving it out would drop the manifests it holds). Only
//!   regular files are read as manifests (a FIFO named `x.yaml` would block
//!   the walk).
//! - `source:` is resolved beneath the folder of its manifest: no absolute
//!   path, no `..`, no symbolic link leading out of the folder (links inside
//!   it are fine), only regular files (not `/dev/zero`, not a FIFO), at
//!   most [`SOURCE_LIMIT`] bytes. The file is opened by `openat2(2)` with
//!   `RESOLVE_BENEATH`, so the kernel checks every step of the resolution
//!   and a link swapped in meanwhile cannot lead elsewhere. Kernels before
//!   5.6 lack `openat2`: there the path is opened component by component,
//!   without following any symbolic link.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

use crate::budget::{self, Budget, Limit, ReadError};
use crate::diag::{Diagnostic, Diagnostics, file_origin};
use crate::model::ManifestSet;
use crate::validate::{ContentReader, Source, validate};

/// The largest file a `source:` field may name (1 MiB): configuration files
/// and keys are far smaller; what is larger belongs in a package.
pub const SOURCE_LIMIT: u64 = 1024 * 1024;

/// Read and validate every manifest under `paths` (files, or folders whose
/// `*.yaml`/`*.yml` files are read recursively, in name order).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<ManifestSet, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut sources = Vec::new();
    let mut budget = Budget::default();
    for path in paths {
        collect(path.as_ref(), &mut sources, &mut diags, &mut budget);
    }
    if budget.text_spent() {
        // A file did not fit (see `read_file`): what was read is only part of the load.
        return Err(diags);
    }
    let result = validate(&sources, &FileSystem);
    match result {
        Ok(set) if diags.is_empty() => Ok(set),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.append(more);
            Err(diags)
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn problem(diags: &mut Diagnostics, path: &Path, message: String, hint: &str) {
    diags.push(Diagnostic::new(file_origin(path), "", message).with_hint(hint));
}

/// A path named on the command line: a folder is walked, a file is read
/// whatever its name (`mailctl validate host.txt`).
fn collect(path: &Path, sources: &mut Vec<Source>, diags: &mut Diagnostics, budget: &mut Budget) {
    if budget.text_spent() {
        return;
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return problem(diags, path, format!("cannot read: {e}"), "check the path"),
    };
    if meta.is_dir() {
        let root = match fs::canonicalize(path) {
            Ok(root) => root,
            Err(e) => return problem(diags, path, format!("cannot read: {e}"), "check the path"),
        };
        let mut walk = Walk {
            root,
            read: HashSet::new(),
            within: Vec::new(),
            sources,
            diags,
            budget,
        };
        walk.folder(path, &meta);
    } else {
        read_file(path, sources, diags, budget);
    }
}

/// One folder named on the command line, walked.
struct Walk<'a> {
    /// The named folder, resolved: links may lead anywhere beneath it.
    root: PathBuf,
    /// Folders read so far, by device and inode.
    read: HashSet<(u64, u64)>,
    /// The folders being read, from the named one down to the current one.
    within: Vec<(u64, u64)>,
    sources: &'a mut Vec<Source>,
    diags: &'a mut Diagnostics,
    budget: &'a mut Budget,
}

impl Walk<'_> {
    fn folder(&mut self, path: &Path, meta: &fs::Metadata) {
        let id = (meta.dev(), meta.ino());
        self.read.insert(id);
        self.within.push(id);
        self.entries(path);
        self.within.pop();
    }

    fn entries(&mut self, path: &Path) {
        let mut entries: Vec<PathBuf> = match fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                return problem(
                    self.diags,
                    path,
                    format!("cannot list folder: {e}"),
                    "check permissions",
                );
            }
        };
        entries.sort();
        for entry in entries {
            if self.budget.text_spent() {
                return;
            }
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                self.entry(&entry);
            }
        }
    }

    fn entry(&mut self, entry: &Path) {
        let own = match fs::symlink_metadata(entry) {
            Ok(own) => own,
            // Gone since the folder was listed.
            Err(_) => return,
        };
        let meta = if own.file_type().is_symlink() {
            match fs::metadata(entry) {
                Ok(target) => target,
                Err(e) if is_manifest(entry) => {
                    return problem(
                        self.diags,
                        entry,
                        format!("cannot read: {e} (a symbolic link whose target cannot be read)"),
                        "fix or remove the link",
                    );
                }
                Err(_) => return,
            }
        } else {
            own.clone()
        };
        let wanted = meta.is_dir() || is_manifest(entry);
        if !wanted {
            return;
        }
        if own.file_type().is_symlink() && !self.leads_inside(entry) {
            return;
        }
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if self.within.contains(&id) {
                let target = fs::canonicalize(entry).unwrap_or_else(|_| entry.to_owned());
                return problem(
                    self.diags,
                    entry,
                    format!(
                        "symbolic link loop: this leads back to the folder {}, which holds it",
                        target.display()
                    ),
                    "remove the link: it leads back into a folder it is in, and would be walked for ever",
                );
            }
            // A second name of a folder read already (`current -> 2026`):
            // its manifests were read once, under the first name.
            if !self.read.contains(&id) {
                self.folder(entry, &meta);
            }
        } else if meta.is_file() {
            read_file(entry, self.sources, self.diags, self.budget);
        } else {
            problem(
                self.diags,
                entry,
                format!("not read: it is a {}, not a regular file", kind(&meta)),
                "manifests are regular files; remove it or rename it to something not ending in .yaml",
            );
        }
    }

    /// Whether the symbolic link `entry` resolves beneath the named
    /// folder; an error at the link when it does not.
    fn leads_inside(&mut self, entry: &Path) -> bool {
        match fs::canonicalize(entry) {
            Ok(target) if target.starts_with(&self.root) => true,
            Ok(target) => {
                problem(
                    self.diags,
                    entry,
                    format!(
                        "not read: a symbolic link to {}, outside the folder {}",
                        target.display(),
                        self.root.display()
                    ),
                    "links in a manifest folder may only lead inside it: copy what it points to into the folder, or name that path on the command line too",
                );
                false
            }
            Err(e) => {
                problem(
                    self.diags,
                    entry,
                    format!("cannot read: {e}"),
                    "fix or remove the link",
                );
                false
            }
        }
    }
}

/// Read one manifest file, no further than the load's text budget allows.
fn read_file(path: &Path, sources: &mut Vec<Source>, diags: &mut Diagnostics, budget: &mut Budget) {
    match budget::read_manifest(path, budget) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => sources.push(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(_) => problem(
                diags,
                path,
                "the file is not UTF-8 text".into(),
                "manifests are UTF-8 YAML",
            ),
        },
        Err(ReadError::OverBudget) => {
            let (message, hint) = Limit::TextBytes.describe(&budget.limits);
            // Nothing more is read (see `load_paths`).
            problem(diags, path, message, &hint);
        }
        Err(ReadError::Io(e)) => problem(
            diags,
            path,
            format!("cannot read: {e}"),
            "check the path and permissions",
        ),
    }
}

fn kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "folder"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Reads `source:` file content beneath the manifest's folder (see the
/// module documentation for what is refused).
#[derive(Debug, Clone, Copy)]
pub struct FileSystem;

impl ContentReader for FileSystem {
    fn read(&self, manifest: &Path, source: &str) -> Result<String, String> {
        let relative = Path::new(source);
        let mut components = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => components.push(name),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(
                        "`..` is not allowed: a source is a file inside the folder of its manifest or below it"
                            .into(),
                    );
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err("source must be a path relative to the manifest's folder".into());
                }
            }
        }
        if components.is_empty() {
            return Err("source names no file".into());
        }
        let base = match manifest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let full = base.join(relative);
        let folder = nix::fcntl::open(
            base,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open the manifest's folder {}: {e}", base.display()))?;
        let file = open_beneath(&folder, relative, &components).map_err(|why| match why {
            Errno::EXDEV => format!(
                "{} leads out of the manifest's folder {} through a symbolic link; only files inside it are read",
                full.display(),
                base.display()
            ),
            Errno::ELOOP => format!(
                "{} is reached through a symbolic link, which is not followed here (links leading out of the manifest's folder could not be told apart on this kernel)",
                full.display()
            ),
            errno => format!("{} ({})", std::io::Error::from(errno), full.display()),
        })?;
        let stat = nix::sys::stat::fstat(&file)
            .map_err(|e| format!("{} ({})", std::io::Error::from(e), full.display()))?;
        let file_type = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if file_type != SFlag::S_IFREG {
            let what = match file_type {
                SFlag::S_IFDIR => "a folder",
                SFlag::S_IFIFO => "a FIFO",
                SFlag::S_IFSOCK => "a socket",
                SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
                _ => "a special file",
            };
            return Err(format!("{} is {what}, not a regular file", full.display()));
        }
        // A hard link is another name of a file that may live anywhere on
        // the file system (a link to /etc/shadow is in the folder all the same).
        if stat.st_nlink > 1 {
            return Err(format!(
                "{} has {} names (hard links): it may be a file from outside the folder; copy the content into a file of its own",
                full.display(),
                stat.st_nlink
            ));
        }
        let mut bytes = Vec::new();
        fs::File::from(file)
            .take(SOURCE_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{e} ({})", full.display()))?;
        if bytes.len() as u64 > SOURCE_LIMIT {
            return Err(format!(
                "{} is larger than {} MiB, the limit for a source file; deploy large files another way (a package, a task)",
                full.display(),
                SOURCE_LIMIT / (1024 * 1024)
            ));
        }
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", full.display()))
    }
}

/// Opens `relative` (its normal `components`) beneath `folder`: by
/// `openat2(2)` confined to the folder, or, where the kernel has no
/// `openat2`, one component at a time without following symbolic links.
/// Opened non-blocking, so that a FIFO does not wait for a writer before
/// `fstat` tells what it is.
fn open_beneath(
    folder: &OwnedFd,
    relative: &Path,
    components: &[&std::ffi::OsStr],
) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(folder, relative, how) {
        // Not in this kernel, or refused by a seccomp filter that predates it.
        Err(Errno::ENOSYS | Errno::EPERM) => {}
        opened => return opened,
    }
    let mut at: Option<OwnedFd> = None;
    let (last, parents) = components.split_last().ok_or(Errno::ENOENT)?;
    for name in parents {
        let dir = at.as_ref().map_or(folder.as_fd(), |fd| fd.as_fd());
        at = Some(nix::fcntl::openat(
            dir,
            *name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
    }
    let dir = at.as_ref().map_or(folder.as_fd(), |fd| fd.as_fd());
    nix::fcntl::openat(dir, *last, flags | OFlag::O_NOFOLLOW, Mode::empty())
}
