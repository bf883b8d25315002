//! What a sync job hands to ssh: the source host and its pinned host key.
//!
//! Both end up on ssh's and rsync's command lines or in a known_hosts
//! file, so they are held to what those read as data: a host that starts
//! with `-` would be an option, a key with a newline a second known_hosts
//! line.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why `host` (the `HOST` of `HOST:/path`) is no host for ssh, if it is
/// not: `NAME`, an IPv4 literal or a bracketed IPv6 literal (`[2001:db8::1]`),
/// each optionally after `user@`.
pub fn host_problem(host: &str) -> Option<String> {
    if host.starts_with('-') {
        return Some(format!(
            "\"{host}\" starts with '-': ssh and rsync would read it as an option, not a host"
        ));
    }
    let (user, name) = match host.rsplit_once('@') {
        Some((user, name)) => (Some(user), name),
        None => (None, host),
    };
    if let Some(user) = user {
        let fine = !user.is_empty()
            && !user.starts_with('-')
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !fine {
            return Some(format!(
                "\"{user}\" is not a user name (letters, digits, '.', '_', '-', not starting with '-')"
            ));
        }
    }
    if let Some(inner) = name.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => None,
            _ => Some(format!("\"{name}\" is not a bracketed IPv6 address")),
        };
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        None
    } else if name.contains(':') {
        Some(format!(
            "\"{name}\" is not a host name; write an IPv6 address in brackets, like [2001:db8::1]:/path"
        ))
    } else {
        Some(format!(
            "\"{name}\" is not a host name (letters, digits, '-' and '_' in dot-separated labels, none starting or ending with '-')"
        ))
    }
}

/// `HOST:/path` split into host and path, when `source` names a remote
/// host at all (a bracketed IPv6 host keeps its brackets); `None` for a
/// local path.
pub fn split_remote(source: &str) -> Option<(&str, &str)> {
    if source.starts_with('/') {
        return None;
    }
    // Brackets count only in the host part (`[v6]:` or `user@[v6]:`), not
    // in the path (`bob:/mail/[archive]`).
    let first_colon = source.find(':')?;
    if source[..first_colon].contains('[')
        && let Some(end) = source.find("]:")
    {
        return Some((&source[..=end], &source[end + 2..]));
    }
    source.split_once(':')
}

/// The host as ssh takes it: `user@2001:db8::1`, without brackets.
pub fn ssh_destination(host: &str) -> String {
    let (user, name) = match host.rsplit_once('@') {
        Some((user, name)) => (Some(user), name),
        None => (None, host),
    };
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match user {
        Some(user) => format!("{user}@{name}"),
        None => name.to_owned(),
    }
}

/// The host name as a known_hosts line names it: no user, no brackets.
pub fn known_hosts_name(host: &str) -> &str {
    let name = host.rsplit_once('@').map_or(host, |(_, name)| name);
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

/// Key types OpenSSH offers as host keys.
const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A pinned host key: `ssh-ed25519 AAAA...` as in a `.pub` file or
/// `ssh-keyscan`'s output (a trailing comment is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    algorithm: String,
    base64: String,
    blob: Vec<u8>,
}

impl HostKey {
    /// Reads `TYPE BASE64 [COMMENT]`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<HostKey, String> {
        let mut words = text.split_whitespace();
        let (Some(algorithm), Some(base64)) = (words.next(), words.next()) else {
            return Err(
                "a host key is \"TYPE BASE64\", like the line of /etc/ssh/ssh_host_ed25519_key.pub"
                    .into(),
            );
        };
        if !KEY_TYPES.contains(&algorithm) {
            return Err(format!(
                "\"{algorithm}\" is not an ssh host key type ({})",
                KEY_TYPES.join(", ")
            ));
        }
        let blob = decode_base64(base64)
            .ok_or_else(|| format!("the key after \"{algorithm}\" is not base64"))?;
        // The key blob starts with its own type: a length, then the name.
        let named = blob
            .get(..4)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .and_then(|n| blob.get(4..4 + n));
        if named != Some(algorithm.as_bytes()) {
            return Err(format!("the key is not an {algorithm} key"));
        }
        Ok(HostKey {
            algorithm: algorithm.to_owned(),
            base64: base64.to_owned(),
            blob,
        })
    }

    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The key in ssh's wire format, whose SHA-256 is its fingerprint.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }
}

impl fmt::Display for HostKey {
    /// `TYPE BASE64`, as a known_hosts line ends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.base64)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with `=` padding; `None` for anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let mut acc = 0u32;
    for (i, &b) in bytes[..bytes.len() - padding].iter().enumerate() {
        let value = ALPHABET.iter().position(|&a| a == b)? as u32;
        acc = (acc << 6) | value;
        if i % 4 == 3 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
        }
    }
    match padding {
        1 => out.extend_from_slice(&(acc << 6).to_be_bytes()[1..3]),
        2 => out.push((acc << 12).to_be_bytes()[1]),
        _ => {}
    }
    Some(out)
}

/// Standard base64 without padding, as ssh prints fingerprints.
pub fn encode_base64_unpadded(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ssh_reads_as_hosts() {
        for good in [
            "bob",
            "bob.example.org",
            "root@192.0.2.11",
            "vmail_1@mail-2.example.org",
            "[2001:db8::1]",
            "root@[2001:db8::1]",
        ] {
            assert_eq!(host_problem(good), None, "{good}");
        }
        for bad in [
            "-oProxyCommand=reboot",
            "root@-oProxyCommand=x",
            "-l@bob",
            "bob..org",
            "bob-",
            "[::1",
            "[bob]",
            "2001:db8::1",
            "bo b",
            "",
            "@bob",
        ] {
            assert!(host_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(
            split_remote("root@[2001:db8::1]:/var/mail"),
            Some(("root@[2001:db8::1]", "/var/mail"))
        );
        assert_eq!(split_remote("bob:/var/mail"), Some(("bob", "/var/mail")));
        assert_eq!(split_remote("bob:/[]"), Some(("bob", "/[]")));
        assert_eq!(split_remote("bob:/a]:b"), Some(("bob", "/a]:b")));
        assert_eq!(split_remote("/var/mail"), None);
        assert_eq!(ssh_destination("root@[2001:db8::1]"), "root@2001:db8::1");
        assert_eq!(known_hosts_name("root@[2001:db8::1]"), "2001:db8::1");
        assert_eq!(known_hosts_name("root@bob"), "bob");
    }

    #[test]
    fn host_keys_are_checked_and_base64_roundtrips() {
        // The public half of an ed25519 key made with ssh-keygen.
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK49zgSNkpP/sQTXE03lxHCDBkFtYZibcq8H0TvFlRmt eve";
        let key = HostKey::parse(line).expect("a key");
        assert_eq!(key.algorithm(), "ssh-ed25519");
        assert_eq!(key.blob().len(), 51);
        assert_eq!(key.to_string(), line.trim_end_matches(" eve"));
        assert!(
            HostKey::parse(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIK49zgSNkpP/sQTXE03lxHCDBkFtYZibcq8H0TvFlRmt"
            )
            .is_err()
        );
        assert!(HostKey::parse("ssh-ed25519 AAAA%%%%").is_err());
        assert!(HostKey::parse("ssh-ed25519").is_err());
        assert!(HostKey::parse("ssh-dss AAAA").is_err());
        for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            let mut padded = encode_base64_unpadded(bytes);
            while !padded.len().is_multiple_of(4) {
                padded.push('=');
            }
            if !bytes.is_empty() {
                assert_eq!(decode_base64(&padded).as_deref(), Some(bytes));
            }
        }
        assert_eq!(encode_base64_unpadded(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_base64_unpadded(b"fo"), "Zm8");
    }
}
