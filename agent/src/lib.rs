//! The host reconciler (DESIGN.md §4): converges one host to its `Host`
//! manifest and reports what it changed.
//!
//! Each resource kind has a [`Driver`] (observe, diff, apply, verify); the
//! [`Reconciler`] runs them all through one path, so [`Reconciler::plan`]
//! shows exactly what [`Reconciler::apply`] does. Drivers only touch what the
//! manifest declares: the addresses it lists and the one nftables table it
//! owns.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use mailctl_agent::{Config, Reconciler};
//!
//! let manifests = mailctl_schemas::load::load_paths(&["host.yaml"])?;
//! let reconciler = Reconciler::connect(Config::default())?;
//! for plan in reconciler.plan(&manifests.hosts[0].spec).await {
//!     println!("{plan}");
//! }
//! let report = reconciler.apply(&manifests.hosts[0].spec).await;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod address;
mod announce;
pub mod api;
mod command;
pub mod config;
pub mod daemon;
pub mod driver;
pub mod files;
pub mod firewall;
mod fsutil;
mod intervals;
pub mod pki;
mod reconcile;
pub use mailctl_api::roles;
pub mod service;
pub mod sync;
pub mod tasks;

pub use address::NetlinkTarget;
pub use command::CommandFailure;
pub use driver::{Announcement, Driver, Effect, Resource, ResourceChange};
pub use fsutil::StateError;
pub use reconcile::{
    Applied, ApplyReport, Change, Config, DEFAULT_API_PORT, Error, Reconciler, ResourcePlan,
    ResourceReport, error_chain,
};
