//! The agent's desired state: read from the watched manifest path, numbered
//! with a generation, and persisted so a restarted agent carries on alone.
//!
//! Every accepted state is stored rendered (`source:` files inlined) under the
//! state folder; the last effective one is what the agent converges to, even
//! when the manifest path is broken or gone after a restart.

use std::fs;
use std::path::{Path, PathBuf};

use mailctl_schemas::model::{HostSpec, ManifestSet};
use mailctl_schemas::render;
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
}

#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("desired state {path} is not valid:\n{diagnostics}")]
    Invalid { path: PathBuf, diagnostics: String },
    #[error(
        "desired state {path} has no Host document{}",
        .host.as_ref().map(|h| format!(" named \"{h}\"")).unwrap_or_default()
    )]
    NoHost { path: PathBuf, host: Option<String> },
    #[error("desired state {path} has several Host documents ({names}); set `host` in agent.toml")]
    SeveralHosts { path: PathBuf, names: String },
    #[error("state folder {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state folder {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// Pick this host's spec out of a manifest set.
pub fn host_spec(
    set: &ManifestSet,
    host: Option<&str>,
    path: &Path,
) -> Result<(String, HostSpec), DesiredError> {
    let candidates: Vec<_> = set
        .hosts
        .iter()
        .filter(|h| host.is_none_or(|name| h.name == name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok((one.name.clone(), one.spec.clone())),
        [] => Err(DesiredError::NoHost {
            path: path.to_path_buf(),
            host: host.map(str::to_owned),
        }),
        many => Err(DesiredError::SeveralHosts {
            path: path.to_path_buf(),
            names: many
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Read and validate the manifest path, keeping only this host's document.
pub fn read_source(
    path: &Path,
    host: Option<&str>,
) -> Result<(String, HostSpec, String), DesiredError> {
    let set = load::load_paths(&[path]).map_err(|d| DesiredError::Invalid {
        path: path.to_path_buf(),
        diagnostics: d.to_string(),
    })?;
    let (name, spec) = host_spec(&set, host, path)?;
    let only = ManifestSet {
        hosts: set.hosts.into_iter().filter(|h| h.name == name).collect(),
        ..ManifestSet::default()
    };
    Ok((name, spec, render::to_yaml(&only)))
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
        let (host, spec) = host_spec(&set, None, &path)?;
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

    /// Keep the newest few generations; older ones are no longer needed for rollback.
    pub fn prune(&self, keep_from: u64) {
        let Ok(entries) = fs::read_dir(self.root.join("desired")) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .path()
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|g| g < keep_from);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Write one of the agent's files atomically (see `fsutil::write_atomically`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DesiredError> {
    crate::fsutil::write_atomically(path, bytes, 0o600).map_err(|source| DesiredError::State {
        path: path.to_path_buf(),
        source,
    })
}
