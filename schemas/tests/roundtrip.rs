//! Round trip: every validated manifest set survives `render::to_yaml` ->
//! `validate()` unchanged (origins aside).
//!
//! The property tests generate valid raw manifests — a Migration with its
//! hosts and Phase documents, plus standalone Host documents — full of strings
//! that trip YAML emitters (`true`, `123`, `null`, `~`, quotes, `: `, `#`,
//! leading spaces, line breaks, unicode). The input text is written as JSON
//! (a subset of YAML), so it does not share the emitter under test.
//!
//! The plain tests replay the fuzz seeds and every input the fuzzer found.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailctl_schemas::model::ManifestSet;
use mailctl_schemas::raw::{self, API_VERSION};
use mailctl_schemas::{ContentReader, Origin, Position, Source, render, validate};
use proptest::prelude::*;
use proptest::sample::{Index, select};

// ---------------------------------------------------------------------------
// Round-trip check shared by the property and regression tests.

/// `source:` fields never resolve here: generated files carry inline content.
struct NoFiles;

impl ContentReader for NoFiles {
    fn read(&self, _manifest: &Path, _source: &str) -> Result<String, String> {
        Err("no file access in this test".into())
    }
}

fn load(name: &str, text: &str) -> Result<ManifestSet, String> {
    let source = Source {
        path: PathBuf::from(name),
        text: text.to_owned(),
    };
    validate(&[source], &NoFiles).map_err(|diags| {
        diags
            .into_iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The set with every origin replaced by the same value.
fn without_origins(set: &ManifestSet) -> ManifestSet {
    let nowhere = Origin {
        file: Arc::from(Path::new("")),
        position: Position::default(),
    };
    let mut set = set.clone();
    for host in &mut set.hosts {
        host.origin = nowhere.clone();
    }
    for migration in &mut set.migrations {
        migration.origin = nowhere.clone();
    }
    for phase in &mut set.phases {
        phase.origin = nowhere.clone();
    }
    set
}

/// Validate `text`, render the model, validate the rendering: both loads must
/// succeed and give the same model; rendering again gives the same text.
fn check_round_trip(text: &str) -> Result<(), String> {
    let first = load("input.yaml", text).map_err(|e| format!("input does not validate:\n{e}"))?;
    check_render_round_trip(&first)
}

/// Render a validated set and validate the rendering: same model, stable text.
fn check_render_round_trip(first: &ManifestSet) -> Result<(), String> {
    let rendered = render::to_yaml(first);
    let second = load("rendered.yaml", &rendered).map_err(|e| {
        format!("rendered manifests do not validate:\n{e}\n--- rendered ---\n{rendered}")
    })?;
    let (a, b) = (without_origins(first), without_origins(&second));
    if a.hosts != b.hosts {
        return Err(format!(
            "hosts changed\n left: {:?}\nright: {:?}\n--- rendered ---\n{rendered}",
            a.hosts, b.hosts
        ));
    }
    if a.migrations != b.migrations {
        return Err(format!(
            "migrations changed\n left: {:?}\nright: {:?}\n--- rendered ---\n{rendered}",
            a.migrations, b.migrations
        ));
    }
    if a.phases != b.phases {
        return Err(format!(
            "phases changed\n left: {:?}\nright: {:?}\n--- rendered ---\n{rendered}",
            a.phases, b.phases
        ));
    }
    let again = render::to_yaml(&second);
    if again != rendered {
        return Err(format!(
            "rendering is not stable\n--- first ---\n{rendered}\n--- second ---\n{again}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strings.

/// Fragments that YAML emitters get wrong when they forget to quote.
const PIECES: &[&str] = &[
    "true",
    "false",
    "True",
    "null",
    "Null",
    "NULL",
    "~",
    "123",
    "-1",
    "+1",
    "0644",
    "0x1F",
    "0o17",
    "1e3",
    "1.5",
    ".5",
    ".inf",
    "-.inf",
    ".nan",
    "nan",
    "inf",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "2014-12-31",
    "12:30",
    "a: b",
    ": ",
    ":",
    " #",
    "#",
    "# c",
    "'",
    "\"",
    "\\",
    "\\n",
    "--- ",
    "---",
    "...",
    "- ",
    "-",
    "? ",
    "?",
    "|",
    "|-",
    ">",
    "&a",
    "*a",
    "!!str",
    "!tag",
    "%YAML",
    "@",
    "`",
    "{",
    "}",
    "[",
    "]",
    ",",
    "{}",
    "[]",
    "=",
    "<",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "ü",
    "grüße",
    "日本語",
    "✉",
    "😀",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "\u{7f}",
    "\u{1}",
    "\u{0}",
    "\u{1b}",
    "word",
    "x",
    "postfix",
    "/",
    ".",
];

/// Text built from tricky fragments and plain words.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(PIECES).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9 ]{1,10}",
    ];
    prop_oneof![
        8 => prop::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
}

/// Text without `forbidden` characters, never empty.
fn text_without(forbidden: &'static [char], fallback: &'static str) -> BoxedStrategy<String> {
    text()
        .prop_map(move |t| {
            let t: String = t.chars().filter(|c| !forbidden.contains(c)).collect();
            if t.is_empty() { fallback.to_owned() } else { t }
        })
        .boxed()
}

/// Strings that must stay strings although they read like other scalars.
const SCALAR_LOOKALIKES: &[&str] = &[
    "true", "false", "null", "yes", "no", "on", "off", "y", "n", "inf", "nan", "infinity", "e1",
];

/// Names of hosts, migrations and phases (`[a-z][a-z0-9-]*`).
fn object_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(SCALAR_LOOKALIKES).prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,12}",
    ]
}

/// Names of services, rules, jobs, tasks and gates.
fn item_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(SCALAR_LOOKALIKES).prop_map(str::to_owned),
        select(
            &[
                "123",
                "1e3",
                "0x1F",
                "0o17",
                "1.5",
                "1_000",
                "12e7",
                "0644",
                "2014-12-31",
                "a@b",
                "x.service",
                "postfix",
                "dovecot",
                "exim4",
            ][..]
        )
        .prop_map(str::to_owned),
        "[A-Za-z0-9][A-Za-z0-9._@-]{0,16}",
    ]
}

/// Names unique within their list, keeping the first of each.
fn unique_by<T>(items: Vec<T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(key(i))).collect()
}

/// An absolute path without `.`/`..` components; its names may hold anything else.
fn absolute_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        2 => "[a-z0-9_.-]{1,8}",
        1 => text_without(&['/', '\0'], "x"),
    ]
    .prop_map(|s| {
        if s == "." || s == ".." {
            "x".to_owned()
        } else {
            s
        }
    });
    (prop::collection::vec(segment, 1..4), any::<bool>()).prop_map(|(segments, slash)| {
        let mut path = format!("/{}", segments.join("/"));
        if slash {
            path.push('/');
        }
        path
    })
}

/// An argv: a non-empty program, then any arguments.
fn argv() -> impl Strategy<Value = Vec<String>> {
    (
        prop_oneof!["[a-z/]{1,12}", text_without(&[], "true"),],
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(program, args)| {
            let mut argv = vec![program];
            argv.extend(args);
            argv
        })
}

/// `15m`, `1h30m`, `90s`... (`nonzero` for intervals).
fn duration(nonzero: bool) -> impl Strategy<Value = String> {
    prop::collection::vec((0u32..500, select(&["s", "m", "h", "d"][..])), 1..3).prop_map(
        move |mut parts| {
            if nonzero && parts.iter().all(|(n, _)| *n == 0) {
                parts[0].0 = 1;
            }
            parts.iter().map(|(n, unit)| format!("{n}{unit}")).collect()
        },
    )
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<std::net::Ipv4Addr>(), 0u8..=32).prop_map(|(a, p)| format!("{a}/{p}")),
        (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(a, p)| format!("{a}/{p}")),
    ]
}

fn ip() -> impl Strategy<Value = String> {
    any::<std::net::IpAddr>().prop_map(|a| a.to_string())
}

/// A mail address the validator accepts (LOCAL@DOMAIN, no spaces or brackets).
fn mail_address() -> impl Strategy<Value = String> {
    (
        text_without(&[' ', '<', '>', '\n'], "postmaster"),
        text_without(&[' ', '<', '>', '\n', '@'], "example.org"),
    )
        .prop_map(|(local, domain)| format!("{local}@{domain}"))
}

fn regex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "eve\\.example\\.org",
                "^220 ",
                "ESMTP",
                "(?i)dovecot ready",
                "^\\* OK [a-z]+: #x",
                "\\+OK",
            ][..]
        )
        .prop_map(str::to_owned),
        text().prop_map(|t| regex::escape(&t)),
    ]
}

// ---------------------------------------------------------------------------
// Host specs.

/// Cut a string to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

fn interface() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "eth0", "ens3", "br-mail", "wg0", "lo", "true", "123", "null", "~", "0644"
            ][..]
        )
        .prop_map(str::to_owned),
        text_without(&['/', ':', ' ', '\t', '\n', '\0'], "eth0").prop_map(|i| {
            let i = truncate(i, 15);
            if i.is_empty() || i == "." || i == ".." {
                "eth0".to_owned()
            } else {
                i
            }
        }),
    ]
}

fn presence() -> impl Strategy<Value = raw::Presence> {
    prop_oneof![Just(raw::Presence::Present), Just(raw::Presence::Absent)]
}

/// Addresses of host number `host`: the host number and the list position are
/// part of each IP, so no IP repeats within a host or across the hosts of a
/// phase (an exclusive service IP may live on one host only).
fn addresses(host: u8) -> impl Strategy<Value = Vec<raw::Address>> {
    let one = (
        any::<bool>(),
        any::<u16>(),
        interface(),
        prop::option::of(text()),
        presence(),
        any::<bool>(),
        any::<u8>(),
    );
    prop::collection::vec(one, 0..3).prop_map(move |items| {
        items
            .into_iter()
            .enumerate()
            .map(
                |(j, (v6, bits, interface, label, state, exclusive, prefix))| {
                    let j = u8::try_from(j).unwrap_or(u8::MAX);
                    let (address, label) = if v6 {
                        let ip = std::net::Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            u16::from(host),
                            u16::from(j),
                            0,
                            0,
                            0,
                            bits,
                        );
                        (format!("{ip}/{}", prefix % 129), None)
                    } else {
                        let [hi, lo] = bits.to_be_bytes();
                        let ip = std::net::Ipv4Addr::new(10 + host, j, hi, lo);
                        // A label starts with its interface name: `eth0:mail`.
                        let label = label.map(|l| truncate(format!("{interface}:{l}"), 15));
                        (format!("{ip}/{}", prefix % 33), label)
                    };
                    raw::Address {
                        address,
                        interface,
                        label,
                        state,
                        exclusive,
                    }
                },
            )
            .collect()
    })
}

/// A service as generated, before its name is made unique.
fn service() -> impl Strategy<Value = raw::Service> {
    let exec = (argv(), argv(), argv(), prop::option::of(argv())).prop_map(
        |(start, stop, status, reload)| raw::ExecCommands {
            start,
            stop,
            status,
            reload,
        },
    );
    let unit = text_without(&['/'], "x").prop_map(|u| {
        if u.contains('.') {
            u
        } else {
            format!("{u}.service")
        }
    });
    (
        item_name(),
        prop_oneof![
            Just(raw::ServiceState::Running),
            Just(raw::ServiceState::Stopped)
        ],
        prop::option::of(any::<bool>()),
        prop_oneof![
            Just(raw::ServiceDriver::Auto),
            Just(raw::ServiceDriver::Systemd),
            Just(raw::ServiceDriver::Exec)
        ],
        prop::option::of(unit),
        prop::option::of(exec),
    )
        .prop_map(|(name, state, enabled, driver, unit, exec)| {
            // The exec driver needs its commands; the others may carry them too.
            let exec = match (driver, exec) {
                (raw::ServiceDriver::Exec, None) => Some(raw::ExecCommands {
                    start: vec!["/usr/sbin/postfix".into(), "start".into()],
                    stop: vec!["/usr/sbin/postfix".into(), "stop".into()],
                    status: vec!["/usr/sbin/postfix".into(), "status".into()],
                    reload: None,
                }),
                (_, exec) => exec,
            };
            raw::Service {
                name,
                state,
                enabled,
                driver,
                unit,
                exec,
                reload_on: Vec::new(),
            }
        })
}

fn firewall() -> impl Strategy<Value = raw::Firewall> {
    let rule = (
        item_name(),
        prop_oneof![Just(raw::Protocol::Tcp), Just(raw::Protocol::Udp)],
        prop::collection::vec(1i64..=65535, 1..4),
        prop::collection::vec(cidr(), 0..3),
        prop_oneof![
            Just(raw::RuleAction::Accept),
            Just(raw::RuleAction::Drop),
            Just(raw::RuleAction::Reject)
        ],
    )
        .prop_map(
            |(name, protocol, ports, sources, action)| raw::FirewallRule {
                name,
                protocol,
                ports,
                sources,
                action,
            },
        );
    (
        prop::option::of(prop_oneof![
            select(&["mailctl", "true", "null", "no", "inf", "nan", "y"][..])
                .prop_map(str::to_owned),
            "[A-Za-z][A-Za-z0-9_-]{0,20}",
        ]),
        prop_oneof![
            Just(raw::FirewallPolicy::Accept),
            Just(raw::FirewallPolicy::Drop)
        ],
        any::<bool>(),
        prop::collection::vec(rule, 0..4),
    )
        .prop_map(|(table, policy, allow_lockout, mut rules)| {
            if !allow_lockout {
                // Valid: SSH and the agent port stay open (validate refuses
                // a rule set that closes them to every source).
                rules.insert(
                    0,
                    raw::FirewallRule {
                        name: "admin".into(),
                        protocol: raw::Protocol::Tcp,
                        ports: vec![22, 7443],
                        sources: Vec::new(),
                        action: raw::RuleAction::Accept,
                    },
                );
            }
            raw::Firewall {
                table,
                policy,
                allow_lockout,
                rules: unique_by(rules, |r| r.name.clone()),
            }
        })
}

/// A handler as generated: services are picked by index once they are known.
#[derive(Debug, Clone)]
enum HandlerGen {
    Run(Vec<String>),
    Reload(Index),
    Restart(Index),
}

/// A file as generated, with its handlers and whether services reload on it.
#[derive(Debug, Clone)]
struct FileGen {
    file: raw::File,
    handlers: Vec<HandlerGen>,
    reloaded_by: Vec<Index>,
}

fn file() -> impl Strategy<Value = FileGen> {
    let handler = prop_oneof![
        argv().prop_map(HandlerGen::Run),
        any::<Index>().prop_map(HandlerGen::Reload),
        any::<Index>().prop_map(HandlerGen::Restart),
    ];
    let owner = || {
        prop::option::of(prop_oneof![
            select(
                &[
                    "root", "postfix", "true", "123", "null", "~", "0644", "#x", "ü"
                ][..]
            )
            .prop_map(str::to_owned),
            text_without(&[':', '/', ' ', '\n'], "root"),
        ])
    };
    (
        absolute_path(),
        prop_oneof![4 => text().prop_map(Some), 1 => Just(None)],
        prop::option::of(prop_oneof!["[0-7]{3}", "[0-7]{4}"]),
        owner(),
        owner(),
        prop::collection::vec(handler, 0..3),
        prop::collection::vec(any::<Index>(), 0..2),
    )
        .prop_map(
            |(path, content, mode, owner, group, handlers, reloaded_by)| FileGen {
                file: raw::File {
                    path,
                    state: if content.is_some() {
                        raw::Presence::Present
                    } else {
                        raw::Presence::Absent
                    },
                    content,
                    source: None,
                    mode,
                    owner,
                    group,
                    on_change: Vec::new(),
                },
                handlers,
                reloaded_by,
            },
        )
}

fn sync_job() -> impl Strategy<Value = raw::SyncJob> {
    let source = prop_oneof![
        absolute_path(),
        (
            prop_oneof![
                select(
                    &[
                        "bob",
                        "eve",
                        "192.0.2.11",
                        "true",
                        "null",
                        "123",
                        "root@bob",
                        "[2001:db8::1]",
                        "vmail@[2001:db8::1]"
                    ][..]
                )
                .prop_map(str::to_owned),
                "[a-z0-9_]([a-z0-9_-]{0,8}[a-z0-9_])?(\\.[a-z0-9]{1,6}){0,2}",
            ],
            absolute_path()
        )
            .prop_map(|(host, path)| format!("{host}:{path}")),
    ];
    (
        item_name(),
        source,
        absolute_path(),
        prop::option::of(duration(true)),
        0u8..3,
        any::<bool>(),
        (
            prop::option::of(absolute_path()),
            prop::option::of(Just(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK49zgSNkpP/sQTXE03lxHCDBkFtYZibcq8H0TvFlRmt"
                    .to_owned(),
            )),
        ),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(
                name,
                source,
                destination,
                every,
                format,
                delete,
                (ssh_key, ssh_host_key),
                include,
                exclude,
            )| {
                raw::SyncJob {
                    name,
                    destination,
                    every,
                    maildir: format == 1,
                    mbox: format == 2,
                    delete,
                    // A pinned key only for a remote source.
                    ssh_host_key: ssh_host_key.filter(|_| !source.starts_with('/')),
                    source,
                    ssh_key,
                    include,
                    exclude,
                }
            },
        )
}

fn task() -> impl Strategy<Value = raw::Task> {
    (item_name(), argv(), prop::option::of(absolute_path()))
        .prop_map(|(name, run, creates)| raw::Task { name, run, creates })
}

/// A valid host spec for host number `host`.
fn host_spec(host: u8) -> impl Strategy<Value = raw::HostSpec> {
    (
        addresses(host),
        prop::collection::vec(service(), 0..4),
        prop::option::of(firewall()),
        prop::collection::vec(file(), 0..4),
        prop::collection::vec(sync_job(), 0..3),
        prop::collection::vec(task(), 0..3),
    )
        .prop_map(|(addresses, services, firewall, files, sync_jobs, tasks)| {
            let mut services = unique_by(services, |s| s.name.clone());
            let files = unique_by(files, |f| f.file.path.clone());
            let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
            let mut raw_files = Vec::new();
            for f in files {
                let mut file = f.file;
                file.on_change = f
                    .handlers
                    .into_iter()
                    .map(|h| match h {
                        HandlerGen::Reload(i) if !names.is_empty() => raw::Handler {
                            run: None,
                            reload: Some(names[i.index(names.len())].clone()),
                            restart: None,
                        },
                        HandlerGen::Restart(i) if !names.is_empty() => raw::Handler {
                            run: None,
                            reload: None,
                            restart: Some(names[i.index(names.len())].clone()),
                        },
                        HandlerGen::Run(argv) => raw::Handler {
                            run: Some(argv),
                            reload: None,
                            restart: None,
                        },
                        HandlerGen::Reload(_) | HandlerGen::Restart(_) => raw::Handler {
                            run: Some(vec!["true".into()]),
                            reload: None,
                            restart: None,
                        },
                    })
                    .collect();
                // reloadOn may only name files that are managed (present).
                if file.state == raw::Presence::Present && !services.is_empty() {
                    for i in f.reloaded_by {
                        let n = services.len();
                        services[i.index(n)].reload_on.push(file.path.clone());
                    }
                }
                raw_files.push(file);
            }
            raw::HostSpec {
                addresses,
                services,
                firewall,
                files: raw_files,
                sync_jobs: unique_by(sync_jobs, |j| j.name.clone()),
                tasks: unique_by(tasks, |t| t.name.clone()),
            }
        })
}

// ---------------------------------------------------------------------------
// Gates.

/// A gate as generated: hosts and sync jobs are picked by index once the
/// phase's hosts are known.
#[derive(Debug, Clone)]
struct GateGen {
    gate: raw::Gate,
    host: Index,
}

fn probe() -> impl Strategy<Value = raw::ProbeGate> {
    (
        ip(),
        1i64..=65535,
        prop::option::of(regex_text()),
        0u8..3,
        prop::option::of(0i64..=i64::from(u32::MAX)),
    )
        .prop_map(|(address, port, banner, tls, cert_days)| raw::ProbeGate {
            address,
            port,
            banner,
            starttls: tls == 1,
            tls: tls == 2,
            cert_days,
        })
}

fn gate() -> impl Strategy<Value = GateGen> {
    let server = prop_oneof![
        (any::<std::net::Ipv4Addr>(), 1u16..).prop_map(|(a, p)| format!("{a}:{p}")),
        (any::<std::net::Ipv6Addr>(), 1u16..).prop_map(|(a, p)| format!("[{a}]:{p}")),
    ];
    let kind = prop_oneof![
        probe().prop_map(|p| raw::Gate {
            smtp: Some(p),
            ..Default::default()
        }),
        probe().prop_map(|p| raw::Gate {
            imap: Some(p),
            ..Default::default()
        }),
        probe().prop_map(|p| raw::Gate {
            pop3: Some(p),
            ..Default::default()
        }),
        (
            server,
            mail_address(),
            prop::option::of(mail_address()),
            absolute_path()
        )
            .prop_map(|(server, to, from, maildir)| raw::Gate {
                delivery: Some(raw::DeliveryGate {
                    server,
                    to,
                    from,
                    host: String::new(),
                    maildir,
                }),
                ..Default::default()
            }),
        prop_oneof![Just(raw::Mta::Postfix), Just(raw::Mta::Exim)].prop_map(|mta| raw::Gate {
            queue_empty: Some(raw::QueueEmptyGate {
                host: String::new(),
                mta,
            }),
            ..Default::default()
        }),
        (absolute_path(), 0i64..=i64::MAX).prop_map(|(path, bytes)| raw::Gate {
            disk_free: Some(raw::DiskFreeGate {
                host: String::new(),
                path,
                bytes,
            }),
            ..Default::default()
        }),
        Just(raw::Gate {
            sync_complete: Some(raw::SyncRef {
                host: String::new(),
                job: String::new(),
            }),
            ..Default::default()
        }),
        argv().prop_map(|run| raw::Gate {
            command: Some(raw::CommandGate {
                host: String::new(),
                run,
            }),
            ..Default::default()
        }),
        duration(false).prop_map(|duration| raw::Gate {
            soak: Some(raw::SoakGate { duration }),
            ..Default::default()
        }),
        Just(raw::Gate {
            approval: Some(raw::ApprovalGate {}),
            ..Default::default()
        }),
    ];
    (
        item_name(),
        prop::option::of(duration(false)),
        kind,
        any::<Index>(),
    )
        .prop_map(|(name, timeout, mut gate, host)| {
            gate.name = name;
            gate.timeout = timeout;
            GateGen { gate, host }
        })
}

/// Point the gate's host and job references at what the phase declares.
fn resolve_gate(g: GateGen, hosts: &[String], jobs: &[(String, String)]) -> raw::Gate {
    let mut gate = g.gate;
    let host = hosts[g.host.index(hosts.len())].clone();
    if let Some(d) = &mut gate.delivery {
        d.host = host.clone();
    }
    if let Some(q) = &mut gate.queue_empty {
        q.host = host.clone();
    }
    if let Some(d) = &mut gate.disk_free {
        d.host = host.clone();
    }
    if let Some(c) = &mut gate.command {
        c.host = host;
    }
    if gate.sync_complete.is_some() {
        if jobs.is_empty() {
            // No sync job in this phase to wait for.
            gate.sync_complete = None;
            gate.approval = Some(raw::ApprovalGate {});
        } else {
            let (host, job) = jobs[g.host.index(jobs.len())].clone();
            gate.sync_complete = Some(raw::SyncRef { host, job });
        }
    }
    gate
}

// ---------------------------------------------------------------------------
// Whole manifest sets.

/// A phase as generated: which migration hosts it declares (the first always),
/// their specs, final syncs and gates.
#[derive(Debug, Clone)]
struct PhaseGen {
    hosts: Vec<(bool, raw::HostSpec)>,
    final_syncs: Vec<Index>,
    gates: Vec<GateGen>,
}

fn phase(host_count: usize) -> impl Strategy<Value = PhaseGen> {
    let specs: Vec<_> = (0..host_count)
        .map(|i| (any::<bool>(), host_spec(u8::try_from(i).unwrap_or(0))))
        .collect();
    (
        specs,
        prop::collection::vec(any::<Index>(), 0..3),
        prop::collection::vec(gate(), 0..6),
    )
        .prop_map(|(hosts, final_syncs, gates)| PhaseGen {
            hosts,
            final_syncs,
            gates,
        })
}

fn agent_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            select(
                &[
                    "192.0.2.11",
                    "[2001:db8::11]",
                    "eve.example.org",
                    "true",
                    "null",
                    "123"
                ][..]
            )
            .prop_map(str::to_owned),
            text_without(&['/'], "bob"),
        ],
        1u16..,
        any::<bool>(),
    )
        .prop_map(|(host, port, slash)| {
            format!("https://{host}:{port}{}", if slash { "/" } else { "" })
        })
}

/// The generated documents, in file order.
#[derive(Debug, Clone)]
enum Document {
    Migration(raw::MigrationDocument),
    Phase(raw::PhaseDocument),
    Host(raw::HostDocument),
}

impl Document {
    fn json(&self, pretty: bool) -> String {
        let value = match self {
            Document::Migration(d) => serde_json::to_value(d),
            Document::Phase(d) => serde_json::to_value(d),
            Document::Host(d) => serde_json::to_value(d),
        }
        .expect("raw documents serialize");
        if pretty {
            serde_json::to_string_pretty(&value).expect("JSON text")
        } else {
            value.to_string()
        }
    }
}

fn migration_set() -> impl Strategy<Value = Vec<Document>> {
    let head = (
        object_name(),
        prop::collection::vec((object_name(), agent_url()), 2..4),
        prop::collection::vec(object_name(), 1..4),
    )
        .prop_map(|(name, hosts, phases)| {
            let hosts = unique_by(hosts, |(n, _)| n.clone());
            let phases = unique_by(phases, Clone::clone);
            (name, hosts, phases)
        });
    head.prop_flat_map(|(name, hosts, phases)| {
        let n = phases.len();
        (
            Just(name),
            Just(hosts.clone()),
            Just(phases),
            prop::collection::vec(phase(hosts.len()), n..=n),
            any::<Index>(),
            prop::option::of(any::<Index>()),
            prop_oneof![
                Just(raw::GateFailurePolicy::Pause),
                Just(raw::GateFailurePolicy::Rollback)
            ],
        )
    })
    .prop_map(
        |(name, hosts, phases, bodies, target, pnr, on_gate_failure)| {
            let pnr = pnr.map(|i| i.index(phases.len()));
            let mut docs = vec![Document::Migration(raw::MigrationDocument {
                api_version: API_VERSION.into(),
                kind: "Migration".into(),
                metadata: raw::Metadata { name: name.clone() },
                spec: raw::MigrationSpec {
                    hosts: hosts
                        .iter()
                        .map(|(h, agent)| {
                            (
                                h.clone(),
                                raw::MigrationHost {
                                    agent: agent.clone(),
                                },
                            )
                        })
                        .collect(),
                    phases: phases.clone(),
                    target_phase: phases[target.index(phases.len())].clone(),
                    point_of_no_return: pnr.map(|i| phases[i].clone()),
                    on_gate_failure,
                },
            })];
            for (index, (phase_name, body)) in phases.iter().zip(bodies).enumerate() {
                let mut specs = Vec::new();
                for (i, (included, mut spec)) in body.hosts.into_iter().enumerate() {
                    if i > 0 && !included {
                        continue;
                    }
                    if pnr.is_some_and(|p| index >= p) {
                        // A deleting sync into a host that takes mail is refused
                        // from the point of no return on.
                        for job in &mut spec.sync_jobs {
                            job.delete = false;
                        }
                    }
                    specs.push((hosts[i].0.clone(), spec));
                }
                let host_names: Vec<String> = specs.iter().map(|(h, _)| h.clone()).collect();
                let jobs: Vec<(String, String)> = specs
                    .iter()
                    .flat_map(|(h, s)| s.sync_jobs.iter().map(|j| (h.clone(), j.name.clone())))
                    .collect();
                let final_syncs = if jobs.is_empty() {
                    Vec::new()
                } else {
                    body.final_syncs
                        .iter()
                        .map(|i| {
                            let (host, job) = jobs[i.index(jobs.len())].clone();
                            raw::SyncRef { host, job }
                        })
                        .collect()
                };
                let gates = unique_by(body.gates, |g| g.gate.name.clone())
                    .into_iter()
                    .map(|g| resolve_gate(g, &host_names, &jobs))
                    .collect();
                docs.push(Document::Phase(raw::PhaseDocument {
                    api_version: API_VERSION.into(),
                    kind: "Phase".into(),
                    metadata: raw::PhaseMetadata {
                        name: phase_name.clone(),
                        migration: name.clone(),
                    },
                    spec: raw::PhaseSpec {
                        hosts: specs.into_iter().collect(),
                        final_syncs,
                        gates,
                    },
                }));
            }
            docs
        },
    )
}

fn host_documents(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Document>> {
    prop::collection::vec((object_name(), host_spec(200)), count).prop_map(|hosts| {
        unique_by(hosts, |(n, _)| n.clone())
            .into_iter()
            .map(|(name, spec)| {
                Document::Host(raw::HostDocument {
                    api_version: API_VERSION.into(),
                    kind: "Host".into(),
                    metadata: raw::Metadata { name },
                    spec,
                })
            })
            .collect()
    })
}

/// A whole manifest file: the migration's documents and standalone hosts, in
/// any order, as JSON documents (compact or pretty) separated by `---`.
fn manifest_file() -> impl Strategy<Value = String> {
    (migration_set(), host_documents(0..3))
        .prop_flat_map(|(mut docs, hosts)| {
            docs.extend(hosts);
            let n = docs.len();
            (
                Just(docs).prop_shuffle(),
                prop::collection::vec(any::<bool>(), n..=n),
            )
        })
        .prop_map(|(docs, pretty)| {
            docs.iter()
                .zip(pretty)
                .map(|(d, p)| format!("---\n{}\n", d.json(p)))
                .collect()
        })
}

/// 64 cases per property (about 10 s in a debug build); `PROPTEST_CASES=N`
/// searches longer.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    /// Migration + Phases + Hosts: validate -> render -> validate is the identity.
    #[test]
    fn validated_manifests_survive_a_render_round_trip(text in manifest_file()) {
        if let Err(e) = check_round_trip(&text) {
            return Err(TestCaseError::fail(format!("{e}\n--- input ---\n{text}")));
        }
    }

    /// Standalone Host documents alone, with more cases (they are cheap).
    #[test]
    fn host_documents_survive_a_render_round_trip(docs in host_documents(1..4)) {
        let text: String = docs.iter().map(|d| format!("---\n{}\n", d.json(true))).collect();
        if let Err(e) = check_round_trip(&text) {
            return Err(TestCaseError::fail(format!("{e}\n--- input ---\n{text}")));
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed inputs: the fuzz seeds, and regressions found by fuzzing.

fn assert_round_trip(name: &str, text: &str) {
    if let Err(e) = check_round_trip(text) {
        panic!("{name}: {e}");
    }
}

#[test]
fn fuzz_seeds_round_trip() {
    for (name, text) in [
        ("host.yaml", include_str!("../../fuzz/seeds/host.yaml")),
        (
            "host-minimal.yaml",
            include_str!("../../fuzz/seeds/host-minimal.yaml"),
        ),
        (
            "migration.yaml",
            include_str!("../../fuzz/seeds/migration.yaml"),
        ),
        (
            "tricky-strings.yaml",
            include_str!("../../fuzz/seeds/tricky-strings.yaml"),
        ),
    ] {
        assert_round_trip(name, text);
    }
}

/// The example migrations (read from disk, `source:` files inlined by the
/// rendering) survive the round trip too.
#[test]
fn example_manifests_round_trip() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let entries = std::fs::read_dir(&examples).expect("manifests/examples exists");
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "the four examples are there");
    for dir in dirs {
        let set = mailctl_schemas::load::load_paths(&[&dir])
            .unwrap_or_else(|d| panic!("{} validates:\n{d}", dir.display()));
        if let Err(e) = check_render_round_trip(&set) {
            panic!("{}: {e}", dir.display());
        }
    }
}

/// Plain YAML scalars in argv lists are words as written (`0600` stays
/// `0600`, not 600), and the rendering quotes them so they stay words.
#[test]
fn argv_scalars_are_taken_as_written_and_survive_the_round_trip() {
    let text = "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  \
        services:\n    - name: demo\n      state: running\n      exec:\n        \
        start: [sleep, 5]\n        stop: [kill, -15, 1]\n        status: [test, true]\n        \
        reload: [kill, -1, 1.50]\n  \
        files:\n    - path: /etc/demo.conf\n      content: x\n      \
        onChange: [{run: [chmod, 0600, /etc/demo.conf]}]\n  \
        tasks:\n    - {name: addr, run: [ip, -4, addr, 1e3, 0x1F]}\n";
    let set = load("argv.yaml", text).expect("plain scalars are argv words");
    let spec = &set.hosts[0].spec;
    let exec = spec.services[0].exec.as_ref().expect("exec commands");
    assert_eq!(exec.start, ["sleep", "5"]);
    assert_eq!(exec.stop, ["kill", "-15", "1"]);
    assert_eq!(exec.status, ["test", "true"]);
    assert_eq!(
        exec.reload.as_deref(),
        Some(&["kill".to_owned(), "-1".into(), "1.50".into()][..])
    );
    assert_eq!(
        spec.files[0].on_change,
        [mailctl_schemas::model::Handler::Run(vec![
            "chmod".into(),
            "0600".into(),
            "/etc/demo.conf".into()
        ])]
    );
    assert_eq!(spec.tasks[0].run, ["ip", "-4", "addr", "1e3", "0x1F"]);
    assert_round_trip("argv.yaml", text);
    // An anchored number is its text; an alias of it is its value, never `*wait`.
    let aliased = "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  \
        tasks:\n    - {name: a, run: [sleep, &wait 05]}\n    - {name: b, run: [sleep, *wait]}\n";
    let set = load("alias.yaml", aliased).expect("aliases resolve");
    assert_eq!(set.hosts[0].spec.tasks[0].run, ["sleep", "05"]);
    assert_eq!(set.hosts[0].spec.tasks[1].run, ["sleep", "5"]);
}
