//! The owned table in nftables' text syntax, both ways: the replace script
//! `nft -f -` reads, and the listing `nft -n list table` prints.
//!
//! Rules are compared in a canonical form ([`NftRule`]): ports and source
//! networks as merged ranges, because nft sorts, merges and unwraps the sets it
//! stores. Anything in the table that this form cannot express (a counter, a
//! hand-added chain or set) is kept as a short description: the table is ours,
//! so it is replaced, and the plan shows what goes.
//!
//! Names go into the script unquoted (the table) or between double quotes
//! (rule comments), and nft has no escape for either. They are checked with
//! [`check_names`] before a script is built or a listing is asked for.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use mailctl_schemas::model::{Firewall, FirewallPolicy, Protocol, RuleAction};

use crate::intervals::IntervalSet;

/// The only chain of the owned table.
pub(crate) const INPUT_CHAIN: &str = "input";

/// Rules mailctl puts first in a `policy: drop` chain, named by their comment.
/// Without them a closed host breaks itself: the replies to its own DNS
/// queries, outgoing SMTP, rsync and LMTP are dropped, and IPv6 loses its
/// neighbours (neighbour discovery is ICMPv6). A manifest cannot express
/// them, so they are not the manifest's to forget.
pub(crate) const ESSENTIAL_RULES: [&str; 3] =
    ["mailctl-loopback", "mailctl-replies", "mailctl-icmp"];

/// What the essential rule `name` matches, as written in the script.
fn essential_text(name: &str) -> &'static str {
    match name {
        "mailctl-loopback" => "iifname \"lo\" accept",
        "mailctl-replies" => "ct state established,related accept",
        _ => "meta l4proto { icmp, ipv6-icmp } accept",
    }
}

/// The desired content of the owned table, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub(crate) policy: FirewallPolicy,
    pub(crate) rules: Vec<NftRule>,
}

/// One rule of the input chain in canonical form. A manifest rule with both
/// IPv4 and IPv6 sources becomes two of these (an nft rule matches one
/// address family), with the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) ports: IntervalSet<u16>,
    pub(crate) sources: Sources,
    pub(crate) action: RuleAction,
}

/// The source addresses a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sources {
    Any,
    V4(IntervalSet<u32>),
    V6(IntervalSet<u128>),
}

/// The owned table as `nft -n list table` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    pub(crate) chains: Vec<ObservedChain>,
    /// Sets, maps, table flags and other objects in the table, described.
    pub(crate) other: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObservedChain {
    pub(crate) name: String,
    /// `type filter hook input priority 0`: the only base chain we create.
    pub(crate) filter_input_at_0: bool,
    pub(crate) policy: Option<FirewallPolicy>,
    pub(crate) rules: Vec<ObservedRule>,
    /// Comments of the [`ESSENTIAL_RULES`] found, in order.
    pub(crate) essentials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObservedRule {
    Known(NftRule),
    /// A rule the canonical form cannot express, as nft lists it.
    Foreign(String),
}

/// A name that cannot go into an nft script as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadName {
    pub(crate) what: &'static str,
    pub(crate) name: String,
}

/// Whether `table` can be written unquoted: a letter, then letters, digits,
/// `_` and `-` (what the manifest validation allows).
fn table_name_ok(table: &str) -> bool {
    mailctl_schemas::nft::table_name_problem(table).is_none()
}

/// Whether a rule name can go between double quotes as an nft comment.
fn rule_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Refuses names nft's syntax cannot carry safely. The manifest validation
/// already allows no others; this keeps a model built another way from
/// writing something else than it says into a script or a command line.
pub(crate) fn check_names<'a>(
    table: &str,
    rule_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), BadName> {
    if !table_name_ok(table) {
        return Err(BadName {
            what: "table name",
            name: table.to_owned(),
        });
    }
    match rule_names.into_iter().find(|name| !rule_name_ok(name)) {
        Some(name) => Err(BadName {
            what: "rule name",
            name: name.to_owned(),
        }),
        None => Ok(()),
    }
}

impl RuleSet {
    pub(crate) fn from_model(firewall: &Firewall) -> RuleSet {
        let mut rules = Vec::with_capacity(firewall.rules.len());
        for rule in &firewall.rules {
            let ports = IntervalSet::from_ranges(rule.ports.iter().map(|&p| (p, p)));
            let nft_rule = |sources| NftRule {
                name: rule.name.clone(),
                protocol: rule.protocol,
                ports: ports.clone(),
                sources,
                action: rule.action,
            };
            if rule.sources.is_empty() {
                rules.push(nft_rule(Sources::Any));
                continue;
            }
            let v4 = IntervalSet::from_ranges(rule.sources.iter().filter_map(|net| match net {
                IpNet::V4(net) => Some((u32::from(net.network()), u32::from(net.broadcast()))),
                IpNet::V6(_) => None,
            }));
            let v6 = IntervalSet::from_ranges(rule.sources.iter().filter_map(|net| match net {
                IpNet::V6(net) => Some((u128::from(net.network()), u128::from(net.broadcast()))),
                IpNet::V4(_) => None,
            }));
            if !v4.is_empty() {
                rules.push(nft_rule(Sources::V4(v4)));
            }
            if !v6.is_empty() {
                rules.push(nft_rule(Sources::V6(v6)));
            }
        }
        RuleSet {
            policy: firewall.policy,
            rules,
        }
    }

    /// One nft transaction that makes `table` exactly this rule set: create
    /// the table if missing (so the delete cannot fail), delete it with
    /// everything in it, and define it again. nft applies a file atomically,
    /// so no packet ever sees a half-written table.
    ///
    /// The names must have passed [`check_names`].
    #[doc(hidden)] // public for the fuzz target nft_listing
    pub fn replace_script(&self, table: &str) -> String {
        let mut script = String::with_capacity(160 + 96 * self.rules.len());
        // Writing to a String cannot fail.
        let _ = self.write_script(&mut script, table);
        script
    }

    fn write_script(&self, out: &mut String, table: &str) -> fmt::Result {
        writeln!(out, "add table inet {table}")?;
        writeln!(out, "delete table inet {table}")?;
        writeln!(out, "table inet {table} {{")?;
        writeln!(out, "\tchain {INPUT_CHAIN} {{")?;
        writeln!(
            out,
            "\t\ttype filter hook input priority 0; policy {};",
            policy_name(self.policy)
        )?;
        if self.policy == FirewallPolicy::Drop {
            for name in ESSENTIAL_RULES {
                writeln!(out, "\t\t{} comment \"{name}\"", essential_text(name))?;
            }
        }
        for rule in &self.rules {
            out.push_str("\t\t");
            rule.write_nft(out)?;
            writeln!(out, " comment \"{}\"", rule.name)?;
        }
        out.push_str("\t}\n}\n");
        Ok(())
    }
}

impl NftRule {
    /// The rule's matches (sources, protocol, ports), sets written as nft
    /// reads them (`spaced`) or as plans show them.
    fn write_matches<W: fmt::Write + ?Sized>(&self, out: &mut W, spaced: bool) -> fmt::Result {
        match &self.sources {
            Sources::Any => {}
            Sources::V4(set) => {
                out.write_str("ip saddr ")?;
                write_set(out, set.ranges(), spaced, |out, &(a, b)| {
                    write_range(out, AddressRange::V4(a, b))
                })?;
                out.write_char(' ')?;
            }
            Sources::V6(set) => {
                out.write_str("ip6 saddr ")?;
                write_set(out, set.ranges(), spaced, |out, &(a, b)| {
                    write_range(out, AddressRange::V6(a, b))
                })?;
                out.write_char(' ')?;
            }
        }
        write!(out, "{} dport ", protocol_name(self.protocol))?;
        write_set(out, self.ports.ranges(), spaced, write_port_range)
    }

    /// The rule's matches and verdict in nft syntax, without the comment.
    fn write_nft(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.write_matches(out, true)?;
        out.write_str(match (self.action, self.protocol) {
            (RuleAction::Accept, _) => " accept",
            (RuleAction::Drop, _) => " drop",
            // A TCP client gets a reset at once instead of waiting for a timeout.
            (RuleAction::Reject, Protocol::Tcp) => " reject with tcp reset",
            (RuleAction::Reject, Protocol::Udp) => " reject with icmpx port-unreachable",
        })
    }
}

/// `x` for one element, `{ x, y }` (nft) or `{x, y}` (plans) for more.
fn write_set<W: fmt::Write + ?Sized, T>(
    out: &mut W,
    elements: &[T],
    spaced: bool,
    mut element: impl FnMut(&mut W, &T) -> fmt::Result,
) -> fmt::Result {
    if let [one] = elements {
        return element(out, one);
    }
    out.write_str(if spaced { "{ " } else { "{" })?;
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        element(out, e)?;
    }
    out.write_str(if spaced { " }" } else { "}" })
}

fn write_port_range<W: fmt::Write + ?Sized>(out: &mut W, &(a, b): &(u16, u16)) -> fmt::Result {
    if a == b {
        write!(out, "{a}")
    } else {
        write!(out, "{a}-{b}")
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressRange {
    V4(u32, u32),
    V6(u128, u128),
}

impl AddressRange {
    fn v4(self) -> Option<(u32, u32)> {
        match self {
            AddressRange::V4(a, b) => Some((a, b)),
            AddressRange::V6(..) => None,
        }
    }

    fn v6(self) -> Option<(u128, u128)> {
        match self {
            AddressRange::V6(a, b) => Some((a, b)),
            AddressRange::V4(..) => None,
        }
    }
}

/// The prefix length when `first..=last` is exactly one CIDR block.
fn prefix_len(first: u128, last: u128, bits: u32) -> Option<u8> {
    let span = last.checked_sub(first)?;
    let host_bits = if span == u128::MAX {
        128
    } else {
        let size = span + 1;
        if !size.is_power_of_two() || first & span != 0 {
            return None;
        }
        size.trailing_zeros()
    };
    u8::try_from(bits.checked_sub(host_bits)?).ok()
}

/// An address range as nft writes it: `192.0.2.1`, `192.0.2.0/24` or
/// `192.0.2.3-192.0.2.9`.
fn write_range<W: fmt::Write + ?Sized>(out: &mut W, range: AddressRange) -> fmt::Result {
    fn show<W: fmt::Write + ?Sized>(out: &mut W, v4: bool, value: u128) -> fmt::Result {
        if v4 {
            write!(
                out,
                "{}",
                Ipv4Addr::from(u32::try_from(value).unwrap_or_default())
            )
        } else {
            write!(out, "{}", Ipv6Addr::from(value))
        }
    }
    let (first, last, bits, v4): (u128, u128, u32, bool) = match range {
        AddressRange::V4(a, b) => (a.into(), b.into(), 32, true),
        AddressRange::V6(a, b) => (a, b, 128, false),
    };
    match prefix_len(first, last, bits) {
        Some(len) if u32::from(len) == bits => show(out, v4, first),
        Some(len) => {
            show(out, v4, first)?;
            write!(out, "/{len}")
        }
        None => {
            show(out, v4, first)?;
            out.write_char('-')?;
            show(out, v4, last)
        }
    }
}

/// Reads the output of `nft -n list table inet NAME`: one table block with
/// chains (a header line, then one rule per line) and possibly sets, maps
/// and other objects, whose bodies may span lines.
pub fn parse_table(listing: &str) -> Result<ObservedTable, String> {
    let mut table = ObservedTable::default();
    let mut lines = listing.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(line) if line.starts_with("table ") && line.ends_with('{') => {}
        Some(line) => return Err(format!("expected `table inet NAME {{`, found `{line}`")),
        None => return Err("empty listing".to_owned()),
    }
    let mut closed = false;
    while let Some(line) = lines.next() {
        if closed {
            return Err(format!("unexpected `{line}` after the table"));
        }
        if line == "}" {
            closed = true;
            continue;
        }
        let depth = brace_balance(line);
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|rest| rest.strip_suffix('{'))
            .map(str::trim)
            .filter(|_| depth == 1)
        {
            table
                .chains
                .push(parse_chain(name, &mut lines, &mut table.other)?);
        } else if depth > 0 {
            // A set, map, flowtable, counter, ...: described by its header,
            // its body skipped however many lines it takes.
            let what = line.trim_end_matches('{').trim_end();
            table.other.push(what.to_owned());
            skip_block(depth, &mut lines)?;
        } else if depth == 0 {
            // Table flags or a table comment.
            table.other.push(format!("table {line}"));
        } else {
            return Err(format!("unbalanced `{line}`"));
        }
    }
    if !closed {
        return Err("the listing ends inside the table".to_owned());
    }
    Ok(table)
}

/// `{` minus `}` outside double quotes.
fn brace_balance(line: &str) -> i32 {
    let mut depth = 0;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth -= 1,
            _ => {}
        }
    }
    depth
}

fn skip_block<'a>(mut depth: i32, lines: &mut impl Iterator<Item = &'a str>) -> Result<(), String> {
    while depth > 0 {
        let line = lines
            .next()
            .ok_or_else(|| "the listing ends inside a block".to_owned())?;
        depth += brace_balance(line);
    }
    Ok(())
}

/// The lines of chain `name` up to its closing brace.
fn parse_chain<'a>(
    name: &str,
    lines: &mut impl Iterator<Item = &'a str>,
    other: &mut Vec<String>,
) -> Result<ObservedChain, String> {
    let mut chain = ObservedChain {
        name: name.to_owned(),
        filter_input_at_0: false,
        policy: None,
        rules: Vec::new(),
        essentials: Vec::new(),
    };
    let mut first = true;
    loop {
        let line = lines
            .next()
            .ok_or_else(|| format!("the listing ends inside chain {name}"))?;
        if line == "}" {
            return Ok(chain);
        }
        // A rule's anonymous sets are printed on its line; should a version
        // of nft wrap one, the rule continues until the braces balance.
        let mut depth = brace_balance(line);
        let mut joined;
        let mut line = line;
        if depth > 0 {
            joined = line.to_owned();
            while depth > 0 {
                let next = lines
                    .next()
                    .ok_or_else(|| format!("the listing ends inside chain {name}"))?;
                depth += brace_balance(next);
                joined.push(' ');
                joined.push_str(next);
            }
            line = joined.as_str();
        }
        if depth < 0 {
            return Err(format!("unbalanced `{line}` in chain {name}"));
        }
        let header = first && line.starts_with("type ");
        first = false;
        if header {
            (chain.filter_input_at_0, chain.policy) = parse_chain_header(line);
            continue;
        }
        if chain.rules.is_empty() && chain.essentials.is_empty() && is_chain_comment(line) {
            // nft prints a chain's comment before its header.
            first = true;
            other.push(format!("comment of chain {name}"));
            continue;
        }
        let (body, comment) = split_comment(line);
        if let Some(essential) = comment.filter(|c| ESSENTIAL_RULES.contains(c))
            && essential_matches(essential, body)
        {
            chain.essentials.push(essential.to_owned());
            continue;
        }
        chain
            .rules
            .push(comment.and_then(|name| parse_rule(name, body)).map_or_else(
                || ObservedRule::Foreign(line.to_owned()),
                ObservedRule::Known,
            ));
    }
}

fn is_chain_comment(line: &str) -> bool {
    line.strip_prefix("comment \"")
        .is_some_and(|rest| rest.ends_with('"') && !rest[..rest.len() - 1].contains('"'))
}

/// `type filter hook input priority 0; policy drop;`: whether it is the
/// base chain mailctl writes (`priority filter` is the same priority
/// named), and its policy.
fn parse_chain_header(line: &str) -> (bool, Option<FirewallPolicy>) {
    let mut ours = false;
    let mut extra = false;
    let mut policy = None;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            [
                "type",
                "filter",
                "hook",
                "input",
                "priority",
                "0" | "filter",
            ] => ours = true,
            ["type", ..] => {}
            ["policy", "accept"] => policy = Some(FirewallPolicy::Accept),
            ["policy", "drop"] => policy = Some(FirewallPolicy::Drop),
            _ => extra = true,
        }
    }
    (ours && !extra, policy)
}

/// A rule line split into its statements and its comment, which nft prints
/// last: `tcp dport 22 accept comment "ssh"` -> (`tcp dport 22 accept`, `ssh`).
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let Some(open) = line
        .strip_suffix('"')
        .and_then(|rest| rest.rfind('"').map(|i| (rest, i)))
    else {
        return (line, None);
    };
    let (rest, quote) = open;
    match rest[..quote].strip_suffix("comment ") {
        Some(body) => (body.trim_end(), Some(&rest[quote + 1..])),
        None => (line, None),
    }
}

/// The words of a rule with set braces and commas as separators:
/// `ip saddr { a, b } tcp dport 25` -> `ip saddr { a b } tcp dport 25`.
fn words(body: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for word in body.split_whitespace() {
        let mut rest = word;
        while !rest.is_empty() {
            let end = rest.find(['{', '}', ',']).unwrap_or(rest.len());
            if end > 0 {
                words.push(&rest[..end]);
            }
            match rest[end..].chars().next() {
                Some(c @ ('{' | '}')) => {
                    words.push(if c == '{' { "{" } else { "}" });
                    rest = &rest[end + 1..];
                }
                Some(_) => rest = &rest[end + 1..],
                None => rest = "",
            }
        }
    }
    words
}

/// Whether an observed essential rule still says what mailctl wrote, in
/// nft's names or (with `-n`) its numbers, sets with or without braces.
fn essential_matches(name: &str, body: &str) -> bool {
    /// The elements between `prefix` and a final `accept`, sorted.
    fn elements<'a>(words: &[&'a str], prefix: &[&'a str]) -> Option<Vec<&'a str>> {
        let rest = words.strip_prefix(prefix)?.strip_suffix(&["accept"])?;
        let mut elements: Vec<&str> = match rest {
            ["{", inner @ .., "}"] => inner.to_vec(),
            other => other.to_vec(),
        };
        elements.sort_unstable();
        Some(elements)
    }
    let words = words(body);
    match name {
        "mailctl-loopback" => words == ["iifname", "\"lo\"", "accept"],
        "mailctl-replies" => elements(&words, &["ct", "state"]).is_some_and(|e| {
            e == ["established", "related"]
                || e == ["0x2", "0x4"]
                || e == ["0x00000002", "0x00000004"]
        }),
        _ => elements(&words, &["meta", "l4proto"])
            .is_some_and(|e| e == ["icmp", "ipv6-icmp"] || e == ["1", "58"]),
    }
}

/// A rule in the canonical form, or `None` when it says more than that form
/// can: `[ip|ip6 saddr SET] tcp|udp dport SET VERDICT`, the two matches in
/// either order, the verdict as mailctl writes it for the protocol.
fn parse_rule(name: &str, body: &str) -> Option<NftRule> {
    let words = words(body);
    let mut rest = words.as_slice();
    let mut protocol = None;
    let mut ports = None;
    let mut sources = Sources::Any;
    loop {
        match rest {
            [family @ ("ip" | "ip6"), "saddr", tail @ ..] if sources == Sources::Any => {
                let (elements, tail) = set_elements(tail)?;
                let ranges = elements
                    .iter()
                    .map(|e| parse_address(e))
                    .collect::<Option<Vec<_>>>()?;
                // A family's set holds only that family's addresses.
                sources = if *family == "ip" {
                    let v4 = ranges.into_iter().map(AddressRange::v4);
                    Sources::V4(IntervalSet::from_ranges(v4.collect::<Option<Vec<_>>>()?))
                } else {
                    let v6 = ranges.into_iter().map(AddressRange::v6);
                    Sources::V6(IntervalSet::from_ranges(v6.collect::<Option<Vec<_>>>()?))
                };
                rest = tail;
            }
            [proto @ ("tcp" | "udp"), "dport", tail @ ..] if protocol.is_none() => {
                let (elements, tail) = set_elements(tail)?;
                protocol = Some(if *proto == "tcp" {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                });
                ports = Some(IntervalSet::from_ranges(
                    elements
                        .iter()
                        .map(|e| parse_port_range(e))
                        .collect::<Option<Vec<_>>>()?,
                ));
                rest = tail;
            }
            _ => break,
        }
    }
    let protocol = protocol?;
    let action = match (rest, protocol) {
        (["accept"], _) => RuleAction::Accept,
        (["drop"], _) => RuleAction::Drop,
        (["reject", "with", "tcp", "reset"], Protocol::Tcp) => RuleAction::Reject,
        (
            ["reject"]
            | ["reject", "with", "icmpx", "port-unreachable"]
            | ["reject", "with", "icmpx", "type", "port-unreachable"],
            Protocol::Udp,
        ) => RuleAction::Reject,
        _ => return None,
    };
    Some(NftRule {
        name: name.to_owned(),
        protocol,
        ports: ports?,
        sources,
        action,
    })
}

/// One element, or `{ ... }`: the elements and the words after them.
fn set_elements<'w, 'a>(words: &'w [&'a str]) -> Option<(&'w [&'a str], &'w [&'a str])> {
    match words {
        ["{", rest @ ..] => {
            let end = rest.iter().position(|w| *w == "}")?;
            let elements = &rest[..end];
            (!elements.is_empty()).then_some((elements, &rest[end + 1..]))
        }
        [one, rest @ ..] if *one != "}" => Some((&words[..1], rest)),
        _ => None,
    }
}

/// `25` or `1000-2000`.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    match text.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => {
            let port = text.parse().ok()?;
            Some((port, port))
        }
    }
}

/// `192.0.2.1`, `192.0.2.0/24` or `192.0.2.3-192.0.2.9` (or IPv6).
fn parse_address(text: &str) -> Option<AddressRange> {
    if let Some((first, last)) = text.split_once('-') {
        return match (first.parse::<IpAddr>().ok()?, last.parse::<IpAddr>().ok()?) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Some(AddressRange::V4(a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) => Some(AddressRange::V6(a.into(), b.into())),
            _ => None,
        };
    }
    let net = match text.split_once('/') {
        Some((addr, len)) => IpNet::new(addr.parse().ok()?, len.parse().ok()?).ok()?,
        None => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(match net {
        IpNet::V4(net) => AddressRange::V4(net.network().into(), net.broadcast().into()),
        IpNet::V6(net) => AddressRange::V6(net.network().into(), net.broadcast().into()),
    })
}

pub(crate) fn policy_name(policy: FirewallPolicy) -> &'static str {
    match policy {
        FirewallPolicy::Accept => "accept",
        FirewallPolicy::Drop => "drop",
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn action_name(action: RuleAction) -> &'static str {
    match action {
        RuleAction::Accept => "accept",
        RuleAction::Drop => "drop",
        RuleAction::Reject => "reject",
    }
}

impl fmt::Display for NftRule {
    /// `rule imap: ip saddr 198.51.100.0/24 tcp dport {143, 993} reject`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: ", self.name)?;
        self.write_matches(f, false)?;
        write!(f, " {}", action_name(self.action))
    }
}

impl fmt::Display for ObservedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObservedRule::Known(rule) => rule.fmt(f),
            ObservedRule::Foreign(text) => write!(f, "rule not written by mailctl: {text}"),
        }
    }
}
