//! Command-line verbs (DESIGN.md §7). Arguments are parsed by clap into the
//! types below; each verb is one function returning the process exit code.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use mailctl_agent::pki::{self, AgentIdentity, Subject};
use mailctl_agent::roles::Role;
use mailctl_schemas::{Kind, json_schema, load, render};

/// Move a mail service between hosts as a sequence of declared, verified states.
#[derive(Debug, Parser)]
#[command(name = "mailctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format of read verbs.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests (files or folders) and report every problem as FILE:LINE:COL.
    ///
    /// Exit status: 0 valid (warnings, if any, on stderr), 1 problems found or a usage error.
    Validate {
        /// Manifest files or folders (read recursively).
        #[arg(required_unless_present = "files")]
        paths: Vec<PathBuf>,
        /// The same, as the other verbs take them (repeat -f).
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// Also print the validated set: a table of its documents, or the
        /// manifests with defaults filled in and `source:` files inlined (yaml, json).
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
    /// Print the JSON Schema of a manifest kind, or of all three as one JSON object (for editors).
    Schema {
        /// One kind only; without it stdout is one object {"Host": ..., "Migration": ..., "Phase": ...}.
        #[arg(value_enum)]
        kind: Option<SchemaKind>,
        /// Write host.json, migration.json and phase.json (or only KIND's) into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Show what applying a host state would change on this host (exit 2: changes pending), or a migration's runbook.
    ///
    /// With --host or --phase, or a Host document: this host's plan.
    ///
    /// Exit status: 0 nothing to change, 2 changes pending, 1 an error (a
    /// resource that cannot be planned, an invalid manifest, a usage error).
    ///
    /// With a Migration and neither --host nor --phase: its runbook, planned
    /// from the manifests alone (exit 0, or 1 when a phase is refused).
    Plan {
        #[command(flatten)]
        state: HostStateArgs,
        /// The state directory apply --local and the agent use (pending onChange
        /// handlers, task completions): a plan reads it, never writes it.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/mailctl")]
        state_dir: PathBuf,
    },
    /// Apply a manifest: converge this host (--local) or hand a migration to the controller.
    ///
    /// Exit status with --local: 0 converged and verified, 1 a resource failed,
    /// the manifest is invalid, or a usage error.
    Apply {
        #[command(flatten)]
        state: HostStateArgs,
        /// Converge this host now, directly, by the agent's reconciler (without
        /// --local, the manifests go to the controller).
        #[arg(long)]
        local: bool,
        /// Apply --local even though a mailctl agent manages this host (it
        /// would undo the change at its next resync).
        #[arg(long, requires = "local")]
        force: bool,
        /// Where pending onChange handlers and task completions are recorded:
        /// the agent's state_dir, so both know what ran.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/mailctl")]
        state_dir: PathBuf,
        /// Follow the migration until it reaches its target (exit 1: paused; 3: rolled back).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Show migrations and where each one stands: phase, step, what it waits for.
    Status {
        /// One migration (default: every migration the controller holds).
        migration: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// List what the controller holds: migrations, phases or hosts, a line each.
    Get {
        /// migrations, phases or hosts.
        #[arg(value_enum)]
        kind: GetKind,
        /// Only this migration's.
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Show one migration in detail, with its recent history.
    Describe {
        /// migration.
        #[arg(value_enum)]
        kind: DescribeKind,
        name: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Approve the pending approval gate of a migration.
    Approve {
        migration: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Walk a migration back to its previous phase (refused past the point of no return).
    Rollback {
        migration: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Stop a migration where it stands.
    Pause {
        migration: String,
        /// Why (kept in the history).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Let a paused migration go on.
    Resume {
        migration: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Go on after a failed or inconclusive gate: its gates get a fresh run.
    Retry {
        migration: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Declare a host down, so a transition goes on without it (recorded in the history).
    ///
    /// Fence a host only when it is really off (powered down, or its service
    /// addresses removed by hand): the controller then stops waiting for its
    /// agent to report the service IP released. A fence lasts for the whole
    /// migration; the history keeps who fenced it and why.
    Fence {
        /// The migration whose transition waits for the host.
        migration: String,
        /// The host that is down (a host of the migration).
        host: String,
        /// Your statement of why the host is down.
        #[arg(long, required = true)]
        reason: String,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Show the steps a migration went through, with times.
    History {
        migration: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlags,
    },
    /// Keep a generation that changed addresses or firewall before the agent rolls it back (exit 3: it was rolled back).
    Confirm {
        /// The host whose agent holds the generation.
        host: String,
        /// The generation to keep (default: the one awaiting confirmation).
        generation: Option<u64>,
        #[command(flatten)]
        agent: AgentFlags,
    },
    /// Sync jobs.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Certificates for mutual TLS between controller and agents.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Run the host agent daemon.
    Agent {
        /// The agent's settings (agent.toml; an example is dist/agent.toml, the
        /// unit file passes /etc/mailctl/agent.toml). Without it: the built-in
        /// defaults. MAILCTL_* environment variables override both.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the migration controller (its configuration: dist/controller.toml).
    Controller {
        #[arg(long, default_value = "/etc/mailctl/controller.toml")]
        config: PathBuf,
    },
    /// A two-host lab with real Postfix and Dovecot on this machine (not built yet).
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Print a shell completion script.
    Completions { shell: Shell },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Run one sync job now and wait until it finished and verified.
    Run {
        /// HOST JOB, or only JOB with --local.
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
        /// Run the job on this machine, from the Host manifest in -f, instead of asking an agent.
        #[arg(long)]
        local: bool,
        /// With --local: the manifest declaring the job. Otherwise: the
        /// Migration that lists HOST's agent address (instead of --agent).
        #[arg(short = 'f', long = "file", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Which host of the manifest runs the job (with --local).
        #[arg(long)]
        host: Option<String>,
        /// Where job state, locks and the point-of-no-return flag are kept (with --local).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/mailctl")]
        state_dir: PathBuf,
        /// The agent's address, https://ADDRESS[:PORT] (default: the Migration in -f that lists HOST).
        #[arg(long)]
        agent: Option<String>,
        /// A folder `mailctl certs init` wrote (ca.pem, ca.crl, and admin.pem/.key, else controller.pem/.key).
        #[arg(long, default_value = "/etc/mailctl/tls")]
        tls_dir: PathBuf,
        /// List the messages sent and renamed (up to 1000 of each).
        #[arg(short, long)]
        verbose: bool,
    },
}

/// What `mailctl get` lists.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum GetKind {
    #[value(alias = "migration")]
    Migrations,
    #[value(alias = "phase")]
    Phases,
    #[value(alias = "host")]
    Hosts,
}

/// What `mailctl describe` shows.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DescribeKind {
    Migration,
}

/// How an admin's verb reaches the controller.
#[derive(Debug, clap::Args)]
struct ControllerFlags {
    /// The controller's API, https://ADDRESS[:PORT].
    #[arg(long = "controller", default_value = "https://127.0.0.1:7444")]
    url: String,
    /// A folder `mailctl certs init` wrote for an admin (ca.pem, ca.crl, admin.pem, admin.key).
    #[arg(long = "tls-dir", default_value = "/etc/mailctl/tls")]
    tls_dir: PathBuf,
}

impl ControllerFlags {
    fn target(&self) -> crate::controller::Target<'_> {
        crate::controller::Target {
            url: &self.url,
            tls_dir: &self.tls_dir,
        }
    }
}

fn format(output: Output) -> crate::controller::Format {
    match output {
        Output::Table => crate::controller::Format::Table,
        Output::Yaml => crate::controller::Format::Yaml,
        Output::Json => crate::controller::Format::Json,
    }
}

/// How a verb reaches one host's agent.
#[derive(Debug, clap::Args)]
struct AgentFlags {
    /// The agent's address, https://ADDRESS[:PORT] (default: the Migration in -f that lists HOST).
    #[arg(long)]
    agent: Option<String>,
    /// A manifest file or folder whose Migration lists the host and its agent's address.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// A folder `mailctl certs init` wrote (ca.pem, ca.crl, and admin.pem/.key, else controller.pem/.key).
    #[arg(long, default_value = "/etc/mailctl/tls")]
    tls_dir: PathBuf,
}

impl AgentFlags {
    fn args(&self) -> crate::remote::AgentArgs<'_> {
        crate::remote::AgentArgs {
            url: self.agent.as_deref(),
            file: self.file.as_deref(),
            tls_dir: &self.tls_dir,
        }
    }
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a CA, a revocation list, and certificates for the controller, one admin and each agent.
    Init {
        /// Folder for the CA (ca.pem, ca.key, ca.crl) and one subfolder per machine.
        #[arg(long)]
        out: PathBuf,
        /// An agent: NAME=ADDRESS[,ADDRESS...] (addresses or DNS names the controller dials).
        #[arg(long = "agent", value_parser = parse_agent)]
        agents: Vec<AgentIdentity>,
        /// The admin's name (a person who runs `mailctl sync run`).
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Addresses or DNS names admins dial for the controller's API.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1,localhost")]
        controller: Vec<String>,
        /// Days the certificates are valid, from now.
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: u32,
    },
    /// Issue one more certificate from the CA in --out.
    Add {
        #[command(subcommand)]
        what: CertsAdd,
    },
    /// Revoke an agent's or an admin's certificate: it joins DIR/ca.crl.
    Revoke {
        kind: RevokeKind,
        name: String,
        /// The folder `mailctl certs init` wrote.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertsAdd {
    /// An agent: NAME=ADDRESS[,ADDRESS...].
    Agent {
        #[arg(value_parser = parse_agent)]
        agent: AgentIdentity,
        /// The folder `mailctl certs init` wrote.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: u32,
    },
    /// An admin: a person who runs `mailctl sync run` and may read and confirm.
    Admin {
        name: String,
        /// The folder `mailctl certs init` wrote.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = pki::DEFAULT_DAYS)]
        days: u32,
    },
}

/// The manifest kinds `mailctl schema` describes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaKind {
    Host,
    Migration,
    Phase,
}

impl From<SchemaKind> for Kind {
    fn from(kind: SchemaKind) -> Kind {
        match kind {
            SchemaKind::Host => Kind::Host,
            SchemaKind::Migration => Kind::Migration,
            SchemaKind::Phase => Kind::Phase,
        }
    }
}

/// Whose certificate `certs revoke` revokes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RevokeKind {
    Agent,
    Admin,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Set up the lab, migrate it under mail load, check, tear down.
    Run,
    /// Set up the two hosts.
    Up,
    /// Migrate the lab.
    Migrate,
    /// Remove the lab.
    Down,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate {
            mut paths,
            files,
            output,
        } => {
            paths.extend(files);
            validate(&paths, output)
        }
        Command::Schema { kind, out } => schema(kind.map(Kind::from), out.as_deref()),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics when a write fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "mailctl", &mut script);
            std::io::stdout()
                .write_all(&script)
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { state, state_dir } => {
            match crate::runbook::wanted(
                &state.files,
                state.host.as_deref(),
                state.phase.as_deref(),
            ) {
                Some(set) => crate::runbook::print(&set, state.migration.as_deref()),
                None => crate::local::plan(&state.files, &state.selection(), &state_dir),
            }
        }
        Command::Apply {
            state,
            local: true,
            force,
            state_dir,
            ..
        } => crate::local::apply(&state.files, &state.selection(), &state_dir, force),
        Command::Apply {
            state,
            local: false,
            wait,
            controller,
            ..
        } => crate::controller::apply(&controller.target(), &state.files, wait),
        Command::Controller { config } => crate::controller::run_daemon(&config),
        Command::Status {
            migration,
            output,
            controller,
        } => crate::controller::status(&controller.target(), migration.as_deref(), format(output)),
        Command::History {
            migration,
            output,
            controller,
        } => crate::controller::history(&controller.target(), &migration, format(output)),
        Command::Approve {
            migration,
            controller,
        } => crate::controller::intent(&controller.target(), &migration, "approve", ""),
        Command::Pause {
            migration,
            reason,
            controller,
        } => crate::controller::intent(&controller.target(), &migration, "pause", &reason),
        Command::Resume {
            migration,
            controller,
        } => crate::controller::intent(&controller.target(), &migration, "resume", ""),
        Command::Retry {
            migration,
            controller,
        } => crate::controller::intent(&controller.target(), &migration, "retry", ""),
        Command::Rollback {
            migration,
            controller,
        } => crate::controller::intent(&controller.target(), &migration, "rollback", ""),
        Command::Fence {
            migration,
            host,
            reason,
            controller,
        } => crate::controller::fence(&controller.target(), &migration, &host, &reason),
        Command::Get {
            kind,
            name,
            output,
            controller,
        } => crate::controller::get(
            &controller.target(),
            match kind {
                GetKind::Migrations => crate::controller::Listing::Migrations,
                GetKind::Phases => crate::controller::Listing::Phases,
                GetKind::Hosts => crate::controller::Listing::Hosts,
            },
            name.as_deref(),
            format(output),
        ),
        Command::Describe {
            kind: DescribeKind::Migration,
            name,
            controller,
        } => crate::controller::describe_migration(&controller.target(), &name),
        Command::Agent { config } => crate::agent::run(config.as_deref()),
        Command::Certs { command } => certs(command),
        Command::Sync {
            command:
                SyncCommand::Run {
                    args,
                    local: true,
                    file,
                    host,
                    state_dir,
                    verbose,
                    ..
                },
        } => {
            let (Some(file), [job]) = (file, args.as_slice()) else {
                anyhow::bail!("usage: mailctl sync run --local -f FILE JOB [--host NAME]");
            };
            crate::sync::run_local(&file, host.as_deref(), job, &state_dir, verbose)
        }
        Command::Sync {
            command:
                SyncCommand::Run {
                    args,
                    local: false,
                    file,
                    agent,
                    tls_dir,
                    verbose,
                    ..
                },
        } => {
            let [host, job] = args.as_slice() else {
                anyhow::bail!(
                    "usage: mailctl sync run HOST JOB [--agent https://ADDRESS:7443 | -f MIGRATION] [--tls-dir DIR]"
                );
            };
            crate::sync::run_remote(&crate::sync::Remote {
                host,
                job,
                verbose,
                agent: crate::remote::AgentArgs {
                    url: agent.as_deref(),
                    file: file.as_deref(),
                    tls_dir: &tls_dir,
                },
            })
        }
        Command::Confirm {
            host,
            generation,
            agent,
        } => crate::confirm::run(&host, generation, &agent.args()),
        other => not_built(&other),
    }
}

fn certs(command: CertsCommand) -> Result<ExitCode> {
    match command {
        CertsCommand::Init {
            out,
            agents,
            admin,
            controller,
            days,
        } => {
            let mut subjects = vec![Subject::Controller(controller), Subject::Admin(admin)];
            subjects.extend(agents.into_iter().map(Subject::Agent));
            print_written(&out, &pki::init(&out, &subjects, days)?);
        }
        CertsCommand::Add { what } => {
            let (out, subject, days) = match what {
                CertsAdd::Agent { agent, out, days } => (out, Subject::Agent(agent), days),
                CertsAdd::Admin { name, out, days } => (out, Subject::Admin(name), days),
            };
            print_written(&out, &pki::add(&out, &[subject], days)?);
        }
        CertsCommand::Revoke { kind, name, out } => {
            let role = match kind {
                RevokeKind::Agent => Role::Agent(name),
                RevokeKind::Admin => Role::Admin(name),
            };
            let revoked = pki::revoke(&out, &role)?;
            println!("revoked {role} (serial {})", revoked.serial);
            for crl in &revoked.crls {
                println!("wrote {}", crl.display());
            }
            println!("moved its folder to {}", revoked.moved_to.display());
            println!(
                "Copy {} to /etc/mailctl/tls/{} on every agent, the controller and admins' machines: \
                 agents read it again by themselves (at the next connection); \
                 `mailctl sync run` reads it from --tls-dir.",
                out.join(pki::CRL).display(),
                pki::CRL
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The files written, then which folder goes to which machine.
fn print_written(out: &Path, written: &pki::Written) {
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    println!("Copy each folder whole to its machine (keys are mode 0600: keep them root's):");
    for bundle in &written.bundles {
        println!(
            "  {}/  ->  {}",
            bundle.folder.display(),
            bundle.destination()
        );
    }
    println!(
        "{} stays here, offline: it signs new certificates (`mailctl certs add`) and revocations (`mailctl certs revoke`).",
        out.join(pki::CA_KEY).display()
    );
}

/// Verbs whose machinery lands in later milestones say so plainly.
fn not_built(command: &Command) -> Result<ExitCode> {
    let verb = format!("{command:?}");
    let verb = verb
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    eprintln!(
        "mailctl {verb}: not built yet in this version of mailctl (`mailctl --help` marks every verb not built yet)"
    );
    Ok(ExitCode::from(1))
}

fn validate(paths: &[PathBuf], output: Option<Output>) -> Result<ExitCode> {
    match load::load_paths(paths) {
        Ok(set) => {
            print_warnings(&set);
            let mut out = std::io::stdout().lock();
            match output {
                Some(Output::Yaml) => write!(out, "{}", render::to_yaml(&set))?,
                Some(Output::Json) => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&render::to_documents(&set))?
                )?,
                Some(Output::Table) => write!(out, "{}", documents_table(&set))?,
                None => writeln!(
                    out,
                    "valid: {} migration(s), {} phase(s), {} host(s)",
                    set.migrations.len(),
                    set.phases.len(),
                    set.hosts.len()
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            let mut err = std::io::stderr().lock();
            write!(err, "{diags}")?;
            writeln!(err, "{} problem(s) found; nothing was changed", diags.len())?;
            Ok(ExitCode::from(1))
        }
    }
}

/// `validate -o table`: one row per document of the set.
fn documents_table(set: &mailctl_schemas::model::ManifestSet) -> String {
    let names = |hosts: &mut dyn Iterator<Item = &String>| {
        hosts.map(String::as_str).collect::<Vec<_>>().join(",")
    };
    let mut rows = vec![["KIND", "NAME", "MIGRATION", "HOSTS", "FILE"].map(str::to_owned)];
    for m in &set.migrations {
        rows.push([
            "Migration".into(),
            m.name.clone(),
            String::new(),
            names(&mut m.hosts.keys()),
            m.origin.to_string(),
        ]);
    }
    for p in &set.phases {
        rows.push([
            "Phase".into(),
            p.name.clone(),
            p.migration.clone(),
            names(&mut p.hosts.keys()),
            p.origin.to_string(),
        ]);
    }
    for h in &set.hosts {
        rows.push([
            "Host".into(),
            h.name.clone(),
            String::new(),
            String::new(),
            h.origin.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Warnings go to stderr and never change the exit code.
pub fn print_warnings(set: &mailctl_schemas::model::ManifestSet) {
    for warning in &set.warnings {
        eprintln!("{}", mailctl_schemas::Warning(warning));
    }
}

/// stdout holds one JSON document: the schema of `kind`, or an object of
/// all three by kind name; `--out` writes the committed files instead.
fn schema(kind: Option<Kind>, out: Option<&Path>) -> Result<ExitCode> {
    let kinds = match kind {
        Some(kind) => vec![kind],
        None => Kind::ALL.to_vec(),
    };
    let mut stdout = std::io::stdout().lock();
    match (out, kind) {
        (Some(dir), _) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for kind in kinds {
                let path = dir.join(kind.schema_file());
                fs::write(&path, schema_text(kind))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        (None, Some(kind)) => stdout.write_all(schema_text(kind).as_bytes())?,
        (None, None) => {
            let all: serde_json::Map<String, serde_json::Value> = kinds
                .into_iter()
                .map(|kind| (kind.name().to_owned(), json_schema(kind)))
                .collect();
            let mut text = serde_json::to_string_pretty(&all)?;
            text.push('\n');
            stdout.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The committed form of a schema: pretty JSON with a trailing newline.
pub fn schema_text(kind: Kind) -> String {
    let mut text = serde_json::to_string_pretty(&json_schema(kind)).unwrap_or_default();
    text.push('\n');
    text
}

fn parse_agent(text: &str) -> Result<AgentIdentity, String> {
    let (name, addresses) = text.split_once('=').ok_or_else(|| {
        format!("\"{text}\": write it as NAME=ADDRESS[,ADDRESS...], e.g. eve=192.0.2.12")
    })?;
    let addresses: Vec<String> = addresses
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if name.is_empty() || addresses.is_empty() {
        return Err(format!(
            "\"{text}\": both a name and at least one address are needed"
        ));
    }
    Ok(AgentIdentity {
        name: name.to_owned(),
        addresses,
    })
}

/// Which host state `plan` and `apply --local` work on.
#[derive(Debug, clap::Args)]
pub struct HostStateArgs {
    /// Manifest file or folder (read recursively); repeat -f to read a Phase
    /// together with its Migration.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Which host, when the files declare several.
    #[arg(long)]
    pub host: Option<String>,
    /// Which phase's state of the host, when the files hold a migration's phases.
    #[arg(long)]
    pub phase: Option<String>,
    /// Which migration the phase belongs to, when several have a phase of that name.
    #[arg(long)]
    pub migration: Option<String>,
}

impl HostStateArgs {
    pub fn selection(&self) -> mailctl_schemas::select::Selection<'_> {
        mailctl_schemas::select::Selection {
            host: self.host.as_deref(),
            phase: self.phase.as_deref(),
            migration: self.migration.as_deref(),
        }
    }
}
