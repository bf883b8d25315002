//! The transition planner: release states as DESIGN.md §6 defines them,
//! refusals, and the property that no moment of a transition — hosts
//! applying their step states one at a time, in any order — has an
//! exclusive address on two hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipnet::IpNet;
use mailctl_controller::plan::{Current, PlanRefusal, Step, StepKind, plan_transition};
use mailctl_schemas::diag::{Origin, Position};
use mailctl_schemas::model::{
    FinalSync, Firewall, FirewallPolicy, FirewallRule, HostSpec, Migration, MigrationHost, Phase,
    Presence, Protocol, RuleAction, Service, ServiceAddress, ServiceDriver, ServiceState, SyncJob,
    SyncSource,
};
use proptest::prelude::*;

fn net(text: &str) -> IpNet {
    text.parse().expect("cidr")
}

fn address(text: &str, exclusive: bool, state: Presence) -> ServiceAddress {
    ServiceAddress {
        address: net(text),
        interface: "eth0".into(),
        label: None,
        state,
        exclusive,
    }
}

fn service(name: &str, state: ServiceState) -> Service {
    Service {
        name: name.into(),
        state,
        enabled: None,
        driver: ServiceDriver::Exec,
        unit: format!("{name}.service"),
        exec: None,
        reload_on: Vec::new(),
    }
}

fn rule(name: &str, port: u16) -> FirewallRule {
    FirewallRule {
        name: name.into(),
        protocol: Protocol::Tcp,
        ports: vec![port],
        sources: Vec::new(),
        action: RuleAction::Accept,
    }
}

fn firewall(rules: Vec<FirewallRule>) -> Option<Firewall> {
    Some(Firewall {
        table: "mailctl".into(),
        policy: FirewallPolicy::Accept,
        allow_lockout: false,
        rules,
    })
}

fn migration(hosts: &[&str]) -> Migration {
    Migration {
        name: "bob-to-eve".into(),
        hosts: hosts
            .iter()
            .map(|h| {
                (
                    (*h).to_owned(),
                    MigrationHost {
                        agent: format!("https://{h}:7443"),
                    },
                )
            })
            .collect(),
        phases: vec!["cutover".into()],
        target_phase: "cutover".into(),
        point_of_no_return: None,
        on_gate_failure: Default::default(),
        origin: origin(),
    }
}

fn origin() -> Origin {
    Origin {
        file: std::path::Path::new("test.yaml").into(),
        position: Position { line: 1, column: 1 },
    }
}

fn phase(hosts: BTreeMap<String, HostSpec>) -> Phase {
    Phase {
        name: "cutover".into(),
        migration: "bob-to-eve".into(),
        hosts,
        final_syncs: Vec::new(),
        gates: Vec::new(),
        origin: origin(),
    }
}

const SERVICE_IP: &str = "192.0.2.25/24";

#[test]
fn a_cutover_releases_the_old_host_first_and_the_new_host_only_gains() {
    let bob_now = HostSpec {
        addresses: vec![address(SERVICE_IP, true, Presence::Present)],
        services: vec![service("postfix", ServiceState::Running)],
        firewall: firewall(vec![rule("smtp", 25), rule("ssh", 22)]),
        ..HostSpec::default()
    };
    let eve_now = HostSpec {
        services: vec![service("postfix", ServiceState::Stopped)],
        ..HostSpec::default()
    };
    let current: Current = [
        ("bob".to_owned(), Some(bob_now.clone())),
        ("eve".to_owned(), Some(eve_now.clone())),
    ]
    .into();
    let maildirs = SyncJob::new(
        "maildirs",
        SyncSource::Remote {
            host: "bob".into(),
            path: "/var/mail".into(),
        },
        PathBuf::from("/var/mail"),
    );
    let mut every = maildirs.clone();
    every.every = Some("15m".parse().expect("duration"));
    let bob_then = HostSpec {
        services: vec![service("postfix", ServiceState::Stopped)],
        firewall: firewall(vec![rule("ssh", 22)]),
        ..HostSpec::default()
    };
    let eve_then = HostSpec {
        addresses: vec![address(SERVICE_IP, true, Presence::Present)],
        services: vec![service("postfix", ServiceState::Running)],
        firewall: firewall(vec![rule("smtp", 25), rule("ssh", 22)]),
        sync_jobs: vec![every],
        ..HostSpec::default()
    };
    let mut to = phase(
        [
            ("bob".to_owned(), bob_then.clone()),
            ("eve".to_owned(), eve_then.clone()),
        ]
        .into(),
    );
    to.final_syncs = vec![FinalSync {
        host: "eve".into(),
        job: "maildirs".into(),
    }];
    let plan = plan_transition(&migration(&["bob", "eve"]), &current, &to).expect("plan");
    let kinds: Vec<StepKind> = plan.steps.iter().map(Step::kind).collect();
    assert_eq!(
        kinds,
        [StepKind::Release, StepKind::FinalSyncs, StepKind::Acquire]
    );
    let Step::Release { hosts: release } = &plan.steps[0] else {
        panic!("release first")
    };
    // bob: the service IP absent, postfix stopped, the smtp rule closed.
    let bob = &release["bob"];
    assert_eq!(
        bob.addresses,
        vec![address(SERVICE_IP, true, Presence::Absent)]
    );
    assert_eq!(bob.services[0].state, ServiceState::Stopped);
    assert_eq!(
        bob.firewall.as_ref().map(|f| f.rules.clone()),
        Some(vec![rule("ssh", 22)])
    );
    // eve only gains, but runs the final sync on its release state: the job
    // is declared there, without its schedule (that starts at acquire).
    let eve = &release["eve"];
    assert_eq!(eve.services, eve_now.services);
    assert!(eve.addresses.is_empty(), "{:?}", eve.addresses);
    assert_eq!(eve.sync_jobs, vec![maildirs]);
    let Step::Acquire { hosts: acquire } = &plan.steps[2] else {
        panic!("acquire")
    };
    assert_eq!(acquire["eve"], eve_then);
    // bob keeps the service IP away, also against drift.
    let mut bob_acquired = bob_then;
    bob_acquired
        .addresses
        .push(address(SERVICE_IP, true, Presence::Absent));
    assert_eq!(acquire["bob"], bob_acquired);
    assert_eq!(plan.exclusive[&net(SERVICE_IP)], "eve");
}

#[test]
fn a_host_that_only_gains_has_no_release() {
    let current: Current = [("eve".to_owned(), Some(HostSpec::default()))].into();
    let to = phase(
        [(
            "eve".to_owned(),
            HostSpec {
                services: vec![service("postfix", ServiceState::Running)],
                ..HostSpec::default()
            },
        )]
        .into(),
    );
    let plan = plan_transition(&migration(&["eve"]), &current, &to).expect("plan");
    assert_eq!(
        plan.steps.iter().map(Step::kind).collect::<Vec<_>>(),
        [StepKind::Acquire]
    );
}

#[test]
fn an_exclusive_address_on_two_hosts_or_exclusive_and_plain_is_refused() {
    let with = |exclusive_bob: bool| {
        phase(
            [
                (
                    "bob".to_owned(),
                    HostSpec {
                        addresses: vec![address(SERVICE_IP, exclusive_bob, Presence::Present)],
                        ..HostSpec::default()
                    },
                ),
                (
                    "eve".to_owned(),
                    HostSpec {
                        addresses: vec![address(SERVICE_IP, true, Presence::Present)],
                        ..HostSpec::default()
                    },
                ),
            ]
            .into(),
        )
    };
    let current: Current = BTreeMap::new();
    let m = migration(&["bob", "eve"]);
    let two = plan_transition(&m, &current, &with(true)).expect_err("two holders");
    assert!(matches!(two, PlanRefusal::TwoHolders { .. }), "{two}");
    assert!(
        two.to_string().contains("present on bob and on eve"),
        "{two}"
    );
    let mixed = plan_transition(&m, &current, &with(false)).expect_err("mixed");
    assert_eq!(
        mixed.to_string(),
        "phase cutover: address 192.0.2.25/24 is exclusive on eve but declared present without `exclusive` on bob; mark it exclusive everywhere or drop it from bob"
    );
    let stranger = phase([("carol".to_owned(), HostSpec::default())].into());
    let unknown = plan_transition(&m, &current, &stranger).expect_err("unknown host");
    assert!(
        unknown
            .to_string()
            .contains("host carol is not a host of migration bob-to-eve"),
        "{unknown}"
    );
}

// --- The property: the service IP is never on two hosts. ---

const HOSTS: [&str; 3] = ["a", "b", "c"];
const EXCLUSIVE: [&str; 2] = ["192.0.2.25/24", "2001:db8::25/64"];
const PLAIN: &str = "198.51.100.7/24";

/// What the kernel of each host holds: the agent adds what its state
/// declares present, removes what it declares absent, and leaves anything
/// undeclared alone.
fn apply(held: &mut BTreeSet<IpNet>, spec: &HostSpec) {
    for a in &spec.addresses {
        match a.state {
            Presence::Present => held.insert(a.address),
            Presence::Absent => held.remove(&a.address),
        };
    }
}

fn on_two_hosts(held: &BTreeMap<&str, BTreeSet<IpNet>>) -> Option<IpNet> {
    EXCLUSIVE
        .iter()
        .map(|e| net(e))
        .find(|e| held.values().filter(|set| set.contains(e)).count() > 1)
}

/// A host state from generated choices: per exclusive address none /
/// present / absent, and the plain address or not.
fn spec_from(choices: &[u8], plain: bool) -> HostSpec {
    let mut spec = HostSpec::default();
    for (e, choice) in EXCLUSIVE.iter().zip(choices) {
        match choice % 3 {
            1 => spec.addresses.push(address(e, true, Presence::Present)),
            2 => spec.addresses.push(address(e, true, Presence::Absent)),
            _ => {}
        }
    }
    if plain {
        spec.addresses
            .push(address(PLAIN, false, Presence::Present));
    }
    spec
}

fn orders() -> Vec<Vec<&'static str>> {
    let mut all = Vec::new();
    for a in HOSTS {
        for b in HOSTS {
            for c in HOSTS {
                if a != b && b != c && a != c {
                    all.push(vec![a, b, c]);
                }
            }
        }
    }
    all
}

proptest! {
    #[test]
    fn no_moment_of_any_transition_has_an_exclusive_address_on_two_hosts(
        now in proptest::collection::vec((proptest::collection::vec(0u8..3, 2), any::<bool>(), any::<bool>()), 3),
        then in proptest::collection::vec((proptest::collection::vec(0u8..3, 2), any::<bool>(), any::<bool>()), 3),
    ) {
        let m = migration(&HOSTS);
        let current: Current = HOSTS
            .iter()
            .zip(&now)
            .map(|(h, (choices, plain, known))| {
                ((*h).to_owned(), known.then(|| spec_from(choices, *plain)))
            })
            .collect();
        // The kernels hold what the current states declare present.
        let start: BTreeMap<&str, BTreeSet<IpNet>> = HOSTS
            .iter()
            .map(|h| {
                let mut held = BTreeSet::new();
                if let Some(Some(spec)) = current.get(*h) {
                    apply(&mut held, spec);
                }
                (*h, held)
            })
            .collect();
        // Only a start that keeps the rule can be asked to keep it.
        prop_assume!(on_two_hosts(&start).is_none());
        let to = phase(
            HOSTS
                .iter()
                .zip(&then)
                .filter(|(_, (_, _, listed))| *listed)
                .map(|(h, (choices, plain, _))| ((*h).to_owned(), spec_from(choices, *plain)))
                .collect(),
        );
        let plan = match plan_transition(&m, &current, &to) {
            Ok(plan) => plan,
            Err(PlanRefusal::TwoHolders { .. }) => {
                // Refused only when the target really places one address twice.
                let placed = |e: &IpNet| to.hosts.values().filter(|s| s.addresses.iter().any(|a| a.address == *e && a.state == Presence::Present)).count();
                prop_assert!(EXCLUSIVE.iter().any(|e| placed(&net(e)) > 1));
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        };
        for order in orders() {
            let mut held = start.clone();
            for step in &plan.steps {
                let (Step::Release { hosts } | Step::Acquire { hosts }) = step else { continue };
                for host in &order {
                    if let Some(spec) = hosts.get(*host) {
                        apply(held.get_mut(host).expect("host"), spec);
                        prop_assert_eq!(
                            on_two_hosts(&held), None,
                            "{} after {} applied its {:?} state (order {:?})",
                            "an exclusive address on two hosts", host, step.kind(), order
                        );
                    }
                }
            }
            // And the target is reached: each exclusive address it places is held there.
            for (address, holder) in &plan.exclusive {
                prop_assert!(held[holder.as_str()].contains(address), "{} not on {}", address, holder);
            }
        }
    }
}

/// One host whose firewall goes from `now` to `later`: the release rules.
fn released_rules(now: Vec<FirewallRule>, later: Vec<FirewallRule>) -> Vec<FirewallRule> {
    let current: Current = [(
        "eve".to_owned(),
        Some(HostSpec {
            firewall: firewall(now),
            ..HostSpec::default()
        }),
    )]
    .into();
    let to = phase(
        [(
            "eve".to_owned(),
            HostSpec {
                firewall: firewall(later),
                ..HostSpec::default()
            },
        )]
        .into(),
    );
    let plan = plan_transition(&migration(&["eve"]), &current, &to).expect("plan");
    match &plan.steps[0] {
        Step::Release { hosts } => hosts["eve"].firewall.clone().expect("firewall").rules,
        _ => {
            current["eve"]
                .clone()
                .expect("spec")
                .firewall
                .expect("fw")
                .rules
        }
    }
}

#[test]
fn release_closes_what_the_target_closes_and_nothing_it_opens() {
    let smtp = |ports: &[u16]| FirewallRule {
        ports: ports.to_vec(),
        ..rule("smtp", 25)
    };
    let deny = |name: &str, port: u16| FirewallRule {
        action: RuleAction::Reject,
        ..rule(name, port)
    };
    // Widened: the old form stays open until acquire (no SMTP gap on a live host).
    assert_eq!(
        released_rules(vec![smtp(&[25])], vec![smtp(&[25, 465, 587])]),
        vec![smtp(&[25])]
    );
    // Narrowed: the new form at once.
    assert_eq!(
        released_rules(vec![smtp(&[25, 465])], vec![smtp(&[25])]),
        vec![smtp(&[25])]
    );
    // Dropped accept rule: closed now; dropped reject rule: kept (removing it opens).
    assert_eq!(
        released_rules(
            vec![rule("ssh", 22), rule("smtp", 25)],
            vec![rule("ssh", 22)]
        ),
        vec![rule("ssh", 22)]
    );
    assert_eq!(
        released_rules(vec![deny("imap", 143)], vec![]),
        vec![deny("imap", 143)]
    );
    // Accept turned into reject, and a new reject rule: now, before the accepts.
    assert_eq!(
        released_rules(
            vec![rule("ssh", 22), rule("imap", 143)],
            vec![
                rule("ssh", 22),
                deny("imap", 143),
                deny("pop", 110),
                rule("web", 80)
            ]
        ),
        vec![deny("pop", 110), deny("imap", 143), rule("ssh", 22)]
    );
}
