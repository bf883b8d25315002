//! The reconcile contract every resource kind implements (DESIGN.md §2).
//!
//! A driver reads the host (`observe`), compares it with the manifest (`diff`,
//! pure), makes the changes (`apply`) and reads the host again (`verify`). It
//! never learns *why* it runs: a new manifest, a kernel event and a periodic
//! resync all look the same, which keeps drift repair and intentional change
//! on one path. `plan` is `observe + diff` of that same path, so what a plan
//! shows is what an apply does.
//!
//! The contract knows no driver: each driver owns its change and error
//! types, and the sum types over all of them ([`Change`](crate::Change),
//! [`Error`](crate::Error)) live above the drivers, with the reconciler.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;

use mailctl_schemas::model::Handler;

/// One resource kind's way of converging the host to its desired state.
pub trait Driver: Sync {
    /// What the manifest declares for this kind.
    type Desired: ?Sized + Sync;
    /// What the host has, as far as the desired state is concerned.
    type Observed: Send;
    /// One step from the observed towards the desired state.
    type Change: ResourceChange;
    /// What can go wrong, in this kind's words.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The resource the desired state describes, as plans and errors name it.
    fn resource(&self, desired: &Self::Desired) -> Resource;

    /// Reads the part of the host the desired state talks about.
    fn observe(
        &self,
        desired: &Self::Desired,
    ) -> impl Future<Output = Result<Self::Observed, Self::Error>> + Send;

    /// The changes that turn `observed` into `desired`; empty when converged.
    /// Refuses (with an error, before anything happens) a desired state that
    /// must not be applied.
    fn diff(
        &self,
        desired: &Self::Desired,
        observed: &Self::Observed,
    ) -> Result<Vec<Self::Change>, Self::Error>;

    /// Makes the changes, in order, and reports side effects such as
    /// announcements.
    fn apply(
        &self,
        changes: &[Self::Change],
    ) -> impl Future<Output = Result<Vec<Effect>, Self::Error>> + Send;

    /// Reads the host again and returns what is still pending. A change
    /// counts as made only when this no longer lists its subject.
    fn verify(
        &self,
        desired: &Self::Desired,
    ) -> impl Future<Output = Result<Vec<Self::Change>, Self::Error>> + Send {
        async move {
            let observed = self.observe(desired).await?;
            self.diff(desired, &observed)
        }
    }
}

/// A change one driver plans.
pub trait ResourceChange: fmt::Display + fmt::Debug + Clone + Send + Sync {
    /// What the change is about (an address on an interface, a table). After
    /// apply, a change is verified when no pending change has its subject.
    type Subject: PartialEq;

    fn subject(&self) -> Self::Subject;
}

/// A thing mailctl converges, as named in plans, reports and errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The addresses a host manifest declares, on all their interfaces.
    Addresses,
    /// The one `inet` table mailctl owns.
    Firewall { table: String },
    /// One managed file.
    File { path: PathBuf },
    /// One guarded one-shot command.
    Task { name: String },
    /// One daemon (systemd unit or exec commands).
    Service { name: String },
}

impl Resource {
    /// Addresses and the firewall: independent of each other (the owned
    /// table matches sources and ports, never this host's own addresses),
    /// so they converge together, before everything else.
    pub fn is_network(&self) -> bool {
        matches!(self, Resource::Addresses | Resource::Firewall { .. })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Addresses => f.write_str("addresses"),
            Resource::Firewall { table } => write!(f, "firewall table inet {table}"),
            Resource::File { path } => write!(f, "file {}", path.display()),
            Resource::Task { name } => write!(f, "task {name}"),
            Resource::Service { name } => write!(f, "service {name}"),
        }
    }
}

/// Something an apply did besides the change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Neighbours were told the address now lives here.
    Announced {
        address: IpAddr,
        interface: String,
        how: Announcement,
    },
    /// The address was added but could not be announced; neighbours with a
    /// cached entry keep using the old holder until it expires.
    NotAnnounced {
        address: IpAddr,
        interface: String,
        reason: String,
    },
    /// A managed file changed and these `onChange` handlers are due, in
    /// order. They stay recorded in the files driver's state directory until
    /// each is reported run (`FileDriver::handler_ran`), so a crash between
    /// the change and its handlers does not lose them.
    HandlersDue {
        path: PathBuf,
        handlers: Vec<Handler>,
    },
    /// A handler (onChange, or a service's reloadOn) ran after a file changed.
    HandlerRan { path: PathBuf, handler: String },
}

/// How an address was announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// IPv4: an ARP request for the address from the address (RFC 5227 announcement).
    GratuitousArp,
    /// IPv6: a neighbour advertisement with the override flag to all nodes.
    UnsolicitedNeighborAdvertisement,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Announced {
                address,
                interface,
                how,
            } => {
                let how = match how {
                    Announcement::GratuitousArp => "gratuitous ARP",
                    Announcement::UnsolicitedNeighborAdvertisement => {
                        "unsolicited neighbour advertisement"
                    }
                };
                write!(f, "announced {address} on {interface} ({how})")
            }
            Effect::NotAnnounced {
                address,
                interface,
                reason,
            } => write!(f, "not announced {address} on {interface}: {reason}"),
            Effect::HandlersDue { path, handlers } => write!(
                f,
                "onChange of {} due: {}",
                path.display(),
                crate::command::describe_handlers(handlers)
            ),
            Effect::HandlerRan { path, handler } => {
                write!(f, "ran {handler} (changed {})", path.display())
            }
        }
    }
}
