//! The controller's one clock. Waits and timeouts use tokio's; timestamps
//! (history, gate runs, "unreachable since") are the wall-clock time at
//! start-up plus tokio's elapsed time, so the whole state machine, soak
//! times included, runs under a paused clock in tests, and a resumed soak
//! counts the time already spent.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

fn base() -> (u64, Instant) {
    static BASE: OnceLock<(u64, Instant)> = OnceLock::new();
    *BASE.get_or_init(|| {
        #[allow(
            clippy::disallowed_methods,
            reason = "the one reading of the wall clock"
        )]
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (unix, Instant::now())
    })
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    let (unix, at) = base();
    unix + Instant::now().saturating_duration_since(at).as_secs()
}

/// `02:14:03` (UTC) of a timestamp.
pub fn time_of_day(unix: u64) -> String {
    let seconds = unix % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}
