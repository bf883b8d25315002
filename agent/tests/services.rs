//! The service drivers against real parts: a real systemd booted as PID 1 of
//! its own PID and mount namespace in a cached Debian root, and a real Postfix
//! driven by its own `postfix start/stop/status/reload`.
//!
//! These tests need root. They fail (never skip) when it or a prerequisite is
//! missing, and fetch what can be fetched: the Debian root is built by
//! `scripts/systemd-root.sh` and Postfix is installed with apt when absent.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

#[path = "support/postfix.rs"]
mod postfix;
use postfix::require_postfix;

use mailctl_agent::service::exec::{ExecDriver, ExecError};
use mailctl_agent::service::systemd::{SystemBus, Systemd, SystemdError};
use mailctl_agent::service::{
    Backend, ServiceAction, ServiceChange, ServiceError, ServiceStatus, ServicesDriver,
};
use mailctl_agent::{Change, Config, Driver, Error, Reconciler};
use mailctl_schemas::model::{ExecCommands, HostSpec, Service, ServiceDriver, ServiceState};

const TEST_UNIT: &str = "mailctl-test.service";
const FAILING_UNIT: &str = "mailctl-fail.service";
const BOOT_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- harness

fn require_root() {
    let euid = fs::metadata("/proc/self").expect("read /proc/self").uid();
    assert_eq!(
        euid, 0,
        "the service tests drive real systemd and Postfix and must run as root (CI does); \
         run `sudo cargo test -p mailctl-agent --test services`"
    );
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_owned()
}

/// The cached Debian root with systemd. scripts/systemd-root.sh builds it
/// when it is missing or out of date and returns at once otherwise; it locks
/// against concurrent builds.
fn systemd_root() -> PathBuf {
    let root = std::env::var_os("MAILCTL_SYSTEMD_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mailctl/systemd-root"));
    let script = workspace_root().join("scripts/systemd-root.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("MAILCTL_SYSTEMD_ROOT", &root)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "{} failed ({status}); the systemd tests need its Debian root in {}",
        script.display(),
        root.display()
    );
    for needed in [
        "lib/systemd/systemd",
        "usr/bin/dbus-daemon",
        "bin/systemctl",
    ] {
        assert!(
            root.join(needed).exists(),
            "{} has no {needed}; delete the root and rerun scripts/systemd-root.sh",
            root.display()
        );
    }
    root
}

/// Polls `check` until it returns `Some` or the deadline passes.
fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "gave up after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A systemd running as PID 1 of a new PID and mount namespace, chrooted into
/// the cached root (shared LAB.md, "A real systemd per host"). Dropping it
/// kills that systemd with SIGKILL (PID 1 ignores SIGTERM), which ends every
/// process of the namespace and with the last of them the namespace's mounts.
struct BootedSystemd {
    unshare: Child,
    pid: u32,
    root: PathBuf,
    /// Held while booted: two systemds must not share one root's /var and /etc.
    _lock: File,
}

impl BootedSystemd {
    fn boot(root: &Path) -> Self {
        let lock = File::create(root.with_extension("boot.lock")).expect("create the boot lock");
        lock.lock().expect("lock the systemd root");
        let dir = root.display();
        let script = format!(
            "set -e
             mount --make-rprivate /
             mount -t proc proc {dir}/proc
             mount --rbind /sys {dir}/sys
             mount --rbind /dev {dir}/dev
             mount -t tmpfs tmpfs {dir}/run
             mount -t tmpfs tmpfs {dir}/tmp
             exec chroot {dir} /lib/systemd/systemd --system"
        );
        // setpriv: if this test process dies without running Drop, unshare gets
        // SIGKILL and --kill-child takes the namespace's systemd with it.
        let unshare = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .args(["unshare", "-pfm", "--kill-child", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn setpriv/unshare (util-linux)");
        let unshare_pid = unshare.id();
        let mut booted = BootedSystemd {
            unshare,
            pid: 0,
            root: root.to_owned(),
            _lock: lock,
        };
        // The one child of unshare is the namespace's PID 1: sh, then chroot,
        // then systemd, all one process. It is systemd once its root moved.
        booted.pid = wait_for("systemd to start in the namespace", BOOT_DEADLINE, || {
            if let Ok(Some(status)) = booted.unshare.try_wait() {
                panic!("unshare exited ({status}) before systemd started");
            }
            let children =
                fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                    .ok()?;
            let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
            let proc_root = fs::read_link(format!("/proc/{pid}/root")).ok()?;
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (proc_root == booted.root && comm.trim() == "systemd").then_some(pid)
        });
        booted
    }

    /// The namespace's root as seen from the host: its /run is a tmpfs only
    /// that namespace sees, so paths go through /proc/PID/root.
    fn proc_root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    fn bus(&self) -> SystemBus {
        SystemBus::socket(self.proc_root().join("run/dbus/system_bus_socket"))
    }

    /// Waits until systemd answers on the namespace's system bus: dbus.service
    /// is up and systemd has joined it. Jobs asked for later queue behind the
    /// rest of the boot.
    async fn wait_for_bus(&self) {
        let deadline = tokio::time::Instant::now() + BOOT_DEADLINE;
        loop {
            match Systemd::connect(&self.bus()).await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("systemd's bus did not answer within {BOOT_DEADLINE:?}: {e:?}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// `systemctl ARGS` inside the namespace: systemd's own view, not ours.
    fn systemctl(&self, args: &[&str]) -> String {
        let pid = self.pid.to_string();
        let mut argv = vec!["-t", &pid, "-m", "-p", "-r", "-w", "systemctl"];
        argv.extend_from_slice(args);
        let out = run("nsenter", &argv);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for BootedSystemd {
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = run("kill", &["-KILL", &self.pid.to_string()]);
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The mounts lived in the dead namespace only; make sure of it.
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let prefix = format!("{}/", self.root.display());
            for target in mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&prefix))
            {
                let _ = run("umount", &["-l", target]);
            }
        }
    }
}

/// Writes the unit that fails to start and leaves the test unit disabled, so
/// every boot starts from the same unit files (a failed run may have left the
/// test unit enabled in the cached root).
fn prepare_units(root: &Path) {
    let units = root.join("etc/systemd/system");
    fs::write(
        units.join(FAILING_UNIT),
        "[Unit]\nDescription=mailctl test unit that fails to start\n\n\
         [Service]\nType=oneshot\nExecStart=/bin/false\n",
    )
    .expect("write the failing unit");
    let wants = units.join("multi-user.target.wants").join(TEST_UNIT);
    if wants.symlink_metadata().is_ok() {
        fs::remove_file(&wants).expect("remove a stale enablement of the test unit");
    }
    assert!(
        units.join(TEST_UNIT).exists(),
        "{} lacks {TEST_UNIT}; delete the root and rerun scripts/systemd-root.sh",
        root.display()
    );
}

fn service(name: &str, unit: &str, state: ServiceState, enabled: Option<bool>) -> Service {
    Service {
        name: name.to_owned(),
        state,
        enabled,
        driver: ServiceDriver::Auto,
        unit: unit.to_owned(),
        exec: None,
        reload_on: Vec::new(),
    }
}

/// An agent's reconciler driving services with `services`; its state
/// directory lives as long as it does.
struct Agent {
    reconciler: Reconciler,
    _state: tempfile::TempDir,
}

impl Agent {
    fn new(services: ServicesDriver) -> Self {
        let state = tempfile::tempdir().expect("tempdir");
        let reconciler =
            Reconciler::connect(Config::default().state_dir(state.path()).services(services))
                .expect("open a netlink socket");
        Agent {
            reconciler,
            _state: state,
        }
    }

    /// `Reconciler::apply` of a manifest declaring only `service`, the path
    /// of `mailctl apply --local` and the agent: observe, diff, apply, and
    /// verify (a change counts only when it is seen afterwards). Returns the
    /// changes made.
    async fn ensure(&self, service: &Service) -> Result<Vec<ServiceChange>, Error> {
        let spec = HostSpec {
            services: vec![service.clone()],
            ..HostSpec::default()
        };
        let mut report = self.reconciler.apply(&spec).await;
        assert_eq!(report.resources.len(), 1, "{report:?}");
        let applied = report.resources.pop().expect("one report").result?;
        assert!(applied.effects.is_empty(), "{:?}", applied.effects);
        Ok(applied
            .changes
            .into_iter()
            .map(|change| match change {
                Change::Service(change) => change,
                other => panic!("only a service declared: {other}"),
            })
            .collect())
    }
}

/// The service driver's error inside the reconciler's.
fn service_error(error: Error) -> ServiceError {
    match error {
        Error::Service(error) => error,
        other => panic!("expected a service error, got {other:?}"),
    }
}

fn actions(changes: &[ServiceChange]) -> Vec<ServiceAction> {
    changes.iter().map(|c| c.action).collect()
}

fn reload_count(booted: &BootedSystemd) -> usize {
    fs::read_to_string(booted.proc_root().join("run/mailctl-test.reloaded"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- systemd

#[tokio::test]
async fn systemd_driver_starts_reloads_enables_and_stops_a_real_unit() {
    require_root();
    let root = systemd_root();
    prepare_units(&root);
    let booted = BootedSystemd::boot(&root);

    booted.wait_for_bus().await;
    let driver = || {
        ServicesDriver::default()
            .host_root(booted.proc_root())
            .bus(booted.bus())
            .job_timeout(Duration::from_secs(60))
    };
    let agent = Agent::new(driver());
    // For observing and for the handlers' reload and restart.
    let services = driver();
    let running = service("test", TEST_UNIT, ServiceState::Running, Some(true));
    let before = services.observe(&running).await.expect("observe");

    // driver: auto found run/systemd/system in the booted root.
    assert_eq!(
        before.backend,
        Backend::Systemd {
            unit: TEST_UNIT.to_owned()
        }
    );
    assert_eq!(before.state, Some(ServiceState::Stopped), "{before:?}");
    assert_eq!(before.enabled, Some(false), "{before:?}");

    let changes = agent.ensure(&running).await.expect("ensure running");
    assert_eq!(
        actions(&changes),
        [ServiceAction::Enable, ServiceAction::Start]
    );
    assert_eq!(booted.systemctl(&["is-active", TEST_UNIT]), "active");
    assert_eq!(booted.systemctl(&["is-enabled", TEST_UNIT]), "enabled");
    let status = services.observe(&running).await.expect("observe");
    assert_eq!(status.state, Some(ServiceState::Running));
    assert_eq!(status.detail, "active (running), enabled");

    // Converged: a second ensure changes nothing.
    assert_eq!(agent.ensure(&running).await.expect("ensure again"), []);

    // Reload runs ExecReload, which appends a line under the namespace's /run.
    assert_eq!(reload_count(&booted), 0);
    let reloaded = services.reload(&running).await.expect("reload");
    assert_eq!(
        reloaded.map(|c| c.action),
        Some(ServiceAction::Reload),
        "a running unit is reloaded"
    );
    assert_eq!(reload_count(&booted), 1, "ExecReload ran once");
    assert_eq!(booted.systemctl(&["is-active", TEST_UNIT]), "active");

    let main_pid = booted.systemctl(&["show", "-P", "MainPID", TEST_UNIT]);
    let restarted = services.restart(&running).await.expect("restart");
    assert_eq!(restarted.map(|c| c.action), Some(ServiceAction::Restart));
    assert_ne!(
        booted.systemctl(&["show", "-P", "MainPID", TEST_UNIT]),
        main_pid,
        "restart replaced the main process"
    );

    let stopped = service("test", TEST_UNIT, ServiceState::Stopped, Some(false));
    let changes = agent.ensure(&stopped).await.expect("ensure stopped");
    assert_eq!(
        actions(&changes),
        [ServiceAction::Stop, ServiceAction::Disable]
    );
    assert_eq!(booted.systemctl(&["is-active", TEST_UNIT]), "inactive");
    assert_eq!(booted.systemctl(&["is-enabled", TEST_UNIT]), "disabled");

    // Handlers never start a stopped service.
    assert!(services.reload(&stopped).await.expect("reload").is_none());
    assert!(services.restart(&stopped).await.expect("restart").is_none());
    assert_eq!(reload_count(&booted), 1);
    assert_eq!(booted.systemctl(&["is-active", TEST_UNIT]), "inactive");

    // A start job that fails is an error naming the unit and the job result.
    let failing = service("fail", FAILING_UNIT, ServiceState::Running, None);
    let err = service_error(agent.ensure(&failing).await.expect_err("start must fail"));
    match &err {
        ServiceError::Systemd {
            service,
            source: SystemdError::JobFailed { unit, result, .. },
        } => {
            assert_eq!(service, "fail");
            assert_eq!(unit, FAILING_UNIT);
            assert_eq!(result, "failed");
        }
        other => panic!("expected a failed start job, got {other:?}"),
    }
    assert!(
        std::error::Error::source(&err)
            .expect("a source")
            .to_string()
            .contains("journalctl -u mailctl-fail.service"),
        "the error tells where to look: {err:?}"
    );

    // A unit systemd has no file for.
    let missing = service(
        "missing",
        "mailctl-missing.service",
        ServiceState::Running,
        None,
    );
    match services.observe(&missing).await {
        Err(ServiceError::Systemd {
            source: SystemdError::NotFound { unit },
            ..
        }) => assert_eq!(unit, "mailctl-missing.service"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn systemd_driver_names_the_bus_it_cannot_reach() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("no-bus");
    let services = ServicesDriver::default().bus(SystemBus::socket(&socket));
    let mut unit = service("postfix", "postfix.service", ServiceState::Running, None);
    unit.driver = ServiceDriver::Systemd;
    let err = services.observe(&unit).await.expect_err("no bus there");
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<SystemdError>(),
            Some(SystemdError::Connect { .. })
        ),
        "{err:?}"
    );
    assert!(
        source.to_string().contains(&socket.display().to_string()),
        "the error names the bus: {source}"
    );
}

// ---------------------------------------------------------------- exec

/// A private Postfix instance: its own config, queue, data directory and log,
/// and no network listener (`master_service_disable = inet`), so it touches
/// neither the host's Postfix nor a port another test uses.
struct PostfixInstance {
    dir: tempfile::TempDir,
}

impl PostfixInstance {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailctl-postfix-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path();
        // Postfix's daemons run as the postfix user and must reach the queue.
        fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        for sub in ["etc", "spool", "data"] {
            fs::create_dir(base.join(sub)).expect("mkdir");
        }
        assert!(
            run(
                "chown",
                &["postfix", &base.join("data").display().to_string()]
            )
            .status
            .success()
        );
        fs::copy("/etc/postfix/master.cf", base.join("etc/master.cf"))
            .expect("copy the packaged master.cf");
        let b = base.display();
        fs::write(
            base.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {b}/spool\n\
                 data_directory = {b}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = mailctl-test.invalid\n\
                 master_service_disable = inet\n\
                 maillog_file_prefixes = {b}\n\
                 maillog_file = {b}/maillog\n"
            ),
        )
        .expect("write main.cf");
        PostfixInstance { dir }
    }

    fn config(&self) -> String {
        self.dir.path().join("etc").display().to_string()
    }

    fn commands(&self) -> ExecCommands {
        let argv = |verb: &str| {
            ["/usr/sbin/postfix", "-c", &self.config(), verb]
                .map(str::to_owned)
                .to_vec()
        };
        ExecCommands {
            start: argv("start"),
            stop: argv("stop"),
            status: argv("status"),
            reload: Some(argv("reload")),
        }
    }

    /// The master process, as its pid file names it, if it is alive.
    fn master_pid(&self) -> Option<u32> {
        let pid_file = self.dir.path().join("spool/pid/master.pid");
        let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        exe.ends_with("master").then_some(pid)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        let _ = run("/usr/sbin/postfix", &["-c", &self.config(), "stop"]);
        if let Some(pid) = self.master_pid() {
            let _ = run("kill", &["-KILL", &pid.to_string()]);
        }
    }
}

fn exec_service(commands: ExecCommands, state: ServiceState) -> Service {
    Service {
        name: "postfix".to_owned(),
        state,
        enabled: None,
        driver: ServiceDriver::Exec,
        unit: "postfix.service".to_owned(),
        exec: Some(commands),
        reload_on: Vec::new(),
    }
}

#[tokio::test]
async fn exec_driver_starts_reloads_and_stops_a_real_postfix() {
    require_root();
    require_postfix("for the exec driver test");
    let postfix = PostfixInstance::new();
    let agent = Agent::new(ServicesDriver::default());
    let services = ServicesDriver::default();
    let running = exec_service(postfix.commands(), ServiceState::Running);

    let before = services.observe(&running).await.expect("observe");
    assert_eq!(before.state, Some(ServiceState::Stopped), "{before:?}");
    assert_eq!(before.enabled, None);
    assert!(postfix.master_pid().is_none());

    let changes = agent.ensure(&running).await.expect("ensure running");
    assert_eq!(actions(&changes), [ServiceAction::Start]);
    let master = postfix
        .master_pid()
        .unwrap_or_else(|| panic!("no master process after start; log:\n{}", postfix.log()));
    assert!(
        postfix
            .log()
            .contains(&format!("configuration {}", postfix.config())),
        "the private instance started:\n{}",
        postfix.log()
    );
    let status = services.observe(&running).await.expect("observe");
    assert_eq!(status.state, Some(ServiceState::Running));

    assert_eq!(agent.ensure(&running).await.expect("ensure again"), []);
    assert_eq!(postfix.master_pid(), Some(master), "not restarted");

    let reloaded = services.reload(&running).await.expect("reload");
    assert_eq!(reloaded.map(|c| c.action), Some(ServiceAction::Reload));
    assert!(
        postfix.log().contains("reload -- version"),
        "master logged the reload:\n{}",
        postfix.log()
    );
    assert_eq!(
        postfix.master_pid(),
        Some(master),
        "a reload keeps the master"
    );

    let stopped = exec_service(postfix.commands(), ServiceState::Stopped);
    let changes = agent.ensure(&stopped).await.expect("ensure stopped");
    assert_eq!(actions(&changes), [ServiceAction::Stop]);
    assert!(
        postfix.master_pid().is_none(),
        "master still running after stop"
    );
    // Gone, or a zombie its new parent has yet to reap: no program any more.
    assert!(
        fs::read_link(format!("/proc/{master}/exe")).is_err(),
        "master {master} still runs"
    );
    let status: ServiceStatus = services.observe(&stopped).await.expect("observe");
    assert_eq!(status.state, Some(ServiceState::Stopped));

    assert!(services.reload(&stopped).await.expect("reload").is_none());
    assert!(postfix.master_pid().is_none(), "a handler never starts it");
}

#[tokio::test]
async fn exec_driver_reports_stderr_of_a_failing_command() {
    let commands = ExecCommands {
        start: argv(&["sh", "-c", "echo 'fatal: no main.cf' >&2; exit 3"]),
        stop: argv(&["true"]),
        status: argv(&["false"]),
        reload: None,
    };
    let err = service_error(
        Agent::new(ServicesDriver::default())
            .ensure(&exec_service(commands.clone(), ServiceState::Running))
            .await
            .expect_err("start fails"),
    );
    match &err {
        ServiceError::Exec(ExecError::Failed {
            service, stderr, ..
        }) => {
            assert_eq!(service, "postfix");
            assert_eq!(stderr, "fatal: no main.cf");
        }
        other => panic!("expected a failed command, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("start command `sh -c") && message.contains("exit status: 3"),
        "{message}"
    );

    // No reload command: the error says what to add.
    let running = ExecCommands {
        status: argv(&["true"]),
        ..commands
    };
    let err = ServicesDriver::default()
        .reload(&exec_service(running, ServiceState::Running))
        .await
        .expect_err("no reload command");
    assert!(err.to_string().contains("add `exec.reload`"), "{err}");
}

#[tokio::test]
async fn exec_driver_does_not_wait_for_a_daemon_holding_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("up");
    let flag = flag.display();
    // The start command forks a "daemon" that inherits stderr and outlives it.
    let commands = ExecCommands {
        start: argv(&["sh", "-c", &format!("sleep 30 & touch {flag}")]),
        stop: argv(&["rm", "-f", &flag.to_string()]),
        status: argv(&["test", "-e", &flag.to_string()]),
        reload: None,
    };
    let agent = Agent::new(
        ServicesDriver::default()
            .exec(ExecDriver::default().settle_timeout(Duration::from_secs(5))),
    );
    let started = Instant::now();
    let changes = agent
        .ensure(&exec_service(commands, ServiceState::Running))
        .await
        .expect("start");
    assert_eq!(actions(&changes), [ServiceAction::Start]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the daemon's stderr: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn exec_driver_kills_a_command_that_hangs() {
    let commands = ExecCommands {
        start: argv(&["sleep", "30"]),
        stop: argv(&["true"]),
        status: argv(&["false"]),
        reload: None,
    };
    let agent = Agent::new(
        ServicesDriver::default()
            .exec(ExecDriver::default().command_timeout(Duration::from_millis(300))),
    );
    let err = service_error(
        agent
            .ensure(&exec_service(commands, ServiceState::Running))
            .await
            .expect_err("times out"),
    );
    assert!(
        matches!(err, ServiceError::Exec(ExecError::Timeout { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("`sleep 30` did not exit"), "{err}");
}

#[test]
fn auto_without_systemd_and_without_commands_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = ServicesDriver::default().host_root(dir.path());
    let postfix = service("postfix", "postfix.service", ServiceState::Running, None);
    let err = services.backend(&postfix).expect_err("no way to drive it");
    assert!(err.to_string().contains("add exec:"), "{err}");

    fs::create_dir_all(dir.path().join("run/systemd/system")).expect("mkdir");
    assert_eq!(
        services.backend(&postfix).expect("systemd now"),
        Backend::Systemd {
            unit: "postfix.service".to_owned()
        }
    );
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn service_futures_can_move_between_threads() {
    fn send<T: Send>(_: T) {}
    let services = ServicesDriver::default();
    let postfix = service("postfix", "postfix.service", ServiceState::Running, None);
    // The agent's runtime is multi-threaded: every call must be spawnable.
    send(services.observe(&postfix));
    send(Driver::verify(&services, &postfix));
    send(services.reload(&postfix));
    send(services.restart(&postfix));
    send(services.apply(&[]));
}
