//! Reaching one host's agent from the command line: its address (`--agent`,
//! or the host's entry in a Migration under `-f`) and the TLS folder
//! (`--tls-dir`), for `mailctl sync run` and `mailctl confirm`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mailctl_api::AgentClient;
use mailctl_api::client::client_files;
use mailctl_schemas::load;

/// How to find a host's agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentArgs<'a> {
    /// `--agent URL`, else looked up in the Migrations under `file`.
    pub url: Option<&'a str>,
    pub file: Option<&'a Path>,
    /// A folder `mailctl certs init` wrote: an admin's or the controller's
    /// ([`mailctl_api::client::client_files`]).
    pub tls_dir: &'a Path,
}

impl AgentArgs<'_> {
    /// A client of `host`'s agent that talks only to an agent whose
    /// certificate names `host`.
    pub fn client(&self, host: &str) -> Result<AgentClient> {
        let url = self.url_of(host)?;
        Ok(AgentClient::new(&url, &client_files(self.tls_dir))?.expect_agent(host))
    }

    /// The agent's address: `--agent`, or `spec.hosts.HOST.agent` of a
    /// Migration under `file`.
    fn url_of(&self, host: &str) -> Result<String> {
        if let Some(url) = self.url {
            return Ok(url.to_owned());
        }
        let Some(file) = self.file else {
            bail!(
                "where does host {host}'s agent listen? Give --agent https://ADDRESS:7443, or -f a file or folder whose Migration lists host {host}"
            );
        };
        let set = match load::load_paths(&[file]) {
            Ok(set) => set,
            Err(diags) => bail!("{} is not valid\n{diags}", file.display()),
        };
        let mut urls: Vec<&str> = set
            .migrations
            .iter()
            .filter_map(|m| m.hosts.get(host).map(|h| h.agent.as_str()))
            .collect();
        urls.sort_unstable();
        urls.dedup();
        match urls.as_slice() {
            [url] => Ok((*url).to_owned()),
            [] => {
                let known: Vec<&str> = set
                    .migrations
                    .iter()
                    .flat_map(|m| m.hosts.keys().map(String::as_str))
                    .collect();
                bail!(
                    "no Migration in {} lists host {host}{} (give --agent https://ADDRESS:7443)",
                    file.display(),
                    mailctl_schemas::select::did_you_mean(host, known.iter().copied())
                )
            }
            _ => bail!(
                "the Migrations in {} give host {host} different agent addresses ({}); pick one with --agent",
                file.display(),
                urls.join(", ")
            ),
        }
    }
}

/// A runtime for one verb's requests.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
