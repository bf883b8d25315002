//! The transition planner (DESIGN.md §6): from the states the hosts hold
//! now and the phase to reach, the ordered steps — release, final syncs,
//! acquire, gates — each with the whole desired state every host gets.
//! A pure function: no I/O, no clock; the executor and `mailctl plan`'s
//! runbook both call it.
//!
//! **Break-before-make.** A host's release state is what it holds now with
//! the closing part of the target already applied; its acquire state is the
//! target in full. Between the two, every agent must report its release
//! state observed, so nothing the target opens is opened while something it
//! closes is still open elsewhere.
//!
//! **Exclusive addresses** (service IPs). An address that any state marks
//! `exclusive` is exclusive everywhere. For each one the target places on a
//! host, every other host of the migration is told to hold it `absent`, in
//! its release state and again in its acquire state (so drift repair keeps
//! it away), whether or not that host's own spec mentions it. A target that
//! places one on two hosts, or an address exclusive on one host and plain on
//! another, is refused before anything starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use mailctl_schemas::model::{
    FinalSync, FirewallPolicy, FirewallRule, Gate, HostSpec, Migration, Phase, Presence,
    RuleAction, ServiceAddress, ServiceState,
};

/// What each host holds now, as its agent's state in force says
/// (`None`: no state, or not known). For the runbook, the previous phase's
/// states stand in for it.
pub type Current = BTreeMap<String, Option<HostSpec>>;

/// One step of a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every listed host gets its release state; the step ends when every
    /// agent reports it converged (observed). Hosts that only gain things
    /// are not listed.
    Release { hosts: BTreeMap<String, HostSpec> },
    /// One-shot runs of declared sync jobs, each verified.
    FinalSyncs { syncs: Vec<FinalSync> },
    /// Every host of the target gets the target state (with the exclusive
    /// addresses other hosts take held absent).
    Acquire { hosts: BTreeMap<String, HostSpec> },
    /// The target's gates.
    Gates { gates: Vec<Gate> },
}

impl Step {
    pub fn kind(&self) -> StepKind {
        match self {
            Step::Release { .. } => StepKind::Release,
            Step::FinalSyncs { .. } => StepKind::FinalSyncs,
            Step::Acquire { .. } => StepKind::Acquire,
            Step::Gates { .. } => StepKind::Gates,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Release,
    FinalSyncs,
    Acquire,
    Gates,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepKind::Release => "release",
            StepKind::FinalSyncs => "final syncs",
            StepKind::Acquire => "acquire",
            StepKind::Gates => "gates",
        })
    }
}

/// The steps from the current states to `to`, in order. Steps with nothing
/// to do are left out, except acquire (it is what reaching a phase means).
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionPlan {
    pub to: String,
    pub steps: Vec<Step>,
    /// Exclusive addresses and the host the target places each on.
    pub exclusive: BTreeMap<IpNet, String>,
}

/// Why a transition cannot keep its promises; nothing is started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    #[error(
        "phase {phase}: exclusive address {address} is present on {first} and on {second}; a service IP may be on one host only"
    )]
    TwoHolders {
        phase: String,
        address: IpNet,
        first: String,
        second: String,
    },
    #[error(
        "phase {phase}: address {address} is exclusive on {exclusive_on} but declared present without `exclusive` on {plain_on}; mark it exclusive everywhere or drop it from {plain_on}"
    )]
    Mixed {
        phase: String,
        address: IpNet,
        exclusive_on: String,
        plain_on: String,
    },
    #[error(
        "phase {phase}: host {host} is not a host of migration {migration} (its hosts: {hosts})"
    )]
    UnknownHost {
        phase: String,
        host: String,
        migration: String,
        hosts: String,
    },
    #[error(
        "phase {phase}: the final sync {job} on {host} is not a sync job of {host} in this phase or now"
    )]
    UnknownSync {
        phase: String,
        host: String,
        job: String,
    },
}

/// Plans the transition of `migration` from `current` to phase `to`.
pub fn plan_transition(
    migration: &Migration,
    current: &Current,
    to: &Phase,
) -> Result<TransitionPlan, PlanRefusal> {
    for host in to.hosts.keys() {
        if !migration.hosts.contains_key(host) {
            return Err(PlanRefusal::UnknownHost {
                phase: to.name.clone(),
                host: host.clone(),
                migration: migration.name.clone(),
                hosts: migration
                    .hosts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let exclusive = exclusive_placements(current, to)?;
    let hosts: BTreeSet<&String> = migration.hosts.keys().collect();
    let mut release = BTreeMap::new();
    let mut acquire = BTreeMap::new();
    for host in hosts {
        let now = current.get(host).cloned().flatten();
        let target = to.hosts.get(host);
        let held_elsewhere: Vec<&ServiceAddress> =
            exclusive_elsewhere(&exclusive, host, current, to);
        let released = release_state(now.as_ref(), target, &held_elsewhere, &to.final_syncs, host);
        if let Some(released) = released
            && Some(&released) != now.as_ref()
        {
            release.insert(host.clone(), released);
        }
        if let Some(target) = target {
            let mut acquired = target.clone();
            hold_absent(&mut acquired, &held_elsewhere);
            acquire.insert(host.clone(), acquired);
        } else if let Some(now) = release.get(host).cloned().or(now) {
            // A host the target does not describe keeps what it has, with
            // the addresses others take held absent.
            let mut kept = now;
            hold_absent(&mut kept, &held_elsewhere);
            acquire.insert(host.clone(), kept);
        }
    }
    for sync in &to.final_syncs {
        let declared = |spec: Option<&HostSpec>| {
            spec.is_some_and(|s| s.sync_jobs.iter().any(|j| j.name == sync.job))
        };
        let now = current.get(&sync.host).and_then(Option::as_ref);
        if !declared(to.hosts.get(&sync.host)) && !declared(now) {
            return Err(PlanRefusal::UnknownSync {
                phase: to.name.clone(),
                host: sync.host.clone(),
                job: sync.job.clone(),
            });
        }
    }
    let mut steps = Vec::new();
    if !release.is_empty() {
        steps.push(Step::Release { hosts: release });
    }
    if !to.final_syncs.is_empty() {
        steps.push(Step::FinalSyncs {
            syncs: to.final_syncs.clone(),
        });
    }
    steps.push(Step::Acquire { hosts: acquire });
    if !to.gates.is_empty() {
        steps.push(Step::Gates {
            gates: to.gates.clone(),
        });
    }
    Ok(TransitionPlan {
        to: to.name.clone(),
        steps,
        exclusive,
    })
}

/// Whether `address` is marked exclusive in any state at hand.
fn exclusive_addresses(current: &Current, to: &Phase) -> BTreeSet<IpNet> {
    current
        .values()
        .flatten()
        .chain(to.hosts.values())
        .flat_map(|spec| &spec.addresses)
        .filter(|a| a.exclusive)
        .map(|a| a.address)
        .collect()
}

/// Where the target places each exclusive address (present); refuses two
/// holders and an address exclusive on one host, plain on another.
fn exclusive_placements(
    current: &Current,
    to: &Phase,
) -> Result<BTreeMap<IpNet, String>, PlanRefusal> {
    let exclusive = exclusive_addresses(current, to);
    let mut placed: BTreeMap<IpNet, String> = BTreeMap::new();
    for (host, spec) in &to.hosts {
        for address in &spec.addresses {
            if address.state != Presence::Present || !exclusive.contains(&address.address) {
                continue;
            }
            if !address.exclusive {
                let exclusive_on = to
                    .hosts
                    .iter()
                    .chain(
                        current
                            .iter()
                            .filter_map(|(h, s)| s.as_ref().map(|s| (h, s))),
                    )
                    .find(|(_, s)| {
                        s.addresses
                            .iter()
                            .any(|a| a.address == address.address && a.exclusive)
                    })
                    .map(|(h, _)| h.clone())
                    .unwrap_or_default();
                return Err(PlanRefusal::Mixed {
                    phase: to.name.clone(),
                    address: address.address,
                    exclusive_on,
                    plain_on: host.clone(),
                });
            }
            if let Some(first) = placed.get(&address.address) {
                return Err(PlanRefusal::TwoHolders {
                    phase: to.name.clone(),
                    address: address.address,
                    first: first.clone(),
                    second: host.clone(),
                });
            }
            placed.insert(address.address, host.clone());
        }
    }
    Ok(placed)
}

/// The exclusive addresses the target places on hosts other than `host`,
/// each as it is declared there (its interface), for holding absent here.
/// The interface used on this host is its own when it declares the address,
/// else the one of the host that takes it.
fn exclusive_elsewhere<'a>(
    placed: &BTreeMap<IpNet, String>,
    host: &str,
    current: &'a Current,
    to: &'a Phase,
) -> Vec<&'a ServiceAddress> {
    let mine = |address: &IpNet| {
        to.hosts
            .get(host)
            .into_iter()
            .chain(current.get(host).and_then(Option::as_ref))
            .flat_map(|s| &s.addresses)
            .find(|a| a.address == *address)
    };
    placed
        .iter()
        .filter(|(_, holder)| holder.as_str() != host)
        .filter_map(|(address, holder)| {
            mine(address).or_else(|| {
                to.hosts
                    .get(holder)
                    .and_then(|s| s.addresses.iter().find(|a| a.address == *address))
            })
        })
        .collect()
}

/// Declares each of `addresses` absent in `spec` (replacing what `spec`
/// says of it).
fn hold_absent(spec: &mut HostSpec, addresses: &[&ServiceAddress]) {
    for address in addresses {
        spec.addresses.retain(|a| a.address != address.address);
        spec.addresses.push(ServiceAddress {
            state: Presence::Absent,
            label: None,
            ..(*address).clone()
        });
    }
}

/// The release state of one host: what it holds now with the target's
/// closing changes applied (DESIGN.md §6). `None`: the host holds nothing
/// now and gets nothing to close.
fn release_state(
    now: Option<&HostSpec>,
    target: Option<&HostSpec>,
    held_elsewhere: &[&ServiceAddress],
    final_syncs: &[FinalSync],
    host: &str,
) -> Option<HostSpec> {
    let syncs_here: Vec<&FinalSync> = final_syncs.iter().filter(|s| s.host == host).collect();
    if now.is_none() && held_elsewhere.is_empty() && syncs_here.is_empty() {
        return None;
    }
    let mut release = now.cloned().unwrap_or_default();
    if let Some(target) = target {
        // Addresses the target marks absent or no longer lists as present.
        let present_later: BTreeSet<IpNet> = target
            .addresses
            .iter()
            .filter(|a| a.state == Presence::Present)
            .map(|a| a.address)
            .collect();
        for address in &mut release.addresses {
            if address.state == Presence::Present && !present_later.contains(&address.address) {
                address.state = Presence::Absent;
            }
        }
        for gone in target
            .addresses
            .iter()
            .filter(|a| a.state == Presence::Absent)
        {
            if !release.addresses.iter().any(|a| a.address == gone.address) {
                release.addresses.push(gone.clone());
            }
        }
        // Services the target stops.
        for service in &mut release.services {
            if target
                .services
                .iter()
                .any(|t| t.name == service.name && t.state == ServiceState::Stopped)
            {
                service.state = ServiceState::Stopped;
            }
        }
        for stopped in target
            .services
            .iter()
            .filter(|t| t.state == ServiceState::Stopped)
        {
            if !release.services.iter().any(|s| s.name == stopped.name) {
                release.services.push(stopped.clone());
            }
        }
        // What the target's firewall closes, closed; what it opens waits.
        if let (Some(firewall), Some(later)) = (&mut release.firewall, &target.firewall) {
            firewall.rules = release_rules(&firewall.rules, &later.rules);
            if later.policy == FirewallPolicy::Drop {
                firewall.policy = later.policy;
            }
        }
        // Sync schedules the target ends.
        release.sync_jobs.retain_mut(|job| {
            match target.sync_jobs.iter().find(|t| t.name == job.name) {
                Some(later) => {
                    if later.every.is_none() {
                        job.every = None;
                    }
                    true
                }
                None => false,
            }
        });
    }
    hold_absent(&mut release, held_elsewhere);
    // A final sync runs on the release state: its job must be declared
    // there (without a schedule, if it is new).
    for sync in syncs_here {
        if release.sync_jobs.iter().any(|j| j.name == sync.job) {
            continue;
        }
        if let Some(job) = target.and_then(|t| t.sync_jobs.iter().find(|j| j.name == sync.job)) {
            let mut job = job.clone();
            job.every = None;
            release.sync_jobs.push(job);
        }
    }
    Some(release)
}

/// The rules of a release state: the closing half of going from `now` to
/// `later`, rule by rule (matched by name).
///
/// - an accept rule the target drops is removed (it closes); a reject or
///   drop rule the target drops stays until acquire (removing it opens);
/// - a reject or drop rule the target adds comes now (it closes), before
///   the accept rules; an accept rule it adds waits for acquire;
/// - a changed rule: its new form now when it only closes (an accept rule
///   narrowed, an accept turned into a reject or drop, a deny rule
///   widened); its old form when the change only opens; removed when the
///   change does both to an accept rule, its new form for a deny rule.
fn release_rules(now: &[FirewallRule], later: &[FirewallRule]) -> Vec<FirewallRule> {
    let accepts = |rule: &FirewallRule| rule.action == RuleAction::Accept;
    let mut denies_first: Vec<FirewallRule> = later
        .iter()
        .filter(|rule| !accepts(rule) && !now.iter().any(|n| n.name == rule.name))
        .cloned()
        .collect();
    let mut kept = Vec::new();
    for rule in now {
        let Some(new) = later.iter().find(|l| l.name == rule.name) else {
            if !accepts(rule) {
                kept.push(rule.clone());
            }
            continue;
        };
        if new == rule {
            kept.push(rule.clone());
            continue;
        }
        match (accepts(rule), accepts(new)) {
            // Accept -> deny closes.
            (true, false) => denies_first.push(new.clone()),
            // Deny -> accept opens: the old form until acquire.
            (false, true) => kept.push(rule.clone()),
            (true, true) if covers(rule, new) => kept.push(new.clone()),
            (true, true) if covers(new, rule) => kept.push(rule.clone()),
            (true, true) => {}
            (false, false) if covers(rule, new) && !covers(new, rule) => kept.push(rule.clone()),
            (false, false) => denies_first.push(new.clone()),
        }
    }
    denies_first.extend(kept);
    denies_first
}

/// Whether every packet `inner` matches, `outer` matches too.
fn covers(outer: &FirewallRule, inner: &FirewallRule) -> bool {
    outer.protocol == inner.protocol
        && inner.ports.iter().all(|p| outer.ports.contains(p))
        && (outer.sources.is_empty()
            || (!inner.sources.is_empty()
                && inner
                    .sources
                    .iter()
                    .all(|i| outer.sources.iter().any(|o| o.contains(i)))))
}

/// The runbook of a whole migration: each transition from the first phase
/// to the last, planned from the previous phase's states (the first from
/// states unknown: whatever the hosts hold).
pub fn plan_migration<'a>(
    migration: &Migration,
    phases: impl IntoIterator<Item = &'a Phase>,
) -> Vec<(Option<String>, Result<TransitionPlan, PlanRefusal>)> {
    let mut current: Current = migration.hosts.keys().map(|h| (h.clone(), None)).collect();
    let mut from = None;
    let mut plans = Vec::new();
    for phase in phases {
        let plan = plan_transition(migration, &current, phase);
        if let Ok(plan) = &plan
            && let Some(Step::Acquire { hosts }) =
                plan.steps.iter().find(|s| s.kind() == StepKind::Acquire)
        {
            for (host, spec) in hosts {
                current.insert(host.clone(), Some(spec.clone()));
            }
        }
        plans.push((from.replace(phase.name.clone()), plan));
    }
    plans
}
