use mailctl_schemas::model::FirewallRule;
use serde_json::json;

use super::nft::parse_table;
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

/// What `nft -j list table` prints for `rules` (written like nft 1.0.6 does:
/// merged prefixes, unwrapped one-element sets, handles).
fn as_listed(policy: &str, rules: Vec<Value>) -> Value {
    let mut items = vec![
        json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}}),
        json!({"table": {"family": "inet", "name": "mailctl", "handle": 2}}),
        json!({"chain": {"family": "inet", "table": "mailctl", "name": "input", "handle": 1,
            "type": "filter", "hook": "input", "prio": 0, "policy": policy}}),
    ];
    items.extend(rules);
    json!({ "nftables": items })
}

fn listed_rule(comment: &str, expr: Value) -> Value {
    json!({"rule": {"family": "inet", "table": "mailctl", "chain": "input", "handle": 9,
        "comment": comment, "expr": expr}})
}

fn dport(protocol: &str, right: Value) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "dport"}}, "right": right}})
}

fn saddr(family: &str, right: Value) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": family, "field": "saddr"}}, "right": right}})
}

/// The rules a policy-drop chain starts with, as `nft -j` lists them.
fn essentials_as_listed() -> Vec<Value> {
    vec![
        listed_rule(
            "mailctl-loopback",
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": null}]),
        ),
        listed_rule(
            "mailctl-replies",
            json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]),
        ),
        listed_rule(
            "mailctl-icmp",
            json!([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["icmp", "ipv6-icmp"]}}}, {"accept": null}]),
        ),
    ]
}

fn mail_rules_as_listed(policy: &str) -> Value {
    let essentials = if policy == "drop" {
        essentials_as_listed()
    } else {
        Vec::new()
    };
    as_listed(
        policy,
        essentials.into_iter().chain([
            listed_rule("ssh", json!([dport("tcp", json!(22)), {"accept": null}])),
            listed_rule(
                "agent",
                json!([saddr("ip", json!({"prefix": {"addr": "192.0.2.0", "len": 24}})),
                       dport("tcp", json!(7443)), {"accept": null}]),
            ),
            listed_rule(
                "smtp",
                json!([dport("tcp", json!({"set": [25, 465, 587]})), {"accept": null}]),
            ),
            listed_rule(
                "imap",
                json!([saddr("ip", json!({"prefix": {"addr": "198.51.100.0", "len": 23}})),
                       dport("tcp", json!({"set": [143, 993]})), {"reject": {"type": "tcp reset"}}]),
            ),
            listed_rule(
                "imap",
                json!([saddr("ip6", json!({"prefix": {"addr": "2001:db8::", "len": 32}})),
                       dport("tcp", json!({"set": [143, 993]})), {"reject": {"type": "tcp reset"}}]),
            ),
        ])
        .collect(),
    )
}

fn driver() -> FirewallDriver {
    FirewallDriver::new("nft", protected())
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
    let observed = parse_table(&mail_rules_as_listed("drop")).expect("parse");
    assert_eq!(driver().diff(&desired, &Some(observed)).expect("plan"), []);
}

#[test]
fn a_changed_table_is_replaced_with_a_readable_summary() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let observed = parse_table(&as_listed(
        "accept",
        vec![
            listed_rule("ssh", json!([dport("tcp", json!(22)), {"accept": null}])),
            listed_rule("smtp", json!([dport("tcp", json!(25)), {"accept": null}])),
            listed_rule("old", json!([dport("udp", json!(53)), {"drop": null}])),
        ],
    ))
    .expect("parse");
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
}

#[test]
fn hand_made_additions_to_the_owned_table_are_removed() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let mut listed = mail_rules_as_listed("drop");
    let items = listed["nftables"].as_array_mut().expect("array");
    items.push(listed_rule(
        "ssh",
        json!([dport("tcp", json!(22)), {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]),
    ));
    items.push(
        json!({"chain": {"family": "inet", "table": "mailctl", "name": "extra", "handle": 7}}),
    );
    items.push(json!({"set": {"family": "inet", "table": "mailctl", "name": "blocklist", "type": "ipv4_addr", "handle": 8}}));
    let observed = parse_table(&listed).expect("parse");
    let text = driver().diff(&desired, &Some(observed)).expect("plan")[0].to_string();
    assert!(text.contains("- set blocklist"), "{text}");
    assert!(text.contains("- chain extra (0 rules)"), "{text}");
    assert!(
        text.contains("- rule not written by mailctl: ssh: [{"),
        "{text}"
    );
}

#[test]
fn rule_order_matters() {
    let mut rules = mail_rules();
    rules.swap(2, 0);
    let desired = firewall(FirewallPolicy::Drop, rules);
    let observed = parse_table(&mail_rules_as_listed("drop")).expect("parse");
    let text = driver().diff(&desired, &Some(observed)).expect("plan")[0].to_string();
    assert!(
        text.contains("~ rule order ssh, agent, smtp, imap, imap -> smtp, agent, ssh, imap, imap"),
        "{text}"
    );
}

#[test]
fn the_script_replaces_the_table_in_one_batch() {
    let script = RuleSet::from_model(&firewall(FirewallPolicy::Drop, mail_rules()))
        .replace_script("mailctl");
    let commands = script["nftables"].as_array().expect("array");
    assert_eq!(
        commands[0],
        json!({"add": {"table": {"family": "inet", "name": "mailctl"}}})
    );
    assert_eq!(
        commands[1],
        json!({"delete": {"table": {"family": "inet", "name": "mailctl"}}})
    );
    assert_eq!(commands[3]["add"]["chain"]["policy"], "drop");
    // Table, chain, the three essentials of a policy-drop chain, then the rules.
    assert_eq!(commands.len(), 4 + 3 + 5);
    assert_eq!(commands[4]["add"]["rule"]["comment"], "mailctl-loopback");
    assert_eq!(
        commands[10]["add"]["rule"]["expr"][0]["match"]["right"],
        json!({"set": [{"prefix": {"addr": "198.51.100.0", "len": 23}}]})
    );
}

fn lockout(policy: FirewallPolicy, rules: Vec<FirewallRule>) -> Result<Vec<FirewallChange>, Error> {
    driver().diff(&firewall(policy, rules), &None)
}

#[test]
fn refuses_a_drop_policy_without_accepting_ssh() {
    let err = lockout(
        FirewallPolicy::Drop,
        vec![rule("smtp", Protocol::Tcp, &[25], &[], RuleAction::Accept)],
    )
    .expect_err("locks out SSH");
    assert!(matches!(err, Error::Lockout { port: 22, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "firewall table inet mailctl: refusing a rule set that blocks tcp/22 (SSH) from every source; \
         add a rule accepting tcp/22 or set `allowLockout: true`"
    );
}

#[test]
fn refuses_blocking_the_agent_port_before_any_accept() {
    let err = lockout(
        FirewallPolicy::Accept,
        vec![
            rule(
                "close",
                Protocol::Tcp,
                &[7000, 7443],
                &[],
                RuleAction::Reject,
            ),
            rule("agent", Protocol::Tcp, &[7443], &[], RuleAction::Accept),
        ],
    )
    .expect_err("locks out the agent");
    assert!(matches!(err, Error::Lockout { port: 7443, .. }), "{err}");
}

#[test]
fn accepts_rule_sets_that_leave_some_source_in() {
    // Accepting from an admin network is enough; so is an accept policy with
    // only some sources dropped; a UDP rule on port 22 is no TCP lockout.
    let admin_only = vec![rule(
        "ssh",
        Protocol::Tcp,
        &[22, 7443],
        &["192.0.2.0/24"],
        RuleAction::Accept,
    )];
    assert!(lockout(FirewallPolicy::Drop, admin_only).is_ok());
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
    assert!(lockout(FirewallPolicy::Accept, partial_drop).is_ok());
}

#[test]
fn an_accept_shadowed_by_an_earlier_drop_still_locks_out() {
    let rules = vec![
        rule("v4", Protocol::Tcp, &[22], &["0.0.0.0/0"], RuleAction::Drop),
        rule("v6", Protocol::Tcp, &[22], &["::/0"], RuleAction::Drop),
        rule("ssh", Protocol::Tcp, &[22, 7443], &[], RuleAction::Accept),
    ];
    assert!(matches!(
        lockout(FirewallPolicy::Accept, rules),
        Err(Error::Lockout { port: 22, .. })
    ));
}

#[test]
fn allow_lockout_lets_it_through() {
    let mut desired = firewall(FirewallPolicy::Drop, vec![]);
    desired.allow_lockout = true;
    assert_eq!(driver().diff(&desired, &None).expect("plan").len(), 1);
}

#[test]
fn parses_ranges_and_single_addresses() {
    let listed = as_listed(
        "accept",
        vec![listed_rule(
            "r",
            json!([saddr("ip", json!({"set": ["10.0.0.1", {"range": ["192.0.2.3", "192.0.2.9"]}]})),
                   dport("udp", json!({"set": [53, {"range": [1000, 1010]}]})), {"drop": null}]),
        )],
    );
    let table = parse_table(&listed).expect("parse");
    let ObservedRule::Known(rule) = &table.chains[0].rules[0] else {
        panic!("not understood: {:?}", table.chains[0].rules[0]);
    };
    assert_eq!(
        rule.to_string(),
        "rule r: ip saddr {10.0.0.1, 192.0.2.3-192.0.2.9} udp dport {53, 1000-1010} drop"
    );
}

#[test]
fn a_drop_chain_without_its_essentials_gets_them_back() {
    let desired = firewall(FirewallPolicy::Drop, mail_rules());
    let listed = mail_rules_as_listed("drop");
    let mut items = listed["nftables"].as_array().expect("items").clone();
    items.retain(|item| item["rule"]["comment"] != "mailctl-replies");
    let observed = parse_table(&json!({ "nftables": items })).expect("parse");
    let plan = driver().diff(&desired, &Some(observed)).expect("plan");
    let text = plan
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("+ accept loopback, replies"), "{text}");
    // An accept chain needs none of them.
    let open = firewall(FirewallPolicy::Accept, mail_rules());
    let script = RuleSet::from_model(&open).replace_script("mailctl");
    assert!(!script.to_string().contains("mailctl-replies"));
}
