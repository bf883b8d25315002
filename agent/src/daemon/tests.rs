//! The daemon's event loop pieces: what counts as a manifest change, and the
//! rollback deadline on tokio's paused clock.

use std::time::Duration;

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind};

use super::*;

#[test]
fn reading_the_manifest_does_not_count_as_a_change() {
    assert!(only_read(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(only_read(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(only_read(&EventKind::Access(AccessKind::Read)));
    assert!(!only_read(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(!only_read(&EventKind::Modify(ModifyKind::Data(
        DataChange::Any
    ))));
    assert!(!only_read(&EventKind::Create(CreateKind::File)));
    assert!(!only_read(&EventKind::Remove(RemoveKind::File)));
    assert!(!only_read(&EventKind::Any));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_is_converted_to_tokio_time_once() {
    let now = Instant::now();
    assert_eq!(
        deadline_instant(1_000_030, 1_000_000, now),
        now + Duration::from_secs(30)
    );
    // Passed while the agent was down: due at once, not never.
    assert_eq!(deadline_instant(1_000_000, 1_000_030, now), now);
}

/// A host manifest that declares nothing (so the test converges nothing on
/// the machine running it), told apart by `comment`.
fn empty_host(comment: &str) -> String {
    format!(
        "# {comment}\napiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec: {{}}\n"
    )
}

/// The daemon resumes from a ledger whose generation 2 awaits confirmation
/// until 30 s from now, persisted by an agent before a restart: the
/// rollback to generation 1 happens when the deadline passes on tokio's
/// clock, and not a moment before.
#[tokio::test(start_paused = true)]
async fn a_persisted_deadline_rolls_back_when_it_passes_and_not_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path()).expect("state folder");
    state.store(1, &empty_host("confirmed")).expect("store 1");
    state
        .store(2, &empty_host("on probation"))
        .expect("store 2");
    // The wall clock of this agent stands still at NOW: the deadline falls
    // exactly 30 s of tokio time after the start.
    const NOW: u64 = 1_800_000_000;
    let deadline = NOW + 30;
    state
        .save_ledger(&Ledger {
            generation: 2,
            effective: 2,
            watched: 2,
            awaiting_confirmation: Some(desired::Awaiting {
                generation: 2,
                previous: 1,
                deadline,
            }),
            ..Ledger::default()
        })
        .expect("save the ledger");

    let config = AgentConfig {
        state_dir: dir.path().to_owned(),
        desired_state: dir.path().join("no-watched-manifest"),
        ..AgentConfig::default()
    };
    let reconciler = Arc::new(Reconciler::connect(Config::for_agent(&config)).expect("netlink"));
    let board = Arc::new(StatusBoard::default());
    let (desired_tx, desired_rx) = watch::channel::<Option<Arc<Desired>>>(None);
    let (events_tx, mut events) = mpsc::channel::<Event>(8);
    let mut agent = Agent {
        sync_jobs: sync::SyncJobs::open(
            crate::sync::SyncRunner::new(dir.path().join("sync")),
            &board,
        ),
        scheduler: Scheduler::new(reconciler, board.clone(), desired_rx.clone()),
        config,
        state,
        ledger: Ledger::default(),
        board,
        desired_tx,
        events: events_tx,
        unix_clock: || NOW,
    };
    let started = Instant::now();
    agent.resume();
    let in_force = || desired_rx.borrow().as_ref().map(|d| d.generation);
    assert_eq!(in_force(), Some(2));

    tokio::time::sleep(Duration::from_millis(29_999)).await;
    assert!(events.try_recv().is_err(), "no deadline before 30 s");
    assert_eq!(agent.ledger.effective, 2);

    let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("the deadline falls at 30 s")
        .expect("an event");
    let Event::Deadline { generation } = event else {
        panic!("expected the deadline, got {event:?}");
    };
    assert_eq!(generation, 2);
    assert_eq!(Instant::now() - started, Duration::from_secs(30));
    agent.deadline(generation);
    assert_eq!(agent.ledger.effective, 1);
    assert_eq!(agent.ledger.rolled_back, [2]);
    assert_eq!(agent.ledger.awaiting_confirmation, None);
    assert_eq!(in_force(), Some(1));
    assert_eq!(
        agent.state.ledger().expect("the persisted ledger"),
        agent.ledger
    );
}
