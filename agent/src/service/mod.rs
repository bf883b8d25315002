//! Services: make a daemon run or stop (and start at boot or not) as its
//! manifest says, with systemd where the host has it and the manifest's own
//! commands where it does not.
//!
//! The shape is the reconcile contract of DESIGN.md §2: `observe` reads the
//! service, `diff` (pure) lists the changes, `apply` makes them, `verify`
//! observes again. A change counts only when the service is seen in the new
//! state: for systemd, when the job is done and the unit is active or
//! inactive; for exec, when the status command agrees.
//!
//! `reload` and `restart` are for `reloadOn` and `onChange` handlers. They act
//! only on a running service: a stopped daemon reads its new configuration
//! when it starts, and starting it is the manifest's `state`, not a handler's.

pub mod exec;
pub mod systemd;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mailctl_schemas::model::{ExecCommands, Service, ServiceDriver, ServiceState};

use self::exec::{ExecDriver, ExecError};
use self::systemd::{SystemBus, Systemd, SystemdError};

/// Where systemd, when it is PID 1, leaves its mark (sd_booted(3)).
const SYSTEMD_MARKER: &str = "run/systemd/system";
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// How a service is driven on this host, `auto` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Systemd { unit: String },
    Exec { commands: ExecCommands },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Systemd { unit } => write!(f, "systemd unit {unit}"),
            Backend::Exec { .. } => f.write_str("exec"),
        }
    }
}

/// What a service looks like on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: String,
    pub backend: Backend,
    /// Running or stopped; `None` while systemd is between the two
    /// (`activating`, `deactivating`).
    pub state: Option<ServiceState>,
    /// Whether it starts at boot; `None` where that is not known or means
    /// nothing (exec services, static systemd units).
    pub enabled: Option<bool>,
    /// The backend's own words: `active (running), enabled`, `status exited 0`.
    pub detail: String,
}

/// One step towards a service's desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    pub service: String,
    pub backend: Backend,
    pub action: ServiceAction,
}

/// What a [`ServiceChange`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    Start,
    Stop,
    Enable,
    Disable,
    Reload,
    Restart,
}

impl fmt::Display for ServiceChange {
    /// One `plan` line: `+` start, `-` stop, `~` anything else.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, verb) = match self.action {
            ServiceAction::Start => ('+', "start"),
            ServiceAction::Stop => ('-', "stop"),
            ServiceAction::Enable => ('~', "enable"),
            ServiceAction::Disable => ('~', "disable"),
            ServiceAction::Reload => ('~', "reload"),
            ServiceAction::Restart => ('~', "restart"),
        };
        write!(
            f,
            "{sign} service {}: {verb} ({})",
            self.service, self.backend
        )
    }
}

/// What can go wrong converging a service. Every message names the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "service {service}: this host runs no systemd ({} is missing) and the manifest has no exec commands; add exec: {{start: [...], stop: [...], status: [...]}}",
        marker.display()
    )]
    NoExecCommands { service: String, marker: PathBuf },

    #[error("service {service}")]
    Systemd {
        service: String,
        #[source]
        source: SystemdError,
    },

    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// The service drivers of one host (systemd and exec), as one resource
/// driver.
///
/// The reconciler drives it through the [`Driver`](crate::driver::Driver)
/// contract, and through [`reload`](Self::reload) and
/// [`restart`](Self::restart) for handlers.
#[derive(Debug)]
pub struct ServicesDriver {
    host_root: PathBuf,
    bus: SystemBus,
    job_timeout: Duration,
    exec: ExecDriver,
    /// Connected on first use and kept; dropped after a bus failure so the
    /// next call connects afresh (dbus-daemon may have restarted).
    systemd: Mutex<Option<Systemd>>,
}

impl Default for ServicesDriver {
    fn default() -> Self {
        ServicesDriver {
            host_root: PathBuf::from("/"),
            bus: SystemBus::Default,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            exec: ExecDriver::default(),
            systemd: Mutex::new(None),
        }
    }
}

impl ServicesDriver {
    /// The root under which `driver: auto` looks for `run/systemd/system`
    /// (`/` on a real host; a booted test root in tests).
    pub fn host_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.host_root = root.into();
        self
    }

    /// The bus systemd is reached on.
    pub fn bus(mut self, bus: SystemBus) -> Self {
        self.bus = bus;
        *self
            .systemd
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// How long one systemd job may take.
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        *self
            .systemd
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self
    }

    /// How exec commands are run.
    pub fn exec(mut self, exec: ExecDriver) -> Self {
        self.exec = exec;
        self
    }

    /// Whether this host runs systemd as its init (sd_booted(3)).
    pub fn host_has_systemd(&self) -> bool {
        self.systemd_marker().is_dir()
    }

    /// How `service` is driven here: its `driver`, with `auto` meaning systemd
    /// when the host runs it.
    pub fn backend(&self, service: &Service) -> Result<Backend, ServiceError> {
        let systemd = match service.driver {
            ServiceDriver::Systemd => true,
            ServiceDriver::Exec => false,
            ServiceDriver::Auto => self.host_has_systemd(),
        };
        if systemd {
            return Ok(Backend::Systemd {
                unit: service.unit.clone(),
            });
        }
        match &service.exec {
            Some(commands) => Ok(Backend::Exec {
                commands: commands.clone(),
            }),
            None => Err(ServiceError::NoExecCommands {
                service: service.name.clone(),
                marker: self.systemd_marker(),
            }),
        }
    }

    /// Reads the service's state from the host.
    pub async fn observe(&self, service: &Service) -> Result<ServiceStatus, ServiceError> {
        let backend = self.backend(service)?;
        let name = &service.name;
        let (state, enabled, detail) = match &backend {
            Backend::Systemd { unit } => {
                let status = self
                    .with_systemd(name, |systemd| async move { systemd.status(unit).await })
                    .await?;
                let state = if status.is_running() {
                    Some(ServiceState::Running)
                } else if status.is_stopped() {
                    Some(ServiceState::Stopped)
                } else {
                    None
                };
                (state, status.is_enabled(), status.to_string())
            }
            Backend::Exec { commands } => {
                let running = self.exec.is_running(name, commands).await?;
                let (state, detail) = if running {
                    (ServiceState::Running, "status exited 0")
                } else {
                    (ServiceState::Stopped, "status exited non-zero")
                };
                (Some(state), None, detail.to_owned())
            }
        };
        Ok(ServiceStatus {
            service: name.clone(),
            backend,
            state,
            enabled,
            detail,
        })
    }

    /// The changes that bring `observed` to what `service` declares; empty
    /// when it is there. Enabling comes before starting and disabling after
    /// stopping, as `systemctl enable --now` and `disable --now` do.
    pub fn diff(&self, service: &Service, observed: &ServiceStatus) -> Vec<ServiceChange> {
        let change = |action| ServiceChange {
            service: service.name.clone(),
            backend: observed.backend.clone(),
            action,
        };
        let enablement = match (service.enabled, observed.enabled) {
            (Some(true), Some(false)) => Some(change(ServiceAction::Enable)),
            (Some(false), Some(true)) => Some(change(ServiceAction::Disable)),
            _ => None,
        };
        let activity = (observed.state != Some(service.state)).then(|| {
            change(match service.state {
                ServiceState::Running => ServiceAction::Start,
                ServiceState::Stopped => ServiceAction::Stop,
            })
        });
        match service.state {
            ServiceState::Running => enablement.into_iter().chain(activity).collect(),
            ServiceState::Stopped => activity.into_iter().chain(enablement).collect(),
        }
    }

    /// Makes the changes in order; each returns when its backend says it is
    /// done (systemd: the job finished; exec: status agrees).
    pub async fn apply(&self, changes: &[ServiceChange]) -> Result<(), ServiceError> {
        for change in changes {
            self.apply_one(change).await?;
        }
        Ok(())
    }

    /// Reloads the service if it runs (a `reloadOn` file or `reload` handler
    /// fired). Returns the change made, `None` for a stopped service.
    pub async fn reload(&self, service: &Service) -> Result<Option<ServiceChange>, ServiceError> {
        self.if_running(service, ServiceAction::Reload).await
    }

    /// Restarts the service if it runs (a `restart` handler fired). Returns
    /// the change made, `None` for a stopped service.
    pub async fn restart(&self, service: &Service) -> Result<Option<ServiceChange>, ServiceError> {
        self.if_running(service, ServiceAction::Restart).await
    }

    async fn if_running(
        &self,
        service: &Service,
        action: ServiceAction,
    ) -> Result<Option<ServiceChange>, ServiceError> {
        let observed = self.observe(service).await?;
        if observed.state != Some(ServiceState::Running) {
            return Ok(None);
        }
        let change = ServiceChange {
            service: service.name.clone(),
            backend: observed.backend,
            action,
        };
        self.apply_one(&change).await?;
        Ok(Some(change))
    }

    async fn apply_one(&self, change: &ServiceChange) -> Result<(), ServiceError> {
        let name = &change.service;
        match &change.backend {
            Backend::Systemd { unit } => {
                let action = change.action;
                self.with_systemd(name, |systemd| async move {
                    match action {
                        ServiceAction::Start => systemd.start(unit).await,
                        ServiceAction::Stop => systemd.stop(unit).await,
                        ServiceAction::Enable => systemd.enable(unit).await,
                        ServiceAction::Disable => systemd.disable(unit).await,
                        ServiceAction::Reload => systemd.reload(unit).await,
                        ServiceAction::Restart => systemd.restart(unit).await,
                    }
                })
                .await
            }
            Backend::Exec { commands } => {
                let exec = &self.exec;
                match change.action {
                    ServiceAction::Start => exec.start(name, commands).await?,
                    ServiceAction::Stop => exec.stop(name, commands).await?,
                    ServiceAction::Reload => exec.reload(name, commands).await?,
                    ServiceAction::Restart => {
                        exec.stop(name, commands).await?;
                        exec.start(name, commands).await?;
                    }
                    // Boot-time start is systemd's business; diff never plans
                    // these for exec services, whose `enabled` is unknown.
                    ServiceAction::Enable | ServiceAction::Disable => {}
                }
                Ok(())
            }
        }
    }

    /// Runs `call` with the (cached) systemd connection, wrapping errors with
    /// the service name and forgetting a connection that failed.
    async fn with_systemd<T, F, Fut>(&self, service: &str, call: F) -> Result<T, ServiceError>
    where
        F: FnOnce(Systemd) -> Fut,
        Fut: Future<Output = Result<T, SystemdError>>,
    {
        let wrap = |source| ServiceError::Systemd {
            service: service.to_owned(),
            source,
        };
        let cached = self
            .systemd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let systemd = match cached {
            Some(systemd) => systemd,
            None => {
                let systemd = Systemd::connect(&self.bus)
                    .await
                    .map_err(wrap)?
                    .job_timeout(self.job_timeout);
                *self.systemd.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(systemd.clone());
                systemd
            }
        };
        let result = call(systemd).await;
        if let Err(SystemdError::Call { .. } | SystemdError::SignalsEnded { .. }) = &result {
            *self.systemd.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        result.map_err(wrap)
    }

    fn systemd_marker(&self) -> PathBuf {
        self.host_root.join(SYSTEMD_MARKER)
    }
}

impl crate::driver::ResourceChange for ServiceChange {
    /// Whether the change is about running (start/stop/reload/restart) or
    /// about starting at boot (enable/disable).
    type Subject = (String, bool);

    fn subject(&self) -> Self::Subject {
        let boot = matches!(self.action, ServiceAction::Enable | ServiceAction::Disable);
        (self.service.clone(), boot)
    }
}

impl crate::driver::Driver for ServicesDriver {
    type Desired = Service;
    type Observed = ServiceStatus;
    type Change = ServiceChange;
    type Error = ServiceError;

    fn resource(&self, desired: &Service) -> crate::driver::Resource {
        crate::driver::Resource::Service {
            name: desired.name.clone(),
        }
    }

    async fn observe(&self, desired: &Service) -> Result<ServiceStatus, ServiceError> {
        ServicesDriver::observe(self, desired).await
    }

    fn diff(
        &self,
        desired: &Service,
        observed: &ServiceStatus,
    ) -> Result<Vec<ServiceChange>, ServiceError> {
        Ok(ServicesDriver::diff(self, desired, observed))
    }

    async fn apply(
        &self,
        changes: &[ServiceChange],
    ) -> Result<Vec<crate::driver::Effect>, ServiceError> {
        ServicesDriver::apply(self, changes).await?;
        Ok(Vec::new())
    }
}
