//! The validated model: what the agent and controller work on.
//!
//! Every value here has passed validation: addresses are parsed, paths are
//! absolute, durations are durations, cross references resolve. Code that
//! receives these types never re-checks them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use crate::diag::Origin;
pub use crate::duration::ManifestDuration;
pub use crate::raw::{
    FirewallPolicy, GateFailurePolicy, Mta, Presence, Protocol, RuleAction, ServiceDriver,
    ServiceState,
};

/// Everything loaded from a set of manifest files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestSet {
    pub hosts: Vec<Host>,
    pub migrations: Vec<Migration>,
    pub phases: Vec<Phase>,
    /// What looks wrong without making the set invalid (a sync source
    /// `HOST:` that is not a host of the migration): shown, never fatal.
    pub warnings: Vec<crate::diag::Diagnostic>,
}

impl ManifestSet {
    /// The phases of a migration in the order its `spec.phases` lists them.
    pub fn phases_of<'a>(&'a self, migration: &'a Migration) -> impl Iterator<Item = &'a Phase> {
        migration.phases.iter().filter_map(move |name| {
            self.phases
                .iter()
                .find(|p| p.migration == migration.name && &p.name == name)
        })
    }
}

/// A `kind: Host` document.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub spec: HostSpec,
    pub origin: Origin,
}

/// Desired state of one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSpec {
    pub addresses: Vec<ServiceAddress>,
    pub services: Vec<Service>,
    pub firewall: Option<Firewall>,
    pub files: Vec<ManagedFile>,
    pub sync_jobs: Vec<SyncJob>,
    pub tasks: Vec<Task>,
}

/// An IP address on an interface; `exclusive` ones are service IPs that move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    pub address: IpNet,
    pub interface: String,
    pub label: Option<String>,
    pub state: Presence,
    pub exclusive: bool,
}

/// A daemon and how it is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub state: ServiceState,
    pub enabled: Option<bool>,
    pub driver: ServiceDriver,
    /// The systemd unit (`<name>.service` unless the manifest says otherwise).
    pub unit: String,
    pub exec: Option<ExecCommands>,
    pub reload_on: Vec<PathBuf>,
}

/// Commands of the exec driver; each is a non-empty argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommands {
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub status: Vec<String>,
    pub reload: Option<Vec<String>>,
}

/// The owned nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub table: String,
    pub policy: FirewallPolicy,
    pub allow_lockout: bool,
    pub rules: Vec<FirewallRule>,
}

/// One input rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRule {
    pub name: String,
    pub protocol: Protocol,
    pub ports: Vec<u16>,
    pub sources: Vec<IpNet>,
    pub action: RuleAction,
}

/// A managed file; `content` is `None` exactly when the file must be absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFile {
    pub path: PathBuf,
    pub content: Option<String>,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub on_change: Vec<Handler>,
}

/// What to do once when a managed file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Run(Vec<String>),
    Reload(String),
    Restart(String),
}

/// Where a sync job reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncSource {
    /// `HOST:/path` — rsync over ssh from that host.
    Remote {
        host: String,
        path: PathBuf,
    },
    Local(PathBuf),
}

/// A mail-aware copy run by the destination host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncJob {
    pub name: String,
    pub source: SyncSource,
    pub destination: PathBuf,
    pub every: Option<ManifestDuration>,
    pub maildir: bool,
    pub mbox: bool,
    pub delete: bool,
    pub ssh_key: Option<PathBuf>,
    /// The pinned host key of the source; `None`: kept on first use.
    pub ssh_host_key: Option<crate::ssh::HostKey>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl SyncJob {
    /// A job that copies `source` to `destination` with every option as a
    /// manifest leaves it unset: once, no maildir or mbox handling, no
    /// deletes, ssh's own key.
    pub fn new(name: impl Into<String>, source: SyncSource, destination: PathBuf) -> SyncJob {
        SyncJob {
            name: name.into(),
            source,
            destination,
            every: None,
            maildir: false,
            mbox: false,
            delete: false,
            ssh_key: None,
            ssh_host_key: None,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// A guarded one-shot command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub name: String,
    pub run: Vec<String>,
    pub creates: Option<PathBuf>,
}

/// A `kind: Migration` document.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub name: String,
    pub hosts: BTreeMap<String, MigrationHost>,
    pub phases: Vec<String>,
    pub target_phase: String,
    pub point_of_no_return: Option<String>,
    pub on_gate_failure: GateFailurePolicy,
    pub origin: Origin,
}

/// How to reach a host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationHost {
    /// `https://ADDRESS:PORT`.
    pub agent: String,
}

/// A `kind: Phase` document.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub migration: String,
    pub hosts: BTreeMap<String, HostSpec>,
    pub final_syncs: Vec<FinalSync>,
    pub gates: Vec<Gate>,
    pub origin: Origin,
}

/// A sync job to run once between release and acquire (or whose completion a gate awaits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalSync {
    pub host: String,
    pub job: String,
}

/// A check between phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub name: String,
    pub timeout: Option<ManifestDuration>,
    pub check: GateCheck,
}

/// The one thing a gate checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateCheck {
    Smtp(Probe),
    Imap(Probe),
    Pop3(Probe),
    Delivery(Delivery),
    QueueEmpty {
        host: String,
        mta: Mta,
    },
    DiskFree {
        host: String,
        path: PathBuf,
        bytes: u64,
    },
    SyncComplete(FinalSync),
    Command {
        host: String,
        run: Vec<String>,
    },
    Soak {
        duration: ManifestDuration,
    },
    Approval,
}

/// A protocol probe (SMTP, IMAP or POP3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub address: IpAddr,
    pub port: u16,
    /// A regular expression already known to compile.
    pub banner: Option<String>,
    pub starttls: bool,
    pub tls: bool,
    pub cert_days: Option<u32>,
}

/// A test delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub server: SocketAddr,
    pub to: String,
    pub from: Option<String>,
    pub host: String,
    pub maildir: PathBuf,
}
