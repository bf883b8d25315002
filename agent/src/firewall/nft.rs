//! The owned table in nftables' JSON dialect (`nft -j`), both ways.
//!
//! Rules are compared in a canonical form ([`NftRule`]): ports and source
//! networks as merged ranges, because nft sorts, merges and unwraps the sets it
//! stores. Anything in the table that this form cannot express (a counter, a
//! hand-added chain or set) is kept as a short description: the table is ours,
//! so it is replaced, and the plan shows what goes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use mailctl_schemas::model::{Firewall, FirewallPolicy, Protocol, RuleAction};
use serde_json::{Value, json};

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

fn essential_expressions(name: &str) -> Value {
    match name {
        "mailctl-loopback" => json!([
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"accept": null}
        ]),
        "mailctl-replies" => json!([
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"accept": null}
        ]),
        _ => json!([
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["icmp", "ipv6-icmp"]}}},
            {"accept": null}
        ]),
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

/// The owned table as `nft -j list table` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    pub(crate) chains: Vec<ObservedChain>,
    /// Sets, maps and other objects in the table, described.
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
    /// A rule the canonical form cannot express, as compact JSON.
    Foreign(String),
}

impl RuleSet {
    pub(crate) fn from_model(firewall: &Firewall) -> RuleSet {
        let mut rules = Vec::new();
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
    /// everything in it, and define it again. nft applies a batch atomically,
    /// so no packet ever sees a half-written table.
    pub(crate) fn replace_script(&self, table: &str) -> Value {
        let table_ref = json!({"family": "inet", "name": table});
        let mut commands = vec![
            json!({"add": {"table": table_ref}}),
            json!({"delete": {"table": table_ref}}),
            json!({"add": {"table": table_ref}}),
            json!({"add": {"chain": {
                "family": "inet",
                "table": table,
                "name": INPUT_CHAIN,
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": policy_name(self.policy),
            }}}),
        ];
        if self.policy == FirewallPolicy::Drop {
            for name in ESSENTIAL_RULES {
                commands.push(json!({"add": {"rule": {
                    "family": "inet",
                    "table": table,
                    "chain": INPUT_CHAIN,
                    "comment": name,
                    "expr": essential_expressions(name),
                }}}));
            }
        }
        for rule in &self.rules {
            commands.push(json!({"add": {"rule": {
                "family": "inet",
                "table": table,
                "chain": INPUT_CHAIN,
                "comment": rule.name,
                "expr": rule.expressions(),
            }}}));
        }
        json!({ "nftables": commands })
    }
}

impl NftRule {
    fn expressions(&self) -> Vec<Value> {
        let mut expr = Vec::new();
        let saddr = |family: &str, elements: Vec<Value>| {
            json!({"match": {
                "op": "==",
                "left": {"payload": {"protocol": family, "field": "saddr"}},
                "right": {"set": elements},
            }})
        };
        match &self.sources {
            Sources::Any => {}
            Sources::V4(set) => expr.push(saddr(
                "ip",
                set.ranges()
                    .iter()
                    .map(|&(a, b)| address_element(AddressRange::V4(a, b)))
                    .collect(),
            )),
            Sources::V6(set) => expr.push(saddr(
                "ip6",
                set.ranges()
                    .iter()
                    .map(|&(a, b)| address_element(AddressRange::V6(a, b)))
                    .collect(),
            )),
        }
        let ports: Vec<Value> = self
            .ports
            .ranges()
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    json!(a)
                } else {
                    json!({"range": [a, b]})
                }
            })
            .collect();
        expr.push(json!({"match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol_name(self.protocol), "field": "dport"}},
            "right": {"set": ports},
        }}));
        expr.push(match (self.action, self.protocol) {
            (RuleAction::Accept, _) => json!({"accept": null}),
            (RuleAction::Drop, _) => json!({"drop": null}),
            // A TCP client gets a reset at once instead of waiting for a timeout.
            (RuleAction::Reject, Protocol::Tcp) => json!({"reject": {"type": "tcp reset"}}),
            (RuleAction::Reject, Protocol::Udp) => {
                json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}})
            }
        });
        expr
    }
}

/// Reads the output of `nft -j list tables inet`: the names of the inet tables.
pub(crate) fn table_names(output: &Value) -> Result<Vec<String>, String> {
    Ok(items(output)?
        .iter()
        .filter_map(|item| item.get("table")?.get("name")?.as_str().map(str::to_owned))
        .collect())
}

/// Reads the output of `nft -j list table inet NAME`.
pub(crate) fn parse_table(output: &Value) -> Result<ObservedTable, String> {
    let mut table = ObservedTable::default();
    for item in items(output)? {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Err(format!("unexpected item {item}"));
        };
        match kind.as_str() {
            "metainfo" | "table" => {}
            "chain" => table.chains.push(ObservedChain {
                name: string(body, "name")?,
                filter_input_at_0: body.get("type").and_then(Value::as_str) == Some("filter")
                    && body.get("hook").and_then(Value::as_str) == Some("input")
                    && body.get("prio").and_then(Value::as_i64) == Some(0),
                policy: match body.get("policy").and_then(Value::as_str) {
                    Some("accept") => Some(FirewallPolicy::Accept),
                    Some("drop") => Some(FirewallPolicy::Drop),
                    _ => None,
                },
                rules: Vec::new(),
                essentials: Vec::new(),
            }),
            "rule" => {
                let chain_name = string(body, "chain")?;
                let essential = body
                    .get("comment")
                    .and_then(Value::as_str)
                    .filter(|c| ESSENTIAL_RULES.contains(c))
                    .filter(|c| body.get("expr").is_some_and(|e| essential_matches(c, e)));
                if let Some(name) = essential {
                    match table.chains.iter_mut().find(|c| c.name == chain_name) {
                        Some(chain) => chain.essentials.push(name.to_owned()),
                        None => return Err(format!("rule of unknown chain {chain_name}")),
                    }
                    continue;
                }
                let rule = parse_rule(body)
                    .map(ObservedRule::Known)
                    .unwrap_or_else(|| ObservedRule::Foreign(compact(body)));
                match table.chains.iter_mut().find(|c| c.name == chain_name) {
                    Some(chain) => chain.rules.push(rule),
                    None => return Err(format!("rule of unknown chain {chain_name}")),
                }
            }
            other => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or("?");
                table.other.push(format!("{other} {name}"));
            }
        }
    }
    Ok(table)
}

/// Whether an observed essential rule still says what mailctl wrote (nft may
/// print a one-element set or list without the brackets).
fn essential_matches(name: &str, expr: &Value) -> bool {
    let text = expr.to_string();
    match name {
        "mailctl-loopback" => {
            text.contains("iifname") && text.contains("\"lo\"") && text.contains("accept")
        }
        "mailctl-replies" => {
            text.contains("established") && text.contains("related") && text.contains("accept")
        }
        _ => text.contains("\"icmp\"") && text.contains("ipv6-icmp") && text.contains("accept"),
    }
}

fn items(output: &Value) -> Result<&Vec<Value>, String> {
    output
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| "no \"nftables\" array".to_owned())
}

fn string(body: &Value, key: &str) -> Result<String, String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no \"{key}\" in {body}"))
}

/// Rules without handles (they change on every replace) as one short line.
fn compact(rule: &Value) -> String {
    let comment = rule.get("comment").and_then(Value::as_str);
    let expr = rule.get("expr").map(Value::to_string).unwrap_or_default();
    match comment {
        Some(comment) => format!("{comment}: {expr}"),
        None => expr,
    }
}

/// A rule in the canonical form, or `None` when it says more than that form can.
fn parse_rule(rule: &Value) -> Option<NftRule> {
    let name = rule.get("comment")?.as_str()?.to_owned();
    let mut protocol = None;
    let mut ports = None;
    let mut sources = Sources::Any;
    let mut action = None;
    for expr in rule.get("expr")?.as_array()? {
        if action.is_some() {
            return None; // the verdict must come last
        }
        let (kind, body) = expr.as_object()?.iter().next()?;
        match kind.as_str() {
            "match" => {
                if !matches!(body.get("op")?.as_str()?, "==" | "in") {
                    return None;
                }
                let payload = body.get("left")?.get("payload")?;
                let right = body.get("right")?;
                match (
                    payload.get("protocol")?.as_str()?,
                    payload.get("field")?.as_str()?,
                ) {
                    ("tcp", "dport") if protocol.is_none() => {
                        protocol = Some(Protocol::Tcp);
                        ports = Some(parse_ports(right)?);
                    }
                    ("udp", "dport") if protocol.is_none() => {
                        protocol = Some(Protocol::Udp);
                        ports = Some(parse_ports(right)?);
                    }
                    ("ip", "saddr") if sources == Sources::Any => {
                        sources = Sources::V4(IntervalSet::from_ranges(
                            parse_addresses(right)?
                                .into_iter()
                                .map(|range| match range {
                                    AddressRange::V4(a, b) => Some((a, b)),
                                    AddressRange::V6(..) => None,
                                })
                                .collect::<Option<Vec<_>>>()?,
                        ));
                    }
                    ("ip6", "saddr") if sources == Sources::Any => {
                        sources = Sources::V6(IntervalSet::from_ranges(
                            parse_addresses(right)?
                                .into_iter()
                                .map(|range| match range {
                                    AddressRange::V6(a, b) => Some((a, b)),
                                    AddressRange::V4(..) => None,
                                })
                                .collect::<Option<Vec<_>>>()?,
                        ));
                    }
                    _ => return None,
                }
            }
            "accept" => action = Some(RuleAction::Accept),
            "drop" => action = Some(RuleAction::Drop),
            "reject" => action = Some(RuleAction::Reject),
            _ => return None,
        }
    }
    Some(NftRule {
        name,
        protocol: protocol?,
        ports: ports?,
        sources,
        action: action?,
    })
}

/// `25`, `{"range": [25, 26]}` or `{"set": [...]}` of those.
fn parse_ports(value: &Value) -> Option<IntervalSet<u16>> {
    fn element(value: &Value) -> Option<(u16, u16)> {
        if let Some(port) = value.as_u64() {
            let port = u16::try_from(port).ok()?;
            return Some((port, port));
        }
        let range = value.get("range")?.as_array()?;
        let bound = |i: usize| u16::try_from(range.get(i)?.as_u64()?).ok();
        Some((bound(0)?, bound(1)?))
    }
    let elements = match value.get("set") {
        Some(set) => set
            .as_array()?
            .iter()
            .map(element)
            .collect::<Option<Vec<_>>>()?,
        None => vec![element(value)?],
    };
    Some(IntervalSet::from_ranges(elements))
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressRange {
    V4(u32, u32),
    V6(u128, u128),
}

/// `"192.0.2.1"`, `{"prefix": {...}}`, `{"range": [...]}` or a set of those.
fn parse_addresses(value: &Value) -> Option<Vec<AddressRange>> {
    fn element(value: &Value) -> Option<AddressRange> {
        if let Some(text) = value.as_str() {
            let ip: IpAddr = text.parse().ok()?;
            return Some(range_of(IpNet::from(ip)));
        }
        if let Some(prefix) = value.get("prefix") {
            let ip: IpAddr = prefix.get("addr")?.as_str()?.parse().ok()?;
            let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
            return Some(range_of(IpNet::new(ip, len).ok()?));
        }
        let range = value.get("range")?.as_array()?;
        let bound = |i: usize| -> Option<IpAddr> { range.get(i)?.as_str()?.parse().ok() };
        match (bound(0)?, bound(1)?) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Some(AddressRange::V4(a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) => Some(AddressRange::V6(a.into(), b.into())),
            _ => None,
        }
    }
    match value.get("set") {
        Some(set) => set.as_array()?.iter().map(element).collect(),
        None => Some(vec![element(value)?]),
    }
}

fn range_of(net: IpNet) -> AddressRange {
    match net {
        IpNet::V4(net) => AddressRange::V4(net.network().into(), net.broadcast().into()),
        IpNet::V6(net) => AddressRange::V6(net.network().into(), net.broadcast().into()),
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

/// An address range as text: `192.0.2.1`, `192.0.2.0/24` or `192.0.2.3-192.0.2.9`.
fn range_text(range: AddressRange) -> (String, Option<u8>, Option<String>) {
    let (first, last, bits, show): (u128, u128, u32, fn(u128) -> String) = match range {
        AddressRange::V4(a, b) => (a.into(), b.into(), 32, |v| {
            Ipv4Addr::from(u32::try_from(v).unwrap_or_default()).to_string()
        }),
        AddressRange::V6(a, b) => (a, b, 128, |v| Ipv6Addr::from(v).to_string()),
    };
    match prefix_len(first, last, bits) {
        Some(len) if u32::from(len) == bits => (show(first), None, None),
        Some(len) => (show(first), Some(len), None),
        None => (show(first), None, Some(show(last))),
    }
}

fn address_element(range: AddressRange) -> Value {
    match range_text(range) {
        (addr, None, None) => json!(addr),
        (addr, Some(len), _) => json!({"prefix": {"addr": addr, "len": len}}),
        (first, None, Some(last)) => json!({"range": [first, last]}),
    }
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

/// `x` for one element, `{x, y}` for more, as nft writes sets.
fn set_text(elements: Vec<String>) -> String {
    match elements.as_slice() {
        [one] => one.clone(),
        _ => format!("{{{}}}", elements.join(", ")),
    }
}

impl fmt::Display for NftRule {
    /// `rule imap: ip saddr 198.51.100.0/24 tcp dport {143, 993} reject`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: ", self.name)?;
        let addresses = |family: &str, ranges: Vec<AddressRange>| {
            let texts = ranges
                .into_iter()
                .map(|range| match range_text(range) {
                    (addr, None, None) => addr,
                    (addr, Some(len), _) => format!("{addr}/{len}"),
                    (first, None, Some(last)) => format!("{first}-{last}"),
                })
                .collect();
            format!("{family} saddr {} ", set_text(texts))
        };
        match &self.sources {
            Sources::Any => {}
            Sources::V4(set) => f.write_str(&addresses(
                "ip",
                set.ranges()
                    .iter()
                    .map(|&(a, b)| AddressRange::V4(a, b))
                    .collect(),
            ))?,
            Sources::V6(set) => f.write_str(&addresses(
                "ip6",
                set.ranges()
                    .iter()
                    .map(|&(a, b)| AddressRange::V6(a, b))
                    .collect(),
            ))?,
        }
        let ports = self
            .ports
            .ranges()
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        write!(
            f,
            "{} dport {} {}",
            protocol_name(self.protocol),
            set_text(ports),
            action_name(self.action)
        )
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
