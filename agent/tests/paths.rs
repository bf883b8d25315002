//! Paths a user may tamper with, on a root agent (issue 9, item 3).
//!
//! Each test plants what an attacker who owns a folder on the way would
//! plant — a folder swapped for a symbolic link, a hard link, a link at the
//! name root is about to write — then drives the production path (the
//! [`Reconciler`] for files, the [`SyncRunner`] and the maildir functions it
//! calls for mail) and checks that nothing outside the tree changed.
//!
//! These tests run as root (CI does), as the agent does; the sync ones drive
//! the real `rsync`. They fail, never skip, when that is not so.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use mailctl_agent::sync::{Listing, SyncRunner, maildir, mbox};
use mailctl_agent::{Config, Reconciler, error_chain};
use mailctl_schemas::model::{SyncJob, SyncSource};
use tempfile::TempDir;

fn require_root(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} must run as root (CI does): the agent does, and root is who must not be misled"
    );
}

fn write(path: impl AsRef<Path>, content: &str) {
    let path = path.as_ref();
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn mkdirs(path: impl AsRef<Path>) {
    let path = path.as_ref();
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

/// The error says which component of the path is a link.
fn assert_names_link(error: &str, link: &Path) {
    assert!(
        error.contains(&format!("{} is a symbolic link", link.display())),
        "the error names the link {}: {error}",
        link.display()
    );
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ------------------------------------------------------------------ files

/// A temporary host whose `etc/conf` is a link to `outside/`: the attacker
/// owns `etc/`.
struct LinkedFolder {
    tmp: TempDir,
    etc: PathBuf,
    outside: PathBuf,
}

impl LinkedFolder {
    fn new() -> LinkedFolder {
        let tmp = TempDir::new().expect("tempdir");
        let (etc, outside) = (tmp.path().join("etc"), tmp.path().join("outside"));
        mkdirs(&etc);
        mkdirs(&outside);
        symlink(&outside, etc.join("conf")).expect("plant the link");
        LinkedFolder { tmp, etc, outside }
    }

    fn link(&self) -> PathBuf {
        self.etc.join("conf")
    }
}

/// Applies a Host whose `spec.files` is `files` (YAML flow items), read by
/// the real loader, through the reconciler, as the agent does; the error
/// of the one file, if any, with its causes.
async fn apply_files(tmp: &Path, files: &str) -> Result<(), String> {
    let manifest = tmp.join("host.yaml");
    write(
        &manifest,
        &format!(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n  files: [{files}]\n"
        ),
    );
    let set = mailctl_schemas::load::load_paths(&[&manifest])
        .unwrap_or_else(|diags| panic!("invalid test manifest:\n{diags}"));
    let reconciler = Reconciler::connect(Config::default().state_dir(tmp.join("state")))
        .expect("open a netlink socket (nothing else in these specs needs one)");
    let report = reconciler.apply(&set.hosts[0].spec).await;
    match report.errors().next() {
        Some((resource, error)) => Err(format!("{resource}: {}", error_chain(error))),
        None => Ok(()),
    }
}

/// A managed `etc/conf/main.cf` must not be written into `outside/`.
#[tokio::test]
async fn a_file_is_not_written_through_a_symlinked_folder() {
    require_root("a_file_is_not_written_through_a_symlinked_folder");
    let host = LinkedFolder::new();
    let path = host.link().join("main.cf");

    let result = apply_files(
        host.tmp.path(),
        &format!(
            "{{path: \"{}\", content: \"relayhost = x\\n\"}}",
            path.display()
        ),
    )
    .await;

    assert!(
        names_in(&host.outside).is_empty(),
        "root wrote through the link into {}: {:?}",
        host.outside.display(),
        names_in(&host.outside)
    );
    let error = result.expect_err("the apply must fail");
    assert!(
        error.contains(&format!("file {}", path.display()))
            && error.contains(&format!("{} is a symbolic link", host.link().display()))
            && error.contains("write `path` without it"),
        "the error names the resource and the link, and says what to do: {error}"
    );
}

/// `state: absent` for `etc/conf/victim`: `outside/victim` must stay.
#[tokio::test]
async fn absent_removes_nothing_through_a_symlinked_folder() {
    require_root("absent_removes_nothing_through_a_symlinked_folder");
    let host = LinkedFolder::new();
    write(host.outside.join("victim"), "keep me\n");
    let path = host.link().join("victim");

    let result = apply_files(
        host.tmp.path(),
        &format!("{{path: \"{}\", state: absent}}", path.display()),
    )
    .await;

    assert_eq!(
        read(host.outside.join("victim")),
        "keep me\n",
        "root removed a file through the link"
    );
    assert_names_link(&result.expect_err("the apply must fail"), &host.link());
}

/// `etc/link` is a second name of `secret` (mode 0600): making `etc/link`
/// 0666 must not make `secret` 0666.
#[tokio::test]
async fn a_hard_linked_file_is_not_changed() {
    require_root("a_hard_linked_file_is_not_changed");
    let tmp = TempDir::new().expect("tempdir");
    let etc = tmp.path().join("etc");
    mkdirs(&etc);
    let secret = tmp.path().join("secret");
    write(&secret, "root:hash:19000::::::\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::hard_link(&secret, etc.join("link")).expect("hard link");

    // Same content: the change is a mode change in place.
    let result = apply_files(
        tmp.path(),
        &format!(
            "{{path: \"{}\", content: \"root:hash:19000::::::\\n\", mode: \"0666\"}}",
            etc.join("link").display()
        ),
    )
    .await;

    let mode = fs::metadata(&secret).expect("stat").mode() & 0o7777;
    assert_eq!(
        format!("{mode:04o}"),
        "0600",
        "the other name's mode changed"
    );
    let error = result.expect_err("the apply must fail");
    assert!(
        error.contains(&format!(
            "file {}: has 2 hard links",
            etc.join("link").display()
        )),
        "the error names the file and its links: {error}"
    );
}

// ------------------------------------------------------------------- mail

const SPOOL: &str = "From alice@example.test Mon Jan  6 10:00:00 2025\n\
Subject: hello\n\
Message-ID: <1@example.test>\n\
\n\
the first message\n";

/// The mbox spool of `alice` holds one message whose maildir key anyone
/// can compute; `tmp/KEY` in her maildir is a link to a file of root's.
/// Converting must not write the message into that file.
#[test]
fn mbox_conversion_does_not_write_through_a_planted_link() {
    require_root("mbox_conversion_does_not_write_through_a_planted_link");
    let tmp = TempDir::new().expect("tempdir");
    let (spools, destination) = (tmp.path().join("spool"), tmp.path().join("mail"));
    mkdirs(&spools);
    write(spools.join("alice"), SPOOL);
    let messages = mbox::parse(SPOOL.as_bytes());
    let key = mbox::expected(&messages, 0).pop().expect("one message").key;
    let maildir = destination.join("alice");
    for sub in ["cur", "new", "tmp"] {
        mkdirs(maildir.join(sub));
    }
    let victim = tmp.path().join("victim");
    write(&victim, "root's file\n");
    symlink(&victim, maildir.join("tmp").join(&key)).expect("plant the link");

    let job = SyncJob {
        mbox: true,
        ..SyncJob::new(
            "spools",
            SyncSource::Local(spools.clone()),
            destination.clone(),
        )
    };
    let report = SyncRunner::new(tmp.path().join("state"))
        .run(&job, &mut |_| {})
        .unwrap_or_else(|e| panic!("the conversion runs: {e}"));

    assert_eq!(
        read(&victim),
        "root's file\n",
        "root wrote the message into the link's target"
    );
    assert!(report.verification.verified(), "{}", report.verification);
    let converted = names_in(&maildir.join("new"));
    assert_eq!(converted, vec![key.clone()], "the message is in new/");
    assert!(
        fs::symlink_metadata(maildir.join("new").join(&key))
            .expect("stat")
            .file_type()
            .is_file(),
        "the converted message is a file of its own, not the planted link"
    );
}

/// A maildir of two messages on both sides; the source has new flags.
fn two_sides(tmp: &Path) -> (PathBuf, PathBuf) {
    let (source, destination) = (tmp.join("source"), tmp.join("destination"));
    for root in [&source, &destination] {
        for sub in ["cur", "new", "tmp"] {
            mkdirs(root.join(sub));
        }
    }
    write(source.join("cur/1700000000.1.host:2,S"), "one\n");
    write(source.join("cur/1700000000.2.host:2,RS"), "two\n");
    write(destination.join("cur/1700000000.1.host:2,"), "one\n");
    write(destination.join("new/1700000000.2.host"), "two\n");
    (source, destination)
}

/// The user who owns the destination maildir swaps `cur/` for a link to a
/// folder of root's between planning and renaming: nothing in that folder
/// is renamed, moved in or removed.
#[test]
fn maildir_renames_and_removals_do_not_follow_a_swapped_folder() {
    require_root("maildir_renames_and_removals_do_not_follow_a_swapped_folder");
    let tmp = TempDir::new().expect("tempdir");
    let (source, destination) = two_sides(tmp.path());
    let steps = maildir::plan(
        &Listing::read_local(&source).expect("list the source"),
        &Listing::read_local_names(&destination).expect("list the destination"),
    );
    assert_eq!(steps.len(), 2, "two renames planned: {steps:?}");

    // Root's folder, holding a file of the same name as a planned one.
    let outside = tmp.path().join("outside");
    mkdirs(&outside);
    let victims = ["1700000000.1.host:2,", "1700000000.3.host:2,"];
    for victim in victims {
        write(outside.join(victim), "root's file\n");
    }
    fs::rename(destination.join("cur"), tmp.path().join("cur.moved")).expect("move cur");
    symlink(&outside, destination.join("cur")).expect("plant the link");

    let renamed = maildir::apply(&destination, &steps);
    let removed = maildir::remove(&destination, &["cur/1700000000.3.host:2,".to_owned()]);

    assert_eq!(
        names_in(&outside),
        victims.map(str::to_owned),
        "root renamed, moved in or removed files in the link's target"
    );
    for victim in victims {
        assert_eq!(read(outside.join(victim)), "root's file\n");
    }
    assert_names_link(
        &renamed.expect_err("the renames must fail").to_string(),
        &destination.join("cur"),
    );
    assert!(removed.is_err(), "the removal must fail: {removed:?}");
    assert_eq!(
        names_in(&destination.join("new")),
        vec!["1700000000.2.host".to_owned()],
        "the message waiting in new/ stays where it was"
    );
}

/// The same attack planted before a whole sync run: the destination has
/// both messages in `new/`, the source has them read (`cur/`), and the
/// destination's `cur` is a link to a folder of root's. The run fails and
/// moves no message out of the tree.
#[test]
fn a_sync_run_moves_nothing_through_a_symlinked_cur() {
    require_root("a_sync_run_moves_nothing_through_a_symlinked_cur");
    let tmp = TempDir::new().expect("tempdir");
    let (source, destination) = (tmp.path().join("source"), tmp.path().join("destination"));
    for sub in ["cur", "new", "tmp"] {
        mkdirs(source.join(sub));
    }
    mkdirs(destination.join("new"));
    mkdirs(destination.join("tmp"));
    for (n, flags) in [(1, "S"), (2, "RS")] {
        write(
            source.join(format!("cur/1700000000.{n}.host:2,{flags}")),
            "mail\n",
        );
        write(
            destination.join(format!("new/1700000000.{n}.host")),
            "mail\n",
        );
    }
    let outside = tmp.path().join("outside");
    mkdirs(&outside);
    symlink(&outside, destination.join("cur")).expect("plant the link");
    let job = SyncJob {
        maildir: true,
        ..SyncJob::new("mail", SyncSource::Local(source), destination.clone())
    };

    let result = SyncRunner::new(tmp.path().join("state")).run(&job, &mut |_| {});

    assert!(
        names_in(&outside).is_empty(),
        "messages were moved out of the maildir into {}: {:?}",
        outside.display(),
        names_in(&outside)
    );
    assert_names_link(
        &result.expect_err("the run must fail").to_string(),
        &destination.join("cur"),
    );
}
