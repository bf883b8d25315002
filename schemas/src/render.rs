//! The validated model written back as manifest documents (`-o yaml`, and the
//! round-trip guarantee: render -> validate gives the same model).

use std::fmt::Write as _;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};
use serde::Serialize;
use serde_json::Value;

use crate::model;
use crate::raw::{self, API_VERSION};

fn strings(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

impl From<&model::HostSpec> for raw::HostSpec {
    fn from(spec: &model::HostSpec) -> Self {
        raw::HostSpec {
            addresses: spec
                .addresses
                .iter()
                .map(|a| raw::Address {
                    address: a.address.to_string(),
                    interface: a.interface.clone(),
                    label: a.label.clone(),
                    state: a.state,
                    exclusive: a.exclusive,
                })
                .collect(),
            services: spec
                .services
                .iter()
                .map(|s| raw::Service {
                    name: s.name.clone(),
                    state: s.state,
                    enabled: s.enabled,
                    driver: s.driver,
                    unit: Some(s.unit.clone()),
                    exec: s.exec.as_ref().map(|e| raw::ExecCommands {
                        start: e.start.clone(),
                        stop: e.stop.clone(),
                        status: e.status.clone(),
                        reload: e.reload.clone(),
                    }),
                    reload_on: strings(&s.reload_on),
                })
                .collect(),
            firewall: spec.firewall.as_ref().map(|f| raw::Firewall {
                table: Some(f.table.clone()),
                policy: f.policy,
                allow_lockout: f.allow_lockout,
                rules: f
                    .rules
                    .iter()
                    .map(|r| raw::FirewallRule {
                        name: r.name.clone(),
                        protocol: r.protocol,
                        ports: r.ports.iter().map(|p| i64::from(*p)).collect(),
                        sources: r.sources.iter().map(ToString::to_string).collect(),
                        action: r.action,
                    })
                    .collect(),
            }),
            files: spec
                .files
                .iter()
                .map(|f| raw::File {
                    path: f.path.display().to_string(),
                    content: f.content.clone(),
                    source: None,
                    mode: f.mode.map(|m| format!("{m:04o}")),
                    owner: f.owner.clone(),
                    group: f.group.clone(),
                    state: if f.content.is_some() {
                        raw::Presence::Present
                    } else {
                        raw::Presence::Absent
                    },
                    on_change: f
                        .on_change
                        .iter()
                        .map(|h| match h {
                            model::Handler::Run(argv) => raw::Handler {
                                run: Some(argv.clone()),
                                reload: None,
                                restart: None,
                            },
                            model::Handler::Reload(s) => raw::Handler {
                                run: None,
                                reload: Some(s.clone()),
                                restart: None,
                            },
                            model::Handler::Restart(s) => raw::Handler {
                                run: None,
                                reload: None,
                                restart: Some(s.clone()),
                            },
                        })
                        .collect(),
                })
                .collect(),
            sync_jobs: spec
                .sync_jobs
                .iter()
                .map(|j| raw::SyncJob {
                    name: j.name.clone(),
                    source: match &j.source {
                        model::SyncSource::Remote { host, path } => {
                            format!("{host}:{}", path.display())
                        }
                        model::SyncSource::Local(path) => path.display().to_string(),
                    },
                    destination: j.destination.display().to_string(),
                    every: j.every.map(|d| d.to_string()),
                    maildir: j.maildir,
                    mbox: j.mbox,
                    delete: j.delete,
                    ssh_key: j.ssh_key.as_ref().map(|k| k.display().to_string()),
                    ssh_host_key: j.ssh_host_key.as_ref().map(ToString::to_string),
                    include: j.include.clone(),
                    exclude: j.exclude.clone(),
                })
                .collect(),
            tasks: spec
                .tasks
                .iter()
                .map(|t| raw::Task {
                    name: t.name.clone(),
                    run: t.run.clone(),
                    creates: t.creates.as_ref().map(|c| c.display().to_string()),
                })
                .collect(),
        }
    }
}

impl From<&model::Host> for raw::HostDocument {
    fn from(host: &model::Host) -> Self {
        raw::HostDocument {
            api_version: API_VERSION.into(),
            kind: "Host".into(),
            metadata: raw::Metadata {
                name: host.name.clone(),
            },
            spec: (&host.spec).into(),
        }
    }
}

impl From<&model::Migration> for raw::MigrationDocument {
    fn from(m: &model::Migration) -> Self {
        raw::MigrationDocument {
            api_version: API_VERSION.into(),
            kind: "Migration".into(),
            metadata: raw::Metadata {
                name: m.name.clone(),
            },
            spec: raw::MigrationSpec {
                hosts: m
                    .hosts
                    .iter()
                    .map(|(n, h)| {
                        (
                            n.clone(),
                            raw::MigrationHost {
                                agent: h.agent.clone(),
                            },
                        )
                    })
                    .collect(),
                phases: m.phases.clone(),
                target_phase: m.target_phase.clone(),
                point_of_no_return: m.point_of_no_return.clone(),
                on_gate_failure: m.on_gate_failure,
            },
        }
    }
}

fn probe(p: &model::Probe) -> raw::ProbeGate {
    raw::ProbeGate {
        address: p.address.to_string(),
        port: i64::from(p.port),
        banner: p.banner.clone(),
        starttls: p.starttls,
        tls: p.tls,
        cert_days: p.cert_days.map(i64::from),
    }
}

fn sync_ref(s: &model::FinalSync) -> raw::SyncRef {
    raw::SyncRef {
        host: s.host.clone(),
        job: s.job.clone(),
    }
}

impl From<&model::Gate> for raw::Gate {
    fn from(g: &model::Gate) -> Self {
        let mut gate = raw::Gate {
            name: g.name.clone(),
            timeout: g.timeout.map(|t| t.to_string()),
            ..raw::Gate::default()
        };
        match &g.check {
            model::GateCheck::Smtp(p) => gate.smtp = Some(probe(p)),
            model::GateCheck::Imap(p) => gate.imap = Some(probe(p)),
            model::GateCheck::Pop3(p) => gate.pop3 = Some(probe(p)),
            model::GateCheck::Delivery(d) => {
                gate.delivery = Some(raw::DeliveryGate {
                    server: d.server.to_string(),
                    to: d.to.clone(),
                    from: d.from.clone(),
                    host: d.host.clone(),
                    maildir: d.maildir.display().to_string(),
                })
            }
            model::GateCheck::QueueEmpty { host, mta } => {
                gate.queue_empty = Some(raw::QueueEmptyGate {
                    host: host.clone(),
                    mta: *mta,
                })
            }
            model::GateCheck::DiskFree { host, path, bytes } => {
                gate.disk_free = Some(raw::DiskFreeGate {
                    host: host.clone(),
                    path: path.display().to_string(),
                    bytes: i64::try_from(*bytes).unwrap_or(i64::MAX),
                })
            }
            model::GateCheck::SyncComplete(s) => gate.sync_complete = Some(sync_ref(s)),
            model::GateCheck::Command { host, run } => {
                gate.command = Some(raw::CommandGate {
                    host: host.clone(),
                    run: run.clone(),
                })
            }
            model::GateCheck::Soak { duration } => {
                gate.soak = Some(raw::SoakGate {
                    duration: duration.to_string(),
                })
            }
            model::GateCheck::Approval => gate.approval = Some(raw::ApprovalGate {}),
        }
        gate
    }
}

impl From<&model::Phase> for raw::PhaseDocument {
    fn from(p: &model::Phase) -> Self {
        raw::PhaseDocument {
            api_version: API_VERSION.into(),
            kind: "Phase".into(),
            metadata: raw::PhaseMetadata {
                name: p.name.clone(),
                migration: p.migration.clone(),
            },
            spec: raw::PhaseSpec {
                hosts: p.hosts.iter().map(|(n, s)| (n.clone(), s.into())).collect(),
                final_syncs: p.final_syncs.iter().map(sync_ref).collect(),
                gates: p.gates.iter().map(Into::into).collect(),
            },
        }
    }
}

/// Every document of a set as a JSON value: migrations, then phases, then hosts.
pub fn to_documents(set: &model::ManifestSet) -> Vec<Value> {
    let migrations = set
        .migrations
        .iter()
        .map(|m| json(&raw::MigrationDocument::from(m)));
    let phases = set
        .phases
        .iter()
        .map(|p| json(&raw::PhaseDocument::from(p)));
    let hosts = set.hosts.iter().map(|h| json(&raw::HostDocument::from(h)));
    migrations.chain(phases).chain(hosts).collect()
}

/// Every document of a set, as YAML documents separated by `---`.
pub fn to_yaml(set: &model::ManifestSet) -> String {
    let mut out = String::new();
    for value in &to_documents(set) {
        let mut doc = String::new();
        let mut emitter = YamlEmitter::new(&mut doc);
        emitter.multiline(true);
        // Writing to a String cannot fail.
        let _ = emitter.dump(&yaml(value));
        let _ = writeln!(out, "{doc}");
    }
    out
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn yaml(value: &Value) -> Yaml<'static> {
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Value(Scalar::Integer(i)),
            None => Yaml::Value(Scalar::FloatingPoint(n.as_f64().unwrap_or_default().into())),
        },
        Value::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        Value::Array(items) => Yaml::Sequence(items.iter().map(yaml).collect()),
        Value::Object(map) => {
            let mut mapping = Mapping::new();
            for (k, v) in map {
                mapping.insert(Yaml::Value(Scalar::String(k.clone().into())), yaml(v));
            }
            Yaml::Mapping(mapping)
        }
    }
}
