//! `mailctl controller`: holds the migrations of its manifest folder, drives
//! each one towards its target with an [`Executor`], and serves the admins'
//! API (mutual TLS; admin certificates only) for `mailctl status`,
//! `approve`, `pause`, `resume`, `retry`, `fence`, `history` and `apply`.
//!
//! Configuration (`controller.toml`, figment; `MAILCTL_CONTROLLER_*`
//! environment variables too):
//!
//! ```toml
//! listen = "127.0.0.1:7444"
//! state_dir = "/var/lib/mailctl-controller"
//! manifests = "/etc/mailctl/manifests"
//! [tls]            # the controller's folder of `mailctl certs init`
//! ca = "/etc/mailctl/tls/ca.pem"
//! cert = "/etc/mailctl/tls/controller.pem"
//! key = "/etc/mailctl/tls/controller.key"
//! crl = "/etc/mailctl/tls/ca.crl"
//! ```
//!
//! `mailctl apply -f DIR` uploads a manifest set: validated (nothing changes
//! when it is not), written to `state_dir/manifests.yaml` (the set in force
//! after a restart; the `manifests` folder is read only when there is none),
//! and each migration's target set from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use mailctl_api::controller::{
    Applied, GateView, HistoryEntry, HostView, IntentBody, IntentView, MigrationView,
    TransitionView, route,
};
use mailctl_api::roles::{Peer, Role};
use mailctl_api::{ApiError, ErrorKind, TlsFiles};
use mailctl_schemas::model::{GateCheck, ManifestSet, Migration};
use mailctl_schemas::{ContentReader, Source};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::agents::ApiAgents;
use crate::clock;
use crate::execute::{Executor, Outcome, Shared};
use crate::plan::plan_transition;
use crate::record::{GateOutcome, Intent, MigrationRecord};
use crate::store::{DirStore, Store, StoreError, write_durably};

/// `controller.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The manifest folder read at the first start.
    pub manifests: Option<PathBuf>,
    pub tls: TlsFiles,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], mailctl_api::controller::DEFAULT_PORT))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mailctl-controller")
}

impl ControllerConfig {
    /// Reads `path` (and `MAILCTL_CONTROLLER_*`), one located error when wrong.
    pub fn load(path: &Path) -> Result<ControllerConfig, String> {
        use figment::providers::{Env, Format, Toml};
        figment::Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("MAILCTL_CONTROLLER_").split("__"))
            .extract()
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] mailctl_api::TlsError),
    #[error("the manifests {path} are not valid; fix them and start again\n{diagnostics}")]
    Manifests { path: PathBuf, diagnostics: String },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the agents of migration {migration}: {source}")]
    Agents {
        migration: String,
        source: mailctl_api::ClientError,
    },
}

/// What the API and the drivers share.
struct Controller {
    store: DirStore,
    tls: TlsFiles,
    state_dir: PathBuf,
    set: RwLock<Arc<ManifestSet>>,
    migrations: RwLock<BTreeMap<String, Arc<Shared>>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// One upload at a time, from validation to the set in force.
    uploads: tokio::sync::Mutex<()>,
}

/// The bytes a manifest upload may have (the agent's API takes 2 MB for
/// one host; a migration holds several).
const MAX_MANIFESTS: usize = 4 * 1024 * 1024;

/// The bytes of an intent's body, and of its reason (kept in the history).
const MAX_INTENT: usize = 16 * 1024;
const MAX_REASON: usize = 1024;

struct NoSources;

impl ContentReader for NoSources {
    fn read(&self, _: &Path, source: &str) -> Result<String, String> {
        Err(format!(
            "a manifest set sent to the controller carries its files inline (content:), not source: {source}; `mailctl apply` inlines them"
        ))
    }
}

/// Validates an uploaded set (as `mailctl validate` would).
fn validate_upload(text: String) -> Result<ManifestSet, String> {
    mailctl_schemas::validate(
        &[Source {
            path: PathBuf::from("(uploaded)"),
            text,
        }],
        &NoSources,
    )
    .map_err(|d| d.to_string())
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    config: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let store = DirStore::open(&config.state_dir)?;
    let saved = config.state_dir.join("manifests.yaml");
    let set = if saved.exists() {
        let text = std::fs::read_to_string(&saved).unwrap_or_default();
        validate_upload(text).map_err(|diagnostics| ControllerError::Manifests {
            path: saved.clone(),
            diagnostics,
        })?
    } else if let Some(folder) = &config.manifests {
        mailctl_schemas::load::load_paths(&[folder]).map_err(|d| ControllerError::Manifests {
            path: folder.clone(),
            diagnostics: d.to_string(),
        })?
    } else {
        ManifestSet::default()
    };
    let (records, problems) = store.load_all();
    for problem in problems {
        tracing::error!("{problem}");
    }
    let tls_server = mailctl_server::ServerTls::load(config.tls.clone())?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ControllerError::Listen {
                address: config.listen,
                source,
            })?;
    let controller = Arc::new(Controller {
        store,
        tls: config.tls.clone(),
        state_dir: config.state_dir.clone(),
        set: RwLock::new(Arc::new(set.clone())),
        migrations: RwLock::new(BTreeMap::new()),
        metrics: Arc::new(crate::metrics::Metrics::default()),
        uploads: tokio::sync::Mutex::new(()),
    });
    for migration in &set.migrations {
        let record = records
            .iter()
            .find(|r| r.migration == migration.name)
            .cloned()
            .unwrap_or_else(|| MigrationRecord::new(&migration.name, &migration.target_phase));
        controller.start(&migration.name, record);
    }
    let router = router(controller.clone());
    let limits = mailctl_server::Limits::for_this_process();
    tracing::info!(listen = %config.listen, migrations = set.migrations.len(), "controller started");
    mailctl_server::supervise(listener, tls_server, router, limits, shutdown).await;
    Ok(())
}

impl Controller {
    fn set(&self) -> Arc<ManifestSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn shared(&self, name: &str) -> Option<Arc<Shared>> {
        self.migrations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Starts the driver of one migration: drive, then wait for an intent
    /// or new manifests, and drive again.
    fn start(self: &Arc<Self>, name: &str, record: MigrationRecord) {
        let shared = Shared::with_metrics(record, self.metrics.clone());
        self.migrations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), shared.clone());
        let controller = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            loop {
                let changed = shared.changed.notified();
                let set = controller.set();
                let Some(migration) = set.migrations.iter().find(|m| m.name == name) else {
                    return;
                };
                let agents = match ApiAgents::new(migration, &controller.tls) {
                    Ok(agents) => agents,
                    Err(e) => {
                        tracing::error!(migration = %name, "{e}");
                        changed.await;
                        continue;
                    }
                };
                let executor = Executor {
                    agents: &agents,
                    store: &controller.store,
                    set: &set,
                    migration,
                    shared: shared.clone(),
                };
                match executor.drive().await {
                    Ok(Outcome::Reached(phase)) => {
                        tracing::info!(migration = %name, %phase, "target reached");
                    }
                    Ok(Outcome::Paused(reason)) => {
                        tracing::warn!(migration = %name, "paused: {reason}");
                    }
                    Ok(Outcome::RolledBack { to, reason }) => {
                        tracing::warn!(migration = %name, to = ?to, "rolled back: {reason}");
                    }
                    Err(e) => tracing::error!(migration = %name, "{e}"),
                }
                changed.await;
            }
        });
    }

    /// A new manifest set: stored, and each migration's target set.
    fn apply(
        self: &Arc<Self>,
        set: ManifestSet,
        text: &str,
        by: &str,
    ) -> Result<Vec<Applied>, ApiError> {
        write_durably(&self.state_dir.join("manifests.yaml"), text.as_bytes())
            .map_err(|e| ApiError::new(ErrorKind::Internal, e))?;
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set.clone());
        let mut applied = Vec::new();
        for migration in &set.migrations {
            match self.shared(&migration.name) {
                Some(shared) => {
                    shared.with(|r| {
                        if r.target != migration.target_phase {
                            r.log(
                                clock::unix_now(),
                                format!(
                                    "{by} applied new manifests: target {} (was {})",
                                    migration.target_phase, r.target
                                ),
                            );
                            r.target = migration.target_phase.clone();
                        }
                    });
                    let _ = self.store.save(&shared.snapshot());
                    shared.changed.notify_waiters();
                }
                None => {
                    let record = MigrationRecord::new(&migration.name, &migration.target_phase);
                    let _ = self.store.save(&record);
                    self.start(&migration.name, record);
                }
            }
            applied.push(Applied {
                migration: migration.name.clone(),
                target: migration.target_phase.clone(),
            });
        }
        Ok(applied)
    }

    /// What a new set may not do to the migrations held:
    /// - one agent in two migrations, or one exclusive address in two (each
    ///   migration keeps the service-IP rule only within itself);
    /// - drop a migration whose transition is in flight (its driver would
    ///   go on unseen);
    /// - move a target back before a phase at or past the point of no
    ///   return that was reached or is being reached, or move or remove a
    ///   point of no return already passed.
    fn check_upload(&self, set: &ManifestSet) -> Result<(), String> {
        let mut agents: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        let mut exclusive: BTreeMap<ipnet::IpNet, &str> = BTreeMap::new();
        for migration in &set.migrations {
            for (host, entry) in &migration.hosts {
                if let Some((other, other_host)) =
                    agents.insert(entry.agent.as_str(), (&migration.name, host))
                {
                    return Err(format!(
                        "host {host} of migration {} and host {other_host} of migration {other} are the same agent ({}): a host can be in one migration at a time",
                        migration.name, entry.agent
                    ));
                }
            }
            let mine: std::collections::BTreeSet<ipnet::IpNet> = set
                .phases_of(migration)
                .flat_map(|p| p.hosts.values())
                .flat_map(|spec| &spec.addresses)
                .filter(|a| a.exclusive)
                .map(|a| a.address)
                .collect();
            for address in mine {
                if let Some(other) = exclusive.insert(address, &migration.name) {
                    return Err(format!(
                        "exclusive address {address} is in migration {other} and in migration {}: a service IP belongs to one migration, or two could place it on two hosts",
                        migration.name
                    ));
                }
            }
        }
        let held = self
            .migrations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let old_set = self.set();
        for (name, shared) in &held {
            let record = shared.snapshot();
            let Some(new) = set.migrations.iter().find(|m| &m.name == name) else {
                if let Some(t) = &record.transition {
                    return Err(format!(
                        "the new manifests drop migration {name}, which is moving to {}; let it reach its phase (or pause it and roll it back) first",
                        t.to
                    ));
                }
                continue;
            };
            let index = |m: &Migration, phase: &str| m.phases.iter().position(|p| p == phase);
            let furthest = record
                .transition
                .as_ref()
                .map(|t| t.to.clone())
                .into_iter()
                .chain(record.phase.clone())
                .filter_map(|p| index(new, &p).map(|i| (i, p)))
                .max();
            let Some((at, phase)) = furthest else {
                continue;
            };
            let old = old_set.migrations.iter().find(|m| &m.name == name);
            let passed = |m: &Migration| {
                m.point_of_no_return
                    .as_deref()
                    .and_then(|pnr| index(m, pnr))
                    .is_some_and(|pnr| pnr <= at)
            };
            if let Some(old) = old
                && passed(old)
                && old.point_of_no_return != new.point_of_no_return
            {
                return Err(format!(
                    "migration {name} has passed its point of no return ({}); it cannot be moved or removed",
                    old.point_of_no_return.as_deref().unwrap_or_default()
                ));
            }
            let target = index(new, &new.target_phase).unwrap_or(at);
            if passed(new) && target < at {
                return Err(format!(
                    "migration {name} is at {phase}, at or past its point of no return ({}): targetPhase {} would take it back; new mail may be on the new host, and going back needs a reverse sync this migration does not declare",
                    new.point_of_no_return.as_deref().unwrap_or_default(),
                    new.target_phase
                ));
            }
        }
        Ok(())
    }

    fn view(&self, name: &str) -> Option<MigrationView> {
        let shared = self.shared(name)?;
        let set = self.set();
        let migration = set.migrations.iter().find(|m| m.name == name)?;
        Some(view(&set, migration, &shared.snapshot()))
    }
}

fn intent_view(intent: &Intent) -> IntentView {
    IntentView {
        by: intent.by.clone(),
        at_unix: intent.at_unix,
        reason: intent.reason.clone(),
    }
}

/// The status of one migration, as `mailctl status` shows it.
pub fn view(set: &ManifestSet, migration: &Migration, record: &MigrationRecord) -> MigrationView {
    let transition = record.transition.as_ref().map(|t| {
        let steps = set
            .phases_of(migration)
            .find(|p| p.name == t.to)
            .and_then(|to| {
                let current = crate::execute::phase_states(set, migration, t.from.as_deref());
                plan_transition(migration, &current, to).ok()
            })
            .map(|plan| plan.steps.iter().map(|s| s.kind().to_string()).collect())
            .unwrap_or_default();
        TransitionView {
            from: t.from.clone(),
            to: t.to.clone(),
            rollback: t.rollback,
            steps,
            step: t.step,
            step_since_unix: t.step_started_unix,
            waiting: t.waiting.clone(),
            gates: t
                .gates
                .iter()
                .map(|g| GateView {
                    gate: g.gate.clone(),
                    run: g.run,
                    outcome: match g.outcome {
                        None => "running".into(),
                        Some(GateOutcome::Passed) => "passed".into(),
                        Some(GateOutcome::Failed) => "failed".into(),
                        Some(GateOutcome::Inconclusive) => "inconclusive".into(),
                    },
                    reason: g.reason.clone(),
                    started_unix: g.started_unix,
                    finished_unix: g.finished_unix,
                })
                .collect(),
        }
    });
    let state = match (&record.paused, &transition) {
        (Some(paused), _) => format!("paused: {}", paused.reason),
        (None, Some(t)) => {
            let step = t
                .steps
                .get(t.step)
                .cloned()
                .unwrap_or_else(|| "starting".into());
            let verb = if t.rollback { "rolling back" } else { "moving" };
            match &t.waiting {
                Some(waiting) => format!("{verb} to {}: {step}, {waiting}", t.to),
                None => format!("{verb} to {}: {step}", t.to),
            }
        }
        (None, None) if record.phase.as_deref() == Some(record.target.as_str()) => {
            format!("reached {}", record.target)
        }
        (None, None) => format!(
            "at {}, target {}",
            record.phase.as_deref().unwrap_or("(no phase yet)"),
            record.target
        ),
    };
    MigrationView {
        name: migration.name.clone(),
        phases: migration.phases.clone(),
        phase: record.phase.clone(),
        target: record.target.clone(),
        point_of_no_return: migration.point_of_no_return.clone(),
        state,
        transition,
        paused: record.paused.as_ref().map(intent_view),
        fenced: record
            .fenced
            .iter()
            .map(|(h, i)| (h.clone(), intent_view(i)))
            .collect(),
        hosts: migration
            .hosts
            .iter()
            .map(|(h, entry)| {
                (
                    h.clone(),
                    HostView {
                        agent: entry.agent.clone(),
                        generation: record.generations.get(h).copied(),
                    },
                )
            })
            .collect(),
    }
}

fn error(kind: ErrorKind, message: impl std::fmt::Display) -> Response {
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(ApiError::new(kind, message))).into_response()
}

/// The admin a request comes from (the only role the controller answers).
#[derive(Debug, Clone)]
struct Admin(String);

async fn admins_only(mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_else(Peer::anonymous);
    match &peer.role {
        Some(Role::Admin(name)) => {
            let name = name.clone();
            request.extensions_mut().insert(Admin(name));
            next.run(request).await
        }
        other => {
            let role = other
                .as_ref()
                .map_or("no mailctl role".to_owned(), ToString::to_string);
            tracing::warn!(subject = %peer.subject, serial = %peer.serial, %role, "refused an API request: only admins may call the controller");
            error(
                ErrorKind::Forbidden,
                format!(
                    "{role} may not call the controller: only admins may (certificate CN={} serial {}); issue one with `mailctl certs add admin NAME`",
                    peer.subject, peer.serial
                ),
            )
        }
    }
}

type Api = State<Arc<Controller>>;

fn router(controller: Arc<Controller>) -> Router {
    Router::new()
        .route(route::MIGRATIONS, get(list))
        .route(route::MIGRATION, get(one))
        .route(route::HISTORY, get(history))
        .route(
            route::INTENT,
            post(intent).layer(axum::extract::DefaultBodyLimit::max(MAX_INTENT)),
        )
        .route(
            route::FENCE,
            post(fence).layer(axum::extract::DefaultBodyLimit::max(MAX_INTENT)),
        )
        .route(route::MANIFESTS, put(apply))
        .route("/metrics", get(metrics))
        .fallback(|request: Request| async move {
            error(
                ErrorKind::NotFound,
                format!("no route {} {}", request.method(), request.uri().path()),
            )
        })
        .with_state(controller)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MANIFESTS))
        .layer(middleware::from_fn(admins_only))
}

fn unknown(controller: &Controller, name: &str) -> Response {
    let names: Vec<String> = controller
        .migrations
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    error(
        ErrorKind::NotFound,
        format!(
            "no migration {name} (the controller holds: {})",
            if names.is_empty() {
                "none; `mailctl apply -f DIR` hands it one".to_owned()
            } else {
                names.join(", ")
            }
        ),
    )
}

/// Prometheus text; the phase and pause gauges are read from the records
/// at each scrape.
async fn metrics(State(c): Api) -> Response {
    let set = c.set();
    let names: Vec<String> = c
        .migrations
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    for name in names {
        let (Some(shared), Some(migration)) = (
            c.shared(&name),
            set.migrations.iter().find(|m| m.name == name),
        ) else {
            continue;
        };
        let record = shared.snapshot();
        let position = record
            .phase
            .as_ref()
            .and_then(|p| migration.phases.iter().position(|q| q == p))
            .map_or(0, |i| i + 1);
        c.metrics.phase(&name, position);
        c.metrics.paused(&name, record.paused.is_some());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        c.metrics.encode(),
    )
        .into_response()
}

async fn list(State(c): Api) -> Response {
    let names: Vec<String> = c
        .migrations
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    let views: Vec<MigrationView> = names.iter().filter_map(|n| c.view(n)).collect();
    axum::Json(views).into_response()
}

async fn one(State(c): Api, UrlPath(name): UrlPath<String>) -> Response {
    match c.view(&name) {
        Some(view) => axum::Json(view).into_response(),
        None => unknown(&c, &name),
    }
}

async fn history(State(c): Api, UrlPath(name): UrlPath<String>) -> Response {
    let Some(shared) = c.shared(&name) else {
        return unknown(&c, &name);
    };
    let entries: Vec<HistoryEntry> = shared
        .snapshot()
        .history
        .into_iter()
        .map(|e| HistoryEntry {
            at_unix: e.at_unix,
            what: e.what,
        })
        .collect();
    axum::Json(entries).into_response()
}

/// A migration the controller holds: its record, and the set in force
/// with the migration's place in it.
struct Held {
    shared: Arc<Shared>,
    set: Arc<ManifestSet>,
    index: usize,
}

impl Held {
    fn migration(&self) -> &Migration {
        &self.set.migrations[self.index]
    }
}

fn held(c: &Controller, name: &str) -> Result<Held, Box<Response>> {
    let set = c.set();
    let index = set.migrations.iter().position(|m| m.name == name);
    match (c.shared(name), index) {
        (Some(shared), Some(index)) => Ok(Held { shared, set, index }),
        _ => Err(Box::new(unknown(c, name))),
    }
}

/// The reason in an intent's body, at most [`MAX_REASON`] bytes.
fn reason_of(body: Option<axum::Json<IntentBody>>) -> Result<String, String> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    if reason.len() > MAX_REASON {
        return Err(format!(
            "the reason is {} bytes; at most {MAX_REASON} are kept",
            reason.len()
        ));
    }
    Ok(reason)
}

async fn intent(
    State(c): Api,
    axum::Extension(Admin(admin)): axum::Extension<Admin>,
    UrlPath((name, intent)): UrlPath<(String, String)>,
    body: Option<axum::Json<IntentBody>>,
) -> Response {
    let found = match held(&c, &name) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let (shared, set, migration) = (&found.shared, &found.set, found.migration());
    let reason = match reason_of(body) {
        Ok(reason) => reason,
        Err(why) => return error(ErrorKind::Invalid, why),
    };
    let record = shared.snapshot();
    match intent.as_str() {
        "approve" => {
            let gates: Vec<String> = set
                .phases_of(migration)
                .find(|p| record.transition.as_ref().is_some_and(|t| t.to == p.name))
                .map(|p| {
                    p.gates
                        .iter()
                        .filter(|g| matches!(g.check, GateCheck::Approval))
                        .map(|g| g.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            if let Err(why) = shared.approve_waiting(&gates, &admin) {
                return error(
                    ErrorKind::Conflict,
                    format!(
                        "migration {name} {why} ({}); nothing was approved",
                        view(set, migration, &record).state
                    ),
                );
            }
        }
        "pause" => {
            let reason = if reason.is_empty() {
                "no reason given".to_owned()
            } else {
                reason
            };
            shared.pause(&admin, &reason);
        }
        "resume" | "retry" => {
            if record.paused.is_none() {
                return error(
                    ErrorKind::Conflict,
                    format!(
                        "migration {name} is not paused ({}); nothing to {intent}",
                        view(set, migration, &record).state
                    ),
                );
            }
            shared.resume(&admin);
            if intent == "retry" {
                shared.with(|r| {
                    r.log(
                        clock::unix_now(),
                        format!("{admin} retries: failed gates get a fresh run"),
                    )
                });
            }
        }
        "rollback" => {
            if let Err(why) = crate::execute::roll_back_intent(shared, set, migration, &admin) {
                return error(ErrorKind::Conflict, format!("{why}; nothing was changed"));
            }
        }
        other => {
            return error(
                ErrorKind::NotFound,
                format!(
                    "no intent {other} (intents: approve, pause, resume, retry, rollback, fence)"
                ),
            );
        }
    }
    if let Err(e) = c.store.save(&shared.snapshot()) {
        return error(ErrorKind::Internal, e);
    }
    axum::Json(view(set, migration, &shared.snapshot())).into_response()
}

async fn fence(
    State(c): Api,
    axum::Extension(Admin(admin)): axum::Extension<Admin>,
    UrlPath((name, host)): UrlPath<(String, String)>,
    body: Option<axum::Json<IntentBody>>,
) -> Response {
    let found = match held(&c, &name) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let (shared, set, migration) = (&found.shared, &found.set, found.migration());
    if !migration.hosts.contains_key(&host) {
        let hosts: Vec<&str> = migration.hosts.keys().map(String::as_str).collect();
        return error(
            ErrorKind::NotFound,
            format!(
                "migration {name} has no host {host} (hosts: {})",
                hosts.join(", ")
            ),
        );
    }
    let reason = match reason_of(body) {
        Ok(reason) => reason,
        Err(why) => return error(ErrorKind::Invalid, why),
    };
    if reason.trim().is_empty() {
        return error(
            ErrorKind::Invalid,
            "a fence needs --reason: it is your statement that the host is down, kept in the history",
        );
    }
    shared.fence(&host, &admin, &reason);
    if let Err(e) = c.store.save(&shared.snapshot()) {
        return error(ErrorKind::Internal, e);
    }
    axum::Json(view(set, migration, &shared.snapshot())).into_response()
}

async fn apply(
    State(c): Api,
    axum::Extension(Admin(admin)): axum::Extension<Admin>,
    body: axum::body::Body,
) -> Response {
    let body = match mailctl_server::read_body(body, MAX_MANIFESTS).await {
        Ok(body) => body,
        Err(e) => return error(ErrorKind::Invalid, e),
    };
    let _one_at_a_time = c.uploads.lock().await;
    let text = body.clone();
    let checked = tokio::task::spawn_blocking(move || validate_upload(body)).await;
    let set = match checked {
        Ok(Ok(set)) => set,
        Ok(Err(diagnostics)) => {
            return error(
                ErrorKind::Invalid,
                format!("the manifests are not valid; nothing was changed\n{diagnostics}"),
            );
        }
        Err(_) => return error(ErrorKind::Internal, "the validation task failed"),
    };
    // Refuse before anything changes when a migration's phases cannot be planned.
    for migration in &set.migrations {
        for (_, plan) in crate::plan::plan_migration(migration, set.phases_of(migration)) {
            if let Err(refusal) = plan {
                return error(
                    ErrorKind::Invalid,
                    format!(
                        "migration {}: {refusal}; nothing was changed",
                        migration.name
                    ),
                );
            }
        }
    }
    if let Err(why) = c.check_upload(&set) {
        return error(ErrorKind::Invalid, format!("{why}; nothing was changed"));
    }
    match c.apply(set, &text, &admin) {
        Ok(applied) => {
            tracing::info!(%admin, migrations = applied.len(), "manifests applied");
            axum::Json(applied).into_response()
        }
        Err(e) => error(e.kind, e.message),
    }
}
