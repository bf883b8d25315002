//! Running the real `rsync` (and `ssh` for remote listings) and reading its
//! progress and statistics.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::time::Instant;

use mailctl_schemas::model::{SyncJob, SyncSource};
use mailctl_schemas::ssh::{self, HostKey};

use super::SyncError;
use super::source::{Budget, ListingLimits};

/// Exit code 24: "some files vanished before they could be transferred" —
/// on a live maildir a message renamed new->cur while rsync ran. The next
/// run (and the final one, with writers stopped) picks it up under its new
/// name.
const VANISHED: i32 = 24;

/// How to reach the source of a job.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `None` for a local path; else `HOST`, `user@HOST` or `[IPv6]`,
    /// checked by [`Endpoint::of`] (never an option to ssh or rsync).
    pub host: Option<String>,
    pub path: PathBuf,
    pub ssh_key: Option<PathBuf>,
    /// `UserKnownHostsFile` for ssh: the job's own, in the state directory.
    pub known_hosts: PathBuf,
    /// The source's pinned host key: ssh accepts that one only.
    pub host_key: Option<HostKey>,
}

impl Endpoint {
    /// The endpoint of `job`; an error when its source host would not be
    /// read as a host (the manifest's validation says so too, with a
    /// position) or its path is not absolute.
    pub fn of(job: &SyncJob, known_hosts: PathBuf) -> Result<Endpoint, SyncError> {
        let (host, path) = match &job.source {
            SyncSource::Remote { host, path } => {
                if let Some(problem) = ssh::host_problem(host) {
                    return Err(SyncError::Other(format!(
                        "sync job {}: source host refused: {problem}",
                        job.name
                    )));
                }
                (Some(host.clone()), path.clone())
            }
            SyncSource::Local(path) => (None, path.clone()),
        };
        if !path.is_absolute() {
            return Err(SyncError::Other(format!(
                "sync job {}: the source path {} is not absolute",
                job.name,
                path.display()
            )));
        }
        Ok(Endpoint {
            host,
            path,
            ssh_key: job.ssh_key.clone(),
            known_hosts,
            host_key: job.ssh_host_key.clone(),
        })
    }

    /// The host as ssh takes it after `--` (`user@2001:db8::1`: no brackets).
    pub fn ssh_destination(&self) -> Option<String> {
        self.host.as_deref().map(ssh::ssh_destination)
    }

    /// The ssh command line (program and options), without the host. A
    /// pinned key is the only one ssh accepts (`StrictHostKeyChecking=yes`,
    /// the job's known_hosts file and no global one); without a pin the
    /// first key seen is kept in the job's file (`accept-new`).
    pub fn ssh_argv(&self) -> Vec<String> {
        let mut argv = vec!["ssh".to_owned()];
        if let Some(key) = &self.ssh_key {
            argv.extend(["-i".to_owned(), key.display().to_string()]);
        }
        let checking = if self.host_key.is_some() {
            "StrictHostKeyChecking=yes"
        } else {
            "StrictHostKeyChecking=accept-new"
        };
        argv.extend(
            [
                "-o",
                "BatchMode=yes",
                "-o",
                checking,
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "ServerAliveInterval=15",
            ]
            .map(str::to_owned),
        );
        argv.extend([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
        ]);
        argv
    }

    /// Writes the pinned key as the job's known_hosts (each run: a changed
    /// pin takes effect at once). Without a pin the file is ssh's to keep.
    pub fn write_pinned_key(&self) -> Result<(), SyncError> {
        let (Some(host), Some(key)) = (&self.host, &self.host_key) else {
            return Ok(());
        };
        let line = format!("{} {key}\n", ssh::known_hosts_name(host));
        crate::fsutil::write_atomically(&self.known_hosts, line.as_bytes(), 0o600).map_err(
            |source| SyncError::Io {
                what: format!("writing {}", self.known_hosts.display()),
                source,
            },
        )
    }

    /// What the job's status says about the source's host key: `pinned:
    /// TYPE SHA256:...`, `accepted on first use: TYPE SHA256:...` (the key
    /// ssh kept), or `None` before ssh ever saw one (and for local sources).
    pub fn host_key_status(&self) -> Option<String> {
        self.host.as_ref()?;
        if let Some(key) = &self.host_key {
            return Some(format!("pinned: {}", fingerprint(key)));
        }
        let known = std::fs::read_to_string(&self.known_hosts).ok()?;
        known
            .lines()
            .filter_map(|line| line.split_once(' '))
            .find_map(|(_, key)| HostKey::parse(key).ok())
            .map(|key| format!("accepted on first use: {}", fingerprint(&key)))
    }

    /// Says which key the source offered when ssh refused it for not being
    /// the pinned one; other errors pass unchanged.
    pub fn explain_host_key(&self, error: SyncError) -> SyncError {
        let (Some(host), Some(pinned)) = (&self.host, &self.host_key) else {
            return error;
        };
        let said = match &error {
            SyncError::Command { stderr, .. } => stderr.clone(),
            other => other.to_string(),
        };
        if !said.contains("Host key verification failed") {
            return error;
        }
        SyncError::HostKey {
            host: host.clone(),
            pinned: fingerprint(pinned),
            detail: said,
        }
    }

    /// The rsync source argument, with a trailing slash (copy the contents).
    pub fn rsync_source(&self) -> String {
        let mut path = self.path.display().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        match &self.host {
            Some(host) => format!("{host}:{path}"),
            None => path,
        }
    }
}

/// `TYPE SHA256:...`, as `ssh-keygen -l` and ssh's own messages name a key.
pub fn fingerprint(key: &HostKey) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.blob());
    format!(
        "{} SHA256:{}",
        key.algorithm(),
        ssh::encode_base64_unpadded(digest.as_ref())
    )
}

/// Quotes one word for the remote shell ssh runs commands with.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What to hand rsync besides source and destination.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub delete: bool,
    /// Transfer `dovecot.index*` caches too.
    pub with_index: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Further rsync arguments.
    pub extra_args: Vec<String>,
    /// Send only the paths handed to [`Transfer::send_list`] (relative to
    /// the source root) instead of the whole tree; paths gone by then are
    /// skipped.
    pub files_from_list: bool,
    /// What the source runs instead of plain `rsync` (`--rsync-path`, a
    /// shell command line that ends by starting rsync).
    pub rsync_path: Option<String>,
}

/// The rsync argv for one run.
pub fn argv(endpoint: &Endpoint, destination: &Path, options: &Options) -> Vec<String> {
    let mut argv: Vec<String> = [
        "rsync",
        "-a",
        "--no-inc-recursive",
        "--info=progress2,stats2,flist0,name0",
        "--out-format=%i %n",
        // The source path and file lists travel in rsync's protocol, not
        // through the source's shell (`--secluded-args`, called
        // `--protect-args` before 3.2.8; `-s` in both).
        "-s",
    ]
    .map(str::to_owned)
    .to_vec();
    if endpoint.host.is_some() {
        argv.push("-e".to_owned());
        argv.push(
            endpoint
                .ssh_argv()
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if options.files_from_list {
        argv.push("--files-from=-".to_owned());
        argv.push("--from0".to_owned());
        argv.push("--ignore-missing-args".to_owned());
    } else if options.delete {
        // With a file list the caller deletes itself: --delete needs -r.
        argv.push("--delete".to_owned());
    }
    if let Some(command) = &options.rsync_path {
        argv.push(format!("--rsync-path={command}"));
    }
    for pattern in &options.include {
        argv.push(format!("--include={pattern}"));
    }
    for pattern in &options.exclude {
        argv.push(format!("--exclude={pattern}"));
    }
    // Messages being written: never half a message, never deleted here.
    argv.push("--exclude=tmp/*".to_owned());
    argv.push("--exclude=dovecot-uidlist.lock".to_owned());
    if !options.with_index {
        argv.push("--exclude=dovecot.index*".to_owned());
        argv.push("--exclude=dovecot.list.index*".to_owned());
    }
    argv.extend(options.extra_args.iter().cloned());
    argv.push(endpoint.rsync_source());
    let mut dest = destination.display().to_string();
    if !dest.ends_with('/') {
        dest.push('/');
    }
    argv.push(dest);
    argv
}

/// Progress as rsync reports it (`--info=progress2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of file data transferred so far.
    pub bytes: u64,
    /// rsync's estimate, in percent.
    pub percent: u8,
    /// Files transferred so far (`xfr#N`).
    pub files: u64,
    /// Files still to check and all files (`to-chk=R/T`).
    pub to_check: u64,
    pub total_files: u64,
    /// Bytes per second.
    pub rate: u64,
}

pub use mailctl_api::sync::Stats;

fn number(text: &str) -> Option<u64> {
    let digits: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Parses one `progress2` line:
/// `  1,234,567  45%   12.34MB/s    0:00:10 (xfr#12, to-chk=100/2000)`.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let mut words = line.split_whitespace();
    let bytes = number(words.next()?)?;
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let rate = words.next().and_then(parse_rate).unwrap_or(0);
    let mut progress = Progress {
        bytes,
        percent,
        rate,
        ..Progress::default()
    };
    if let Some(n) = line.split("xfr#").nth(1) {
        progress.files = number(n).unwrap_or(0);
    }
    if let Some(rest) = line
        .split("to-chk=")
        .nth(1)
        .or_else(|| line.split("ir-chk=").nth(1))
        && let Some((remaining, total)) = rest.trim_end_matches(')').split_once('/')
    {
        progress.to_check = number(remaining).unwrap_or(0);
        progress.total_files = number(total).unwrap_or(0);
    }
    Some(progress)
}

fn parse_rate(word: &str) -> Option<u64> {
    let word = word.strip_suffix("/s")?;
    let split = word.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = word.split_at(split);
    let value: f64 = value.replace(',', "").parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((value * scale) as u64)
}

/// Folds one `stats2` line into `stats`.
pub fn parse_stats_line(line: &str, stats: &mut Stats) {
    let Some((label, value)) = line.split_once(':') else {
        return;
    };
    let field = match label.trim() {
        "Number of files" => &mut stats.files,
        "Number of regular files transferred" => &mut stats.files_transferred,
        "Total transferred file size" => &mut stats.transferred_file_size,
        "Total bytes sent" => &mut stats.bytes_sent,
        "Total bytes received" => &mut stats.bytes_received,
        _ => return,
    };
    if let Some(n) = number(value) {
        *field = n;
    }
}

/// An event while rsync runs.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Progress(Progress),
    /// One itemized change (`>f+++++++++ cur/1.a.h:2,S`).
    Item(&'a str),
}

/// Runs rsync, feeding progress to `on_event`, and returns its statistics.
pub fn run(argv: &[String], on_event: impl FnMut(Event<'_>)) -> Result<Stats, SyncError> {
    Transfer::start(argv)?.finish(on_event)
}

/// A running rsync. With `--files-from=-` it may be started before the
/// list of paths is known: ssh connects and the remote rsync starts while
/// the caller still lists, and [`send_list`](Self::send_list) hands the
/// paths over. Dropped unfinished, the rsync is killed.
#[derive(Debug)]
pub struct Transfer {
    child: Child,
    stdin: Option<ChildStdin>,
    writer: Option<JoinHandle<io::Result<()>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// What the source wrote on stderr up to and including its line
    /// starting with the end marker (see [`start_after_preamble`]), or all
    /// of its stderr when no such line came.
    ///
    /// [`start_after_preamble`]: Self::start_after_preamble
    preamble: Option<mpsc::Receiver<Preamble>>,
    /// When it was started: a preamble is due within the listing deadline.
    started: Instant,
    waited: bool,
}

/// How the source's preamble ended, as the stderr reader saw it.
#[derive(Debug)]
enum Preamble {
    /// Up to and including the end marker's line.
    Found(Vec<u8>),
    /// stderr closed first: all of it.
    Ended(Vec<u8>),
    /// Longer than the listing limits allow.
    TooLong,
}

impl Transfer {
    pub fn start(argv: &[String]) -> Result<Transfer, SyncError> {
        Transfer::spawn(argv, None)
    }

    /// Starts an rsync whose remote side first writes a preamble on stderr
    /// (the source's listing, from `--rsync-path`), ending with a line that
    /// starts with `end`; [`preamble`](Self::preamble) waits for it. ssh
    /// passes the remote stderr through, so both travel on one connection.
    /// A preamble longer than `limits` allow is refused.
    pub fn start_after_preamble(
        argv: &[String],
        end: &'static str,
        limits: ListingLimits,
    ) -> Result<Transfer, SyncError> {
        Transfer::spawn(argv, Some((end, limits)))
    }

    fn spawn(
        argv: &[String],
        end: Option<(&'static str, ListingLimits)>,
    ) -> Result<Transfer, SyncError> {
        let list = argv.iter().any(|a| a == "--files-from=-");
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(if list { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SyncError::Spawn {
                program: "rsync".into(),
                source,
            })?;
        let (sender, preamble) = match end {
            Some(_) => {
                let (sender, receiver) = mpsc::channel();
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let stderr = child.stderr.take().map(|stderr| {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut text = Vec::new();
                if let (Some((end, limits)), Some(sender)) = (end, sender) {
                    let mut budget = Budget::new(limits);
                    loop {
                        let start = text.len();
                        match reader.read_until(b'\n', &mut text) {
                            Ok(0) | Err(_) => {
                                let _ = sender.send(Preamble::Ended(std::mem::take(&mut text)));
                                return text;
                            }
                            Ok(_) if !budget.take(&text[start..]) => {
                                // rsync is stopped by the caller: no need
                                // to read what else it writes.
                                let _ = sender.send(Preamble::TooLong);
                                return Vec::new();
                            }
                            Ok(_) if text[start..].starts_with(end.as_bytes()) => {
                                let _ = sender.send(Preamble::Found(std::mem::take(&mut text)));
                                break;
                            }
                            Ok(_) => {}
                        }
                    }
                }
                let _ = reader.read_to_end(&mut text);
                text
            })
        });
        Ok(Transfer {
            stdin: child.stdin.take(),
            child,
            writer: None,
            stderr,
            preamble,
            started: Instant::now(),
            waited: false,
        })
    }

    /// Waits for the preamble of a transfer started with
    /// [`start_after_preamble`](Self::start_after_preamble), at most until
    /// the listing deadline (counted from the start); rsync is stopped when
    /// it passes or the preamble grows past the limits. When the remote
    /// side ended without one, the error carries the exit status and the
    /// end of what it wrote. `what` names the listing (`HOST:PATH`).
    pub fn preamble(&mut self, what: &str, limits: &ListingLimits) -> Result<Vec<u8>, SyncError> {
        let Some(receiver) = self.preamble.take() else {
            return Err(SyncError::Other(format!(
                "listing {what}: rsync started without a preamble"
            )));
        };
        let left = limits.deadline.saturating_sub(self.started.elapsed());
        match receiver.recv_timeout(left) {
            Ok(Preamble::Found(text)) => Ok(text),
            Ok(Preamble::Ended(text)) => {
                let status = self.child.wait().ok().and_then(|s| s.code());
                self.waited = true;
                Err(SyncError::Command {
                    what: format!("listing {what} over ssh"),
                    status,
                    stderr: tail(&text),
                })
            }
            Ok(Preamble::TooLong) => {
                self.stop();
                Err(limits.too_long(what))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stop();
                Err(limits.overdue(what))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SyncError::Other(format!(
                "listing {what}: the reader of rsync's stderr stopped"
            ))),
        }
    }

    /// Kills rsync (and with it ssh) and reaps it.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.waited = true;
    }

    /// Hands rsync its paths (NUL-separated) and closes its input, from a
    /// thread of its own: rsync reads the list while it talks to the
    /// other side, and a long list must not wait for this side to read
    /// rsync's output.
    pub fn send_list(&mut self, paths: Vec<String>) {
        let Some(mut stdin) = self.stdin.take() else {
            return;
        };
        self.writer = Some(std::thread::spawn(move || {
            let mut out = io::BufWriter::with_capacity(1 << 16, &mut stdin);
            for path in &paths {
                out.write_all(path.as_bytes())?;
                out.write_all(&[0])?;
            }
            out.flush()
        }));
    }

    /// Reads rsync's output to the end, feeding progress to `on_event`,
    /// and returns its statistics.
    pub fn finish(mut self, mut on_event: impl FnMut(Event<'_>)) -> Result<Stats, SyncError> {
        // A list never sent is an empty one.
        drop(self.stdin.take());
        let mut stats = Stats::default();
        if let Some(stdout) = self.child.stdout.take() {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // progress2 rewrites its line with \r; items end with \n.
                let read =
                    read_until_any(&mut reader, &mut buf).map_err(|source| SyncError::Io {
                        what: "reading rsync's output".into(),
                        source,
                    })?;
                if read == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.trim().is_empty() {
                    continue;
                }
                if let Some(progress) = parse_progress(line) {
                    on_event(Event::Progress(progress));
                } else if line.contains(": ") && !line.starts_with(['>', '<', 'c', '.', '*', 'h']) {
                    parse_stats_line(line, &mut stats);
                } else {
                    on_event(Event::Item(line));
                }
            }
        }
        let status = self.child.wait().map_err(|source| SyncError::Spawn {
            program: "rsync".into(),
            source,
        })?;
        self.waited = true;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        // Writing the list fails only when rsync stopped reading it: its
        // own exit status says why.
        let written = self.writer.take().map(|t| t.join());
        match status.code() {
            Some(0) | Some(VANISHED) => match written {
                Some(Ok(Err(source))) => Err(SyncError::Io {
                    what: "handing rsync its list of files".into(),
                    source,
                }),
                Some(Err(_)) => Err(SyncError::Other("the rsync list writer panicked".into())),
                _ => Ok(stats),
            },
            code => Err(SyncError::Command {
                what: "rsync".into(),
                status: code,
                stderr: tail(&stderr),
            }),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.waited {
            self.stop();
        }
    }
}

fn read_until_any(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut read = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(read);
        }
        match available.iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(i) => {
                buf.extend_from_slice(&available[..=i]);
                reader.consume(i + 1);
                return Ok(read + i + 1);
            }
            None => {
                let n = available.len();
                buf.extend_from_slice(available);
                reader.consume(n);
                read += n;
            }
        }
    }
}

/// The last lines of a command's stderr, for an error message.
pub fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_progress2_lines() {
        let p =
            parse_progress("     12,345,678  45%   12.34MB/s    0:00:10 (xfr#12, to-chk=100/2000)")
                .expect("progress");
        assert_eq!(p.bytes, 12_345_678);
        assert_eq!(p.percent, 45);
        assert_eq!(p.files, 12);
        assert_eq!((p.to_check, p.total_files), (100, 2000));
        assert_eq!(p.rate, 12_340_000);
        assert!(parse_progress(">f+++++++++ cur/1.a.h:2,S").is_none());
        assert!(parse_progress("Number of files: 3 (reg: 2, dir: 1)").is_none());
    }

    #[test]
    fn parses_stats2() {
        let mut s = Stats::default();
        for line in [
            "Number of files: 1,203 (reg: 1,000, dir: 203)",
            "Number of regular files transferred: 1,000",
            "Total transferred file size: 4,096,000 bytes",
            "Total bytes sent: 123",
            "Total bytes received: 4,200,000",
        ] {
            parse_stats_line(line, &mut s);
        }
        assert_eq!(s.files, 1203);
        assert_eq!(s.files_transferred, 1000);
        assert_eq!(s.transferred_file_size, 4_096_000);
        assert_eq!(s.wire_bytes(), 4_200_123);
    }

    #[test]
    fn builds_argv_for_remote_sources() {
        let endpoint = Endpoint {
            host: Some("bob".into()),
            path: "/var/mail".into(),
            ssh_key: Some("/etc/mailctl/id".into()),
            known_hosts: "/var/lib/mailctl/known_hosts".into(),
            host_key: None,
        };
        let argv = argv(
            &endpoint,
            Path::new("/var/mail"),
            &Options {
                delete: true,
                ..Options::default()
            },
        );
        assert_eq!(argv.last().map(String::as_str), Some("/var/mail/"));
        assert!(argv.contains(&"bob:/var/mail/".to_owned()));
        assert!(argv.contains(&"--delete".to_owned()));
        assert!(argv.contains(&"--exclude=dovecot.index*".to_owned()));
        let e = argv.iter().position(|a| a == "-e").expect("-e");
        assert!(argv[e + 1].starts_with("'ssh' '-i' '/etc/mailctl/id' '-o' 'BatchMode=yes'"));
        assert!(argv[e + 1].contains("'StrictHostKeyChecking=accept-new'"));
        // Paths and lists travel in the protocol, not the source's shell.
        assert!(argv.contains(&"-s".to_owned()));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn a_host_that_is_an_option_is_refused_and_a_pin_is_strict() {
        let mut job = SyncJob::new(
            "maildirs",
            SyncSource::Remote {
                host: "-oProxyCommand=reboot".into(),
                path: "/var/mail".into(),
            },
            "/var/mail".into(),
        );
        let refused = Endpoint::of(&job, "/k".into()).expect_err("an option");
        assert!(refused.to_string().contains("starts with '-'"), "{refused}");
        job.source = SyncSource::Remote {
            host: "root@[2001:db8::11]".into(),
            path: "/var/mail".into(),
        };
        job.ssh_host_key = Some(
            HostKey::parse(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK49zgSNkpP/sQTXE03lxHCDBkFtYZibcq8H0TvFlRmt",
            )
            .expect("a key"),
        );
        let endpoint = Endpoint::of(&job, "/k".into()).expect("an endpoint");
        assert_eq!(
            endpoint.ssh_destination().as_deref(),
            Some("root@2001:db8::11")
        );
        assert_eq!(endpoint.rsync_source(), "root@[2001:db8::11]:/var/mail/");
        let ssh = endpoint.ssh_argv();
        assert!(
            ssh.contains(&"StrictHostKeyChecking=yes".to_owned()),
            "{ssh:?}"
        );
        assert!(ssh.contains(&"UserKnownHostsFile=/k".to_owned()), "{ssh:?}");
        // The fingerprint ssh-keygen -l gives for that key.
        assert_eq!(
            endpoint.host_key_status().as_deref(),
            Some("pinned: ssh-ed25519 SHA256:On0U0xNlJJg1htOjjAnEfoT6iCBav6BhHr96U3mmJ+Y")
        );
    }
}
