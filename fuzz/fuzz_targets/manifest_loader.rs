//! Fuzz the manifest loader: arbitrary bytes -> `validate()`; whatever
//! validates must survive `render::to_yaml` -> `validate()` unchanged.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run manifest_loader` (see ../README.md).

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mailctl_schemas::model::ManifestSet;
use mailctl_schemas::{ContentReader, Origin, Position, Source, render, validate};

/// `source:` fields never resolve: the fuzzer exercises the loader, not the disk.
struct NoFiles;

impl ContentReader for NoFiles {
    fn read(&self, _manifest: &Path, _source: &str) -> Result<String, String> {
        Err("no file access while fuzzing".into())
    }
}

/// The set with every origin replaced by the same value, so two loads of the
/// same model from different text compare equal.
fn without_origins(set: &ManifestSet) -> ManifestSet {
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        path: PathBuf::from("fuzz.yaml"),
        text: text.to_owned(),
    };
    let Ok(first) = validate(&[source], &NoFiles) else {
        return;
    };
    let rendered = render::to_yaml(&first);
    let again = Source {
        path: PathBuf::from("rendered.yaml"),
        text: rendered.clone(),
    };
    let second = match validate(&[again], &NoFiles) {
        Ok(set) => set,
        Err(diags) => panic!(
            "a validated manifest set no longer validates after render::to_yaml\n\
             --- input ---\n{text}\n--- rendered ---\n{rendered}\n--- errors ---\n{diags:?}"
        ),
    };
    let (first, second) = (without_origins(&first), without_origins(&second));
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
});
