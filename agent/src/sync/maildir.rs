//! Maildir facts (DESIGN.md §5): message names, folder listings and the
//! rename plan that lets rsync send only new messages.
//!
//! A message file lives in `new/UNIQ` or `cur/UNIQ:2,FLAGS`. The unique part
//! never changes; Dovecot may carry `,S=SIZE` and `,W=VSIZE` fields inside it,
//! which are not part of the message's identity. A folder is any directory
//! holding `cur/` or `new/` files: the root, every `.Folder` (Dovecot's
//! Maildir++ layout) and, for trees of many users, every user's maildir.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::rc::Rc;

use crate::fsutil::{OpenDir, WalkError, with_path};

/// Which of the two message directories a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sub {
    New,
    Cur,
}

impl Sub {
    pub fn dir(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// A message file name taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageName {
    /// The identity of the message: the part before `:`, without the
    /// Dovecot `,S=` / `,W=` fields.
    pub key: String,
    /// The part before `:` exactly as written (with `,S=`/`,W=`).
    pub base: String,
    /// `S=` field: the file size.
    pub size: Option<u64>,
    /// `W=` field: the size with CRLF line ends.
    pub vsize: Option<u64>,
    /// The flags after `:2,`, as written.
    pub flags: String,
}

impl MessageName {
    /// Parses a file name; `None` for names that are no message (dot files).
    pub fn parse(name: &str) -> Option<MessageName> {
        if name.is_empty() || name.starts_with('.') {
            return None;
        }
        let (base, info) = match name.split_once(':') {
            Some((base, info)) => (base, Some(info)),
            None => (name, None),
        };
        if base.is_empty() {
            return None;
        }
        let flags = info
            .and_then(|info| info.strip_prefix("2,"))
            .unwrap_or_default()
            .to_owned();
        let mut key = String::with_capacity(base.len());
        let (mut size, mut vsize) = (None, None);
        for (i, field) in base.split(',').enumerate() {
            if i > 0 {
                if let Some(n) = field.strip_prefix("S=").and_then(|n| n.parse().ok()) {
                    size = Some(n);
                    continue;
                }
                if let Some(n) = field.strip_prefix("W=").and_then(|n| n.parse().ok()) {
                    vsize = Some(n);
                    continue;
                }
                key.push(',');
            }
            key.push_str(field);
        }
        Some(MessageName {
            key,
            base: base.to_owned(),
            size,
            vsize,
            flags,
        })
    }
}

/// One message file as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sub: Sub,
    /// The file name, as on disk.
    pub name: String,
    /// Modification time, seconds since the epoch (the IMAP INTERNALDATE).
    pub mtime: i64,
    pub size: u64,
    /// The unique part ([`MessageName::key`]).
    pub key: String,
}

impl Message {
    /// `new/NAME` or `cur/NAME`.
    pub fn rel(&self) -> String {
        format!("{}/{}", self.sub.dir(), self.name)
    }
}

/// The messages of one maildir folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    pub messages: Vec<Message>,
}

impl Folder {
    /// Sorts the messages by unique part (then `new/` before `cur/`, then
    /// name): the order every comparison of two folders walks in.
    pub fn sort(&mut self) {
        self.messages
            .sort_unstable_by(|a, b| (&a.key, a.sub, &a.name).cmp(&(&b.key, b.sub, &b.name)));
    }
}

/// Two folders' messages (each sorted, see [`Folder::sort`]) side by side,
/// one unique part at a time: `(copies in a, copies in b)`, one of the two
/// empty when only one side has it. A merge of the sorted lists: no maps,
/// no copies.
fn pairs<'a>(
    a: &'a [Message],
    b: &'a [Message],
) -> impl Iterator<Item = (&'a [Message], &'a [Message])> {
    let same: fn(&Message, &Message) -> bool = |x, y| x.key == y.key;
    let mut a = a.chunk_by(same).peekable();
    let mut b = b.chunk_by(same).peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x[0].key.cmp(&y[0].key),
        };
        Some(match order {
            std::cmp::Ordering::Less => (a.next()?, &[][..]),
            std::cmp::Ordering::Greater => (&[][..], b.next()?),
            std::cmp::Ordering::Equal => (a.next()?, b.next()?),
        })
    })
}

impl Listing {
    /// The messages of one folder, none when the listing lacks it.
    fn messages(&self, folder: &str) -> &[Message] {
        self.folders.get(folder).map_or(&[], |f| &f.messages)
    }
}

/// Every maildir folder under one root, by path relative to the root (`""`
/// for the root itself, `.Sent`, `alice/Maildir/.Drafts`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub folders: BTreeMap<String, Folder>,
    /// Files that are no message (control files, caches), relative paths.
    pub other_files: Vec<String>,
    /// Directories under the root (`.Sent`, `.Sent/cur`, ...), relative
    /// paths; empty folders are folders too.
    pub dirs: BTreeSet<String>,
}

impl Listing {
    /// Builds a listing from `(relative path, mtime, size)` of every regular
    /// file under the root. Files in `tmp/` are in flight and left out.
    pub fn from_files<I, S>(files: I) -> Listing
    where
        I: IntoIterator<Item = (S, i64, u64)>,
        S: AsRef<str>,
    {
        let mut listing = Listing::default();
        for (path, mtime, size) in files {
            let path = path.as_ref();
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (dir, name),
                None => {
                    listing.other_files.push(path.to_owned());
                    continue;
                }
            };
            let (folder, sub) = match dir.rsplit_once('/') {
                Some((folder, sub)) => (folder, sub),
                None => ("", dir),
            };
            let sub = match sub {
                "cur" => Sub::Cur,
                "new" => Sub::New,
                "tmp" => continue,
                _ => {
                    listing.other_files.push(path.to_owned());
                    continue;
                }
            };
            let Some(parsed) = MessageName::parse(name) else {
                listing.other_files.push(path.to_owned());
                continue;
            };
            let message = Message {
                sub,
                name: name.to_owned(),
                mtime,
                size,
                key: parsed.key,
            };
            // Files come folder by folder: look up before allocating a name.
            match listing.folders.get_mut(folder) {
                Some(found) => found.messages.push(message),
                None => {
                    let mut new = Folder::default();
                    new.messages.push(message);
                    listing.folders.insert(folder.to_owned(), new);
                }
            }
        }
        for folder in listing.folders.values_mut() {
            folder.sort();
        }
        listing.other_files.sort();
        listing
    }

    /// Lists a local tree (symlinks are not followed), with every file's
    /// mtime and size. A missing root is an empty listing: the first run of
    /// a job starts from nothing.
    pub fn read_local(root: &Path) -> io::Result<Listing> {
        Listing::read_local_as(root, true)
    }

    /// [`read_local`](Self::read_local) without a `stat` of each file (mtime
    /// and size 0): what planning renames and removals needs, at a third of
    /// the cost.
    pub fn read_local_names(root: &Path) -> io::Result<Listing> {
        Listing::read_local_as(root, false)
    }

    fn read_local_as(root: &Path, with_stat: bool) -> io::Result<Listing> {
        let mut files = Vec::new();
        let mut dirs = BTreeSet::new();
        match fs::symlink_metadata(root) {
            Ok(_) => walk(root, String::new(), &mut files, &mut dirs)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut listing = if with_stat {
            Listing::from_files(stat_all(root, files)?)
        } else {
            Listing::from_files(files.into_iter().map(|path| (path, 0, 0)))
        };
        listing.dirs = dirs;
        Ok(listing)
    }

    /// Fills in mtime and size of the messages a folder holds more than
    /// one copy of (a names-only listing has none): which copy to keep
    /// goes by the date. Copies are rare, so are these `stat`s.
    pub fn stat_duplicates(&mut self, root: &Path) -> io::Result<()> {
        for (name, folder) in &mut self.folders {
            for copies in folder.messages.chunk_by_mut(|a, b| a.key == b.key) {
                if copies.len() < 2 {
                    continue;
                }
                for m in copies {
                    let path = root.join(join(name, &m.rel()));
                    match fs::symlink_metadata(&path) {
                        Ok(meta) => {
                            use std::os::unix::fs::MetadataExt;
                            (m.mtime, m.size) = (meta.mtime(), meta.size());
                        }
                        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                        Err(error) => return Err(with_path(error, &path)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses `find PATH -type f -printf '%P\t%Ts\t%s\n'` output (a
    /// fractional `%T@` is read too).
    pub fn from_find_output(text: &str) -> Listing {
        Listing::from_find_lines(text.lines())
    }

    /// [`from_find_output`](Self::from_find_output) of lines already split.
    /// A line `PATH/` (no tabs) is a directory.
    pub fn from_find_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Listing {
        let mut dirs = BTreeSet::new();
        let mut files = Vec::new();
        for line in lines {
            if let Some(dir) = line.strip_suffix('/').filter(|d| !d.contains('\t')) {
                if !dir.is_empty() {
                    dirs.insert(dir.to_owned());
                }
            } else if let Some(file) = parse_find_line(line) {
                files.push(file);
            }
        }
        let mut listing = Listing::from_files(files);
        listing.dirs = dirs;
        listing
    }

    pub fn message_count(&self) -> usize {
        self.folders.values().map(|f| f.messages.len()).sum()
    }
}

/// `path\tmtime\tsize`; `None` for anything else.
fn parse_find_line(line: &str) -> Option<(&str, i64, u64)> {
    let mut fields = line.rsplitn(3, '\t');
    let size = fields.next()?.parse().ok()?;
    let mtime = fields.next()?;
    let path = fields.next()?;
    let seconds = mtime.split('.').next()?.parse().ok()?;
    Some((path, seconds, size))
}

/// Collects the relative paths of the regular files and directories under
/// `dir`, names only (the type comes with the directory entry).
fn walk(
    dir: &Path,
    rel: String,
    files: &mut Vec<String>,
    dirs: &mut BTreeSet<String>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // A folder removed while we list it (a live source) is just gone.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if file_type.is_dir() {
            dirs.insert(child_rel.clone());
            walk(&entry.path(), child_rel, files, dirs)?;
        } else if file_type.is_file() {
            files.push(child_rel);
        }
    }
    Ok(())
}

/// `(path, mtime, size)` of each file, by a `stat` relative to its open
/// directory (no symlink followed), on several threads: the files come
/// directory by directory, so each thread opens a directory once per run
/// of its files. A file gone meanwhile (a live maildir) is left out.
fn stat_all(root: &Path, mut files: Vec<String>) -> io::Result<Vec<(String, i64, u64)>> {
    fn stat_chunk(root: &Path, chunk: &mut [String]) -> io::Result<Vec<(String, i64, u64)>> {
        let top = match OpenDir::open_as_named(root) {
            Ok(top) => top,
            // No root, no files (a first run; a live tree removed meanwhile).
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut described = Vec::with_capacity(chunk.len());
        let mut open: Option<(String, OpenDir)> = None;
        for path in chunk.iter_mut() {
            let (dir, name) = split_rel(path);
            if open.as_ref().is_none_or(|(d, _)| d != dir) {
                // A directory swapped for a link since the walk is not
                // followed: its files are left out like files gone.
                match top.subfolder(dir) {
                    Ok(opened) => open = Some((dir.to_owned(), opened)),
                    Err(WalkError::Missing { .. } | WalkError::Symlink { .. }) => {
                        open = None;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let Some((_, handle)) = &open else { continue };
            match handle.stat(name) {
                Ok(Some(stat)) => {
                    let (mtime, size) = (stat.st_mtime, stat.st_size as u64);
                    described.push((std::mem::take(path), mtime, size));
                }
                Ok(None) => {}
                Err(error) => return Err(with_path(error, &root.join(&*path))),
            }
        }
        Ok(described)
    }
    const PER_THREAD: usize = 8192;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(files.len().div_ceil(PER_THREAD))
        .max(1);
    if threads == 1 {
        return stat_chunk(root, &mut files);
    }
    let total = files.len();
    let chunk = total.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks_mut(chunk)
            .map(|part| scope.spawn(move || stat_chunk(root, part)))
            .collect();
        let mut all = Vec::with_capacity(total);
        for worker in workers {
            let part = worker
                .join()
                .map_err(|_| io::Error::other("a listing thread panicked"))??;
            all.extend(part);
        }
        Ok(all)
    })
}

/// One step of the rename plan, on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Rename `folder/from` to `folder/to` (both `new/NAME` or `cur/NAME`).
    Rename {
        folder: String,
        from: String,
        to: String,
    },
    /// Remove a second copy of a message already kept in the folder.
    RemoveDuplicate { folder: String, file: String },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Rename { folder, from, to } => {
                write!(f, "~ {} -> {}", join(folder, from), join(folder, to))
            }
            Step::RemoveDuplicate { folder, file } => {
                write!(f, "- {} (duplicate)", join(folder, file))
            }
        }
    }
}

/// `folder/rel`, or `rel` for the root folder.
pub fn join(folder: &str, rel: &str) -> String {
    if folder.is_empty() {
        rel.to_owned()
    } else {
        format!("{folder}/{rel}")
    }
}

/// The renames that make the destination name every message the way the
/// source does, and the removals that leave one file per unique part in
/// each folder. Messages only on the destination keep their names.
pub fn plan(source: &Listing, destination: &Listing) -> Vec<Step> {
    let mut steps = Vec::new();
    for (folder_name, folder) in &destination.folders {
        for (source_copies, copies) in pairs(source.messages(folder_name), &folder.messages) {
            if copies.is_empty() {
                continue;
            }
            let wanted = source_copies.first();
            // Keep the copy already at the wanted name; else one with the
            // source's mtime; else a cur/ one, else the first.
            let keep = wanted
                .and_then(|w| {
                    copies
                        .iter()
                        .position(|m| m.sub == w.sub && m.name == w.name)
                })
                .or_else(|| {
                    let mtime = wanted?.mtime;
                    copies.iter().position(|m| m.mtime == mtime)
                })
                .or_else(|| copies.iter().position(|m| m.sub == Sub::Cur))
                .unwrap_or(0);
            for (i, copy) in copies.iter().enumerate() {
                if i != keep {
                    steps.push(Step::RemoveDuplicate {
                        folder: folder_name.clone(),
                        file: copy.rel(),
                    });
                }
            }
            if let Some(wanted) = wanted {
                let kept = &copies[keep];
                if kept.sub != wanted.sub || kept.name != wanted.name {
                    steps.push(Step::Rename {
                        folder: folder_name.clone(),
                        from: kept.rel(),
                        to: wanted.rel(),
                    });
                }
            }
        }
    }
    steps
}

/// What rsync has to bring over, as paths relative to the root: every
/// source message whose unique part the destination folder lacks, every
/// file that is no message (Dovecot's control files; rsync skips those
/// that did not change), and the directories the destination lacks that no
/// listed file lies in (empty folders are folders; rsync makes the others
/// on the way, and listing those too makes it crawl). Messages both sides
/// have are not listed: renames took care of them.
/// `lacking` is [`lacking`]`(source, destination)`, which the caller
/// has already counted.
pub fn to_send(source: &Listing, destination: &Listing, lacking: Vec<String>) -> Vec<String> {
    let mut paths = lacking;
    paths.extend(source.other_files.iter().cloned());
    fn ancestors<'p>(paths: impl Iterator<Item = &'p str>) -> BTreeSet<&'p str> {
        let mut implied = BTreeSet::new();
        for path in paths {
            let mut rest = path;
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if !implied.insert(parent) {
                    break;
                }
                rest = parent;
            }
        }
        implied
    }
    let missing: Vec<&String> = {
        let implied = ancestors(paths.iter().map(String::as_str));
        source
            .dirs
            .iter()
            .filter(|dir| !destination.dirs.contains(*dir) && !implied.contains(dir.as_str()))
            .collect()
    };
    let parents = ancestors(missing.iter().map(|d| d.as_str()));
    let leaves: Vec<String> = missing
        .into_iter()
        .filter(|dir| !parents.contains(dir.as_str()))
        .cloned()
        .collect();
    paths.extend(leaves);
    paths
}

/// Source messages (as paths) the destination holds under the same name
/// but with another mtime or size: a copy made without its date (`cp`
/// without `-p`), or cut short. rsync's quick check sends them again.
pub fn stale(source: &Listing, destination: &Listing) -> Vec<String> {
    let mut paths = Vec::new();
    for (name, folder) in &source.folders {
        for (mine, theirs) in pairs(&folder.messages, destination.messages(name)) {
            for m in mine {
                let same = theirs.iter().find(|d| d.sub == m.sub && d.name == m.name);
                if same.is_some_and(|d| d.mtime != m.mtime || d.size != m.size) {
                    paths.push(join(name, &m.rel()));
                }
            }
        }
    }
    paths
}

/// Destination messages whose unique part the source folder does not have
/// (any more), as paths relative to the root.
pub fn only_on_destination(source: &Listing, destination: &Listing) -> Vec<String> {
    lacking(destination, source)
}

/// The messages of `listing` (as paths) whose unique part the same folder
/// of `other` does not have.
pub fn lacking(listing: &Listing, other: &Listing) -> Vec<String> {
    let mut paths = Vec::new();
    for (name, folder) in &listing.folders {
        for (mine, theirs) in pairs(&folder.messages, other.messages(name)) {
            if theirs.is_empty() {
                paths.extend(mine.iter().map(|m| join(name, &m.rel())));
            }
        }
    }
    paths
}

/// The bytes of the messages [`lacking`] names: what a run will send.
pub fn bytes_lacking(listing: &Listing, other: &Listing) -> u64 {
    let mut bytes = 0;
    for (name, folder) in &listing.folders {
        for (mine, theirs) in pairs(&folder.messages, other.messages(name)) {
            if theirs.is_empty() {
                bytes += mine.iter().map(|m| m.size).sum::<u64>();
            }
        }
    }
    bytes
}

/// The directories of one destination tree, each opened once for the
/// renames and removals in it, beneath the root and without following a
/// link (see `fsutil`): a user who owns a maildir and swaps its `cur/` for
/// a link to `/etc` between planning and renaming gets an error, not root
/// renaming or removing files in `/etc`.
struct Tree {
    root: Rc<OpenDir>,
    /// By path relative to the root; `None`: not there.
    dirs: HashMap<String, Option<Rc<OpenDir>>>,
}

impl Tree {
    /// The root as the job names it (links in that path are the admin's).
    fn open(root: &Path) -> io::Result<Tree> {
        Ok(Tree {
            root: Rc::new(OpenDir::open_as_named(root)?),
            dirs: HashMap::new(),
        })
    }

    /// The directory `rel` (`""` for the root), `None` when missing.
    fn dir(&mut self, rel: &str) -> io::Result<Option<Rc<OpenDir>>> {
        if rel.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(known) = self.dirs.get(rel) {
            return Ok(known.clone());
        }
        let opened = match self.root.subfolder(rel) {
            Ok(dir) => Some(Rc::new(dir)),
            Err(WalkError::Missing { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        self.dirs.insert(rel.to_owned(), opened.clone());
        Ok(opened)
    }

    /// The directory `rel`, created (with what is missing above it) when
    /// it is not there.
    fn create_dir(&mut self, rel: &str) -> io::Result<Rc<OpenDir>> {
        if let Some(dir) = self.dir(rel)? {
            return Ok(dir);
        }
        let created = Rc::new(self.root.create_subfolder(rel)?);
        self.dirs.insert(rel.to_owned(), Some(created.clone()));
        Ok(created)
    }

    /// Removes the file `rel`; `false` when it (or its directory) is gone.
    fn remove(&mut self, rel: &str) -> io::Result<bool> {
        let (dir, name) = split_rel(rel);
        match self.dir(dir)? {
            Some(dir) => dir
                .remove_file(name)
                .map_err(|e| with_path(e, &self.root.path().join(rel))),
            None => Ok(false),
        }
    }

    /// Renames `from` to `to` (both relative to the root) unless `to`
    /// exists (`AlreadyExists`); `false` when `from` is gone.
    fn rename_new(&mut self, from: &str, to: &str) -> io::Result<bool> {
        let (from_dir, from_name) = split_rel(from);
        let (to_dir, to_name) = split_rel(to);
        let Some(source) = self.dir(from_dir)? else {
            return Ok(false);
        };
        // The folder may have no cur/ (or new/) yet.
        let target = self.create_dir(to_dir)?;
        match source.rename_new(from_name, &target, to_name) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(with_path(error, &self.root.path().join(from))),
        }
    }
}

/// `dir/name` -> (`dir`, `name`); a name alone is in the root.
fn split_rel(rel: &str) -> (&str, &OsStr) {
    let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    (dir, OsStr::new(name))
}

/// Removes `paths` (relative to `root`); a file already gone is fine.
pub fn remove(root: &Path, paths: &[String]) -> io::Result<usize> {
    let mut tree = Tree::open(root)?;
    let mut removed = 0;
    for rel in paths {
        if tree.remove(rel)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// What applying a plan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub renamed: usize,
    pub duplicates_removed: usize,
}

/// Applies a plan on the destination root. `rename(2)` keeps the mtime.
/// Removals come before renames so a rename never replaces a kept copy.
pub fn apply(root: &Path, steps: &[Step]) -> io::Result<Applied> {
    let mut tree = Tree::open(root)?;
    let mut applied = Applied::default();
    for step in steps {
        if let Step::RemoveDuplicate { folder, file } = step
            && tree.remove(&join(folder, file))?
        {
            applied.duplicates_removed += 1;
        }
    }
    for step in steps {
        if let Step::Rename { folder, from, to } = step {
            let from = join(folder, from);
            match tree.rename_new(&from, &join(folder, to)) {
                Ok(true) => applied.renamed += 1,
                Ok(false) => {}
                // Never replace a file that is already there: that would be
                // a message of its own; this copy is the duplicate.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    tree.remove(&from)?;
                    applied.duplicates_removed += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
    Ok(applied)
}

pub use mailctl_api::sync::Verification;

/// How many names a verification lists per kind of difference.
const EXAMPLES: usize = mailctl_api::sync::EXAMPLES;

/// Compares both sides, folder by folder.
pub fn verify(source: &Listing, destination: &Listing) -> Verification {
    let mut v = Verification::default();
    let names: BTreeSet<&String> = source
        .folders
        .keys()
        .chain(destination.folders.keys())
        .collect();
    v.folders = names.len();
    for name in names {
        for (src, dst) in pairs(source.messages(name), destination.messages(name)) {
            v.duplicates += dst.len().saturating_sub(1);
            match (src.first(), dst.first()) {
                (Some(s), None) => {
                    v.messages += 1;
                    v.missing += 1;
                    push_example(&mut v.missing_examples, join(name, &s.key));
                }
                (Some(s), Some(d)) => {
                    v.messages += 1;
                    if s.sub != d.sub || s.name != d.name || s.mtime != d.mtime {
                        v.differing += 1;
                        push_example(&mut v.differing_examples, join(name, &s.rel()));
                    }
                }
                (None, Some(d)) => {
                    v.extra += 1;
                    push_example(&mut v.extra_examples, join(name, &d.key));
                }
                (None, None) => {}
            }
        }
    }
    v
}

fn push_example(list: &mut Vec<String>, example: String) {
    if list.len() < EXAMPLES {
        list.push(example);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(files: &[(&str, i64)]) -> Listing {
        Listing::from_files(files.iter().map(|(p, t)| (*p, *t, 10u64)))
    }

    #[test]
    fn parses_names_with_dovecot_sizes_and_flags() {
        let n = MessageName::parse("1700000000.M12P34.eve,S=4123,W=4200:2,FS").expect("a name");
        assert_eq!(n.key, "1700000000.M12P34.eve");
        assert_eq!(n.base, "1700000000.M12P34.eve,S=4123,W=4200");
        assert_eq!((n.size, n.vsize), (Some(4123), Some(4200)));
        assert_eq!(n.flags, "FS");
        let n = MessageName::parse("1700000000.M12P34.eve").expect("a name");
        assert_eq!(
            (n.key.as_str(), n.flags.as_str()),
            ("1700000000.M12P34.eve", "")
        );
        // Other comma fields stay part of the identity.
        let n = MessageName::parse("1.2.host,X=abc:2,").expect("a name");
        assert_eq!(n.key, "1.2.host,X=abc");
        assert!(MessageName::parse(".hidden").is_none());
    }

    #[test]
    fn listing_finds_folders_and_skips_tmp_and_control_files() {
        let l = listing(&[
            ("cur/1.a.h:2,S", 1),
            ("new/2.a.h", 2),
            ("tmp/3.a.h", 3),
            (".Sent/cur/4.a.h,S=10:2,S", 4),
            ("dovecot-uidlist", 5),
            (".Sent/dovecot.index", 5),
            ("subscriptions", 5),
        ]);
        assert_eq!(l.folders.len(), 2);
        assert_eq!(l.folders[""].messages.len(), 2);
        assert_eq!(l.folders[".Sent"].messages[0].key, "4.a.h");
        assert_eq!(
            l.other_files,
            vec![".Sent/dovecot.index", "dovecot-uidlist", "subscriptions"]
        );
        let found = Listing::from_find_output("cur/1.a.h:2,S\t1700000000.1234567890\t42\n\nbad\n");
        assert_eq!(found.folders[""].messages[0].mtime, 1_700_000_000);
        assert_eq!(found.folders[""].messages[0].size, 42);
    }

    #[test]
    fn plan_renames_flag_changes_and_new_to_cur() {
        let src = listing(&[
            ("cur/1.a.h:2,RS", 1),
            ("cur/2.a.h:2,S", 2),
            ("new/3.a.h", 3),
        ]);
        let dst = listing(&[("cur/1.a.h:2,S", 1), ("new/2.a.h", 2), ("new/3.a.h", 3)]);
        let steps = plan(&src, &dst);
        assert_eq!(
            steps,
            vec![
                Step::Rename {
                    folder: String::new(),
                    from: "cur/1.a.h:2,S".into(),
                    to: "cur/1.a.h:2,RS".into()
                },
                Step::Rename {
                    folder: String::new(),
                    from: "new/2.a.h".into(),
                    to: "cur/2.a.h:2,S".into()
                },
            ]
        );
    }

    #[test]
    fn plan_keeps_one_copy_of_duplicates() {
        let src = listing(&[("cur/1.a.h:2,S", 1)]);
        let dst = listing(&[("new/1.a.h", 1), ("cur/1.a.h:2,", 1), ("cur/1.a.h:2,S", 1)]);
        let steps = plan(&src, &dst);
        assert_eq!(steps.len(), 2);
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::RemoveDuplicate { .. }))
        );
        // Duplicates only on the destination: keep the cur/ one.
        let dst = listing(&[("new/9.a.h", 1), ("cur/9.a.h:2,S", 1)]);
        assert_eq!(
            plan(&Listing::default(), &dst),
            vec![Step::RemoveDuplicate {
                folder: String::new(),
                file: "new/9.a.h".into()
            }]
        );
    }

    /// A maildir holding message `uniq` twice: `new/UNIQ` dated
    /// 1,600,000,000 and `cur/UNIQ:2,` dated now.
    fn two_copies(uniq: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        let dated = root.join("new").join(uniq);
        fs::write(&dated, "x").expect("write");
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        fs::File::options()
            .write(true)
            .open(&dated)
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
        fs::write(root.join(format!("cur/{uniq}:2,")), "x").expect("write");
        dir
    }

    #[test]
    fn of_two_copies_the_one_with_the_source_date_is_kept() {
        // A copy made without its date, next to the dated one.
        let dir = two_copies("7.a.h");
        let root = dir.path();
        let src = listing(&[("cur/7.a.h:2,S", 1_600_000_000)]);
        let mut dst = Listing::read_local_names(root).expect("list");
        dst.stat_duplicates(root).expect("stat");
        let mut steps = plan(&src, &dst);
        steps.sort_by_key(|s| s.to_string());
        assert_eq!(
            steps,
            vec![
                Step::RemoveDuplicate {
                    folder: String::new(),
                    file: "cur/7.a.h:2,".into()
                },
                Step::Rename {
                    folder: String::new(),
                    from: "new/7.a.h".into(),
                    to: "cur/7.a.h:2,S".into()
                },
            ]
        );
    }

    #[test]
    fn apply_renames_and_keeps_mtime() {
        let dir = two_copies("2.a.h");
        let root = dir.path();
        let src = listing(&[("cur/2.a.h:2,S", 1_600_000_000)]);
        let dst = Listing::read_local(root).expect("list");
        let applied = apply(root, &plan(&src, &dst)).expect("apply");
        assert_eq!(applied.renamed, 1);
        assert_eq!(applied.duplicates_removed, 1);
        let after = Listing::read_local(root).expect("list");
        assert_eq!(after.folders[""].messages.len(), 1);
        assert_eq!(after.folders[""].messages[0].name, "2.a.h:2,S");
        let v = verify(&src, &after);
        assert!(v.verified(), "{v}");
    }

    #[test]
    fn verify_counts_missing_extra_and_differing() {
        let src = listing(&[
            ("cur/1.a.h:2,S", 1),
            ("cur/2.a.h:2,S", 2),
            (".X/new/3.a.h", 3),
        ]);
        let dst = listing(&[
            ("cur/1.a.h:2,", 1),
            (".X/new/3.a.h", 3),
            (".X/new/4.a.h", 4),
        ]);
        let v = verify(&src, &dst);
        assert_eq!((v.missing, v.extra, v.differing), (1, 1, 1));
        assert_eq!(v.missing_examples, vec!["2.a.h".to_owned()]);
        assert_eq!(v.extra_examples, vec![".X/4.a.h".to_owned()]);
        assert!(!v.verified());
        assert!(v.to_string().contains("1 missing"));
        // Extra messages alone fail only a job that deletes.
        let v = verify(&dst, &dst_plus(&dst, ".X/new/5.a.h"));
        assert_eq!((v.missing, v.extra), (0, 1));
        assert!(!v.clone().verified());
        let v = v.allowing_extra(true);
        assert!(v.verified());
        assert!(
            v.to_string().contains("1 more only on the destination"),
            "{v}"
        );
    }

    #[test]
    fn only_new_messages_missing_dirs_and_control_files_are_sent() {
        let mut src = listing(&[
            ("cur/1.a.h:2,RS", 1),
            ("new/2.a.h", 2),
            (".X/cur/3.a.h,S=5:2,", 3),
            ("dovecot-uidlist", 4),
        ]);
        src.dirs = ["cur", "new", "tmp", ".X", ".X/cur", ".Empty", ".Empty/cur"]
            .map(String::from)
            .into();
        let mut dst = listing(&[("cur/1.a.h:2,S", 1), ("cur/9.a.h:2,", 9)]);
        dst.dirs = ["cur", "new", "tmp"].map(String::from).into();
        // .X and .X/cur come with the message in them; .Empty/cur must be named.
        assert_eq!(
            to_send(&src, &dst, lacking(&src, &dst)),
            vec![
                "new/2.a.h",
                ".X/cur/3.a.h,S=5:2,",
                "dovecot-uidlist",
                ".Empty/cur"
            ]
        );
        assert_eq!(only_on_destination(&src, &dst), vec!["cur/9.a.h:2,"]);
        let found = Listing::from_find_output("/\ncur/\n.X/\ncur/1.a.h:2,S\t1700000000\t42\n");
        assert_eq!(found.dirs, [".X", "cur"].map(String::from).into());
        assert_eq!(found.message_count(), 1);
    }

    fn dst_plus(listing: &Listing, path: &str) -> Listing {
        let mut files: Vec<(String, i64, u64)> = listing
            .folders
            .iter()
            .flat_map(|(folder, f)| {
                f.messages
                    .iter()
                    .map(move |m| (join(folder, &m.rel()), m.mtime, m.size))
            })
            .collect();
        files.push((path.to_owned(), 5, 10));
        Listing::from_files(files)
    }
}
