//! The controller's `/metrics` (Prometheus text): where each migration is,
//! how long its steps take, what its gates said, and which agents answer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MigrationLabel {
    migration: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabel {
    migration: String,
    step: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GateLabel {
    migration: String,
    gate: String,
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostLabel {
    migration: String,
    host: String,
}

fn step_buckets() -> Histogram {
    // From a tenth of a second (an agent converging) to a day (a soak).
    Histogram::new([0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 86_400.0])
}

/// The families, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    phase: Family<MigrationLabel, Gauge>,
    paused: Family<MigrationLabel, Gauge>,
    steps: Family<StepLabel, Histogram, fn() -> Histogram>,
    gates: Family<GateLabel, Counter>,
    reachable: Family<HostLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mailctl_controller");
        let phase = Family::<MigrationLabel, Gauge>::default();
        let paused = Family::<MigrationLabel, Gauge>::default();
        let steps = Family::<StepLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            step_buckets as fn() -> Histogram,
        );
        let gates = Family::<GateLabel, Counter>::default();
        let reachable = Family::<HostLabel, Gauge>::default();
        registry.register(
            "phase",
            "The phase reached: its position in spec.phases, from 1 (0: none yet)",
            phase.clone(),
        );
        registry.register("paused", "1 while the migration is paused", paused.clone());
        registry.register(
            "step_duration_seconds",
            "How long each step took (release, final syncs, acquire, gates)",
            steps.clone(),
        );
        registry.register(
            "gate_runs",
            "Gate runs by outcome (passed, failed, inconclusive)",
            gates.clone(),
        );
        registry.register(
            "agent_reachable",
            "1 when the host's agent answered the last request, 0 when it did not",
            reachable.clone(),
        );
        Metrics {
            registry,
            phase,
            paused,
            steps,
            gates,
            reachable,
        }
    }
}

fn migration(name: &str) -> MigrationLabel {
    MigrationLabel {
        migration: name.to_owned(),
    }
}

impl Metrics {
    pub fn phase(&self, name: &str, position: usize) {
        self.phase
            .get_or_create(&migration(name))
            .set(i64::try_from(position).unwrap_or(i64::MAX));
    }

    pub fn paused(&self, name: &str, paused: bool) {
        self.paused
            .get_or_create(&migration(name))
            .set(i64::from(paused));
    }

    pub fn step(&self, name: &str, step: &str, seconds: f64) {
        self.steps
            .get_or_create(&StepLabel {
                migration: name.to_owned(),
                step: step.to_owned(),
            })
            .observe(seconds);
    }

    pub fn gate(&self, name: &str, gate: &str, outcome: &str) {
        self.gates
            .get_or_create(&GateLabel {
                migration: name.to_owned(),
                gate: gate.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn reachable(&self, name: &str, host: &str, reachable: bool) {
        self.reachable
            .get_or_create(&HostLabel {
                migration: name.to_owned(),
                host: host.to_owned(),
            })
            .set(i64::from(reachable));
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
