//! The agent's desired state: read from the watched manifest path, numbered
//! with a generation, and persisted so a restarted agent carries on alone.
//!
//! A desired state comes from one of two places: the watched manifest path
//! (`desired_state` in agent.toml, the admin's files) or `PUT /v1/desired`
//! (the controller). Every accepted state is stored rendered (`source:` files
//! inlined) under the state folder with the next generation number, and the
//! newest accepted generation is in force: a PUT never writes into the
//! admin's files, and the watched path counts as changed only when its
//! content differs from what was last read from it, so a restart does not
//! undo the controller's state with an older file.
//!
//! The state folder is the agent's memory, but never a reason not to start:
//! a damaged ledger or generation file is moved aside (`NAME.damaged-SECONDS`),
//! reported in status and the log, and the agent carries on from the watched
//! manifest.

use std::fs;
use std::path::{Path, PathBuf};

use mailctl_schemas::model::{Host, HostSpec, ManifestSet};
use mailctl_schemas::render;
use mailctl_schemas::select::{self, SelectError, Selected, Selection};
use mailctl_schemas::{ContentReader, Source, load, validate};
use serde::{Deserialize, Serialize};

/// A generation on probation (magic rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Awaiting {
    pub generation: u64,
    /// The last confirmed generation, restored when the deadline passes.
    pub previous: u64,
    /// Seconds since the Unix epoch.
    pub deadline: u64,
}

/// A desired state the agent accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub generation: u64,
    pub host: String,
    pub spec: HostSpec,
    /// The rendered manifest, as persisted.
    pub text: String,
}

/// What the state folder remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// The newest accepted generation.
    pub generation: u64,
    /// The generation being converged to (older than `generation` after a rollback).
    pub effective: u64,
    /// A generation that changed addresses or firewall and waits for confirmation.
    pub awaiting_confirmation: Option<Awaiting>,
    /// Generations that were rolled back for want of confirmation.
    pub rolled_back: Vec<u64>,
    /// The generation last read from the watched manifest path (0: none yet).
    /// An API state may be newer; the file counts as changed only when it
    /// differs from this one.
    #[serde(default)]
    pub watched: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("desired state {path} is not valid:\n{diagnostics}")]
    Invalid { path: PathBuf, diagnostics: String },
    #[error("desired state {path}: {source}{}", hint(.source))]
    Select {
        path: PathBuf,
        #[source]
        source: SelectError,
    },
    #[error("state folder {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state folder {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// Pick this host's spec out of a manifest set (the one selection rule of
/// `mailctl plan` and `apply --local`; the agent has no phase to name).
pub fn host_spec(
    set: &ManifestSet,
    host: Option<&str>,
    path: &Path,
) -> Result<Selected, DesiredError> {
    select::host_state(
        set,
        &Selection {
            host,
            ..Selection::default()
        },
    )
    .map_err(|source| DesiredError::Select {
        path: path.to_path_buf(),
        source,
    })
}

/// The agent is told its host by `host` in agent.toml, not by `--host`.
fn hint(error: &SelectError) -> &'static str {
    match error {
        SelectError::SeveralHosts { .. } => " (in agent.toml: host = \"NAME\")",
        _ => "",
    }
}

/// A validated state for this host: its name, its spec and the rendered text
/// that is persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub host: String,
    pub spec: HostSpec,
    pub text: String,
}

/// Keep only this host's document of a validated set, rendered.
fn candidate(set: ManifestSet, host: Option<&str>, path: &Path) -> Result<Candidate, DesiredError> {
    let Selected {
        host, spec, origin, ..
    } = host_spec(&set, host, path)?;
    let only = ManifestSet {
        hosts: vec![Host {
            name: host.clone(),
            spec: spec.clone(),
            origin,
        }],
        ..ManifestSet::default()
    };
    Ok(Candidate {
        host,
        spec,
        text: render::to_yaml(&only),
    })
}

/// Read and validate the manifest path, keeping only this host's document.
pub fn read_source(path: &Path, host: Option<&str>) -> Result<Candidate, DesiredError> {
    let set = load::load_paths(&[path]).map_err(|d| DesiredError::Invalid {
        path: path.to_path_buf(),
        diagnostics: d.to_string(),
    })?;
    candidate(set, host, path)
}

/// What error messages call a state that arrived through the API.
pub const API_ORIGIN: &str = "PUT /v1/desired";

/// Validate a state sent through the API. It is the whole desired state of
/// this host on its own (never joined with the watched files), so it must
/// carry its files inline: `source:` has no folder to be read from.
pub fn read_body(text: String, host: Option<&str>) -> Result<Candidate, DesiredError> {
    let path = PathBuf::from(API_ORIGIN);
    let set = validate(
        &[Source {
            path: path.clone(),
            text,
        }],
        &NoSources,
    )
    .map_err(|d| DesiredError::Invalid {
        path: path.clone(),
        diagnostics: d.to_string(),
    })?;
    candidate(set, host, &path)
}

/// Refuses `source:` in a state sent through the API.
struct NoSources;

impl ContentReader for NoSources {
    fn read(&self, _: &Path, source: &str) -> Result<String, String> {
        Err(format!(
            "a state sent through the API carries its files inline (content:), not source: {source}; render it with `mailctl validate -o yaml`"
        ))
    }
}

/// Reads nothing: persisted states have their `source:` files inlined.
struct Inlined;

impl ContentReader for Inlined {
    fn read(&self, _: &Path, source: &str) -> Result<String, String> {
        Err(format!(
            "persisted state refers to {source}, which should have been inlined"
        ))
    }
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn open(root: &Path) -> Result<Self, DesiredError> {
        fs::create_dir_all(root.join("desired")).map_err(|source| DesiredError::State {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.json")
    }

    fn desired_path(&self, generation: u64) -> PathBuf {
        self.root
            .join("desired")
            .join(format!("{generation:010}.yaml"))
    }

    pub fn ledger(&self) -> Result<Ledger, DesiredError> {
        let path = self.ledger_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DesiredError::Corrupt {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(source) => Err(DesiredError::State { path, source }),
        }
    }

    pub fn save_ledger(&self, ledger: &Ledger) -> Result<(), DesiredError> {
        let text = serde_json::to_vec_pretty(ledger).map_err(|e| DesiredError::Corrupt {
            path: self.ledger_path(),
            detail: e.to_string(),
        })?;
        write_atomic(&self.ledger_path(), &text)
    }

    /// Persist a newly accepted state under its generation.
    pub fn store(&self, generation: u64, text: &str) -> Result<(), DesiredError> {
        write_atomic(&self.desired_path(generation), text.as_bytes())
    }

    /// Load a persisted generation (it holds exactly this host's document).
    pub fn load(&self, generation: u64) -> Result<Desired, DesiredError> {
        let path = self.desired_path(generation);
        let text = fs::read_to_string(&path).map_err(|source| DesiredError::State {
            path: path.clone(),
            source,
        })?;
        let set = validate(
            &[Source {
                path: path.clone(),
                text: text.clone(),
            }],
            &Inlined,
        )
        .map_err(|d| DesiredError::Invalid {
            path: path.clone(),
            diagnostics: d.to_string(),
        })?;
        let Selected { host, spec, .. } = host_spec(&set, None, &path)?;
        Ok(Desired {
            generation,
            host,
            spec,
            text,
        })
    }

    /// The text of a persisted generation, if it is still there.
    pub fn text(&self, generation: u64) -> Option<String> {
        fs::read_to_string(self.desired_path(generation)).ok()
    }

    /// Remove generations older than `keep_from`, except those in `keep`
    /// (the rollback target and the last state read from the watched path
    /// must survive however many unconfirmed generations come after them).
    pub fn prune(&self, keep_from: u64, keep: &[u64]) {
        for (generation, path) in self.stored() {
            if generation < keep_from && !keep.contains(&generation) {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// The persisted generations, by number.
    fn stored(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.root.join("desired")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    return None;
                }
                let generation = path.file_stem()?.to_str()?.parse::<u64>().ok()?;
                Some((generation, path))
            })
            .collect()
    }

    /// The highest generation number stored (0 when none): after the ledger
    /// was lost, numbering carries on above it rather than reusing numbers.
    pub fn newest_stored(&self) -> u64 {
        self.stored().into_iter().map(|(g, _)| g).max().unwrap_or(0)
    }

    /// The ledger, or — when it cannot be read or parsed — a fresh ledger
    /// numbered above every stored generation, with the damaged file moved
    /// aside. The second value says what happened, for status and the log.
    pub fn ledger_or_fresh(&self) -> (Ledger, Option<String>) {
        match self.ledger() {
            Ok(ledger) => (ledger, None),
            Err(e) => {
                let moved = crate::fsutil::set_aside(&self.ledger_path());
                let generation = self.newest_stored();
                let fresh = Ledger {
                    generation,
                    watched: 0,
                    ..Ledger::default()
                };
                (fresh, Some(damage_report(&e, moved)))
            }
        }
    }

    /// A persisted generation that cannot be loaded is moved aside (when it
    /// exists at all); says what happened.
    pub fn set_aside_generation(&self, generation: u64, error: &DesiredError) -> String {
        let path = self.desired_path(generation);
        let moved = if path.exists() {
            crate::fsutil::set_aside(&path)
        } else {
            Ok(None)
        };
        damage_report(error, moved)
    }
}

fn damage_report(error: &DesiredError, moved: Result<Option<PathBuf>, std::io::Error>) -> String {
    match moved {
        Ok(Some(aside)) => format!("{error}; moved aside to {}", aside.display()),
        Ok(None) => format!("{error}"),
        Err(e) => format!("{error}; could not move it aside: {e}"),
    }
}

/// Write one of the agent's files atomically (see `fsutil::write_atomically`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DesiredError> {
    crate::fsutil::write_atomically(path, bytes, 0o600).map_err(|source| DesiredError::State {
        path: path.to_path_buf(),
        source,
    })
}
