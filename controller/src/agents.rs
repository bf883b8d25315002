//! The executor's agents in production: one [`AgentClient`] per host of
//! the migration, as the controller identity, each talking only to the
//! agent whose certificate names its host.

use std::collections::BTreeMap;
use std::time::Duration;

use mailctl_api::client::SyncFollowError;
use mailctl_api::{AgentClient, AgentStatus, ClientError, JobStatus, TlsFiles};
use mailctl_schemas::model::Migration;

use crate::execute::{AgentError, Agents};

/// How often a running final sync is read.
const SYNC_POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ApiAgents {
    clients: BTreeMap<String, AgentClient>,
}

impl ApiAgents {
    /// Clients for every host of `migration`, with the controller's TLS files.
    pub fn new(migration: &Migration, tls: &TlsFiles) -> Result<ApiAgents, ClientError> {
        let mut clients = BTreeMap::new();
        for (host, entry) in &migration.hosts {
            clients.insert(
                host.clone(),
                AgentClient::new(&entry.agent, tls)?.expect_agent(host),
            );
        }
        Ok(ApiAgents { clients })
    }

    fn client(&self, host: &str) -> Result<&AgentClient, AgentError> {
        self.clients.get(host).ok_or_else(|| AgentError {
            retry_can_help: false,
            message: format!("{host} is not a host of this migration"),
        })
    }
}

fn error(e: ClientError) -> AgentError {
    AgentError {
        retry_can_help: e.retry_can_help(),
        message: e.to_string(),
    }
}

impl Agents for ApiAgents {
    async fn put(&self, host: &str, yaml: &str) -> Result<u64, AgentError> {
        self.client(host)?.put_desired(yaml).await.map_err(error)
    }

    async fn status(&self, host: &str) -> Result<AgentStatus, AgentError> {
        self.client(host)?.status().await.map_err(error)
    }

    async fn confirm(&self, host: &str, generation: u64) -> Result<(), AgentError> {
        self.client(host)?
            .confirm(generation)
            .await
            .map(|_| ())
            .map_err(error)
    }

    async fn sync_run(&self, host: &str, job: &str) -> Result<JobStatus, AgentError> {
        self.client(host)?
            .sync_run(job, SYNC_POLL, |_| {}, |_| {})
            .await
            .map_err(|e| match e {
                SyncFollowError::Client(e) => error(e),
                other => AgentError {
                    retry_can_help: false,
                    message: other.to_string(),
                },
            })
    }

    async fn point_of_no_return(&self, host: &str) -> Result<(), AgentError> {
        self.client(host)?.point_of_no_return().await.map_err(error)
    }
}
