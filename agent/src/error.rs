//! What can go wrong while converging a host. Every message names the
//! resource (address and interface, or table) and, where there is one, the
//! way out.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use ipnet::IpNet;

use crate::driver::{Change, Resource};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),

    #[error("cannot open a netlink socket")]
    NetlinkSocket(#[source] io::Error),

    #[error(
        "address {address} on {interface}: no interface {interface} on this host; create it or fix `interface` in the manifest"
    )]
    NoSuchInterface { address: IpNet, interface: String },

    #[error("{what}: netlink request failed")]
    Netlink {
        what: NetlinkTarget,
        #[source]
        source: rtnetlink::Error,
    },

    #[error(
        "address {address} on {interface}: removing it would also remove the secondary addresses {} (net.ipv4.conf.{interface}.promote_secondaries is off); set it to 1 or declare those addresses absent too",
        list(secondaries)
    )]
    WouldRemoveSecondaries {
        address: IpNet,
        interface: String,
        secondaries: Vec<IpNet>,
    },

    #[error(
        "address {address} on {interface}: duplicate address detection failed, another host on the link holds it; remove it there, the next reconcile adds it again"
    )]
    DuplicateAddress { address: IpNet, interface: String },

    #[error("address {address} on {interface}: cannot send the announcement")]
    Announce {
        address: IpAddr,
        interface: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "firewall table inet {table}: refusing a rule set that blocks {}; accept those ports from those sources, set admin_sources in agent.toml to the ranges the controller and admins connect from, or set `allowLockout: true`",
        crate::firewall::describe_blocked(blocked)
    )]
    Lockout {
        table: String,
        /// Every protected port and guarded source the rule set cuts off.
        blocked: Vec<crate::firewall::Blocked>,
    },

    #[error(
        "firewall table inet {table}: the {what} \"{name}\" cannot be written in nft's syntax; use letters, digits, '-', '_', '.' and '@' (a table name: letters, digits, '-' and '_', starting with a letter)"
    )]
    NftName {
        table: String,
        what: &'static str,
        name: String,
    },

    #[error("firewall table inet {table}: cannot run `{command}`")]
    NftSpawn {
        table: String,
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("firewall table inet {table}: `{command}` failed: {stderr}")]
    NftFailed {
        table: String,
        command: String,
        stderr: String,
    },

    #[error("firewall table inet {table}: cannot read the output of `{command}`: {detail}")]
    NftOutput {
        table: String,
        command: String,
        detail: String,
    },

    #[error(
        "{resource}: applied, but still pending when read back: {}",
        list(pending)
    )]
    NotObserved {
        resource: Resource,
        pending: Vec<Change>,
    },

    #[error(
        "file {}: folder {} does not exist; create it first (the package that reads the file usually does) or fix `path`: mailctl does not create folders",
        path.display(),
        parent.display()
    )]
    FileParentMissing { path: PathBuf, parent: PathBuf },

    #[error(
        "file {}: is a {kind}, not a regular file; mailctl manages regular files only: remove it by hand or fix `path`",
        path.display()
    )]
    FileNotRegular { path: PathBuf, kind: &'static str },

    #[error(
        "file {}: {} is a symbolic link (to {}); mailctl follows no link in the folders of a managed file (whoever owns the link would choose where root writes): write `path` without it, or replace the link by a folder",
        path.display(),
        link.display(),
        target.display()
    )]
    FileThroughSymlink {
        path: PathBuf,
        /// The component of the path that is a link.
        link: PathBuf,
        target: PathBuf,
    },

    #[error(
        "file {}: has {links} hard links; mailctl manages only files with one name (a change of mode or owner would change the other names too): find them with `find / -xdev -samefile {}` and remove them, or fix `path`",
        path.display(),
        path.display()
    )]
    FileHardLinked { path: PathBuf, links: u64 },

    #[error(
        "file {}: no {kind} {name} on this host; create it first (the package of the service usually does) or fix `{field}`",
        path.display(),
        kind = if *field == "owner" { "user" } else { "group" }
    )]
    UnknownAccount {
        path: PathBuf,
        /// `owner` or `group`, as the manifest calls it.
        field: &'static str,
        name: String,
    },

    #[error("file {}: cannot {what}", path.display())]
    File {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("file {}: onChange handler `{argv}` {failure}", path.display())]
    Handler {
        path: PathBuf,
        argv: String,
        failure: CommandFailure,
    },

    #[error("task {task}: `{argv}` {failure}")]
    Task {
        task: String,
        argv: String,
        failure: CommandFailure,
    },

    #[error(
        "task {task} ran but did not create {}; fix the command, or `creates` if the task makes something else",
        path.display()
    )]
    TaskNotCreated { task: String, path: PathBuf },

    #[error("task {task}: cannot tell whether {} exists", path.display())]
    TaskGuard {
        task: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "state file {}: cannot {what}; the agent needs a writable state directory",
        path.display()
    )]
    StateFile {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("state file {} is not valid ({detail}); {hint}", path.display())]
    StateFileInvalid {
        path: PathBuf,
        detail: String,
        hint: &'static str,
    },
}

impl Error {
    /// Whether trying again, with the host as it is, can help (nmstate's
    /// distinction). A refusal — a rule set that would lock the admins out,
    /// a name nft cannot carry, a managed path through a link or with other
    /// names — fails the same way every time until the manifest or the host
    /// is changed by someone: the agent waits for that (a new state, an
    /// event, the resync) instead of retrying with backoff.
    pub fn retry_can_help(&self) -> bool {
        !matches!(
            self,
            Error::Lockout { .. }
                | Error::NftName { .. }
                | Error::FileThroughSymlink { .. }
                | Error::FileHardLinked { .. }
                | Error::FileNotRegular { .. }
                | Error::NoSuchInterface { .. }
                | Error::WouldRemoveSecondaries { .. }
        )
    }
}

/// Why a command the agent ran (an `onChange` handler, a task) did not
/// succeed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started: no such program, not executable.
    Spawn(io::Error),
    /// It exited unsuccessfully; `stderr` holds the last lines it wrote there.
    Exit { status: ExitStatus, stderr: String },
    /// It was still running when its time was up, and was killed.
    Timeout(Duration),
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self {
            CommandFailure::Spawn(error) => write!(
                f,
                "could not be started ({error}); check that the program exists and is executable"
            ),
            CommandFailure::Exit { status, stderr } => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => write!(f, "failed (exit code {code})")?,
                    (None, Some(signal)) => write!(f, "failed (killed by signal {signal})")?,
                    (None, None) => write!(f, "failed ({status})")?,
                }
                match stderr.lines().count() {
                    0 => f.write_str(" and wrote nothing to stderr"),
                    1 => write!(f, ": {stderr}"),
                    _ => {
                        f.write_str(", last lines of stderr:")?;
                        for line in stderr.lines() {
                            write!(f, "\n    {line}")?;
                        }
                        Ok(())
                    }
                }
            }
            CommandFailure::Timeout(limit) => write!(
                f,
                "did not finish within {}s and was killed",
                limit.as_secs_f64()
            ),
        }
    }
}

/// What a netlink request was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkTarget {
    /// Listing interfaces.
    Links,
    /// Listing the addresses of these interfaces.
    Addresses { interfaces: Vec<String> },
    /// Adding an address.
    Add { address: IpNet, interface: String },
    /// Removing an address.
    Remove { address: IpNet, interface: String },
}

impl fmt::Display for NetlinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkTarget::Links => f.write_str("listing interfaces"),
            NetlinkTarget::Addresses { interfaces } => {
                write!(f, "listing addresses on {}", interfaces.join(", "))
            }
            NetlinkTarget::Add { address, interface } => {
                write!(f, "adding address {address} on {interface}")
            }
            NetlinkTarget::Remove { address, interface } => {
                write!(f, "removing address {address} on {interface}")
            }
        }
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| {
            item.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ")
}
