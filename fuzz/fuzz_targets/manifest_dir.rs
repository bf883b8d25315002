//! Fuzz directory loading with `source:` files: the input, split at NUL
//! bytes, becomes a manifest folder in tmpfs, read by the production entry
//! point `mailctl_schemas::load::load_paths` (what `mailctl validate DIR`
//! and the agent's watched manifest path use, with the real `FileSystem`
//! reader of `source:` files).
//!
//! Parts, in order: `main.yaml`, the `source:` files `s1`, `s2`, `s3`
//! (`source: s1`, `source: conf/s2`... in the manifest; `s2` lives in
//! `conf/`), and `sub/more.yaml`, a second manifest further down the walk.
//! A missing part is a missing file.
//!
//! Whatever loads must survive `render::to_yaml` (which inlines the `source:`
//! content) -> `validate()` unchanged, origins aside.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run manifest_dir` (see ../README.md).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use mailctl_schemas::{Source, load, render, validate};

use common::{NoFiles, assert_same_model, parts, put, scratch};

/// Where each part goes, relative to the folder loaded.
const FILES: [&str; 5] = ["main.yaml", "s1", "conf/s2", "s3", "sub/more.yaml"];

fuzz_target!(|data: &[u8]| {
    let root = scratch("manifest_dir");
    for (part, name) in parts(data, FILES.len()).into_iter().zip(FILES) {
        put(&root.join(name), part);
    }
    let Ok(first) = load::load_paths(&[&root]) else {
        return;
    };
    let rendered = render::to_yaml(&first);
    let again = Source {
        path: root.join("rendered.yaml"),
        text: rendered.clone(),
    };
    let second = match validate(&[again], &NoFiles) {
        Ok(set) => set,
        Err(diags) => panic!(
            "a loaded manifest folder no longer validates after render::to_yaml\n\
             --- rendered ---\n{rendered}\n--- errors ---\n{diags:?}"
        ),
    };
    assert_same_model(&first, &second, &rendered);
});
