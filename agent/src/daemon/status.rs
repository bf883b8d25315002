//! What the agent knows about each resource, for `GET /v1/status` and
//! Prometheus `/metrics`.

use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use mailctl_api::status::{AgentStatus, Cause, Condition, ResourceStatus, Rollback};

/// Why a change was made, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: CauseName,
}

/// [`Cause`] as a label value (`intentional`, `corrective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CauseName(pub Cause);

impl prometheus_client::encoding::EncodeLabelValue for CauseName {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self.0 {
            Cause::Intentional => "intentional",
            Cause::Corrective => "corrective",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

/// Shared status plus the metrics registry.
#[derive(Debug)]
pub struct StatusBoard {
    status: Mutex<AgentStatus>,
    registry: Registry,
    changes: Family<CauseLabel, Counter>,
    ready: Family<ResourceLabel, Gauge>,
    failures: Family<ResourceLabel, Counter>,
    generation: Gauge,
    effective: Gauge,
    rollbacks: Counter,
    rolled_back: Gauge,
}

impl Default for StatusBoard {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mailctl_agent");
        let changes = Family::<CauseLabel, Counter>::default();
        let ready = Family::<ResourceLabel, Gauge>::default();
        let failures = Family::<ResourceLabel, Counter>::default();
        let generation = Gauge::default();
        let effective = Gauge::default();
        let rollbacks = Counter::default();
        let rolled_back = Gauge::default();
        registry.register(
            "changes",
            "Changes made to the host, by cause (intentional: new desired state; corrective: drift repaired)",
            changes.clone(),
        );
        registry.register(
            "resource_ready",
            "1 when the resource is converged",
            ready.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles per resource",
            failures.clone(),
        );
        registry.register(
            "desired_generation",
            "Newest accepted desired-state generation",
            generation.clone(),
        );
        registry.register(
            "effective_generation",
            "Generation being converged to",
            effective.clone(),
        );
        registry.register(
            "rollbacks",
            "Generations rolled back because no confirmation came in time",
            rollbacks.clone(),
        );
        registry.register(
            "rolled_back",
            "1 while the state in force is a rollback's (the newest generation was rolled back)",
            rolled_back.clone(),
        );
        StatusBoard {
            status: Mutex::new(AgentStatus::default()),
            registry,
            changes,
            ready,
            failures,
            generation,
            effective,
            rollbacks,
            rolled_back,
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "status records unix timestamps for people and the controller"
)]
fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StatusBoard {
    fn with<R>(&self, f: impl FnOnce(&mut AgentStatus) -> R) -> R {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> AgentStatus {
        self.with(|s| s.clone())
    }

    pub fn set_generations(
        &self,
        host: &str,
        generation: u64,
        effective: u64,
        awaiting: Option<u64>,
        rolled_back: &[u64],
    ) {
        self.generation.set(gauge_value(generation));
        self.effective.set(gauge_value(effective));
        // The newest generation was rolled back: what is in force is the
        // rollback's target, which nobody asked for last.
        let in_rollback = rolled_back.contains(&generation);
        self.rolled_back.set(i64::from(in_rollback));
        self.with(|s| {
            s.host = Some(host.to_owned());
            s.generation = generation;
            s.effective_generation = effective;
            s.awaiting_confirmation = awaiting;
            s.rolled_back = rolled_back.to_vec();
            if !in_rollback {
                s.rollback = None;
            }
        });
    }

    /// Record a magic rollback (call [`StatusBoard::set_generations`] with
    /// the ledger after it).
    pub fn rolled_back(&self, rollback: Rollback) {
        self.rollbacks.inc();
        self.with(|s| s.rollback = Some(rollback));
    }

    pub fn add_state_warning(&self, warning: String) {
        self.with(|s| s.state_warnings.push(warning));
    }

    pub fn set_desired_error(&self, error: Option<String>) {
        self.with(|s| s.desired_error = error);
    }

    /// Keep exactly these resources (others left the manifest).
    pub fn retain(&self, names: &std::collections::HashSet<&str>) {
        self.with(|s| s.resources.retain(|k, _| names.contains(k.as_str())));
    }

    fn entry<'a>(s: &'a mut AgentStatus, resource: &str) -> &'a mut ResourceStatus {
        s.resources
            .entry(resource.to_owned())
            .or_insert(ResourceStatus {
                condition: Condition::Progressing,
                intentional_changes: 0,
                corrective_changes: 0,
                converged_generation: None,
                last_change: None,
            })
    }

    pub fn progressing(&self, resource: &str) {
        self.with(|s| Self::entry(s, resource).condition = Condition::Progressing);
    }

    /// Record a verified reconcile. Changes count as intentional while the
    /// resource had not yet converged at this generation, corrective after.
    pub fn converged(&self, resource: &str, generation: u64, changes: usize) -> Cause {
        let label = ResourceLabel {
            resource: resource.to_owned(),
        };
        self.ready.get_or_create(&label).set(1);
        let cause = self.with(|s| {
            let entry = Self::entry(s, resource);
            let cause = if entry.converged_generation == Some(generation) {
                Cause::Corrective
            } else {
                Cause::Intentional
            };
            if changes > 0 {
                let n = changes as u64;
                match cause {
                    Cause::Intentional => entry.intentional_changes += n,
                    Cause::Corrective => entry.corrective_changes += n,
                }
                entry.last_change = Some(now());
            }
            entry.converged_generation = Some(generation);
            entry.condition = Condition::Ready { generation };
            cause
        });
        if changes > 0 {
            self.changes
                .get_or_create(&CauseLabel {
                    cause: CauseName(cause),
                })
                .inc_by(changes as u64);
        }
        cause
    }

    pub fn failed(&self, resource: &str, reason: String, retries: u32) {
        let label = ResourceLabel {
            resource: resource.to_owned(),
        };
        self.ready.get_or_create(&label).set(0);
        self.failures.get_or_create(&label).inc();
        self.with(|s| Self::entry(s, resource).condition = Condition::Failed { reason, retries });
    }

    pub fn refused(&self, resource: &str, reason: String) {
        let label = ResourceLabel {
            resource: resource.to_owned(),
        };
        self.ready.get_or_create(&label).set(0);
        self.failures.get_or_create(&label).inc();
        self.with(|s| Self::entry(s, resource).condition = Condition::Refused { reason });
    }

    /// Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
