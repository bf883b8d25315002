//! `mailctl agent`: keep converging this host to its desired state, without
//! the controller if need be.
//!
//! One event loop owns the desired state and its ledger; everything that can
//! change them (the manifest changing on disk, a confirmation, a rollback
//! deadline) arrives as an [`Event`]. Reconciles run in per-resource workers
//! ([`scheduler`]); the netlink monitor wakes the address worker the moment
//! someone removes a managed address, without waiting for a resync.

pub mod desired;
mod http;
pub mod scheduler;
pub mod status;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api;
use crate::config::AgentConfig;
use crate::driver::Resource;
use crate::fsutil::unix_now;
use crate::reconcile::{Config, Reconciler};
use desired::{Desired, DesiredError, Ledger, StateDir};
use scheduler::Scheduler;
use status::StatusBoard;

/// Things that change what the agent converges to.
#[derive(Debug)]
pub enum Event {
    /// The watched manifest path changed.
    SourceChanged,
    /// A validated state arrived through `PUT /v1/desired`; the reply is the
    /// generation it got (the same one again when it equals the newest).
    Put {
        candidate: Box<desired::Candidate>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// The controller confirms a generation that changed addresses or firewall.
    Confirm {
        generation: u64,
        reply: oneshot::Sender<Result<(), mailctl_api::ApiError>>,
    },
    /// The confirmation deadline of a generation passed.
    Deadline { generation: u64 },
    /// An address appeared or disappeared on this host.
    AddressesChanged,
    /// Time for a full resync.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Desired(#[from] DesiredError),
    #[error("cannot start the reconciler")]
    Reconciler(#[source] crate::reconcile::Error),
    #[error(transparent)]
    Tls(#[from] api::TlsError),
    #[error("cannot listen on {address}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot subscribe to address changes (netlink)")]
    Monitor(#[source] std::io::Error),
    #[error(
        "the state folder {path} is in use by another agent (pid {pid}); two agents on one state folder would undo each other: stop the other one, or give this one its own state_dir"
    )]
    StateHeld { path: PathBuf, pid: String },
    #[error("the state folder {path}: cannot lock it")]
    StateLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the certificate {path} is {found}, not an agent's: the agent serves with the agent-HOST/agent.pem that `mailctl certs init --agent HOST=ADDRESS` wrote (check [tls] cert in agent.toml)"
    )]
    NotAnAgentCertificate { path: PathBuf, found: String },
    #[error(
        "the certificate {path} is agent {found}'s, but agent.toml says host = \"{host}\": use the agent-{host} folder of `mailctl certs init`, or correct host"
    )]
    OtherHostsCertificate {
        path: PathBuf,
        found: String,
        host: String,
    },
}

/// Holds the state folder for this process (released by the kernel when
/// it ends, however it ends): a second agent on the same folder refuses to
/// start and names the first.
fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DaemonError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("agent.lock");
    let failed = |source| DaemonError::StateLock {
        path: dir.to_owned(),
        source,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A link planted as the lock file is refused, not truncated.
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(failed)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| writeln!(lock, "{}", std::process::id()))
                .map_err(failed)?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(DaemonError::StateHeld {
                path: dir.to_owned(),
                pid: pid.trim().to_owned(),
            })
        }
    }
}

/// The agent serves with an agent certificate, and its own host's when
/// agent.toml names the host: a controller's or admin's certificate (or
/// another host's) would make every client refuse it, or worse, mislead.
fn check_own_certificate(config: &AgentConfig) -> Result<(), DaemonError> {
    use mailctl_api::roles::{Peer, Role};
    let chain = mailctl_api::tls::certificates("agent certificate", &config.tls.cert)?;
    let role = chain
        .first()
        .and_then(|leaf| Peer::from_certificate(leaf).role);
    match (role, &config.host) {
        (Some(Role::Agent(found)), Some(host)) if &found != host => {
            Err(DaemonError::OtherHostsCertificate {
                path: config.tls.cert.clone(),
                found,
                host: host.clone(),
            })
        }
        (Some(Role::Agent(_)), _) => Ok(()),
        (other, _) => Err(DaemonError::NotAnAgentCertificate {
            path: config.tls.cert.clone(),
            found: other.map_or("a certificate with no mailctl role".into(), |r| {
                format!("{r}'s")
            }),
        }),
    }
}

/// Run the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let state = StateDir::open(&config.state_dir)?;
    let _state_lock = lock_state_dir(&config.state_dir)?;
    let tls = api::ServerTls::load(config.tls.clone())?;
    check_own_certificate(&config)?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                address: config.listen,
                source,
            })?;
    let reconciler =
        Arc::new(Reconciler::connect(Config::for_agent(&config)).map_err(DaemonError::Reconciler)?);
    let board = Arc::new(StatusBoard::default());
    let (desired_tx, desired_rx) = watch::channel::<Option<Arc<Desired>>>(None);
    let (events_tx, mut events) = mpsc::channel::<Event>(64);

    let _watcher = watch_source(&config.desired_state, events_tx.clone())?;
    spawn_address_monitor(events_tx.clone())?;
    let resync = Duration::from_secs(config.resync_seconds.max(1));
    spawn_ticker(resync, events_tx.clone());

    let sync_jobs = sync::SyncJobs::open(
        crate::sync::SyncRunner::new(config.state_dir.join("sync")),
        &board,
    );
    let router = http::router(http::ApiState {
        sync: sync_jobs.runner(),
        board: board.clone(),
        events: events_tx.clone(),
        desired: desired_rx.clone(),
        reconciler: reconciler.clone(),
        host: config.host.clone(),
    });
    let scheduler = Scheduler::new(reconciler, board.clone(), desired_rx);
    let listen = config.listen;
    let mut agent = Agent {
        config,
        state,
        ledger: Ledger::default(),
        board,
        desired_tx,
        scheduler,
        sync_jobs,
        events: events_tx,
        unix_clock: unix_now,
    };
    agent.resume();
    agent.source_changed();

    // Serve only once the desired state is loaded, so the API never answers
    // for a host that has not read its manifest yet (early clients wait in
    // the listen backlog).
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let limits = api::Limits::for_this_process();
    let server = tokio::spawn(api::supervise(listener, tls, router, limits, async {
        let _ = api_stopped.await;
    }));
    tracing::info!(
        %listen,
        max_connections = limits.max_connections,
        desired = %agent.config.desired_state.display(),
        "agent started"
    );

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.recv() => match event {
                Some(Event::SourceChanged) => agent.source_changed(),
                Some(Event::Put { candidate, reply }) => {
                    let _ = reply.send(agent.put(*candidate));
                }
                Some(Event::Confirm { generation, reply }) => {
                    let _ = reply.send(agent.confirm(generation));
                }
                Some(Event::Deadline { generation }) => agent.deadline(generation),
                Some(Event::AddressesChanged) => {
                    agent.scheduler.trigger(|r| matches!(r, Resource::Addresses));
                }
                Some(Event::Resync) => agent.scheduler.trigger(|_| true),
                None => break,
            }
        }
    }
    let _ = stop_api.send(());
    let _ = server.await;
    tracing::info!("agent stopped");
    Ok(())
}

struct Agent {
    config: AgentConfig,
    state: StateDir,
    ledger: Ledger,
    board: Arc<StatusBoard>,
    desired_tx: watch::Sender<Option<Arc<Desired>>>,
    scheduler: Scheduler<Reconciler>,
    sync_jobs: sync::SyncJobs,
    events: mpsc::Sender<Event>,
    /// Unix seconds by the wall clock, in which deadlines are persisted
    /// ([`unix_now`]; a fixed one in tests).
    unix_clock: fn() -> u64,
}

impl Agent {
    fn host(&self) -> Option<&str> {
        self.config.host.as_deref()
    }

    /// Carry on from the persisted ledger: converge to the effective
    /// generation, and re-arm a pending confirmation deadline. Damaged state
    /// files are moved aside and reported; the agent then starts from the
    /// watched manifest instead of refusing to start.
    fn resume(&mut self) {
        let (ledger, damage) = self.state.ledger_or_fresh();
        self.ledger = ledger;
        if let Some(damage) = damage {
            self.state_damaged(damage);
        }
        if self.ledger.effective == 0 {
            return;
        }
        let desired = match self.state.load(self.ledger.effective) {
            Ok(desired) => desired,
            Err(e) => {
                let damage = self.state.set_aside_generation(self.ledger.effective, &e);
                self.state_damaged(damage);
                // Nothing trustworthy to resume: the watched manifest decides.
                self.ledger.effective = 0;
                self.ledger.watched = 0;
                self.ledger.awaiting_confirmation = None;
                return;
            }
        };
        tracing::info!(
            generation = desired.generation,
            "resuming from the persisted desired state"
        );
        self.activate(desired);
        if let Some(pending) = self.ledger.awaiting_confirmation {
            self.arm_deadline(pending.generation, pending.deadline);
        }
    }

    fn state_damaged(&self, damage: String) {
        tracing::error!("damaged agent state: {damage}; starting from the watched manifest");
        self.board.add_state_warning(damage);
    }

    /// The host name of the state being converged to.
    fn current_host(&self) -> String {
        self.desired_tx
            .borrow()
            .as_ref()
            .map(|d| d.host.clone())
            .unwrap_or_default()
    }

    fn publish_generations(&self, host: &str) {
        self.board.set_generations(
            host,
            self.ledger.generation,
            self.ledger.effective,
            self.ledger.awaiting_confirmation.map(|p| p.generation),
            &self.ledger.rolled_back,
        );
    }

    fn activate(&mut self, desired: Desired) {
        let host = desired.host.clone();
        let desired = Arc::new(desired);
        // Published before the new round opens: every worker woken by it
        // reads this state.
        self.desired_tx.send_replace(Some(desired.clone()));
        self.scheduler.sync(&desired.spec);
        self.sync_jobs.schedule(&desired.spec.sync_jobs);
        self.publish_generations(&host);
    }

    /// Read the manifest path; a content that differs from what was last
    /// read from it becomes a new generation.
    fn source_changed(&mut self) {
        let candidate = match desired::read_source(&self.config.desired_state, self.host()) {
            Ok(found) => {
                self.board.set_desired_error(None);
                found
            }
            Err(e) => {
                // Keep converging to the last good state; say why the new one is refused.
                tracing::warn!("{e}");
                self.board.set_desired_error(Some(e.to_string()));
                return;
            }
        };
        // The file is compared with what it said last time, not with the
        // newest generation: a state the controller sent since must not be
        // replaced by a file nobody touched.
        let baseline = match self.ledger.watched {
            0 => self.ledger.generation,
            watched => watched,
        };
        let in_force = self.ledger.effective != 0;
        if in_force && self.state.text(baseline).as_deref() == Some(candidate.text.as_str()) {
            if self.ledger.watched == 0 && baseline != 0 {
                self.ledger.watched = baseline;
                self.save_ledger();
            }
            return;
        }
        if let Ok(generation) = self.accept(candidate) {
            self.ledger.watched = generation;
            self.save_ledger();
        }
    }

    /// A state sent through the API. Resending the state in force is not a
    /// new generation (the controller may retry a PUT whose answer it lost);
    /// resending one that was rolled back is, and awaits confirmation again.
    fn put(&mut self, candidate: desired::Candidate) -> Result<u64, String> {
        let current = self.current_host();
        if !current.is_empty() && self.host().is_none() && candidate.host != current {
            return Err(format!(
                "this agent converges host \"{current}\"; the state is for host \"{}\"",
                candidate.host
            ));
        }
        let in_force = self.ledger.effective;
        if in_force != 0 && self.state.text(in_force).as_deref() == Some(candidate.text.as_str()) {
            return Ok(in_force);
        }
        self.accept(candidate)
    }

    fn save_ledger(&self) {
        if let Err(e) = self.state.save_ledger(&self.ledger) {
            tracing::error!("{e}");
        }
    }

    /// Persist a new generation and converge to it.
    fn accept(&mut self, candidate: desired::Candidate) -> Result<u64, String> {
        let desired::Candidate { host, spec, text } = candidate;
        let previous = self.desired_tx.borrow().clone();
        let generation = self.ledger.generation + 1;
        if let Err(e) = self.state.store(generation, &text) {
            tracing::error!("{e}");
            return Err(e.to_string());
        }
        let needs_confirmation = self.config.confirm_timeout_seconds > 0
            && previous.as_ref().is_some_and(|p| {
                p.spec.addresses != spec.addresses || p.spec.firewall != spec.firewall
            });
        self.ledger.generation = generation;
        if needs_confirmation {
            let last_good = match self.ledger.awaiting_confirmation {
                Some(pending) => pending.previous,
                None => self.ledger.effective,
            };
            let deadline = (self.unix_clock)() + self.config.confirm_timeout_seconds;
            self.ledger.awaiting_confirmation = Some(desired::Awaiting {
                generation,
                previous: last_good,
                deadline,
            });
            self.arm_deadline(generation, deadline);
            tracing::info!(
                generation,
                timeout_seconds = self.config.confirm_timeout_seconds,
                "new desired state changes addresses or firewall; rolled back unless confirmed in time"
            );
        } else {
            self.ledger.awaiting_confirmation = None;
        }
        self.ledger.effective = generation;
        let mut keep = vec![self.ledger.watched];
        keep.extend(self.ledger.awaiting_confirmation.map(|p| p.previous));
        self.state.prune(generation.saturating_sub(16), &keep);
        self.save_ledger();
        tracing::info!(generation, "accepted a new desired state");
        self.activate(Desired {
            generation,
            host,
            spec,
            text,
        });
        Ok(generation)
    }

    fn confirm(&mut self, generation: u64) -> Result<(), mailctl_api::ApiError> {
        use mailctl_api::{ApiError, ErrorKind};
        match self.ledger.awaiting_confirmation {
            Some(pending) if pending.generation == generation => {
                self.ledger.awaiting_confirmation = None;
                self.state
                    .save_ledger(&self.ledger)
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e))?;
                self.publish_generations(&self.current_host());
                tracing::info!(generation, "confirmed");
                Ok(())
            }
            Some(pending) => Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "generation {generation} is not awaiting confirmation (generation {} is)",
                    pending.generation
                ),
            )),
            None if self.ledger.rolled_back.contains(&generation) => Err(ApiError::new(
                ErrorKind::RolledBack,
                format!(
                    "generation {generation} was already rolled back to generation {}: its confirmation came too late; send the state again to retry it",
                    self.ledger.effective
                ),
            )),
            None if generation <= self.ledger.effective && generation > 0 => Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "generation {generation} is not awaiting confirmation: it needed none or was confirmed already (generation {} is in force)",
                    self.ledger.effective
                ),
            )),
            None => Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "generation {generation} is not awaiting confirmation (the newest is {})",
                    self.ledger.generation
                ),
            )),
        }
    }

    /// Send [`Event::Deadline`] when the persisted `deadline` (unix
    /// seconds) passes, converted once, now, to tokio's clock.
    fn arm_deadline(&self, generation: u64, deadline: u64) {
        let events = self.events.clone();
        let at = deadline_instant(deadline, (self.unix_clock)(), Instant::now());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = events.send(Event::Deadline { generation }).await;
        });
    }

    /// Magic rollback: the generation was not confirmed in time.
    fn deadline(&mut self, generation: u64) {
        let pending = match self.ledger.awaiting_confirmation {
            Some(pending) if pending.generation == generation => pending,
            _ => {
                tracing::info!(
                    generation,
                    "confirmation deadline passed; the generation was confirmed or replaced in time: nothing to roll back"
                );
                return;
            }
        };
        let mut previous = match self.state.load(pending.previous) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(generation, "cannot roll back: {e}");
                return;
            }
        };
        // Undo, not just forget: addresses only the rejected state declared
        // are removed (mailctl otherwise leaves undeclared addresses alone).
        if let Some(rejected) = self.desired_tx.borrow().clone() {
            previous
                .spec
                .addresses
                .extend(undo_addresses(&rejected.spec, &previous.spec));
        }
        let reason = format!(
            "not confirmed within {}s of being accepted",
            self.config.confirm_timeout_seconds
        );
        tracing::warn!(
            generation,
            back_to = pending.previous,
            "rolling back to generation {}, the last confirmed one, in full \
             (addresses, firewall, files, services, tasks): {reason}",
            pending.previous
        );
        self.ledger.awaiting_confirmation = None;
        self.ledger.rolled_back.push(generation);
        self.ledger.effective = pending.previous;
        if let Err(e) = self.state.save_ledger(&self.ledger) {
            tracing::error!("{e}");
        }
        self.board.rolled_back(status::Rollback {
            generation,
            to: pending.previous,
            at_unix: (self.unix_clock)(),
            reason,
        });
        self.activate(previous);
    }
}

/// When, on tokio's clock, a confirmation deadline persisted as unix seconds
/// falls, seen at `now_unix` = `now`. The one place where wall-clock time
/// meets the rollback: a deadline is converted once, when it is armed (at
/// start-up for a persisted one), and from then on only tokio's clock counts.
/// A deadline that passed while the agent was down falls at once.
fn deadline_instant(deadline_unix: u64, now_unix: u64, now: Instant) -> Instant {
    now + Duration::from_secs(deadline_unix.saturating_sub(now_unix))
}

/// Addresses present in `rejected` but not declared in `previous`, as absent.
fn undo_addresses(
    rejected: &mailctl_schemas::model::HostSpec,
    previous: &mailctl_schemas::model::HostSpec,
) -> Vec<mailctl_schemas::model::ServiceAddress> {
    use mailctl_schemas::model::Presence;
    rejected
        .addresses
        .iter()
        .filter(|a| a.state == Presence::Present)
        .filter(|a| {
            !previous
                .addresses
                .iter()
                .any(|p| p.address.addr() == a.address.addr() && p.interface == a.interface)
        })
        .map(|a| mailctl_schemas::model::ServiceAddress {
            state: Presence::Absent,
            ..a.clone()
        })
        .collect()
}

/// Watch the manifest path; changes are debounced (editors write in bursts).
fn watch_source(
    path: &Path,
    events: mpsc::Sender<Event>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    use notify::{RecursiveMode, Watcher};
    let (raw_tx, mut raw_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // inotify also reports opens: without this filter, the agent's own
        // reading of the manifest woke it to read the manifest again, every
        // debounce period, for ever (2.6 % CPU on an idle host).
        if event.as_ref().is_ok_and(|e| only_read(&e.kind)) {
            return;
        }
        // Full channel: a change is already pending, which is all we need.
        let _ = raw_tx.try_send(());
    })
    .map_err(|source| DaemonError::Watch {
        path: path.to_path_buf(),
        source,
    })?;
    // Watch the folder of a file: editors replace files by renaming.
    let (target, mode) = if path.is_dir() {
        (path.to_path_buf(), RecursiveMode::Recursive)
    } else {
        (
            path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            RecursiveMode::NonRecursive,
        )
    };
    watcher
        .watch(&target, mode)
        .map_err(|source| DaemonError::Watch {
            path: target.clone(),
            source,
        })?;
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            while tokio::time::timeout(Duration::from_millis(150), raw_rx.recv())
                .await
                .is_ok_and(|more| more.is_some())
            {}
            if events.send(Event::SourceChanged).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

/// An event that only says a file was opened or read, not changed.
fn only_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

/// Subscribe to the kernel's address notifications (like `ip monitor address`).
fn spawn_address_monitor(events: mpsc::Sender<Event>) -> Result<(), DaemonError> {
    use rtnetlink::MulticastGroup;
    let (connection, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(DaemonError::Monitor)?;
    tokio::spawn(connection);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            if events.send(Event::AddressesChanged).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn spawn_ticker(every: Duration, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if events.send(Event::Resync).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests;
