//! Listing the source of a maildir job, cheaply on repeated runs.
//!
//! A local source is walked. A remote one (`HOST:PATH`, no agent there) is
//! listed with `find` over ssh, and only the *difference* to the previous
//! listing travels: the source keeps the names of its last listing in the
//! ssh user's cache (`~/.cache/mailctl/sync-TOKEN.names`, TOKEN random per
//! job and destination), the destination keeps that listing with mtimes and
//! sizes in its state directory, and `comm` on the source prints the names
//! gone and the new ones, which alone get a `stat`. A maildir of 100,000
//! messages with 5 % of its flags changed and 1 % new mail sends some 11,000
//! lines instead of 100,000, and stats 6,000 files instead of 100,000.
//!
//! Both copies are checked: the destination sends the SHA-256 of the names
//! it holds, and the source answers with a diff only when its copy has that
//! hash, else with the whole listing. The source ends its answer with the
//! hash of the names it keeps now, which the destination must reproduce
//! from what it received, or it asks again for the whole listing.
//!
//! A listing is bounded ([`ListingLimits`]): a source that does not answer
//! within the deadline (a hung disk, a stuck mount) or answers with more
//! than the limits allow is stopped, ssh and all, and the run fails with an
//! error that says which limit, so the job's lock is never held for ever.
//! Names from the source are data everywhere in the script: they reach a
//! command's arguments only after `--`. The listing is one name a line, so
//! a name holding a newline is refused with an error naming it.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

use ring::digest;

use super::maildir::Listing;
use super::rsync::{Endpoint, shell_quote, tail};
use super::{SyncError, io_error, write_atomically, write_scratch};

/// The listing of a source, and how many bytes of listing crossed the wire.
#[derive(Debug, Clone, Default)]
pub struct SourceListing {
    pub listing: Listing,
    pub bytes: u64,
}

/// How long a remote listing may take and how big its answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingLimits {
    /// From starting ssh (or the rsync that carries the listing) to the
    /// end of the answer.
    pub deadline: Duration,
    pub max_bytes: usize,
    pub max_lines: usize,
}

impl Default for ListingLimits {
    /// 30 minutes, 1 GiB, 10 million lines: a listing line is some 60 to
    /// 100 bytes, so a source of several million messages fits; a cold
    /// first listing of that size takes minutes, not half an hour.
    fn default() -> Self {
        ListingLimits {
            deadline: Duration::from_secs(30 * 60),
            max_bytes: 1 << 30,
            max_lines: 10_000_000,
        }
    }
}

impl ListingLimits {
    /// The error for a listing of `what` (`HOST:PATH`) past the deadline.
    pub fn overdue(&self, what: &str) -> SyncError {
        SyncError::Other(format!(
            "listing of {what} did not finish within {} s: stopped (is a disk or a mount on the source hanging?); the next run tries again",
            self.deadline.as_secs()
        ))
    }

    /// The error for a listing of `what` longer than the limits.
    pub fn too_long(&self, what: &str) -> SyncError {
        SyncError::Other(format!(
            "listing of {what} is longer than the limit of {} bytes or {} lines: stopped; split the job into smaller sources",
            self.max_bytes, self.max_lines
        ))
    }
}

/// What a listing has used of its limits so far.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limits: ListingLimits,
    bytes: usize,
    lines: usize,
}

impl Budget {
    pub fn new(limits: ListingLimits) -> Budget {
        Budget {
            limits,
            bytes: 0,
            lines: 0,
        }
    }

    /// Counts `chunk`; false once the listing is past its limits.
    pub fn take(&mut self, chunk: &[u8]) -> bool {
        self.bytes += chunk.len();
        self.lines += chunk.iter().filter(|&&b| b == b'\n').count();
        self.bytes <= self.limits.max_bytes && self.lines <= self.limits.max_lines
    }
}

/// Lists the source of one job.
#[derive(Debug, Clone)]
pub struct Lister<'a> {
    endpoint: &'a Endpoint,
    limits: ListingLimits,
    /// The destination's copy of the last remote listing.
    cache: PathBuf,
    /// The random name of this job's listing on the source.
    token_file: PathBuf,
}

const FULL: &str = "/mailctl full";
const DIFF: &str = "/mailctl diff";
/// The start of the last line of the source's answer.
pub const END: &str = "/mailctl end ";

/// One remote listing to ask for.
#[derive(Debug, Clone)]
struct Request {
    token: String,
    cached: Option<Cached>,
    /// The hash of the names the source is asked to diff against; `None`
    /// asks for the whole listing.
    known: Option<String>,
}

impl Request {
    /// Asks for the whole listing from now on; false when it already did
    /// (a whole listing that does not add up is an error, not a retry).
    fn widen(&mut self) -> bool {
        self.known.take().is_some()
    }
}

/// The destination's copy of the last listing: a first line `\tHASH` (the
/// SHA-256 of its names, as the source computed it; no listing line starts
/// with a tab), then `path\tmtime\tsize` and `dir/` lines.
#[derive(Debug, Clone)]
struct Cached {
    hash: String,
    lines: String,
}

impl Cached {
    fn parse(text: String) -> Cached {
        // The hash goes into the source's shell: only ever 64 hex digits.
        if let Some(rest) = text.strip_prefix('\t')
            && let Some((hash, lines)) = rest.split_once('\n')
            && hash.len() == 64
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Cached {
                hash: hash.to_owned(),
                lines: lines.to_owned(),
            };
        }
        // A copy from before the hash was kept, or a spoiled first line.
        let lines = match text.strip_prefix('\t') {
            Some(rest) => rest.split_once('\n').map_or("", |(_, l)| l).to_owned(),
            None => text,
        };
        Cached {
            hash: names_hash(&lines),
            lines,
        }
    }
}

/// The source's answer as text, from its first line on (what ssh or the
/// login shell wrote before it is left out); an error when a name in it is
/// not UTF-8.
pub fn answer_text(bytes: &[u8]) -> Result<String, String> {
    let starts = |at: usize| {
        let rest = &bytes[at..];
        [FULL, DIFF].iter().any(|m| {
            rest.starts_with(m.as_bytes()) && rest.get(m.len()).is_none_or(|b| *b == b'\n')
        })
    };
    let from = (0..bytes.len())
        .filter(|&i| i == 0 || bytes[i - 1] == b'\n')
        .find(|&i| starts(i));
    match from {
        Some(from) => String::from_utf8(bytes[from..].to_vec())
            .map_err(|_| "a file name is not UTF-8".to_owned()),
        None => Err(format!(
            "no answer from the listing script: {}",
            tail(bytes)
        )),
    }
}

impl<'a> Lister<'a> {
    pub fn new(
        endpoint: &'a Endpoint,
        state_dir: &Path,
        job: &str,
        limits: ListingLimits,
    ) -> Lister<'a> {
        Lister {
            endpoint,
            limits,
            cache: state_dir.join(format!("sync-{job}.source")),
            token_file: state_dir.join(format!("sync-{job}.token")),
        }
    }

    pub fn is_remote(&self) -> bool {
        self.endpoint.host.is_some()
    }

    pub fn limits(&self) -> &ListingLimits {
        &self.limits
    }

    /// `HOST:PATH`, as errors name the listing.
    pub fn what(&self) -> String {
        format!(
            "{}:{}",
            self.endpoint.host.as_deref().unwrap_or("localhost"),
            self.endpoint.path.display()
        )
    }

    /// Lists the source: a local one by walking it, a remote one over ssh.
    pub fn list(&self) -> Result<SourceListing, SyncError> {
        if !self.is_remote() {
            return Ok(SourceListing {
                listing: Listing::read_local(&self.endpoint.path).map_err(io_error(format!(
                    "listing {}",
                    self.endpoint.path.display()
                )))?,
                bytes: 0,
            });
        }
        self.list_remote(|script| Ok((self.run_remote(script)?, ())))
            .map(|(listing, ())| listing)
    }

    /// Lists a remote source with `fetch`, which runs the script it is
    /// given on the source and returns the answer (and whatever it started
    /// on the way, such as the rsync that carried it), until an answer adds
    /// up: a diff that does not is asked for again as a whole listing, and
    /// what came with it is dropped.
    pub fn list_remote<T>(
        &self,
        mut fetch: impl FnMut(&str) -> Result<(String, T), SyncError>,
    ) -> Result<(SourceListing, T), SyncError> {
        let mut request = self.request()?;
        let mut refused = 0;
        loop {
            let (answer, fetched) = fetch(&self.script(&request))?;
            match self.accept(&request, &answer) {
                Ok(mut listing) => {
                    listing.bytes += refused;
                    return Ok((listing, fetched));
                }
                Err(_) if request.widen() => refused += answer.len() as u64,
                Err(detail) => return Err(self.failed(&detail)),
            }
        }
    }

    /// What the next remote listing asks for: a diff against the copy of
    /// the last listing this side holds, if it has one.
    fn request(&self) -> Result<Request, SyncError> {
        let token = self.token()?;
        // A missing or unreadable copy only means a whole listing.
        let cached = fs::read_to_string(&self.cache).ok().map(Cached::parse);
        let known = cached.as_ref().map(|c| c.hash.clone());
        Ok(Request {
            token,
            cached,
            known,
        })
    }

    /// The sh script that answers `request` on the source (its output
    /// ends with a line starting [`END`]).
    fn script(&self, request: &Request) -> String {
        remote_script(
            &self.endpoint.path,
            &request.token,
            request.known.as_deref().unwrap_or("none"),
        )
    }

    /// The listing from the source's `answer` (anything before its first
    /// line, such as ssh's warnings, is skipped), kept for the next run;
    /// an error when the answer is cut short or does not add up.
    fn accept(&self, request: &Request, answer: &str) -> Result<SourceListing, String> {
        let cached = request.cached.as_ref().map(|c| c.lines.as_str());
        let (text, hash) = rebuild(answer, cached)?;
        let mut kept = String::with_capacity(text.len() + 80);
        kept.push('\t');
        kept.push_str(&hash);
        kept.push('\n');
        kept.push_str(&text);
        write_scratch(&self.cache, kept.as_bytes()).map_err(|e| e.to_string())?;
        Ok(SourceListing {
            listing: Listing::from_find_lines(text.lines()),
            bytes: answer.len() as u64,
        })
    }

    /// The error for a listing that failed for good.
    pub fn failed(&self, detail: &str) -> SyncError {
        SyncError::Other(format!("listing {} over ssh: {detail}", self.what()))
    }

    /// Runs `script` on the source over ssh (`--` before the host) and
    /// returns its answer; ssh is killed when the listing deadline passes
    /// or the answer grows past the limits.
    fn run_remote(&self, script: &str) -> Result<String, SyncError> {
        let what = self.what();
        let argv = self.endpoint.ssh_argv();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--")
            .arg(self.endpoint.ssh_destination().unwrap_or_default())
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SyncError::Spawn {
                program: "ssh".into(),
                source,
            })?;
        let started = Instant::now();
        // Both streams are read on threads of their own; this one keeps
        // the child, so it alone kills and reaps it.
        let (sender, streams) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let sender = sender.clone();
            let limits = self.limits;
            std::thread::spawn(move || {
                let _ = sender.send(Stream::Out(read_within(stdout, limits)));
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let limits = ListingLimits {
                max_bytes: 1 << 20,
                max_lines: 100_000,
                ..self.limits
            };
            std::thread::spawn(move || {
                let _ = sender.send(Stream::Err(read_within(stderr, limits).unwrap_or_default()));
            });
        }
        let (mut stdout, mut stderr) = (None, None);
        while stdout.is_none() || stderr.is_none() {
            let left = self.limits.deadline.saturating_sub(started.elapsed());
            let stop = |child: &mut std::process::Child, error: SyncError| {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            };
            match streams.recv_timeout(left) {
                Ok(Stream::Out(Some(bytes))) => stdout = Some(bytes),
                Ok(Stream::Out(None)) => return stop(&mut child, self.limits.too_long(&what)),
                Ok(Stream::Err(bytes)) => stderr = Some(bytes),
                Err(_) => return stop(&mut child, self.limits.overdue(&what)),
            }
        }
        let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
        let status = child.wait().map_err(|source| SyncError::Spawn {
            program: "ssh".into(),
            source,
        })?;
        if !status.success() {
            return Err(SyncError::Command {
                what: format!("listing {what} over ssh"),
                status: status.code(),
                stderr: tail(&stderr),
            });
        }
        answer_text(&stdout).map_err(|detail| self.failed(&detail))
    }

    /// This job's random token, made on first use.
    fn token(&self) -> Result<String, SyncError> {
        match fs::read_to_string(&self.token_file) {
            Ok(token) if is_token(token.trim()) => return Ok(token.trim().to_owned()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(SyncError::Io {
                    what: format!("reading {}", self.token_file.display()),
                    source: error,
                });
            }
        }
        let mut random = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| SyncError::Other("no randomness for the listing token".into()))?;
        let token = hex(&random);
        write_atomically(&self.token_file, format!("{token}\n").as_bytes())?;
        Ok(token)
    }
}

/// One of ssh's streams, read to its end.
enum Stream {
    /// `None`: longer than the limits.
    Out(Option<Vec<u8>>),
    Err(Vec<u8>),
}

/// Reads `stream` to its end; `None` as soon as it is past `limits`.
fn read_within(mut stream: impl Read, limits: ListingLimits) -> Option<Vec<u8>> {
    let mut budget = Budget::new(limits);
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(bytes),
            Ok(n) => {
                if !budget.take(&chunk[..n]) {
                    return None;
                }
                bytes.extend_from_slice(&chunk[..n]);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(bytes),
        }
    }
}

fn is_token(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

/// The POSIX sh script the source runs. It lists the names of files and
/// directories (`path/`) without a `stat` each, sorted bytewise. When its
/// copy of the names has the hash `known`, it answers with the names gone
/// (`-path`) and the new ones described (`+path\tmtime\tsize`, `+dir/`):
/// a message keeps its mtime for life, so only new names need a `stat`,
/// and on a big maildir that `stat` of every file is most of the time a
/// listing takes. Otherwise it describes everything. The names it keeps
/// for next time are those it described, so a file that vanished between
/// `find` and `stat` is simply not there. Names go to `stat` as `./NAME`
/// after `--`: a top-level `--printf=X` or `-rf` is a file, not an option,
/// and `-` is not standard input. `-ignore_readdir_race`: a message
/// renamed while `find` runs is no error; the next listing has its new name.
fn remote_script(path: &Path, token: &str, known: &str) -> String {
    let p = shell_quote(&path.display().to_string());
    format!(
        r#"set -e
umask 077
c="${{XDG_CACHE_HOME:-$HOME/.cache}}/mailctl"
f="$c/sync-{token}"
t="$f.$$"
mkdir -p "$c"
trap 'rm -f "$t".*' EXIT
export LC_ALL=C
describe() {{
  grep '/$' "$1" || true
  grep -v '/$' "$1" | sed 's|^|./|' | tr '\n' '\0' | (cd {p} && xargs -0 -r stat --printf '%n\t%Y\t%s\n' -- 2>/dev/null) | sed 's|^\./||' || true
}}
nl='
'
if [ -e {p} ]; then
  find {p} -ignore_readdir_race -mindepth 1 \( -path "*$nl*" -fprintf "$t.bad" '%P\0' \) -o \( -type d -printf '%P/\n' \) -o \( -type f -printf '%P\n' \) > "$t.raw"
  if [ -s "$t.bad" ]; then
    printf 'mailctl: a name under %s holds a newline (shown as ?), and a listing is one name a line: %s; rename it on the source\n' {p} "$(tr '\n\0' '?\n' < "$t.bad" | head -n 1)" >&2
    exit 3
  fi
else
  : > "$t.raw"
fi
sort -o "$t.names" "$t.raw"
if [ -f "$f.names" ] && [ "$(sha256sum < "$f.names")" = "{known}  -" ]; then
  echo '{DIFF}'
  comm -23 "$f.names" "$t.names" > "$t.gone"
  comm -13 "$f.names" "$t.names" > "$t.added"
  describe "$t.added" > "$t.desc"
  sed 's/^/-/' "$t.gone"
  sed 's/^/+/' "$t.desc"
  comm -23 "$f.names" "$t.gone" > "$t.kept"
else
  echo '{FULL}'
  describe "$t.names" > "$t.desc"
  cat "$t.desc"
  : > "$t.kept"
fi
cut -f1 "$t.desc" | sort > "$t.dn"
sort -m -o "$t.final" "$t.dn" "$t.kept"
h=$(sha256sum < "$t.final")
echo
echo "{END}${{h%% *}}"
mv -f "$t.final" "$f.names"
"#
    )
}

/// The names (paths; `dir/` for directories) of a listing's lines, one a
/// line, sorted bytewise: what the source keeps and hashes.
fn names_text(lines: &[&str]) -> String {
    let mut names: Vec<&str> = lines
        .iter()
        .map(|line| line.split('\t').next().unwrap_or(line))
        .collect();
    names.sort_unstable();
    let mut text = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// The new listing text from the source's answer and the copy the
/// destination holds; an error when the answer is cut short or its names
/// do not hash to what the source says it keeps.
fn rebuild(answer: &str, cached: Option<&str>) -> Result<(String, String), String> {
    let mut lines = answer.lines().skip_while(|l| *l != FULL && *l != DIFF);
    let mode = lines.next().ok_or("no answer from the listing script")?;
    // The end marker follows an empty line: it starts a line even after
    // output that did not end with a newline.
    let body: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let (end, body) = body.split_last().ok_or("answer cut short")?;
    let hash = end.strip_prefix(END).ok_or("answer cut short")?;
    let mut new: Vec<&str> = match mode {
        FULL => {
            // `dir/` or `path\tmtime\tsize`: anything else is an error a
            // command of the script wrote, and the best clue there is.
            if let Some(odd) = body
                .iter()
                .find(|l| !l.ends_with('/') && l.split('\t').count() != 3)
            {
                return Err(format!("unexpected line {odd:?}"));
            }
            body.to_vec()
        }
        DIFF => {
            let cached = cached.ok_or("a diff against no listing")?;
            let mut gone = HashSet::new();
            let mut added = Vec::new();
            for line in body {
                if let Some(name) = line.strip_prefix('-') {
                    gone.insert(name);
                } else if let Some(described) = line.strip_prefix('+') {
                    added.push(described);
                } else {
                    return Err(format!("unexpected line {line:?}"));
                }
            }
            let mut new: Vec<&str> = cached
                .lines()
                .filter(|l| !gone.contains(l.split('\t').next().unwrap_or(l)))
                .collect();
            new.extend(added);
            new
        }
        other => return Err(format!("unexpected answer {other:?}")),
    };
    new.retain(|line| !line.is_empty());
    new.sort_unstable();
    if sha256_hex(&names_text(&new)) != hash {
        return Err("the listing does not add up to the source's".into());
    }
    let mut text = String::with_capacity(new.iter().map(|l| l.len() + 1).sum());
    for line in new {
        text.push_str(line);
        text.push('\n');
    }
    Ok((text, hash.to_owned()))
}

/// The hash the source's copy of the names has, if the destination's
/// cached listing is that copy.
fn names_hash(cached: &str) -> String {
    sha256_hex(&names_text(&cached.lines().collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(mode: &str, body: &[&str], new_lines: &[&str]) -> String {
        let mut text = format!("{mode}\n");
        for line in body {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!("{END}{}\n", sha256_hex(&names_text(new_lines))));
        text
    }

    #[test]
    fn a_diff_applies_to_the_cached_listing() {
        let old = "cur/1:2,\t1\t5\ncur/2:2,\t2\t5\nnew/\n";
        let new = ["cur/1:2,S\t1\t5", "cur/2:2,\t2\t5", "new/", "new/3\t3\t5"];
        let reply = answer(
            DIFF,
            &["-cur/1:2,", "+cur/1:2,S\t1\t5", "+new/3\t3\t5"],
            &new,
        );
        let (text, hash) = rebuild(&reply, Some(old)).expect("rebuilt");
        assert_eq!(text, "cur/1:2,S\t1\t5\ncur/2:2,\t2\t5\nnew/\nnew/3\t3\t5\n");
        assert_eq!(hash, names_hash(&text));
        // Noise before the answer (ssh's warnings on the same stream) is skipped.
        let noisy =
            format!("Warning: Permanently added 'eve' to the list of known hosts.\n{reply}");
        assert_eq!(rebuild(&noisy, Some(old)).map(|(t, _)| t), Ok(text));
        assert_eq!(names_hash(old), sha256_hex("cur/1:2,\ncur/2:2,\nnew/\n"));
        // A diff that does not fit the copy is refused, never guessed.
        assert!(rebuild(&reply, Some("cur/9\t1\t1\n")).is_err());
        assert!(rebuild(&reply, None).is_err());
        assert!(rebuild(&answer(DIFF, &["cur/x"], &[]), Some(old)).is_err());
    }

    #[test]
    fn a_full_answer_must_hash_right_and_be_complete() {
        let reply = answer(FULL, &["cur/1:2,S\t1\t5"], &["cur/1:2,S\t1\t5"]);
        assert_eq!(
            rebuild(&reply, None).map(|(t, _)| t).as_deref(),
            Ok("cur/1:2,S\t1\t5\n")
        );
        let cut = reply.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(rebuild(&cut, None).is_err());
        assert!(rebuild(&answer(FULL, &[], &[]), None).is_ok_and(|(t, _)| t.is_empty()));
    }

    #[test]
    fn the_cached_copy_keeps_its_hash() {
        let lines = "cur/1:2,S\t1\t5\nnew/\n";
        let stored = Cached::parse(format!("\t{}\n{lines}", names_hash(lines)));
        assert_eq!(
            (stored.hash.as_str(), stored.lines.as_str()),
            (names_hash(lines).as_str(), lines)
        );
        // A copy from before the hash was kept: computed.
        let old = Cached::parse(lines.to_owned());
        assert_eq!((old.hash, old.lines.as_str()), (names_hash(lines), lines));
    }

    #[test]
    fn the_answer_starts_at_its_first_line_and_odd_lines_are_errors() {
        let reply = answer(FULL, &["cur/1:2,S\t1\t5"], &["cur/1:2,S\t1\t5"]);
        // A Latin-1 banner before the answer is no file name.
        let mut noisy = b"Willkommen auf \xe9ve\n".to_vec();
        noisy.extend_from_slice(reply.as_bytes());
        assert_eq!(answer_text(&noisy).as_deref(), Ok(reply.as_str()));
        let failed = answer_text(b"mkdir: cannot create directory: Not a directory\n");
        assert!(failed.is_err_and(|e| e.contains("Not a directory")));
        // An error a command wrote into the listing is shown, not hashed away.
        let spoiled = answer(
            FULL,
            &[
                "cur/1:2,S\t1\t5",
                "grep: write error: No space left on device",
            ],
            &["cur/1:2,S\t1\t5"],
        );
        let refused = rebuild(&spoiled, None).expect_err("an odd line");
        assert!(refused.contains("No space left"), "{refused}");
    }

    #[test]
    fn a_spoiled_hash_line_is_not_trusted() {
        let lines = "cur/1:2,S\t1\t5\n";
        let spoiled = Cached::parse(format!("\t$(reboot)\n{lines}"));
        assert_eq!(
            (spoiled.hash, spoiled.lines.as_str()),
            (names_hash(lines), lines)
        );
    }

    #[test]
    fn the_script_quotes_the_path() {
        let script = remote_script(Path::new("/var/mail/it's"), "ab", "none");
        assert!(script.contains(r"'/var/mail/it'\''s'"), "{script}");
    }
}
