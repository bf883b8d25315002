//! What the controller persists about one migration — everything needed to
//! resume after a crash, as Argo Rollouts keeps a rollout's step: the phase
//! reached, the target, the transition in flight with its step index, the
//! hash of its plan, the generation sent to each host, each gate run with its
//! outcome and times, the intents admins sent, and the history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One migration's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    pub migration: String,
    /// The last phase reached (`None`: none yet).
    pub phase: Option<String>,
    /// Where the controller drives the migration.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Intent>,
    /// Hosts an admin declared down (`mailctl fence`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fenced: BTreeMap<String, Intent>,
    /// Approvals, by phase, not yet used by an approval gate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<String, Intent>,
    /// Why the migration is being rolled back, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    /// The generation last confirmed on each host.
    #[serde(default)]
    pub generations: BTreeMap<String, u64>,
    #[serde(default)]
    pub history: Vec<Event>,
}

/// A transition in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    /// A rollback (towards an earlier phase), not a step forward.
    #[serde(default)]
    pub rollback: bool,
    /// The plan's hash: a plan that changed under a running transition
    /// (new manifests) is noticed and re-planned after the current step.
    pub plan_hash: String,
    /// The step in progress (an index into the plan's steps).
    pub step: usize,
    pub step_started_unix: u64,
    /// The generation each host was given in this step.
    #[serde(default)]
    pub sent: BTreeMap<String, u64>,
    /// The runs of this phase's gates, newest last.
    #[serde(default)]
    pub gates: Vec<GateRun>,
    /// What the step waits for, in words (`waiting for bob: unreachable
    /// since 02:14:03 (connection refused)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// One run of a gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRun {
    pub gate: String,
    /// Counts the runs of this gate in this transition, from 1 (`retry`
    /// starts a new one; an earlier failed run cannot block it).
    pub run: u32,
    pub started_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<GateOutcome>,
    /// Why, in words, with what was measured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GateOutcome {
    Passed,
    Failed,
    /// Could not be measured (the gate kind is not built, a probe could
    /// not run): neither passed nor failed; the migration pauses.
    Inconclusive,
}

/// An admin's intent: when and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    pub at_unix: u64,
    /// The name in the admin's certificate.
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A line of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub at_unix: u64,
    pub what: String,
}

impl MigrationRecord {
    pub fn new(migration: &str, target: &str) -> MigrationRecord {
        MigrationRecord {
            migration: migration.to_owned(),
            phase: None,
            target: target.to_owned(),
            transition: None,
            paused: None,
            fenced: BTreeMap::new(),
            approvals: BTreeMap::new(),
            rollback_reason: None,
            generations: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    pub fn log(&mut self, at_unix: u64, what: impl Into<String>) {
        self.history.push(Event {
            at_unix,
            what: what.into(),
        });
    }
}
