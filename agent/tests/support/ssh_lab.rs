//! Two network namespaces joined by a veth pair, with a test sshd in the
//! source one: the lab of the sync tests (`tests/sync.rs`,
//! `tests/sync_postfix.rs`) and of the sync benchmark (`benches/sync.rs`,
//! which includes this file by path). Everything is removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// The veth ends: `SOURCE_DEV` in the source namespace, `DEST_DEV` in the
/// destination one.
pub const SOURCE_DEV: &str = "vsrc";
pub const DEST_DEV: &str = "vdst";

pub struct SshLab {
    pub source_ns: String,
    pub dest_ns: String,
    /// The source's address (`NET.1`; the destination is `NET.2`).
    pub source_addr: String,
    /// The key root logs in with on the source.
    pub client_key: PathBuf,
    /// sshd's host key (`.pub` beside it): what a job pins.
    pub host_key: PathBuf,
    /// A file the login shell on the source reads first (`BASH_ENV`; absent
    /// unless a test writes it): a test makes the source hang with it.
    pub login_script: PathBuf,
    sshd_log: PathBuf,
    sshd: Option<Child>,
}

fn run(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e} (is it installed?)", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl SshLab {
    /// Makes namespaces `source_ns` and `dest_ns` joined on `net`.0/24 (a
    /// /24 prefix such as `10.79.3`) and starts sshd on the source. Keys,
    /// config and log go to `dir`; the ssh user's XDG cache (where the
    /// sync runner keeps its listings on the source) to `dir/cache`.
    pub fn start(source_ns: &str, dest_ns: &str, net: &str, dir: &Path) -> Result<SshLab, String> {
        let mut lab = SshLab {
            source_ns: source_ns.to_owned(),
            dest_ns: dest_ns.to_owned(),
            source_addr: format!("{net}.1"),
            client_key: dir.join("client_key"),
            host_key: dir.join("host_key"),
            login_script: dir.join("login.sh"),
            sshd_log: dir.join("sshd.log"),
            sshd: None,
        };
        let (s, d) = (source_ns, dest_ns);
        run(&["ip", "netns", "add", s])?;
        run(&["ip", "netns", "add", d])?;
        run(&[
            "ip", "link", "add", SOURCE_DEV, "netns", s, "type", "veth", "peer", "name", DEST_DEV,
            "netns", d,
        ])?;
        for (ns, dev, host) in [(s, SOURCE_DEV, 1), (d, DEST_DEV, 2)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            let addr = format!("{net}.{host}/24");
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev])?;
        }
        for key in [&lab.host_key, &lab.client_key] {
            let path = key.to_str().ok_or("the lab directory is not UTF-8")?;
            run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path])?;
        }
        let authorized = dir.join("authorized_keys");
        fs::copy(lab.client_key.with_extension("pub"), &authorized)
            .map_err(|e| format!("authorized_keys: {e}"))?;
        fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress {}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {}\nSetEnv XDG_CACHE_HOME={} BASH_ENV={}\n",
                lab.source_addr,
                lab.host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display(),
                dir.join("cache").display(),
                lab.login_script.display(),
            ),
        )
        .map_err(|e| format!("sshd_config: {e}"))?;
        let log = fs::File::create(&lab.sshd_log).map_err(|e| format!("sshd.log: {e}"))?;
        lab.sshd = Some(
            Command::new("ip")
                .args(["netns", "exec", s, "/usr/sbin/sshd", "-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting sshd (apt-get install openssh-server): {e}"))?,
        );
        Ok(lab)
    }

    /// Moves the calling thread (and what it starts: the runner's rsync
    /// and ssh) into the destination namespace, and waits until sshd and
    /// every other `(port, what)` listens on the source.
    pub fn enter_destination(&self, others: &[(u16, &str)]) -> Result<(), String> {
        let netns = fs::File::open(format!("/run/netns/{}", self.dest_ns))
            .map_err(|e| format!("open netns {}: {e}", self.dest_ns))?;
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {}: {e}", self.dest_ns))?;
        for (port, what) in [(22, "sshd")].iter().chain(others) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect((self.source_addr.as_str(), *port)).is_err() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{what} did not come up on {}:{port}; sshd.log:\n{}",
                        self.source_addr,
                        self.sshd_log()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    pub fn sshd_log(&self) -> String {
        fs::read_to_string(&self.sshd_log).unwrap_or_default()
    }
}

impl Drop for SshLab {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        for ns in [&self.source_ns, &self.dest_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
