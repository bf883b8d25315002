//! The scheduler on tokio's paused clock: a stand-in for the reconciler
//! records when each resource's reconcile starts and ends, so ordering,
//! merging and backoff are checked in virtual seconds, without waiting.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use super::*;

/// One reconcile as the stand-in saw it.
#[derive(Debug, Clone)]
struct Run {
    resource: String,
    start: Instant,
    end: Instant,
}

/// A reconciler stand-in: each resource takes `took` (virtual) time and
/// fails while its failure budget lasts.
#[derive(Default)]
struct Recorder {
    resources: Vec<Resource>,
    took: HashMap<String, Duration>,
    failures: Mutex<HashMap<String, u32>>,
    /// Failures that retrying cannot mend (a missing interface).
    refusals: Mutex<HashMap<String, u32>>,
    runs: Mutex<Vec<Run>>,
    running: Mutex<HashMap<String, u32>>,
    overlaps: Mutex<u32>,
}

impl Recorder {
    fn new(resources: Vec<Resource>) -> Self {
        Recorder {
            resources,
            ..Recorder::default()
        }
    }

    fn took(mut self, resource: &str, seconds: u64) -> Self {
        self.took
            .insert(resource.to_owned(), Duration::from_secs(seconds));
        self
    }

    fn fail(&self, resource: &str, times: u32) {
        self.failures
            .lock()
            .expect("lock")
            .insert(resource.to_owned(), times);
    }

    fn refuse(&self, resource: &str, times: u32) {
        self.refusals
            .lock()
            .expect("lock")
            .insert(resource.to_owned(), times);
    }

    fn runs(&self, resource: &str) -> Vec<Run> {
        self.runs
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.resource == resource)
            .cloned()
            .collect()
    }
}

impl Converge for Recorder {
    fn resources(&self, _: &HostSpec) -> Vec<Resource> {
        self.resources.clone()
    }

    async fn converge(&self, _: &HostSpec, resource: &Resource) -> Result<Applied, Error> {
        let name = resource.to_string();
        let start = Instant::now();
        {
            let mut running = self.running.lock().expect("lock");
            let now = running.entry(name.clone()).or_default();
            *now += 1;
            if *now > 1 {
                *self.overlaps.lock().expect("lock") += 1;
            }
        }
        let took = self.took.get(&name).copied().unwrap_or(Duration::ZERO);
        tokio::time::sleep(took).await;
        *self
            .running
            .lock()
            .expect("lock")
            .entry(name.clone())
            .or_default() -= 1;
        let failing = {
            let mut failures = self.failures.lock().expect("lock");
            let left = failures.entry(name.clone()).or_default();
            let failing = *left > 0;
            *left = left.saturating_sub(1);
            failing
        };
        self.runs.lock().expect("lock").push(Run {
            resource: name.clone(),
            start,
            end: Instant::now(),
        });
        let refused = {
            let mut refusals = self.refusals.lock().expect("lock");
            let left = refusals.entry(name.clone()).or_default();
            let refused = *left > 0;
            *left = left.saturating_sub(1);
            refused
        };
        if refused {
            return Err(Error::Address(
                crate::address::AddressError::NoSuchInterface {
                    address: "192.0.2.25/24".parse().expect("cidr"),
                    interface: "eth9".into(),
                },
            ));
        }
        if failing {
            return Err(Error::NetlinkSocket(std::io::Error::other(format!(
                "{name} failed on purpose"
            ))));
        }
        Ok(Applied::default())
    }
}

fn file(path: &str) -> Resource {
    Resource::File { path: path.into() }
}

fn service(name: &str) -> Resource {
    Resource::Service { name: name.into() }
}

struct Harness {
    recorder: Arc<Recorder>,
    scheduler: Scheduler<Recorder>,
    desired: watch::Sender<Option<Arc<Desired>>>,
    generation: u64,
}

impl Harness {
    fn new(recorder: Recorder) -> Self {
        let recorder = Arc::new(recorder);
        let (desired, receiver) = watch::channel(None);
        let scheduler =
            Scheduler::new(recorder.clone(), Arc::new(StatusBoard::default()), receiver);
        Harness {
            recorder,
            scheduler,
            desired,
            generation: 0,
        }
    }

    /// Activate a new desired state, as the daemon does.
    fn activate(&mut self) {
        self.generation += 1;
        let desired = Arc::new(Desired {
            generation: self.generation,
            host: "eve".into(),
            spec: HostSpec::default(),
            text: String::new(),
        });
        self.desired.send_replace(Some(desired.clone()));
        self.scheduler.sync(&desired.spec);
    }
}

/// Let every task run until all of them wait on the (paused) clock or on
/// nothing; then move the clock by `by`.
async fn pass(by: Duration) {
    tokio::time::sleep(by).await;
}

#[tokio::test(start_paused = true)]
async fn a_new_state_converges_in_apply_order_and_drift_repair_does_not_wait() {
    let recorder = Recorder::new(vec![
        Resource::Addresses,
        Resource::Firewall {
            table: "mailctl".into(),
        },
        file("/etc/postfix/main.cf"),
        file("/etc/postfix/virtual"),
        service("postfix"),
    ])
    .took("addresses", 3)
    .took("firewall table inet mailctl", 2)
    .took("file /etc/postfix/main.cf", 5)
    .took("file /etc/postfix/virtual", 1);
    let mut h = Harness::new(recorder);
    let t0 = Instant::now();
    h.activate();
    pass(Duration::from_secs(30)).await;

    let first = |name: &str| h.recorder.runs(name).first().cloned().expect(name);
    let (addresses, firewall) = (first("addresses"), first("firewall table inet mailctl"));
    let (main_cf, virtual_map) = (
        first("file /etc/postfix/main.cf"),
        first("file /etc/postfix/virtual"),
    );
    let postfix = first("service postfix");
    // Addresses and firewall together, from the start.
    assert_eq!(addresses.start, t0);
    assert_eq!(firewall.start, t0);
    // Files after both, one after the other; the service last.
    assert_eq!(main_cf.start, addresses.end.max(firewall.end));
    assert_eq!(virtual_map.start, main_cf.end);
    assert_eq!(postfix.start, virtual_map.end);
    assert_eq!(postfix.start - t0, Duration::from_secs(3 + 5 + 1));
    assert_eq!(*h.recorder.overlaps.lock().expect("lock"), 0);

    // Drift of the service alone, within the round: repaired at once.
    let drift = Instant::now();
    h.scheduler
        .trigger(|r| matches!(r, Resource::Service { .. }));
    pass(Duration::from_secs(1)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].start, drift);
}

#[tokio::test(start_paused = true)]
async fn a_failing_file_holds_the_service_back_only_for_its_attempt() {
    let recorder = Recorder::new(vec![file("/etc/postfix/main.cf"), service("postfix")])
        .took("file /etc/postfix/main.cf", 2);
    recorder.fail("file /etc/postfix/main.cf", 100);
    let mut h = Harness::new(recorder);
    let t0 = Instant::now();
    h.activate();
    pass(Duration::from_secs(5)).await;
    let postfix = h.recorder.runs("service postfix");
    assert_eq!(postfix.len(), 1, "{postfix:?}");
    assert_eq!(
        postfix[0].start - t0,
        Duration::from_secs(2),
        "after the file's first attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn one_resource_never_runs_twice_at_once_and_triggers_merge() {
    let recorder = Recorder::new(vec![service("postfix")]).took("service postfix", 10);
    let mut h = Harness::new(recorder);
    h.activate();
    pass(Duration::from_secs(1)).await;
    // Twenty triggers while the first run goes on: one more run, not twenty.
    for _ in 0..20 {
        h.scheduler.trigger(|_| true);
        pass(Duration::from_millis(100)).await;
    }
    pass(Duration::from_secs(60)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[1].start, runs[0].end,
        "the merged run follows the first at once"
    );
    assert_eq!(*h.recorder.overlaps.lock().expect("lock"), 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_per_failure_and_resets_after_a_success() {
    let recorder = Recorder::new(vec![service("postfix")]);
    recorder.fail("service postfix", 5);
    let mut h = Harness::new(recorder);
    h.activate();
    pass(Duration::from_secs(40)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), 6, "5 failures, then a success: {runs:?}");
    let gaps: Vec<u64> = runs
        .windows(2)
        .map(|w| (w[1].start - w[0].end).as_secs())
        .collect();
    assert_eq!(gaps, vec![1, 2, 4, 8, 16]);

    // A new failure after the success starts again from one second.
    h.recorder.fail("service postfix", 2);
    h.scheduler.trigger(|_| true);
    pass(Duration::from_secs(10)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), 9, "{runs:?}");
    let gaps: Vec<u64> = runs[6..]
        .windows(2)
        .map(|w| (w[1].start - w[0].end).as_secs())
        .collect();
    assert_eq!(gaps, vec![1, 2], "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn a_trigger_cuts_a_backoff_short() {
    let recorder = Recorder::new(vec![service("postfix")]);
    recorder.fail("service postfix", 9);
    let mut h = Harness::new(recorder);
    h.activate();
    pass(Duration::from_secs(20)).await; // runs at 0, 1, 3, 7, 15: now waiting 16 s
    let before = h.recorder.runs("service postfix").len();
    assert_eq!(before, 5);
    let fixed = Instant::now();
    h.scheduler.trigger(|_| true);
    pass(Duration::from_millis(1)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), before + 1);
    assert_eq!(runs[before].start, fixed);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_not_retried_until_something_changes() {
    let recorder = Recorder::new(vec![Resource::Addresses]);
    recorder.refuse("addresses", 1);
    let mut h = Harness::new(recorder);
    h.activate();
    pass(Duration::from_secs(600)).await;
    assert_eq!(h.recorder.runs("addresses").len(), 1, "no backoff loop");
    let status = h.scheduler.board.snapshot();
    assert!(
        matches!(
            &status.resources["addresses"].condition,
            super::super::status::Condition::Refused { reason } if reason.contains("no interface eth9")
        ),
        "{status:?}"
    );
    // The interface appeared (a kernel event): tried again, and converged.
    h.scheduler.trigger(|_| true);
    pass(Duration::from_secs(1)).await;
    assert_eq!(h.recorder.runs("addresses").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn backoff_stops_growing_at_five_minutes() {
    let recorder = Recorder::new(vec![service("postfix")]);
    recorder.fail("service postfix", 12);
    let mut h = Harness::new(recorder);
    h.activate();
    pass(Duration::from_secs(3_000)).await;
    let runs = h.recorder.runs("service postfix");
    assert_eq!(runs.len(), 13, "12 failures, then a success: {runs:?}");
    let gaps: Vec<u64> = runs
        .windows(2)
        .map(|w| (w[1].start - w[0].end).as_secs())
        .collect();
    assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(*h.recorder.overlaps.lock().expect("lock"), 0);
}
