//! `mailctl validate` against manifest folders an attacker prepared (issue
//! 9, item 3): `source:` fields reaching out of the manifest's folder or at
//! files that never end, and folders holding symbolic link loops.
//!
//! The real binary runs under `timeout` and a memory limit, so that a
//! regression shows as a failed test, not as a hung or swapping machine.
//! Devices and FIFOs are made with `mknod`/`mkfifo`, which needs root (CI
//! runs as root); the test fails, never skips, without it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Seconds a validation may take: these folders hold a few files.
const DEADLINE: &str = "20";
/// Address space for the binary (KiB): far more than validating needs,
/// far less than reading `/dev/zero` for a while takes.
const MEMORY_KIB: u64 = 1024 * 1024;

/// `mailctl ARGS` with the deadline and the memory limit.
fn mailctl(args: &[&Path]) -> Output {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_KIB} && exec timeout -s KILL {DEADLINE} \"$@\""
        ))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_mailctl"));
    command.args(args);
    command.output().expect("the mailctl binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A validation that ended by itself (no kill at the deadline, no
/// allocation failure) and failed.
fn failed_in_time(output: &Output) -> String {
    let text = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "mailctl validate must end by itself, failing (exit status {:?}; killed at the {DEADLINE} s deadline or out of memory otherwise):\n{text}",
        output.status
    );
    text
}

/// `TMP/repo/hosts/host.yaml`: a Host with one file read from `source`.
struct Repo {
    tmp: TempDir,
}

impl Repo {
    fn new(source: &str) -> Repo {
        let tmp = TempDir::new().expect("tempdir");
        let repo = Repo { tmp };
        fs::create_dir_all(repo.path("repo/hosts")).expect("mkdir");
        fs::write(
            repo.manifest(),
            format!(
                "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata:\n  name: eve\nspec:\n  files:\n    - path: /etc/postfix/main.cf\n      source: \"{source}\"\n"
            ),
        )
        .expect("write the manifest");
        repo
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.tmp.path().join(relative)
    }

    fn manifest(&self) -> PathBuf {
        self.path("repo/hosts/host.yaml")
    }

    /// A secret outside the repository, as `/etc/shadow` is.
    fn plant_secret(&self) -> PathBuf {
        let secret = self.path("outside/shadow");
        fs::create_dir_all(self.path("outside")).expect("mkdir");
        fs::write(&secret, "root:$6$TOP-SECRET-HASH:19000::::::\n").expect("write");
        secret
    }

    /// `validate -o yaml` of the repository fails in time with `message`
    /// on the `source:` field (line 8, column 15), with a hint, and shows
    /// the secret neither in the manifests it prints nor in the error.
    fn assert_refused(&self, message: &str) {
        let out = mailctl(&[
            Path::new("validate"),
            Path::new("-o"),
            Path::new("yaml"),
            &self.path("repo"),
        ]);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("TOP-SECRET"),
            "validate -o yaml inlined a file from outside the manifest's folder"
        );
        let text = failed_in_time(&out);
        let at = format!(
            "{}:8:15: spec.files[0].source: cannot read",
            self.manifest().display()
        );
        assert!(
            text.contains(&at) && text.contains(message) && text.contains("hint:"),
            "expected `{at} ... {message}` with a hint, got:\n{text}"
        );
        assert!(
            !text.contains("TOP-SECRET"),
            "the error shows the secret:\n{text}"
        );
    }
}

#[test]
fn a_source_with_dot_dot_is_refused() {
    let repo = Repo::new("../../outside/shadow");
    repo.plant_secret();
    repo.assert_refused("`..` is not allowed");
}

#[test]
fn dev_zero_as_source_fails_fast() {
    // As many `..` as it takes from the manifest's folder to `/`.
    let depth = Repo::new("x").path("repo/hosts").components().count() - 1;
    let repo = Repo::new(&format!("{}dev/zero", "../".repeat(depth)));
    repo.assert_refused("`..` is not allowed");
}

#[test]
fn a_device_or_fifo_inside_the_folder_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a device node, which needs root (CI runs as root)"
    );
    for (name, make, kind) in [
        ("zero", vec!["mknod", "NODE", "c", "1", "5"], "is a device"),
        ("pipe", vec!["mkfifo", "NODE"], "is a FIFO"),
    ] {
        let repo = Repo::new(name);
        let node = repo.path(&format!("repo/hosts/{name}"));
        let args: Vec<String> = make
            .iter()
            .map(|a| a.replace("NODE", &node.to_string_lossy()))
            .collect();
        let made = Command::new(&args[0])
            .args(&args[1..])
            .status()
            .expect("run mknod/mkfifo");
        assert!(made.success(), "{args:?}");
        repo.assert_refused(kind);
    }
}

#[test]
fn a_symlink_leading_out_of_the_folder_is_refused() {
    for relative in [true, false] {
        let repo = Repo::new("key.pem");
        let secret = repo.plant_secret();
        let target = if relative {
            PathBuf::from("../../outside/shadow")
        } else {
            secret
        };
        symlink(&target, repo.path("repo/hosts/key.pem")).expect("plant the link");
        repo.assert_refused("leads out of the manifest's folder");
    }
}

#[test]
fn a_hard_link_to_a_file_outside_the_folder_is_refused() {
    let repo = Repo::new("key.pem");
    let secret = repo.plant_secret();
    fs::hard_link(&secret, repo.path("repo/hosts/key.pem")).expect("plant the hard link");
    repo.assert_refused("has 2 names (hard links)");
}

#[test]
fn a_symlink_inside_the_folder_is_followed() {
    let repo = Repo::new("current/main.cf");
    fs::create_dir_all(repo.path("repo/hosts/2026")).expect("mkdir");
    fs::write(repo.path("repo/hosts/2026/main.cf"), "relayhost = x\n").expect("write");
    symlink("2026", repo.path("repo/hosts/current")).expect("link");
    let out = mailctl(&[
        Path::new("validate"),
        Path::new("-o"),
        Path::new("yaml"),
        &repo.path("repo"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("relayhost = x"));
}

#[test]
fn a_source_larger_than_the_limit_is_refused() {
    let repo = Repo::new("big.cf");
    fs::write(repo.path("repo/hosts/big.cf"), vec![b'x'; 1024 * 1024 + 1]).expect("write");
    repo.assert_refused("larger than 1 MiB, the limit for a source file");
}

#[test]
fn a_folder_with_symlink_loops_is_reported_not_walked_for_ever() {
    let repo = Repo::new("main.cf");
    fs::write(repo.path("repo/hosts/main.cf"), "relayhost = x\n").expect("write");
    let folder = repo.path("repo");
    symlink(".", folder.join("a")).expect("a -> .");
    symlink("..", folder.join("hosts/up")).expect("hosts/up -> ..");
    let out = mailctl(&[Path::new("validate"), &folder]);
    let text = failed_in_time(&out);
    for link in ["a", "hosts/up"] {
        let at = format!("{}:1:1: symbolic link loop", folder.join(link).display());
        assert!(text.contains(&at), "expected `{at}`, got:\n{text}");
    }
    assert!(
        text.contains("hint: remove the link"),
        "the hint says what to do:\n{text}"
    );
}

#[test]
fn a_folder_symlink_leading_out_of_the_tree_is_reported() {
    let repo = Repo::new("main.cf");
    fs::write(repo.path("repo/hosts/main.cf"), "relayhost = x\n").expect("write");
    fs::create_dir_all(repo.path("outside")).expect("mkdir");
    fs::write(
        repo.path("outside/other.yaml"),
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata:\n  name: other\nspec: {}\n",
    )
    .expect("write");
    symlink("../outside", repo.path("repo/elsewhere")).expect("link");
    let out = mailctl(&[Path::new("validate"), &repo.path("repo")]);
    let text = failed_in_time(&out);
    let at = format!(
        "{}:1:1: not read: a symbolic link to {}, outside the folder",
        repo.path("repo/elsewhere").display(),
        fs::canonicalize(repo.path("outside"))
            .expect("canonical")
            .display()
    );
    assert!(text.contains(&at), "expected `{at}`, got:\n{text}");
}
