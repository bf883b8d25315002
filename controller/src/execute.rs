//! The step executor: drives one migration from the phase it reached to its
//! target, one transition at a time, one step at a time, persisting the
//! record before and after every step so a controller killed at any point
//! resumes where it was (steps are idempotent: an agent answers a state it
//! already has with the generation it gave it).
//!
//! - A state step (release, acquire) puts each host's state, waits until
//!   its agent reports that generation converged — observed, not assumed —
//!   and confirms it (the agent's magic rollback stays on for every state
//!   the controller sends: a controller that dies mid-step leaves no
//!   half-confirmed host). A release step waits for *every* host of the
//!   migration to report its state in force converged, so no exclusive
//!   address is acquired while a host that may hold it has not been seen
//!   without it; an unreachable host stops the transition until it answers
//!   or an admin fences it (`mailctl fence`).
//! - Final syncs run each job once and need it verified.
//! - Gates run in order; `approval` waits for `mailctl approve`, `soak`
//!   for its duration; the mail gates come with the next issue, and until
//!   then are inconclusive: the migration pauses and says so.
//!
//! Time is tokio's, so the executor runs under a paused clock in tests;
//! timestamps in the record come from [`crate::clock`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mailctl_api::{AgentStatus, GenerationOutcome, JobStatus};
use mailctl_schemas::model::{
    GateCheck, GateFailurePolicy, Host, HostSpec, ManifestSet, Migration, Phase,
};
use tokio::sync::Notify;

use crate::clock;
use crate::plan::{Current, Step, TransitionPlan, plan_transition};
use crate::record::{GateOutcome, GateRun, Intent, MigrationRecord, Transition};
use crate::store::{Store, StoreError};

/// Why an agent could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// The agent was not reached, or was not ready: asking again may work.
    pub retry_can_help: bool,
    pub message: String,
}

/// What the executor asks of the agents (the production implementation is
/// [`crate::agents::ApiAgents`], over mutual TLS).
pub trait Agents: Send + Sync {
    fn put(&self, host: &str, yaml: &str) -> impl Future<Output = Result<u64, AgentError>> + Send;
    fn status(&self, host: &str) -> impl Future<Output = Result<AgentStatus, AgentError>> + Send;
    fn confirm(
        &self,
        host: &str,
        generation: u64,
    ) -> impl Future<Output = Result<(), AgentError>> + Send;
    fn sync_run(
        &self,
        host: &str,
        job: &str,
    ) -> impl Future<Output = Result<JobStatus, AgentError>> + Send;
    fn point_of_no_return(&self, host: &str)
    -> impl Future<Output = Result<(), AgentError>> + Send;
}

/// How a drive ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target phase is reached.
    Reached(String),
    /// Stopped where it stands until an admin acts (`resume`, `approve`,
    /// `retry`, `fence`); the reason says what happened.
    Paused(String),
    /// A rollback towards the previous phase completed: never a success.
    RolledBack { to: Option<String>, reason: String },
}

/// The record, shared between the executor and the admins' intents.
#[derive(Debug)]
pub struct Shared {
    record: Mutex<MigrationRecord>,
    /// Woken when an intent changes the record.
    pub changed: Notify,
    /// Where the drive reports what it measures (the daemon's `/metrics`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Shared {
    pub fn new(record: MigrationRecord) -> Arc<Shared> {
        Arc::new(Shared {
            record: Mutex::new(record),
            changed: Notify::new(),
            metrics: None,
        })
    }

    /// A record whose drive reports to `metrics`.
    pub fn with_metrics(
        record: MigrationRecord,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            record: Mutex::new(record),
            changed: Notify::new(),
            metrics: Some(metrics),
        })
    }

    fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.metrics.as_deref()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MigrationRecord) -> R) -> R {
        let mut guard = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn snapshot(&self) -> MigrationRecord {
        self.with(|r| r.clone())
    }

    /// An admin's approval of `phase`'s approval gate.
    pub fn approve(&self, phase: &str, by: &str) {
        self.with(|r| {
            r.approvals.insert(phase.to_owned(), intent(by, ""));
            r.log(clock::unix_now(), format!("{by} approved {phase}"));
        });
        self.changed.notify_waiters();
    }

    /// An admin's approval, taken only while an approval gate of the
    /// transition in flight is running (`approval_gates`: the names of the
    /// target phase's approval gates), checked and recorded at once: an
    /// approval given at another moment would pass a later gate nobody
    /// looked at.
    pub fn approve_waiting(&self, approval_gates: &[String], by: &str) -> Result<String, String> {
        let approved = self.with(|r| {
            let t = r.transition.as_ref()?;
            let running = t.gates.last().filter(|g| g.outcome.is_none())?;
            if !approval_gates.contains(&running.gate) {
                return None;
            }
            let phase = t.to.clone();
            let gate = running.gate.clone();
            r.approvals.insert(phase.clone(), intent(by, ""));
            r.log(clock::unix_now(), format!("{by} approved {phase}"));
            Some(format!("{phase} (gate {gate})"))
        });
        match approved {
            Some(what) => {
                self.changed.notify_waiters();
                Ok(what)
            }
            None => Err("waits for no approval".into()),
        }
    }

    /// An admin's statement that `host` is down.
    pub fn fence(&self, host: &str, by: &str, reason: &str) {
        self.with(|r| {
            r.fenced.insert(host.to_owned(), intent(by, reason));
            r.log(
                clock::unix_now(),
                format!("{by} fenced {host}: {reason} (the migration goes on without it)"),
            );
        });
        self.changed.notify_waiters();
    }

    pub fn pause(&self, by: &str, reason: &str) {
        self.with(|r| {
            r.paused = Some(intent(by, reason));
            r.log(
                clock::unix_now(),
                format!("{by} paused the migration: {reason}"),
            );
        });
        self.changed.notify_waiters();
    }

    pub fn resume(&self, by: &str) {
        self.with(|r| {
            if r.paused.take().is_some() {
                r.log(clock::unix_now(), format!("{by} resumed the migration"));
            }
        });
        self.changed.notify_waiters();
    }
}

fn intent(by: &str, reason: &str) -> Intent {
    Intent {
        at_unix: clock::unix_now(),
        by: by.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Polling of agents while a step waits: from `FIRST_POLL`, doubling to
/// `LAST_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(100);
const LAST_POLL: Duration = Duration::from_secs(5);

/// Drives one migration.
pub struct Executor<'a, A: Agents, S: Store> {
    pub agents: &'a A,
    pub store: &'a S,
    pub set: &'a ManifestSet,
    pub migration: &'a Migration,
    pub shared: Arc<Shared>,
}

impl<A: Agents, S: Store> std::fmt::Debug for Executor<'_, A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("migration", &self.migration.name)
            .finish_non_exhaustive()
    }
}

/// An error that stops the drive: the store failed (nothing can be
/// promised without it).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<A: Agents, S: Store> Executor<'_, A, S> {
    fn phase(&self, name: &str) -> Option<&Phase> {
        self.set.phases_of(self.migration).find(|p| p.name == name)
    }

    fn save(&self) -> Result<(), ExecuteError> {
        let record = self.shared.snapshot();
        self.store.save(&record)?;
        Ok(())
    }

    fn log(&self, what: impl Into<String>) {
        self.shared.with(|r| r.log(clock::unix_now(), what));
    }

    /// The next phase towards the target, and whether it is a step back.
    fn next(&self, record: &MigrationRecord) -> Option<(String, bool)> {
        let phases = &self.migration.phases;
        let target = phases.iter().position(|p| *p == record.target)?;
        let at = record
            .phase
            .as_ref()
            .and_then(|p| phases.iter().position(|q| q == p));
        match at {
            None => Some((phases.first()?.clone(), false)),
            Some(at) if at < target => Some((phases[at + 1].clone(), false)),
            Some(at) if at > target => Some((phases[at - 1].clone(), true)),
            Some(_) => None,
        }
    }

    /// Runs transitions until the target is reached, or the migration
    /// pauses or rolls back.
    pub async fn drive(&self) -> Result<Outcome, ExecuteError> {
        loop {
            let record = self.shared.snapshot();
            if let Some(paused) = &record.paused {
                return Ok(Outcome::Paused(format!(
                    "paused by {}: {}",
                    paused.by, paused.reason
                )));
            }
            let transition = match record.transition.clone() {
                Some(transition) => transition,
                None => {
                    let Some((to, rollback)) = self.next(&record) else {
                        return Ok(Outcome::Reached(record.phase.unwrap_or_default()));
                    };
                    self.begin(&record, &to, rollback)?
                }
            };
            match self.run_transition(transition).await? {
                Some(outcome) => return Ok(outcome),
                None => continue,
            }
        }
    }

    /// The states in force: the phase reached (the controller put it), or
    /// nothing known before the first phase.
    fn current(&self, record: &MigrationRecord) -> Current {
        phase_states(self.set, self.migration, record.phase.as_deref())
    }

    fn plan(&self, record: &MigrationRecord, to: &str) -> Result<TransitionPlan, String> {
        let phase = self
            .phase(to)
            .ok_or_else(|| format!("phase {to} has no Phase document"))?;
        plan_transition(self.migration, &self.current(record), phase).map_err(|e| e.to_string())
    }

    fn begin(
        &self,
        record: &MigrationRecord,
        to: &str,
        rollback: bool,
    ) -> Result<Transition, ExecuteError> {
        // A second line of defence behind `apply` and `rollback`: never a
        // step back from a phase at or past the point of no return.
        if rollback
            && let (Some(pnr), Some(phase)) = (&self.migration.point_of_no_return, &record.phase)
        {
            let index = |name: &str| self.migration.phases.iter().position(|p| p == name);
            if index(pnr) <= index(phase) {
                let reason = format!(
                    "a step back from {phase} to {to} is refused: {phase} is at or past the point of no return ({pnr}) and going back needs a reverse sync"
                );
                self.shared.with(|r| {
                    r.paused = Some(intent("controller", &reason));
                    r.log(clock::unix_now(), reason.clone());
                });
                self.save()?;
                return Ok(refused(record, to, rollback));
            }
        }
        let plan_hash = match self.plan(record, to) {
            Ok(plan) => hash(&plan),
            Err(reason) => {
                // Refused before it starts: nothing is sent.
                self.shared.with(|r| {
                    r.paused = Some(intent(
                        "controller",
                        &format!("transition to {to} refused: {reason}"),
                    ));
                    r.log(
                        clock::unix_now(),
                        format!("transition to {to} refused: {reason}"),
                    );
                });
                self.save()?;
                return Ok(refused(record, to, rollback));
            }
        };
        let transition = Transition {
            from: record.phase.clone(),
            to: to.to_owned(),
            rollback,
            plan_hash,
            step: 0,
            step_started_unix: clock::unix_now(),
            sent: BTreeMap::new(),
            gates: Vec::new(),
            waiting: None,
        };
        self.shared.with(|r| {
            r.transition = Some(transition.clone());
            let from = r
                .phase
                .clone()
                .unwrap_or_else(|| "the hosts as they are".into());
            let verb = if rollback { "rolling back" } else { "moving" };
            r.log(clock::unix_now(), format!("{verb} from {from} to {to}"));
        });
        self.save()?;
        Ok(transition)
    }

    /// Runs the steps of `transition` from its step index. `None`: the
    /// phase was reached (go on to the next one).
    async fn run_transition(
        &self,
        transition: Transition,
    ) -> Result<Option<Outcome>, ExecuteError> {
        if transition.step == usize::MAX {
            let reason = self
                .shared
                .snapshot()
                .paused
                .map(|p| p.reason)
                .unwrap_or_default();
            return Ok(Some(Outcome::Paused(reason)));
        }
        let record = self.shared.snapshot();
        // Planned from the phase the transition started at; a plan that
        // differs from the one begun (the manifests changed) is re-planned
        // from here, and history says so.
        let base = MigrationRecord {
            phase: transition.from.clone(),
            ..record.clone()
        };
        let plan = match self.plan(&base, &transition.to) {
            Ok(plan) => plan,
            Err(reason) => {
                self.shared.with(|r| {
                    r.paused = Some(intent("controller", &reason));
                    r.log(
                        clock::unix_now(),
                        format!("transition to {} refused: {reason}", transition.to),
                    );
                });
                self.save()?;
                return Ok(Some(Outcome::Paused(reason)));
            }
        };
        if hash(&plan) != transition.plan_hash {
            self.shared.with(|r| {
                if let Some(t) = &mut r.transition {
                    t.plan_hash = hash(&plan);
                }
                r.log(
                    clock::unix_now(),
                    format!(
                        "the manifests changed during the transition to {}: re-planned; going on at step {}",
                        transition.to,
                        transition.step + 1
                    ),
                );
            });
            self.save()?;
        }
        for (index, step) in plan.steps.iter().enumerate().skip(transition.step) {
            match self.interrupted(&transition) {
                None => {}
                Some(StepResult::Stop(outcome)) => return Ok(Some(outcome)),
                Some(_) => return Ok(None),
            }
            self.shared.with(|r| {
                if let Some(t) = &mut r.transition {
                    if t.step != index {
                        t.step = index;
                        t.sent.clear();
                    }
                    t.step_started_unix = clock::unix_now();
                }
            });
            self.save()?;
            let step_started = tokio::time::Instant::now();
            match self.run_step(&transition, step).await? {
                StepResult::Done => {}
                StepResult::Stop(outcome) => {
                    self.save()?;
                    return Ok(Some(outcome));
                }
                StepResult::Continue => {
                    self.save()?;
                    return Ok(None);
                }
            }
            if let Some(metrics) = self.shared.metrics() {
                metrics.step(
                    &self.migration.name,
                    &step.kind().to_string(),
                    step_started.elapsed().as_secs_f64(),
                );
            }
            self.log(format!("{}: {} done", transition.to, step.kind()));
        }
        match self.interrupted(&transition) {
            None => {}
            Some(StepResult::Stop(outcome)) => return Ok(Some(outcome)),
            Some(_) => return Ok(None),
        }
        // Reached.
        let reason = self.shared.with(|r| {
            r.transition = None;
            r.approvals.remove(&transition.to);
            r.phase = Some(transition.to.clone());
            r.log(clock::unix_now(), format!("reached {}", transition.to));
            if transition.rollback {
                r.rollback_reason.take()
            } else {
                None
            }
        });
        self.save()?;
        if transition.rollback {
            return Ok(Some(Outcome::RolledBack {
                to: Some(transition.to.clone()),
                reason: reason.unwrap_or_else(|| "the target was moved back".into()),
            }));
        }
        Ok(None)
    }

    async fn run_step(
        &self,
        transition: &Transition,
        step: &Step,
    ) -> Result<StepResult, ExecuteError> {
        match step {
            Step::Release { hosts } => self.put_and_observe(transition, hosts, true).await,
            Step::Acquire { hosts } => {
                if self.migration.point_of_no_return.as_deref() == Some(transition.to.as_str())
                    && !transition.rollback
                {
                    for host in self.migration.hosts.keys() {
                        if self.is_fenced(host) {
                            continue;
                        }
                        if let Err(e) = self.agents.point_of_no_return(host).await {
                            return Ok(self.pause(format!(
                                "telling {host} the point of no return failed: {}",
                                e.message
                            )));
                        }
                    }
                    self.log(format!(
                        "point of no return: {} (agents told)",
                        transition.to
                    ));
                }
                self.put_and_observe(transition, hosts, false).await
            }
            Step::FinalSyncs { syncs } => {
                for sync in syncs {
                    match self.agents.sync_run(&sync.host, &sync.job).await {
                        Ok(status) if status.verified() => {
                            self.log(format!(
                                "final sync {} on {}: run {} verified",
                                sync.job, sync.host, status.run
                            ));
                        }
                        Ok(status) => {
                            let why = status
                                .error
                                .clone()
                                .or_else(|| status.verification.as_ref().map(ToString::to_string))
                                .unwrap_or_else(|| "no verification".into());
                            return Ok(self.pause(format!(
                                "final sync {} on {} did not verify: {why}",
                                sync.job, sync.host
                            )));
                        }
                        Err(e) => {
                            return Ok(self.pause(format!(
                                "final sync {} on {}: {}",
                                sync.job, sync.host, e.message
                            )));
                        }
                    }
                }
                Ok(StepResult::Done)
            }
            Step::Gates { gates } => {
                for gate in gates {
                    // A gate that passed in this transition is not run again
                    // after a restart; one in flight goes on (a soak counts
                    // the time already spent); a failed or inconclusive one
                    // gets a fresh run (`retry`), which the old cannot block.
                    let latest = self.shared.with(|r| {
                        r.transition.as_ref().and_then(|t| {
                            t.gates.iter().rev().find(|g| g.gate == gate.name).cloned()
                        })
                    });
                    let (run, started) = match latest {
                        Some(run) if run.outcome == Some(GateOutcome::Passed) => continue,
                        Some(run) if run.outcome.is_none() => (run.run, run.started_unix),
                        _ => self.start_gate(&gate.name),
                    };
                    self.save()?;
                    let (outcome, reason) = self.run_gate(transition, &gate.check, started).await;
                    if let Some(stop) = self.interrupted(transition) {
                        return Ok(stop);
                    }
                    self.finish_gate(&gate.name, run, outcome, &reason);
                    self.set_waiting(None);
                    self.save()?;
                    match outcome {
                        GateOutcome::Passed => {}
                        GateOutcome::Inconclusive => {
                            return Ok(self.pause(format!("gate {}: {reason}", gate.name)));
                        }
                        GateOutcome::Failed => match self.migration.on_gate_failure {
                            GateFailurePolicy::Pause => {
                                return Ok(
                                    self.pause(format!("gate {} failed: {reason}", gate.name))
                                );
                            }
                            GateFailurePolicy::Rollback => {
                                return Ok(self.roll_back(
                                    transition,
                                    format!("gate {} failed: {reason}", gate.name),
                                ));
                            }
                        },
                    }
                }
                Ok(StepResult::Done)
            }
        }
    }

    /// Whether the drive must stop what it does: paused, or the transition
    /// it runs replaced (an admin's rollback).
    fn interrupted(&self, transition: &Transition) -> Option<StepResult> {
        let record = self.shared.snapshot();
        if let Some(paused) = record.paused {
            return Some(StepResult::Stop(Outcome::Paused(format!(
                "paused by {}: {}",
                paused.by, paused.reason
            ))));
        }
        let same = record.transition.as_ref().is_some_and(|t| {
            t.to == transition.to && t.from == transition.from && t.rollback == transition.rollback
        });
        (!same).then_some(StepResult::Continue)
    }

    fn is_fenced(&self, host: &str) -> bool {
        self.shared.with(|r| r.fenced.contains_key(host))
    }

    fn pause(&self, reason: String) -> StepResult {
        self.shared.with(|r| {
            r.paused = Some(intent("controller", &reason));
            r.log(clock::unix_now(), format!("paused: {reason}"));
        });
        StepResult::Stop(Outcome::Paused(reason))
    }

    /// A failed gate with `onGateFailure: rollback`: the target becomes the
    /// phase the transition came from, and the same planner takes the
    /// migration back, break-before-make too. Past the point of no return
    /// new mail lives on the new host: going back would need a reverse
    /// sync, which this version cannot run, so the rollback is refused and
    /// the migration pauses, saying so.
    fn roll_back(&self, transition: &Transition, reason: String) -> StepResult {
        let Some(back) = transition.from.clone() else {
            return self.pause(format!(
                "{reason}; there is no earlier phase to roll back to"
            ));
        };
        if let Some(pnr) = &self.migration.point_of_no_return {
            let index = |name: &str| self.migration.phases.iter().position(|p| p == name);
            if index(pnr) <= index(&transition.to) {
                return self.pause(format!(
                    "{reason}; rolling back to {back} is refused: {} is at or past the point of no return ({pnr}), new mail may be on the new host, and going back needs a reverse sync that copies it back (reverseSyncs), which this migration does not declare",
                    transition.to
                ));
            }
        }
        self.shared.with(|r| {
            r.log(
                clock::unix_now(),
                format!("{reason}: rolling back to {back}"),
            );
            // The phase left counts as reached: its states are in force.
            r.phase = Some(transition.to.clone());
            r.transition = None;
            r.approvals.clear();
            r.target = back;
            r.rollback_reason = Some(reason);
        });
        StepResult::Continue
    }

    /// A new run of gate `name`: its number and start time.
    fn start_gate(&self, name: &str) -> (u32, u64) {
        let now = clock::unix_now();
        self.shared.with(|r| {
            let Some(t) = &mut r.transition else {
                return (0, now);
            };
            let run = t.gates.iter().filter(|g| g.gate == name).count() as u32 + 1;
            t.gates.push(GateRun {
                gate: name.to_owned(),
                run,
                started_unix: now,
                finished_unix: None,
                outcome: None,
                reason: String::new(),
            });
            (run, now)
        })
    }

    fn finish_gate(&self, name: &str, run: u32, outcome: GateOutcome, reason: &str) {
        if let Some(metrics) = self.shared.metrics() {
            metrics.gate(&self.migration.name, name, outcome_word(outcome));
        }
        self.shared.with(|r| {
            if let Some(t) = &mut r.transition
                && let Some(g) = t.gates.iter_mut().find(|g| g.gate == name && g.run == run)
            {
                g.finished_unix = Some(clock::unix_now());
                g.outcome = Some(outcome);
                g.reason = reason.to_owned();
            }
            r.log(
                clock::unix_now(),
                format!(
                    "gate {name} (run {run}): {}{}",
                    outcome_word(outcome),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                ),
            );
        });
    }

    /// Runs one gate; `started` is when its run began (a soak resumed after
    /// a restart waits only for what is left).
    async fn run_gate(
        &self,
        transition: &Transition,
        check: &GateCheck,
        started: u64,
    ) -> (GateOutcome, String) {
        let phase = transition.to.as_str();
        match check {
            GateCheck::Approval => loop {
                let notified = self.shared.changed.notified();
                if self.interrupted(transition).is_some() {
                    return (GateOutcome::Inconclusive, "interrupted".into());
                }
                let approved = self.shared.with(|r| r.approvals.remove(phase));
                if let Some(approval) = approved {
                    return (GateOutcome::Passed, format!("approved by {}", approval.by));
                }
                self.set_waiting(Some(format!("waiting for approval of {phase} (mailctl approve)")));
                notified.await;
            },
            GateCheck::Soak { duration } => {
                let spent = Duration::from_secs(clock::unix_now().saturating_sub(started));
                self.set_waiting(Some(format!("soaking for {duration}")));
                let sleep = tokio::time::sleep(duration.0.saturating_sub(spent));
                tokio::pin!(sleep);
                loop {
                    let notified = self.shared.changed.notified();
                    if self.interrupted(transition).is_some() {
                        return (GateOutcome::Inconclusive, "interrupted".into());
                    }
                    tokio::select! {
                        () = &mut sleep => break,
                        () = notified => {}
                    }
                }
                (GateOutcome::Passed, format!("soaked {duration}"))
            }
            _ => (
                GateOutcome::Inconclusive,
                "this gate kind is not built yet (the mail gates come next): check it by hand, remove it from the phase, `mailctl apply` and `mailctl retry`".into(),
            ),
        }
    }

    fn set_waiting(&self, waiting: Option<String>) {
        self.shared.with(|r| {
            if let Some(t) = &mut r.transition {
                t.waiting = waiting;
            }
        });
    }

    /// Puts each host's state of the step, then waits until every host
    /// (every host of the migration, for a release) reports it converged,
    /// confirming each.
    async fn put_and_observe(
        &self,
        transition: &Transition,
        hosts: &BTreeMap<String, HostSpec>,
        release: bool,
    ) -> Result<StepResult, ExecuteError> {
        let mut pending: BTreeMap<String, Option<u64>> =
            hosts.keys().map(|host| (host.clone(), None)).collect();
        if release {
            for host in self.migration.hosts.keys() {
                pending.entry(host.clone()).or_insert(None);
            }
        }
        let mut unreachable_since: BTreeMap<String, u64> = BTreeMap::new();
        let mut poll = FIRST_POLL;
        loop {
            if let Some(stop) = self.interrupted(transition) {
                return Ok(stop);
            }
            let mut waiting = Vec::new();
            for (host, generation) in pending.clone() {
                if self.is_fenced(&host) {
                    pending.remove(&host);
                    continue;
                }
                // Send (again, idempotently) until the agent took it.
                let generation = match (generation, hosts.get(&host)) {
                    (Some(g), _) => Some(g),
                    (None, Some(spec)) => {
                        match self.agents.put(&host, &host_yaml(&host, spec)).await {
                            Ok(g) => {
                                pending.insert(host.clone(), Some(g));
                                self.shared.with(|r| {
                                    if let Some(t) = &mut r.transition {
                                        t.sent.insert(host.clone(), g);
                                    }
                                });
                                self.save()?;
                                Some(g)
                            }
                            Err(e) if e.retry_can_help => {
                                if let Some(metrics) = self.shared.metrics() {
                                    metrics.reachable(&self.migration.name, &host, false);
                                }
                                if let Some(metrics) = self.shared.metrics() {
                                    metrics.reachable(&self.migration.name, &host, false);
                                }
                                let since = *unreachable_since
                                    .entry(host.clone())
                                    .or_insert_with(clock::unix_now);
                                waiting.push(format!(
                                    "waiting for {host}: unreachable since {} ({})",
                                    clock::time_of_day(since),
                                    e.message
                                ));
                                continue;
                            }
                            Err(e) => {
                                return Ok(
                                    self.pause(format!("{host} refused its state: {}", e.message))
                                );
                            }
                        }
                    }
                    (None, None) => None,
                };
                match self.agents.status(&host).await {
                    Err(e) => {
                        if let Some(metrics) = self.shared.metrics() {
                            metrics.reachable(&self.migration.name, &host, false);
                        }
                        let since = *unreachable_since
                            .entry(host.clone())
                            .or_insert_with(clock::unix_now);
                        waiting.push(format!(
                            "waiting for {host}: unreachable since {} ({})",
                            clock::time_of_day(since),
                            e.message
                        ));
                    }
                    Ok(status) => {
                        unreachable_since.remove(&host);
                        if let Some(metrics) = self.shared.metrics() {
                            metrics.reachable(&self.migration.name, &host, true);
                        }
                        let generation = generation.unwrap_or(status.effective_generation);
                        match status.outcome(generation) {
                            GenerationOutcome::Converged {
                                awaiting_confirmation,
                            } => {
                                if awaiting_confirmation
                                    && let Err(e) = self.agents.confirm(&host, generation).await
                                {
                                    waiting.push(format!("waiting for {host}: confirming generation {generation}: {}", e.message));
                                    continue;
                                }
                                self.shared.with(|r| {
                                    r.generations.insert(host.clone(), generation);
                                });
                                pending.remove(&host);
                            }
                            GenerationOutcome::RolledBack { .. }
                            | GenerationOutcome::Superseded { .. }
                                if hosts.contains_key(&host) =>
                            {
                                // Not ours any more (the agent rolled back while
                                // no controller confirmed it): send it again.
                                pending.insert(host.clone(), None);
                                waiting.push(format!("waiting for {host}: generation {generation} {}; sending the state again", status.outcome(generation)));
                            }
                            GenerationOutcome::Refused { refusals } => {
                                let list: Vec<String> = refusals
                                    .iter()
                                    .map(|(r, why)| format!("{r}: {why}"))
                                    .collect();
                                return Ok(
                                    self.pause(format!("{host} refused: {}", list.join("; ")))
                                );
                            }
                            other => waiting.push(format!("waiting for {host}: {other}")),
                        }
                    }
                }
            }
            if pending.is_empty() {
                self.set_waiting(None);
                self.save()?;
                return Ok(StepResult::Done);
            }
            self.set_waiting(Some(waiting.join("; ")));
            let notified = self.shared.changed.notified();
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = notified => {}
            }
            poll = (poll * 2).min(LAST_POLL);
        }
    }
}

fn outcome_word(outcome: GateOutcome) -> &'static str {
    match outcome {
        GateOutcome::Passed => "passed",
        GateOutcome::Failed => "failed",
        GateOutcome::Inconclusive => "inconclusive",
    }
}

enum StepResult {
    Done,
    /// The drive stops here (paused).
    Stop(Outcome),
    /// The record changed course (a rollback begins): plan anew.
    Continue,
}

/// A host's state as the YAML document its agent takes.
pub fn host_yaml(host: &str, spec: &HostSpec) -> String {
    let set = ManifestSet {
        hosts: vec![Host {
            name: host.to_owned(),
            spec: spec.clone(),
            origin: mailctl_schemas::diag::Origin {
                file: std::path::Path::new("controller").into(),
                position: Default::default(),
            },
        }],
        ..ManifestSet::default()
    };
    mailctl_schemas::render::to_yaml(&set)
}

/// A short, stable digest of a plan (what each step sends), to notice a
/// plan that changed under a running transition.
pub fn hash(plan: &TransitionPlan) -> String {
    // FNV-1a over the plan's debug form: stable within one build, which is
    // all a restarted controller of the same version compares against.
    let text = format!("{:?}", plan.steps);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A transition refused before it started (the record says why, and is
/// paused): [`Executor::run_transition`] stops at once.
fn refused(record: &MigrationRecord, to: &str, rollback: bool) -> Transition {
    Transition {
        from: record.phase.clone(),
        to: to.to_owned(),
        rollback,
        plan_hash: String::new(),
        step: usize::MAX,
        step_started_unix: 0,
        sent: BTreeMap::new(),
        gates: Vec::new(),
        waiting: None,
    }
}

/// The states of `phase` (`None`: before the first phase, nothing known).
pub fn phase_states(set: &ManifestSet, migration: &Migration, phase: Option<&str>) -> Current {
    let phase = phase.and_then(|p| set.phases_of(migration).find(|q| q.name == p));
    migration
        .hosts
        .keys()
        .map(|h| (h.clone(), phase.and_then(|p| p.hosts.get(h).cloned())))
        .collect()
}

/// An admin's `mailctl rollback`: back to the phase before the one in
/// force — or, with a transition in flight, to the phase it left — with the
/// same planner, break-before-make. Refused past the point of no return
/// (new mail may be on the new host; going back needs a reverse sync, which
/// this migration cannot run), before the first phase, and while a rollback
/// is already under way. The answer says what was done.
pub fn roll_back_intent(
    shared: &Shared,
    set: &ManifestSet,
    migration: &Migration,
    by: &str,
) -> Result<String, String> {
    let record = shared.snapshot();
    let index = |name: &str| migration.phases.iter().position(|p| p == name);
    let past_return = |phase: &str| {
        migration
            .point_of_no_return
            .as_deref()
            .is_some_and(|pnr| index(pnr) <= index(phase))
    };
    let refuse_past = |phase: &str| {
        format!(
            "rolling back {} is refused: {phase} is at or past the point of no return ({}); new mail may be on the new host, and going back needs a reverse sync that copies it back, which this migration does not declare",
            migration.name,
            migration.point_of_no_return.as_deref().unwrap_or_default()
        )
    };
    let (base, back) = match &record.transition {
        Some(t) if t.rollback => {
            return Err(format!(
                "{} is already rolling back to {}",
                migration.name, t.to
            ));
        }
        Some(t) => {
            let Some(back) = t.from.clone() else {
                return Err(format!(
                    "{} is moving to its first phase ({}): there is no earlier phase to roll back to; pause it instead",
                    migration.name, t.to
                ));
            };
            if past_return(&t.to) {
                return Err(refuse_past(&t.to));
            }
            // Planned from the states the hosts may hold: the phase left
            // when its acquire has not started, else the phase being
            // reached.
            let to = set
                .phases_of(migration)
                .find(|p| p.name == t.to)
                .ok_or_else(|| format!("phase {} has no Phase document", t.to))?;
            let plan = plan_transition(migration, &phase_states(set, migration, Some(&back)), to)
                .map_err(|e| e.to_string())?;
            let acquire = plan
                .steps
                .iter()
                .position(|s| matches!(s, Step::Acquire { .. }))
                .unwrap_or(0);
            let base = if t.step >= acquire {
                t.to.clone()
            } else {
                back.clone()
            };
            (base, back)
        }
        None => {
            let Some(phase) = record.phase.clone() else {
                return Err(format!(
                    "{} has reached no phase yet: nothing to roll back",
                    migration.name
                ));
            };
            let at = index(&phase).unwrap_or(0);
            if at == 0 {
                return Err(format!(
                    "{} is at its first phase ({phase}): there is no earlier phase to roll back to",
                    migration.name
                ));
            }
            if past_return(&phase) {
                return Err(refuse_past(&phase));
            }
            (phase, migration.phases[at - 1].clone())
        }
    };
    let to = set
        .phases_of(migration)
        .find(|p| p.name == back)
        .ok_or_else(|| format!("phase {back} has no Phase document"))?;
    let plan = plan_transition(migration, &phase_states(set, migration, Some(&base)), to)
        .map_err(|e| format!("rolling back to {back} cannot be planned: {e}"))?;
    let said = format!("{by} rolled back {} from {base} to {back}", migration.name);
    shared.with(|r| {
        r.phase = Some(base.clone());
        r.target = back.clone();
        r.paused = None;
        r.rollback_reason = Some(format!("{by} asked for it"));
        r.approvals.clear();
        r.transition = Some(Transition {
            from: Some(base.clone()),
            to: back.clone(),
            rollback: true,
            plan_hash: hash(&plan),
            step: 0,
            step_started_unix: clock::unix_now(),
            sent: BTreeMap::new(),
            gates: Vec::new(),
            waiting: None,
        });
        r.log(clock::unix_now(), said.clone());
    });
    shared.changed.notify_waiters();
    Ok(said)
}
