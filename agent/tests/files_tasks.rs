//! The files and tasks drivers on a real file system, in a temporary folder,
//! driven by the production reconciler (`Reconciler::plan` and
//! `Reconciler::apply`, as `mailctl apply --local` and the agent call them):
//! observe -> diff -> apply -> verify, then the due `onChange` handlers. Only
//! the owner test needs root; it fails, never skips, without it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailctl_agent::files::{FileAction, FileDriver, FileError};
use mailctl_agent::tasks::TaskError;
use mailctl_agent::{Applied, Change, Config, Driver, Effect, Error, Reconciler, error_chain};
use mailctl_schemas::model::{Handler, HostSpec, ManagedFile, Task};
use tempfile::TempDir;

// ---------------------------------------------------------------- harness

/// A temporary host: `etc/` for managed files, `state/` for the agent.
struct Host {
    dir: TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        fs::create_dir(dir.path().join("etc")).expect("create etc/");
        Host { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn config(&self) -> Config {
        Config::default().state_dir(self.path("state"))
    }

    /// A reconciler on this host, as a (new) agent process starts one: all it
    /// knows from before is in `state/`.
    fn agent(&self) -> Reconciler {
        self.agent_with(self.config())
    }

    fn agent_with(&self, config: Config) -> Reconciler {
        Reconciler::connect(config).expect("open a netlink socket")
    }

    /// Lines of the log that handlers and tasks append to.
    fn log_lines(&self) -> usize {
        fs::read_to_string(self.path("log"))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// argv appending `line` to the log.
    fn append_to_log(&self, line: &str) -> Vec<String> {
        sh(&format!("echo {line} >> '{}'", self.path("log").display()))
    }

    /// argv appending `line` to the log, except while `crash` exists: then
    /// it marks `started` and hangs, so the test can stop the agent in the
    /// middle of the handler, as a crash would.
    fn append_unless_crashing(&self, line: &str) -> Vec<String> {
        sh(&format!(
            "if [ -e '{crash}' ]; then touch '{started}'; exec sleep 30; fi; echo {line} >> '{log}'",
            crash = self.path("crash").display(),
            started = self.path("started").display(),
            log = self.path("log").display(),
        ))
    }

    /// Applies `desired` and stops the agent (drops the apply, which kills
    /// the running handler) once a handler from
    /// [`append_unless_crashing`](Self::append_unless_crashing) started.
    async fn crash_during_handlers(&self, desired: &ManagedFile) {
        write(self.path("crash"), "");
        let agent = self.agent();
        let started = self.path("started");
        let spec = desired.spec();
        tokio::select! {
            report = agent.apply(&spec) => panic!("the apply finished: {report}"),
            () = async {
                for _ in 0..500 {
                    if started.exists() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("the handler did not start within 10 s");
            } => {}
        }
        fs::remove_file(self.path("crash")).expect("remove the crash marker");
        fs::remove_file(started).expect("remove the started marker");
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn file(path: PathBuf, content: &str, mode: u32) -> ManagedFile {
    ManagedFile {
        path,
        content: Some(content.to_owned()),
        mode: Some(mode),
        owner: None,
        group: None,
        on_change: Vec::new(),
    }
}

/// A resource a test declares: a host manifest with only it.
trait Declared {
    fn spec(&self) -> HostSpec;
}

impl Declared for ManagedFile {
    fn spec(&self) -> HostSpec {
        HostSpec {
            files: vec![self.clone()],
            ..HostSpec::default()
        }
    }
}

impl Declared for Task {
    fn spec(&self) -> HostSpec {
        HostSpec {
            tasks: vec![self.clone()],
            ..HostSpec::default()
        }
    }
}

/// `Reconciler::plan` of a manifest declaring only `desired`: the changes
/// as the CLI prints them.
async fn plan(agent: &Reconciler, desired: &impl Declared) -> Result<Vec<String>, Error> {
    let mut plans = agent.plan(&desired.spec()).await;
    assert_eq!(plans.len(), 1, "one resource declared: {plans:?}");
    let plan = plans.pop().expect("one plan");
    Ok(plan.changes?.iter().map(ToString::to_string).collect())
}

/// `Reconciler::apply` of a manifest declaring only `desired`: observe,
/// diff, apply, verify (a change counts only when verify no longer lists its
/// subject), then the handlers it made due.
async fn apply(agent: &Reconciler, desired: &impl Declared) -> Result<Applied, Error> {
    let mut report = agent.apply(&desired.spec()).await;
    assert_eq!(
        report.resources.len(),
        1,
        "one resource declared: {report:?}"
    );
    report.resources.pop().expect("one report").result
}

/// The handlers an apply ran, as it reports them.
fn handlers_ran(applied: &Applied) -> Vec<String> {
    applied
        .effects
        .iter()
        .map(|effect| match effect {
            Effect::HandlerRan { handler, .. } => handler.clone(),
            other => panic!("only handlers in these tests: {other}"),
        })
        .collect()
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()))
}

fn write(path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
    fs::write(path.as_ref(), content)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.as_ref().display()));
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn stat(path: impl AsRef<Path>) -> fs::Metadata {
    fs::metadata(path.as_ref()).unwrap_or_else(|e| panic!("stat {}: {e}", path.as_ref().display()))
}

fn mode_of(path: &Path) -> u32 {
    stat(path).permissions().mode() & 0o7777
}

/// Files in `folder` other than `keep`.
fn others_in(folder: &Path, keep: &str) -> Vec<String> {
    fs::read_dir(folder)
        .expect("list folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != keep)
        .collect()
}

fn require_root(what: &str) {
    let euid = fs::metadata("/proc/self").expect("read /proc/self").uid();
    assert_eq!(
        euid, 0,
        "{what} changes the owner of files and must run as root (CI does); \
         run `sudo cargo test -p mailctl-agent --test files_tasks`"
    );
}

// ------------------------------------------------------------------ files

#[tokio::test]
async fn creates_replaces_and_removes_a_file() {
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "postmaster@example.org root\n", 0o644);

    let planned = plan(&agent, &desired).await.expect("plan");
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("look up own user")
        .expect("own user has a name")
        .name;
    let group = nix::unistd::Group::from_gid(nix::unistd::getegid())
        .expect("look up own group")
        .expect("own group has a name")
        .name;
    assert_eq!(
        planned,
        [format!(
            "+ file {} (28 bytes, 0644 {user}:{group})",
            path.display()
        )]
    );
    assert!(!path.exists(), "plan must not write");

    apply(&agent, &desired).await.expect("create");
    assert_eq!(read(&path), "postmaster@example.org root\n");
    assert_eq!(mode_of(&path), 0o644);
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    desired.content = Some("postmaster@example.org admin\nabuse@example.org admin\n".into());
    let planned = plan(&agent, &desired).await.expect("plan").join("\n");
    assert!(
        planned.starts_with(&format!(
            "~ file {}: content (28 -> 53 bytes)",
            path.display()
        )),
        "{planned}"
    );
    assert!(
        planned.contains("\n    -postmaster@example.org root"),
        "{planned}"
    );
    assert!(
        planned.contains("\n    +postmaster@example.org admin"),
        "{planned}"
    );
    assert!(
        planned.contains("\n    +abuse@example.org admin"),
        "{planned}"
    );
    apply(&agent, &desired).await.expect("replace");
    assert_eq!(
        read(&path),
        "postmaster@example.org admin\nabuse@example.org admin\n"
    );
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    desired.content = None;
    desired.mode = None;
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        [format!("- file {}", path.display())]
    );
    apply(&agent, &desired).await.expect("remove");
    assert!(!path.exists());
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    assert_eq!(others_in(&host.path("etc"), ""), Vec::<String>::new());
}

#[tokio::test]
async fn absent_never_removes_a_folder() {
    let host = Host::new();
    let path = host.path("etc/postfix");
    fs::create_dir(&path).expect("create a folder");
    let desired = ManagedFile {
        content: None,
        ..file(path.clone(), "", 0o644)
    };
    let error = plan(&host.agent(), &desired)
        .await
        .expect_err("a folder is no file");
    assert!(
        matches!(
            error,
            Error::File(FileError::NotRegular {
                kind: "directory",
                ..
            })
        ),
        "{error}"
    );
    assert!(path.is_dir());
}

#[tokio::test]
async fn a_missing_folder_is_an_error_not_created() {
    let host = Host::new();
    let path = host.path("etc/postfix/virtual");
    let desired = file(path.clone(), "x\n", 0o644);
    let error = apply(&host.agent(), &desired)
        .await
        .expect_err("the folder is missing");
    let message = error.to_string();
    assert!(
        matches!(error, Error::File(FileError::ParentMissing { .. })),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "folder {} does not exist",
            host.path("etc/postfix").display()
        )),
        "{message}"
    );
    assert!(
        message.contains("mailctl does not create folders"),
        "{message}"
    );
    assert!(!host.path("etc/postfix").exists());
}

#[tokio::test]
async fn a_reader_never_sees_a_half_written_file() {
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/big.cf");
    // Large enough that a write takes several system calls.
    let a = "a".repeat(4 << 20);
    let b = "b".repeat(4 << 20);
    write(&path, &a);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let seen = fs::read_to_string(&path).expect("the file is always there");
                assert!(seen == a || seen == b, "read {} bytes of a mix", seen.len());
                reads += 1;
            }
            reads
        })
    };
    for round in 0..10 {
        let content = if round % 2 == 0 { &b } else { &a };
        apply(&agent, &file(path.clone(), content, 0o644))
            .await
            .expect("rewrite");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw only whole files");
    assert!(reads > 0);
    assert_eq!(read(&path), a);
    assert_eq!(others_in(&host.path("etc"), "big.cf"), Vec::<String>::new());
}

#[tokio::test]
async fn temporaries_left_by_a_crash_are_removed() {
    let host = Host::new();
    let path = host.path("etc/main.cf");
    let leftover = host.path("etc/.main.cf.mailctl-999-0.tmp");
    write(&leftover, "half a fi");
    write(host.path("etc/.other.mailctl-1-0.tmp"), "not ours");
    apply(
        &host.agent(),
        &file(path.clone(), "myhostname = eve\n", 0o644),
    )
    .await
    .expect("write");
    assert!(!leftover.exists());
    let mut left = others_in(&host.path("etc"), "main.cf");
    left.sort();
    assert_eq!(left, [".other.mailctl-1-0.tmp"]);
}

#[tokio::test]
async fn a_mode_change_is_made_in_place() {
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/sasl_passwd");
    write(&path, "[smtp.example.org] user:secret\n");
    chmod(&path, 0o600);
    let inode = stat(&path).ino();
    let desired = file(path.clone(), "[smtp.example.org] user:secret\n", 0o640);

    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        [format!("~ file {}: mode 0600 -> 0640", path.display())]
    );
    apply(&agent, &desired).await.expect("chmod");
    assert_eq!(mode_of(&path), 0o640);
    assert_eq!(stat(&path).ino(), inode, "same file, not a copy");
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn owner_and_group_are_set_and_kept() {
    require_root("owner_and_group_are_set_and_kept");
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/dovecot-users");
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("user nobody");
    let nogroup = nix::unistd::Group::from_name("nogroup")
        .expect("look up nogroup")
        .expect("group nogroup");
    write(&path, "alice:{SHA512-CRYPT}x\n");
    chmod(&path, 0o640);
    std::os::unix::fs::chown(&path, Some(0), Some(0)).expect("give the fixture to root");

    let mut desired = file(path.clone(), "alice:{SHA512-CRYPT}x\n", 0o640);
    desired.owner = Some("nobody".into());
    desired.group = Some("nogroup".into());
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        [format!(
            "~ file {}: owner root -> nobody, group root -> nogroup",
            path.display()
        )]
    );
    apply(&agent, &desired).await.expect("chown");
    let found = stat(&path);
    assert_eq!(
        (found.uid(), found.gid()),
        (nobody.uid.as_raw(), nogroup.gid.as_raw())
    );
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    // New content without owner or group in the manifest keeps both: the
    // new file must not silently become root's.
    let undeclared = file(path.clone(), "alice:{SHA512-CRYPT}y\n", 0o640);
    apply(&agent, &undeclared).await.expect("rewrite");
    let found = stat(&path);
    assert_eq!(
        (found.uid(), found.gid()),
        (nobody.uid.as_raw(), nogroup.gid.as_raw())
    );
    assert_eq!(found.mode() & 0o7777, 0o640);
    assert_eq!(read(&path), "alice:{SHA512-CRYPT}y\n");

    // A new file for a named owner.
    let mut created = file(host.path("etc/new"), "x\n", 0o600);
    created.owner = Some("nobody".into());
    assert!(
        plan(&agent, &created).await.expect("plan")[0].ends_with("(2 bytes, 0600 nobody:root)"),
        "{:?}",
        plan(&agent, &created).await
    );
    apply(&agent, &created).await.expect("create");
    let found = stat(host.path("etc/new"));
    assert_eq!(
        (found.uid(), found.mode() & 0o7777),
        (nobody.uid.as_raw(), 0o600)
    );
}

#[tokio::test]
async fn an_unknown_owner_is_named_in_the_error() {
    let host = Host::new();
    let mut desired = file(host.path("etc/x"), "x\n", 0o644);
    desired.owner = Some("no-such-user-mailctl".into());
    let error = plan(&host.agent(), &desired)
        .await
        .expect_err("unknown user");
    let message = error.to_string();
    assert!(
        message.contains("no user no-such-user-mailctl on this host"),
        "{message}"
    );
    assert!(message.contains("fix `owner`"), "{message}");
}

#[tokio::test]
async fn secret_content_never_appears_in_a_plan() {
    let host = Host::new();
    let agent = host.agent();
    let hidden = "content differs (not shown: file is not world-readable)";
    let cases = [
        // (existing mode, desired mode)
        (0o600, Some(0o600)),
        (0o640, None),
        (0o600, Some(0o644)),
        (0o644, Some(0o640)),
    ];
    for (existing, wanted) in cases {
        let path = host.path("etc/sasl_passwd");
        write(&path, "relay user:old-hunter2\n");
        chmod(&path, existing);
        let desired = ManagedFile {
            mode: wanted,
            ..file(path.clone(), "relay user:new-hunter3\n", 0)
        };
        let shown = plan(&agent, &desired).await.expect("plan").join("\n");
        // Neither the plan nor what the files driver observed holds the
        // secret in its debug form (what a log line with `?` would show).
        let observed = FileDriver::new(host.path("state/files"))
            .observe(&desired)
            .await
            .expect("observe");
        let debug = format!("{:?} {observed:?}", agent.plan(&desired.spec()).await);
        for text in [&shown, &debug] {
            assert!(
                !text.contains("hunter"),
                "{existing:o} -> {wanted:?}: {text}"
            );
        }
        assert!(
            shown.contains(hidden),
            "{existing:o} -> {wanted:?}: {shown}"
        );
        apply(&agent, &desired).await.expect("apply");
        assert_eq!(read(&path), "relay user:new-hunter3\n");
    }
    // Creating a secret shows its size only.
    let desired = file(
        host.path("etc/dkim.key"),
        "-----BEGIN PRIVATE KEY-----\n",
        0o600,
    );
    let shown = plan(&agent, &desired).await.expect("plan").join("\n");
    assert!(!shown.contains("PRIVATE"), "{shown}");
}

#[tokio::test]
async fn a_long_diff_is_cut() {
    let host = Host::new();
    let path = host.path("etc/aliases");
    let old: String = (0..200).map(|i| format!("user{i}: root\n")).collect();
    let new: String = (0..200).map(|i| format!("user{i}: admin\n")).collect();
    write(&path, old);
    chmod(&path, 0o644);
    let shown = plan(&host.agent(), &file(path, &new, 0o644))
        .await
        .expect("plan");
    let lines: Vec<&str> = shown[0].lines().collect();
    assert_eq!(lines.len(), 1 + 40 + 1, "{}", shown[0]);
    assert!(lines[41].contains("more diff lines"), "{}", lines[41]);
}

#[tokio::test]
async fn handlers_run_once_per_change() {
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![Handler::Run(host.append_to_log("changed"))];

    apply(&agent, &desired).await.expect("create");
    assert_eq!(host.log_lines(), 1);
    apply(&agent, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 1, "no change, no handler");

    desired.content = Some("b\n".into());
    let planned = plan(&agent, &desired).await.expect("plan").join("\n");
    assert!(
        planned.contains("\n    then: run /bin/sh -c 'echo changed >>"),
        "{planned}"
    );
    apply(&agent, &desired).await.expect("change content");
    assert_eq!(host.log_lines(), 2);
    apply(&agent, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 2);

    desired.mode = Some(0o640);
    apply(&agent, &desired).await.expect("change mode");
    assert_eq!(host.log_lines(), 3, "a mode change is a change too");

    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    assert!(
        !host.path("state/files").exists() || others_in(&host.path("state/files"), "").is_empty()
    );
}

#[tokio::test]
async fn handlers_survive_a_crash_between_change_and_handler() {
    let host = Host::new();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![
        Handler::Run(host.append_unless_crashing("postmap")),
        Handler::Run(host.append_to_log("reload")),
    ];

    // The file changes, then the agent dies while running the first handler.
    host.crash_during_handlers(&desired).await;
    assert_eq!(read(&path), "a\n");
    assert_eq!(host.log_lines(), 0);

    // A new agent finds both due, though the file is up to date.
    let agent = host.agent();
    let planned = plan(&agent, &desired).await.expect("plan").join("\n");
    assert!(
        planned.starts_with(&format!(
            "~ file {}: onChange handlers of an interrupted apply are still due",
            path.display()
        )),
        "{planned}"
    );
    let applied = apply(&agent, &desired).await.expect("apply");
    assert!(
        matches!(
            &applied.changes[..],
            [Change::File(change)] if change.action == FileAction::RunPendingHandlers
        ),
        "{:?}",
        applied.changes
    );
    assert_eq!(handlers_ran(&applied).len(), 2, "{:?}", applied.effects);
    assert_eq!(host.log_lines(), 2, "each handler once");
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    let applied = apply(&agent, &desired).await.expect("nothing to do");
    assert!(applied.changes.is_empty() && applied.effects.is_empty());
    assert_eq!(host.log_lines(), 2);
}

#[tokio::test]
async fn handlers_due_twice_run_once() {
    let host = Host::new();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![Handler::Run(host.append_unless_crashing("postmap"))];
    host.crash_during_handlers(&desired).await;
    assert_eq!(host.log_lines(), 0);

    // Changed again before the handler of the first change ran: due twice,
    // run once.
    desired.content = Some("b\n".into());
    let agent = host.agent();
    let applied = apply(&agent, &desired).await.expect("apply");
    assert_eq!(read(&path), "b\n");
    assert_eq!(handlers_ran(&applied).len(), 1, "{:?}", applied.effects);
    assert_eq!(host.log_lines(), 1);
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_failed_handler_stays_due_and_the_ones_before_it_do_not() {
    let host = Host::new();
    let agent = host.agent();
    let path = host.path("etc/virtual");
    let failing = sh("echo 'postmap: fatal: open database' >&2; exit 3");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![
        Handler::Run(host.append_to_log("first")),
        Handler::Run(failing.clone()),
    ];

    let error = apply(&agent, &desired).await.expect_err("handler fails");
    let message = error_chain(&error);
    assert!(
        message.contains(&format!(
            "file {}: onChange handler `/bin/sh -c",
            path.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("failed (exit code 3): postmap: fatal: open database"),
        "{message}"
    );
    assert_eq!(host.log_lines(), 1);

    let planned = plan(&agent, &desired).await.expect("plan").join("\n");
    assert!(planned.contains("still due"), "{planned}");
    assert!(!planned.contains("echo first"), "ran already: {planned}");
    assert!(planned.contains("exit 3"), "{planned}");
}

#[tokio::test]
async fn a_handler_that_hangs_is_killed() {
    let host = Host::new();
    let agent = host.agent_with(host.config().handler_timeout(Duration::from_millis(300)));
    let mut desired = file(host.path("etc/x"), "x\n", 0o644);
    desired.on_change = vec![Handler::Run(sh("sleep 30"))];
    let started = tokio::time::Instant::now();
    let error = apply(&agent, &desired).await.expect_err("timeout");
    assert!(
        error.to_string().contains("did not finish within 0.3s"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "not killed");
}

// ------------------------------------------------------------------ tasks

fn task(name: &str, run: Vec<String>, creates: Option<PathBuf>) -> Task {
    Task {
        name: name.into(),
        run,
        creates,
    }
}

#[tokio::test]
async fn a_guarded_task_runs_until_its_guard_exists() {
    let host = Host::new();
    let agent = host.agent();
    let guard = host.path("converted");
    let desired = task(
        "courier-to-dovecot",
        sh(&format!(
            "echo converting >> '{}' && touch '{}'",
            host.path("log").display(),
            guard.display()
        )),
        Some(guard.clone()),
    );
    let planned = plan(&agent, &desired).await.expect("plan");
    assert_eq!(planned.len(), 1);
    assert!(
        planned[0].starts_with("+ task courier-to-dovecot: run /bin/sh -c 'echo converting"),
        "{}",
        planned[0]
    );
    assert!(
        planned[0].ends_with(&format!("(creates {})", guard.display())),
        "{}",
        planned[0]
    );

    apply(&agent, &desired).await.expect("run");
    assert!(guard.exists());
    assert_eq!(host.log_lines(), 1);
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    apply(&agent, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 1);

    // The guard is the statement of done: without it the task runs again.
    fs::remove_file(&guard).expect("remove the guard");
    apply(&agent, &desired).await.expect("run again");
    assert_eq!(host.log_lines(), 2);
}

#[tokio::test]
async fn a_guard_that_exists_already_means_done() {
    let host = Host::new();
    write(host.path("converted"), "");
    let desired = task(
        "convert",
        host.append_to_log("ran"),
        Some(host.path("converted")),
    );
    assert_eq!(
        plan(&host.agent(), &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    apply(&host.agent(), &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 0);
}

#[tokio::test]
async fn an_unguarded_task_runs_once_and_again_when_its_command_changes() {
    let host = Host::new();
    let desired = task("rebuild-aliases", host.append_to_log("one"), None);
    {
        let agent = host.agent();
        assert_eq!(plan(&agent, &desired).await.expect("plan").len(), 1);
        apply(&agent, &desired).await.expect("run");
        assert_eq!(host.log_lines(), 1);
    }
    // The record outlives the agent.
    let agent = host.agent();
    assert_eq!(
        plan(&agent, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    apply(&agent, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 1);
    let record = read(host.path("state/tasks/task-rebuild-aliases.json"));
    assert!(
        record.contains("argvSha256") && record.contains("completedAtUnix"),
        "{record}"
    );
    assert!(
        !record.contains("echo"),
        "only a hash of the command is kept: {record}"
    );

    let changed = task("rebuild-aliases", host.append_to_log("two"), None);
    assert_eq!(
        plan(&agent, &changed).await.expect("plan"),
        [format!(
            "+ task rebuild-aliases: run /bin/sh -c 'echo two >> '\\''{}'\\''' (the command changed since it last ran)",
            host.path("log").display()
        )]
    );
    apply(&agent, &changed).await.expect("run the new command");
    assert_eq!(host.log_lines(), 2);
    assert_eq!(
        plan(&agent, &changed).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_failing_task_reports_stderr_and_runs_again() {
    let host = Host::new();
    let agent = host.agent();
    let lines: String = (1..=15).map(|i| format!("echo line{i} >&2; ")).collect();
    let desired = task("convert", sh(&format!("{lines}exit 4")), None);
    let error = apply(&agent, &desired).await.expect_err("exit 4");
    let message = error.to_string();
    assert!(
        matches!(error, Error::Task(TaskError::Failed { .. })),
        "{message}"
    );
    assert!(
        message.starts_with("task convert: `/bin/sh -c"),
        "{message}"
    );
    assert!(
        message.contains("failed (exit code 4), last lines of stderr:"),
        "{message}"
    );
    assert!(
        message.contains("\n    line15") && message.contains("\n    line6\n"),
        "{message}"
    );
    assert!(
        !message.contains("line5\n"),
        "only the last lines: {message}"
    );
    assert_eq!(
        plan(&agent, &desired).await.expect("plan").len(),
        1,
        "no record of a failed run"
    );
}

#[tokio::test]
async fn a_task_that_does_not_create_its_guard_fails() {
    let host = Host::new();
    let guard = host.path("converted");
    let desired = task("convert", vec!["/bin/true".into()], Some(guard.clone()));
    let error = apply(&host.agent(), &desired).await.expect_err("no guard");
    assert_eq!(
        error.to_string(),
        format!(
            "task convert ran but did not create {}; fix the command, or `creates` if the task makes something else",
            guard.display()
        )
    );
}

#[tokio::test]
async fn a_task_that_cannot_start_says_so() {
    let host = Host::new();
    let desired = task("convert", vec!["/nonexistent/convert".into()], None);
    let error = apply(&host.agent(), &desired)
        .await
        .expect_err("no program");
    let message = error.to_string();
    assert!(
        message.contains("`/nonexistent/convert` could not be started"),
        "{message}"
    );
}
