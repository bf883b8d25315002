//! Benchmark of a maildir sync job against plain `rsync -a --delete`
//! (issue 4), over real ssh between two network namespaces.
//!
//! ```sh
//! cargo bench --bench sync                        # 100,000 messages
//! MAILCTL_BENCH_MESSAGES=20000 cargo bench --bench sync
//! ```
//!
//! The source namespace runs a test sshd; this program moves into the
//! destination namespace, so both mailctl's run (`SyncRunner::run`, the
//! code the agent and `mailctl sync run --local` use) and the reference
//! pull from `root@SOURCE:PATH` through the same veth. Bytes are counted on
//! the destination's veth (received + sent, all of ssh), and each tool's
//! own count is printed too. A first run copies everything; then three
//! rounds each change the flags of 5 % of the messages (as an IMAP server
//! renames them) and deliver 1 % new ones, and both tools sync again, in
//! alternating order. After every run both destinations must hold exactly
//! the source's messages, names and mtimes.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real elapsed time, against the reference tool in the same run"
)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use mailctl_agent::sync::{Listing, SyncRunner};
use mailctl_schemas::model::{SyncJob, SyncSource};

const ROUNDS: usize = 3;
const USERS: usize = 5;
const FOLDERS: [&str; 4] = ["", ".Sent", ".Archive", ".Lists"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benches/sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("spawning {program} (is it installed?)"))?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sync tests' lab: two namespaces joined by a veth, sshd in the source
/// one; removed on drop.
#[path = "../agent/tests/support/ssh_lab.rs"]
mod ssh_lab;

struct Lab {
    ssh: ssh_lab::SshLab,
    known_hosts: PathBuf,
}

impl Lab {
    /// Builds the lab in `dir`; from then on this process (and the rsync
    /// and ssh it starts) is the destination.
    fn new(dir: &Path) -> Result<Lab> {
        let id = std::process::id();
        let ssh = ssh_lab::SshLab::start(
            &format!("mctlsb-{id}-src"),
            &format!("mctlsb-{id}-dst"),
            "10.86.0",
            dir,
        )
        .map_err(anyhow::Error::msg)?;
        ssh.enter_destination(&[]).map_err(anyhow::Error::msg)?;
        Ok(Lab {
            ssh,
            known_hosts: dir.join("known_hosts"),
        })
    }

    /// Bytes through the destination's veth, both ways (this process is
    /// in the destination namespace, so `ip` is too).
    fn wire_bytes(&self) -> Result<u64> {
        let json: serde_json::Value = serde_json::from_str(&sh(
            "ip",
            &["-j", "-s", "link", "show", "dev", ssh_lab::DEST_DEV],
        )?)?;
        let stats = &json[0]["stats64"];
        match (stats["rx"]["bytes"].as_u64(), stats["tx"]["bytes"].as_u64()) {
            (Some(rx), Some(tx)) => Ok(rx + tx),
            _ => bail!(
                "no byte counters in `ip -j -s link show dev {}`: {json}",
                ssh_lab::DEST_DEV
            ),
        }
    }

    /// The ssh command both tools use.
    fn ssh(&self) -> String {
        format!(
            "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={}",
            self.ssh.client_key.display(),
            self.known_hosts.display()
        )
    }
}

/// A Dovecot-style maildir tree of several users and folders.
struct Mail {
    root: PathBuf,
    /// Every message: (maildir folder path relative to root, unique part).
    messages: Vec<(String, String)>,
    next: u64,
    seed: u64,
}

impl Mail {
    fn new(root: &Path) -> Result<Mail> {
        for user in 0..USERS {
            for folder in FOLDERS {
                for sub in ["cur", "new", "tmp"] {
                    fs::create_dir_all(root.join(Mail::folder(user, folder)).join(sub))?;
                }
            }
            let maildir = root.join(format!("user{user}/Maildir"));
            fs::write(maildir.join("subscriptions"), "Sent\nArchive\nLists\n")?;
            fs::write(maildir.join("dovecot-keywords"), "0 $Forwarded\n")?;
        }
        Ok(Mail {
            root: root.to_owned(),
            messages: Vec::new(),
            next: 0,
            seed: 0x9e37_79b9_7f4a_7c15,
        })
    }

    fn folder(user: usize, folder: &str) -> String {
        if folder.is_empty() {
            format!("user{user}/Maildir")
        } else {
            format!("user{user}/Maildir/{folder}")
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: message bodies that do not compress to nothing.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Delivers a ~4 KB message into `new/` (or, read, straight into `cur/`).
    fn deliver(&mut self, read: bool) -> Result<()> {
        self.next += 1;
        let n = self.next;
        let user = (n as usize) % USERS;
        let folder = FOLDERS[(n as usize / USERS) % FOLDERS.len()];
        let mut body = format!(
            "Return-Path: <sender{n}@example.net>\nDelivered-To: user{user}@example.test\nMessage-ID: <{n}.{:x}@example.net>\nDate: Tue, 14 Nov 2023 22:13:20 +0000\nFrom: Sender <sender{n}@example.net>\nTo: user{user}@example.test\nSubject: message {n}\n\n",
            self.random()
        );
        const WORDS: [&str; 16] = [
            "mail",
            "host",
            "queue",
            "deliver",
            "sync",
            "folder",
            "message",
            "server",
            "the",
            "of",
            "and",
            "migration",
            "postfix",
            "dovecot",
            "night",
            "cutover",
        ];
        let target = 3600 + (self.random() % 1000) as usize;
        while body.len() < target {
            let r = self.random();
            body.push_str(WORDS[(r % 16) as usize]);
            body.push_str(&format!(" {:x}", r >> 40));
            body.push(if r.is_multiple_of(11) { '\n' } else { ' ' });
        }
        body.push('\n');
        let vsize = body.len() + body.matches('\n').count();
        let uniq = format!(
            "{}.M{}P{}Q{}.mail.example.test",
            1_700_000_000 + n,
            self.random() % 1_000_000,
            4000 + n % 97,
            n
        );
        let dir = Mail::folder(user, folder);
        let name = if read {
            format!("cur/{uniq},S={},W={vsize}:2,S", body.len())
        } else {
            format!("new/{uniq},S={},W={vsize}", body.len())
        };
        let path = self.root.join(&dir).join(name);
        let mut file = fs::File::create(&path)?;
        file.write_all(body.as_bytes())?;
        file.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n * 30))?;
        self.messages.push((dir, uniq));
        Ok(())
    }

    /// Changes the flags of one message as an IMAP server does: new/X ->
    /// cur/X:2,S; cur/X:2,S -> cur/X:2,RS; anything else -> cur/X:2,S.
    fn touch_flags(&self, index: usize) -> Result<()> {
        let (dir, uniq) = &self.messages[index];
        let folder = self.root.join(dir);
        for sub in ["new", "cur"] {
            for entry in fs::read_dir(folder.join(sub))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with(uniq.as_str()) {
                    continue;
                }
                let (base, flags) = name.split_once(":2,").unwrap_or((&name, ""));
                let flags = if sub == "cur" && flags == "S" {
                    "RS"
                } else {
                    "S"
                };
                fs::rename(
                    entry.path(),
                    folder.join("cur").join(format!("{base}:2,{flags}")),
                )?;
                return Ok(());
            }
        }
        bail!("message {uniq} not found in {dir}")
    }
}

/// Every message file of a tree: path -> mtime.
fn messages(root: &Path) -> Result<BTreeMap<String, i64>> {
    let listing = Listing::read_local(root)?;
    Ok(listing
        .folders
        .iter()
        .flat_map(|(folder, f)| {
            f.messages
                .iter()
                .map(move |m| (format!("{folder}/{}", m.rel()), m.mtime))
        })
        .collect())
}

struct Measured {
    time: Duration,
    wire: u64,
    own: u64,
    files: u64,
}

fn run() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this benchmark creates network namespaces and runs sshd: run it as root"
    );
    for tool in [
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/bin/rsync",
    ] {
        ensure!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install rsync openssh-server openssh-client"
        );
    }
    let total: usize = match std::env::var("MAILCTL_BENCH_MESSAGES") {
        Ok(n) => n
            .parse()
            .context("MAILCTL_BENCH_MESSAGES must be a number")?,
        Err(_) => 100_000,
    };
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let lab = Lab::new(dir.path())?;
    let src = dir.path().join("src");
    let (ours, plain) = (dir.path().join("ours"), dir.path().join("plain"));
    fs::create_dir_all(&plain)?;

    let started = Instant::now();
    let mut mail = Mail::new(&src)?;
    for i in 0..total {
        mail.deliver(i % 10 < 7)?;
    }
    let size: u64 = messages(&src)?.len() as u64;
    println!(
        "source: {size} messages (~4 KB, Dovecot names with ,S= and ,W=), {USERS} users x {} folders, generated in {:.1}s",
        FOLDERS.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "both pull root@{}:{} over ssh (ed25519, same options) into the destination namespace",
        lab.ssh.source_addr,
        src.display()
    );

    let runner = SyncRunner::new(dir.path().join("state"));
    let source = SyncSource::Remote {
        host: format!("root@{}", lab.ssh.source_addr),
        path: src.clone(),
    };
    let job = SyncJob {
        maildir: true,
        delete: true,
        ssh_key: Some(lab.ssh.client_key.clone()),
        ..SyncJob::new("bench", source, ours.clone())
    };
    let ours_run = |lab: &Lab| -> Result<Measured> {
        let before = lab.wire_bytes()?;
        let started = Instant::now();
        let report = runner.run(&job, &mut |_| {})?;
        let time = started.elapsed();
        ensure!(
            report.verification.verified(),
            "mailctl: {}",
            report.verification
        );
        println!(
            "  mailctl report: {}",
            report.to_string().replace('\n', "; ")
        );
        Ok(Measured {
            time,
            wire: lab.wire_bytes()? - before,
            own: report.stats.wire_bytes(),
            files: report.stats.files_transferred,
        })
    };
    let plain_run = |lab: &Lab| -> Result<Measured> {
        let before = lab.wire_bytes()?;
        let started = Instant::now();
        let out = Command::new("rsync")
            .args(["-a", "--delete", "--stats", "-e", &lab.ssh()])
            .arg(format!("root@{}:{}/", lab.ssh.source_addr, src.display()))
            .arg(format!("{}/", plain.display()))
            .stdin(Stdio::null())
            .output()?;
        let time = started.elapsed();
        ensure!(
            out.status.success(),
            "rsync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut stats = mailctl_agent::sync::Stats::default();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            mailctl_agent::sync::rsync::parse_stats_line(line, &mut stats);
        }
        Ok(Measured {
            time,
            wire: lab.wire_bytes()? - before,
            own: stats.wire_bytes(),
            files: stats.files_transferred,
        })
    };
    let check = |when: &str| -> Result<()> {
        let want = messages(&src)?;
        ensure!(
            messages(&ours)? == want,
            "{when}: mailctl's copy differs from the source"
        );
        ensure!(
            messages(&plain)? == want,
            "{when}: rsync's copy differs from the source"
        );
        Ok(())
    };
    let line = |who: &str, m: &Measured| {
        println!(
            "  {who:<22} {:>8.2} s   veth {:>12} bytes   own count {:>12} bytes   files sent {:>7}",
            m.time.as_secs_f64(),
            m.wire,
            m.own,
            m.files
        );
    };

    println!("\nfirst run (empty destinations):");
    let m = ours_run(&lab)?;
    line("mailctl sync", &m);
    let r = plain_run(&lab)?;
    line("rsync -a --delete", &r);
    check("first run")?;

    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let count = mail.messages.len();
        for i in (round..count).step_by(20) {
            mail.touch_flags(i)?;
        }
        for _ in 0..count / 100 {
            mail.deliver(false)?;
        }
        println!(
            "\nround {round}: flags changed on {} messages (5 %), {} new (1 %), now {} messages; order: {}",
            (round..count).step_by(20).count(),
            count / 100,
            mail.messages.len(),
            if round % 2 == 1 {
                "mailctl first"
            } else {
                "rsync first"
            }
        );
        let (m, r) = if round % 2 == 1 {
            let m = ours_run(&lab)?;
            (m, plain_run(&lab)?)
        } else {
            let r = plain_run(&lab)?;
            (ours_run(&lab)?, r)
        };
        line("mailctl sync", &m);
        line("rsync -a --delete", &r);
        check(&format!("round {round}"))?;
        let bytes = m.wire as f64 / r.wire as f64;
        let time = m.time.as_secs_f64() / r.time.as_secs_f64();
        println!(
            "  mailctl / rsync: bytes {bytes:.3} (target <= 0.200), time {time:.2} (target <= 1.00)"
        );
        ratios.push((bytes, time));
    }
    let worst_bytes = ratios.iter().map(|r| r.0).fold(0.0, f64::max);
    let worst_time = ratios.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "\nworst of {ROUNDS} rounds: bytes {worst_bytes:.3}, time {worst_time:.2}: {}",
        if worst_bytes <= 0.2 && worst_time <= 1.0 {
            "targets met"
        } else {
            "TARGETS MISSED"
        }
    );
    drop(lab);
    Ok(())
}
