//! Runs reconciles: one worker per resource, so a resource never reconciles
//! twice at once; triggers that arrive while it runs merge into one more run;
//! failures back off exponentially per resource.
//!
//! A worker is woken, not told why: a new desired state, a kernel event and a
//! periodic resync all ask the same question — does the host match? — which
//! keeps drift repair and intentional change on one path.
//!
//! A new desired state is converged in the order `apply --local` uses
//! ([`Converge::resources`]): addresses and the firewall together, then each
//! file with its handlers, tasks, services. Each activation of a state is a
//! *round*; a worker's first attempt in a round waits until every resource
//! before it has made its own attempt in that round (converged or failed: a
//! failing file does not hold the services back for ever, as in `apply`).
//! So a service starts on the new `main.cf`, after its `postmap` handler ran.
//! Drift repairs within a round do not wait for anyone.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailctl_schemas::model::HostSpec;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::desired::Desired;
use super::status::StatusBoard;
use crate::driver::Resource;
use crate::reconcile::{Applied, Error, Reconciler, error_chain};

/// What the scheduler needs from the reconciler (a seam for tests).
pub trait Converge: Send + Sync + 'static {
    /// The resources a spec declares, in apply order.
    fn resources(&self, spec: &HostSpec) -> Vec<Resource>;
    /// Converge one resource and verify it.
    fn converge(
        &self,
        spec: &HostSpec,
        resource: &Resource,
    ) -> impl Future<Output = Result<Applied, Error>> + Send;
}

impl Converge for Reconciler {
    fn resources(&self, spec: &HostSpec) -> Vec<Resource> {
        Reconciler::resources(self, spec)
    }

    fn converge(
        &self,
        spec: &HostSpec,
        resource: &Resource,
    ) -> impl Future<Output = Result<Applied, Error>> + Send {
        self.apply_resource(spec, resource)
    }
}

/// Longest wait between two attempts of a failing resource.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

fn backoff(retries: u32) -> Duration {
    let exp = retries.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

struct Worker {
    resource: Resource,
    wake: Arc<Notify>,
    /// Told when the resources before this one made their attempt.
    turn: Arc<Notify>,
    task: JoinHandle<()>,
}

/// One resource's place in the current round.
#[derive(Debug)]
struct Place {
    name: String,
    /// Addresses and the firewall go together, waiting for nobody.
    network: bool,
    turn: Arc<Notify>,
}

/// Where the current round stands, shared by the workers. Every operation
/// is O(1) per resource (a host may declare tens of thousands of files).
#[derive(Debug, Default)]
struct Rounds {
    /// Bumped each time a desired state is activated.
    round: u64,
    /// The resources of the current state, in apply order.
    order: Vec<Place>,
    /// Each resource's position in `order`.
    index: HashMap<String, usize>,
    /// The last round in which each resource made an attempt.
    attempted: HashMap<String, u64>,
    /// How many resources from the start of `order` made their attempt in
    /// this round.
    done: usize,
}

impl Rounds {
    /// Whether every resource before `name` has made its attempt in the
    /// current round.
    fn turn_of(&self, name: &str) -> bool {
        match self.index.get(name) {
            Some(&at) => self.order[at].network || self.done >= at,
            None => true,
        }
    }

    /// Whether `name` still has to make its attempt in the current round.
    fn first_attempt(&self, name: &str) -> bool {
        self.attempted.get(name).is_none_or(|r| *r < self.round)
    }

    /// Count the resources that made their attempt, and tell the next one.
    fn advance(&mut self) {
        while self
            .order
            .get(self.done)
            .is_some_and(|p| !self.first_attempt(&p.name))
        {
            self.done += 1;
        }
        if let Some(next) = self.order.get(self.done) {
            next.turn.notify_one();
        }
    }
}

/// The set of resource workers for the current desired state.
pub struct Scheduler<C: Converge> {
    converge: Arc<C>,
    board: Arc<StatusBoard>,
    desired: watch::Receiver<Option<Arc<Desired>>>,
    rounds: Arc<Mutex<Rounds>>,
    workers: HashMap<String, Worker>,
}

impl<C: Converge> std::fmt::Debug for Scheduler<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.workers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<C: Converge> Scheduler<C> {
    pub fn new(
        converge: Arc<C>,
        board: Arc<StatusBoard>,
        desired: watch::Receiver<Option<Arc<Desired>>>,
    ) -> Self {
        Scheduler {
            converge,
            board,
            desired,
            rounds: Arc::new(Mutex::new(Rounds::default())),
            workers: HashMap::new(),
        }
    }

    /// A new desired state (already published on the desired channel):
    /// start workers for the resources of `spec`, stop those of resources
    /// that left it (mailctl then leaves them alone), open a new round and
    /// wake every worker.
    pub fn sync(&mut self, spec: &HostSpec) {
        let wanted = self.converge.resources(spec);
        let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
        let declared: HashSet<&str> = names.iter().map(String::as_str).collect();
        self.workers.retain(|name, worker| {
            let keep = declared.contains(name.as_str());
            if !keep {
                worker.task.abort();
            }
            keep
        });
        self.board.retain(&declared);
        for (resource, name) in wanted.iter().zip(&names) {
            self.workers.entry(name.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                let turn = Arc::new(Notify::new());
                let task = tokio::spawn(work(
                    resource.clone(),
                    name.clone(),
                    wake.clone(),
                    turn.clone(),
                    self.converge.clone(),
                    self.board.clone(),
                    self.desired.clone(),
                    self.rounds.clone(),
                ));
                Worker {
                    resource: resource.clone(),
                    wake,
                    turn,
                    task,
                }
            });
        }
        {
            let mut rounds = lock(&self.rounds);
            rounds.round += 1;
            rounds.order = wanted
                .iter()
                .zip(&names)
                .filter_map(|(resource, name)| {
                    let worker = self.workers.get(name)?;
                    Some(Place {
                        name: name.clone(),
                        network: resource.is_network(),
                        turn: worker.turn.clone(),
                    })
                })
                .collect();
            rounds.index = names.iter().cloned().zip(0..).collect();
            rounds
                .attempted
                .retain(|name, _| declared.contains(name.as_str()));
            rounds.done = 0;
            rounds.advance();
        }
        self.trigger(|_| true);
    }

    /// Wake the workers of the matching resources.
    pub fn trigger(&self, which: impl Fn(&Resource) -> bool) {
        for worker in self.workers.values().filter(|w| which(&w.resource)) {
            worker.wake.notify_one();
        }
    }
}

impl<C: Converge> Drop for Scheduler<C> {
    fn drop(&mut self) {
        for worker in self.workers.values() {
            worker.task.abort();
        }
    }
}

fn lock(rounds: &Mutex<Rounds>) -> std::sync::MutexGuard<'_, Rounds> {
    rounds
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[allow(clippy::too_many_arguments)]
async fn work<C: Converge>(
    resource: Resource,
    name: String,
    wake: Arc<Notify>,
    turn: Arc<Notify>,
    converge: Arc<C>,
    board: Arc<StatusBoard>,
    desired: watch::Receiver<Option<Arc<Desired>>>,
    rounds: Arc<Mutex<Rounds>>,
) {
    let mut retries = 0u32;
    loop {
        wake.notified().await;
        // The first attempt of a round waits for the resources before it.
        let round = loop {
            let told = turn.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            {
                let now = lock(&rounds);
                if !now.first_attempt(&name) || now.turn_of(&name) {
                    break now.round;
                }
            }
            told.await;
        };
        let Some(current) = desired.borrow().clone() else {
            continue;
        };
        board.progressing(&name);
        // Boxed: the reconcile future is large, and a host may hold tens of
        // thousands of idle workers; each keeps only a pointer while it waits.
        let outcome = Box::pin(converge.converge(&current.spec, &resource)).await;
        {
            let mut now = lock(&rounds);
            let attempted = now.attempted.entry(name.clone()).or_default();
            *attempted = (*attempted).max(round);
            if round == now.round {
                now.advance();
            }
        }
        match outcome {
            Ok(applied) => {
                retries = 0;
                let cause = board.converged(&name, current.generation, applied.changes.len());
                for change in &applied.changes {
                    tracing::info!(resource = %name, generation = current.generation, ?cause, "{change}");
                }
                for effect in &applied.effects {
                    tracing::info!(resource = %name, "{effect}");
                }
            }
            Err(error) if !error.retry_can_help() => {
                retries = 0;
                let reason = error_chain(&error);
                tracing::warn!(resource = %name, "refused: {reason}");
                board.refused(&name, reason);
            }
            Err(error) => {
                retries += 1;
                let reason = error_chain(&error);
                let delay = backoff(retries);
                tracing::warn!(resource = %name, retries, retry_in = ?delay, "{reason}");
                board.failed(&name, reason, retries);
                // A new trigger (say, a fixed manifest) cuts the wait short.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = wake.notified() => {}
                }
                wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests;
