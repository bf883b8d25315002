//! systemd over D-Bus: start, stop, reload and restart a unit and wait until
//! systemd says the job is over, enable and disable its unit file, and read
//! its state.
//!
//! `systemctl start` without `--no-block` is what a mail admin types, and it
//! returns only when the job has finished. We do the same with the bus API:
//! subscribe to `JobRemoved` *before* asking for the job (a short job can
//! finish before the method reply arrives), then wait for the signal carrying
//! our job's path and check its result. Anything but `done` is a failure:
//! `failed` (the unit's process failed), `timeout`, `canceled` (another job
//! replaced ours), `dependency`, `skipped`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

/// How long a job may take unless configured otherwise: above systemd's own
/// default start timeout (90 s), so systemd reports a hanging start first.
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Which bus systemd is reached on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SystemBus {
    /// The host's system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/run/dbus/system_bus_socket`).
    #[default]
    Default,
    /// A D-Bus address such as `unix:path=/srv/root/run/dbus/system_bus_socket`:
    /// the bus of a systemd in a container or chroot.
    Address(String),
}

impl SystemBus {
    /// The system bus whose socket is `path`.
    pub fn socket(path: impl Into<PathBuf>) -> Self {
        SystemBus::Address(format!("unix:path={}", path.into().display()))
    }
}

impl fmt::Display for SystemBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SystemBus::Default => f.write_str("the system bus"),
            SystemBus::Address(address) => write!(f, "the bus at {address}"),
        }
    }
}

/// A job systemd runs on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitJob {
    Start,
    Stop,
    Reload,
    Restart,
}

impl fmt::Display for UnitJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnitJob::Start => "start",
            UnitJob::Stop => "stop",
            UnitJob::Reload => "reload",
            UnitJob::Restart => "restart",
        })
    }
}

/// What systemd says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// `loaded`, `not-found`, `masked`, `error`, ...
    pub load_state: String,
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`, ...
    pub active_state: String,
    /// The unit type's own state: `running`, `exited`, `dead`, ...
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, `masked`, ...; empty for a unit with no file.
    pub unit_file_state: String,
}

impl UnitStatus {
    /// Whether the unit runs: `active`, or `reloading` (which is active too).
    pub fn is_running(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "reloading")
    }

    /// Whether the unit is down: `inactive`, or `failed` (down after an error).
    pub fn is_stopped(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed")
    }

    /// Whether the unit starts at every boot: `Some(true)` for an enabled unit
    /// file, `Some(false)` for a disabled one, and `None` where enabling means
    /// nothing (a `static` unit without an `[Install]` section, a linked,
    /// generated or transient unit, a masked one).
    pub fn is_enabled(&self) -> Option<bool> {
        match self.unit_file_state.as_str() {
            "enabled" | "alias" => Some(true),
            // Enabled until the next boot only: enabling makes it stick.
            "disabled" | "enabled-runtime" => Some(false),
            _ => None,
        }
    }
}

impl fmt::Display for UnitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.active_state, self.sub_state)?;
        if !self.unit_file_state.is_empty() {
            write!(f, ", {}", self.unit_file_state)?;
        }
        Ok(())
    }
}

/// What can go wrong talking to systemd. Every message names the unit (or
/// the bus) and the job.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to systemd on {bus}; is systemd running there?")]
    Connect {
        bus: SystemBus,
        #[source]
        source: Box<zbus::Error>,
    },

    #[error("unit {unit}: systemd refused {call}")]
    Call {
        unit: String,
        call: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },

    #[error(
        "unit {unit}: {job} job ended with \"{result}\"; see `journalctl -u {unit}` on the host"
    )]
    JobFailed {
        unit: String,
        job: UnitJob,
        result: String,
    },

    #[error("unit {unit}: {job} job still running after {timeout:?}")]
    JobTimeout {
        unit: String,
        job: UnitJob,
        timeout: Duration,
    },

    #[error("unit {unit}: lost the bus while waiting for the {job} job")]
    SignalsEnded { unit: String, job: UnitJob },

    #[error("unit {unit}: no such unit; install its unit file or fix `unit` in the manifest")]
    NotFound { unit: String },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;

    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;

    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;

    fn reload(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

/// A connection to one systemd. Cheap to clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct Systemd {
    bus: SystemBus,
    connection: Connection,
    manager: ManagerProxy<'static>,
    job_timeout: Duration,
}

impl Systemd {
    /// Connects to systemd on `bus` and asks it to send job signals.
    pub async fn connect(bus: &SystemBus) -> Result<Self, SystemdError> {
        let connect_error = |source| SystemdError::Connect {
            bus: bus.clone(),
            source: Box::new(source),
        };
        let connection = match bus {
            SystemBus::Default => Connection::system().await,
            SystemBus::Address(address) => {
                zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
            }
        }
        .map_err(connect_error)?;
        let manager = ManagerProxy::new(&connection)
            .await
            .map_err(connect_error)?;
        // systemd emits JobRemoved only while some client has subscribed.
        manager.subscribe().await.map_err(connect_error)?;
        Ok(Systemd {
            bus: bus.clone(),
            connection,
            manager,
            job_timeout: DEFAULT_JOB_TIMEOUT,
        })
    }

    /// How long to wait for one job before giving up (the job itself goes on).
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// The bus this client talks on.
    pub fn bus(&self) -> &SystemBus {
        &self.bus
    }

    /// Starts `unit` and waits until the start job is done.
    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, UnitJob::Start).await
    }

    /// Stops `unit` and waits until the stop job is done.
    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, UnitJob::Stop).await
    }

    /// Reloads `unit` (its `ExecReload=`) and waits until the job is done.
    pub async fn reload(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, UnitJob::Reload).await
    }

    /// Restarts `unit` and waits until the job is done.
    pub async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, UnitJob::Restart).await
    }

    /// Enables the unit file (the symlinks of its `[Install]` section) and
    /// reloads systemd so it sees them.
    pub async fn enable(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .enable_unit_files(&[unit], false, false)
            .await
            .map_err(call_error(unit, "EnableUnitFiles"))?;
        self.daemon_reload(unit).await
    }

    /// Disables the unit file and reloads systemd.
    pub async fn disable(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .disable_unit_files(&[unit], false)
            .await
            .map_err(call_error(unit, "DisableUnitFiles"))?;
        self.daemon_reload(unit).await
    }

    /// Reads the unit's state. A unit systemd knows no file for is an error:
    /// nothing mailctl does can start it.
    pub async fn status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let path = self
            .manager
            .load_unit(unit)
            .await
            .map_err(call_error(unit, "LoadUnit"))?;
        // Uncached: every read asks systemd, so a status is never stale.
        let proxy = UnitProxy::builder(&self.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_error(unit, "unit object"))?;
        let property = |call| call_error(unit, call);
        let status = UnitStatus {
            load_state: proxy.load_state().await.map_err(property("LoadState"))?,
            active_state: proxy
                .active_state()
                .await
                .map_err(property("ActiveState"))?,
            sub_state: proxy.sub_state().await.map_err(property("SubState"))?,
            unit_file_state: proxy
                .unit_file_state()
                .await
                .map_err(property("UnitFileState"))?,
        };
        if status.load_state == "not-found" {
            return Err(SystemdError::NotFound {
                unit: unit.to_owned(),
            });
        }
        Ok(status)
    }

    async fn daemon_reload(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(call_error(unit, "Reload"))
    }

    async fn run_job(&self, unit: &str, job: UnitJob) -> Result<(), SystemdError> {
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_error(unit, "a JobRemoved subscription"))?;
        // "replace": our job replaces a conflicting queued one, as systemctl does.
        let (call, queued) = match job {
            UnitJob::Start => ("StartUnit", self.manager.start_unit(unit, "replace").await),
            UnitJob::Stop => ("StopUnit", self.manager.stop_unit(unit, "replace").await),
            UnitJob::Reload => (
                "ReloadUnit",
                self.manager.reload_unit(unit, "replace").await,
            ),
            UnitJob::Restart => (
                "RestartUnit",
                self.manager.restart_unit(unit, "replace").await,
            ),
        };
        let path = queued.map_err(call_error(unit, call))?;
        let finished = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == path {
                    return Some(args.result);
                }
            }
            None
        };
        let result = tokio::time::timeout(self.job_timeout, finished)
            .await
            .map_err(|_| SystemdError::JobTimeout {
                unit: unit.to_owned(),
                job,
                timeout: self.job_timeout,
            })?
            .ok_or_else(|| SystemdError::SignalsEnded {
                unit: unit.to_owned(),
                job,
            })?;
        if result != "done" {
            return Err(SystemdError::JobFailed {
                unit: unit.to_owned(),
                job,
                result,
            });
        }
        Ok(())
    }
}

fn call_error(unit: &str, call: &'static str) -> impl Fn(zbus::Error) -> SystemdError {
    let unit = unit.to_owned();
    move |source| SystemdError::Call {
        unit: unit.clone(),
        call,
        source: Box::new(source),
    }
}
