//! `agent.toml`: how one agent runs. Read from the file, then overridden by
//! `MAILCTL_*` environment variables (`MAILCTL_LISTEN`, `MAILCTL_TLS__CA`, ...;
//! a double underscore steps into a table).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::DEFAULT_API_PORT;
use crate::api::TlsFiles;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address and port of the mutual-TLS API.
    pub listen: SocketAddr,
    /// Desired-state manifest file or folder, watched for changes.
    pub desired_state: PathBuf,
    /// Which Host document of the desired state is this host (when it holds several).
    pub host: Option<String>,
    /// Persistent state: last applied generation, task completions, sync runs.
    pub state_dir: PathBuf,
    /// Seconds between two full resyncs (drift is also repaired on events).
    pub resync_seconds: u64,
    /// Seconds a change to addresses or firewall waits for the controller's
    /// confirmation before it is rolled back.
    pub confirm_timeout_seconds: u64,
    /// The port sshd listens on: the firewall must keep it reachable.
    pub ssh_port: u16,
    /// The ranges the controller and the admins connect from (CIDRs): a
    /// firewall rule set that cuts any part of one off SSH or the API port
    /// is refused. Empty: every address, `0.0.0.0/0` and `::/0`.
    pub admin_sources: Vec<IpNet>,
    pub log_format: LogFormat,
    pub tls: TlsFiles,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_API_PORT)),
            desired_state: PathBuf::from("/etc/mailctl/desired"),
            host: None,
            state_dir: PathBuf::from("/var/lib/mailctl"),
            resync_seconds: 300,
            confirm_timeout_seconds: 120,
            ssh_port: 22,
            admin_sources: Vec::new(),
            log_format: LogFormat::Text,
            tls: TlsFiles {
                ca: PathBuf::from("/etc/mailctl/tls/ca.pem"),
                cert: PathBuf::from("/etc/mailctl/tls/agent.pem"),
                key: PathBuf::from("/etc/mailctl/tls/agent.key"),
                // Optional: an agent set up before revocation lists existed
                // has no ca.crl; dist/agent.toml names one.
                crl: None,
            },
        }
    }
}

impl AgentConfig {
    /// Defaults, then the file (when given), then `MAILCTL_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(AgentConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("MAILCTL_").split("__"))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "agent.toml",
                "listen = \"127.0.0.1:9443\"\nhost = \"eve\"\n[tls]\nca = \"/x/ca.pem\"\ncert = \"/x/eve.pem\"\nkey = \"/x/eve.key\"\n",
            )?;
            jail.set_env("MAILCTL_STATE_DIR", "/srv/mailctl");
            jail.set_env("MAILCTL_TLS__CA", "/y/ca.pem");
            let config = AgentConfig::load(Some(Path::new("agent.toml"))).map_err(|e| *e)?;
            assert_eq!(config.listen, "127.0.0.1:9443".parse().expect("addr"));
            assert_eq!(config.host.as_deref(), Some("eve"));
            assert_eq!(config.state_dir, PathBuf::from("/srv/mailctl"));
            assert_eq!(config.tls.ca, PathBuf::from("/y/ca.pem"));
            assert_eq!(config.tls.key, PathBuf::from("/x/eve.key"));
            assert_eq!(config.resync_seconds, 300);
            assert_eq!((config.ssh_port, config.admin_sources.len()), (22, 0));
            Ok(())
        });
    }

    #[test]
    fn the_shipped_example_configuration_loads() {
        // In a jail: the other tests set MAILCTL_* variables.
        figment::Jail::expect_with(|_| {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/agent.toml");
            let config = AgentConfig::load(Some(&shipped)).map_err(|e| *e)?;
            assert_eq!(config.listen.port(), DEFAULT_API_PORT);
            assert_eq!(config.confirm_timeout_seconds, 120);
            // The names `mailctl certs init` writes into each agent's folder.
            let tls = Path::new("/etc/mailctl/tls");
            assert_eq!(config.tls.ca, tls.join(crate::pki::CA_CERT));
            let (cert, key) = crate::pki::cert_and_key(&crate::roles::Role::Agent("eve".into()));
            assert_eq!(config.tls.cert, tls.join(cert));
            assert_eq!(config.tls.key, tls.join(key));
            assert_eq!(config.tls.crl, Some(tls.join(crate::pki::CRL)));
            Ok(())
        });
    }

    #[test]
    fn admin_sources_and_the_ssh_port_are_read() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "agent.toml",
                "ssh_port = 2222\nadmin_sources = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
            )?;
            let config = AgentConfig::load(Some(Path::new("agent.toml"))).map_err(|e| *e)?;
            assert_eq!(config.ssh_port, 2222);
            let sources: Vec<String> = config
                .admin_sources
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(sources, ["192.0.2.0/24", "2001:db8::/32"]);
            jail.create_file("bad.toml", "admin_sources = [\"192.0.2.0/33\"]\n")?;
            let e = AgentConfig::load(Some(Path::new("bad.toml"))).expect_err("bad CIDR");
            assert!(e.to_string().contains("admin_sources"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("agent.toml", "lisen = \"127.0.0.1:9443\"\n")?;
            let e = AgentConfig::load(Some(Path::new("agent.toml"))).expect_err("typo");
            assert!(e.to_string().contains("lisen"), "{e}");
            assert!(AgentConfig::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
