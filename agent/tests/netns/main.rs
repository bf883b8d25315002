//! The address and firewall drivers on a real kernel, each test in network
//! namespaces of its own (see lab.rs). Run as root.

mod lab;

use std::process::Command;

use mailctl_agent::address::AddressError;
use mailctl_agent::firewall::FirewallError;
use mailctl_agent::{Announcement, ApplyReport, Config, Effect, Error, ResourcePlan, error_chain};
use mailctl_schemas::model::HostSpec;
use serde_json::Value;

use lab::{Netns, addresses, eve_spec, host_spec};

/// Every planned change, one line each; panics on a planning error.
fn plan_lines(plans: &[ResourcePlan]) -> Vec<String> {
    let mut lines = Vec::new();
    for plan in plans {
        match &plan.changes {
            Ok(changes) => lines.extend(changes.iter().map(ToString::to_string)),
            Err(err) => panic!("planning {} failed: {}", plan.resource, error_chain(err)),
        }
    }
    lines
}

fn assert_converged(report: &ApplyReport) {
    assert!(report.is_success(), "apply failed:\n{report}");
}

/// A veth pair inside one namespace, both ends up: a link with a carrier,
/// where IPv6 runs duplicate address detection as on a real Ethernet.
fn with_veth_pair(netns: &Netns) {
    netns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    netns.ip(&["link", "set", "eth0", "up"]);
    netns.ip(&["link", "set", "eth1", "up"]);
}

#[test]
fn addresses_ipv4_with_label_and_ipv6_converge_and_stay_converged() {
    let netns = Netns::new();
    with_veth_pair(&netns);
    let spec = eve_spec(
        r#"
  addresses:
    - {address: "192.0.2.25/24", interface: eth0, label: "eth0:mail"}
    - {address: "2001:db8::25/64", interface: eth0}
"#,
    );
    let (plan, report, second_plan, second_report) = netns.reconcile(|reconciler| async move {
        let plan = reconciler.plan(&spec).await;
        let report = reconciler.apply(&spec).await;
        let second_plan = reconciler.plan(&spec).await;
        let second_report = reconciler.apply(&spec).await;
        (plan, report, second_plan, second_report)
    });

    assert_eq!(
        plan_lines(&plan),
        [
            "+ address 192.0.2.25/24 on eth0 (label eth0:mail)",
            "+ address 2001:db8::25/64 on eth0",
        ]
    );
    assert_converged(&report);
    assert_eq!(report.changes().count(), 2, "{report}");
    let announcements: Vec<(String, Announcement)> = report
        .effects()
        .map(|effect| match effect {
            Effect::Announced { address, how, .. } => (address.to_string(), *how),
            other => panic!("not announced: {other}"),
        })
        .collect();
    assert_eq!(
        announcements,
        [
            ("192.0.2.25".to_owned(), Announcement::GratuitousArp),
            (
                "2001:db8::25".to_owned(),
                Announcement::UnsolicitedNeighborAdvertisement
            ),
        ]
    );

    let on_eth0 = addresses(&netns, "eth0");
    assert!(
        on_eth0.contains(&("192.0.2.25/24".into(), Some("eth0:mail".into()))),
        "{on_eth0:?}"
    );
    assert!(
        on_eth0.contains(&("2001:db8::25/64".into(), None)),
        "{on_eth0:?}"
    );

    assert_eq!(plan_lines(&second_plan), Vec::<String>::new());
    assert_converged(&second_report);
    assert_eq!(second_report.changes().count(), 0, "{second_report}");
}

#[test]
fn unlisted_addresses_are_untouched_and_absent_ones_removed() {
    let netns = Netns::new();
    with_veth_pair(&netns);
    netns.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]);
    netns.ip(&["addr", "add", "192.0.2.30/24", "dev", "eth0"]);
    netns.ip(&[
        "addr",
        "add",
        "198.51.100.7/24",
        "dev",
        "eth0",
        "label",
        "eth0:keep",
    ]);
    netns.ip(&["addr", "add", "2001:db8::99/64", "dev", "eth0", "nodad"]);
    netns.ip(&["addr", "add", "192.0.2.25/24", "dev", "eth1"]);
    let eth1_before = addresses(&netns, "eth1");

    let spec = host_spec(
        r#"
apiVersion: mailctl/v1alpha1
kind: Host
metadata: {name: bob}
spec:
  addresses:
    - {address: "192.0.2.25/24", interface: eth0, state: absent}
    - {address: "192.0.2.30/24", interface: eth0, state: absent}
    - {address: "192.0.2.40/24", interface: eth0}
"#,
    );
    let (plan, report, second_plan) = netns.reconcile(|reconciler| async move {
        let plan = reconciler.plan(&spec).await;
        let report = reconciler.apply(&spec).await;
        let second_plan = reconciler.plan(&spec).await;
        (plan, report, second_plan)
    });

    assert_eq!(
        plan_lines(&plan),
        [
            "- address 192.0.2.30/24 on eth0",
            "+ address 192.0.2.40/24 on eth0",
        ]
    );
    assert_converged(&report);
    let mut on_eth0: Vec<String> = addresses(&netns, "eth0")
        .into_iter()
        .map(|(address, label)| format!("{address} {}", label.unwrap_or_default()))
        .collect();
    on_eth0.sort();
    assert_eq!(
        on_eth0,
        [
            "192.0.2.11/24 eth0",
            "192.0.2.40/24 eth0",
            "198.51.100.7/24 eth0:keep",
            "2001:db8::99/64 ",
        ]
    );
    assert_eq!(
        addresses(&netns, "eth1"),
        eth1_before,
        "the same IP on an undeclared interface stays"
    );
    assert_eq!(plan_lines(&second_plan), Vec::<String>::new());
}

#[test]
fn removing_a_primary_never_takes_unlisted_secondaries_with_it() {
    let netns = Netns::new();
    with_veth_pair(&netns);
    let promote = |on: &str| {
        for scope in ["all", "eth0"] {
            let path = format!("/proc/sys/net/ipv4/conf/{scope}/promote_secondaries");
            netns.exec("sh", &["-c", &format!("echo {on} > {path}")]);
        }
    };
    promote("0");
    netns.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]);
    netns.ip(&["addr", "add", "192.0.2.12/24", "dev", "eth0"]);
    let spec = host_spec(
        r#"
apiVersion: mailctl/v1alpha1
kind: Host
metadata: {name: bob}
spec:
  addresses:
    - {address: "192.0.2.11/24", interface: eth0, state: absent}
"#,
    );

    let refused = {
        let spec = spec.clone();
        netns.reconcile(|reconciler| async move { reconciler.apply(&spec).await })
    };
    match refused.errors().next() {
        Some((_, Error::Address(AddressError::WouldRemoveSecondaries { secondaries, .. }))) => {
            assert_eq!(secondaries.len(), 1, "{refused}");
        }
        _ => panic!("expected a refusal, got:\n{refused}"),
    }
    let both = vec![
        ("192.0.2.11/24".to_owned(), Some("eth0".to_owned())),
        ("192.0.2.12/24".to_owned(), Some("eth0".to_owned())),
    ];
    assert_eq!(addresses(&netns, "eth0"), both, "nothing removed");

    // With promotion on, the kernel keeps the secondary: removal is safe.
    promote("1");
    let report = netns.reconcile(|reconciler| async move { reconciler.apply(&spec).await });
    assert_converged(&report);
    assert_eq!(
        addresses(&netns, "eth0"),
        [("192.0.2.12/24".to_owned(), Some("eth0".to_owned()))]
    );
}

#[test]
fn a_moved_address_is_announced_to_neighbours() {
    // The client still believes the service IPs live at another host's MAC,
    // as after a move; only the announcement can correct that at once.
    let host = Netns::new();
    let client = Netns::new();
    host.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        client.name(),
    ]);
    host.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["addr", "add", "192.0.2.99/24", "dev", "eth0"]);
    client.ip(&["addr", "add", "2001:db8::99/64", "dev", "eth0", "nodad"]);
    let old_holder = "02:00:00:00:00:99";
    for ip in ["192.0.2.25", "2001:db8::25"] {
        client.ip(&[
            "neigh", "replace", ip, "lladdr", old_holder, "dev", "eth0", "nud", "stale",
        ]);
    }
    let neighbour_mac = |ip: &str| -> String {
        let table = client.ip_json(&["neigh", "show", "dev", "eth0"]);
        table
            .as_array()
            .expect("neighbour list")
            .iter()
            .find(|entry| entry["dst"] == ip)
            .and_then(|entry| entry["lladdr"].as_str())
            .unwrap_or("none")
            .to_owned()
    };
    assert_eq!(neighbour_mac("192.0.2.25"), old_holder);
    assert_eq!(neighbour_mac("2001:db8::25"), old_holder);

    let spec = eve_spec(
        r#"
  addresses:
    - {address: "192.0.2.25/24", interface: eth0, exclusive: true}
    - {address: "2001:db8::25/64", interface: eth0, exclusive: true}
"#,
    );
    let report = host.reconcile(|reconciler| async move { reconciler.apply(&spec).await });
    assert_converged(&report);

    let new_holder = host.mac("eth0");
    assert_eq!(
        neighbour_mac("192.0.2.25"),
        new_holder,
        "gratuitous ARP seen"
    );
    assert_eq!(
        neighbour_mac("2001:db8::25"),
        new_holder,
        "neighbour advertisement seen"
    );
}

#[test]
fn an_exclusive_address_another_machine_holds_is_not_added() {
    // The last line of defence behind the controller's fencing: the agent
    // asks the link (ARP probe) before taking a service IP.
    let host = Netns::new();
    let intruder = Netns::new();
    host.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        intruder.name(),
    ]);
    host.ip(&["link", "set", "eth0", "up"]);
    intruder.ip(&["link", "set", "eth0", "up"]);
    intruder.ip(&["addr", "add", "192.0.2.25/24", "dev", "eth0"]);
    let intruder_mac = intruder.mac("eth0");
    let spec = eve_spec(
        r#"
  addresses:
    - {address: "192.0.2.25/24", interface: eth0, exclusive: true}
"#,
    );
    let probe_spec = spec.clone();
    let report = host.reconcile(|reconciler| async move { reconciler.apply(&probe_spec).await });
    let errors: Vec<String> = report
        .errors()
        .map(|(_, e)| mailctl_agent::error_chain(e))
        .collect();
    assert_eq!(errors.len(), 1, "{report}");
    assert!(
        errors[0].contains(&format!(
            "another machine answers for it (MAC {intruder_mac})"
        )),
        "{}",
        errors[0]
    );
    assert!(
        addresses(&host, "eth0")
            .iter()
            .all(|(a, _)| a != "192.0.2.25/24"),
        "not added while held elsewhere"
    );
    // Once the other machine lets it go, it is taken (and announced).
    intruder.ip(&["addr", "del", "192.0.2.25/24", "dev", "eth0"]);
    let report = host.reconcile(|reconciler| async move { reconciler.apply(&spec).await });
    assert_converged(&report);
    assert!(
        addresses(&host, "eth0")
            .iter()
            .any(|(a, _)| a == "192.0.2.25/24")
    );
}

const FIREWALL: &str = r#"
apiVersion: mailctl/v1alpha1
kind: Host
metadata: {name: eve}
spec:
  firewall:
    policy: drop
    rules:
      - {name: ssh, protocol: tcp, ports: [22], action: accept}
      - {name: agent, protocol: tcp, ports: [7443], sources: ["192.0.2.0/24"], action: accept}
      - {name: smtp, protocol: tcp, ports: [25, 465, 587], action: accept}
      - {name: imap, protocol: tcp, ports: [143, 993], sources: ["198.51.100.0/24", "2001:db8::/32"], action: reject}
      - {name: dns, protocol: udp, ports: [53], action: drop}
"#;

/// An agent administered from 192.0.2.0/24 (its `admin_sources`): the agent
/// port of [`FIREWALL`] is open to that network only.
fn admin_config() -> Config {
    Config::default().admin_sources(vec!["192.0.2.0/24".parse().expect("cidr")])
}

/// The ruleset minus the owned table: what must never change.
fn other_tables(ruleset: &Value) -> Vec<Value> {
    ruleset["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter(|item| {
            let body = item.as_object().and_then(|o| o.values().next());
            let table = body
                .and_then(|b| b.get("table").or_else(|| b.get("name")))
                .and_then(Value::as_str);
            let family = body.and_then(|b| b.get("family")).and_then(Value::as_str);
            !(family == Some("inet") && table == Some("mailctl"))
        })
        .cloned()
        .collect()
}

/// The owned table's input chain and its rule comments, from `nft -j`.
fn owned_table(ruleset: &Value) -> (Value, Vec<String>) {
    let items = ruleset["nftables"].as_array().expect("nftables array");
    let chain = items
        .iter()
        .filter_map(|item| item.get("chain"))
        .find(|chain| chain["table"] == "mailctl" && chain["family"] == "inet")
        .cloned()
        .unwrap_or(Value::Null);
    let comments = items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule["table"] == "mailctl")
        .map(|rule| rule["comment"].as_str().unwrap_or("(none)").to_owned())
        .collect();
    (chain, comments)
}

#[test]
fn the_firewall_table_is_replaced_whole_and_other_tables_stay() {
    let netns = Netns::new();
    netns.exec(
        "nft",
        &["add table inet other; \
           add chain inet other input { type filter hook input priority 10; policy accept; }; \
           add rule inet other input tcp dport 8080 drop; \
           add table ip legacy; add chain ip legacy forward { type filter hook forward priority 0; }"],
    );
    let others_before = other_tables(&netns.nft_ruleset());
    let spec = host_spec(FIREWALL);

    let first = {
        let spec = spec.clone();
        netns.reconcile_with(admin_config(), |reconciler| async move {
            let plan = reconciler.plan(&spec).await;
            let report = reconciler.apply(&spec).await;
            let second_plan = reconciler.plan(&spec).await;
            (plan, report, second_plan)
        })
    };
    let (plan, report, second_plan) = first;
    let plan = plan_lines(&plan);
    assert_eq!(
        plan[0].lines().next(),
        Some("+ firewall table inet mailctl: policy drop, 6 rules"),
        "{plan:?}"
    );
    assert_converged(&report);

    let ruleset = netns.nft_ruleset();
    let (chain, comments) = owned_table(&ruleset);
    assert_eq!(chain["hook"], "input");
    assert_eq!(chain["type"], "filter");
    assert_eq!(chain["prio"], 0);
    assert_eq!(chain["policy"], "drop");
    assert_eq!(
        comments,
        [
            "mailctl-loopback",
            "mailctl-replies",
            "mailctl-icmp",
            "ssh",
            "agent",
            "smtp",
            "imap",
            "imap",
            "dns"
        ]
    );
    assert_eq!(
        other_tables(&ruleset),
        others_before,
        "other tables untouched"
    );
    assert_eq!(plan_lines(&second_plan), Vec::<String>::new());

    // Drift: a rule added by hand to the owned table is planned away and removed.
    netns.exec(
        "nft",
        &["add rule inet mailctl input tcp dport 8443 accept"],
    );
    let (drift_plan, repair, after) =
        netns.reconcile_with(admin_config(), |reconciler| async move {
            let plan = reconciler.plan(&spec).await;
            let report = reconciler.apply(&spec).await;
            let after = reconciler.plan(&spec).await;
            (plan, report, after)
        });
    let drift_plan = plan_lines(&drift_plan);
    assert!(
        drift_plan[0].starts_with("~ firewall table inet mailctl: 7 rules -> 6 rules"),
        "{drift_plan:?}"
    );
    assert!(
        drift_plan[0].contains("- rule not written by mailctl"),
        "{drift_plan:?}"
    );
    assert_converged(&repair);
    assert_eq!(plan_lines(&after), Vec::<String>::new());
    let ruleset = netns.nft_ruleset();
    assert_eq!(
        owned_table(&ruleset).1,
        [
            "mailctl-loopback",
            "mailctl-replies",
            "mailctl-icmp",
            "ssh",
            "agent",
            "smtp",
            "imap",
            "imap",
            "dns"
        ]
    );
    assert_eq!(
        other_tables(&ruleset),
        others_before,
        "other tables untouched"
    );
}

/// `spec` with `allowLockout` off again.
fn guarded(mut spec: HostSpec) -> HostSpec {
    if let Some(firewall) = &mut spec.firewall {
        firewall.allow_lockout = false;
    }
    spec
}

#[test]
fn a_lockout_is_refused_and_changes_nothing() {
    let netns = Netns::new();
    let before = netns.nft_ruleset();
    // `mailctl validate` refuses these two already; the agent refuses them
    // on its own (a desired state may come from elsewhere): they are read
    // with allowLockout, then held to the guard without it.
    let no_ssh = guarded(eve_spec(
        r#"
  firewall:
    policy: drop
    allowLockout: true
    rules:
      - {name: smtp, protocol: tcp, ports: [25], action: accept}
"#,
    ));
    let no_agent = guarded(eve_spec(
        r#"
  firewall:
    policy: accept
    allowLockout: true
    rules:
      - {name: close, protocol: tcp, ports: [7443], action: reject}
"#,
    ));
    let allowed = eve_spec(
        r#"
  firewall:
    policy: drop
    allowLockout: true
    rules:
      - {name: smtp, protocol: tcp, ports: [25], action: accept}
"#,
    );
    let (plan, report, agent_report, after_refusals, allowed_report) =
        netns.reconcile(|reconciler| {
            let netns = &netns;
            async move {
                let plan = reconciler.plan(&no_ssh).await;
                let report = reconciler.apply(&no_ssh).await;
                let agent_report = reconciler.apply(&no_agent).await;
                let after_refusals = netns.nft_ruleset();
                let allowed_report = reconciler.apply(&allowed).await;
                (plan, report, agent_report, after_refusals, allowed_report)
            }
        });

    let refusal = |result: Option<&Error>| match result {
        Some(Error::Firewall(FirewallError::Lockout { blocked, .. })) => {
            let mut ports: Vec<u16> = blocked.iter().map(|b| b.port).collect();
            ports.dedup();
            ports
        }
        other => panic!("expected a lockout refusal, got {other:?}"),
    };
    assert_eq!(refusal(plan[0].changes.as_ref().err()), [22, 7443]);
    assert_eq!(refusal(report.errors().next().map(|(_, e)| e)), [22, 7443]);
    assert_eq!(
        refusal(agent_report.errors().next().map(|(_, e)| e)),
        [7443]
    );
    let message = report.to_string();
    assert!(
        message.contains("blocks tcp/22 (SSH) from 0.0.0.0/0 (IPv4) and ::/0 (IPv6), tcp/7443")
            && message.contains("allowLockout: true"),
        "{message}"
    );
    assert_eq!(after_refusals, before, "a refused rule set changes nothing");

    assert_converged(&allowed_report);
    let (chain, comments) = owned_table(&netns.nft_ruleset());
    assert_eq!(chain["policy"], "drop");
    assert_eq!(
        comments,
        [
            "mailctl-loopback",
            "mailctl-replies",
            "mailctl-icmp",
            "smtp"
        ]
    );
}

/// Three rule sets the guard let through while it only asked whether any
/// address at all reached SSH: each locks out a whole address family or
/// every admin. Refused now, through the real apply, and nothing changes;
/// a rule set that keeps the configured admin ranges in is applied.
#[test]
fn rule_sets_that_cut_off_an_address_family_or_the_admins_are_refused() {
    let netns = Netns::new();
    let before = netns.nft_ruleset();
    let ipv4_dropped = eve_spec(
        r#"
  firewall:
    policy: accept
    rules:
      - {name: v4, protocol: tcp, ports: [22, 7443], sources: ["0.0.0.0/0"], action: drop}
"#,
    );
    let one_address = eve_spec(
        r#"
  firewall:
    policy: drop
    rules:
      - {name: one, protocol: tcp, ports: [22, 7443], sources: ["192.0.2.1/32"], action: accept}
"#,
    );
    let link_local = eve_spec(
        r#"
  firewall:
    policy: drop
    rules:
      - {name: ll, protocol: tcp, ports: [22, 7443], sources: ["fe80::1/128"], action: accept}
"#,
    );
    let admins_in = eve_spec(
        r#"
  firewall:
    policy: drop
    rules:
      - {name: admin, protocol: tcp, ports: [22, 7443], sources: ["198.51.100.0/24", "2001:db8:10::/48"], action: accept}
      - {name: smtp, protocol: tcp, ports: [25], action: accept}
"#,
    );
    let blocked = |report: &ApplyReport| -> Vec<(u16, String)> {
        match report.errors().next().map(|(_, e)| e) {
            Some(Error::Firewall(FirewallError::Lockout { blocked, .. })) => blocked
                .iter()
                .map(|b| (b.port, b.source.to_string()))
                .collect(),
            other => panic!("expected a lockout refusal, got {other:?}: {report}"),
        }
    };
    let pairs = |list: &[(u16, &str)]| -> Vec<(u16, String)> {
        list.iter().map(|(p, s)| (*p, (*s).to_owned())).collect()
    };
    // No admin_sources: every address must keep both ports.
    let (v4, one, ll, after) = netns.reconcile(|reconciler| {
        let netns = &netns;
        let (ipv4_dropped, one_address, link_local) = (&ipv4_dropped, &one_address, &link_local);
        async move {
            let v4 = reconciler.apply(ipv4_dropped).await;
            let one = reconciler.apply(one_address).await;
            let ll = reconciler.apply(link_local).await;
            (v4, one, ll, netns.nft_ruleset())
        }
    });
    let everyone = [
        (22, "0.0.0.0/0"),
        (22, "::/0"),
        (7443, "0.0.0.0/0"),
        (7443, "::/0"),
    ];
    assert_eq!(
        blocked(&v4),
        pairs(&[(22, "0.0.0.0/0"), (7443, "0.0.0.0/0")])
    );
    assert_eq!(blocked(&one), pairs(&everyone));
    assert_eq!(blocked(&ll), pairs(&everyone));
    assert_eq!(after, before, "a refused rule set changes nothing");

    // The agent told who its admins are: the same rule sets still cut them
    // off, the one that keeps them in is applied.
    let admins = Config::default().ssh_port(2222).admin_sources(vec![
        "198.51.100.0/24".parse().expect("cidr"),
        "2001:db8:10::/48".parse().expect("cidr"),
    ]);
    let (one, good) = netns.reconcile_with(admins, |reconciler| {
        let (one_address, admins_in) = (&one_address, &admins_in);
        async move {
            (
                reconciler.apply(one_address).await,
                reconciler.apply(admins_in).await,
            )
        }
    });
    assert_eq!(
        blocked(&one),
        pairs(&[
            (2222, "198.51.100.0/24"),
            (2222, "2001:db8:10::/48"),
            (7443, "198.51.100.0/24"),
            (7443, "2001:db8:10::/48")
        ])
    );
    assert!(
        one.to_string()
            .contains("tcp/2222 (SSH) from 198.51.100.0/24 (IPv4)"),
        "{one}"
    );
    // Port 2222 is SSH on this host: the good set does not accept it.
    let refused_2222 = blocked(&good);
    assert_eq!(
        refused_2222,
        pairs(&[(2222, "198.51.100.0/24"), (2222, "2001:db8:10::/48")])
    );
    let admins = Config::default().admin_sources(vec![
        "198.51.100.0/24".parse().expect("cidr"),
        "2001:db8:10::/48".parse().expect("cidr"),
    ]);
    let good = netns.reconcile_with(admins, |reconciler| {
        let admins_in = &admins_in;
        async move { reconciler.apply(admins_in).await }
    });
    assert_converged(&good);
    let (chain, comments) = owned_table(&netns.nft_ruleset());
    assert_eq!(chain["policy"], "drop");
    assert_eq!(
        comments,
        [
            "mailctl-loopback",
            "mailctl-replies",
            "mailctl-icmp",
            "admin",
            "admin",
            "smtp"
        ]
    );
}

#[test]
fn nft_refuses_every_reserved_table_name_and_takes_the_others() {
    // The validation refuses these names because nft does: try each on the
    // installed nft, and a few ordinary names next to them.
    let netns = Netns::new();
    let check = |name: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                netns.name(),
                "nft",
                "-c",
                "add",
                "table",
                "inet",
                name,
            ])
            .output()
            .expect("run nft")
    };
    for word in mailctl_schemas::nft::RESERVED {
        let out = check(word);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("expecting string"),
            "nft took {word:?} as a table name (status {}, {said}): drop it from RESERVED",
            out.status
        );
        assert!(mailctl_schemas::nft::table_name_problem(word).is_some());
    }
    for name in ["mailctl", "filter", "nat", "Accept", "mail-2"] {
        let out = check(name);
        assert!(
            out.status.success(),
            "nft refused {name:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mailctl_schemas::nft::table_name_problem(name), None);
    }
}
