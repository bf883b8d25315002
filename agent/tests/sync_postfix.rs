//! Sync jobs against a live maildir fed by a real Postfix, on real parts:
//! two network namespaces joined by a veth pair, a private Postfix instance
//! and a test sshd on the source "host", and the sync runner (with the real
//! `rsync` and `ssh`) on the destination one.
//!
//! Acceptance item: after repeated syncs of a live maildir and a final sync
//! with writers stopped, every message is on the destination exactly once
//! with its flags and mtime, verification says so, and a message deleted on
//! the destination by hand is reported missing.
//!
//! Mail arrives over SMTP (Postfix's own `smtp-source`, sent from the
//! destination namespace) and is delivered by Postfix's virtual(8) agent into
//! the source maildir while the syncs run. Flags change the way an IMAP
//! server changes them (renames `new/X` -> `cur/X:2,S` -> `cur/X:2,RS`):
//! between runs in the first test, all the time in the second.
//!
//! Needs root, `ip`, `rsync`, `sshd`, `ssh`, `ssh-keygen` and Postfix
//! (installed with apt when missing, as tests/services.rs does;
//! scripts/test.sh installs all of them). Fails, never skips, when something
//! is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;

#[path = "support/postfix.rs"]
mod postfix;
use postfix::require_postfix;

#[path = "support/ssh_lab.rs"]
mod ssh_lab;
use ssh_lab::SshLab;

use mailctl_agent::sync::maildir::Sub;
use mailctl_agent::sync::{Listing, RunReport, SyncRunner};
use mailctl_schemas::model::{SyncJob, SyncSource};

/// Namespaces of this test binary are `mpfx<PID>-<N>s` (source) and
/// `mpfx<PID>-<N>d` (destination).
const NS_PREFIX: &str = "mpfx";
/// Messages per `smtp-source` batch; the sender sends batches until stopped.
const BATCH: u64 = 20;
/// Mid-stream runs during which mail demonstrably arrived, at least.
const LIVE_RUNS: usize = 3;
/// Mid-stream runs at most (a run during which nothing arrived does not count).
const MAX_MID_RUNS: usize = 12;

// ---------------------------------------------------------------- harness

fn require_tools(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} must run as root (CI does): it creates network namespaces, runs sshd and Postfix"
    );
    for (program, arg, package) in [("ip", "-V", "iproute2"), ("rsync", "--version", "rsync")] {
        let found = Command::new(program).arg(arg).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "{test} needs `{program}`: apt-get install {package} (scripts/test.sh does)"
        );
    }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install openssh-server openssh-client (scripts/test.sh does)"
        );
    }
    require_postfix("to deliver the live mail");
    for tool in [
        "/usr/sbin/postfix",
        "/usr/sbin/postqueue",
        "/usr/sbin/smtp-source",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: it comes with the postfix package (scripts/test.sh installs it)"
        );
    }
}

fn output(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn sh(argv: &[&str]) {
    let out = output(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` until it returns `Some` or the deadline passes; `context`
/// says what was seen when giving up.
fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() >= deadline {
            panic!(
                "gave up after {deadline:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listing(root: &Path) -> Listing {
    Listing::read_local(root).unwrap_or_else(|e| panic!("list {}: {e}", root.display()))
}

/// Every message file: `sub/name` (the root folder; `folder/sub/name`
/// otherwise) -> (mtime, size).
fn files(root: &Path) -> BTreeMap<String, (i64, u64)> {
    listing(root)
        .folders
        .iter()
        .flat_map(|(folder, f)| {
            f.messages.iter().map(move |m| {
                let rel = match folder.as_str() {
                    "" => m.rel(),
                    folder => format!("{folder}/{}", m.rel()),
                };
                (rel, (m.mtime, m.size))
            })
        })
        .collect()
}

/// Unique parts (`folder/key`) and how many files carry each.
fn key_counts(root: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (folder, f) in &listing(root).folders {
        for m in &f.messages {
            *counts.entry(format!("{folder}/{}", m.key)).or_insert(0) += 1;
        }
    }
    counts
}

/// Flags (after `:2,`) by `folder/key`.
fn flags(root: &Path) -> BTreeMap<String, String> {
    listing(root)
        .folders
        .iter()
        .flat_map(|(folder, f)| {
            f.messages.iter().map(move |m| {
                let flags = m.name.split_once(":2,").map_or("", |(_, f)| f);
                (format!("{folder}/{}", m.key), flags.to_owned())
            })
        })
        .collect()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Namespaces of earlier runs of these tests whose process is gone (killed
/// before their guard ran): end what still runs in them, then remove them.
fn remove_stale_namespaces() {
    let list = output(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = output(&["ip", "netns", "pids", name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = output(&["kill", "-KILL", pid]);
        }
        let _ = output(&["ip", "netns", "del", name]);
    }
}

/// Postfix's master.cf for the private instances: the packaged services,
/// none chrooted (the queue directory is a fresh temporary one).
const MASTER_CF: &str = "\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// Two hosts: the source namespace runs sshd and a private Postfix that
/// delivers `alice@example.test` into `src/alice/Maildir/`; the thread that
/// made the lab lives in the destination namespace. Everything is stopped
/// and removed on drop, also when the test fails.
struct Lab {
    /// Namespaces, veth and sshd (the listing cache in `dir/cache`).
    ssh: SshLab,
    postfix_started: bool,
    /// Tells the writer threads to stop.
    stop: Arc<AtomicBool>,
    /// Last: removed after everything that used it stopped.
    dir: tempfile::TempDir,
}

impl Lab {
    /// Builds the lab for test number `n` of this binary and moves the
    /// calling thread into the destination namespace.
    fn start(n: u32) -> Lab {
        remove_stale_namespaces();
        let dir = tempfile::Builder::new()
            .prefix("mailctl-sync-postfix-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path().to_owned();
        // Postfix's daemons (user postfix) and virtual(8) (uid 65534) reach in.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["etc", "spool", "data", "src", "cache"] {
            fs::create_dir(base.join(sub)).expect("mkdir");
        }
        sh(&[
            "chown",
            "postfix",
            base.join("data").to_str().expect("utf-8"),
        ]);
        sh(&[
            "chown",
            "65534:65534",
            base.join("src").to_str().expect("utf-8"),
        ]);
        let id = std::process::id();
        // 10.83.0.0/16 is this file's range (sync.rs uses 10.79, LAB.md 10.77).
        let net = format!("10.83.{}", id % 120 * 2 + n);
        let ssh = SshLab::start(
            &format!("{NS_PREFIX}{id}-{n}s"),
            &format!("{NS_PREFIX}{id}-{n}d"),
            &net,
            &base,
        )
        .expect("ssh lab");
        let s = ssh.source_ns.clone();
        let mut lab = Lab {
            ssh,
            postfix_started: false,
            stop: Arc::new(AtomicBool::new(false)),
            dir,
        };

        // A private Postfix on the source: listens on the source address
        // only, delivers alice@example.test with virtual(8).
        let b = base.display();
        fs::write(base.join("etc/master.cf"), MASTER_CF).expect("write master.cf");
        fs::write(
            base.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {b}/spool\n\
                 data_directory = {b}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = src.example.test\n\
                 mydomain = example.test\n\
                 myorigin = src.example.test\n\
                 inet_interfaces = {net}.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = {net}.0/24\n\
                 mydestination =\n\
                 local_transport = error:no local delivery here\n\
                 alias_maps =\n\
                 alias_database =\n\
                 smtpd_peername_lookup = no\n\
                 virtual_mailbox_domains = example.test\n\
                 virtual_mailbox_base = {b}/src\n\
                 virtual_mailbox_maps = inline:{{ alice@example.test=alice/Maildir/ }}\n\
                 virtual_uid_maps = static:65534\n\
                 virtual_gid_maps = static:65534\n\
                 maillog_file_prefixes = {b}\n\
                 maillog_file = {b}/maillog\n"
            ),
        )
        .expect("write main.cf");
        lab.postfix_started = true;
        let started = lab.postfix("postfix", &["start"]);
        assert!(
            started.status.success(),
            "postfix start in {s} failed: {}{}\nmaillog:\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            tail(&lab.maillog())
        );

        // This thread (and the rsync and ssh the runner starts) lives on the
        // destination from here on.
        lab.ssh
            .enter_destination(&[(25, "Postfix's smtpd")])
            .unwrap_or_else(|e| panic!("{e}\nmaillog:\n{}", tail(&lab.maillog())));
        lab
    }

    fn base(&self) -> &Path {
        self.dir.path()
    }

    /// The maildir Postfix delivers into: the job's source.
    fn maildir(&self) -> PathBuf {
        self.base().join("src/alice/Maildir")
    }

    fn destination(&self) -> PathBuf {
        self.base().join("dst")
    }

    fn runner(&self) -> SyncRunner {
        SyncRunner::new(self.base().join("state"))
    }

    /// The job: the source maildir over ssh into a local destination.
    fn job(&self) -> SyncJob {
        SyncJob {
            name: "live-maildir".into(),
            source: SyncSource::Remote {
                host: format!("root@{}", self.ssh.source_addr),
                path: self.maildir(),
            },
            destination: self.destination(),
            every: None,
            maildir: true,
            mbox: false,
            delete: false,
            ssh_key: Some(self.ssh.client_key.clone()),
            ssh_host_key: None,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    fn maillog(&self) -> String {
        fs::read_to_string(self.base().join("maillog")).unwrap_or_default()
    }

    /// `ip netns exec SOURCE /usr/sbin/PROGRAM -c CONFIG ARGS` (Postfix's
    /// commands check `inet_interfaces` against the namespace's addresses).
    fn postfix(&self, program: &str, args: &[&str]) -> Output {
        let program = format!("/usr/sbin/{program}");
        let config = self.base().join("etc");
        let config = config.to_str().expect("utf-8 path");
        let mut argv = vec![
            "ip",
            "netns",
            "exec",
            &self.ssh.source_ns,
            &program,
            "-c",
            config,
        ];
        argv.extend_from_slice(args);
        output(&argv)
    }

    /// The master process, as its pid file names it, if it still runs.
    fn master_pid(&self) -> Option<u32> {
        let pid_file = self.base().join("spool/pid/master.pid");
        let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        exe.ends_with("master").then_some(pid)
    }

    /// Sends mail over SMTP from the destination host into the source's
    /// Postfix, batch after batch, until the lab's stop flag is set. The
    /// counter is of messages Postfix accepted.
    fn sender(&self) -> (JoinHandle<Result<u64, String>>, Arc<AtomicU64>) {
        let sent = Arc::new(AtomicU64::new(0));
        let (stop, counter, d) = (self.stop.clone(), sent.clone(), self.ssh.dest_ns.clone());
        let target = format!("{}:25", self.ssh.source_addr);
        let handle = std::thread::spawn(move || {
            let mut batch = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // Bodies of 200 B to ~8 KB, different per batch.
                let length = (200 + batch * 1_733 % 8_000).to_string();
                let count = BATCH.to_string();
                let out = Command::new("ip")
                    .args(["netns", "exec", &d, "/usr/sbin/smtp-source"])
                    .args(["-s", "2", "-m", &count, "-l", &length])
                    .args(["-f", "bob@example.test", "-t", "alice@example.test"])
                    .arg(&target)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("smtp-source: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "smtp-source batch {batch} failed ({}) after {} messages: {}",
                        out.status,
                        counter.load(Ordering::SeqCst),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                counter.fetch_add(BATCH, Ordering::SeqCst);
                batch += 1;
                // Pace the batches: mail trickles in over the whole test.
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(counter.load(Ordering::SeqCst))
        });
        (handle, sent)
    }

    /// Waits until the destination lacks mail the source has (so the next
    /// run has something to transfer).
    fn wait_for_new_mail(&self) {
        let (src, dst) = (self.maildir(), self.destination());
        wait_for(
            "mail the destination does not have yet",
            Duration::from_secs(30),
            || {
                let have = key_counts(&dst);
                key_counts(&src)
                    .keys()
                    .any(|k| !have.contains_key(k))
                    .then_some(())
            },
            || tail(&self.maillog()),
        );
    }

    /// Stops the writers: sets the stop flag, waits for the sender, waits
    /// until Postfix's queue is empty and stops Postfix. Checks that Postfix
    /// delivered every message sent, once, and returns how many that is.
    fn stop_writers(&self, sender: JoinHandle<Result<u64, String>>) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let sent = sender
            .join()
            .expect("sender thread")
            .unwrap_or_else(|e| panic!("{e}\nmaillog:\n{}", tail(&self.maillog())));
        wait_for(
            "Postfix's queue to be empty",
            Duration::from_secs(60),
            || {
                let out = self.postfix("postqueue", &["-p"]);
                (out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("Mail queue is empty"))
                .then_some(())
            },
            || {
                let out = self.postfix("postqueue", &["-p"]);
                format!(
                    "postqueue -p:\n{}{}\nmaillog:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    tail(&self.maillog())
                )
            },
        );
        let stopped = self.postfix("postfix", &["stop"]);
        assert!(
            stopped.status.success(),
            "postfix stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        wait_for(
            "Postfix's master to exit",
            Duration::from_secs(20),
            || self.master_pid().is_none().then_some(()),
            || tail(&self.maillog()),
        );
        let log = self.maillog();
        let delivered = log
            .lines()
            .filter(|l| l.contains("status=sent (delivered to maildir)"))
            .count() as u64;
        assert_eq!(
            delivered,
            sent,
            "Postfix logged {delivered} maildir deliveries for {sent} messages sent:\n{}",
            tail(&log)
        );
        let keys = key_counts(&self.maildir());
        assert_eq!(
            keys.len() as u64,
            sent,
            "the source maildir holds every message sent"
        );
        assert!(
            keys.values().all(|n| *n == 1),
            "one file per message on the source"
        );
        let half_delivered = fs::read_dir(self.maildir().join("tmp"))
            .expect("read tmp/")
            .count();
        assert_eq!(half_delivered, 0, "nothing half-delivered on the source");
        sent
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.postfix_started {
            let _ = self.postfix("postfix", &["stop"]);
            if let Some(pid) = self.master_pid() {
                let _ = output(&["kill", "-KILL", &pid.to_string()]);
            }
        }
        // Then the fields: sshd and the namespaces, last the directory.
    }
}

/// Renames some messages of the source that the destination already holds
/// under the same name, as an IMAP server does when flags change: up to
/// `seen` from `new/X` to `cur/X:2,S` and up to `replied` from `cur/X:2,S`
/// to `cur/X:2,RS`. Returns how many were renamed; each is one rename the
/// next run must make on the destination.
fn change_flags(source: &Path, destination: &Path, seen: usize, replied: usize) -> usize {
    let on_destination: BTreeSet<String> = files(destination).into_keys().collect();
    let synced: Vec<String> = files(source)
        .into_keys()
        .filter(|rel| on_destination.contains(rel))
        .collect();
    let mut renamed = 0;
    let mut rename = |rel: &str, to: String| {
        let from = source.join(rel);
        let to = source.join("cur").join(to);
        fs::rename(&from, &to)
            .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
        renamed += 1;
    };
    let read = synced
        .iter()
        .filter(|rel| rel.starts_with("cur/") && rel.ends_with(":2,S"))
        .take(replied);
    for rel in read {
        let (base, _) = rel["cur/".len()..].split_once(':').expect("flags");
        rename(rel, format!("{base}:2,RS"));
    }
    let fresh = synced
        .iter()
        .filter(|rel| rel.starts_with("new/"))
        .step_by(2)
        .take(seen);
    for rel in fresh {
        rename(rel, format!("{}:2,S", &rel["new/".len()..]));
    }
    renamed
}

/// What the next run must do to the destination: (renames, transfers).
fn pending(source: &Path, destination: &Path) -> (usize, usize) {
    let dst: BTreeMap<String, String> = listing(destination)
        .folders
        .into_values()
        .flat_map(|f| f.messages.into_iter().map(|m| (m.key.clone(), m.rel())))
        .collect();
    let mut renames = 0;
    let mut transfers = 0;
    for m in listing(source)
        .folders
        .into_values()
        .flat_map(|f| f.messages)
    {
        match dst.get(&m.key) {
            Some(rel) if *rel != m.rel() => renames += 1,
            Some(_) => {}
            None => transfers += 1,
        }
    }
    (renames, transfers)
}

/// The final state: every source message on the destination exactly once,
/// under the same name (so the same flags and new/cur), with the same mtime,
/// size and bytes.
fn assert_same_maildirs(src: &Path, dst: &Path, messages: u64) {
    let (src_files, dst_files) = (files(src), files(dst));
    assert_eq!(src_files.len() as u64, messages, "messages on the source");
    if src_files != dst_files {
        let only_src: Vec<_> = src_files
            .iter()
            .filter(|(k, v)| dst_files.get(*k) != Some(v))
            .take(5)
            .collect();
        let only_dst: Vec<_> = dst_files
            .iter()
            .filter(|(k, v)| src_files.get(*k) != Some(v))
            .take(5)
            .collect();
        panic!(
            "every message once, same folder, sub, name (flags), mtime and size: \
             source only {only_src:?}, destination only {only_dst:?}"
        );
    }
    let dst_keys = key_counts(dst);
    assert_eq!(
        dst_keys.len() as u64,
        messages,
        "unique parts on the destination"
    );
    let twice: Vec<_> = dst_keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "on the destination twice: {twice:?}");
    assert_eq!(flags(src), flags(dst), "flags");
    for rel in src_files.keys() {
        let same = fs::read(src.join(rel)).expect("read") == fs::read(dst.join(rel)).expect("read");
        assert!(same, "{rel}: different bytes on the destination");
    }
}

/// The final sync (writers stopped): it verifies, with exactly `messages`
/// messages and nothing missing, extra, differing or twice.
fn final_sync(runner: &SyncRunner, job: &SyncJob, messages: u64) -> RunReport {
    let last = runner.run(job, &mut |_| {}).expect("final sync");
    println!("final sync: {last}");
    let v = &last.verification;
    assert!(v.verified(), "{v}");
    assert_eq!(
        (
            v.messages as u64,
            v.missing,
            v.extra,
            v.differing,
            v.duplicates
        ),
        (messages, 0, 0, 0, 0),
        "{v}"
    );
    last
}

/// Checks one mid-stream run: it worked and brought new mail over.
fn check_mid_stream(run: usize, report: &RunReport, updates: u64) {
    assert!(
        report.stats.files_transferred > 0,
        "sync {run} transferred nothing: {report}"
    );
    assert!(updates > 0, "sync {run}: no progress reported");
}

// ---------------------------------------------------------------- the tests

#[test]
fn live_postfix_maildir_syncs_over_ssh_until_every_message_is_there_once() {
    require_tools("live_postfix_maildir_syncs_over_ssh_until_every_message_is_there_once");
    let started = Instant::now();
    let lab = Lab::start(0);
    let (src, dst) = (lab.maildir(), lab.destination());
    let runner = lab.runner();
    let job = lab.job();
    let (sender, sent) = lab.sender();
    let count = |root: &Path| listing(root).message_count();

    // Repeated syncs while mail arrives; flags change between them.
    let mut live_runs = 0;
    let mut mid_runs = 0;
    let mut renamed_total = 0;
    while live_runs < LIVE_RUNS {
        assert!(
            mid_runs < MAX_MID_RUNS,
            "after {mid_runs} runs only {live_runs} saw mail arrive while they ran"
        );
        if sender.is_finished() {
            let result = sender.join().expect("sender thread");
            panic!(
                "the sender stopped early: {result:?}\n{}",
                tail(&lab.maillog())
            );
        }
        mid_runs += 1;
        lab.wait_for_new_mail();
        let flag_changes = if mid_runs > 1 {
            change_flags(&src, &dst, 15, 8)
        } else {
            0
        };
        let (sent_before, count_before) = (sent.load(Ordering::SeqCst), count(&src));
        let mut updates = 0u64;
        let report = runner
            .run(&job, &mut |_| updates += 1)
            .unwrap_or_else(|e| panic!("mid-stream sync {mid_runs}: {e}"));
        let (sent_after, count_after) = (sent.load(Ordering::SeqCst), count(&src));
        if count_after > count_before {
            live_runs += 1;
        }
        println!(
            "mid-stream sync {mid_runs}: {report}\n  \
             source {count_before} -> {count_after} messages during the run \
             (sender {sent_before} -> {sent_after}), {flag_changes} flag changes before it, \
             {updates} progress updates"
        );
        check_mid_stream(mid_runs, &report, updates);
        // Only the renames the test made: Postfix adds files and never
        // renames them, so each is one rename on the destination.
        assert_eq!(report.renamed, flag_changes, "sync {mid_runs}: {report}");
        assert_eq!(report.duplicates_removed, 0, "sync {mid_runs}: {report}");
        renamed_total += report.renamed;
        // Lagging behind the live source is fine, and so is mail that
        // arrived after the run listed the source (verification holds the
        // destination against that listing); anything else is not.
        let v = &report.verification;
        assert_eq!((v.differing, v.duplicates), (0, 0), "sync {mid_runs}: {v}");
        assert!(
            v.extra <= count_after.saturating_sub(count_before),
            "sync {mid_runs}: {} extra, but only {} messages arrived during the run: {v}",
            v.extra,
            count_after.saturating_sub(count_before)
        );
    }

    let messages = lab.stop_writers(sender);
    let (renames, transfers) = pending(&src, &dst);
    assert_eq!(renames, 0, "no flag changed since the last run");

    // The final sync, writers stopped.
    let last = final_sync(&runner, &job, messages);
    assert_eq!((last.renamed, last.duplicates_removed), (0, 0), "{last}");
    assert_eq!(last.stats.files_transferred as usize, transfers, "{last}");
    assert_same_maildirs(&src, &dst, messages);
    let dst_flags = flags(&dst);
    let flagged = |f: &str| dst_flags.values().filter(|v| *v == f).count();
    let (seen, replied) = (flagged("S"), flagged("RS"));
    assert!(
        seen > 0 && replied > 0,
        "flag changes reached the destination"
    );
    let status = runner.status(&job.name).expect("status").expect("recorded");
    assert!(status.verified(), "{status:?}");

    // A message deleted on the destination by hand is reported missing.
    let victim = files(&dst)
        .into_keys()
        .find(|rel| rel.ends_with(":2,RS"))
        .expect("a replied message");
    let victim_key = victim["cur/".len()..]
        .split(':')
        .next()
        .expect("unique part")
        .to_owned();
    fs::remove_file(dst.join(&victim)).expect("remove on the destination");
    let check = runner.verify(&job).expect("verify");
    println!("after deleting {victim} on the destination: {check}");
    assert!(!check.verified(), "{check}");
    assert_eq!(
        (
            check.missing,
            check.extra,
            check.differing,
            check.duplicates
        ),
        (1, 0, 0, 0),
        "{check}"
    );
    assert_eq!(check.missing_examples, vec![victim_key]);
    // The next run brings it back.
    let again = runner
        .run(&job, &mut |_| {})
        .expect("sync after the deletion");
    assert!(again.verification.verified(), "{}", again.verification);
    assert_eq!(again.stats.files_transferred, 1, "{again}");
    assert_same_maildirs(&src, &dst, messages);

    println!(
        "passed: {messages} messages sent and delivered by Postfix, {mid_runs} mid-stream syncs \
         ({live_runs} with mail arriving during the run) + final sync ({transfers} transferred), \
         {renamed_total} renamed on the destination by mid-stream runs ({seen} seen, {replied} \
         replied at the end), {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// An IMAP server changing flags all the time, also while rsync runs: runs
/// see names vanish under them and may bring a message over under its old
/// name too. Every run still succeeds, and once the writers stop the final
/// run leaves every message once, named as on the source.
#[test]
fn flags_changing_during_syncs_of_a_live_postfix_maildir_converge() {
    require_tools("flags_changing_during_syncs_of_a_live_postfix_maildir_converge");
    let started = Instant::now();
    let lab = Lab::start(1);
    let (src, dst) = (lab.maildir(), lab.destination());
    let runner = lab.runner();
    let job = lab.job();
    let (sender, _) = lab.sender();
    // Wait for the maildir to exist before the IMAP server opens it.
    lab.wait_for_new_mail();

    // The "IMAP server": every 50 ms some 20 messages get read, replied to,
    // or marked unanswered again (cur/X:2,RS -> cur/X:2,S).
    let imap: JoinHandle<Result<u64, String>> = {
        let (stop, root) = (lab.stop.clone(), src.clone());
        std::thread::spawn(move || {
            let mut renames = 0u64;
            let mut round = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let list = Listing::read_local(&root).map_err(|e| format!("list: {e}"))?;
                let messages = list.folders.get("").map(|f| f.messages.clone());
                for m in messages
                    .unwrap_or_default()
                    .iter()
                    .skip(round % 5)
                    .step_by(5)
                    .take(20)
                {
                    let base = m.name.split(':').next().unwrap_or(&m.name);
                    let flags = m.name.split_once(":2,").map_or("", |(_, f)| f);
                    let to = match (m.sub, flags) {
                        (Sub::New, _) => format!("{base}:2,S"),
                        (Sub::Cur, "S") => format!("{base}:2,RS"),
                        (Sub::Cur, _) => format!("{base}:2,S"),
                    };
                    let from = root.join(m.rel());
                    fs::rename(&from, root.join("cur").join(&to))
                        .map_err(|e| format!("rename {}: {e}", from.display()))?;
                    renames += 1;
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(renames)
        })
    };

    let mut renamed = 0;
    let mut duplicates_removed = 0;
    let mut runs = 0;
    for run in 1..=3 {
        lab.wait_for_new_mail();
        let mut updates = 0u64;
        let report = runner
            .run(&job, &mut |_| updates += 1)
            .unwrap_or_else(|e| panic!("sync {run} while flags change: {e}"));
        println!("sync {run} while flags change: {report}");
        check_mid_stream(run, &report, updates);
        renamed += report.renamed;
        duplicates_removed += report.duplicates_removed;
        runs = run;
        if imap.is_finished() {
            let result = imap.join().expect("IMAP thread");
            panic!("the IMAP thread stopped early: {result:?}");
        }
    }

    let messages = lab.stop_writers(sender);
    let flag_changes = imap
        .join()
        .expect("IMAP thread")
        .unwrap_or_else(|e| panic!("IMAP thread: {e}"));
    let (renames, transfers) = pending(&src, &dst);
    let last = final_sync(&runner, &job, messages);
    assert_eq!(
        (last.renamed, last.stats.files_transferred as usize),
        (renames, transfers),
        "{last}"
    );
    assert_same_maildirs(&src, &dst, messages);
    let check = runner.verify(&job).expect("verify");
    assert!(check.verified(), "{check}");
    println!(
        "passed: {messages} messages, {flag_changes} flag changes by the IMAP thread over {runs} syncs \
         ({renamed} renamed, {duplicates_removed} duplicates removed on the destination), \
         final sync {renames} renamed + {transfers} transferred, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
