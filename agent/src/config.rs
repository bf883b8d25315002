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
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(AgentConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|error| ConfigError::from_figment(&error))
    }
}

const ENV_PREFIX: &str = "MAILCTL_";

/// A setting that could not be read, on one line: where (`agent.toml:3`,
/// or the `MAILCTL_*` variable), which setting, and what is wrong with it,
/// with the setting most likely meant for an unknown one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct ConfigError {
    /// `FILE:LINE[:COLUMN]`, `FILE`, or `MAILCTL_NAME`.
    pub place: String,
    pub problem: String,
}

impl ConfigError {
    /// figment reports where a value came from but not its line, and
    /// spreads a TOML syntax error over several lines: both are put right
    /// here (the first error only; the next run shows the next one).
    fn from_figment(error: &figment::Error) -> Self {
        use figment::error::Kind;
        let file = error
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .and_then(|s| s.file_path())
            .map(Path::to_path_buf);
        let mut key = error.path.clone();
        let problem = match &error.kind {
            Kind::UnknownField(name, expected) => {
                if key.last() != Some(name) {
                    key.push(name.clone());
                }
                let setting = key.join(".");
                match mailctl_schemas::diag::closest(name, expected.iter().copied()) {
                    Some(close) => format!("unknown setting `{setting}`; did you mean `{close}`?"),
                    None => format!(
                        "unknown setting `{setting}` (settings here: {})",
                        expected.join(", ")
                    ),
                }
            }
            Kind::Message(message) if message.starts_with("TOML parse error") => {
                return syntax_error(file.as_deref(), message);
            }
            Kind::Message(message) if key.is_empty() => {
                let problem = match &file {
                    Some(_) => format!("cannot read: {message}"),
                    None => message.clone(),
                };
                return ConfigError {
                    place: file
                        .map_or_else(|| "agent configuration".into(), |f| f.display().to_string()),
                    problem,
                };
            }
            kind => format!("{}: {}", key.join("."), plain_types(&kind.to_string())),
        };
        let place = match &file {
            Some(path) => {
                // An item of a list (`admin_sources.0`) is on its key's line.
                let named = key
                    .iter()
                    .position(|part| part.parse::<usize>().is_ok())
                    .map_or(key.as_slice(), |at| &key[..at]);
                let line = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|text| key_line(&text, named));
                match line {
                    Some(line) => format!("{}:{line}", path.display()),
                    None => path.display().to_string(),
                }
            }
            None if key.is_empty() => "agent configuration".into(),
            None => format!("{ENV_PREFIX}{}", key.join("__").to_uppercase()),
        };
        ConfigError { place, problem }
    }
}

/// `TOML parse error at line 1, column 25` followed by the line quoted and
/// the reason, as one line: `FILE:1:25: invalid TOML: REASON`.
/// figment's Rust type names, in words an admin reads (`expected u64` ->
/// `expected a whole number`).
fn plain_types(message: &str) -> String {
    let mut text = message.to_owned();
    for (rust, plain) in [
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected a boolean", "expected true or false"),
    ] {
        text = text.replace(rust, plain);
    }
    text
}

fn syntax_error(file: Option<&Path>, message: &str) -> ConfigError {
    let mut lines = message.lines();
    let head = lines.next().unwrap_or_default();
    let reason = lines
        .filter(|l| !l.trim_start().starts_with('|') && !l.contains(" | ") && !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let numbers: Vec<&str> = head
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .collect();
    let file = file.map_or_else(|| "agent configuration".into(), |f| f.display().to_string());
    let place = match numbers.as_slice() {
        [line, column] => format!("{file}:{line}:{column}"),
        _ => file,
    };
    ConfigError {
        place,
        problem: format!("invalid TOML: {reason}"),
    }
}

/// The line (from 1) where `key` (`["tls", "ca"]`) is set in TOML `text`:
/// under its `[table]` header or as a dotted key.
fn key_line(text: &str, key: &[String]) -> Option<usize> {
    let parts = |text: &str| -> Vec<String> {
        text.split('.')
            .map(|p| p.trim().trim_matches('"').trim_matches('\'').to_owned())
            .collect()
    };
    let mut table: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let header = header.split(']').next().unwrap_or_default();
            table = parts(header);
            if table == key {
                return Some(i + 1);
            }
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let mut full = table.clone();
            full.extend(parts(name));
            if full == key {
                return Some(i + 1);
            }
        }
    }
    None
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
            let config = AgentConfig::load(Some(Path::new("agent.toml")))
                .map_err(|e| figment::Error::from(e.to_string()))?;
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
            let config = AgentConfig::load(Some(&shipped))
                .map_err(|e| figment::Error::from(e.to_string()))?;
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
            let config = AgentConfig::load(Some(Path::new("agent.toml")))
                .map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(config.ssh_port, 2222);
            let sources: Vec<String> = config
                .admin_sources
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(sources, ["192.0.2.0/24", "2001:db8::/32"]);
            jail.create_file("bad.toml", "admin_sources = [\"192.0.2.0/33\"]\n")?;
            let e = AgentConfig::load(Some(Path::new("bad.toml"))).expect_err("bad CIDR");
            assert!(
                e.to_string().starts_with("bad.toml:1: admin_sources"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            let error = |file: &str| {
                let e = AgentConfig::load(Some(Path::new(file))).expect_err("refused");
                e.to_string()
            };
            jail.create_file("agent.toml", "# agent\nlisen = \"127.0.0.1:9443\"\n")?;
            assert_eq!(
                error("agent.toml"),
                "agent.toml:2: unknown setting `lisen`; did you mean `listen`?"
            );
            jail.create_file(
                "tls.toml",
                "ssh_port = 22\n\n[tls]\nca = \"/x\"\ncrt = \"/y\"\n",
            )?;
            assert_eq!(
                error("tls.toml"),
                "tls.toml:5: unknown setting `tls.crt`; did you mean `cert`?"
            );
            jail.create_file(
                "port.toml",
                "listen = \"127.0.0.1:9443\"\nssh_port = \"x\"\n",
            )?;
            let e = error("port.toml");
            assert!(e.starts_with("port.toml:2: ssh_port: invalid type"), "{e}");
            assert!(
                e.ends_with("expected a whole number from 0 to 65535"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
            jail.create_file("syntax.toml", "listen = \"127.0.0.1:9443\n")?;
            let e = error("syntax.toml");
            assert!(e.starts_with("syntax.toml:1:25: invalid TOML: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
            let e = error("missing.toml");
            assert!(e.starts_with("missing.toml: cannot read: "), "{e}");
            jail.set_env("MAILCTL_SSH_PORT", "many");
            let e = AgentConfig::load(None)
                .expect_err("bad variable")
                .to_string();
            assert!(
                e.starts_with("MAILCTL_SSH_PORT: ssh_port: invalid type"),
                "{e}"
            );
            Ok(())
        });
    }
}
