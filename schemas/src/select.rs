//! Which host state a command means: the one place that picks a host's spec
//! out of a validated set, for `plan`, `apply --local`, `sync run --local`
//! and the agent alike.
//!
//! A set offers host states in two ways: `kind: Host` documents, and the
//! hosts of each Phase (`spec.hosts.NAME`). Without `--phase`, Host documents
//! are the candidates, or the hosts of the only Phase when the set holds one
//! Phase and no Host; with it, the hosts of that Phase (of `--migration`,
//! when several migrations have a phase of that name).

use crate::diag::Origin;
use crate::model::{HostSpec, ManifestSet};

/// What the caller asked for; `None` means "the only one there is".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    pub host: Option<&'a str>,
    pub phase: Option<&'a str>,
    pub migration: Option<&'a str>,
}

/// The chosen host state.
#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub host: String,
    pub spec: HostSpec,
    /// Where it was declared (the Host document, or the Phase).
    pub origin: Origin,
    /// The phase it came from, as `MIGRATION/PHASE`.
    pub phase: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no host state here: no Host document and no Phase")]
    Nothing,
    #[error("{count} phases here ({names}) and no Host document; pick one with --phase NAME")]
    SeveralPhases { count: usize, names: String },
    #[error("no phase \"{wanted}\"{hint} (phases: {names})")]
    NoPhase {
        wanted: String,
        names: String,
        hint: String,
    },
    #[error(
        "phase \"{phase}\" exists in several migrations ({migrations}); pick one with --migration NAME"
    )]
    AmbiguousPhase { phase: String, migrations: String },
    #[error("no host \"{wanted}\" {place}{hint} (hosts: {names})")]
    NoHost {
        wanted: String,
        place: String,
        names: String,
        hint: String,
    },
    #[error("several hosts {place} ({names}); pick one with --host NAME")]
    SeveralHosts { place: String, names: String },
}

/// `; did you mean "x"?` when a name is close to `wanted`, else nothing.
pub fn did_you_mean<'a>(wanted: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| (strsim::damerau_levenshtein(n, wanted), n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!("; did you mean \"{n}\"?"))
        .unwrap_or_default()
}

/// Pick the host state `want` names out of `set`.
pub fn host_state(set: &ManifestSet, want: &Selection<'_>) -> Result<Selected, SelectError> {
    let phase = match want.phase {
        Some(name) => Some(find_phase(set, name, want.migration)?),
        None if !set.hosts.is_empty() => None,
        None => match set.phases.as_slice() {
            [] => return Err(SelectError::Nothing),
            [one] => Some(one),
            many => {
                return Err(SelectError::SeveralPhases {
                    count: many.len(),
                    names: many
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        },
    };
    let (candidates, place): (Vec<(&str, &HostSpec, &Origin)>, String) = match phase {
        Some(p) => (
            p.hosts
                .iter()
                .map(|(name, spec)| (name.as_str(), spec, &p.origin))
                .collect(),
            format!("in phase {}/{}", p.migration, p.name),
        ),
        None => (
            set.hosts
                .iter()
                .map(|h| (h.name.as_str(), &h.spec, &h.origin))
                .collect(),
            "among the Host documents".to_owned(),
        ),
    };
    let names = || {
        candidates
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match want.host {
        Some(wanted) => candidates
            .iter()
            .find(|(n, _, _)| *n == wanted)
            .ok_or_else(|| SelectError::NoHost {
                wanted: wanted.to_owned(),
                place: place.clone(),
                names: names(),
                hint: did_you_mean(wanted, candidates.iter().map(|(n, _, _)| *n)),
            })?,
        None => match candidates.as_slice() {
            [one] => one,
            _ => {
                return Err(SelectError::SeveralHosts {
                    place,
                    names: names(),
                });
            }
        },
    };
    let (host, spec, origin) = *chosen;
    Ok(Selected {
        host: host.to_owned(),
        spec: spec.clone(),
        origin: origin.clone(),
        phase: phase.map(|p| format!("{}/{}", p.migration, p.name)),
    })
}

fn find_phase<'a>(
    set: &'a ManifestSet,
    name: &str,
    migration: Option<&str>,
) -> Result<&'a crate::model::Phase, SelectError> {
    let matching: Vec<_> = set
        .phases
        .iter()
        .filter(|p| p.name == name && migration.is_none_or(|m| p.migration == m))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => {
            let names: Vec<&str> = set.phases.iter().map(|p| p.name.as_str()).collect();
            Err(SelectError::NoPhase {
                wanted: name.to_owned(),
                hint: did_you_mean(name, names.iter().copied()),
                names: if names.is_empty() {
                    "none; add the folder or file that holds it with another -f".to_owned()
                } else {
                    names.join(", ")
                },
            })
        }
        many => Err(SelectError::AmbiguousPhase {
            phase: name.to_owned(),
            migrations: many
                .iter()
                .map(|p| p.migration.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Source, validate};
    use std::path::PathBuf;

    struct NoFiles;
    impl crate::ContentReader for NoFiles {
        fn read(&self, _: &std::path::Path, _: &str) -> Result<String, String> {
            Err("no files in this test".into())
        }
    }

    fn examples() -> ManifestSet {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/askja");
        crate::load::load_paths(&[dir]).expect("the askja example validates")
    }

    #[test]
    fn a_phase_of_a_migration_folder_by_name_and_host() {
        let set = examples();
        let phase = set.phases.first().expect("a phase").clone();
        let host = phase.hosts.keys().next().expect("a host").clone();
        let got = host_state(
            &set,
            &Selection {
                host: Some(&host),
                phase: Some(&phase.name),
                migration: None,
            },
        )
        .expect("selected");
        assert_eq!(got.host, host);
        assert_eq!(&got.spec, &phase.hosts[&host]);
        assert_eq!(
            got.phase.as_deref(),
            Some(format!("{}/{}", phase.migration, phase.name).as_str())
        );
    }

    #[test]
    fn misspelt_phase_and_host_names_get_a_suggestion() {
        let set = examples();
        let phase = set.phases.first().expect("a phase").name.clone();
        let typo = format!("{phase}x");
        let e = host_state(
            &set,
            &Selection {
                phase: Some(&typo),
                ..Selection::default()
            },
        )
        .expect_err("no such phase");
        assert!(
            e.to_string().contains(&format!("did you mean \"{phase}\"")),
            "{e}"
        );

        let e = host_state(
            &set,
            &Selection {
                phase: Some(&phase),
                host: Some("eev"),
                migration: None,
            },
        )
        .expect_err("no such host");
        assert!(e.to_string().contains("no host \"eev\""), "{e}");
    }

    #[test]
    fn several_phases_without_phase_is_an_error_naming_them() {
        let set = examples();
        if set.hosts.is_empty() {
            let e = host_state(&set, &Selection::default()).expect_err("ambiguous");
            assert!(matches!(e, SelectError::SeveralPhases { .. }), "{e}");
        }
    }

    #[test]
    fn host_documents_without_phase() {
        let text = "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec: {}\n---\napiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: bob}\nspec: {}\n";
        let set = validate(
            &[Source {
                path: "hosts.yaml".into(),
                text: text.into(),
            }],
            &NoFiles,
        )
        .expect("valid");
        let e = host_state(&set, &Selection::default()).expect_err("two hosts");
        assert_eq!(
            e.to_string(),
            "several hosts among the Host documents (eve, bob); pick one with --host NAME"
        );
        let got = host_state(
            &set,
            &Selection {
                host: Some("bob"),
                ..Selection::default()
            },
        )
        .expect("bob");
        assert_eq!(got.host, "bob");
        assert!(got.phase.is_none());
    }
}
