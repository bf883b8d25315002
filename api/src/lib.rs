//! The agent's API as its clients see it: the routes and the default port,
//! the roles certificates carry and who may call what ([`roles`]), the
//! request and answer types of every endpoint, the error body
//! ([`ApiError`]: `{"kind": .., "message": ..}`), the client TLS
//! configuration ([`tls`]) and a typed async [`AgentClient`].
//!
//! The agent serves these types; the CLI and the controller use them through
//! [`AgentClient`]. This crate knows nothing of how an agent converges a
//! host: no netlink, D-Bus or HTTP server here, so the controller builds
//! against it alone.
//!
//! | method and route                | who                    | answer                        |
//! |---------------------------------|------------------------|-------------------------------|
//! | `GET /v1/health`                | controller, admins     | `ok`                          |
//! | `GET /v1/status`                | controller, admins     | [`AgentStatus`]               |
//! | `GET /v1/desired`               | controller             | the YAML, `x-mailctl-generation` |
//! | `PUT /v1/desired` (YAML body)   | controller             | 202 [`Generation`]            |
//! | `POST /v1/confirm/{generation}` | controller, admins     | [`Generation`]                |
//! | `GET /v1/plan`                  | controller, admins     | [`Plan`]                      |
//! | `POST /v1/sync/{job}`           | controller, admins     | 202 [`SyncStarted`]           |
//! | `GET /v1/sync/{job}`            | controller, admins     | [`JobStatus`]                 |
//! | `POST /v1/point-of-no-return`   | controller             | [`PointOfNoReturn`]           |
//! | `GET /metrics`                  | controller, admins     | Prometheus text               |
//!
//! Every answer that is not a success carries an [`ApiError`].

pub mod client;
pub mod controller;
pub mod error;
pub mod plan;
pub mod roles;
pub mod status;
pub mod sync;
pub mod tls;

pub use client::{AgentClient, ClientError, SyncFollowError};
pub use error::{ApiError, ErrorKind};
pub use plan::{Action, Plan, PlannedChange, PlannedResource};
pub use status::{AgentStatus, Cause, Condition, GenerationOutcome, ResourceStatus, Rollback};
pub use sync::{
    JobStatus, Progress, RunDetails, RunState, Stats, SyncStarted, SyncStep, Verification,
};
pub use tls::{TlsError, TlsFiles};

/// The port an agent listens on unless its agent.toml says otherwise.
pub const DEFAULT_PORT: u16 = 7443;

/// The header of `GET /v1/desired` that names the generation of the YAML body.
pub const GENERATION_HEADER: &str = "x-mailctl-generation";

/// The API's routes, as the agent's router declares them (`{name}` is a
/// path parameter). [`route::confirm`] and [`route::sync`] fill them in.
pub mod route {
    pub const HEALTH: &str = "/v1/health";
    pub const STATUS: &str = "/v1/status";
    pub const DESIRED: &str = "/v1/desired";
    pub const CONFIRM: &str = "/v1/confirm/{generation}";
    pub const PLAN: &str = "/v1/plan";
    pub const SYNC: &str = "/v1/sync/{job}";
    pub const POINT_OF_NO_RETURN: &str = "/v1/point-of-no-return";
    pub const METRICS: &str = "/metrics";

    /// `POST` here confirms `generation`.
    pub fn confirm(generation: u64) -> String {
        CONFIRM.replace("{generation}", &generation.to_string())
    }

    /// A sync job's route. Job names are checked by the manifest's
    /// validation (letters, digits, `-`, `_`), so they need no escaping;
    /// any other byte is percent-encoded all the same.
    pub fn sync(job: &str) -> String {
        SYNC.replace("{job}", &segment(job))
    }

    /// `text` as one path segment: letters, digits, `-`, `_` and `.` as
    /// they are, every other byte percent-encoded.
    pub fn segment(text: &str) -> String {
        let mut encoded = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                encoded.push(char::from(byte));
            } else {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        encoded
    }
}

/// The answer of `PUT /v1/desired` (the generation the agent assigned, or
/// the one in force when the same state was sent again) and of
/// `POST /v1/confirm/{generation}` (the generation now confirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub generation: u64,
}

/// The answer of `GET /v1/desired`: the state in force, rendered (with
/// `source:` contents inlined: secrets — the controller's alone).
#[derive(Clone, PartialEq, Eq)]
pub struct DesiredState {
    pub generation: u64,
    pub yaml: String,
}

impl std::fmt::Debug for DesiredState {
    // The YAML may hold secrets: never in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredState")
            .field("generation", &self.generation)
            .field("yaml", &format_args!("({} bytes)", self.yaml.len()))
            .finish()
    }
}

/// The answer of `POST /v1/point-of-no-return`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointOfNoReturn {
    pub point_of_no_return: bool,
}
