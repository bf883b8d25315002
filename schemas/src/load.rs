//! Reading manifests from disk: files, and folders walked recursively.
//!
//! This is the crate's only I/O. Unreadable paths become diagnostics like any
//! other problem, so `mailctl validate a.yaml missing.yaml` reports both.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::budget::{Budget, Limit, ReadError, read_manifest};
use crate::diag::{Diagnostic, Diagnostics, file_origin};
use crate::model::ManifestSet;
use crate::validate::{ContentReader, Source, validate};

/// Read and validate every manifest under `paths` (files, or folders whose
/// `*.yaml`/`*.yml` files are read recursively, in name order).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<ManifestSet, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut sources = Vec::new();
    let mut budget = Budget::default();
    for path in paths {
        collect(path.as_ref(), true, &mut sources, &mut diags, &mut budget);
    }
    if budget.text_spent() {
        // A file did not fit (see `collect`): what was read is only part of the load.
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

fn collect(
    path: &Path,
    named: bool,
    sources: &mut Vec<Source>,
    diags: &mut Diagnostics,
    budget: &mut Budget,
) {
    let problem = |diags: &mut Diagnostics, message: String, hint: &str| {
        diags.push(Diagnostic::new(file_origin(path), "", message).with_hint(hint));
    };
    if budget.text_spent() {
        return;
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return problem(diags, format!("cannot read: {e}"), "check the path"),
    };
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = match fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                return problem(
                    diags,
                    format!("cannot list folder: {e}"),
                    "check permissions",
                );
            }
        };
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden && (entry.is_dir() || is_manifest(&entry)) {
                collect(&entry, false, sources, diags, budget);
            }
        }
    } else if named || is_manifest(path) {
        match read_manifest(path, budget) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source {
                    path: path.to_path_buf(),
                    text,
                }),
                Err(_) => problem(
                    diags,
                    "the file is not UTF-8 text".into(),
                    "manifests are UTF-8 YAML",
                ),
            },
            Err(ReadError::OverBudget) => {
                let (message, hint) = Limit::TextBytes.describe(&budget.limits);
                // Nothing more is read (see `load_paths`).
                problem(diags, message, &hint);
            }
            Err(ReadError::Io(e)) => problem(
                diags,
                format!("cannot read: {e}"),
                "check the path and permissions",
            ),
        }
    }
}

/// Reads `source:` file content relative to the manifest's folder.
#[derive(Debug, Clone, Copy)]
pub struct FileSystem;

impl ContentReader for FileSystem {
    fn read(&self, manifest: &Path, source: &str) -> Result<String, String> {
        let relative = Path::new(source);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, Component::Prefix(_)))
        {
            return Err("source must be a path relative to the manifest".into());
        }
        let base = manifest.parent().unwrap_or(Path::new("."));
        let full = base.join(relative);
        let bytes = fs::read(&full).map_err(|e| format!("{} ({})", e, full.display()))?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", full.display()))
    }
}
