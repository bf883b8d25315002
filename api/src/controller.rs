//! The controller's API, as the CLI sees it: the routes, the status of a
//! migration as data, the admins' intents, and a typed client. Only admin
//! certificates may call it (mutual TLS); every intent is recorded with the
//! name in the admin's certificate.
//!
//! | method and route                             | answer                  |
//! |----------------------------------------------|-------------------------|
//! | `GET /v1/migrations`                         | `[MigrationView]`       |
//! | `GET /v1/migrations/{name}`                  | [`MigrationView`]       |
//! | `GET /v1/migrations/{name}/history`          | `[HistoryEntry]`        |
//! | `POST /v1/migrations/{name}/{intent}`        | [`MigrationView`] (`approve`, `pause`, `resume`, `retry`; body [`IntentBody`]) |
//! | `POST /v1/migrations/{name}/fence/{host}`    | [`MigrationView`] (body [`IntentBody`]: the reason) |
//! | `PUT /v1/manifests` (YAML)                   | `[Applied]`: validated, stored, targets set |

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::client::{AgentClient, ClientError};
use crate::roles::Role;
use crate::tls::TlsFiles;

/// The port the controller's API listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7444;

pub mod route {
    pub const MIGRATIONS: &str = "/v1/migrations";
    pub const MIGRATION: &str = "/v1/migrations/{name}";
    pub const HISTORY: &str = "/v1/migrations/{name}/history";
    pub const INTENT: &str = "/v1/migrations/{name}/{intent}";
    pub const FENCE: &str = "/v1/migrations/{name}/fence/{host}";
    pub const MANIFESTS: &str = "/v1/manifests";
}

/// Where a migration stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationView {
    pub name: String,
    pub phases: Vec<String>,
    /// The last phase reached.
    pub phase: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_of_no_return: Option<String>,
    /// One line: `reached live`, `moving to cutover: acquire`, `paused: ...`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<IntentView>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fenced: BTreeMap<String, IntentView>,
    pub hosts: BTreeMap<String, HostView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionView {
    pub from: Option<String>,
    pub to: String,
    pub rollback: bool,
    /// The steps of the plan (`release`, `final syncs`, `acquire`, `gates`).
    pub steps: Vec<String>,
    /// The index of the step in progress.
    pub step: usize,
    pub step_since_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub gates: Vec<GateView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateView {
    pub gate: String,
    pub run: u32,
    /// `passed`, `failed`, `inconclusive`, or `running`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub started_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentView {
    pub by: String,
    pub at_unix: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub agent: String,
    /// The generation last confirmed there by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at_unix: u64,
    pub what: String,
}

/// The body of an intent: why (for `pause` and `fence`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentBody {
    #[serde(default)]
    pub reason: String,
}

/// One migration of an applied manifest set, and the target it now has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub migration: String,
    pub target: String,
}

/// The controller, reached over mutual TLS with an admin's certificate;
/// only a server whose certificate names the controller role is trusted.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    inner: AgentClient,
}

fn json(body: &impl Serialize) -> Option<(&'static str, String)> {
    Some((
        "application/json",
        serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    ))
}

impl ControllerClient {
    pub fn new(url: &str, tls: &TlsFiles) -> Result<ControllerClient, ClientError> {
        Ok(ControllerClient {
            inner: AgentClient::new(url, tls)?.expect_role(Role::Controller),
        })
    }

    pub fn url(&self) -> &str {
        self.inner.url()
    }

    fn migration_path(name: &str) -> String {
        route::MIGRATION.replace("{name}", &crate::route::segment(name))
    }

    pub async fn migrations(&self) -> Result<Vec<MigrationView>, ClientError> {
        self.inner.call(Method::GET, route::MIGRATIONS, None).await
    }

    pub async fn migration(&self, name: &str) -> Result<MigrationView, ClientError> {
        self.inner
            .call(Method::GET, &Self::migration_path(name), None)
            .await
    }

    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        let path = route::HISTORY.replace("{name}", &crate::route::segment(name));
        self.inner.call(Method::GET, &path, None).await
    }

    /// `approve`, `pause`, `resume` or `retry`.
    pub async fn intent(
        &self,
        name: &str,
        intent: &str,
        reason: &str,
    ) -> Result<MigrationView, ClientError> {
        let path = route::INTENT
            .replace("{name}", &crate::route::segment(name))
            .replace("{intent}", &crate::route::segment(intent));
        let body = IntentBody {
            reason: reason.to_owned(),
        };
        self.inner.call(Method::POST, &path, json(&body)).await
    }

    pub async fn fence(
        &self,
        name: &str,
        host: &str,
        reason: &str,
    ) -> Result<MigrationView, ClientError> {
        let path = route::FENCE
            .replace("{name}", &crate::route::segment(name))
            .replace("{host}", &crate::route::segment(host));
        let body = IntentBody {
            reason: reason.to_owned(),
        };
        self.inner.call(Method::POST, &path, json(&body)).await
    }

    /// Hands over a manifest set (YAML documents, `source:` files inlined).
    pub async fn apply(&self, yaml: &str) -> Result<Vec<Applied>, ClientError> {
        self.inner
            .call(
                Method::PUT,
                route::MANIFESTS,
                Some(("application/yaml", yaml.to_owned())),
            )
            .await
    }

    /// Reads the migration every `poll` until `done` says so.
    pub async fn follow(
        &self,
        name: &str,
        poll: Duration,
        mut done: impl FnMut(&MigrationView) -> bool,
    ) -> Result<MigrationView, ClientError> {
        loop {
            let view = self.migration(name).await?;
            if done(&view) {
                return Ok(view);
            }
            tokio::time::sleep(poll).await;
        }
    }
}
