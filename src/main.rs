//! `mailctl`: one binary for the client verbs, the agent and the controller.

#![forbid(unsafe_code)]

mod agent;
mod cli;
mod local;
mod sync;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
