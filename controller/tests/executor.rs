//! The step executor under tokio's paused clock, with agents kept in memory
//! (the real agents are driven by the two-namespace tests): each agent takes
//! a state, reports it converged a few polls later — only then do its
//! "kernel" addresses change — and awaits confirmation. Every state change
//! is checked against the rule that no exclusive address is on two hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use mailctl_api::{AgentStatus, Condition, JobStatus, ResourceStatus, RunState, Verification};
use mailctl_controller::execute::{AgentError, Agents, Executor, Outcome, Shared};
use mailctl_controller::record::MigrationRecord;
use mailctl_controller::store::{DirStore, Store};
use mailctl_schemas::model::{ManifestSet, Presence};
use mailctl_schemas::{ContentReader, Source};

const MIGRATION: &str = r#"
apiVersion: mailctl/v1alpha1
kind: Migration
metadata: {name: bob-to-eve}
spec:
  hosts:
    bob: {agent: "https://bob:7443"}
    eve: {agent: "https://eve:7443"}
  phases: [prepare, cutover, live]
  targetPhase: live
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {name: prepare, migration: bob-to-eve}
spec:
  hosts:
    bob:
      addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]
      services: [{name: postfix, state: running, driver: exec, exec: {start: [postfix, start], stop: [postfix, stop], status: [postfix, status]}}]
    eve:
      syncJobs: [{name: maildirs, source: "bob:/var/mail/", destination: /var/mail/, every: 15m, maildir: true}]
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {name: cutover, migration: bob-to-eve}
spec:
  hosts:
    bob:
      services: [{name: postfix, state: stopped, driver: exec, exec: {start: [postfix, start], stop: [postfix, stop], status: [postfix, status]}}]
    eve:
      addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]
      syncJobs: [{name: maildirs, source: "bob:/var/mail/", destination: /var/mail/, maildir: true}]
  finalSyncs: [{host: eve, job: maildirs}]
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {name: live, migration: bob-to-eve}
spec:
  hosts:
    eve:
      addresses: [{address: 192.0.2.25/24, interface: eth0, exclusive: true}]
  gates:
    - {name: go-ahead, approval: {}}
    - {name: settle, soak: {duration: 1m}}
"#;

struct NoSources;

impl ContentReader for NoSources {
    fn read(&self, _: &Path, source: &str) -> Result<String, String> {
        Err(format!("no source files here: {source}"))
    }
}

fn set() -> ManifestSet {
    mailctl_schemas::validate(
        &[Source {
            path: PathBuf::from("migration.yaml"),
            text: MIGRATION.to_owned(),
        }],
        &NoSources,
    )
    .expect("the test migration validates")
}

const SERVICE_IP: &str = "192.0.2.25/24";

#[derive(Debug, Default)]
struct Agent {
    generation: u64,
    yaml: String,
    /// Polls until the state in force converges.
    converging: u32,
    awaiting: Option<u64>,
    /// What the host's kernel holds.
    held: BTreeSet<IpNet>,
    reachable: bool,
}

/// Agents in memory, with a log of what was sent and seen.
#[derive(Debug, Default)]
struct MemoryAgents {
    agents: Mutex<BTreeMap<String, Agent>>,
    /// `put HOST GENERATION`, `converged HOST GENERATION`, `sync HOST JOB`, ...
    log: Mutex<Vec<String>>,
    /// Moments an exclusive address was on two hosts.
    violations: Mutex<Vec<String>>,
}

impl MemoryAgents {
    fn new() -> Arc<MemoryAgents> {
        let agents = MemoryAgents::default();
        for host in ["bob", "eve"] {
            agents.agents.lock().expect("lock").insert(
                host.into(),
                Agent {
                    reachable: true,
                    ..Agent::default()
                },
            );
        }
        Arc::new(agents)
    }

    fn note(&self, line: String) {
        self.log.lock().expect("lock").push(line);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    fn set_reachable(&self, host: &str, reachable: bool) {
        self.agents
            .lock()
            .expect("lock")
            .get_mut(host)
            .expect("host")
            .reachable = reachable;
    }

    fn reach(&self, host: &str) -> Result<(), AgentError> {
        if self.agents.lock().expect("lock")[host].reachable {
            Ok(())
        } else {
            Err(AgentError {
                retry_can_help: true,
                message: "connection refused".into(),
            })
        }
    }

    fn holders(&self) -> BTreeMap<String, BTreeSet<IpNet>> {
        self.agents
            .lock()
            .expect("lock")
            .iter()
            .map(|(h, a)| (h.clone(), a.held.clone()))
            .collect()
    }
}

/// The addresses a state declares, and whether present.
fn declared(yaml: &str) -> Vec<(IpNet, Presence)> {
    let set = mailctl_schemas::validate(
        &[Source {
            path: PathBuf::from("put.yaml"),
            text: yaml.to_owned(),
        }],
        &NoSources,
    )
    .expect("the controller sends valid states");
    set.hosts[0]
        .spec
        .addresses
        .iter()
        .map(|a| (a.address, a.state))
        .collect()
}

impl Agents for MemoryAgents {
    async fn put(&self, host: &str, yaml: &str) -> Result<u64, AgentError> {
        self.reach(host)?;
        let mut agents = self.agents.lock().expect("lock");
        let agent = agents.get_mut(host).expect("host");
        if agent.yaml != yaml {
            agent.generation += 1;
            agent.yaml = yaml.to_owned();
            agent.converging = 2;
            agent.awaiting = Some(agent.generation);
        }
        let generation = agent.generation;
        drop(agents);
        self.note(format!("put {host} {generation}"));
        Ok(generation)
    }

    async fn status(&self, host: &str) -> Result<AgentStatus, AgentError> {
        self.reach(host)?;
        let mut agents = self.agents.lock().expect("lock");
        let agent = agents.get_mut(host).expect("host");
        let mut converged_now = false;
        if agent.converging > 0 {
            agent.converging -= 1;
            if agent.converging == 0 {
                for (address, presence) in declared(&agent.yaml) {
                    match presence {
                        Presence::Present => agent.held.insert(address),
                        Presence::Absent => agent.held.remove(&address),
                    };
                }
                converged_now = true;
            }
        }
        let condition = if agent.converging == 0 {
            Condition::Ready {
                generation: agent.generation,
            }
        } else {
            Condition::Progressing
        };
        let status = AgentStatus {
            host: Some(host.to_owned()),
            generation: agent.generation,
            effective_generation: agent.generation,
            awaiting_confirmation: agent.awaiting,
            resources: [(
                "addresses".to_owned(),
                ResourceStatus {
                    condition,
                    intentional_changes: 0,
                    corrective_changes: 0,
                    converged_generation: None,
                    last_change: None,
                },
            )]
            .into(),
            ..AgentStatus::default()
        };
        let generation = agent.generation;
        drop(agents);
        if converged_now {
            self.note(format!("converged {host} {generation}"));
            let ip: IpNet = SERVICE_IP.parse().expect("ip");
            let on: Vec<String> = self
                .holders()
                .into_iter()
                .filter(|(_, held)| held.contains(&ip))
                .map(|(h, _)| h)
                .collect();
            if on.len() > 1 {
                self.violations.lock().expect("lock").push(format!(
                    "{ip} on {on:?} after {host} converged {generation}"
                ));
            }
        }
        Ok(status)
    }

    async fn confirm(&self, host: &str, generation: u64) -> Result<(), AgentError> {
        self.reach(host)?;
        let mut agents = self.agents.lock().expect("lock");
        let agent = agents.get_mut(host).expect("host");
        if agent.awaiting == Some(generation) {
            agent.awaiting = None;
        }
        Ok(())
    }

    async fn sync_run(&self, host: &str, job: &str) -> Result<JobStatus, AgentError> {
        self.reach(host)?;
        self.note(format!("sync {host} {job}"));
        Ok(JobStatus {
            job: job.to_owned(),
            run: 1,
            state: RunState::Finished,
            started_at_unix: 0,
            finished_at_unix: Some(0),
            progress: None,
            stats: None,
            renamed: 0,
            duplicates_removed: 0,
            verification: Some(Verification {
                folders: 1,
                messages: 3,
                ..Verification::default()
            }),
            error: None,
            last_verified_at_unix: Some(0),
            host_key: None,
            details: None,
        })
    }

    async fn point_of_no_return(&self, host: &str) -> Result<(), AgentError> {
        self.reach(host)?;
        self.note(format!("point-of-no-return {host}"));
        Ok(())
    }
}

struct Run {
    set: ManifestSet,
    agents: Arc<MemoryAgents>,
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        Run {
            set: set(),
            agents: MemoryAgents::new(),
            dir: tempfile::tempdir().expect("tmp"),
        }
    }

    /// The record as the store has it (what a restarted controller reads).
    fn stored(&self, store: &DirStore) -> Option<MigrationRecord> {
        store.load_all().0.into_iter().next()
    }
}

fn waiting(shared: &Shared) -> String {
    shared
        .snapshot()
        .transition
        .and_then(|t| t.waiting)
        .unwrap_or_default()
}

/// Lets the executor run until `condition` holds (paused clock: time
/// advances only while every task waits).
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(start_paused = true)]
async fn a_migration_reaches_its_target_break_before_make_with_approval_and_soak() {
    let run = Run::new();
    let store = DirStore::open(run.dir.path()).expect("store");
    let migration = &run.set.migrations[0];
    let shared = Shared::new(MigrationRecord::new(
        &migration.name,
        &migration.target_phase,
    ));
    let executor = Executor {
        agents: run.agents.as_ref(),
        store: &store,
        set: &run.set,
        migration,
        shared: shared.clone(),
    };
    let drive = executor.drive();
    tokio::pin!(drive);
    // Up to the approval gate of live.
    let outcome = tokio::select! {
        outcome = &mut drive => panic!("ended before approval: {outcome:?}"),
        () = until("waits for approval", || waiting(&shared).contains("waiting for approval of live")) => None::<Outcome>,
    };
    assert!(outcome.is_none());
    let log = run.agents.log();
    // prepare: eve's release (the service IP held absent, bob takes it),
    // then both acquire. cutover: bob's release (generation 2: the IP
    // absent, postfix stopped) observed, and eve's (3: its sync schedule
    // ended), the final sync, then eve acquires (4: the IP).
    let bob_released = log
        .iter()
        .position(|l| l == "converged bob 2")
        .expect("bob released");
    let synced = log
        .iter()
        .position(|l| l == "sync eve maildirs")
        .expect("final sync");
    let eve_acquired = log
        .iter()
        .position(|l| l == "put eve 4")
        .expect("eve acquires");
    assert!(bob_released < synced && synced < eve_acquired, "{log:#?}");
    assert_eq!(shared.snapshot().phase.as_deref(), Some("cutover"));
    // The record on disk says the same: a restarted controller resumes here.
    let stored = run.stored(&store).expect("stored");
    assert_eq!(
        stored.transition.as_ref().map(|t| t.to.as_str()),
        Some("live")
    );

    // Approval, then a minute of soak, measured on tokio's clock.
    let approved_at = tokio::time::Instant::now();
    shared.approve("live", "alice");
    let outcome = drive.await.expect("drive");
    assert_eq!(outcome, Outcome::Reached("live".into()));
    let soaked = approved_at.elapsed();
    assert!(
        soaked >= Duration::from_secs(60) && soaked < Duration::from_secs(65),
        "{soaked:?}"
    );
    assert!(run.agents.violations.lock().expect("lock").is_empty());
    let record = run.stored(&store).expect("stored");
    assert_eq!(record.phase.as_deref(), Some("live"));
    assert!(record.transition.is_none());
    let history: Vec<&str> = record.history.iter().map(|e| e.what.as_str()).collect();
    assert!(history.contains(&"alice approved live"), "{history:#?}");
    assert!(history.contains(&"reached live"), "{history:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_host_holds_the_service_ip_back_until_it_answers_or_is_fenced() {
    let run = Run::new();
    let store = DirStore::open(run.dir.path()).expect("store");
    let migration = &run.set.migrations[0];
    let mut record = MigrationRecord::new(&migration.name, "cutover");
    record.phase = None;
    let shared = Shared::new(record);
    let executor = Executor {
        agents: run.agents.as_ref(),
        store: &store,
        set: &run.set,
        migration,
        shared: shared.clone(),
    };
    let drive = executor.drive();
    tokio::pin!(drive);
    // prepare is reached; then bob goes away before cutover's release.
    let agents = run.agents.clone();
    tokio::select! {
        outcome = &mut drive => panic!("ended early: {outcome:?}"),
        () = until("prepare reached", || shared.snapshot().phase.as_deref() == Some("prepare")) => {}
    }
    agents.set_reachable("bob", false);
    tokio::select! {
        outcome = &mut drive => panic!("ended while bob was away: {outcome:?}"),
        () = until("says it waits for bob", || waiting(&shared).contains("waiting for bob: unreachable since")) => {}
    }
    assert!(
        waiting(&shared).contains("(connection refused)"),
        "{}",
        waiting(&shared)
    );
    // Thirty seconds later eve still has not been given the service IP.
    tokio::select! {
        outcome = &mut drive => panic!("ended while bob was away: {outcome:?}"),
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    let ip: IpNet = SERVICE_IP.parse().expect("ip");
    assert!(!agents.holders()["eve"].contains(&ip));
    assert!(
        !agents.log().iter().any(|l| l.starts_with("sync eve")),
        "{:#?}",
        agents.log()
    );
    // The admin says bob is down: the transition goes on without it. (Here
    // bob's memory still "holds" the address: a fence is the admin's word
    // that the host is off; on a real host the agent's ARP probe is the last
    // line of defence.)
    shared.fence("bob", "alice", "powered off in the rack");
    let outcome = drive.await.expect("drive");
    assert_eq!(outcome, Outcome::Reached("cutover".into()));
    assert!(agents.holders()["eve"].contains(&ip));
    let history: Vec<String> = run
        .stored(&store)
        .expect("stored")
        .history
        .into_iter()
        .map(|e| e.what)
        .collect();
    assert!(
        history
            .iter()
            .any(|h| h
                == "alice fenced bob: powered off in the rack (the migration goes on without it)"),
        "{history:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_controller_stopped_at_any_moment_resumes_and_ends_like_an_uninterrupted_run() {
    // The uninterrupted run (approval given up front).
    let whole = {
        let run = Run::new();
        let store = DirStore::open(run.dir.path()).expect("store");
        let migration = &run.set.migrations[0];
        let shared = Shared::new(MigrationRecord::new(&migration.name, "live"));
        shared.approve("live", "alice");
        let executor = Executor {
            agents: run.agents.as_ref(),
            store: &store,
            set: &run.set,
            migration,
            shared,
        };
        assert_eq!(
            executor.drive().await.expect("drive"),
            Outcome::Reached("live".into())
        );
        (
            run.agents.holders(),
            run.stored(&store).expect("stored").generations,
        )
    };
    // Killed after 1, 2, ... polls' worth of time, then restarted from the
    // store, again and again, until it ends.
    for cut in [150u64, 250, 400, 700, 1_300] {
        let run = Run::new();
        let migration = &run.set.migrations[0];
        let mut restarts = 0;
        let outcome = loop {
            let store = DirStore::open(run.dir.path()).expect("the lock is free after a stop");
            let record = run.stored(&store).unwrap_or_else(|| {
                let mut r = MigrationRecord::new(&migration.name, "live");
                r.approvals.insert(
                    "live".into(),
                    mailctl_controller::record::Intent {
                        at_unix: 0,
                        by: "alice".into(),
                        reason: String::new(),
                    },
                );
                r
            });
            let executor = Executor {
                agents: run.agents.as_ref(),
                store: &store,
                set: &run.set,
                migration,
                shared: Shared::new(record),
            };
            match tokio::time::timeout(Duration::from_millis(cut), executor.drive()).await {
                Ok(outcome) => break outcome.expect("drive"),
                Err(_) => restarts += 1,
            }
            assert!(restarts < 10_000, "no progress");
        };
        assert_eq!(outcome, Outcome::Reached("live".into()), "cut {cut}");
        assert!(restarts > 0, "cut {cut} never interrupted the run");
        assert!(run.agents.violations.lock().expect("lock").is_empty());
        let store = DirStore::open(run.dir.path()).expect("store");
        let record = run.stored(&store).expect("stored");
        assert_eq!(
            (run.agents.holders(), record.generations),
            whole,
            "cut {cut} after {restarts} restarts"
        );
    }
}
