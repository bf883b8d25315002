//! A planned change of any resource kind: the sum of the drivers' own
//! change types.

use std::fmt;

use crate::address::AddressChange;
use crate::files::FileChange;
use crate::firewall::FirewallChange;
use crate::service::ServiceChange;
use crate::tasks::TaskChange;

/// A planned change of any resource kind. Its `Display` is one `plan` line
/// (`+` add, `-` remove, `~` modify), possibly followed by indented details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Address(AddressChange),
    Firewall(FirewallChange),
    File(FileChange),
    Task(TaskChange),
    Service(ServiceChange),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Address(change) => change.fmt(f),
            Change::Firewall(change) => change.fmt(f),
            Change::File(change) => change.fmt(f),
            Change::Task(change) => change.fmt(f),
            Change::Service(change) => change.fmt(f),
        }
    }
}

impl From<AddressChange> for Change {
    fn from(change: AddressChange) -> Self {
        Change::Address(change)
    }
}

impl From<FirewallChange> for Change {
    fn from(change: FirewallChange) -> Self {
        Change::Firewall(change)
    }
}

impl From<FileChange> for Change {
    fn from(change: FileChange) -> Self {
        Change::File(change)
    }
}

impl From<ServiceChange> for Change {
    fn from(change: ServiceChange) -> Self {
        Change::Service(change)
    }
}

impl From<TaskChange> for Change {
    fn from(change: TaskChange) -> Self {
        Change::Task(change)
    }
}
