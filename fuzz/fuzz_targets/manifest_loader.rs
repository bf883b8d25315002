//! Fuzz the manifest loader: arbitrary bytes -> `validate()`; whatever
//! validates must survive `render::to_yaml` -> `validate()` unchanged.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run manifest_loader` (see ../README.md).

#![no_main]

mod common;

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mailctl_schemas::{Source, render, validate};

use common::{NoFiles, assert_same_model};

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
    assert_same_model(&first, &second, &rendered);
});
