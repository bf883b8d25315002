//! The lockout guard: who must still reach SSH and the agent's API port
//! after the owned table is replaced.
//!
//! The agent cannot tell who its admins are from the manifest, so it is
//! told in `agent.toml`: `admin_sources`, the ranges the controller and the
//! admins connect from (the controller's address belongs there too: it is
//! the one that must be able to confirm or undo a change). Without it every
//! address must keep both ports: `0.0.0.0/0` and `::/0`, so a rule set that
//! narrows or bans sources on those ports needs `admin_sources` (or
//! `allowLockout: true`).
//!
//! Each range is held against the rule set per address family, walked as
//! the kernel walks the chain: the first rule matching a packet decides, and
//! a rule for the other family never matches. A range counts as blocked when
//! *any* part of it is: an admin somewhere in `10.0.0.0/8` may be anywhere in
//! it, and the range is what the agent was told.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mailctl_schemas::model::{FirewallPolicy, Protocol, RuleAction};

use super::nft::{RuleSet, Sources};
use crate::intervals::{IntervalSet, Point};

/// A port that must stay reachable unless the manifest allows a lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedPort {
    pub port: u16,
    /// What listens there, for the refusal message (`SSH`).
    pub service: &'static str,
}

/// The ports to keep and the sources that must keep reaching them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutGuard {
    ports: Vec<ProtectedPort>,
    admin_sources: Vec<IpNet>,
}

/// One source range that a rule set cuts off from one protected port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub port: u16,
    pub service: &'static str,
    /// The admin range (or `0.0.0.0/0`, `::/0` by default), as configured.
    pub source: IpNet,
    /// The blocked part of `source` (first and last address of its first
    /// blocked stretch); the whole range when it is blocked entirely.
    pub from: IpAddr,
    pub to: IpAddr,
}

impl Blocked {
    /// `IPv4` or `IPv6`.
    pub fn family(&self) -> &'static str {
        match self.source {
            IpNet::V4(_) => "IPv4",
            IpNet::V6(_) => "IPv6",
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.source, self.family())?;
        if (self.from, self.to) != (self.source.network(), self.source.broadcast()) {
            if self.from == self.to {
                write!(f, "; {} is blocked", self.from)?;
            } else {
                write!(f, "; {}-{} is blocked", self.from, self.to)?;
            }
        }
        f.write_str(")")
    }
}

/// The list in a refusal: `tcp/22 (SSH) from 0.0.0.0/0 (IPv4) and ::/0
/// (IPv6), tcp/7443 (...) from ...`, by port in the guard's order.
pub fn describe(blocked: &[Blocked]) -> String {
    let mut ports: Vec<(u16, &'static str, Vec<String>)> = Vec::new();
    for b in blocked {
        match ports.iter_mut().find(|(port, _, _)| *port == b.port) {
            Some((_, _, sources)) => sources.push(b.to_string()),
            None => ports.push((b.port, b.service, vec![b.to_string()])),
        }
    }
    ports
        .into_iter()
        .map(|(port, service, sources)| {
            format!("tcp/{port} ({service}) from {}", sources.join(" and "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl LockoutGuard {
    /// `admin_sources` empty: every address of both families.
    pub fn new(ports: Vec<ProtectedPort>, admin_sources: Vec<IpNet>) -> LockoutGuard {
        let admin_sources = if admin_sources.is_empty() {
            // 0.0.0.0/0 and ::/0.
            vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
        } else {
            admin_sources
        };
        LockoutGuard {
            ports,
            admin_sources,
        }
    }

    /// Every (port, source) that `rules` cuts off, in the guard's order;
    /// empty when none.
    pub fn blocked(&self, rules: &RuleSet) -> Vec<Blocked> {
        let mut blocked = Vec::new();
        for protected in &self.ports {
            let v4 = reaching(rules, protected.port, |sources| match sources {
                Sources::Any => IntervalSet::full(),
                Sources::V4(set) => set.clone(),
                Sources::V6(_) => IntervalSet::empty(),
            });
            let v6 = reaching(rules, protected.port, |sources| match sources {
                Sources::Any => IntervalSet::full(),
                Sources::V4(_) => IntervalSet::empty(),
                Sources::V6(set) => set.clone(),
            });
            for source in &self.admin_sources {
                let cut = match source {
                    IpNet::V4(net) => {
                        first_range(&v4, u32::from(net.network()), u32::from(net.broadcast())).map(
                            |(a, b)| (IpAddr::from(Ipv4Addr::from(a)), Ipv4Addr::from(b).into()),
                        )
                    }
                    IpNet::V6(net) => {
                        first_range(&v6, u128::from(net.network()), u128::from(net.broadcast()))
                            .map(|(a, b)| {
                                (IpAddr::from(Ipv6Addr::from(a)), Ipv6Addr::from(b).into())
                            })
                    }
                };
                if let Some((from, to)) = cut {
                    blocked.push(Blocked {
                        port: protected.port,
                        service: protected.service,
                        source: *source,
                        from,
                        to,
                    });
                }
            }
        }
        blocked
    }
}

/// The addresses of one family that reach tcp/`port` under `rules`; `of`
/// gives the addresses of that family a rule's sources match.
fn reaching<T: Point>(
    rules: &RuleSet,
    port: u16,
    of: impl Fn(&Sources) -> IntervalSet<T>,
) -> IntervalSet<T> {
    // Packets no rule has decided yet, and those an accept took.
    let mut undecided = IntervalSet::<T>::full();
    let mut reached = IntervalSet::<T>::empty();
    for rule in &rules.rules {
        if rule.protocol != Protocol::Tcp || !rule.ports.contains(port) {
            continue;
        }
        let matched = of(&rule.sources);
        if rule.action == RuleAction::Accept {
            reached = reached.union(&undecided.intersection(&matched));
        }
        undecided = undecided.minus(&matched);
    }
    if rules.policy == FirewallPolicy::Accept {
        reached = reached.union(&undecided);
    }
    reached
}

/// The first stretch of `start..=end` outside `reached`, if any.
fn first_range<T: Point>(reached: &IntervalSet<T>, start: T, end: T) -> Option<(T, T)> {
    IntervalSet::from_ranges([(start, end)])
        .minus(reached)
        .ranges()
        .first()
        .copied()
}
