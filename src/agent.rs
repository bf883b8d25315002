//! `mailctl agent`: the daemon, with its logging set up.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use mailctl_agent::config::{AgentConfig, LogFormat};
use mailctl_agent::daemon;

pub fn run(config_file: Option<&Path>) -> Result<ExitCode> {
    let config = AgentConfig::load(config_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    use std::io::IsTerminal;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        daemon::run(config, stop_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM (systemd stopping the unit) or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
