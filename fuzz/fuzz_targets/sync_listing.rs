//! Fuzz the destination's side of a remote maildir listing
//! (agent/src/sync/source.rs), through the production entry point
//! `Lister::list_remote`: the state files it reads, the answers of the
//! listing script it parses (`answer_text`, then the diff or full listing
//! rebuilt against the cached copy and checked against the source's hash),
//! and the copy it keeps for the next run.
//!
//! The input, split at NUL bytes: the job's token file
//! (`sync-JOB.token`), the cached copy of the last listing
//! (`sync-JOB.source`, `\tHASH` then `path\tmtime\tsize` and `dir/` lines),
//! then the bytes of the script's first answer and of its second (asked for
//! when the first was a diff that did not add up). A missing part is a
//! missing file or an ssh failure.
//!
//! Checked besides "no panic":
//! - what goes into the script's shell is only ever a 32-hex-digit token
//!   and a 64-hex-digit hash (or `none`), whatever the state files say;
//! - after a listing is accepted, the copy kept reads back with its hash:
//!   the next request asks for a diff against exactly the hash the source
//!   said it keeps.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run sync_listing` (see ../README.md).

#![no_main]

mod common;

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use mailctl_agent::sync::SyncError;
use mailctl_agent::sync::rsync::Endpoint;
use mailctl_agent::sync::source::{END, Lister, ListingLimits, answer_text};

use common::{parts, put, scratch};

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The token and the known hash the script's shell gets, checked.
fn check_script(script: &str) -> (String, String) {
    let token = script
        .lines()
        .find_map(|l| l.strip_prefix("f=\"$c/sync-")?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no token line in the script:\n{script}"));
    assert!(is_hex(token, 32), "token {token:?} went into the script");
    let known = script
        .lines()
        .find_map(|l| {
            let rest = l.split_once("= \"")?.1;
            rest.strip_suffix("  -\" ]; then")
        })
        .unwrap_or_else(|| panic!("no hash comparison in the script:\n{script}"));
    assert!(
        known == "none" || is_hex(known, 64),
        "hash {known:?} went into the script"
    );
    (token.to_owned(), known.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let state = scratch("sync_listing");
    let parts = parts(data, 4);
    if let Some(token) = parts.first() {
        put(&state.join("sync-job.token"), token);
    }
    if let Some(cached) = parts.get(1) {
        put(&state.join("sync-job.source"), cached);
    }
    let mut answers = parts.iter().skip(2);
    let endpoint = Endpoint {
        host: Some("source.example".to_owned()),
        path: PathBuf::from("/var/mail/"),
        ssh_key: None,
        known_hosts: state.join("known_hosts"),
        host_key: None,
    };
    let lister = Lister::new(&endpoint, &state, "job", ListingLimits::default());
    let mut last_end = None;
    let result = lister.list_remote(|script| {
        check_script(script);
        let bytes = answers
            .next()
            .ok_or_else(|| SyncError::Other("no more answers".into()))?;
        // What `run_remote` does with ssh's standard output.
        let answer = answer_text(bytes).map_err(|detail| lister.failed(&detail))?;
        last_end = answer
            .lines()
            .filter_map(|l| l.strip_prefix(END))
            .next_back()
            .map(str::to_owned);
        Ok((answer, ()))
    });
    match result {
        Ok((listing, ())) => {
            let _ = listing.listing.message_count();
            // The kept copy must give the next run a diff against the
            // hash the accepted answer ended with.
            let mut next = None;
            let _ = lister.list_remote(|script| {
                next = Some(check_script(script).1);
                Err::<(String, ()), _>(SyncError::Other("stop".into()))
            });
            assert_eq!(
                next, last_end,
                "the copy kept after a listing does not read back with its hash"
            );
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
