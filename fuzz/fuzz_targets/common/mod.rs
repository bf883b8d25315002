//! Helpers shared by the fuzz targets (each target includes this module).

#![allow(dead_code)] // not every target uses every helper

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailctl_schemas::model::ManifestSet;
use mailctl_schemas::{Origin, Position};

/// The input split at NUL bytes into at most `n` parts (the last part keeps
/// any further NULs). NUL separates well: no file name, listing line or
/// YAML text of interest holds one.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == 0).collect()
}

/// An empty folder `name` of this process in tmpfs (`/dev/shm`), emptied
/// first if an earlier input left something there.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new("/dev/shm")
        .join(format!("mailctl-fuzz-{}", std::process::id()))
        .join(name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("fuzz harness: cannot empty {}: {e}", dir.display()),
    }
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", dir.display()));
    dir
}

/// Writes `bytes` to `path`, creating its folder; a harness failure panics.
pub fn put(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("fuzz harness: cannot create {}: {e}", parent.display()));
    }
    fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("fuzz harness: cannot write {}: {e}", path.display()));
}

/// The set with every origin replaced by the same value, so two loads of the
/// same model from different text compare equal.
pub fn without_origins(set: &ManifestSet) -> ManifestSet {
    let nowhere = Origin {
        file: Arc::from(Path::new("")),
        position: Position::default(),
    };
    let mut set = set.clone();
    for host in &mut set.hosts {
        host.origin = nowhere.clone();
    }
    for migration in &mut set.migrations {
        migration.origin = nowhere.clone();
    }
    for phase in &mut set.phases {
        phase.origin = nowhere.clone();
    }
    set
}

/// Panics unless `first` and `second` are the same model, origins aside.
pub fn assert_same_model(first: &ManifestSet, second: &ManifestSet, rendered: &str) {
    let (first, second) = (without_origins(first), without_origins(second));
    assert_eq!(
        first.hosts, second.hosts,
        "hosts changed; rendered:\n{rendered}"
    );
    assert_eq!(
        first.migrations, second.migrations,
        "migrations changed; rendered:\n{rendered}"
    );
    assert_eq!(
        first.phases, second.phases,
        "phases changed; rendered:\n{rendered}"
    );
}

/// A `ContentReader` for which `source:` fields never resolve: text that is
/// already self-contained (fuzz input, a rendered model) needs no disk.
#[derive(Debug)]
pub struct NoFiles;

impl mailctl_schemas::ContentReader for NoFiles {
    fn read(&self, _manifest: &Path, _source: &str) -> Result<String, String> {
        Err("no file access while fuzzing".into())
    }
}
