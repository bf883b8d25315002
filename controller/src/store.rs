//! Where the controller keeps what it needs to resume: one record per
//! migration ([`crate::record::MigrationRecord`]). [`Store`] is the seam an
//! external store (etcd) would fill; [`DirStore`] is the embedded default,
//! a state directory:
//!
//! - `DIR/lock`: held (`flock`) by the one controller that uses `DIR`, with
//!   its pid inside; a second controller refuses to start and names it. The
//!   kernel releases the lock when the process dies, even by SIGKILL.
//! - `DIR/migrations/NAME.json`: written to a temporary file, fsynced,
//!   renamed over the old one, and the folder fsynced: a crash leaves the
//!   old record or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::record::MigrationRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state directory {dir} is in use by another controller (pid {pid}); stop it, or give this one another state_dir"
    )]
    Held { dir: PathBuf, pid: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the record {path} cannot be read ({detail}); it was moved aside to {aside}; the migration starts from its manifests"
    )]
    Damaged {
        path: PathBuf,
        detail: String,
        aside: PathBuf,
    },
}

/// What the controller persists.
pub trait Store: Send + Sync {
    /// Every record kept (damaged ones are moved aside and reported).
    fn load_all(&self) -> (Vec<MigrationRecord>, Vec<StoreError>);
    /// Replaces the record of `record.migration`, durably.
    fn save(&self, record: &MigrationRecord) -> Result<(), StoreError>;
}

/// The embedded store: a state directory, held by one controller.
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl DirStore {
    /// Opens (creating, mode 0700) and locks `dir`.
    pub fn open(dir: &Path) -> Result<DirStore, StoreError> {
        let migrations = dir.join("migrations");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&migrations)
            .map_err(io_error("cannot create", &migrations))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A link planted as the lock file is refused, not truncated.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io_error("cannot open", &lock_path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(StoreError::Held {
                    dir: dir.to_owned(),
                    pid: pid.trim().to_owned(),
                });
            }
        };
        lock.set_len(0)
            .map_err(io_error("cannot write", &lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_error("cannot write", &lock_path))?;
        lock.sync_all()
            .map_err(io_error("cannot sync", &lock_path))?;
        Ok(DirStore {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    fn path(&self, migration: &str) -> PathBuf {
        self.dir
            .join("migrations")
            .join(format!("{migration}.json"))
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the
/// new, never a mix: a temporary file in the same folder, fsynced, renamed,
/// the folder fsynced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    // A left-over temporary (or a link planted under its name) goes first;
    // the new one is created, never opened through a link.
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(io_error("cannot write", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cannot write", &temporary))?;
    fs::rename(&temporary, path).map_err(io_error("cannot replace", path))?;
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("cannot sync the folder of", path))
}

impl Store for DirStore {
    fn load_all(&self) -> (Vec<MigrationRecord>, Vec<StoreError>) {
        let folder = self.dir.join("migrations");
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) => return (records, vec![io_error("cannot list", &folder)(e)]),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<MigrationRecord>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(record) => records.push(record),
                Err(detail) => {
                    let aside =
                        path.with_extension(format!("json.damaged-{}", crate::clock::unix_now()));
                    let _ = fs::rename(&path, &aside);
                    problems.push(StoreError::Damaged {
                        path,
                        detail,
                        aside,
                    });
                }
            }
        }
        (records, problems)
    }

    fn save(&self, record: &MigrationRecord) -> Result<(), StoreError> {
        let path = self.path(&record.migration);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Io {
            what: "cannot encode",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        write_durably(&path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_controller_is_refused_and_told_who_holds_the_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = DirStore::open(dir.path()).expect("first");
        let second = DirStore::open(dir.path()).expect_err("second");
        assert_eq!(
            second.to_string(),
            format!(
                "the state directory {} is in use by another controller (pid {}); stop it, or give this one another state_dir",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(first);
        DirStore::open(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn a_link_planted_as_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").expect("victim");
        let state = dir.path().join("state");
        fs::create_dir_all(&state).expect("state");
        std::os::unix::fs::symlink(&victim, state.join("lock")).expect("link");
        let error = DirStore::open(&state).expect_err("a link");
        assert!(error.to_string().contains("cannot open"), "{error}");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
    }

    #[test]
    fn records_read_back_and_a_damaged_one_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = DirStore::open(dir.path()).expect("open");
        let record = MigrationRecord::new("bob-to-eve", "prepare");
        store.save(&record).expect("save");
        fs::write(dir.path().join("migrations/broken.json"), "{\"migr").expect("write");
        let (records, problems) = store.load_all();
        assert_eq!(records, vec![record]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .contains("broken.json cannot be read")
        );
        assert!(!dir.path().join("migrations/broken.json").exists());
    }
}
