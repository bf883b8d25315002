//! A migration as a runbook: per transition, per step, per host, what
//! changes — what `mailctl plan -f DIR` prints for a Migration, from the
//! manifests alone (no agent is contacted). The changes are the planner's
//! ([`crate::plan`]) step states, compared with the state before each step;
//! file contents never appear (they may be secrets), only that a file is
//! written or removed.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use mailctl_schemas::model::{
    FirewallPolicy, FirewallRule, Gate, GateCheck, HostSpec, ManifestSet, Migration, Mta, Presence,
    Protocol, RuleAction, ServiceState, SyncSource,
};

use crate::plan::{Current, Step, plan_migration};

/// The runbook of `migration`, with the phases of `set`.
pub fn render(set: &ManifestSet, migration: &Migration) -> String {
    let phases: Vec<_> = set.phases_of(migration).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "migration {}: hosts {}; phases {}; target {}{}",
        migration.name,
        migration
            .hosts
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        migration.phases.join(" -> "),
        migration.target_phase,
        migration
            .point_of_no_return
            .as_ref()
            .map(|p| format!("; point of no return: {p}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Planned from the manifests alone (no agent contacted); the first phase starts from whatever the hosts hold."
    );
    let mut current: Current = migration.hosts.keys().map(|h| (h.clone(), None)).collect();
    let total = phases.len();
    for (index, (from, plan)) in plan_migration(migration, phases.iter().copied())
        .into_iter()
        .enumerate()
    {
        let name = &phases[index].name;
        let _ = writeln!(
            out,
            "\n{name} ({}/{total}), from {}{}",
            index + 1,
            from.as_deref().unwrap_or("the hosts as they are"),
            if migration.point_of_no_return.as_deref() == Some(name.as_str()) {
                " — POINT OF NO RETURN: from here on new mail lands on the new host; going back needs a reverse sync"
            } else {
                ""
            }
        );
        let plan = match plan {
            Ok(plan) => plan,
            Err(refusal) => {
                let _ = writeln!(out, "  refused: {refusal}");
                continue;
            }
        };
        for (number, step) in plan.steps.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", number + 1, step.kind());
            match step {
                Step::Release { hosts } | Step::Acquire { hosts } => {
                    let mut any = false;
                    for (host, spec) in hosts {
                        let before = current.get(host).cloned().flatten();
                        let changes = changes(before.as_ref(), spec);
                        current.insert(host.clone(), Some(spec.clone()));
                        if changes.is_empty() {
                            continue;
                        }
                        any = true;
                        let _ = writeln!(out, "     {host}:");
                        for change in changes {
                            let _ = writeln!(out, "       {change}");
                        }
                    }
                    if !any {
                        let _ = writeln!(out, "     nothing changes");
                    }
                }
                Step::FinalSyncs { syncs } => {
                    for sync in syncs {
                        let source = current
                            .get(&sync.host)
                            .and_then(Option::as_ref)
                            .and_then(|s| s.sync_jobs.iter().find(|j| j.name == sync.job))
                            .map(|j| format!(" from {}", source(&j.source)))
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "     {}: run sync job {}{source} once, verified",
                            sync.host, sync.job
                        );
                    }
                }
                Step::Gates { gates } => {
                    for gate in gates {
                        let _ = writeln!(out, "     {}", describe_gate(gate));
                    }
                }
            }
        }
    }
    out
}

fn source(source: &SyncSource) -> String {
    match source {
        SyncSource::Remote { host, path } => format!("{host}:{}", path.display()),
        SyncSource::Local(path) => path.display().to_string(),
    }
}

/// What going from `before` (`None`: unknown) to `after` changes, one line
/// each: `+` opens or adds, `-` closes or removes, `~` modifies.
pub fn changes(before: Option<&HostSpec>, after: &HostSpec) -> Vec<String> {
    let mut lines = Vec::new();
    let empty = HostSpec::default();
    let known = before.is_some();
    let before = before.unwrap_or(&empty);
    for address in &after.addresses {
        let was = before
            .addresses
            .iter()
            .find(|a| a.address == address.address)
            .map(|a| a.state);
        let exclusive = if address.exclusive {
            " (exclusive)"
        } else {
            ""
        };
        match (address.state, was) {
            (Presence::Present, Some(Presence::Present)) => {}
            (Presence::Present, _) => lines.push(format!(
                "+ address {} on {}{exclusive}",
                address.address, address.interface
            )),
            (Presence::Absent, Some(Presence::Absent)) => {}
            (Presence::Absent, Some(Presence::Present)) => lines.push(format!(
                "- address {} from {}{exclusive}",
                address.address, address.interface
            )),
            (Presence::Absent, None) => lines.push(format!(
                "- address {} from {}{exclusive}{}",
                address.address,
                address.interface,
                if known {
                    " (held absent)"
                } else {
                    " (if there)"
                }
            )),
        }
    }
    for service in &after.services {
        let was = before
            .services
            .iter()
            .find(|s| s.name == service.name)
            .map(|s| s.state);
        match (service.state, was) {
            (ServiceState::Running, Some(ServiceState::Running)) => {}
            (ServiceState::Running, _) => lines.push(format!("+ start service {}", service.name)),
            (ServiceState::Stopped, Some(ServiceState::Stopped)) => {}
            (ServiceState::Stopped, _) => lines.push(format!("- stop service {}", service.name)),
        }
    }
    match (&before.firewall, &after.firewall) {
        (_, None) => {}
        (was, Some(now)) => {
            let old_rules = was.as_ref().map(|f| f.rules.as_slice()).unwrap_or_default();
            for rule in &now.rules {
                match old_rules.iter().find(|r| r.name == rule.name) {
                    Some(old) if old == rule => {}
                    Some(old) => lines.push(format!(
                        "~ rule {} -> {}",
                        describe_rule(old),
                        describe_rule(rule).split_once(": ").map_or("", |(_, r)| r)
                    )),
                    None => lines.push(format!("+ rule {}", describe_rule(rule))),
                }
            }
            for rule in old_rules {
                if !now.rules.iter().any(|r| r.name == rule.name) {
                    lines.push(format!("- rule {}", rule.name));
                }
            }
            let old_policy = was.as_ref().map(|f| f.policy);
            if old_policy != Some(now.policy)
                && (was.is_some() || now.policy != FirewallPolicy::Accept)
            {
                lines.push(format!(
                    "~ firewall policy {}",
                    match now.policy {
                        FirewallPolicy::Accept => "accept",
                        FirewallPolicy::Drop => "drop",
                    }
                ));
            }
        }
    }
    for file in &after.files {
        let was = before.files.iter().find(|f| f.path == file.path);
        match (&file.content, was.map(|f| &f.content)) {
            (Some(_), Some(Some(_))) if was == Some(file) => {}
            (Some(_), Some(Some(_))) => lines.push(format!("~ file {}", file.path.display())),
            (Some(_), _) => lines.push(format!("+ file {}", file.path.display())),
            (None, Some(None)) => {}
            (None, _) => lines.push(format!("- file {}", file.path.display())),
        }
    }
    let jobs: BTreeSet<&str> = after.sync_jobs.iter().map(|j| j.name.as_str()).collect();
    for job in &after.sync_jobs {
        let every = job
            .every
            .map(|e| format!(", every {e}"))
            .unwrap_or_else(|| ", on demand".into());
        match before.sync_jobs.iter().find(|j| j.name == job.name) {
            Some(was) if was == job => {}
            Some(was) if was.every.is_some() && job.every.is_none() => {
                lines.push(format!(
                    "~ sync job {}: schedule ended (on demand only)",
                    job.name
                ));
            }
            Some(_) => lines.push(format!("~ sync job {}{every}", job.name)),
            None => lines.push(format!(
                "+ sync job {} from {}{every}",
                job.name,
                source(&job.source)
            )),
        }
    }
    for job in &before.sync_jobs {
        if !jobs.contains(job.name.as_str()) {
            lines.push(format!("- sync job {}", job.name));
        }
    }
    for task in &after.tasks {
        if !before.tasks.iter().any(|t| t.name == task.name) {
            lines.push(format!("+ task {} (runs once)", task.name));
        }
    }
    lines
}

/// `smtp: tcp 25,465 from 198.51.100.0/24 accept`.
fn describe_rule(rule: &FirewallRule) -> String {
    let ports: Vec<String> = rule.ports.iter().map(u16::to_string).collect();
    let protocol = match rule.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let action = match rule.action {
        RuleAction::Accept => "accept",
        RuleAction::Drop => "drop",
        RuleAction::Reject => "reject",
    };
    let sources = if rule.sources.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = rule.sources.iter().map(ToString::to_string).collect();
        format!(" from {}", list.join(","))
    };
    format!(
        "{}: {protocol} {}{sources} {action}",
        rule.name,
        ports.join(",")
    )
}

/// `200 GiB`, `1.5 MiB`, `512 bytes`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!("{} {}", text.trim_end_matches(".0"), UNITS[unit])
}

/// One gate, as the runbook and status name it.
pub fn describe_gate(gate: &Gate) -> String {
    let timeout = gate
        .timeout
        .map(|t| format!(" (timeout {t})"))
        .unwrap_or_default();
    let check = match &gate.check {
        GateCheck::Smtp(p) | GateCheck::Imap(p) | GateCheck::Pop3(p) => {
            let kind = match &gate.check {
                GateCheck::Smtp(_) => "smtp",
                GateCheck::Imap(_) => "imap",
                _ => "pop3",
            };
            let mut text = format!("{kind} {}", std::net::SocketAddr::new(p.address, p.port));
            if let Some(banner) = &p.banner {
                text.push_str(&format!(", banner /{banner}/"));
            }
            if p.starttls {
                text.push_str(", STARTTLS");
            }
            if p.tls {
                text.push_str(", TLS");
            }
            if let Some(days) = p.cert_days {
                text.push_str(&format!(", certificate valid {days}+ days"));
            }
            text
        }
        GateCheck::Delivery(d) => format!(
            "test message to {} via {}, found in {}:{}",
            d.to,
            d.server,
            d.host,
            d.maildir.display()
        ),
        GateCheck::QueueEmpty { host, mta } => {
            let mta = match mta {
                Mta::Postfix => "postfix",
                Mta::Exim => "exim",
            };
            format!("mail queue empty on {host} ({mta})")
        }
        GateCheck::DiskFree { host, path, bytes } => {
            format!("{} free on {host}:{}", bytes_text(*bytes), path.display())
        }
        GateCheck::SyncComplete(s) => {
            format!("sync job {} on {} complete and verified", s.job, s.host)
        }
        GateCheck::Command { host, run } => format!("command on {host}: {}", run.join(" ")),
        GateCheck::Soak { duration } => format!("soak {duration} (the other gates keep passing)"),
        GateCheck::Approval => "approval (mailctl approve)".to_owned(),
    };
    format!("{}: {check}{timeout}", gate.name)
}
