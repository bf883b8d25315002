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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mailctl_schemas::model::HostSpec;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::desired::Desired;
use super::status::StatusBoard;
use crate::driver::Resource;
use crate::error::Error;
use crate::reconcile::{Applied, Reconciler, error_chain};

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
    task: JoinHandle<()>,
}

/// Where the current round stands, shared by the workers.
#[derive(Debug, Default)]
struct Rounds {
    /// Bumped each time a desired state is activated.
    round: u64,
    /// The resources of the current state, in apply order, by name; the
    /// network ones (addresses, firewall) flagged, since they go together.
    order: Vec<(String, bool)>,
    /// The last round in which each resource made an attempt.
    attempted: HashMap<String, u64>,
}

impl Rounds {
    /// Whether every resource before `name` has made its attempt in the
    /// current round (the network resources wait for nobody).
    fn turn_of(&self, name: &str) -> bool {
        let Some(at) = self.order.iter().position(|(n, _)| n == name) else {
            return true;
        };
        if self.order[at].1 {
            return true;
        }
        self.order[..at]
            .iter()
            .all(|(n, _)| self.attempted.get(n).is_some_and(|r| *r >= self.round))
    }
}

fn is_network(resource: &Resource) -> bool {
    matches!(resource, Resource::Addresses | Resource::Firewall { .. })
}

/// The set of resource workers for the current desired state.
pub struct Scheduler<C: Converge> {
    converge: Arc<C>,
    board: Arc<StatusBoard>,
    desired: watch::Receiver<Option<Arc<Desired>>>,
    rounds: Arc<watch::Sender<Rounds>>,
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
            rounds: Arc::new(watch::Sender::new(Rounds::default())),
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
        self.rounds.send_modify(|rounds| {
            rounds.round += 1;
            rounds.order = names
                .iter()
                .cloned()
                .zip(wanted.iter().map(is_network))
                .collect();
            rounds.attempted.retain(|name, _| names.contains(name));
        });
        self.workers.retain(|name, worker| {
            let keep = names.contains(name);
            if !keep {
                worker.task.abort();
            }
            keep
        });
        self.board.retain(&names);
        for (resource, name) in wanted.into_iter().zip(names) {
            self.workers.entry(name.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                let task = tokio::spawn(work(
                    resource.clone(),
                    name,
                    wake.clone(),
                    self.converge.clone(),
                    self.board.clone(),
                    self.desired.clone(),
                    self.rounds.clone(),
                ));
                Worker {
                    resource,
                    wake,
                    task,
                }
            });
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

async fn work<C: Converge>(
    resource: Resource,
    name: String,
    wake: Arc<Notify>,
    converge: Arc<C>,
    board: Arc<StatusBoard>,
    desired: watch::Receiver<Option<Arc<Desired>>>,
    rounds: Arc<watch::Sender<Rounds>>,
) {
    let mut seen = rounds.subscribe();
    let mut retries = 0u32;
    loop {
        wake.notified().await;
        // The first attempt of a round waits for the resources before it.
        let round = {
            let now = seen.borrow();
            let first = now.attempted.get(&name).is_none_or(|r| *r < now.round);
            (!first).then_some(now.round)
        };
        let round = match round {
            Some(round) => round,
            // Never closed: this worker holds a sender.
            None => match seen.wait_for(|r| r.turn_of(&name)).await {
                Ok(now) => now.round,
                Err(_) => return,
            },
        };
        let Some(current) = desired.borrow().clone() else {
            continue;
        };
        board.progressing(&name);
        let outcome = converge.converge(&current.spec, &resource).await;
        rounds.send_if_modified(|r| {
            let attempted = r.attempted.entry(name.clone()).or_default();
            let newer = *attempted < round;
            *attempted = (*attempted).max(round);
            newer
        });
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
