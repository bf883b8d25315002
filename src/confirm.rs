//! `mailctl confirm HOST [GENERATION]`: keep a generation that changed
//! addresses or firewall, before the agent's magic rollback takes it back.
//! For an admin who changed the desired state by hand (the controller
//! confirms its own). Exit 0: confirmed, or nothing awaits confirmation;
//! 3: the generation was rolled back (too late); 1: any other failure.

use std::process::ExitCode;

use anyhow::Result;
use mailctl_api::{AgentStatus, ClientError, ErrorKind};

use crate::remote::AgentArgs;

/// The exit code that says "rolled back": never a success.
pub const ROLLED_BACK: u8 = 3;

pub fn run(host: &str, generation: Option<u64>, agent: &AgentArgs<'_>) -> Result<ExitCode> {
    let client = agent.client(host)?;
    crate::remote::runtime()?.block_on(async {
        let status = client.status().await?;
        let Some(generation) = generation.or(status.awaiting_confirmation) else {
            return Ok(nothing_awaits(host, &status));
        };
        match client.confirm(generation).await {
            Ok(_) => {
                println!(
                    "host {host}: generation {generation} confirmed; it stays in force (no rollback)"
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(ClientError::Api { error, .. }) if error.kind == ErrorKind::RolledBack => {
                eprintln!("mailctl confirm: host {host}: {}", error.message);
                Ok(ExitCode::from(ROLLED_BACK))
            }
            Err(ClientError::Api { error, .. }) => {
                anyhow::bail!("host {host}: {}", error.message)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// No generation named and none awaiting: say what is in force, and
/// whether the newest was rolled back.
fn nothing_awaits(host: &str, status: &AgentStatus) -> ExitCode {
    if let Some(rollback) = &status.rollback {
        eprintln!(
            "mailctl confirm: host {host}: generation {} was rolled back to generation {}: {}",
            rollback.generation, rollback.to, rollback.reason
        );
        return ExitCode::from(ROLLED_BACK);
    }
    println!(
        "host {host}: nothing awaits confirmation (generation {} is in force)",
        status.effective_generation
    );
    ExitCode::SUCCESS
}
