//! Fuzz the agent's reader of `nft -n list table inet NAME`
//! (`mailctl_agent::firewall::parse_table`) and the plan built on what it
//! reads, plus the writer/reader round trip the agent relies on to converge.
//!
//! The input is split at its first NUL byte: the text before it is the
//! listing; the bytes after it (or, without a NUL, the whole input) drive a
//! small generator of valid firewall manifests (the constraints of
//! `mailctl validate`: unique rule names of the allowed characters, ports
//! 1-65535, at least one port, any CIDR).
//!
//! 1. `parse_table(listing)` must not panic; when it reads a table,
//!    `FirewallDriver::diff` of the generated firewall against it (and the
//!    plan text of every change) must not panic either.
//! 2. The script the agent writes for the generated firewall
//!    (`RuleSet::replace_script`, whose table block is what `nft -n list`
//!    prints back, modulo spacing), read with `parse_table`, must give a
//!    table the same firewall has no change against: otherwise the agent
//!    would replace its table on every pass.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run nft_listing` (see ../README.md).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mailctl_agent::driver::Driver;
use mailctl_agent::firewall::{FirewallChange, FirewallDriver, LockoutGuard, parse_table};
use mailctl_schemas::model::{Firewall, FirewallPolicy, FirewallRule, Protocol, RuleAction};

/// Characters `mailctl validate` allows in a rule name (after the first,
/// which is alphanumeric).
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@";

/// Names that mean something to the reader: the comments of the rules
/// mailctl puts first in a `policy: drop` chain.
const SPECIAL_NAMES: [&str; 3] = ["mailctl-loopback", "mailctl-replies", "mailctl-icmp"];

fn name(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return Ok((*u.choose(&SPECIAL_NAMES)?).to_owned());
    }
    let len = u.int_in_range(1..=24)?;
    let mut name = String::with_capacity(len);
    for i in 0..len {
        // The first character is alphanumeric (the first 62 of NAME_CHARS).
        let pool = if i == 0 {
            &NAME_CHARS[..62]
        } else {
            NAME_CHARS
        };
        name.push(char::from(*u.choose(pool)?));
    }
    Ok(name)
}

fn source(u: &mut Unstructured<'_>) -> Result<IpNet> {
    let net = if u.arbitrary()? {
        let addr = Ipv4Addr::from(u.arbitrary::<u32>()?);
        IpNet::new(IpAddr::V4(addr), u.int_in_range(0..=32)?)
    } else {
        let addr = Ipv6Addr::from(u.arbitrary::<u128>()?);
        IpNet::new(IpAddr::V6(addr), u.int_in_range(0..=128)?)
    };
    // The prefix lengths are in range, so `new` cannot fail.
    Ok(net.unwrap_or_else(|_| IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))
}

fn firewall(u: &mut Unstructured<'_>) -> Result<Firewall> {
    let policy = if u.arbitrary()? {
        FirewallPolicy::Drop
    } else {
        FirewallPolicy::Accept
    };
    let mut rules: Vec<FirewallRule> = Vec::new();
    for _ in 0..u.int_in_range(0..=12)? {
        let name = name(u)?;
        if rules.iter().any(|r| r.name == name) {
            continue; // names are unique in a valid manifest
        }
        let protocol = if u.arbitrary()? {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let mut ports = Vec::new();
        for _ in 0..u.int_in_range(1..=10)? {
            // Mostly near each other, so ranges merge.
            let port = if u.arbitrary()? {
                u.int_in_range(1..=65535)?
            } else {
                u.int_in_range(20..=40)?
            };
            ports.push(port);
        }
        let mut sources = Vec::new();
        for _ in 0..u.int_in_range(0..=6)? {
            sources.push(source(u)?);
        }
        let action = *u.choose(&[RuleAction::Accept, RuleAction::Drop, RuleAction::Reject])?;
        rules.push(FirewallRule {
            name,
            protocol,
            ports,
            sources,
            action,
        });
    }
    Ok(Firewall {
        table: "mailctl".to_owned(),
        policy,
        // No lockout refusal: the round trip is about every rule set.
        allow_lockout: true,
        rules,
    })
}

fuzz_target!(|data: &[u8]| {
    let (listing, rest) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, data),
    };
    let mut u = Unstructured::new(rest);
    let Ok(desired) = firewall(&mut u) else {
        return;
    };
    // No protected ports: the target checks the listing, not the guard.
    let driver = FirewallDriver::new("nft", LockoutGuard::new(Vec::new(), Vec::new()));

    // 1. Any listing: read it, plan against it, print the plan.
    if let Ok(listing) = std::str::from_utf8(listing)
        && let Ok(observed) = parse_table(listing)
    {
        let changes = driver
            .diff(&desired, &Some(observed))
            .expect("a valid firewall with allowLockout is never refused");
        for change in &changes {
            let _ = change.to_string();
        }
    }

    // 2. What the agent writes reads back as converged.
    let created = driver
        .diff(&desired, &None)
        .expect("a valid firewall with allowLockout is never refused");
    let [
        FirewallChange::Create {
            table,
            desired: rules,
        },
    ] = created.as_slice()
    else {
        panic!("no table: expected one Create, got {created:?}");
    };
    let script = rules.replace_script(table);
    // `add table` and `delete table` come first; the table block follows,
    // as `nft list` prints it.
    let block: String = script
        .lines()
        .skip_while(|l| !l.starts_with("table "))
        .flat_map(|l| [l, "\n"])
        .collect();
    let observed = match parse_table(&block) {
        Ok(table) => table,
        Err(error) => panic!("the agent's own table does not parse: {error}\n{block}"),
    };
    let changes = driver
        .diff(&desired, &Some(observed))
        .expect("a valid firewall with allowLockout is never refused");
    assert!(
        changes.is_empty(),
        "the agent's own table reads back with changes:\n{block}\n{}",
        changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
});
