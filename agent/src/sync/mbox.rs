//! mbox spool files (`/var/spool/mail/USER`, as on old Postfix hosts)
//! converted into Maildir, idempotently.
//!
//! Every message gets a unique part derived from a SHA-256 of its envelope
//! line and its content (without the headers mail readers rewrite:
//! `Status`, `X-Status`, `X-UID`, `X-Keywords`, `X-IMAP`, `X-IMAPbase`,
//! `Content-Length`), so converting the same spool again finds every message
//! already there: unchanged flags leave it alone, changed flags rename it,
//! and only messages that arrived since are written. Identical copies in one
//! spool are told apart by their occurrence number.
//!
//! Flags: `Status: R` -> `S` (seen), `O` (old) -> the message goes to
//! `cur/` rather than `new/`; `X-Status: A` -> `R` (replied), `F` -> `F`,
//! `D` -> `T` (trashed), `T` -> `D` (draft). The file mtime (the IMAP
//! INTERNALDATE) is the date of the envelope `From ` line, read as UTC (the
//! line carries no zone; a numeric zone after it is honoured).
//!
//! `>From ` quoting is undone the mboxrd way (one `>` less on every
//! `>...>From ` line), which is also right for mboxo's single level. A line
//! starting `From ` splits messages only after an empty line and when it
//! carries a date, so an unquoted `From ` in a body does not.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::maildir::{Listing, Message, Sub, join};
use crate::fsutil::{OpenDir, split};

/// One message of a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    /// The envelope line without `From ` and the line end.
    pub envelope: String,
    /// Seconds since the epoch from the envelope date.
    pub date: Option<i64>,
    /// The message as it goes into the maildir file (unquoted, without the
    /// status headers).
    pub content: Vec<u8>,
    /// Maildir flags, sorted.
    pub flags: String,
    /// Seen by a reader (`Status: O`, or any flag): `cur/`, else `new/`.
    pub old: bool,
}

impl MboxMessage {
    pub fn sub(&self) -> Sub {
        if self.old || !self.flags.is_empty() {
            Sub::Cur
        } else {
            Sub::New
        }
    }
}

const DROPPED_HEADERS: [&str; 7] = [
    "status",
    "x-status",
    "x-uid",
    "x-keywords",
    "x-imap",
    "x-imapbase",
    "content-length",
];

/// Splits a spool into messages.
pub fn parse(spool: &[u8]) -> Vec<MboxMessage> {
    let mut messages = Vec::new();
    let mut current: Option<(String, Vec<&[u8]>)> = None;
    let mut previous_blank = true;
    for line in spool.split_inclusive(|b| *b == b'\n') {
        let body = trim_eol(line);
        if previous_blank && let Some(rest) = body.strip_prefix(b"From ") {
            let envelope = String::from_utf8_lossy(rest).into_owned();
            if current.is_none() || parse_envelope_date(&envelope).is_some() {
                if let Some((envelope, lines)) = current.take() {
                    messages.push(build(envelope, lines));
                }
                current = Some((envelope, Vec::new()));
                previous_blank = false;
                continue;
            }
        }
        previous_blank = body.is_empty();
        if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    if let Some((envelope, lines)) = current.take() {
        messages.push(build(envelope, lines));
    }
    // Pine/UW-IMAP keep folder data in a first pseudo message.
    messages.retain(|m| !is_pseudo_message(&m.content));
    messages
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_pseudo_message(content: &[u8]) -> bool {
    let head = &content[..content.len().min(2048)];
    let head = String::from_utf8_lossy(head);
    head.contains("FOLDER INTERNAL DATA") && head.to_ascii_lowercase().contains("x-imap")
}

fn build(envelope: String, mut lines: Vec<&[u8]>) -> MboxMessage {
    // The empty line before the next `From ` belongs to the mbox format.
    if lines.last().is_some_and(|l| trim_eol(l).is_empty()) {
        lines.pop();
    }
    let mut content = Vec::new();
    let mut in_header = true;
    let mut dropping = false;
    let (mut flags, mut old) = (Vec::new(), false);
    for line in lines {
        let text = trim_eol(line);
        if in_header {
            if text.is_empty() {
                in_header = false;
            } else if text.starts_with(b" ") || text.starts_with(b"\t") {
                if dropping {
                    continue;
                }
            } else {
                let name = text
                    .split(|b| *b == b':')
                    .next()
                    .map(|n| String::from_utf8_lossy(n).trim().to_ascii_lowercase())
                    .unwrap_or_default();
                dropping = DROPPED_HEADERS.contains(&name.as_str());
                if dropping {
                    let value = text.splitn(2, |b| *b == b':').nth(1).unwrap_or_default();
                    if name == "status" {
                        for b in value {
                            match b {
                                b'R' => flags.push('S'),
                                b'O' => old = true,
                                _ => {}
                            }
                        }
                    } else if name == "x-status" {
                        for b in value {
                            match b {
                                b'A' => flags.push('R'),
                                b'F' => flags.push('F'),
                                b'D' => flags.push('T'),
                                b'T' => flags.push('D'),
                                _ => {}
                            }
                        }
                    }
                    continue;
                }
            }
            content.extend_from_slice(line);
        } else {
            content.extend_from_slice(unquote(line));
        }
    }
    flags.sort_unstable();
    flags.dedup();
    MboxMessage {
        date: parse_envelope_date(&envelope),
        envelope,
        content,
        flags: flags.into_iter().collect(),
        old,
    }
}

/// `>From ` -> `From `, `>>From ` -> `>From ` (mboxrd).
fn unquote(line: &[u8]) -> &[u8] {
    let quotes = line.iter().take_while(|b| **b == b'>').count();
    if quotes > 0 && line[quotes..].starts_with(b"From ") {
        &line[1..]
    } else {
        line
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Parses the date of an envelope line (`sender Thu Jan  4 10:11:12 2024`).
pub fn parse_envelope_date(envelope: &str) -> Option<i64> {
    let words: Vec<&str> = envelope.split_whitespace().collect();
    let start = (0..words.len().saturating_sub(1)).find(|&i| {
        DAYS.contains(&words[i]) && MONTHS.contains(&words.get(i + 1).copied().unwrap_or(""))
    })?;
    let month = MONTHS.iter().position(|m| *m == words[start + 1])? as i64 + 1;
    let day: i64 = words.get(start + 2)?.parse().ok()?;
    let mut time = words.get(start + 3)?.split(':');
    let hour: i64 = time.next()?.parse().ok()?;
    let minute: i64 = time.next()?.parse().ok()?;
    let second: i64 = time.next().map_or(Some(0), |s| s.parse().ok())?;
    let mut year = None;
    let mut offset = 0;
    for word in words.iter().skip(start + 4).take(3) {
        if word.len() == 4 && word.bytes().all(|b| b.is_ascii_digit()) {
            year = word.parse::<i64>().ok();
        } else if word.len() == 5 && (word.starts_with('+') || word.starts_with('-')) {
            let n: i64 = word[1..].parse().ok()?;
            let minutes = n / 100 * 60 + n % 100;
            offset = if word.starts_with('-') {
                -minutes
            } else {
                minutes
            } * 60;
        }
    }
    let year = year?;
    // Each field in range (60: a leap second), so the sum below cannot overflow.
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The unique part of every message of a spool, in order.
pub fn unique_parts(messages: &[MboxMessage]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    messages
        .iter()
        .map(|m| {
            let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
            hasher.update(m.envelope.as_bytes());
            hasher.update(b"\n");
            hasher.update(&m.content);
            let digest = hasher.finish();
            let hex: String = digest.as_ref()[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let n = seen.entry(hex.clone()).or_default();
            *n += 1;
            format!("{}.M{hex}_{}.mbox", m.date.unwrap_or(0), *n - 1)
        })
        .collect()
}

/// The maildir names a spool converts to, as a listing of one folder (`""`).
pub fn expected(messages: &[MboxMessage], fallback_mtime: i64) -> Vec<Message> {
    unique_parts(messages)
        .into_iter()
        .zip(messages)
        .map(|(key, m)| {
            let sub = m.sub();
            let name = match sub {
                Sub::New => key.clone(),
                Sub::Cur => format!("{key}:2,{}", m.flags),
            };
            Message {
                sub,
                name,
                mtime: m.date.unwrap_or(fallback_mtime),
                size: m.content.len() as u64,
                key,
            }
        })
        .collect()
}

/// What one conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converted {
    pub messages: usize,
    pub written: usize,
    pub renamed: usize,
    pub unchanged: usize,
    pub bytes: u64,
}

/// Converts one spool file into the maildir `maildir` (created when
/// missing). Messages already converted are not written again.
///
/// The maildir is usually its user's: everything in it is created and
/// renamed relative to its open directories, never followed through a
/// link (see `fsutil`). A message is written to `tmp/KEY` created
/// `O_EXCL | O_NOFOLLOW`; a name already there (a crash's leftover, or a
/// link planted by someone who computed the key) is removed, not written
/// through.
pub fn convert(spool: &Path, maildir: &Path) -> io::Result<Converted> {
    let (text, spool_mtime) = read_spool(spool)?;
    let messages = parse(&text);
    let wanted = expected(&messages, spool_mtime);
    let (parent, name) = split(maildir)?;
    fs::create_dir_all(parent).map_err(|e| at(e, parent))?;
    let root = OpenDir::open_as_named(parent)?.create_subfolder(name)?;
    let cur = root.create_subfolder("cur")?;
    let new = root.create_subfolder("new")?;
    let tmp = root.create_subfolder("tmp")?;
    let sub_dir = |sub: Sub| match sub {
        Sub::Cur => &cur,
        Sub::New => &new,
    };
    let listing = Listing::read_local(maildir)?;
    let existing: BTreeMap<&str, &Message> = listing
        .folders
        .get("")
        .map(|f| f.messages.iter().map(|m| (m.key.as_str(), m)).collect())
        .unwrap_or_default();
    let mut done = Converted {
        messages: messages.len(),
        ..Converted::default()
    };
    for (message, want) in messages.iter().zip(&wanted) {
        let target = OsStr::new(&want.name);
        match existing.get(want.key.as_str()) {
            Some(have) if have.rel() == want.rel() => done.unchanged += 1,
            Some(have) => {
                let from = maildir.join(have.rel());
                sub_dir(have.sub)
                    .rename(OsStr::new(&have.name), sub_dir(want.sub), target)
                    .map_err(|e| at(e, &from))?;
                done.renamed += 1;
            }
            None => {
                let key = OsStr::new(&want.key);
                let tmp_path = maildir.join(join("tmp", &want.key));
                let mut file = match tmp.create_new(key, 0o666) {
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                        tmp.remove_file(key).map_err(|e| at(e, &tmp_path))?;
                        tmp.create_new(key, 0o666)
                    }
                    created => created,
                }
                .map_err(|e| at(e, &tmp_path))?;
                file.write_all(&message.content)
                    .map_err(|e| at(e, &tmp_path))?;
                let mtime = UNIX_EPOCH + Duration::from_secs(want.mtime.max(0) as u64);
                file.set_modified(mtime).map_err(|e| at(e, &tmp_path))?;
                drop(file);
                tmp.rename(key, sub_dir(want.sub), target)
                    .map_err(|e| at(e, &tmp_path))?;
                done.written += 1;
                done.bytes += message.content.len() as u64;
            }
        }
    }
    if done.written > 0 || done.renamed > 0 {
        nix::unistd::sync();
    }
    Ok(done)
}

/// The content and mtime of a spool file, which must be a regular file
/// (a link in its place is not followed: root would convert whatever it
/// points to into a user's maildir).
pub fn read_spool(spool: &Path) -> io::Result<(Vec<u8>, i64)> {
    let (folder, name) = split(spool)?;
    let mut file = OpenDir::open_as_named(folder)?
        .open_file(name)
        .map_err(|e| at(e, spool))?;
    let meta = file.metadata().map_err(|e| at(e, spool))?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", spool.display()),
        ));
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(|e| at(e, spool))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok((text, mtime))
}

fn at(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Spool files in a directory (or the one file given): every regular file
/// not a lock or dot file, with the user name it belongs to.
pub fn spools(source: &Path) -> io::Result<Vec<(String, std::path::PathBuf)>> {
    let meta = fs::metadata(source).map_err(|e| at(e, source))?;
    let mut out = Vec::new();
    if meta.is_file() {
        let user = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((user, source.to_owned()));
        return Ok(out);
    }
    for entry in fs::read_dir(source).map_err(|e| at(e, source))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".lock") {
            continue;
        }
        if entry.file_type()?.is_file() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    i64::try_from(crate::fsutil::unix_now()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPOOL: &str = "From alice@example.org Thu Jan  4 10:11:12 2024\n\
Status: RO\n\
X-Status: AF\n\
Subject: one\n\
\n\
hello\n\
>From the start\n\
>>From quoted twice\n\
\n\
From bob@example.org Fri Feb 29 23:59:59 2024\n\
Subject: two\n\
Content-Length: 4\n\
\n\
From here, unquoted (mboxo) but no blank line before\n\
\n\
From not a separator line\n\
end\n\
\n\
From carol@example.org Mon Jan  1 00:00:00 2001 +0100\n\
Status: O\n\
X-Status: D\n\
Subject: three\n\
\n\
bye\n";

    #[test]
    fn parses_messages_flags_dates_and_quoting() {
        let messages = parse(SPOOL.as_bytes());
        assert_eq!(messages.len(), 3);
        let one = &messages[0];
        assert_eq!(one.flags, "FRS");
        assert_eq!(one.sub(), Sub::Cur);
        assert_eq!(one.date, Some(1_704_363_072));
        let text = String::from_utf8_lossy(&one.content);
        assert!(text.starts_with("Subject: one\n\nhello\nFrom the start\n>From quoted twice\n"));
        assert!(!text.contains("Status"));
        assert!(text.ends_with("twice\n"), "{text:?}");
        let two = &messages[1];
        assert_eq!((two.flags.as_str(), two.sub()), ("", Sub::New));
        assert_eq!(two.date, Some(1_709_251_199));
        let text = String::from_utf8_lossy(&two.content);
        assert!(text.contains("From not a separator line\nend\n"));
        assert!(!text.contains("Content-Length"));
        let three = &messages[2];
        assert_eq!((three.flags.as_str(), three.sub()), ("T", Sub::Cur));
        assert_eq!(three.date, Some(978_307_200 - 3600));
    }

    /// An envelope time out of range is no date (it overflowed the sum of
    /// seconds: a panic while parsing a spool).
    #[test]
    fn envelope_times_out_of_range_are_no_date() {
        for envelope in [
            "a@b Thu Jan  4 10:11:9223372036854775807 2024",
            "a@b Thu Jan  4 10:11:-9223372036854775808 2024",
            "a@b Thu Jan  4 10:11:61 2024",
            "a@b Thu Jan  4 -1:11:12 2024",
            "a@b Thu Jan  4 10:-1:12 2024",
        ] {
            assert_eq!(parse_envelope_date(envelope), None, "{envelope}");
        }
        assert_eq!(
            parse_envelope_date("a@b Sat Dec 31 23:59:60 2016"),
            Some(1_483_228_800)
        );
        let spool = b"From a@b Thu Jan  4 10:11:9223372036854775807 2024\n\nx\n";
        assert_eq!(parse(spool)[0].date, None);
    }

    #[test]
    fn unique_parts_ignore_status_and_count_copies() {
        let a = parse(b"From a@b Thu Jan  4 10:11:12 2024\nStatus: O\n\nx\n\nFrom a@b Thu Jan  4 10:11:12 2024\n\nx\n");
        let keys = unique_parts(&a);
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[0].replace("_0.", "_1."), keys[1]);
        let b = parse(b"From a@b Thu Jan  4 10:11:12 2024\nStatus: RO\n\nx\n");
        assert_eq!(unique_parts(&b)[0], keys[0]);
    }

    #[test]
    fn convert_is_idempotent_and_follows_flag_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("alice");
        fs::write(&spool, SPOOL).expect("write");
        let maildir = dir.path().join("out/alice");
        let first = convert(&spool, &maildir).expect("convert");
        assert_eq!((first.messages, first.written), (3, 3));
        let again = convert(&spool, &maildir).expect("convert");
        assert_eq!((again.written, again.unchanged), (0, 3));
        fs::write(
            &spool,
            SPOOL.replace("Subject: two", "Status: RO\nSubject: two"),
        )
        .expect("write");
        let changed = convert(&spool, &maildir).expect("convert");
        assert_eq!(
            (changed.written, changed.renamed, changed.unchanged),
            (0, 1, 2)
        );
        let listing = Listing::read_local(&maildir).expect("list");
        assert_eq!(listing.message_count(), 3);
        let m = listing.folders[""]
            .messages
            .iter()
            .find(|m| m.mtime == 1_709_251_199)
            .expect("message two");
        assert!(m.name.ends_with(":2,S"), "{}", m.name);
    }
}
