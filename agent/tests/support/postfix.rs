//! Postfix for the tests that run real mail (`tests/services.rs`,
//! `tests/sync_postfix.rs`).

use std::path::Path;
use std::process::{Command, Stdio};

/// Installs Postfix on the host when missing, preseeded to "No
/// configuration": the package's own instance stays unconfigured and
/// stopped; the tests run private instances with `postfix -c DIR`. `why`
/// says what needs it, for the failure message.
pub fn require_postfix(why: &str) {
    if Path::new("/usr/sbin/postfix").exists() {
        return;
    }
    let mut preseed = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run debconf-set-selections (Debian host?)");
    std::io::Write::write_all(
        preseed.stdin.as_mut().expect("stdin"),
        b"postfix postfix/main_mailer_type select No configuration\n",
    )
    .expect("preseed postfix");
    assert!(preseed.wait().expect("debconf-set-selections").success());
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get")
    };
    apt(&["update", "-qq"]);
    let status = apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=600",
        "postfix",
    ]);
    assert!(
        status.success() && Path::new("/usr/sbin/postfix").exists(),
        "Postfix is needed {why} and `apt-get install postfix` failed ({status})"
    );
}
