//! Raw manifest documents: exactly what a YAML file says, before any checking
//! beyond shape. These types are the source of the published JSON Schemas, so
//! their doc comments are what an editor shows while someone types a manifest.
//!
//! Nothing outside this crate should use them: `validate` turns them into the
//! types of `model`, which carry parsed addresses, durations and paths.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The only apiVersion this release understands.
pub const API_VERSION: &str = "mailctl/v1alpha1";

/// One word of a command (argv). Plain YAML scalars are words too: in
/// `[sleep, 5]` or `[chmod, 0600, FILE]` the number is meant as text, and
/// the loader takes it as written (`0600`, not 600).
#[derive(Debug, Clone, PartialEq)]
pub struct ArgvWord(pub String);

impl<'de> Deserialize<'de> for ArgvWord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Word;
        impl serde::de::Visitor<'_> for Word {
            type Value = ArgvWord;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command word (a string, number or boolean)")
            }
            fn visit_str<E>(self, v: &str) -> Result<ArgvWord, E> {
                Ok(ArgvWord(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ArgvWord, E> {
                Ok(ArgvWord(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ArgvWord, E> {
                Ok(ArgvWord(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ArgvWord, E> {
                Ok(ArgvWord(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ArgvWord, E> {
                Ok(ArgvWord(v.to_string()))
            }
        }
        deserializer.deserialize_any(Word)
    }
}

impl JsonSchema for ArgvWord {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ArgvWord".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A command word; a plain number or boolean is taken as written (`0600`).",
            "type": ["string", "number", "boolean"]
        })
    }
}

fn argv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let words = Vec::<ArgvWord>::deserialize(deserializer)?;
    Ok(words.into_iter().map(|w| w.0).collect())
}

fn optional_argv<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let words = Option::<Vec<ArgvWord>>::deserialize(deserializer)?;
    Ok(words.map(|words| words.into_iter().map(|w| w.0).collect()))
}

/// `metadata` of a Host or Migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Name of the object: lower-case letters, digits and '-', starting with a letter.
    pub name: String,
}

/// `metadata` of a Phase: its name and the Migration it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseMetadata {
    /// Name of the phase, as listed in the Migration's `spec.phases`.
    pub name: String,
    /// Name of the Migration this phase belongs to.
    pub migration: String,
}

/// Desired state of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostDocument {
    /// Always `mailctl/v1alpha1`.
    pub api_version: String,
    /// Always `Host`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: HostSpec,
}

/// A mail migration: its hosts, its ordered phases and where to drive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationDocument {
    /// Always `mailctl/v1alpha1`.
    pub api_version: String,
    /// Always `Migration`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: MigrationSpec,
}

/// One phase of a migration: the full desired state of each host, the final
/// syncs to run between release and acquire, and the gates that must pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseDocument {
    /// Always `mailctl/v1alpha1`.
    pub api_version: String,
    /// Always `Phase`.
    pub kind: String,
    pub metadata: PhaseMetadata,
    pub spec: PhaseSpec,
}

/// What one host should look like.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostSpec {
    /// IP addresses on interfaces (service IPs move between hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// Daemons that must be running or stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// The one nftables table mailctl owns on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
    /// Files mailctl writes (or removes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// Mail-aware copies from another host or a local path, run by this host's agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_jobs: Vec<SyncJob>,
    /// Guarded one-shot commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
}

/// `present` or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// An IP address on an interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Address {
    /// IPv4 or IPv6 address with prefix length, e.g. `192.0.2.25/24`.
    pub address: String,
    /// Interface the address lives on, e.g. `eth0`.
    pub interface: String,
    /// IPv4 only: label shown by `ip addr`, must start with the interface name (`eth0:mail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// A service IP: never on two hosts at once. Moving it is break-before-make.
    #[serde(default)]
    pub exclusive: bool,
}

/// `running` or `stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ServiceState {
    Running,
    Stopped,
}

/// How a service is started and stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ServiceDriver {
    /// systemd when /run/systemd/system exists, exec otherwise.
    #[default]
    Auto,
    Systemd,
    Exec,
}

/// A daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Name the service is known by in this manifest (`postfix`, `dovecot`).
    pub name: String,
    pub state: ServiceState,
    /// Start at boot (systemd driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub driver: ServiceDriver,
    /// systemd unit; defaults to `<name>.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Commands for the exec driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCommands>,
    /// Reload the service when one of these managed files changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload_on: Vec<String>,
}

/// Commands of the exec driver, each an argv list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecCommands {
    #[serde(deserialize_with = "argv")]
    #[schemars(with = "Vec<ArgvWord>")]
    pub start: Vec<String>,
    #[serde(deserialize_with = "argv")]
    #[schemars(with = "Vec<ArgvWord>")]
    pub stop: Vec<String>,
    /// Exits 0 while the service runs.
    #[serde(deserialize_with = "argv")]
    #[schemars(with = "Vec<ArgvWord>")]
    pub status: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_argv"
    )]
    #[schemars(with = "Option<Vec<ArgvWord>>")]
    pub reload: Option<Vec<String>>,
}

/// Default policy of the owned input chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FirewallPolicy {
    #[default]
    Accept,
    Drop,
}

/// The nftables table mailctl owns (family `inet`). Other tables are never touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Firewall {
    /// Table name; default `mailctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default)]
    pub policy: FirewallPolicy,
    /// Allow a rule set that blocks SSH or the agent's own port.
    #[serde(default)]
    pub allow_lockout: bool,
    #[serde(default)]
    pub rules: Vec<FirewallRule>,
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What a rule does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RuleAction {
    Accept,
    Drop,
    Reject,
}

/// One rule of the input chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallRule {
    pub name: String,
    pub protocol: Protocol,
    /// Destination ports, 1-65535.
    pub ports: Vec<i64>,
    /// Source networks (CIDR); any source when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    pub action: RuleAction,
}

/// A file mailctl manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct File {
    /// Absolute path on the host.
    pub path: String,
    /// File content, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// File content, from a file relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Octal permission bits, e.g. `"0640"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub state: Presence,
    /// Run once each time the file changes, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<Handler>,
}

/// A handler: exactly one of `run`, `reload`, `restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handler {
    /// Command to run (argv).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_argv"
    )]
    #[schemars(with = "Option<Vec<ArgvWord>>")]
    pub run: Option<Vec<String>>,
    /// Service (by name in this manifest) to reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<String>,
    /// Service (by name in this manifest) to restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
}

/// A mail-aware copy run by this host's agent (this host is the destination).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncJob {
    pub name: String,
    /// `HOST:/path/` (rsync over ssh from that host) or an absolute local path.
    pub source: String,
    /// Absolute path on this host.
    pub destination: String,
    /// Run repeatedly at this interval (`15m`); on demand only when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Maildir-aware: rename instead of re-copy, verify unique parts per folder.
    #[serde(default)]
    pub maildir: bool,
    /// Source holds mbox spool files, converted into one Maildir per file under the destination.
    #[serde(default)]
    pub mbox: bool,
    /// Remove destination files gone from the source. Refused once the destination takes mail.
    #[serde(default)]
    pub delete: bool,
    /// ssh private key for the source host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// The source host's ssh host key (`ssh-ed25519 AAAA...`, a line of its
    /// `/etc/ssh/ssh_host_*_key.pub`): only that key is accepted. Without it
    /// the first key seen is kept, and the job's status says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
    /// rsync include patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// rsync exclude patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// A guarded one-shot command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Task {
    pub name: String,
    /// Command to run (argv).
    #[serde(deserialize_with = "argv")]
    #[schemars(with = "Vec<ArgvWord>")]
    pub run: Vec<String>,
    /// Skip the task when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
}

/// What the controller does when a gate fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GateFailurePolicy {
    #[default]
    Pause,
    Rollback,
}

/// The migration itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationSpec {
    /// Hosts taking part, by name, with their agent's address.
    pub hosts: BTreeMap<String, MigrationHost>,
    /// Phase names in the order they are walked.
    pub phases: Vec<String>,
    /// The phase the controller should drive to.
    pub target_phase: String,
    /// From this phase on new mail lands on the new host; going back needs a reverse sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_of_no_return: Option<String>,
    #[serde(default)]
    pub on_gate_failure: GateFailurePolicy,
}

/// How the controller reaches a host's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationHost {
    /// `https://ADDRESS:PORT` of the agent (mutual TLS).
    pub agent: String,
}

/// Desired state of each host in a phase, plus final syncs and gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseSpec {
    /// Full desired state per host name.
    pub hosts: BTreeMap<String, HostSpec>,
    /// One-shot sync runs between release and acquire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub final_syncs: Vec<SyncRef>,
    /// Checks that must pass before the phase counts as reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
}

/// A sync job on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRef {
    pub host: String,
    pub job: String,
}

/// A check between phases: `name`, optional `timeout`, and exactly one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    pub name: String,
    /// How long the gate may take (`2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<ProbeGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imap: Option<ProbeGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop3: Option<ProbeGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_empty: Option<QueueEmptyGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<DiskFreeGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_complete: Option<SyncRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakGate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
}

/// An SMTP/IMAP/POP3 probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeGate {
    /// IP address to connect to.
    pub address: String,
    pub port: i64,
    /// Regular expression the greeting must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// Require STARTTLS to succeed.
    #[serde(default)]
    pub starttls: bool,
    /// Connect with implicit TLS (465, 993, 995).
    #[serde(default)]
    pub tls: bool,
    /// The certificate must stay valid at least this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_days: Option<i64>,
}

/// Send a message with a unique token and wait until it is in the maildir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryGate {
    /// `IP:PORT` of the SMTP server to hand the message to.
    pub server: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Host whose agent looks for the message.
    pub host: String,
    /// Absolute path of the recipient's Maildir on that host.
    pub maildir: String,
}

/// The MTA whose queue is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mta {
    Postfix,
    Exim,
}

/// The mail queue of a host is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueEmptyGate {
    pub host: String,
    pub mta: Mta,
}

/// At least `bytes` free under `path` on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskFreeGate {
    pub host: String,
    pub path: String,
    pub bytes: i64,
}

/// A command on a host exits 0 (runs through the agent's declared gate, never an arbitrary API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandGate {
    pub host: String,
    #[serde(deserialize_with = "argv")]
    #[schemars(with = "Vec<ArgvWord>")]
    pub run: Vec<String>,
}

/// The other gates keep passing for this long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SoakGate {
    pub duration: String,
}

/// Wait for `mailctl approve`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalGate {}
