//! `GET /v1/status`: where the agent and each of its resources stand, and
//! what became of a generation ([`AgentStatus::outcome`]), which is how the
//! controller and `mailctl confirm` tell a converged state from one that
//! was rolled back.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where one resource stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Condition {
    /// Converged and verified at `generation`.
    Ready { generation: u64 },
    /// A reconcile is running or queued.
    Progressing,
    /// The last reconcile failed; retried with backoff.
    Failed { reason: String, retries: u32 },
    /// The state cannot be reached as the host is (a lockout, a link in a
    /// managed path): not retried until something changes.
    Refused { reason: String },
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Ready { generation } => write!(f, "ready at generation {generation}"),
            Condition::Progressing => f.write_str("progressing"),
            Condition::Failed { reason, retries } => {
                write!(f, "failed (retry {retries}): {reason}")
            }
            Condition::Refused { reason } => write!(f, "refused: {reason}"),
        }
    }
}

/// Why a change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Cause {
    /// A new desired state asked for it.
    Intentional,
    /// The host drifted from a state already reached (drift repair).
    Corrective,
}

/// One resource's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub condition: Condition,
    pub intentional_changes: u64,
    pub corrective_changes: u64,
    /// The generation this resource last converged at.
    pub converged_generation: Option<u64>,
    /// Seconds since the epoch of the last change made.
    pub last_change: Option<u64>,
}

/// A magic rollback: `generation` was not confirmed in time, and the agent
/// went back to `to`, the last confirmed generation, in full (addresses,
/// firewall, files, services and tasks as `to` declares them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub generation: u64,
    pub to: u64,
    pub at_unix: u64,
    pub reason: String,
}

/// The agent's status document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub host: Option<String>,
    /// The newest generation accepted.
    pub generation: u64,
    /// The generation being converged to: older than `generation` after a
    /// rollback.
    pub effective_generation: u64,
    pub awaiting_confirmation: Option<u64>,
    /// Every generation that was rolled back, oldest first.
    pub rolled_back: Vec<u64>,
    /// The latest rollback, while its target is still the state in force
    /// (cleared when a newer generation is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Why the newest manifest could not be accepted, if it could not.
    pub desired_error: Option<String>,
    /// Damaged state files found at start-up (each moved aside), newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_warnings: Vec<String>,
    pub resources: BTreeMap<String, ResourceStatus>,
}

/// What became of one generation, as the agent's status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationOutcome {
    /// The agent has not accepted this generation (its newest is older).
    Unknown,
    /// A newer generation replaced it before it converged.
    Superseded { by: u64 },
    /// Not confirmed in time: the agent went back to generation `to`.
    /// Never a success.
    RolledBack { to: u64 },
    /// Resources still converging (names).
    Progressing { pending: Vec<String> },
    /// Some resources failed; the agent retries them with backoff.
    Failed { failures: Vec<(String, String)> },
    /// Some resources cannot be reached as the host is; not retried until
    /// something changes (a new state, the host itself).
    Refused { refusals: Vec<(String, String)> },
    /// Every resource converged and verified at this generation.
    Converged { awaiting_confirmation: bool },
}

impl fmt::Display for GenerationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[(String, String)]| {
            items
                .iter()
                .map(|(resource, reason)| format!("{resource}: {reason}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            GenerationOutcome::Unknown => f.write_str("not accepted by the agent"),
            GenerationOutcome::Superseded { by } => write!(f, "superseded by generation {by}"),
            GenerationOutcome::RolledBack { to } => {
                write!(f, "rolled back to generation {to}: not confirmed in time")
            }
            GenerationOutcome::Progressing { pending } => {
                write!(f, "converging ({})", pending.join(", "))
            }
            GenerationOutcome::Failed { failures } => write!(f, "failing: {}", list(failures)),
            GenerationOutcome::Refused { refusals } => write!(f, "refused: {}", list(refusals)),
            GenerationOutcome::Converged {
                awaiting_confirmation: true,
            } => f.write_str("converged, awaiting confirmation"),
            GenerationOutcome::Converged {
                awaiting_confirmation: false,
            } => f.write_str("converged"),
        }
    }
}

impl AgentStatus {
    /// What became of `generation`. Refusals outrank failures, which
    /// outrank resources still converging: the worst news first.
    pub fn outcome(&self, generation: u64) -> GenerationOutcome {
        if self.rolled_back.contains(&generation) {
            let to = match &self.rollback {
                Some(rollback) if rollback.generation == generation => rollback.to,
                _ => self.effective_generation,
            };
            return GenerationOutcome::RolledBack { to };
        }
        if generation > self.generation {
            return GenerationOutcome::Unknown;
        }
        if self.effective_generation != generation {
            return GenerationOutcome::Superseded {
                by: self.generation,
            };
        }
        let mut pending = Vec::new();
        let mut failures = Vec::new();
        let mut refusals = Vec::new();
        for (name, resource) in &self.resources {
            match &resource.condition {
                Condition::Ready { generation: at } if *at == generation => {}
                Condition::Ready { .. } | Condition::Progressing => pending.push(name.clone()),
                Condition::Failed { reason, .. } => failures.push((name.clone(), reason.clone())),
                Condition::Refused { reason } => refusals.push((name.clone(), reason.clone())),
            }
        }
        if !refusals.is_empty() {
            GenerationOutcome::Refused { refusals }
        } else if !failures.is_empty() {
            GenerationOutcome::Failed { failures }
        } else if !pending.is_empty() {
            GenerationOutcome::Progressing { pending }
        } else {
            GenerationOutcome::Converged {
                awaiting_confirmation: self.awaiting_confirmation == Some(generation),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(condition: Condition) -> ResourceStatus {
        ResourceStatus {
            condition,
            intentional_changes: 0,
            corrective_changes: 0,
            converged_generation: None,
            last_change: None,
        }
    }

    fn status(generation: u64, resources: &[(&str, Condition)]) -> AgentStatus {
        AgentStatus {
            host: Some("eve".into()),
            generation,
            effective_generation: generation,
            resources: resources
                .iter()
                .map(|(name, c)| ((*name).to_owned(), resource(c.clone())))
                .collect(),
            ..AgentStatus::default()
        }
    }

    #[test]
    fn a_generation_converges_only_when_every_resource_is_ready_at_it() {
        let ready = |generation| Condition::Ready { generation };
        let s = status(3, &[("addresses", ready(3)), ("service postfix", ready(2))]);
        assert_eq!(
            s.outcome(3),
            GenerationOutcome::Progressing {
                pending: vec!["service postfix".into()]
            }
        );
        let s = status(3, &[("addresses", ready(3)), ("service postfix", ready(3))]);
        assert_eq!(
            s.outcome(3),
            GenerationOutcome::Converged {
                awaiting_confirmation: false
            }
        );
        assert_eq!(s.outcome(4), GenerationOutcome::Unknown);
        assert_eq!(s.outcome(2), GenerationOutcome::Superseded { by: 3 });
    }

    #[test]
    fn the_worst_news_comes_first() {
        let s = status(
            5,
            &[
                ("a", Condition::Progressing),
                (
                    "b",
                    Condition::Failed {
                        reason: "busy".into(),
                        retries: 2,
                    },
                ),
                (
                    "c",
                    Condition::Refused {
                        reason: "lockout".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            s.outcome(5).to_string(),
            "refused: c: lockout",
            "{:?}",
            s.outcome(5)
        );
    }

    #[test]
    fn a_rolled_back_generation_is_never_converged() {
        // Every resource is ready, at the generation rolled back to.
        let mut s = status(7, &[("addresses", Condition::Ready { generation: 6 })]);
        s.effective_generation = 6;
        s.rolled_back = vec![7];
        s.rollback = Some(Rollback {
            generation: 7,
            to: 6,
            at_unix: 1,
            reason: "not confirmed within 120s".into(),
        });
        assert_eq!(s.outcome(7), GenerationOutcome::RolledBack { to: 6 });
        // The status document reads back as written (the client's side).
        let text = serde_json::to_string(&s).expect("serialize");
        let back: AgentStatus = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, s);
    }
}
