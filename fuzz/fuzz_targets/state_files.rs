//! Fuzz the agent's state files, read at start-up with the production
//! functions: `StateDir::ledger` (`ledger.json`), `StateDir::load` (a
//! persisted desired generation, validated with the reader that refuses
//! `source:` fields, since persisted states have them inlined) and
//! `SyncRunner::recover` / `SyncRunner::status` (`sync-JOB.json`).
//!
//! The input, split at NUL bytes: `ledger.json`, `desired/0000000001.yaml`,
//! `sync-a.json`, `sync-b.json`. A missing part is a missing file.
//!
//! Checked besides "no panic":
//! - a ledger that reads is written back (`save_ledger`) and reads again
//!   the same;
//! - a generation that loads, rendered the way the agent persists an
//!   accepted state (`render::to_yaml` of its one Host), stored and loaded
//!   again, gives the same host and spec: the agent can always restart
//!   from what it wrote;
//! - after `recover` succeeds, no job that reads says `running`.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run state_files` (see ../README.md).

#![no_main]

mod common;

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mailctl_agent::daemon::desired::StateDir;
use mailctl_agent::sync::{RunState, SyncRunner};
use mailctl_schemas::model::{Host, ManifestSet};
use mailctl_schemas::{Origin, Position, render};

use common::{parts, put, scratch};

const FILES: [&str; 4] = [
    "ledger.json",
    "desired/0000000001.yaml",
    "sync/sync-a.json",
    "sync/sync-b.json",
];

fuzz_target!(|data: &[u8]| {
    let root = scratch("state_files");
    for (part, name) in parts(data, FILES.len()).into_iter().zip(FILES) {
        put(&root.join(name), part);
    }
    let state = StateDir::open(&root).expect("fuzz harness: state folder");

    if let Ok(ledger) = state.ledger() {
        state.save_ledger(&ledger).expect("saving a ledger");
        assert_eq!(
            state.ledger().ok().as_ref(),
            Some(&ledger),
            "the ledger changed"
        );
        // What start-up loads next.
        let _ = state.load(ledger.effective);
        if let Some(pending) = ledger.awaiting_confirmation {
            let _ = state.load(pending.previous);
        }
    }

    if let Ok(desired) = state.load(1) {
        let only = ManifestSet {
            hosts: vec![Host {
                name: desired.host.clone(),
                spec: desired.spec.clone(),
                origin: Origin {
                    file: Arc::from(Path::new("")),
                    position: Position::default(),
                },
            }],
            ..ManifestSet::default()
        };
        let rendered = render::to_yaml(&only);
        state.store(2, &rendered).expect("storing a generation");
        match state.load(2) {
            Ok(again) => {
                assert_eq!(again.host, desired.host, "rendered:\n{rendered}");
                assert_eq!(again.spec, desired.spec, "rendered:\n{rendered}");
            }
            Err(error) => panic!("a stored generation does not load: {error}\n{rendered}"),
        }
    }

    let runner = SyncRunner::new(root.join("sync"));
    let recovered = runner.recover();
    for job in ["a", "b"] {
        let status = runner.status(job);
        if recovered.is_ok()
            && let Ok(Some(status)) = status
        {
            assert_ne!(status.state, RunState::Running, "job {job} still running");
        }
    }
    if let Err(error) = recovered {
        let _ = error.to_string();
    }
});
