//! Sync jobs on real parts: the real `rsync`, real files with realistic
//! maildir names (also Dovecot's `,S=` and `,W=`), and mbox spools.
//!
//! These tests need `rsync` (and, for what mail clients see, Dovecot's
//! `imap`) installed (scripts/test.sh installs both) and run as root (CI
//! does); they fail, never skip, when that is not so.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

#[path = "support/ssh_lab.rs"]
mod ssh_lab;
use ssh_lab::SshLab;

use mailctl_agent::sync::source::ListingLimits;
use mailctl_agent::sync::{Listing, SyncRunner, mbox};
use mailctl_schemas::model::{SyncJob, SyncSource};
use mailctl_schemas::ssh::HostKey;

fn require_tools(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{test} must run as root (CI does): it keeps file owners and modes as rsync -a does"
    );
    let found = Command::new("rsync").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{test} drives the real rsync: install it (apt-get install rsync; scripts/test.sh does)"
    );
}

fn job(name: &str, source: &Path, destination: &Path) -> SyncJob {
    let local = SyncSource::Local(source.to_owned());
    SyncJob {
        maildir: true,
        ..SyncJob::new(name, local, destination.to_owned())
    }
}

fn set_mtime(path: &Path, seconds: i64) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(seconds as u64)))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// A generated Dovecot-style maildir: messages by folder and unique part.
struct Generator {
    root: PathBuf,
    next: u64,
}

const FOLDERS: [&str; 3] = ["", ".Sent", ".Archive.2023"];

impl Generator {
    fn new(root: &Path) -> Generator {
        for folder in FOLDERS {
            for sub in ["cur", "new", "tmp"] {
                fs::create_dir_all(root.join(folder).join(sub)).expect("mkdir");
            }
        }
        fs::write(root.join("subscriptions"), "Sent\nArchive.2023\n").expect("write");
        fs::write(root.join("dovecot-keywords"), "0 $Forwarded\n").expect("write");
        fs::write(root.join("dovecot.index.cache"), vec![7u8; 4096]).expect("write");
        fs::write(root.join(".Sent/dovecot.index"), vec![7u8; 1024]).expect("write");
        Generator {
            root: root.to_owned(),
            next: 0,
        }
    }

    /// Delivers one message into `folder/new`, like Postfix or Dovecot LDA.
    fn deliver(&mut self, folder: &str) -> String {
        self.next += 1;
        let n = self.next;
        let body = format!(
            "Return-Path: <a@example.test>\nMessage-ID: <{n}@example.test>\nSubject: message {n}\n\n{}\n",
            "lorem ipsum dolor sit amet ".repeat(20 + (n % 50) as usize)
        );
        let vsize = body.len() + body.matches('\n').count();
        let uniq = format!(
            "{}.M{}P{}Q{}.mail.example.test",
            1_700_000_000 + n,
            n * 7919 % 1_000_000,
            4000 + n % 97,
            n
        );
        let name = format!("{uniq},S={},W={vsize}", body.len());
        let path = self.root.join(folder).join("new").join(&name);
        fs::write(&path, body).expect("write message");
        set_mtime(&path, 1_700_000_000 + n as i64 * 60);
        uniq
    }

    /// Renames a message the way an IMAP server does when flags change.
    fn set_flags(&self, folder: &str, uniq: &str, flags: &str) {
        let dir = self.root.join(folder);
        let current = ["new", "cur"]
            .iter()
            .flat_map(|sub| {
                fs::read_dir(dir.join(sub))
                    .expect("read dir")
                    .map(move |e| (sub, e.expect("entry").file_name()))
            })
            .find(|(_, name)| name.to_string_lossy().starts_with(uniq))
            .unwrap_or_else(|| panic!("no message {uniq} in {folder:?}"));
        let base = current
            .1
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        fs::rename(
            dir.join(current.0).join(&current.1),
            dir.join("cur").join(format!("{base}:2,{flags}")),
        )
        .expect("rename");
    }

    fn write_uidlist(&self) {
        let listing = Listing::read_local(&self.root).expect("list");
        for (folder, messages) in &listing.folders {
            let mut text = String::from("3 V1700000000 N100000 G0123456789abcdef\n");
            for (uid, m) in messages.messages.iter().enumerate() {
                text.push_str(&format!("{} :{}\n", uid + 1, m.key));
            }
            fs::write(self.root.join(folder).join("dovecot-uidlist"), text).expect("write");
        }
    }
}

/// Every message file: folder/sub/name -> mtime.
fn files(root: &Path) -> BTreeMap<String, i64> {
    let listing = Listing::read_local(root).expect("list");
    listing
        .folders
        .iter()
        .flat_map(|(folder, f)| {
            f.messages
                .iter()
                .map(move |m| (format!("{folder}/{}", m.rel()), m.mtime))
        })
        .collect()
}

#[test]
fn maildir_sync_renames_instead_of_copying_and_verifies() {
    require_tools("maildir_sync_renames_instead_of_copying_and_verifies");
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let runner = SyncRunner::new(dir.path().join("state"));
    let job = job("maildirs", &src, &dst);
    let mut mail = Generator::new(&src);
    let mut uniqs = Vec::new();
    for i in 0..300 {
        let folder = FOLDERS[i % 3];
        uniqs.push((folder, mail.deliver(folder)));
    }
    // Most mail was read once.
    for (folder, uniq) in uniqs.iter().take(250) {
        mail.set_flags(folder, uniq, "S");
    }
    mail.write_uidlist();

    let mut updates = 0;
    let first = runner.run(&job, &mut |_| updates += 1).expect("first run");
    assert!(first.verification.verified(), "{}", first.verification);
    assert_eq!(first.verification.messages, 300);
    assert!(first.stats.files_transferred >= 300, "{first}");
    assert!(updates > 0);
    assert!(dst.join("dovecot-uidlist").exists());
    assert!(dst.join(".Sent/dovecot-uidlist").exists());
    assert!(dst.join("subscriptions").exists());
    assert!(
        !dst.join("dovecot.index.cache").exists(),
        "index caches are skipped"
    );
    assert!(
        !dst.join(".Sent/dovecot.index").exists(),
        "index caches are skipped"
    );
    assert_eq!(files(&src), files(&dst));

    // Between runs: flags change, new mail is read (new -> cur), new mail
    // arrives, and the destination has a stray second copy of one message.
    for (folder, uniq) in uniqs.iter().take(40) {
        mail.set_flags(folder, uniq, "RS");
    }
    for (folder, uniq) in uniqs.iter().skip(250).take(30) {
        mail.set_flags(folder, uniq, "FS");
    }
    for i in 0..15 {
        mail.deliver(FOLDERS[i % 3]);
    }
    mail.write_uidlist();
    let (folder, uniq) = &uniqs[100];
    let stray = fs::read_dir(dst.join(folder).join("cur"))
        .expect("read")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(uniq.as_str()))
        .expect("synced message");
    fs::copy(
        &stray,
        dst.join(folder).join("new").join(format!("{uniq},S=1")),
    )
    .expect("copy");

    let before = files(&dst);
    let new_bytes: u64 = Listing::read_local(&src)
        .expect("list")
        .folders
        .iter()
        .flat_map(|(folder, f)| f.messages.iter().map(move |m| (folder, m)))
        .filter(|(folder, m)| {
            !before
                .keys()
                .any(|k| k.starts_with(&format!("{folder}/")) && k.contains(&m.key))
        })
        .map(|(_, m)| m.size)
        .sum();
    let mut seen = Vec::new();
    let second = runner
        .run(&job, &mut |p| seen.push(*p))
        .expect("second run");
    assert!(second.verification.verified(), "{}", second.verification);
    // Progress says what is known: the listing's count once listed, and a
    // byte total known before rsync starts (what the destination lacks),
    // which never shrinks and never falls behind what was sent.
    use mailctl_agent::sync::SyncStep;
    assert!(
        seen.iter()
            .any(|p| p.step == SyncStep::Listing && p.files_done == 315),
        "{seen:?}"
    );
    let transfer: Vec<_> = seen
        .iter()
        .filter(|p| p.step == SyncStep::Transferring)
        .collect();
    assert_eq!(transfer[0].bytes_total, new_bytes, "{seen:?}");
    assert!(new_bytes > 0);
    for pair in transfer.windows(2) {
        assert!(pair[1].bytes_total >= pair[0].bytes_total, "{seen:?}");
    }
    assert!(
        transfer.iter().all(|p| p.bytes_done <= p.bytes_total),
        "{seen:?}"
    );
    assert_eq!(second.verification.messages, 315);
    assert_eq!(second.renamed, 70, "{second}");
    assert_eq!(second.duplicates_removed, 1, "{second}");
    // Only the 15 new messages and the three rewritten uidlists travel.
    assert_eq!(second.stats.files_transferred, 18, "{second}");
    let (src_files, dst_files) = (files(&src), files(&dst));
    assert_eq!(src_files.len(), 315);
    assert_eq!(
        src_files, dst_files,
        "every message once, same name (flags) and mtime"
    );
    let status = runner
        .status("maildirs")
        .expect("status")
        .expect("recorded");
    assert!(status.verified());
    assert!(status.lag_seconds().is_some_and(|lag| lag < 60));

    // A message deleted by hand on the destination is reported missing.
    let victim = first_file(&dst.join(".Archive.2023/cur"));
    let victim_uniq = victim
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .split(',')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .expect("name");
    fs::remove_file(&victim).expect("remove");
    let check = runner.verify(&job).expect("verify");
    assert!(!check.verified());
    assert_eq!((check.missing, check.extra), (1, 0), "{check}");
    assert_eq!(
        check.missing_examples,
        vec![format!(".Archive.2023/{victim_uniq}")]
    );
    // The next run brings it back.
    let third = runner.run(&job, &mut |_| {}).expect("third run");
    assert!(third.verification.verified(), "{}", third.verification);
    assert_eq!(third.stats.files_transferred, 1, "{third}");

    // A destination copy that lost its date (copied by hand without -p)
    // is sent again within the same run, and the run verifies.
    let redated = first_file(&dst.join(".Archive.2023/cur"));
    #[allow(clippy::disallowed_methods, reason = "a file date is wall-clock time")]
    let later = std::time::SystemTime::now();
    fs::File::options()
        .write(true)
        .open(&redated)
        .and_then(|f| f.set_modified(later))
        .expect("touch");
    assert!(!runner.verify(&job).expect("verify").verified());
    let fourth = runner.run(&job, &mut |_| {}).expect("fourth run");
    assert!(fourth.verification.verified(), "{}", fourth.verification);
    assert_eq!(fourth.stats.files_transferred, 1, "{fourth}");
    assert_eq!(files(&src), files(&dst), "the source's mtime is back");
}

/// Some file in `dir`.
fn first_file(dir: &Path) -> PathBuf {
    dir.read_dir()
        .expect("read")
        .next()
        .expect("one message")
        .expect("entry")
        .path()
}

#[test]
fn delete_removes_messages_gone_from_the_source_until_the_point_of_no_return() {
    require_tools("delete_removes_messages_gone_from_the_source_until_the_point_of_no_return");
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let runner = SyncRunner::new(dir.path().join("state"));
    let mut job = job("maildirs", &src, &dst);
    let mut mail = Generator::new(&src);
    let uniqs: Vec<String> = (0..10).map(|_| mail.deliver("")).collect();
    runner.run(&job, &mut |_| {}).expect("first run");
    // Expunged on the source: without delete the destination keeps it and
    // verification says so.
    let gone = fs::read_dir(src.join("new"))
        .expect("read")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(uniqs[3].as_str()))
        .expect("message");
    fs::remove_file(gone).expect("remove");
    let kept = runner.run(&job, &mut |_| {}).expect("second run");
    assert_eq!(kept.verification.extra, 1, "{}", kept.verification);
    // Kept on purpose: a job that does not delete still verifies.
    assert!(kept.verification.verified(), "{}", kept.verification);
    job.delete = true;
    let deleted = runner.run(&job, &mut |_| {}).expect("run with delete");
    assert!(deleted.verification.verified(), "{}", deleted.verification);
    assert_eq!(
        (deleted.deleted, deleted.verification.extra),
        (1, 0),
        "{deleted}"
    );
    assert_eq!(files(&src), files(&dst));
    // A source that lists nothing (a wrong path, an unmounted disk) never
    // empties the destination.
    let mut wrong = job.clone();
    wrong.source = SyncSource::Local(dir.path().join("no-such-maildir"));
    let refused = runner.run(&wrong, &mut |_| {}).expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("refusing to delete the 9 messages"),
        "{refused}"
    );
    assert_eq!(files(&src), files(&dst));
    runner.set_point_of_no_return(true).expect("flag");
    let refused = runner.run(&job, &mut |_| {}).expect_err("refused");
    assert!(
        refused.to_string().contains("sync job maildirs"),
        "{refused}"
    );
}

#[test]
fn mbox_spool_of_10000_messages_converts_once() {
    require_tools("mbox_spool_of_10000_messages_converts_once");
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    fs::create_dir_all(&spool_dir).expect("mkdir");
    let mut spool = String::new();
    let mut expected = Vec::new();
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    for n in 0..10_000u32 {
        // 2021-03-01 00:00:00 UTC was a Monday.
        let date = 1_614_556_800 + i64::from(n) * 3_607;
        let day_index = (date - 1_614_556_800).div_euclid(86_400) as usize % 7;
        let secs = date.rem_euclid(86_400);
        let (d, month) = civil(date);
        spool.push_str(&format!(
            "From sender{n}@example.test {} {month} {d:>2} {:02}:{:02}:{:02} {}\n",
            days[day_index],
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            year(date)
        ));
        let (status, xstatus, flags, cur) = match n % 5 {
            0 => ("", "", "", false),
            1 => ("O", "", "", true),
            2 => ("RO", "", "S", true),
            3 => ("RO", "A", "RS", true),
            _ => ("RO", "FD", "FST", true),
        };
        if !status.is_empty() {
            spool.push_str(&format!("Status: {status}\n"));
        }
        if !xstatus.is_empty() {
            spool.push_str(&format!("X-Status: {xstatus}\n"));
        }
        spool.push_str(&format!(
            "Subject: message {n}\n\nbody {n}\n>From the body, quoted\n{}\n\n",
            "x".repeat(200)
        ));
        expected.push((n, date, flags, cur));
    }
    fs::write(spool_dir.join("alice"), &spool).expect("write spool");
    let dst = dir.path().join("maildirs");
    let runner = SyncRunner::new(dir.path().join("state"));
    let mut job = job("spool", &spool_dir, &dst);
    job.maildir = false;
    job.mbox = true;

    let first = runner.run(&job, &mut |_| {}).expect("convert");
    assert!(first.verification.verified(), "{}", first.verification);
    let converted = first.converted.expect("mbox counts");
    assert_eq!((converted.messages, converted.written), (10_000, 10_000));
    let check = |root: &Path| {
        let listing = Listing::read_local(root).expect("list");
        let messages = &listing.folders[""].messages;
        assert_eq!(messages.len(), 10_000);
        let mut by_subject = BTreeMap::new();
        for m in messages {
            let path = root.join(m.rel());
            let text = fs::read_to_string(&path).expect("read");
            let n: u32 = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: message "))
                .and_then(|n| n.parse().ok())
                .expect("subject");
            assert!(text.contains("\nFrom the body, quoted\n"), "unquoted");
            assert!(!text.contains("Status:"));
            by_subject.insert(n, (m.clone(), fs::metadata(&path).expect("stat").mtime()));
        }
        for (n, date, flags, cur) in &expected {
            let (m, mtime) = &by_subject[n];
            assert_eq!(*mtime, *date, "message {n} date");
            assert_eq!(
                m.sub == mailctl_agent::sync::maildir::Sub::Cur,
                *cur,
                "message {n}"
            );
            let got = m.name.split_once(":2,").map_or("", |(_, f)| f);
            assert_eq!(got, *flags, "message {n} flags");
        }
    };
    check(&dst.join("alice"));

    let again = runner.run(&job, &mut |_| {}).expect("rerun");
    let converted = again.converted.expect("mbox counts");
    assert_eq!((converted.written, converted.unchanged), (0, 10_000));
    assert!(again.verification.verified(), "{}", again.verification);
    check(&dst.join("alice"));
    // Direct use gives the same answer.
    let direct = mbox::convert(&spool_dir.join("alice"), &dst.join("alice")).expect("convert");
    assert_eq!(direct.written, 0);
}

/// Day of month and month name of a Unix time (UTC).
fn civil(t: i64) -> (i64, &'static str) {
    let (_, m, d) = ymd(t);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    (d, months[(m - 1) as usize])
}

fn year(t: i64) -> i64 {
    ymd(t).0
}

/// Howard Hinnant's civil_from_days.
fn ymd(t: i64) -> (i64, i64, i64) {
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[test]
fn maildir_sync_over_ssh_between_network_namespaces() {
    require_tools("maildir_sync_over_ssh_between_network_namespaces");
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install openssh-server openssh-client (scripts/test.sh does)"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let id = std::process::id() % 10_000;
    let net = format!("10.79.{}", id % 250);
    let lab = SshLab::start(
        &format!("msync{id}s"),
        &format!("msync{id}d"),
        &net,
        dir.path(),
    )
    .expect("ssh lab");
    lab.enter_destination(&[]).expect("sshd up");

    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let mut mail = Generator::new(&src);
    let uniqs: Vec<(&str, String)> = (0..120)
        .map(|i| {
            let folder = FOLDERS[i % 3];
            (folder, mail.deliver(folder))
        })
        .collect();
    mail.write_uidlist();
    let runner = SyncRunner::new(dir.path().join("state"));
    let mut job = job("maildirs", &src, &dst);
    job.source = SyncSource::Remote {
        host: format!("root@{net}.1"),
        path: src.clone(),
    };
    job.ssh_key = Some(lab.client_key.clone());
    let first = runner.run(&job, &mut |_| {}).expect("first run over ssh");
    assert!(first.verification.verified(), "{}", first.verification);
    assert_eq!(first.verification.messages, 120);
    for (folder, uniq) in uniqs.iter().take(60) {
        mail.set_flags(folder, uniq, "S");
    }
    for i in 0..5 {
        mail.deliver(FOLDERS[i % 3]);
    }
    let second = runner.run(&job, &mut |_| {}).expect("second run over ssh");
    assert!(second.verification.verified(), "{}", second.verification);
    assert_eq!(second.renamed, 60, "{second}");
    assert_eq!(second.stats.files_transferred, 5, "{second}");
    assert_eq!(files(&src), files(&dst));
    // The destination's copy of the last listing no longer matches the
    // source's: the source must answer with everything, not a diff.
    let cached = dir.path().join("state/sync-maildirs.source");
    assert!(cached.exists(), "no cached source listing");
    fs::write(&cached, "cur/made-up\t1\t1\n").expect("spoil the cache");
    mail.set_flags(FOLDERS[0], &uniqs[0].1, "RS");
    let third = runner.run(&job, &mut |_| {}).expect("third run over ssh");
    assert!(third.verification.verified(), "{}", third.verification);
    assert_eq!(third.renamed, 1, "{third}");
    assert_eq!(files(&src), files(&dst));
    // Spoiled lines under the right hash: the source answers with a diff
    // that does not add up on this side, and the run asks again for
    // everything (a second rsync: the first is stopped unused).
    let kept = fs::read_to_string(&cached).expect("cached listing");
    let hash_line = kept.lines().next().expect("a hash line");
    assert!(hash_line.starts_with('\t'), "{hash_line:?}");
    fs::write(&cached, format!("{hash_line}\ncur/made-up\t1\t1\n")).expect("spoil the lines");
    mail.set_flags(FOLDERS[0], &uniqs[0].1, "FRS");
    let fourth = runner.run(&job, &mut |_| {}).expect("fourth run over ssh");
    assert!(fourth.verification.verified(), "{}", fourth.verification);
    assert_eq!(fourth.renamed, 1, "{fourth}");
    // A listing the source cannot finish (here: its cache directory is a
    // file) fails the run; it never passes for a source without those
    // messages.
    let cache = dir.path().join("cache");
    let kept_cache = dir.path().join("cache.kept");
    fs::rename(&cache, &kept_cache).expect("move the cache away");
    fs::write(&cache, "not a directory").expect("block the cache");
    mail.set_flags(FOLDERS[1], &uniqs[1].1, "FS");
    let failed = runner
        .run(&job, &mut |_| {})
        .expect_err("a listing cut short");
    let said = failed.to_string();
    assert!(
        said.contains("mkdir") && said.contains("Not a directory"),
        "{said}"
    );
    fs::remove_file(&cache).expect("unblock");
    fs::rename(&kept_cache, &cache).expect("restore the cache");
    assert!(
        fourth.stats.listing_bytes > third.stats.listing_bytes,
        "a refused diff and then the whole listing: {} bytes, one whole listing: {}",
        fourth.stats.listing_bytes,
        third.stats.listing_bytes
    );
    let fifth = runner.run(&job, &mut |_| {}).expect("fifth run over ssh");
    assert!(fifth.verification.verified(), "{}", fifth.verification);
    assert_eq!(fifth.renamed, 1, "{fifth}");
    assert_eq!(files(&src), files(&dst));
    drop(lab);
}

fn require_ssh(test: &str) {
    require_tools(test);
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install openssh-server openssh-client (scripts/test.sh does)"
        );
    }
}

/// An ssh lab of its own for one test (`tag` names its namespaces,
/// `prefix` is its /24 as `10.N`), entered by the calling thread.
fn ssh_lab(tag: &str, prefix: &str, dir: &Path) -> SshLab {
    let id = std::process::id() % 10_000;
    let lab = SshLab::start(
        &format!("{tag}{id}s"),
        &format!("{tag}{id}d"),
        &format!("{prefix}.{}", id % 250),
        dir,
    )
    .expect("ssh lab");
    lab.enter_destination(&[]).expect("sshd up");
    lab
}

/// A maildir job from the lab's source over ssh.
fn remote_job(lab: &SshLab, name: &str, src: &Path, dst: &Path) -> SyncJob {
    SyncJob {
        source: SyncSource::Remote {
            host: format!("root@{}", lab.source_addr),
            path: src.to_owned(),
        },
        ssh_key: Some(lab.client_key.clone()),
        ..job(name, src, dst)
    }
}

/// `f` on a thread of its own (in this thread's network namespace), or a
/// failure when it takes longer than `limit`: a hang fails, never blocks.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    receiver
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not end within {limit:?}: it hangs"))
}

/// File names a mail user on the source may create, which a command line
/// would read as options: `stat --printf=X` once made the listing never
/// end, holding the job's lock; `-rf` made `stat` refuse a whole batch of
/// names; `-` is standard input to `stat`.
const OPTION_NAMES: [&str; 3] = ["--printf=X", "-rf", "-"];

#[test]
fn file_names_that_look_like_options_are_listed_as_names() {
    require_ssh("file_names_that_look_like_options_are_listed_as_names");
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = ssh_lab("hsync", "10.80", dir.path());
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let mut mail = Generator::new(&src);
    for i in 0..6 {
        mail.deliver(FOLDERS[i % 3]);
    }
    let plant = |name: &str| {
        fs::write(src.join(name), format!("control file {name}\n")).expect("write");
        fs::write(src.join("cur").join(format!("{name}:2,S")), "a message\n").expect("write");
    };
    // The name that made the listing hang for ever, alone first.
    plant(OPTION_NAMES[0]);
    mail.write_uidlist();
    let runner = SyncRunner::new(dir.path().join("state"));
    let job = remote_job(&lab, "odd-names", &src, &dst);
    let limit = Duration::from_secs(60);
    let (r, j) = (runner.clone(), job.clone());
    let first =
        within(limit, "a run over ssh", move || r.run(&j, &mut |_| {})).expect("a run over ssh");
    assert!(first.verification.verified(), "{}", first.verification);
    assert_eq!(first.verification.messages, 7, "{}", first.verification);
    // The others; the second run lists by difference (`comm`, then `stat`
    // of the new names only).
    for name in &OPTION_NAMES[1..] {
        plant(name);
    }
    fs::write(src.join("cur/-n:2,S"), "another\n").expect("write");
    let (r, j) = (runner.clone(), job.clone());
    let second = within(limit, "a second run", move || r.run(&j, &mut |_| {}))
        .expect("a second run over ssh");
    assert!(second.verification.verified(), "{}", second.verification);
    assert_eq!(second.verification.messages, 6 + OPTION_NAMES.len() + 1);
    for name in OPTION_NAMES {
        assert_eq!(
            fs::read_to_string(dst.join(name)).ok(),
            Some(format!("control file {name}\n")),
            "{name}"
        );
    }
    assert_eq!(files(&src), files(&dst));
    // The listing by plain ssh (no rsync) takes the same names.
    let (r, j) = (runner.clone(), job.clone());
    let verified = within(limit, "a verification", move || r.verify(&j)).expect("verify");
    assert!(verified.verified(), "{verified}");
    // A local source with the same names.
    let local_dst = dir.path().join("dst-local");
    let local = self::job("odd-names-local", &src, &local_dst);
    let (r, j) = (runner.clone(), local.clone());
    let report = within(limit, "a local run", move || r.run(&j, &mut |_| {})).expect("local");
    assert!(report.verification.verified(), "{}", report.verification);
    assert_eq!(files(&src), files(&local_dst));

    // A folder named like an option: its messages are listed (a `stat`
    // that read `-rf/cur/...` as options lost every name of its batch).
    let (src2, dst2) = (dir.path().join("src2"), dir.path().join("dst2"));
    let mut mail2 = Generator::new(&src2);
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(src2.join("-rf").join(sub)).expect("mkdir");
    }
    for i in 0..4 {
        mail2.deliver(FOLDERS[i % 3]);
        fs::write(src2.join(format!("-rf/cur/{i}.odd.folder:2,S")), "x\n").expect("write");
    }
    let odd_folder = remote_job(&lab, "odd-folder", &src2, &dst2);
    let (r, j) = (runner.clone(), odd_folder);
    let report = within(limit, "a run", move || r.run(&j, &mut |_| {})).expect("odd folder");
    assert!(report.verification.verified(), "{}", report.verification);
    assert_eq!(report.verification.messages, 8, "{}", report.verification);
    assert_eq!(files(&src2), files(&dst2));

    // A name with a newline cannot be one line of a listing: refused,
    // named, and the run ends.
    let evil = src.join("cur").join("1.evil\nname:2,S");
    fs::write(&evil, "x\n").expect("write");
    let (r, j) = (runner.clone(), job.clone());
    let refused = within(limit, "a run with a newline name", move || {
        r.run(&j, &mut |_| {})
    })
    .expect_err("a name with a newline");
    let said = refused.to_string();
    assert!(
        said.contains("holds a newline") && said.contains("cur/1.evil?name:2,S"),
        "{said}"
    );
    fs::remove_file(&evil).expect("remove");

    // Listings are bounded: more lines than allowed is an error that says
    // the limit, by rsync's connection and by plain ssh alike.
    let small = runner.clone().listing_limits(ListingLimits {
        max_lines: 5,
        ..ListingLimits::default()
    });
    fs::remove_file(dir.path().join("state/sync-odd-names.source")).expect("drop the cache");
    let (r, j) = (small.clone(), job.clone());
    let too_long = within(limit, "a capped run", move || r.run(&j, &mut |_| {}))
        .expect_err("too long a listing");
    let said = too_long.to_string();
    assert!(
        said.contains("longer than the limit of") && said.contains("5 lines"),
        "{said}"
    );
    let (r, j) = (small, job);
    let too_long = within(limit, "a capped verification", move || r.verify(&j))
        .expect_err("too long a listing");
    assert!(too_long.to_string().contains("5 lines"), "{too_long}");
    drop(lab);
}

#[test]
fn a_listing_that_never_ends_is_stopped_at_its_deadline() {
    require_ssh("a_listing_that_never_ends_is_stopped_at_its_deadline");
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = ssh_lab("dsync", "10.81", dir.path());
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let mut mail = Generator::new(&src);
    mail.deliver("");
    // The source hangs before the listing starts, as on a stuck mount: its
    // login shell waits for a writer on a FIFO that gets none.
    let hold = dir.path().join("hold");
    let made = Command::new("mkfifo").arg(&hold).status().expect("mkfifo");
    assert!(made.success());
    fs::write(
        &lab.login_script,
        format!("read line < {}\n", hold.display()),
    )
    .expect("write");
    let deadline = Duration::from_secs(3);
    let runner = SyncRunner::new(dir.path().join("state")).listing_limits(ListingLimits {
        deadline,
        ..ListingLimits::default()
    });
    let job = remote_job(&lab, "stuck", &src, &dst);
    let what = format!("root@{}:{}", lab.source_addr, src.display());
    let expected = format!("listing of {what} did not finish within 3 s");
    for via in ["rsync", "ssh"] {
        let started = tokio::time::Instant::now();
        let (r, j) = (runner.clone(), job.clone());
        let failed = within(
            Duration::from_secs(30),
            "a listing of a hung source",
            move || {
                if via == "rsync" {
                    r.run(&j, &mut |_| {}).map(|_| ())
                } else {
                    r.verify(&j).map(|_| ())
                }
            },
        )
        .expect_err("past the deadline");
        let took = started.elapsed();
        assert!(failed.to_string().contains(&expected), "{via}: {failed}");
        assert!(
            took >= deadline && took < deadline + Duration::from_secs(5),
            "{via}: stopped after {took:?}"
        );
    }
    let status = runner.status("stuck").expect("status").expect("a run");
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or_default()
            .contains(&expected),
        "{status:?}"
    );
    // Let the hung shells go (a writer that finds no reader is fine), and
    // the job runs again: its lock was released.
    fs::remove_file(&lab.login_script).expect("remove the login script");
    if let Ok(mut writer) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&hold)
    {
        use std::io::Write;
        let _ = writer.write_all(b"go\ngo\ngo\n");
    }
    let (r, j) = (runner.clone(), job);
    let report = within(Duration::from_secs(60), "a run", move || {
        r.run(&j, &mut |_| {})
    })
    .expect("a run once the source answers");
    assert!(report.verification.verified(), "{}", report.verification);
    drop(lab);
}

/// `ssh-keygen -l`'s `SHA256:...` of a public key file.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_owned()
}

#[test]
fn a_pinned_host_key_is_the_only_one_accepted() {
    require_ssh("a_pinned_host_key_is_the_only_one_accepted");
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = ssh_lab("ksync", "10.82", dir.path());
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let mut mail = Generator::new(&src);
    mail.deliver("");
    let runner = SyncRunner::new(dir.path().join("state"));
    let host_pub = lab.host_key.with_extension("pub");
    let right = fingerprint(&host_pub);
    let limit = Duration::from_secs(60);

    // No pin: the first key seen is kept, and the status says so.
    let unpinned = remote_job(&lab, "tofu", &src, &dst);
    let (r, j) = (runner.clone(), unpinned);
    within(limit, "a run", move || r.run(&j, &mut |_| {})).expect("first use");
    let status = runner.status("tofu").expect("status").expect("a run");
    assert_eq!(
        status.host_key.as_deref(),
        Some(format!("accepted on first use: ssh-ed25519 {right}").as_str())
    );

    // Pinned right: verified against that key alone.
    let mut pinned = remote_job(&lab, "pinned", &src, &dir.path().join("dst-pinned"));
    let line = fs::read_to_string(&host_pub).expect("host key");
    pinned.ssh_host_key = Some(HostKey::parse(&line).expect("a key"));
    let (r, j) = (runner.clone(), pinned.clone());
    let report = within(limit, "a pinned run", move || r.run(&j, &mut |_| {})).expect("pinned");
    assert!(report.verification.verified(), "{}", report.verification);
    let status = runner.status("pinned").expect("status").expect("a run");
    assert_eq!(
        status.host_key.as_deref(),
        Some(format!("pinned: ssh-ed25519 {right}").as_str())
    );
    let known = fs::read_to_string(dir.path().join("state/sync-pinned.known_hosts"))
        .expect("the job's known_hosts");
    assert_eq!(known.lines().count(), 1, "{known}");
    assert!(
        known.starts_with(&format!("{} ssh-ed25519 ", lab.source_addr)),
        "{known}"
    );

    // Pinned wrong (the key of another host): the run fails and says so.
    let other = dir.path().join("other_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let wrong_pub = other.with_extension("pub");
    let wrong = fingerprint(&wrong_pub);
    let line = fs::read_to_string(&wrong_pub).expect("other key");
    pinned.ssh_host_key = Some(HostKey::parse(&line).expect("a key"));
    for via in ["rsync", "ssh"] {
        let (r, j) = (runner.clone(), pinned.clone());
        let failed = within(limit, "a run against a wrong pin", move || {
            if via == "rsync" {
                r.run(&j, &mut |_| {}).map(|_| ())
            } else {
                r.verify(&j).map(|_| ())
            }
        })
        .expect_err("not the pinned key");
        let said = failed.to_string();
        assert!(
            said.contains(&format!(
                "the ssh host key of root@{} is not the pinned one (ssh-ed25519 {wrong})",
                lab.source_addr
            )) && said.contains("Host key verification failed"),
            "{via}: {said}"
        );
    }
    let status = runner.status("pinned").expect("status").expect("a run");
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("not the pinned one"),
        "{status:?}"
    );
    drop(lab);
}

// ------------------------------------------------ Dovecot on both sides

/// Dovecot's `imap` program speaking IMAP on its standard input and output,
/// logged in already (as when a mail client runs it over ssh): a real IMAP
/// server for one maildir, with a configuration file of its own in the
/// test's folder, and no daemon. Dovecot never opens mail as root, so the
/// mail belongs to `nobody`.
struct Imap {
    config: PathBuf,
}

/// One mailbox as an IMAP client sees it after `EXAMINE`.
#[derive(Debug, PartialEq, Eq)]
struct Mailbox {
    uidvalidity: u64,
    uidnext: u64,
    messages: Vec<Message>,
}

/// One message as `FETCH (UID FLAGS RFC822.SIZE ...)` shows it.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    uid: u64,
    /// Flags and keywords; `\Recent` is left out (it belongs to a session,
    /// not to the message).
    flags: Vec<String>,
    size: u64,
    message_id: String,
}

const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";

fn require_dovecot(test: &str) {
    require_tools(test);
    assert!(
        Path::new(DOVECOT_IMAP).exists(),
        "{test} serves both sides with Dovecot: install it (apt-get install dovecot-imapd; scripts/test.sh does)"
    );
}

impl Imap {
    fn new(dir: &Path, side: &str, maildir: &Path) -> Imap {
        let config = dir.join(format!("dovecot-{side}.conf"));
        fs::write(
            &config,
            format!(
                "mail_location = maildir:{}\n\
                 mail_uid = nobody\n\
                 mail_gid = nogroup\n\
                 namespace inbox {{\n  inbox = yes\n  separator = .\n}}\n",
                maildir.display()
            ),
        )
        .expect("write the Dovecot configuration");
        Imap { config }
    }

    /// Runs `commands` in one session and returns what the server said;
    /// every command must succeed.
    fn session(&self, commands: &[String]) -> String {
        use std::io::Write;
        let mut input = String::new();
        for (n, command) in commands.iter().enumerate() {
            input.push_str(&format!("t{n} {command}\r\n"));
        }
        input.push_str("z LOGOUT\r\n");
        let mut child = Command::new(DOVECOT_IMAP)
            .arg("-c")
            .arg(&self.config)
            .env_clear()
            .env("USER", "nobody")
            .env("HOME", "/nonexistent")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start Dovecot's imap");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("send the commands");
        let output = child.wait_with_output().expect("imap ends");
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        for (n, command) in commands.iter().enumerate() {
            assert!(
                said.lines().any(|l| l.starts_with(&format!("t{n} OK"))),
                "`{command}` failed:\n{said}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        said
    }

    /// The mailbox as a client that opens it read-only sees it.
    fn examine(&self, mailbox: &str) -> Mailbox {
        let said = self.session(&[
            format!("EXAMINE \"{mailbox}\""),
            "FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])".into(),
        ]);
        let number = |line: &str, after: &str| -> Option<u64> {
            let rest = &line[line.find(after)? + after.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let mut found = Mailbox {
            uidvalidity: 0,
            uidnext: 0,
            messages: Vec::new(),
        };
        let mut lines = said.lines();
        while let Some(line) = lines.next() {
            if let Some(v) = number(line, "[UIDVALIDITY ") {
                found.uidvalidity = v;
            } else if let Some(v) = number(line, "[UIDNEXT ") {
                found.uidnext = v;
            } else if line.starts_with("* ") && line.contains(" FETCH (") {
                let flags = line
                    .split_once("FLAGS (")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(flags, _)| flags)
                    .unwrap_or_else(|| panic!("no FLAGS in {line}"));
                let mut flags: Vec<String> = flags
                    .split_whitespace()
                    .filter(|f| *f != "\\Recent")
                    .map(str::to_owned)
                    .collect();
                flags.sort();
                let message_id = lines
                    .next()
                    .and_then(|l| l.strip_prefix("Message-ID: "))
                    .unwrap_or_else(|| panic!("no Message-ID after {line}"))
                    .to_owned();
                found.messages.push(Message {
                    uid: number(line, "UID ").unwrap_or_else(|| panic!("no UID in {line}")),
                    flags,
                    size: number(line, "RFC822.SIZE ")
                        .unwrap_or_else(|| panic!("no size in {line}")),
                    message_id,
                });
            }
        }
        assert!(found.uidvalidity > 0 && found.uidnext > 0, "{said}");
        found
    }

    /// The mailboxes a client lists, and those it has subscribed to.
    fn folders(&self) -> (Vec<String>, Vec<String>) {
        let said = self.session(&["LIST \"\" \"*\"".into(), "LSUB \"\" \"*\"".into()]);
        let names = |kind: &str| {
            let mut names: Vec<String> = said
                .lines()
                .filter(|l| l.starts_with(kind))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            names
        };
        (names("* LIST "), names("* LSUB "))
    }

    /// Every mailbox, by name.
    fn all(&self) -> BTreeMap<&'static str, Mailbox> {
        IMAP_FOLDERS
            .iter()
            .map(|name| (*name, self.examine(name)))
            .collect()
    }
}

/// The mailboxes of [`FOLDERS`] by their IMAP names.
const IMAP_FOLDERS: [&str; 3] = ["INBOX", "Sent", "Archive.2023"];

fn give_to_nobody(path: &Path) {
    let done = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(done.success(), "chown -R nobody {}", path.display());
}

/// The property that keeps mail clients from downloading every message
/// again after a migration: Dovecot serving the source and, after the sync,
/// Dovecot serving the destination show an IMAP client the same mailboxes,
/// with the same UIDVALIDITY, UIDs, flags (and keywords) and messages.
#[test]
fn dovecot_on_the_destination_shows_the_same_uids_and_flags_as_on_the_source() {
    require_dovecot("dovecot_on_the_destination_shows_the_same_uids_and_flags_as_on_the_source");
    let dir = tempfile::tempdir().expect("tempdir");
    // Dovecot runs as nobody and must reach both maildirs.
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let runner = SyncRunner::new(dir.path().join("state"));
    // A mirror, as a final sync is: what the source expunged goes.
    let job = SyncJob {
        delete: true,
        ..job("dovecot", &src, &dst)
    };

    // A maildir as mail arrived: some read, some flagged or answered.
    let mut mail = Generator::new(&src);
    // Only real Dovecot files on this source: not the generator's stand-ins.
    for stand_in in [
        "dovecot.index.cache",
        ".Sent/dovecot.index",
        "dovecot-keywords",
    ] {
        fs::remove_file(src.join(stand_in)).expect("remove a stand-in");
    }
    let mut uniqs = Vec::new();
    for i in 0..24 {
        let folder = FOLDERS[i % 3];
        uniqs.push((folder, mail.deliver(folder)));
    }
    for (i, (folder, uniq)) in uniqs.iter().enumerate().take(15) {
        mail.set_flags(folder, uniq, ["S", "FS", "RS"][i % 3]);
    }
    give_to_nobody(&src);

    // Dovecot on the source indexes it, and a client changes it: moves new
    // mail to cur, sets flags and keywords, expunges (so the UIDs no longer
    // start at 1: a fresh count would not give the same ones).
    let source = Imap::new(dir.path(), "source", &src);
    source.session(&[
        "SELECT INBOX".into(),
        "STORE 1 +FLAGS (\\Deleted)".into(),
        "EXPUNGE".into(),
        "STORE 2:3 +FLAGS ($Forwarded NonJunk)".into(),
        "SELECT Sent".into(),
        "STORE 1 +FLAGS (\\Answered \\Draft)".into(),
        "SELECT Archive.2023".into(),
        "STORE 4 +FLAGS (\\Flagged $Label1)".into(),
    ]);
    let before = source.all();
    assert_eq!(before["INBOX"].messages.len(), 7, "{before:?}");
    assert_eq!(before["INBOX"].messages[0].uid, 2, "{before:?}");
    assert!(src.join("dovecot-uidlist").exists());
    assert!(src.join(".Sent/dovecot-uidlist").exists());

    let first = runner.run(&job, &mut |_| {}).expect("first run");
    assert!(first.verification.verified(), "{}", first.verification);
    let destination = Imap::new(dir.path(), "destination", &dst);
    assert_eq!(destination.all(), before, "after the first sync");
    let folders = source.folders();
    assert_eq!(folders.0, ["Archive", "Archive.2023", "INBOX", "Sent"]);
    assert_eq!(folders.1, ["Archive.2023", "Sent"], "subscriptions");
    assert_eq!(destination.folders(), folders);
    assert_eq!(
        source.all(),
        before,
        "the sync changed nothing on the source"
    );

    // Before the final sync: new mail, flags changed, a message expunged on
    // the source; and the destination's Dovecot kept its own index of the
    // first copy, which the sync leaves alone.
    for i in 0..4 {
        mail.deliver(FOLDERS[i % 3]);
    }
    give_to_nobody(&src);
    source.session(&[
        "SELECT INBOX".into(),
        "STORE 2 -FLAGS ($Forwarded)".into(),
        "STORE 4 +FLAGS (\\Seen \\Flagged)".into(),
        "SELECT Sent".into(),
        "STORE 2 +FLAGS (\\Deleted)".into(),
        "EXPUNGE".into(),
    ]);
    let final_state = source.all();
    assert_ne!(final_state, before);
    let last = runner.run(&job, &mut |_| {}).expect("final run");
    assert!(last.verification.verified(), "{}", last.verification);
    assert_eq!(destination.all(), final_state, "after the final sync");
    for (name, mailbox) in &final_state {
        assert_eq!(
            mailbox.uidvalidity, before[name].uidvalidity,
            "{name}: UIDVALIDITY is the mailbox's for good"
        );
    }
}
