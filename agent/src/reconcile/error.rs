//! What can go wrong while converging a host: the sum of the drivers' own
//! errors, and the reconciler's. Every message names the resource
//! (address and interface, table, file, task, service) and, where there is
//! one, the way out.

use std::io;

use super::Change;
use crate::address::{AddressError, list};
use crate::driver::Resource;
use crate::files::FileError;
use crate::firewall::FirewallError;
use crate::service::ServiceError;
use crate::tasks::TaskError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netlink socket")]
    NetlinkSocket(#[source] io::Error),

    #[error(transparent)]
    Address(#[from] AddressError),

    #[error(transparent)]
    Firewall(#[from] FirewallError),

    #[error(transparent)]
    File(#[from] FileError),

    #[error(transparent)]
    Task(#[from] TaskError),

    #[error(transparent)]
    Service(#[from] ServiceError),

    #[error(
        "{resource}: applied, but still pending when read back: {}",
        list(pending)
    )]
    NotObserved {
        resource: Resource,
        pending: Vec<Change>,
    },
}

impl Error {
    /// Whether trying again, with the host as it is, can help (nmstate's
    /// distinction). A refusal — a rule set that would lock the admins out,
    /// a name nft cannot carry, a managed path through a link or with other
    /// names, a missing interface — fails the same way every time until the
    /// manifest or the host is changed by someone: the agent waits for that
    /// (a new state, an event, the resync) instead of retrying with backoff.
    pub fn retry_can_help(&self) -> bool {
        match self {
            Error::Address(error) => error.retry_can_help(),
            Error::Firewall(error) => error.retry_can_help(),
            Error::File(error) => error.retry_can_help(),
            Error::NetlinkSocket(_)
            | Error::Task(_)
            | Error::Service(_)
            | Error::NotObserved { .. } => true,
        }
    }
}
