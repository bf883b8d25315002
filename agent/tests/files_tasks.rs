//! The files and tasks drivers on a real file system, in a temporary folder.
//!
//! Every test goes through the driver contract the reconciler uses
//! (observe -> diff -> apply -> verify) and runs due `onChange` handlers the
//! way the reconciler does. Only the owner test needs root; it fails, never
//! skips, without it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mailctl_agent::files::{FileAction, FileDriver};
use mailctl_agent::tasks::TaskDriver;
use mailctl_agent::{Change, Driver, Effect, Error, ResourceChange, error_chain};
use mailctl_schemas::model::{Handler, ManagedFile, Task};
use tempfile::TempDir;

// ---------------------------------------------------------------- harness

/// A temporary host: `etc/` for managed files, `state/` for the drivers.
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

    fn files(&self) -> FileDriver {
        FileDriver::new(self.path("state/files"))
    }

    fn tasks(&self) -> TaskDriver {
        TaskDriver::new(self.path("state/tasks"))
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

/// `plan`: the changes as the CLI prints them.
async fn plan<D: Driver>(driver: &D, desired: &D::Desired) -> Result<Vec<String>, Error> {
    let observed = driver.observe(desired).await?;
    Ok(driver
        .diff(desired, &observed)?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// One reconcile as the reconciler runs it: observe, diff, apply, verify;
/// a change counts only when verify no longer lists its subject.
async fn converge<D: Driver>(
    driver: &D,
    desired: &D::Desired,
) -> Result<(Vec<Change>, Vec<Effect>), Error> {
    let observed = driver.observe(desired).await?;
    let changes = driver.diff(desired, &observed)?;
    if changes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let effects = driver.apply(&changes).await?;
    let pending = driver.verify(desired).await?;
    for change in &changes {
        assert!(
            pending.iter().all(|p| p.subject() != change.subject()),
            "{change} still pending after apply: {pending:?}"
        );
    }
    Ok((changes.into_iter().map(Into::into).collect(), effects))
}

/// Runs the handlers `effects` made due, as the reconciler does (these tests
/// have no services, so only `Run` handlers).
async fn run_due(files: &FileDriver, effects: &[Effect]) -> Result<(), Error> {
    for effect in effects {
        let Effect::HandlersDue { path, handlers } = effect else {
            continue;
        };
        for handler in handlers {
            match handler {
                Handler::Run(argv) => files.run_handler(path, argv).await?,
                other => panic!("no services in these tests: {other:?}"),
            }
        }
    }
    Ok(())
}

/// Converges a file and runs its handlers.
async fn apply_file(files: &FileDriver, desired: &ManagedFile) -> Result<Vec<Change>, Error> {
    let (changes, effects) = converge(files, desired).await?;
    run_due(files, &effects).await?;
    Ok(changes)
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
    let files = host.files();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "postmaster@example.org root\n", 0o644);

    let planned = plan(&files, &desired).await.expect("plan");
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

    apply_file(&files, &desired).await.expect("create");
    assert_eq!(read(&path), "postmaster@example.org root\n");
    assert_eq!(mode_of(&path), 0o644);
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    desired.content = Some("postmaster@example.org admin\nabuse@example.org admin\n".into());
    let planned = plan(&files, &desired).await.expect("plan").join("\n");
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
    apply_file(&files, &desired).await.expect("replace");
    assert_eq!(
        read(&path),
        "postmaster@example.org admin\nabuse@example.org admin\n"
    );
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    desired.content = None;
    desired.mode = None;
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        [format!("- file {}", path.display())]
    );
    apply_file(&files, &desired).await.expect("remove");
    assert!(!path.exists());
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
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
    let error = plan(&host.files(), &desired)
        .await
        .expect_err("a folder is no file");
    assert!(
        matches!(
            error,
            Error::FileNotRegular {
                kind: "directory",
                ..
            }
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
    let error = converge(&host.files(), &desired)
        .await
        .expect_err("the folder is missing");
    let message = error.to_string();
    assert!(
        matches!(error, Error::FileParentMissing { .. }),
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
    let files = host.files();
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
        apply_file(&files, &file(path.clone(), content, 0o644))
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
    apply_file(
        &host.files(),
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
    let files = host.files();
    let path = host.path("etc/sasl_passwd");
    write(&path, "[smtp.example.org] user:secret\n");
    chmod(&path, 0o600);
    let inode = stat(&path).ino();
    let desired = file(path.clone(), "[smtp.example.org] user:secret\n", 0o640);

    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        [format!("~ file {}: mode 0600 -> 0640", path.display())]
    );
    apply_file(&files, &desired).await.expect("chmod");
    assert_eq!(mode_of(&path), 0o640);
    assert_eq!(stat(&path).ino(), inode, "same file, not a copy");
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn owner_and_group_are_set_and_kept() {
    require_root("owner_and_group_are_set_and_kept");
    let host = Host::new();
    let files = host.files();
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
        plan(&files, &desired).await.expect("plan"),
        [format!(
            "~ file {}: owner root -> nobody, group root -> nogroup",
            path.display()
        )]
    );
    apply_file(&files, &desired).await.expect("chown");
    let found = stat(&path);
    assert_eq!(
        (found.uid(), found.gid()),
        (nobody.uid.as_raw(), nogroup.gid.as_raw())
    );
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );

    // New content without owner or group in the manifest keeps both: the
    // new file must not silently become root's.
    let undeclared = file(path.clone(), "alice:{SHA512-CRYPT}y\n", 0o640);
    apply_file(&files, &undeclared).await.expect("rewrite");
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
        plan(&files, &created).await.expect("plan")[0].ends_with("(2 bytes, 0600 nobody:root)"),
        "{:?}",
        plan(&files, &created).await
    );
    apply_file(&files, &created).await.expect("create");
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
    let error = plan(&host.files(), &desired)
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
    let files = host.files();
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
        let observed = files.observe(&desired).await.expect("observe");
        let changes = files.diff(&desired, &observed).expect("diff");
        let shown = changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        let debug = format!("{changes:?} {observed:?}");
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
        apply_file(&files, &desired).await.expect("apply");
        assert_eq!(read(&path), "relay user:new-hunter3\n");
    }
    // Creating a secret shows its size only.
    let desired = file(
        host.path("etc/dkim.key"),
        "-----BEGIN PRIVATE KEY-----\n",
        0o600,
    );
    let shown = plan(&files, &desired).await.expect("plan").join("\n");
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
    let shown = plan(&host.files(), &file(path, &new, 0o644))
        .await
        .expect("plan");
    let lines: Vec<&str> = shown[0].lines().collect();
    assert_eq!(lines.len(), 1 + 40 + 1, "{}", shown[0]);
    assert!(lines[41].contains("more diff lines"), "{}", lines[41]);
}

#[tokio::test]
async fn handlers_run_once_per_change() {
    let host = Host::new();
    let files = host.files();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![Handler::Run(host.append_to_log("changed"))];

    apply_file(&files, &desired).await.expect("create");
    assert_eq!(host.log_lines(), 1);
    apply_file(&files, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 1, "no change, no handler");

    desired.content = Some("b\n".into());
    let planned = plan(&files, &desired).await.expect("plan").join("\n");
    assert!(
        planned.contains("\n    then: run /bin/sh -c 'echo changed >>"),
        "{planned}"
    );
    apply_file(&files, &desired).await.expect("change content");
    assert_eq!(host.log_lines(), 2);
    apply_file(&files, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 2);

    desired.mode = Some(0o640);
    apply_file(&files, &desired).await.expect("change mode");
    assert_eq!(host.log_lines(), 3, "a mode change is a change too");

    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
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
        Handler::Run(host.append_to_log("postmap")),
        Handler::Run(host.append_to_log("reload")),
    ];

    // The file changes, then the agent dies before running the handlers.
    {
        let files = host.files();
        let (changes, effects) = converge(&files, &desired).await.expect("apply");
        assert_eq!(changes.len(), 1);
        assert_eq!(
            effects,
            [Effect::HandlersDue {
                path: path.clone(),
                handlers: desired.on_change.clone(),
            }]
        );
    }
    assert_eq!(read(&path), "a\n");
    assert_eq!(host.log_lines(), 0);

    // A new agent finds them due, though the file is up to date.
    let files = host.files();
    let planned = plan(&files, &desired).await.expect("plan").join("\n");
    assert!(
        planned.starts_with(&format!(
            "~ file {}: onChange handlers of an interrupted apply are still due",
            path.display()
        )),
        "{planned}"
    );
    let (changes, effects) = converge(&files, &desired).await.expect("apply");
    assert!(matches!(
        &changes[..],
        [Change::File(change)] if change.action == FileAction::RunPendingHandlers
    ));
    run_due(&files, &effects).await.expect("handlers");
    assert_eq!(host.log_lines(), 2, "each handler once");
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    apply_file(&files, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 2);
}

#[tokio::test]
async fn handlers_due_twice_run_once() {
    let host = Host::new();
    let path = host.path("etc/virtual");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![Handler::Run(host.append_to_log("postmap"))];
    converge(&host.files(), &desired)
        .await
        .expect("apply, then crash");

    desired.content = Some("b\n".into());
    let files = host.files();
    let (_, effects) = converge(&files, &desired).await.expect("apply");
    assert_eq!(
        effects,
        [Effect::HandlersDue {
            path: path.clone(),
            handlers: desired.on_change.clone(),
        }]
    );
    run_due(&files, &effects).await.expect("handlers");
    assert_eq!(host.log_lines(), 1);
    assert_eq!(
        plan(&files, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_failed_handler_stays_due_and_the_ones_before_it_do_not() {
    let host = Host::new();
    let files = host.files();
    let path = host.path("etc/virtual");
    let failing = sh("echo 'postmap: fatal: open database' >&2; exit 3");
    let mut desired = file(path.clone(), "a\n", 0o644);
    desired.on_change = vec![
        Handler::Run(host.append_to_log("first")),
        Handler::Run(failing.clone()),
    ];

    let error = apply_file(&files, &desired)
        .await
        .expect_err("handler fails");
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

    let planned = plan(&files, &desired).await.expect("plan").join("\n");
    assert!(planned.contains("still due"), "{planned}");
    assert!(!planned.contains("echo first"), "ran already: {planned}");
    assert!(planned.contains("exit 3"), "{planned}");
}

#[tokio::test]
async fn a_handler_that_hangs_is_killed() {
    let host = Host::new();
    let files =
        FileDriver::new(host.path("state/files")).handler_timeout(Duration::from_millis(300));
    let error = files
        .run_handler(&host.path("etc/x"), &sh("sleep 30"))
        .await
        .expect_err("timeout");
    assert!(
        error.to_string().contains("did not finish within 0.3s"),
        "{error}"
    );
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
    let tasks = host.tasks();
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
    let planned = plan(&tasks, &desired).await.expect("plan");
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

    converge(&tasks, &desired).await.expect("run");
    assert!(guard.exists());
    assert_eq!(host.log_lines(), 1);
    assert_eq!(
        plan(&tasks, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    converge(&tasks, &desired).await.expect("nothing to do");
    assert_eq!(host.log_lines(), 1);

    // The guard is the statement of done: without it the task runs again.
    fs::remove_file(&guard).expect("remove the guard");
    converge(&tasks, &desired).await.expect("run again");
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
        plan(&host.tasks(), &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    converge(&host.tasks(), &desired)
        .await
        .expect("nothing to do");
    assert_eq!(host.log_lines(), 0);
}

#[tokio::test]
async fn an_unguarded_task_runs_once_and_again_when_its_command_changes() {
    let host = Host::new();
    let desired = task("rebuild-aliases", host.append_to_log("one"), None);
    {
        let tasks = host.tasks();
        assert_eq!(plan(&tasks, &desired).await.expect("plan").len(), 1);
        converge(&tasks, &desired).await.expect("run");
        assert_eq!(host.log_lines(), 1);
    }
    // The record outlives the agent.
    let tasks = host.tasks();
    assert_eq!(
        plan(&tasks, &desired).await.expect("plan"),
        Vec::<String>::new()
    );
    converge(&tasks, &desired).await.expect("nothing to do");
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
        plan(&tasks, &changed).await.expect("plan"),
        [format!(
            "+ task rebuild-aliases: run /bin/sh -c 'echo two >> '\\''{}'\\''' (the command changed since it last ran)",
            host.path("log").display()
        )]
    );
    converge(&tasks, &changed)
        .await
        .expect("run the new command");
    assert_eq!(host.log_lines(), 2);
    assert_eq!(
        plan(&tasks, &changed).await.expect("plan"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_failing_task_reports_stderr_and_runs_again() {
    let host = Host::new();
    let tasks = host.tasks();
    let lines: String = (1..=15).map(|i| format!("echo line{i} >&2; ")).collect();
    let desired = task("convert", sh(&format!("{lines}exit 4")), None);
    let error = converge(&tasks, &desired).await.expect_err("exit 4");
    let message = error.to_string();
    assert!(matches!(error, Error::Task { .. }), "{message}");
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
        plan(&tasks, &desired).await.expect("plan").len(),
        1,
        "no record of a failed run"
    );
}

#[tokio::test]
async fn a_task_that_does_not_create_its_guard_fails() {
    let host = Host::new();
    let guard = host.path("converted");
    let desired = task("convert", vec!["/bin/true".into()], Some(guard.clone()));
    let error = converge(&host.tasks(), &desired)
        .await
        .expect_err("no guard");
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
    let error = converge(&host.tasks(), &desired)
        .await
        .expect_err("no program");
    let message = error.to_string();
    assert!(
        message.contains("`/nonexistent/convert` could not be started"),
        "{message}"
    );
}
