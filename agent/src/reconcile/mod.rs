//! Plan and apply a host manifest: every resource through the same
//! observe -> diff (-> apply -> verify) path. The sum types over the
//! drivers ([`Change`], [`Error`]) live here, above the drivers.

mod change;
mod error;

pub use change::Change;
pub use error::Error;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use mailctl_schemas::model::{Handler, HostSpec, ManagedFile, ServiceState};

use crate::address::AddressDriver;
use crate::command::argv_text;
use crate::config::AgentConfig;
use crate::driver::{Driver, Effect, Resource, ResourceChange};
use crate::files::FileDriver;
use crate::firewall::{FirewallDriver, LockoutGuard, ProtectedPort};
use crate::service::{ServiceChange, ServicesDriver};
use crate::tasks::TaskDriver;

/// The port the agent's API listens on unless configured otherwise.
pub const DEFAULT_API_PORT: u16 = mailctl_api::DEFAULT_PORT;

/// How the reconciler reaches the host, and what it protects.
#[derive(Debug)]
pub struct Config {
    api_port: u16,
    ssh_port: u16,
    admin_sources: Vec<IpNet>,
    nft: PathBuf,
    dad_timeout: Duration,
    state_dir: PathBuf,
    handler_timeout: Option<Duration>,
    services: ServicesDriver,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_port: DEFAULT_API_PORT,
            ssh_port: 22,
            admin_sources: Vec::new(),
            nft: PathBuf::from("nft"),
            dad_timeout: Duration::from_secs(5),
            state_dir: PathBuf::from("/var/lib/mailctl"),
            handler_timeout: None,
            services: ServicesDriver::default(),
        }
    }
}

impl Config {
    /// What `agent.toml` says: the API port (from `listen`), the SSH port,
    /// the admin ranges and the state directory.
    pub fn for_agent(agent: &AgentConfig) -> Self {
        Config::default()
            .api_port(agent.listen.port())
            .ssh_port(agent.ssh_port)
            .admin_sources(agent.admin_sources.clone())
            .state_dir(&agent.state_dir)
    }

    /// The agent API port the firewall must keep reachable.
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = port;
        self
    }

    /// The SSH port the firewall must keep reachable.
    pub fn ssh_port(mut self, port: u16) -> Self {
        self.ssh_port = port;
        self
    }

    /// The ranges the controller and the admins connect from: each must
    /// keep reaching SSH and the API port (default: every address, IPv4
    /// and IPv6; see [`LockoutGuard`]).
    pub fn admin_sources(mut self, sources: Vec<IpNet>) -> Self {
        self.admin_sources = sources;
        self
    }

    /// The `nft` program (default: `nft` from `PATH`).
    pub fn nft(mut self, program: impl Into<PathBuf>) -> Self {
        self.nft = program.into();
        self
    }

    /// How long to wait for IPv6 duplicate address detection before giving
    /// up on announcing a new address (default 5 s).
    pub fn dad_timeout(mut self, timeout: Duration) -> Self {
        self.dad_timeout = timeout;
        self
    }

    /// Where pending onChange handlers and task completions are recorded
    /// (default `/var/lib/mailctl`).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// How long an `onChange` `run` handler may take before it is killed
    /// (default: the files driver's, 60 s).
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }

    /// How services are driven (systemd bus, exec timeouts).
    pub fn services(mut self, services: ServicesDriver) -> Self {
        self.services = services;
        self
    }
}

/// Converges this host (the network namespace of the thread that created
/// it) to a [`HostSpec`].
#[derive(Debug)]
pub struct Reconciler {
    addresses: AddressDriver,
    firewall: FirewallDriver,
    files: FileDriver,
    tasks: TaskDriver,
    services: ServicesDriver,
}

/// What one resource needs, or why that could not be worked out.
#[derive(Debug)]
pub struct ResourcePlan {
    pub resource: Resource,
    pub changes: Result<Vec<Change>, Error>,
}

/// What an apply did to one resource. `Ok` lists only changes that were
/// seen on the host afterwards.
#[derive(Debug)]
pub struct ResourceReport {
    pub resource: Resource,
    pub result: Result<Applied, Error>,
}

/// Changes made and verified, and their side effects.
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    pub effects: Vec<Effect>,
    /// Every handler the changes made due, run or skipped (and why), in
    /// order; the ones that ran are also [`Effect::HandlerRan`].
    pub handlers: Vec<HandlerOutcome>,
}

/// What became of one handler (onChange, or a service's reloadOn) after a
/// managed file changed. Its `Display` is one line of `apply` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerOutcome {
    /// The managed file whose change made it due.
    pub path: PathBuf,
    pub handler: Handler,
    result: HandlerResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HandlerResult {
    /// The command exited 0.
    Ran,
    /// The service was reloaded or restarted.
    Service(ServiceChange),
    /// The service does not run, and a handler never starts one; when
    /// this state starts it (after its files), it reads the new file anyway.
    NotRunning { starts_later: bool },
    /// The state declares no such service.
    NotDeclared,
}

fn restart_handler(handler: &Handler) -> bool {
    matches!(handler, Handler::Restart(_))
}

impl fmt::Display for HandlerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, service) = match &self.handler {
            Handler::Run(argv) => return write!(f, "ran {}", argv_text(argv)),
            Handler::Reload(name) => ("reload", name),
            Handler::Restart(name) => ("restart", name),
        };
        match &self.result {
            HandlerResult::Ran => write!(f, "{verb}ed service {service}"),
            HandlerResult::Service(change) => write!(
                f,
                "{verb}ed service {} ({})",
                change.service, change.backend
            ),
            HandlerResult::NotRunning { starts_later: true } => write!(
                f,
                "skipped {verb} of service {service}: it does not run yet, and starts below with the new file"
            ),
            HandlerResult::NotRunning {
                starts_later: false,
            } => write!(
                f,
                "skipped {verb} of service {service}: it does not run, and a handler never starts a service"
            ),
            HandlerResult::NotDeclared => write!(
                f,
                "skipped {verb} of service {service}: this state declares no such service"
            ),
        }
    }
}

/// The result of [`Reconciler::apply`], one entry per resource.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub resources: Vec<ResourceReport>,
}

impl ApplyReport {
    /// Whether every resource converged.
    pub fn is_success(&self) -> bool {
        self.resources.iter().all(|r| r.result.is_ok())
    }

    /// The failures, by resource.
    pub fn errors(&self) -> impl Iterator<Item = (&Resource, &Error)> {
        self.resources
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(|e| (&r.resource, e)))
    }

    /// All verified changes.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.resources
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .flat_map(|applied| &applied.changes)
    }

    /// All side effects (announcements).
    pub fn effects(&self) -> impl Iterator<Item = &Effect> {
        self.resources
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .flat_map(|applied| &applied.effects)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plan,
    Apply,
}

enum Outcome {
    Planned(Vec<Change>),
    Applied(Applied),
}

impl Reconciler {
    /// Opens the netlink socket in the calling thread's network namespace.
    /// Must run inside a tokio runtime, which drives the socket.
    pub fn connect(config: Config) -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
        tokio::spawn(connection);
        let mut files = FileDriver::new(config.state_dir.join("files"));
        if let Some(timeout) = config.handler_timeout {
            files = files.handler_timeout(timeout);
        }
        Ok(Reconciler {
            addresses: AddressDriver::new(handle, config.dad_timeout),
            firewall: FirewallDriver::new(
                config.nft,
                LockoutGuard::new(
                    vec![
                        ProtectedPort {
                            port: config.ssh_port,
                            service: "SSH",
                        },
                        ProtectedPort {
                            port: config.api_port,
                            service: "the mailctl agent API",
                        },
                    ],
                    config.admin_sources,
                ),
            ),
            files,
            tasks: TaskDriver::new(config.state_dir.join("tasks")),
            services: config.services,
        })
    }

    /// What [`apply`](Self::apply) would change, without changing anything.
    pub async fn plan(&self, spec: &HostSpec) -> Vec<ResourcePlan> {
        self.run(spec, Mode::Plan)
            .await
            .into_iter()
            .map(|(resource, outcome)| ResourcePlan {
                resource,
                changes: outcome.map(|outcome| match outcome {
                    Outcome::Planned(changes) => changes,
                    Outcome::Applied(applied) => applied.changes,
                }),
            })
            .collect()
    }

    /// Converges the host and reports what changed, as seen afterwards.
    /// A failing resource does not stop the others.
    pub async fn apply(&self, spec: &HostSpec) -> ApplyReport {
        let resources = self
            .run(spec, Mode::Apply)
            .await
            .into_iter()
            .map(|(resource, outcome)| ResourceReport {
                resource,
                result: outcome.map(Outcome::into_applied),
            })
            .collect();
        ApplyReport { resources }
    }

    /// The resources `spec` declares, in report order: addresses, the
    /// firewall, files, tasks, services.
    ///
    /// Addresses and the firewall are independent (the owned table matches
    /// sources and ports, never this host's own addresses), so
    /// [`apply`](Self::apply) and [`plan`](Self::plan) converge the two
    /// concurrently; while the kernel takes a thousand addresses, `nft` writes
    /// and reads back the table in its own process. Everything else waits
    /// until both are done and verified, then goes one by one in this order.
    pub fn resources(&self, spec: &HostSpec) -> Vec<Resource> {
        let mut resources = Vec::new();
        if !spec.addresses.is_empty() {
            resources.push(self.addresses.resource(&spec.addresses));
        }
        if let Some(firewall) = &spec.firewall {
            resources.push(self.firewall.resource(firewall));
        }
        // Files before tasks and services: a task or a starting daemon reads
        // the configuration the manifest declares, not the old one.
        resources.extend(spec.files.iter().map(|f| self.files.resource(f)));
        resources.extend(spec.tasks.iter().map(|t| self.tasks.resource(t)));
        resources.extend(
            spec.services
                .iter()
                .map(|s| Driver::resource(&self.services, s)),
        );
        resources
    }

    /// Converges one resource of `spec` and verifies it; what
    /// [`apply`](Self::apply) does for each resource. A resource `spec` does
    /// not declare (any more) is left alone.
    pub async fn apply_resource(
        &self,
        spec: &HostSpec,
        resource: &Resource,
    ) -> Result<Applied, Error> {
        self.reconcile_resource(spec, resource, Mode::Apply)
            .await
            .map(Outcome::into_applied)
    }

    /// Run the handlers a file change made due, in order, each recorded as
    /// run as soon as it ran (so a crash never runs one twice or loses one).
    async fn run_handlers(&self, spec: &HostSpec, applied: &mut Applied) -> Result<(), Error> {
        let mut effects = Vec::new();
        for effect in std::mem::take(&mut applied.effects) {
            let Effect::HandlersDue { path, handlers } = effect else {
                effects.push(effect);
                continue;
            };
            for handler in &handlers {
                let result = match handler {
                    Handler::Run(argv) => {
                        self.files.run_handler(&path, argv).await?;
                        HandlerResult::Ran
                    }
                    Handler::Reload(name) | Handler::Restart(name) => {
                        let restart = restart_handler(handler);
                        let declared = spec.services.iter().find(|s| &s.name == name);
                        let done = match declared {
                            // A stopped service is not started by a handler.
                            Some(service) if restart => self.services.restart(service).await?,
                            Some(service) => self.services.reload(service).await?,
                            None => None,
                        };
                        self.files.handler_ran(&path, handler).await?;
                        match (done, declared) {
                            (Some(change), _) => HandlerResult::Service(change),
                            (None, Some(service)) => HandlerResult::NotRunning {
                                starts_later: service.state == ServiceState::Running,
                            },
                            (None, None) => HandlerResult::NotDeclared,
                        }
                    }
                };
                let outcome = HandlerOutcome {
                    path: path.clone(),
                    handler: handler.clone(),
                    result,
                };
                // The log's line: `ran `CMD` (changed PATH)`, `ran reload of service S (BACKEND) (...)`.
                let ran = match (&outcome.handler, &outcome.result) {
                    (Handler::Run(argv), _) => Some(format!("`{}`", argv_text(argv))),
                    (_, HandlerResult::Service(change)) => Some(format!(
                        "{} of service {} ({})",
                        if restart_handler(handler) {
                            "restart"
                        } else {
                            "reload"
                        },
                        change.service,
                        change.backend
                    )),
                    _ => None,
                };
                if let Some(handler) = ran {
                    effects.push(Effect::HandlerRan {
                        path: path.clone(),
                        handler,
                    });
                }
                applied.handlers.push(outcome);
            }
        }
        applied.effects = effects;
        Ok(())
    }

    /// The one path of plan and apply: the network resources (addresses and
    /// the firewall) together, then the others in order.
    async fn run(&self, spec: &HostSpec, mode: Mode) -> Vec<(Resource, Result<Outcome, Error>)> {
        let resources = self.resources(spec);
        let network = resources.iter().take_while(|r| r.is_network()).count();
        let (network, rest) = resources.split_at(network);
        // Reported in resource order, whichever finishes first.
        let mut results: Vec<(Resource, Result<Outcome, Error>)> = network
            .iter()
            .cloned()
            .zip(
                futures::future::join_all(
                    network
                        .iter()
                        .map(|resource| self.reconcile_resource(spec, resource, mode)),
                )
                .await,
            )
            .collect();
        for resource in rest {
            let outcome = self.reconcile_resource(spec, resource, mode).await;
            results.push((resource.clone(), outcome));
        }
        results
    }

    async fn reconcile_resource(
        &self,
        spec: &HostSpec,
        resource: &Resource,
        mode: Mode,
    ) -> Result<Outcome, Error> {
        match (resource, &spec.firewall) {
            (Resource::Addresses, _) => {
                reconcile(&self.addresses, spec.addresses.as_slice(), mode).await
            }
            (Resource::Firewall { table }, Some(firewall)) if firewall.table == *table => {
                reconcile(&self.firewall, firewall, mode).await
            }
            (Resource::Firewall { .. }, _) => Ok(Outcome::Planned(Vec::new())),
            (Resource::File { path }, _) => {
                let Some(file) = spec.files.iter().find(|f| &f.path == path) else {
                    return Ok(Outcome::Planned(Vec::new()));
                };
                let file = with_reloads(spec, file);
                let mut outcome = reconcile(&self.files, &file, mode).await?;
                if let Outcome::Applied(applied) = &mut outcome {
                    self.run_handlers(spec, applied).await?;
                }
                Ok(outcome)
            }
            (Resource::Task { name }, _) => match spec.tasks.iter().find(|t| &t.name == name) {
                Some(task) => reconcile(&self.tasks, task, mode).await,
                None => Ok(Outcome::Planned(Vec::new())),
            },
            (Resource::Service { name }, _) => {
                match spec.services.iter().find(|s| &s.name == name) {
                    Some(service) => reconcile(&self.services, service, mode).await,
                    None => Ok(Outcome::Planned(Vec::new())),
                }
            }
        }
    }
}

/// A file's handlers plus a reload of every service whose `reloadOn` names
/// it, so both go through the same once-per-change bookkeeping.
fn with_reloads(spec: &HostSpec, file: &ManagedFile) -> ManagedFile {
    let mut file = file.clone();
    for service in spec
        .services
        .iter()
        .filter(|s| s.reload_on.contains(&file.path))
    {
        let reload = Handler::Reload(service.name.clone());
        if !file.on_change.contains(&reload) {
            file.on_change.push(reload);
        }
    }
    file
}

impl Outcome {
    fn into_applied(self) -> Applied {
        match self {
            // Apply plans only when there is nothing to do.
            Outcome::Planned(_) => Applied::default(),
            Outcome::Applied(applied) => applied,
        }
    }
}

async fn reconcile<D>(driver: &D, desired: &D::Desired, mode: Mode) -> Result<Outcome, Error>
where
    D: Driver,
    Change: From<D::Change>,
    Error: From<D::Error>,
{
    let observed = driver.observe(desired).await?;
    let changes = driver.diff(desired, &observed)?;
    if mode == Mode::Plan || changes.is_empty() {
        return Ok(Outcome::Planned(
            changes.into_iter().map(Into::into).collect(),
        ));
    }
    let effects = driver.apply(&changes).await?;
    let pending = driver.verify(desired).await?;
    let (seen, unseen): (Vec<D::Change>, Vec<D::Change>) = changes
        .into_iter()
        .partition(|change| pending.iter().all(|p| p.subject() != change.subject()));
    if !unseen.is_empty() {
        let unseen_subjects: Vec<_> = unseen.iter().map(ResourceChange::subject).collect();
        return Err(Error::NotObserved {
            resource: driver.resource(desired),
            pending: pending
                .into_iter()
                .filter(|p| unseen_subjects.contains(&p.subject()))
                .map(Into::into)
                .collect(),
        });
    }
    // Pending changes about other subjects are new drift, not a failure of
    // this apply: the next reconcile takes them.
    Ok(Outcome::Applied(Applied {
        changes: seen.into_iter().map(Into::into).collect(),
        effects,
        handlers: Vec::new(),
    }))
}

/// An error with its causes, `: `-separated (one for the agent and its
/// listener).
pub use mailctl_server::error_chain;

impl fmt::Display for ResourcePlan {
    /// One line per change; `= resource: up to date` or `! resource: error`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.changes {
            Ok(changes) if changes.is_empty() => write!(f, "= {}: up to date", self.resource),
            Ok(changes) => {
                let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
            Err(error) => write!(f, "! {}", error_chain(error)),
        }
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Vec::new();
        for report in &self.resources {
            match &report.result {
                Ok(applied) if applied.changes.is_empty() => {
                    lines.push(format!("= {}: up to date", report.resource));
                }
                Ok(applied) => {
                    lines.extend(applied.changes.iter().map(ToString::to_string));
                    lines.extend(applied.effects.iter().map(|e| format!("  {e}")));
                }
                Err(error) => lines.push(format!("! {}", error_chain(error))),
            }
        }
        f.write_str(&lines.join("\n"))
    }
}
