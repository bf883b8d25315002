use mailctl_schemas::model::{FirewallRule, Protocol, RuleAction};

use super::nft::{ESSENTIAL_RULES, parse_table};
use super::*;

fn rule(
    name: &str,
    protocol: Protocol,
    ports: &[u16],
    sources: &[&str],
    action: RuleAction,
) -> FirewallRule {
    FirewallRule {
        name: name.into(),
        protocol,
        ports: ports.to_vec(),
        sources: sources
            .iter()
            .map(|s| s.parse().expect("test literal"))
            .collect(),
        action,
    }
}

fn firewall(policy: FirewallPolicy, rules: Vec<FirewallRule>) -> Firewall {
    Firewall {
        table: "mailctl".into(),
        policy,
        allow_lockout: false,
        rules,
    }
}

/// The guard of an agent whose `admin_sources` are `admin` (empty: every
/// address).
fn guard(admin: &[&str]) -> LockoutGuard {
    let admin = admin
        .iter()
        .map(|s| s.parse().expect("test literal"))
        .collect();
    LockoutGuard::new(protected(), admin)
}

fn protected() -> Vec<ProtectedPort> {
    vec![
        ProtectedPort {
            port: 22,
            service: "SSH",
        },
        ProtectedPort {
            port: 7443,
            service: "the mailctl agent API",
        },
    ]
}

fn mail_rules() -> Vec<FirewallRule> {
    vec![
        rule("ssh", Protocol::Tcp, &[22], &[], RuleAction::Accept),
        rule(
            "agent",
            Protocol::Tcp,
            &[7443],
            &["192.0.2.0/24"],
            RuleAction::Accept,
        ),
        rule(
            "smtp",
            Protocol::Tcp,
            &[25, 465, 587],
            &[],
            RuleAction::Accept,
        ),
        rule(
            "imap",
            Protocol::Tcp,
            &[143, 993],
            &["198.51.100.0/24", "198.51.101.0/24", "2001:db8::/32"],
            RuleAction::Reject,
        ),
    ]
}

/// What `nft -n list table inet mailctl` prints (nft 1.0.6) for
/// [`mail_rules`] under `policy drop`, as written by `replace_script`: the
/// two IPv4 /24s merged into a /23, one-element sets without braces, the
/// essentials' `ct state` and `meta l4proto` as numbers.
const MAIL_DROP_LISTED: &str = r#"table inet mailctl {
	chain input {
		type filter hook input priority 0; policy drop;
		iifname "lo" accept comment "mailctl-loopback"
		ct state 0x2,0x4 accept comment "mailctl-replies"
		meta l4proto { 1, 58 } accept comment "mailctl-icmp"
		tcp dport 22 accept comment "ssh"
		ip saddr 192.0.2.0/24 tcp dport 7443 accept comment "agent"
		tcp dport { 25, 465, 587 } accept comment "smtp"
		ip saddr 198.51.100.0/23 tcp dport { 143, 993 } reject with tcp reset comment "imap"
		ip6 saddr 2001:db8::/32 tcp dport { 143, 993 } reject with tcp reset comment "imap"
	}
}
"#;

/// The same table as plain `nft list table` prints it (without `-n`):
/// names for the priority, the ct states and the protocols.
const MAIL_DROP_LISTED_NAMES: &str = r#"table inet mailctl {
	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept comment "mailctl-loopback"
		ct state established,related accept comment "mailctl-replies"
		meta l4proto { icmp, ipv6-icmp } accept comment "mailctl-icmp"
		tcp dport 22 accept comment "ssh"
		ip saddr 192.0.2.0/24 tcp dport 7443 accept comment "agent"
		tcp dport { 25, 465, 587 } accept comment "smtp"
		ip saddr 198.51.100.0/23 tcp dport { 143, 993 } reject with tcp reset comment "imap"
		ip6 saddr 2001:db8::/32 tcp dport { 143, 993 } reject with tcp reset comment "imap"
	}
}
"#;

fn listed(text: &str) -> ObservedTable {
    parse_table(text).expect("parse")
}

/// An agent administered from 192.0.2.0/24, which [`mail_rules`] keep.
fn driver() -> FirewallDriver {
    FirewallDriver::new("nft", guard(&["192.0.2.0/24"]))
}

fn plan_text(desired: &Firewall, observed: ObservedTable) -> String {
    driver()
        .diff(desired, &Some(observed))
        .expect("plan")
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_missing_table_is_created() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let changes = driver().diff(&desired, &None).expect("plan");
    let text = changes[0].to_string();
    assert_eq!(
        text.lines().next(),
        Some("+ firewall table inet mailctl: policy drop, 5 rules")
    );
    assert!(
        text.contains("+ rule imap: ip saddr 198.51.100.0/23 tcp dport {143, 993} reject"),
        "{text}"
    );
    assert!(
        text.contains("+ rule imap: ip6 saddr 2001:db8::/32 tcp dport {143, 993} reject"),
        "{text}"
    );
}

#[test]
fn the_table_as_nft_lists_it_needs_no_change() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    for listing in [MAIL_DROP_LISTED, MAIL_DROP_LISTED_NAMES] {
        let observed = listed(listing);
        assert_eq!(observed.chains.len(), 1);
        assert_eq!(observed.chains[0].essentials, ESSENTIAL_RULES);
        assert_eq!(
            driver().diff(&desired, &Some(observed)).expect("plan"),
            [],
            "{listing}"
        );
    }
}

/// An older state of the table, as `nft -n list` prints it.
const CHANGED_LISTED: &str = r#"table inet mailctl {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 accept comment "ssh"
		tcp dport 25 accept comment "smtp"
		udp dport 53 drop comment "old"
	}
}
"#;

#[test]
fn a_changed_table_is_replaced_with_a_readable_summary() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let observed = listed(CHANGED_LISTED);
    let changes = driver().diff(&desired, &Some(observed)).expect("plan");
    let text = changes[0].to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "~ firewall table inet mailctl: 3 rules -> 5 rules"
    );
    assert!(lines.contains(&"    ~ policy accept -> drop"), "{text}");
    assert!(
        lines.contains(
            &"    ~ rule smtp: tcp dport 25 accept -> rule smtp: tcp dport {25, 465, 587} accept"
        ),
        "{text}"
    );
    assert!(
        lines.contains(&"    - rule old: udp dport 53 drop"),
        "{text}"
    );
    assert!(
        lines.contains(&"    + rule agent: ip saddr 192.0.2.0/24 tcp dport 7443 accept"),
        "{text}"
    );
    assert!(
        lines.contains(
            &"    + accept loopback, replies to this host's own connections, and ICMP (policy drop)"
        ),
        "{text}"
    );
}

/// MAIL_DROP_LISTED after `add rule ... tcp dport 22 counter accept comment
/// "ssh"`, `add rule ... tcp dport 8443 accept`, `add chain inet mailctl
/// extra` and a set whose elements nft wraps over lines, as `nft -n list`
/// prints it.
fn hand_made_listed() -> String {
    MAIL_DROP_LISTED
        .replacen(
            "table inet mailctl {\n",
            "table inet mailctl {
	set blocklist {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.1, 192.0.2.3,
			     192.0.2.5, 192.0.2.7,
			     192.0.2.9, 192.0.2.11,
			     192.0.2.13, 192.0.2.15,
			     198.51.100.7, 203.0.113.0/24 }
	}

",
            1,
        )
        .replacen(
            "\t}\n}\n",
            "\t\ttcp dport 22 counter packets 0 bytes 0 accept comment \"ssh\"
		tcp dport 8443 accept
	}

	chain extra {
	}
}
",
            1,
        )
}

#[test]
fn hand_made_additions_to_the_owned_table_are_removed() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let text = hand_made_listed();
    let observed = listed(&text);
    assert_eq!(observed.other, ["set blocklist"]);
    let text = driver().diff(&desired, &Some(observed)).expect("plan")[0].to_string();
    assert!(
        text.starts_with("~ firewall table inet mailctl: 7 rules -> 5 rules"),
        "{text}"
    );
    assert!(text.contains("\n    - set blocklist"), "{text}");
    assert!(text.contains("\n    - chain extra (0 rules)"), "{text}");
    assert!(
        text.contains(
            "\n    - rule not written by mailctl: tcp dport 22 counter packets 0 bytes 0 accept comment \"ssh\""
        ),
        "{text}"
    );
    assert!(
        text.contains("\n    - rule not written by mailctl: tcp dport 8443 accept"),
        "{text}"
    );
}

/// A table switched off by hand, as `nft list` prints it.
const DORMANT_LISTED: &str = r#"table inet mailctl {
	flags dormant

	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept comment "ssh"
		ip saddr 192.0.2.0/24 tcp dport 7443 accept comment "agent"
		tcp dport { 25, 465, 587 } accept comment "smtp"
		ip saddr 198.51.100.0/23 tcp dport { 143, 993 } reject with tcp reset comment "imap"
		ip6 saddr 2001:db8::/32 tcp dport { 143, 993 } reject with tcp reset comment "imap"
	}
}
"#;

/// Comments added by hand to the table and its chain, as `nft -n list`
/// prints them.
const COMMENTED_LISTED: &str = r#"table inet mailctl {
	comment "by hand"
	chain input {
		comment "also by hand"
		type filter hook input priority 0; policy accept;
		tcp dport 22 accept comment "ssh"
		ip saddr 192.0.2.0/24 tcp dport 7443 accept comment "agent"
		tcp dport { 25, 465, 587 } accept comment "smtp"
		ip saddr 198.51.100.0/23 tcp dport { 143, 993 } reject with tcp reset comment "imap"
		ip6 saddr 2001:db8::/32 tcp dport { 143, 993 } reject with tcp reset comment "imap"
	}
}
"#;

#[test]
fn table_flags_and_comments_are_removed_too() {
    // `flags dormant` would switch the whole table off.
    let desired = firewall(FirewallPolicy::Accept, mail_rules());
    let dormant = listed(DORMANT_LISTED);
    let text = plan_text(&desired, dormant);
    assert!(
        text.starts_with("~ firewall table inet mailctl: 5 rules\n    - table flags dormant"),
        "{text}"
    );
    let commented = listed(COMMENTED_LISTED);
    assert_eq!(commented.chains[0].rules.len(), 5);
    assert!(commented.chains[0].filter_input_at_0);
    let text = plan_text(&desired, commented);
    assert!(text.contains("\n    - table comment \"by hand\""), "{text}");
    assert!(text.contains("\n    - comment of chain input"), "{text}");
}

/// An input chain at another priority, as `nft -n list` prints it.
const PRIORITY_10_LISTED: &str = "table inet mailctl {\n\tchain input {\n\t\ttype filter hook input priority 10; policy accept;\n\t}\n}\n";

#[test]
fn another_base_chain_named_input_is_replaced() {
    let desired = firewall(FirewallPolicy::Accept, vec![]);
    let observed = listed(PRIORITY_10_LISTED);
    let text = plan_text(&desired, observed);
    assert!(text.contains("- chain input (0 rules)"), "{text}");
    assert!(text.contains("~ policy none -> accept"), "{text}");
}

#[test]
fn rule_order_matters() {
    let mut rules = mail_rules();
    rules.swap(2, 0);
    let desired = firewall(FirewallPolicy::Drop, rules);
    let text = driver()
        .diff(&desired, &Some(listed(MAIL_DROP_LISTED)))
        .expect("plan")[0]
        .to_string();
    assert!(
        text.contains("~ rule order ssh, agent, smtp, imap, imap -> smtp, agent, ssh, imap, imap"),
        "{text}"
    );
}

#[test]
fn the_script_replaces_the_table_in_one_batch() {
    let script = RuleSet::from_model(&firewall(FirewallPolicy::Drop, mail_rules()))
        .replace_script("mailctl");
    assert_eq!(
        script,
        r#"add table inet mailctl
delete table inet mailctl
table inet mailctl {
	chain input {
		type filter hook input priority 0; policy drop;
		iifname "lo" accept comment "mailctl-loopback"
		ct state established,related accept comment "mailctl-replies"
		meta l4proto { icmp, ipv6-icmp } accept comment "mailctl-icmp"
		tcp dport 22 accept comment "ssh"
		ip saddr 192.0.2.0/24 tcp dport 7443 accept comment "agent"
		tcp dport { 25, 465, 587 } accept comment "smtp"
		ip saddr 198.51.100.0/23 tcp dport { 143, 993 } reject with tcp reset comment "imap"
		ip6 saddr 2001:db8::/32 tcp dport { 143, 993 } reject with tcp reset comment "imap"
	}
}
"#
    );
}

#[test]
fn the_script_writes_ranges_sets_and_udp_rejects() {
    let rules = vec![
        rule(
            "mixed",
            Protocol::Udp,
            &[53, 1000, 1001, 1002],
            &[
                "10.0.0.1/32",
                "192.0.2.0/25",
                "192.0.2.128/26",
                "2001:db8::/127",
            ],
            RuleAction::Reject,
        ),
        rule("dns", Protocol::Udp, &[53], &[], RuleAction::Drop),
    ];
    let script =
        RuleSet::from_model(&firewall(FirewallPolicy::Accept, rules)).replace_script("t-1");
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[0], "add table inet t-1");
    assert_eq!(
        lines[4],
        "\t\ttype filter hook input priority 0; policy accept;"
    );
    assert_eq!(
        lines[5],
        "\t\tip saddr { 10.0.0.1, 192.0.2.0-192.0.2.191 } udp dport { 53, 1000-1002 } reject with icmpx port-unreachable comment \"mixed\""
    );
    assert_eq!(
        lines[6],
        "\t\tip6 saddr 2001:db8::/127 udp dport { 53, 1000-1002 } reject with icmpx port-unreachable comment \"mixed\""
    );
    assert_eq!(lines[7], "\t\tudp dport 53 drop comment \"dns\"");
}

#[test]
fn names_nft_cannot_carry_are_refused_before_nft_runs() {
    let mut desired = firewall(FirewallPolicy::Accept, mail_rules());
    desired.rules[1].name = "agent\" accept; flush ruleset; #".into();
    let err = driver().diff(&desired, &None).expect_err("bad rule name");
    assert!(
        matches!(
            &err,
            FirewallError::NftName {
                what: "rule name",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cannot be written in nft's syntax"),
        "{err}"
    );

    // The table name goes onto nft's command line: refused before any run
    // (this nft does not exist, so running it would be another error).
    let mut desired = firewall(FirewallPolicy::Accept, mail_rules());
    desired.table = "mailctl; flush ruleset".into();
    let driver = FirewallDriver::new("/nonexistent/nft", guard(&["192.0.2.0/24"]));
    let err = runtime()
        .block_on(driver.observe(&desired))
        .expect_err("bad table name");
    assert!(
        matches!(
            &err,
            FirewallError::NftName {
                what: "table name",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        driver.diff(&desired, &None),
        Err(FirewallError::NftName { .. })
    ));
}

/// The plan of an agent with `admin_sources = admin` for `rules`.
fn lockout(
    admin: &[&str],
    policy: FirewallPolicy,
    rules: Vec<FirewallRule>,
) -> Result<Vec<FirewallChange>, FirewallError> {
    FirewallDriver::new("nft", guard(admin)).diff(&firewall(policy, rules), &None)
}

/// The (port, source) pairs a refusal names.
fn blocked(result: Result<Vec<FirewallChange>, FirewallError>) -> Vec<(u16, String)> {
    match result {
        Err(FirewallError::Lockout { blocked, .. }) => blocked
            .iter()
            .map(|b| (b.port, b.source.to_string()))
            .collect(),
        other => panic!("expected a lockout refusal, got {other:?}"),
    }
}

fn pairs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
    list.iter().map(|(p, s)| (*p, (*s).to_owned())).collect()
}

#[test]
fn refuses_a_drop_policy_without_accepting_ssh() {
    let err = lockout(
        &[],
        FirewallPolicy::Drop,
        vec![rule("smtp", Protocol::Tcp, &[25], &[], RuleAction::Accept)],
    )
    .expect_err("locks out SSH");
    assert_eq!(
        err.to_string(),
        "firewall table inet mailctl: refusing a rule set that blocks \
         tcp/22 (SSH) from 0.0.0.0/0 (IPv4) and ::/0 (IPv6), \
         tcp/7443 (the mailctl agent API) from 0.0.0.0/0 (IPv4) and ::/0 (IPv6); \
         accept those ports from those sources, set admin_sources in agent.toml to the ranges \
         the controller and admins connect from, or set `allowLockout: true`"
    );
}

#[test]
fn refuses_blocking_the_agent_port_before_any_accept() {
    let rules = vec![
        rule(
            "close",
            Protocol::Tcp,
            &[7000, 7443],
            &[],
            RuleAction::Reject,
        ),
        rule("agent", Protocol::Tcp, &[7443], &[], RuleAction::Accept),
    ];
    assert_eq!(
        blocked(lockout(&[], FirewallPolicy::Accept, rules)),
        pairs(&[(7443, "0.0.0.0/0"), (7443, "::/0")])
    );
}

/// Accepted before per-family checks: IPv4 is cut off both ports, IPv6 is
/// open, and "some source reaches SSH" held.
#[test]
fn dropping_ipv4_with_ipv6_open_is_refused() {
    let rules = vec![rule(
        "v4",
        Protocol::Tcp,
        &[22, 7443],
        &["0.0.0.0/0"],
        RuleAction::Drop,
    )];
    assert_eq!(
        blocked(lockout(&[], FirewallPolicy::Accept, rules.clone())),
        pairs(&[(22, "0.0.0.0/0"), (7443, "0.0.0.0/0")])
    );
    // Admins on IPv4 are cut off all the same.
    assert_eq!(
        blocked(lockout(&["198.51.100.0/24"], FirewallPolicy::Accept, rules)),
        pairs(&[(22, "198.51.100.0/24"), (7443, "198.51.100.0/24")])
    );
}

/// Accepted before: one address reached SSH, so "some source" did.
#[test]
fn accepting_only_one_ipv4_address_is_refused() {
    let rules = vec![rule(
        "one",
        Protocol::Tcp,
        &[22, 7443],
        &["192.0.2.1/32"],
        RuleAction::Accept,
    )];
    let err = lockout(&[], FirewallPolicy::Drop, rules.clone()).expect_err("a lockout");
    assert_eq!(
        blocked(lockout(&[], FirewallPolicy::Drop, rules.clone())),
        pairs(&[
            (22, "0.0.0.0/0"),
            (22, "::/0"),
            (7443, "0.0.0.0/0"),
            (7443, "::/0")
        ])
    );
    // The refusal says which part of a range is cut off.
    assert!(
        err.to_string()
            .contains("0.0.0.0/0 (IPv4; 0.0.0.0-192.0.2.0 is blocked) and ::/0 (IPv6)"),
        "{err}"
    );
    // Admins who are not 192.0.2.1 are locked out; the one admin who is, is not.
    assert_eq!(
        blocked(lockout(
            &["203.0.113.0/24"],
            FirewallPolicy::Drop,
            rules.clone()
        )),
        pairs(&[(22, "203.0.113.0/24"), (7443, "203.0.113.0/24")])
    );
    assert!(lockout(&["192.0.2.1/32"], FirewallPolicy::Drop, rules).is_ok());
}

/// Accepted before: fe80::1 reached SSH. A link-local address is no
/// admin's way in from afar, and IPv4 is cut off entirely.
#[test]
fn accepting_only_a_link_local_address_is_refused() {
    let rules = vec![rule(
        "ll",
        Protocol::Tcp,
        &[22, 7443],
        &["fe80::1/128"],
        RuleAction::Accept,
    )];
    assert_eq!(
        blocked(lockout(&[], FirewallPolicy::Drop, rules.clone())),
        pairs(&[
            (22, "0.0.0.0/0"),
            (22, "::/0"),
            (7443, "0.0.0.0/0"),
            (7443, "::/0")
        ])
    );
    assert_eq!(
        blocked(lockout(&["2001:db8:10::/48"], FirewallPolicy::Drop, rules)),
        pairs(&[(22, "2001:db8:10::/48"), (7443, "2001:db8:10::/48")])
    );
}

#[test]
fn a_range_is_blocked_when_any_part_of_it_is() {
    let rules = vec![
        rule(
            "ban",
            Protocol::Tcp,
            &[22],
            &["10.9.0.0/16"],
            RuleAction::Drop,
        ),
        rule(
            "admin",
            Protocol::Tcp,
            &[22, 7443],
            &["10.0.0.0/8"],
            RuleAction::Accept,
        ),
    ];
    let err = lockout(&["10.0.0.0/8"], FirewallPolicy::Drop, rules.clone()).expect_err("part");
    assert!(
        err.to_string()
            .contains("tcp/22 (SSH) from 10.0.0.0/8 (IPv4; 10.9.0.0-10.9.255.255 is blocked);"),
        "{err}"
    );
    assert!(
        lockout(
            &["10.1.0.0/16", "10.10.0.0/15"],
            FirewallPolicy::Drop,
            rules
        )
        .is_ok()
    );
}

#[test]
fn accepts_rule_sets_that_keep_the_admin_sources_in() {
    // Accepting from the admin networks, one per family, is enough; so is an
    // accept policy with other sources dropped; a UDP rule on port 22 is no
    // TCP lockout.
    let admins = ["192.0.2.0/24", "2001:db8:10::/48"];
    let admin_only = vec![
        rule(
            "ssh",
            Protocol::Tcp,
            &[22, 7443],
            &["192.0.2.0/24", "2001:db8::/32"],
            RuleAction::Accept,
        ),
        rule("smtp", Protocol::Tcp, &[25], &[], RuleAction::Accept),
    ];
    assert!(lockout(&admins, FirewallPolicy::Drop, admin_only).is_ok());
    let partial_drop = vec![
        rule(
            "bad",
            Protocol::Tcp,
            &[22],
            &["203.0.113.0/24"],
            RuleAction::Drop,
        ),
        rule("udp", Protocol::Udp, &[22, 7443], &[], RuleAction::Drop),
    ];
    assert!(lockout(&admins, FirewallPolicy::Accept, partial_drop.clone()).is_ok());
    // Without admin_sources every address counts, the banned ones too.
    assert_eq!(
        blocked(lockout(&[], FirewallPolicy::Accept, partial_drop)),
        pairs(&[(22, "0.0.0.0/0")])
    );
    // Everything open: nothing to say, with or without admin_sources.
    assert!(lockout(&[], FirewallPolicy::Accept, vec![]).is_ok());
}

#[test]
fn an_accept_shadowed_by_an_earlier_drop_still_locks_out() {
    let rules = vec![
        rule("v4", Protocol::Tcp, &[22], &["0.0.0.0/0"], RuleAction::Drop),
        rule("v6", Protocol::Tcp, &[22], &["::/0"], RuleAction::Drop),
        rule("ssh", Protocol::Tcp, &[22, 7443], &[], RuleAction::Accept),
    ];
    assert_eq!(
        blocked(lockout(&["192.0.2.0/24"], FirewallPolicy::Accept, rules)),
        pairs(&[(22, "192.0.2.0/24")])
    );
}

#[test]
fn allow_lockout_lets_it_through() {
    let mut desired = firewall(FirewallPolicy::Drop, vec![]);
    desired.allow_lockout = true;
    let driver = FirewallDriver::new("nft", guard(&[]));
    assert_eq!(driver.diff(&desired, &None).expect("plan").len(), 1);
}

/// Ranges, sets and single addresses, as `nft -n list` prints them.
const RANGES_LISTED: &str = r#"table inet mailctl {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr { 10.0.0.1, 192.0.2.3-192.0.2.9 } udp dport { 53, 1000-1010 } drop comment "r"
		ip6 saddr { 2001:db8::1, 2001:db8::5-2001:db8::9, 2001:db8:1::/48 } udp dport 53 reject comment "r6"
		tcp dport 25 reject comment "plain"
	}
}
"#;

#[test]
fn parses_ranges_and_single_addresses() {
    let table = listed(RANGES_LISTED);
    let rules = &table.chains[0].rules;
    let known = |i: usize| match &rules[i] {
        ObservedRule::Known(rule) => rule.to_string(),
        other => panic!("not understood: {other:?}"),
    };
    assert_eq!(
        known(0),
        "rule r: ip saddr {10.0.0.1, 192.0.2.3-192.0.2.9} udp dport {53, 1000-1010} drop"
    );
    // A UDP reject is written `with icmpx port-unreachable`, nft's default,
    // which it lists as a bare `reject`.
    assert_eq!(
        known(1),
        "rule r6: ip6 saddr {2001:db8::1, 2001:db8::5-2001:db8::9, 2001:db8:1::/48} udp dport 53 reject"
    );
    // A TCP reject without `with tcp reset` is not what mailctl writes.
    assert_eq!(
        rules[2],
        ObservedRule::Foreign("tcp dport 25 reject comment \"plain\"".into())
    );
}

#[test]
fn listings_nft_cannot_have_printed_are_errors() {
    for bad in [
        "",
        "chain input {\n}\n",
        "table inet mailctl {\n\tchain input {\n",
        "table inet mailctl {\n\tset s {\n\t\telements = { 1,\n",
        "table inet mailctl {\n}\ntable inet other {\n}\n",
    ] {
        assert!(parse_table(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        parse_table("table inet mailctl {\n}\n"),
        Ok(ObservedTable::default())
    );
}

#[test]
fn a_drop_chain_without_its_essentials_gets_them_back() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let without_replies: String = MAIL_DROP_LISTED
        .lines()
        .filter(|line| !line.contains("mailctl-replies"))
        .map(|line| format!("{line}\n"))
        .collect();
    let text = plan_text(&desired, listed(&without_replies));
    assert!(text.contains("+ accept loopback, replies"), "{text}");
    // A rule under an essential's name that says something else is not one.
    let changed =
        MAIL_DROP_LISTED.replace("meta l4proto { 1, 58 } accept", "meta l4proto 1 accept");
    let observed = listed(&changed);
    assert_eq!(
        observed.chains[0].essentials,
        ["mailctl-loopback", "mailctl-replies"]
    );
    let text = plan_text(&desired, observed);
    assert!(text.contains("+ accept loopback, replies"), "{text}");
    assert!(
        text.contains(
            "- rule not written by mailctl: meta l4proto 1 accept comment \"mailctl-icmp\""
        ),
        "{text}"
    );
    // An accept chain needs none of them.
    let open = firewall(FirewallPolicy::Accept, mail_rules());
    let script = RuleSet::from_model(&open).replace_script("mailctl");
    assert!(!script.contains("mailctl-replies"));
    let text = plan_text(&open, listed(MAIL_DROP_LISTED));
    assert!(
        text.contains("- the loopback/replies/ICMP rules of a policy-drop chain"),
        "{text}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A stand-in for `nft` that records its arguments and environment and
/// answers with `body` (shell).
fn fake_nft(dir: &std::path::Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nft");
    let log = dir.join("args");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"LC_ALL=$LC_ALL $*\" >> '{}'\n{body}\n",
            log.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Observes through `nft`, retrying while the just-written script is still
/// busy (ETXTBSY: a process forked by another test held it open for writing).
fn observe_with(nft: &std::path::Path) -> Result<Option<ObservedTable>, FirewallError> {
    let driver = FirewallDriver::new(nft, guard(&["192.0.2.0/24"]));
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    for _ in 0..50 {
        match runtime().block_on(driver.observe(&desired)) {
            Err(FirewallError::NftSpawn { source, .. }) if source.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    panic!("{} stayed busy", nft.display());
}

#[test]
fn observe_lists_the_table_once_and_knows_a_missing_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let present = dir.path().join("present");
    let absent = dir.path().join("absent");
    let broken = dir.path().join("broken");
    for d in [&present, &absent, &broken] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let nft = fake_nft(&present, &format!("cat <<'EOF'\n{MAIL_DROP_LISTED}EOF"));
    let observed = observe_with(&nft).expect("observe").expect("table present");
    assert_eq!(observed, listed(MAIL_DROP_LISTED));
    assert_eq!(
        std::fs::read_to_string(present.join("args")).expect("args"),
        "LC_ALL=C -n list table inet mailctl\n",
        "one run of nft"
    );

    // What nft 1.0.6 says, exit code 1, for a table that does not exist.
    let nft = fake_nft(
        &absent,
        "printf 'Error: No such file or directory\\nlist table inet mailctl\\n                ^^^^^^^\\n' >&2\nexit 1",
    );
    assert_eq!(observe_with(&nft).expect("observe"), None);

    // Any other failure stays an error.
    let nft = fake_nft(
        &broken,
        "echo 'Error: Could not process rule: Operation not permitted' >&2\nexit 1",
    );
    let err = observe_with(&nft).expect_err("a failure");
    assert!(
        matches!(&err, FirewallError::NftFailed { stderr, .. } if stderr.contains("Operation not permitted")),
        "{err}"
    );
}

// ------------------------------------------------ against the installed nft

/// Runs the installed `nft` in a network namespace of its own (`unshare
/// --net`: new, empty, and gone when nft exits, so no test sees another's
/// table and the host's rules are never touched): loads `script`, then runs
/// `nft ARGS`. Needs root, as CI has; fails (never skips) without it.
fn real_nft(script: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("table.nft");
    std::fs::write(&file, script).expect("write the script");
    let output = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", r#"nft -f "$0" && exec nft "$@""#])
        .arg(&file)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("run unshare (util-linux) and nft; these tests need root and nftables");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("unshare failed"),
        "a network namespace of its own needs root (CI runs as root): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What the installed nft lists for the table `script` makes, `-n` or not.
fn listed_by_nft(script: &str, numeric: bool) -> String {
    let mut args = vec!["list", "table", "inet", "mailctl"];
    if numeric {
        args.insert(0, "-n");
    }
    let output = real_nft(script, &args);
    assert!(
        output.status.success(),
        "nft failed ({}): {}\nscript:\n{script}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("nft prints UTF-8")
}

/// The listings the parser tests are built on are what the installed nft
/// really prints: each table is loaded into a fresh namespace and listed
/// again, and must come back byte for byte. A listing is loaded as it is,
/// except where nft prints a rule in a form that, read back, means
/// something else: a UDP reject written `with icmpx port-unreachable` (as
/// mailctl writes it) is listed as a bare `reject`, but a bare `reject`
/// loaded in an inet table becomes `reject with icmpv6 4` on an IPv6 rule.
#[test]
fn every_listing_fixture_is_what_the_installed_nft_prints() {
    let hand_made = hand_made_listed();
    let ranges_written = RANGES_LISTED.replace(
        "udp dport 53 reject comment \"r6\"",
        "udp dport 53 reject with icmpx port-unreachable comment \"r6\"",
    );
    // (name, the listing, the table loaded to get it, whether `-n`)
    let fixtures: [(&str, &str, &str, bool); 9] = [
        ("MAIL_DROP_LISTED", MAIL_DROP_LISTED, MAIL_DROP_LISTED, true),
        (
            "MAIL_DROP_LISTED_NAMES",
            MAIL_DROP_LISTED_NAMES,
            MAIL_DROP_LISTED_NAMES,
            false,
        ),
        ("CHANGED_LISTED", CHANGED_LISTED, CHANGED_LISTED, true),
        ("hand_made_listed", &hand_made, &hand_made, true),
        ("DORMANT_LISTED", DORMANT_LISTED, DORMANT_LISTED, false),
        ("COMMENTED_LISTED", COMMENTED_LISTED, COMMENTED_LISTED, true),
        (
            "PRIORITY_10_LISTED",
            PRIORITY_10_LISTED,
            PRIORITY_10_LISTED,
            true,
        ),
        ("RANGES_LISTED", RANGES_LISTED, &ranges_written, true),
        (
            "an empty table",
            "table inet mailctl {\n}\n",
            "table inet mailctl {\n}\n",
            true,
        ),
    ];
    for (name, fixture, loaded, numeric) in fixtures {
        assert_eq!(
            listed_by_nft(loaded, numeric),
            fixture,
            "{name} is not what `nft {}list table inet mailctl` prints",
            if numeric { "-n " } else { "" }
        );
    }
}

/// The fuzzer's seed listings (fuzz/seeds-nft_listing) are real nft output
/// too, with `-n` or without.
#[test]
fn the_fuzz_seed_listings_are_what_the_installed_nft_prints() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds-nft_listing");
    let mut checked = 0;
    for entry in std::fs::read_dir(&seeds).expect("list the seeds") {
        let path = entry.expect("entry").path();
        let seed = std::fs::read_to_string(&path).expect("read a seed");
        let table = seed
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("table inet "))
            .and_then(|rest| rest.strip_suffix(" {"))
            .unwrap_or_else(|| panic!("{} is no inet table listing", path.display()));
        let list = |numeric: bool| {
            let mut args = vec!["list", "table", "inet", table];
            if numeric {
                args.insert(0, "-n");
            }
            let output = real_nft(&seed, &args);
            assert!(output.status.success(), "{}: {output:?}", path.display());
            String::from_utf8(output.stdout).expect("UTF-8")
        };
        assert!(
            list(true) == seed || list(false) == seed,
            "{} is not what nft lists for it:\n{}",
            path.display(),
            list(true)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} seeds in {}", seeds.display());
}

/// The script mailctl writes makes, in nft's own words, exactly the table
/// the fixtures show, and the parser reads that listing back as converged.
#[test]
fn the_written_table_lists_as_the_fixtures_say() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let script = RuleSet::from_model(&desired).replace_script("mailctl");
    let numeric = listed_by_nft(&script, true);
    assert_eq!(numeric, MAIL_DROP_LISTED);
    assert_eq!(listed_by_nft(&script, false), MAIL_DROP_LISTED_NAMES);
    assert_eq!(
        driver()
            .diff(&desired, &Some(listed(&numeric)))
            .expect("plan"),
        []
    );

    // UDP rejects, ranges and sets, under policy accept.
    let desired = firewall(
        FirewallPolicy::Accept,
        vec![
            rule(
                "mixed",
                Protocol::Udp,
                &[53, 1000, 1001, 1002],
                &[
                    "10.0.0.1/32",
                    "192.0.2.0/25",
                    "192.0.2.128/26",
                    "2001:db8::/127",
                ],
                RuleAction::Reject,
            ),
            rule("dns", Protocol::Udp, &[53], &[], RuleAction::Drop),
        ],
    );
    let script = RuleSet::from_model(&desired).replace_script("mailctl");
    let numeric = listed_by_nft(&script, true);
    assert_eq!(
        driver()
            .diff(&desired, &Some(listed(&numeric)))
            .expect("plan"),
        [],
        "{numeric}"
    );
}

/// What `observe` takes for "no such table" is what nft says for one.
#[test]
fn a_missing_table_is_reported_as_the_stand_in_nft_says() {
    let output = real_nft("", &["-n", "list", "table", "inet", "mailctl"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Error: No such file or directory\nlist table inet mailctl\n                ^^^^^^^\n"
    );
}
