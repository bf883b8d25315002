//! Fuzz the mbox spool parser (agent/src/sync/mbox.rs): a spool split into
//! messages (`From ` lines after a blank line that carry a date), flags
//! from `Status`/`X-Status`, dates from the envelope line, `>From `
//! unquoting, and the maildir names a conversion gives the messages.
//!
//! The input is the spool file, as `mbox::convert` reads it (bytes). The
//! target calls what `convert` calls before it touches the disk: `parse`,
//! then `expected` (unique parts, names, mtimes). `convert` itself is not
//! called: it `sync(2)`s the whole machine after every write.
//!
//! Checked besides "no panic":
//! - flags are sorted, unique and Maildir's (`D F R S T`);
//! - every message has its own unique part: `convert` finds messages
//!   already converted by it, and two messages with one part would be one
//!   file;
//! - the maildir names, read back the way the next conversion lists the
//!   maildir (`Listing::from_files`), give every message its own unique
//!   part and path again: otherwise converting the same spool twice would
//!   write or rename messages again, and the conversion would not be
//!   idempotent.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run mbox` (see ../README.md).

#![no_main]

use std::collections::{BTreeMap, HashSet};

use libfuzzer_sys::fuzz_target;
use mailctl_agent::sync::maildir::Listing;
use mailctl_agent::sync::mbox;

fuzz_target!(|data: &[u8]| {
    let messages = mbox::parse(data);
    for message in &messages {
        let flags = message.flags.as_bytes();
        assert!(
            flags.windows(2).all(|w| w[0] < w[1]) && flags.iter().all(|f| b"DFRST".contains(f)),
            "flags {:?} of {:?}",
            message.flags,
            message.envelope
        );
        assert_eq!(message.date, mbox::parse_envelope_date(&message.envelope));
        let _ = message.sub();
    }
    let parts = mbox::unique_parts(&messages);
    assert_eq!(parts.len(), messages.len());
    let distinct: HashSet<&String> = parts.iter().collect();
    assert_eq!(
        distinct.len(),
        parts.len(),
        "two messages share a unique part: {parts:?}"
    );

    let wanted = mbox::expected(&messages, 1_700_000_000);
    assert_eq!(wanted.len(), messages.len());
    let listing = Listing::from_files(wanted.iter().map(|m| (m.rel(), m.mtime, m.size)));
    assert!(
        listing.other_files.is_empty(),
        "names the maildir listing does not take for messages: {:?}",
        listing.other_files
    );
    let found: BTreeMap<&str, String> = listing
        .folders
        .get("")
        .map(|f| {
            f.messages
                .iter()
                .map(|m| (m.key.as_str(), m.rel()))
                .collect()
        })
        .unwrap_or_default();
    for want in &wanted {
        assert_eq!(
            found.get(want.key.as_str()),
            Some(&want.rel()),
            "message {} is not found again under its unique part",
            want.rel()
        );
    }
});
