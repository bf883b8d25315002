//! Benchmarks of the agent, each next to the reference tool doing the same
//! work in the same run (LAB.md "Benchmarks"; results in BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench agent                      # all three
//! cargo bench --bench agent -- converge|drift|idle
//! ```
//!
//! - `converge`: `mailctl apply --local` of 1,000 addresses + 500 firewall
//!   rules from scratch, against `ip -batch` + `nft -f` making the same end
//!   state, each in a fresh network namespace; both end states are checked.
//! - `drift`: the running agent repairs a deleted address, 100 trials; timed
//!   from the deletion (sent on a netlink socket of this program) to the
//!   kernel's RTM_NEWADDR event of the re-added address (read on another
//!   netlink socket of this program, in the same namespace). Reference: the
//!   same deletion repaired by `ip addr add` started at once, and by a bare
//!   RTM_NEWADDR request (the floor).
//! - `idle`: the agent with 100 resources for 60 s, RSS and CPU from /proc,
//!   next to an idle `ip monitor address` measured the same way.
//!
//! Needs root (network namespaces, nftables). Every namespace and process it
//! creates is removed on the way out, also when a benchmark fails.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark measures real elapsed time, against the reference tool in the same run"
)]

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

const MAILCTL: &str = env!("CARGO_BIN_EXE_mailctl");

fn main() -> ExitCode {
    // cargo passes `--bench`; the rest are benchmark names.
    let names: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = ["converge", "drift", "idle"];
    if let Some(unknown) = names.iter().find(|n| !all.contains(&n.as_str())) {
        eprintln!(
            "unknown benchmark {unknown:?}; pick from: {}",
            all.join(", ")
        );
        return ExitCode::from(2);
    }
    if let Err(e) = preflight() {
        eprintln!("benches/agent: {e:#}");
        return ExitCode::FAILURE;
    }
    println!("mailctl binary: {MAILCTL}");
    println!("{}", machine());
    let mut failed = false;
    for name in all {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        println!("\n=== {name} ===");
        let result = match name {
            "converge" => converge::run(),
            "drift" => drift::run(),
            _ => idle::run(),
        };
        if let Err(e) = result {
            eprintln!("benchmark {name} failed: {e:#}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn preflight() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    ensure!(
        euid == "0",
        "these benchmarks create network namespaces and nftables tables and need root (effective uid is {euid}); run `cargo bench --bench agent` as root"
    );
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("curl", "curl"),
        ("start-stop-daemon", "dpkg"),
    ] {
        let found = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        ensure!(
            found,
            "`{program}` is missing: apt-get install -y {package}"
        );
    }
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {cpus} CPUs, kernel {}, load average {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("spawning {program}"))?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        text(&out).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh network namespace with `lo` and an `eth0` (one end of a veth
/// pair whose other end, `eth0p`, stays inside too), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        let name = format!("mctlb-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])?;
        ns.ip(&["link", "set", "eth0p", "up"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `PROGRAM ARGS` inside the namespace (`ip netns exec` execs it: the
    /// child's PID is the program's).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// The IPv4 addresses on eth0, as `a.b.c.d/len`.
    fn ipv4_addresses(&self) -> Result<BTreeSet<String>> {
        let json: Value =
            serde_json::from_str(&self.ip(&["-4", "-j", "addr", "show", "dev", "eth0"])?)
                .context("ip -j addr")?;
        Ok(json[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        format!(
                            "{}/{}",
                            i["local"].as_str().unwrap_or_default(),
                            i["prefixlen"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn ifindex(&self, name: &str) -> Result<u32> {
        let json: Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show", name])?).context("ip -j link")?;
        json[0]["ifindex"]
            .as_u64()
            .map(|i| i as u32)
            .context("no ifindex")
    }

    /// `nft list table inet mailctl` (text, no handles) and its rule count.
    fn table(&self) -> Result<(String, usize)> {
        let out = self
            .command("nft", &["list", "table", "inet", "mailctl"])
            .output()?;
        ensure!(out.status.success(), "nft list table: {}", text(&out));
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let out = self
            .command("nft", &["-j", "list", "table", "inet", "mailctl"])
            .output()?;
        ensure!(out.status.success(), "nft -j list table: {}", text(&out));
        let json: Value = serde_json::from_slice(&out.stdout)?;
        let rules = json["nftables"].as_array().map_or(0, |items| {
            items.iter().filter(|i| i.get("rule").is_some()).count()
        });
        Ok((listing, rules))
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process killed and reaped on drop.
struct Process {
    child: Child,
    what: &'static str,
}

impl Process {
    fn spawn(mut command: Command, what: &'static str, log: &Path) -> Result<Process> {
        let log = fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {what}"))?;
        Ok(Process { child, what })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log:\n{}",
                self.what,
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes started with start-stop-daemon from pid files, stopped on drop.
struct PidFiles(Vec<PathBuf>);

impl Drop for PidFiles {
    fn drop(&mut self) {
        for pidfile in &self.0 {
            if pidfile.exists() {
                let _ = Command::new("start-stop-daemon")
                    .args([
                        "--stop",
                        "--quiet",
                        "--retry",
                        "5",
                        "--remove-pidfile",
                        "--pidfile",
                    ])
                    .arg(pidfile)
                    .status();
            }
        }
    }
}

/// Poll `condition` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> Result<bool>) -> Result<bool> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// An agent in a namespace: TLS material from `mailctl certs init`, its
/// config, the desired-state file and its log.
struct Agent {
    dir: PathBuf,
    port: u16,
}

impl Agent {
    fn setup(dir: &Path, desired: &str, resync_seconds: u64) -> Result<Agent> {
        let out = Command::new(MAILCTL)
            .args(["certs", "init", "--out"])
            .arg(dir.join("tls"))
            .args(["--agent", "eve=127.0.0.1"])
            .output()?;
        ensure!(out.status.success(), "mailctl certs init: {}", text(&out));
        fs::create_dir_all(dir.join("desired"))?;
        fs::write(dir.join("desired/host.yaml"), desired)?;
        let port = 7443;
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndesired_state = \"{}\"\nstate_dir = \"{}\"\nresync_seconds = {resync_seconds}\nconfirm_timeout_seconds = 0\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("desired").display(),
            dir.join("state").display(),
            dir.join("tls/agent-eve/ca.pem").display(),
            dir.join("tls/agent-eve/agent.pem").display(),
            dir.join("tls/agent-eve/agent.key").display(),
        );
        fs::write(dir.join("agent.toml"), config)?;
        Ok(Agent {
            dir: dir.to_path_buf(),
            port,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn start(&self, ns: &Netns) -> Result<Process> {
        let config = self.dir.join("agent.toml");
        let config = config.to_str().context("utf-8 path")?;
        Process::spawn(
            ns.command(MAILCTL, &["agent", "--config", config]),
            "mailctl agent",
            &self.log_path(),
        )
    }

    /// `GET /v1/status` with the controller's certificate, as tests/host.rs does.
    fn status(&self, ns: &Netns) -> Result<Option<Value>> {
        let url = format!("https://eve:{}/v1/status", self.port);
        let resolve = format!("eve:{}:127.0.0.1", self.port);
        let d = |name: &str| {
            self.dir
                .join("tls/controller")
                .join(name)
                .display()
                .to_string()
        };
        let out = ns
            .command(
                "curl",
                &[
                    "-sS",
                    "--fail-with-body",
                    "--max-time",
                    "5",
                    "--resolve",
                    &resolve,
                    "--cacert",
                    &d("ca.pem"),
                    "--cert",
                    &d("controller.pem"),
                    "--key",
                    &d("controller.key"),
                    &url,
                ],
            )
            .output()?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&out.stdout).ok())
    }

    /// Waits until the agent reports every resource ready; returns the status.
    fn wait_ready(&self, ns: &Netns, process: &mut Process, expected: usize) -> Result<Value> {
        let mut last = None;
        let ready = wait_for(Duration::from_secs(120), || {
            process.ensure_running(&self.log_path())?;
            last = self.status(ns)?;
            Ok(last.as_ref().is_some_and(|s| {
                let resources = s["resources"].as_object();
                resources.is_some_and(|r| {
                    r.len() == expected && r.values().all(|v| v["condition"]["state"] == "ready")
                })
            }))
        })?;
        ensure!(
            ready,
            "the agent did not report {expected} ready resources; last status: {}\nlog:\n{}",
            last.map(|s| s.to_string()).unwrap_or_default(),
            fs::read_to_string(self.log_path()).unwrap_or_default()
        );
        last.context("status")
    }
}

mod converge {
    //! 1,000 addresses + 500 firewall rules from scratch.

    use super::*;

    const ADDRESSES: usize = 1000;
    const RULES: usize = 500;
    const REPETITIONS: usize = 5;

    fn address(i: usize) -> String {
        format!("10.200.{}.{}/16", i / 250, i % 250 + 1)
    }

    fn source(i: usize) -> String {
        format!("10.{}.{}.0/24", 201 + i / 256, i % 256)
    }

    fn port(i: usize) -> usize {
        10000 + i
    }

    fn manifest() -> String {
        let mut m = String::from(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: bench}\nspec:\n  addresses:\n",
        );
        for i in 0..ADDRESSES {
            m.push_str(&format!(
                "    - {{address: {}, interface: eth0}}\n",
                address(i)
            ));
        }
        m.push_str("  firewall:\n    policy: accept\n    rules:\n");
        for i in 0..RULES {
            m.push_str(&format!(
                "      - {{name: r{i}, protocol: tcp, ports: [{}], sources: [{}], action: accept}}\n",
                port(i),
                source(i)
            ));
        }
        m
    }

    /// The reference: `ip -batch` for the addresses, and one `nft -f`
    /// transaction that (re)creates the table, as mailctl's does.
    fn reference_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let mut batch = String::new();
        for i in 0..ADDRESSES {
            batch.push_str(&format!("address add {} dev eth0\n", address(i)));
        }
        let mut nft = String::from(
            "add table inet mailctl\ndelete table inet mailctl\ntable inet mailctl {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n",
        );
        for i in 0..RULES {
            nft.push_str(&format!(
                "\t\tip saddr {} tcp dport {} accept comment \"r{i}\"\n",
                source(i),
                port(i)
            ));
        }
        nft.push_str("\t}\n}\n");
        let (b, n) = (dir.join("addresses.batch"), dir.join("table.nft"));
        fs::write(&b, batch)?;
        fs::write(&n, nft)?;
        Ok((b, n))
    }

    struct EndState {
        addresses: usize,
        rules: usize,
        listing: String,
    }

    fn check(ns: &Netns, who: &str) -> Result<EndState> {
        let expected: BTreeSet<String> = (0..ADDRESSES).map(address).collect();
        let found = ns.ipv4_addresses()?;
        ensure!(
            found == expected,
            "{who}: eth0 has {} IPv4 addresses, {} of the declared ones",
            found.len(),
            found.intersection(&expected).count()
        );
        let (listing, rules) = ns.table()?;
        ensure!(
            rules == RULES,
            "{who}: table inet mailctl has {rules} rules, not {RULES}"
        );
        Ok(EndState {
            addresses: found.len(),
            rules,
            listing,
        })
    }

    fn run_mailctl(ns: &Netns, manifest: &Path, state: &Path) -> Result<(Duration, usize)> {
        let mut command = ns.command(
            MAILCTL,
            &[
                "apply",
                "--local",
                "-f",
                manifest.to_str().context("utf-8")?,
                "--state-dir",
                state.to_str().context("utf-8")?,
            ],
        );
        let start = Instant::now();
        let out = command.output()?;
        let took = start.elapsed();
        let output = text(&out);
        ensure!(
            out.status.success() && output.contains("verified:"),
            "mailctl apply --local failed: {}",
            output.chars().take(4000).collect::<String>()
        );
        let announced = output
            .lines()
            .filter(|l| l.contains("(gratuitous ARP)"))
            .count();
        Ok((took, announced))
    }

    fn run_reference(ns: &Netns, batch: &Path, nft: &Path) -> Result<Duration> {
        let script = format!("ip -batch {} && nft -f {}", batch.display(), nft.display());
        let mut command = ns.command("sh", &["-c", &script]);
        let start = Instant::now();
        let out = command.output()?;
        let took = start.elapsed();
        ensure!(out.status.success(), "reference failed: {}", text(&out));
        Ok(took)
    }

    pub fn run() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let manifest = d.join("host.yaml");
        fs::write(&manifest, manifest_text())?;
        let (batch, nft) = reference_files(d)?;
        println!(
            "{ADDRESSES} IPv4 addresses (10.200.0.0/16 on eth0, a veth) + {RULES} rules (tcp dport, one source /24 each) in table inet mailctl, policy accept"
        );
        println!(
            "mailctl:   ip netns exec NS {MAILCTL} apply --local -f host.yaml --state-dir DIR"
        );
        println!(
            "reference: ip netns exec NS sh -c 'ip -batch addresses.batch && nft -f table.nft'"
        );
        println!(
            "each run in its own fresh namespace; 1 warm-up + {REPETITIONS} timed repetitions, order alternating"
        );

        let mut mailctl = Vec::new();
        let mut reference = Vec::new();
        for rep in 0..=REPETITIONS {
            let ns_m = Netns::new(&format!("cm{rep}"))?;
            let ns_r = Netns::new(&format!("cr{rep}"))?;
            let state = d.join(format!("state-{rep}"));
            let (m, r, announced) = if rep % 2 == 0 {
                let (m, announced) = run_mailctl(&ns_m, &manifest, &state)?;
                let r = run_reference(&ns_r, &batch, &nft)?;
                (m, r, announced)
            } else {
                let r = run_reference(&ns_r, &batch, &nft)?;
                let (m, announced) = run_mailctl(&ns_m, &manifest, &state)?;
                (m, r, announced)
            };
            let end_m = check(&ns_m, "mailctl")?;
            let end_r = check(&ns_r, "reference")?;
            ensure!(
                end_m.listing == end_r.listing,
                "the two tables differ:\n--- mailctl\n{}\n--- reference\n{}",
                end_m
                    .listing
                    .lines()
                    .take(12)
                    .collect::<Vec<_>>()
                    .join("\n"),
                end_r
                    .listing
                    .lines()
                    .take(12)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            ensure!(
                announced == ADDRESSES,
                "mailctl announced {announced} of {ADDRESSES} addresses"
            );
            let label = if rep == 0 {
                "warm-up".to_owned()
            } else {
                format!("run {rep}")
            };
            println!(
                "{label:>8}: mailctl {:8.1} ms   reference {:8.1} ms   ratio {:.2}   (end states: {} addresses, {} rules each; identical tables; mailctl sent {announced} gratuitous ARPs)",
                ms(m),
                ms(r),
                m.as_secs_f64() / r.as_secs_f64(),
                end_m.addresses,
                end_m.rules,
            );
            if rep > 0 {
                mailctl.push(m);
                reference.push(r);
            }
        }
        mailctl.sort();
        reference.sort();
        let (m_med, r_med) = (quantile(&mailctl, 0.5), quantile(&reference, 0.5));
        let (m_min, r_min) = (mailctl[0], reference[0]);
        println!();
        println!("| | median | min |");
        println!("|---|---|---|");
        println!(
            "| mailctl apply --local | {:.1} ms | {:.1} ms |",
            ms(m_med),
            ms(m_min)
        );
        println!(
            "| ip -batch + nft -f | {:.1} ms | {:.1} ms |",
            ms(r_med),
            ms(r_min)
        );
        let ratio = m_med.as_secs_f64() / r_med.as_secs_f64();
        println!(
            "| ratio | {ratio:.2}x | {:.2}x |",
            m_min.as_secs_f64() / r_min.as_secs_f64()
        );
        println!(
            "target: within 2x (median) -> {}",
            if ratio <= 2.0 { "met" } else { "NOT met" }
        );
        println!(
            "note: mailctl also sends one gratuitous ARP per new IPv4 address ({ADDRESSES}) and verifies by observing again; the reference does neither"
        );
        Ok(())
    }

    fn manifest_text() -> String {
        manifest()
    }
}

mod netlink {
    //! Just enough rtnetlink to delete and add an IPv4 address and to read
    //! address events, on sockets of this program.

    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use nix::errno::Errno;
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
        setsockopt, socket, sockopt,
    };
    use nix::sys::time::TimeVal;

    pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_DELADDR: u16 = 21;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_EXCL: u16 = 0x200;
    const NLM_F_CREATE: u16 = 0x400;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const AF_INET: u8 = 2;

    /// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
    pub struct Socket {
        fd: OwnedFd,
        seq: u32,
        buf: Vec<u8>,
    }

    impl Socket {
        pub fn open(groups: u32) -> Result<Socket> {
            let fd = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkRoute,
            )
            .context("netlink socket")?;
            bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).context("netlink bind")?;
            setsockopt(&fd, sockopt::RcvBuf, &(1 << 20)).context("SO_RCVBUF")?;
            setsockopt(
                &fd,
                sockopt::ReceiveTimeout,
                &TimeVal::new(0, 50_000), // 50 ms: lets the caller's deadline apply
            )
            .context("SO_RCVTIMEO")?;
            Ok(Socket {
                fd,
                seq: 0,
                buf: vec![0; 1 << 16],
            })
        }

        /// Sends an address request without waiting for its answer.
        pub fn send_address(
            &mut self,
            kind: u16,
            index: u32,
            ip: Ipv4Addr,
            prefix: u8,
        ) -> Result<()> {
            self.seq += 1;
            let flags = NLM_F_REQUEST
                | NLM_F_ACK
                | if kind == RTM_NEWADDR {
                    NLM_F_CREATE | NLM_F_EXCL
                } else {
                    0
                };
            let mut msg = Vec::with_capacity(40);
            msg.extend_from_slice(&40u32.to_ne_bytes());
            msg.extend_from_slice(&kind.to_ne_bytes());
            msg.extend_from_slice(&flags.to_ne_bytes());
            msg.extend_from_slice(&self.seq.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            // ifaddrmsg: family, prefix length, flags, scope (universe), index
            msg.extend_from_slice(&[AF_INET, prefix, 0, 0]);
            msg.extend_from_slice(&index.to_ne_bytes());
            for attr in [IFA_LOCAL, IFA_ADDRESS] {
                msg.extend_from_slice(&8u16.to_ne_bytes());
                msg.extend_from_slice(&attr.to_ne_bytes());
                msg.extend_from_slice(&ip.octets());
            }
            send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).context("netlink send")?;
            Ok(())
        }

        /// Waits for the acknowledgement of the last request.
        pub fn ack(&mut self) -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let seq = self.seq;
                let mut answer = None;
                self.receive(|kind, header_seq, payload| {
                    if kind == NLMSG_ERROR && header_seq == seq && payload.len() >= 4 {
                        answer = Some(i32::from_ne_bytes([
                            payload[0], payload[1], payload[2], payload[3],
                        ]));
                    }
                })?;
                match answer {
                    Some(0) => return Ok(()),
                    Some(code) => bail!("netlink request failed: {}", Errno::from_raw(-code)),
                    None => {}
                }
            }
            bail!("no netlink acknowledgement within 2 s")
        }

        /// Waits until an event of `kind` for `ip` arrives; returns when it was read.
        pub fn wait_event(
            &mut self,
            kind: u16,
            ip: Ipv4Addr,
            limit: Duration,
        ) -> Result<Option<Instant>> {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                let mut seen = false;
                self.receive(|k, _, payload| {
                    if k == kind && ipv4_local(payload) == Some(ip) {
                        seen = true;
                    }
                })?;
                if seen {
                    return Ok(Some(Instant::now()));
                }
            }
            Ok(None)
        }

        /// Throws away whatever is queued.
        pub fn drain(&mut self) -> Result<()> {
            loop {
                match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) | Err(Errno::ENOBUFS) => {}
                    Err(Errno::EAGAIN) => return Ok(()),
                    Err(e) => return Err(e).context("netlink recv"),
                }
            }
        }

        /// Reads one datagram (or times out after 50 ms) and hands each
        /// message to `each(type, seq, payload)`.
        fn receive(&mut self, mut each: impl FnMut(u16, u32, &[u8])) -> Result<()> {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(()),
                Err(Errno::ENOBUFS) => bail!("netlink events were lost (ENOBUFS)"),
                Err(e) => return Err(e).context("netlink recv"),
            };
            let mut rest = &self.buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < 16 || len > rest.len() {
                    break;
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                each(kind, seq, &rest[16..len]);
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
            Ok(())
        }
    }

    /// IFA_LOCAL of an IPv4 ifaddrmsg.
    fn ipv4_local(payload: &[u8]) -> Option<Ipv4Addr> {
        if payload.len() < 8 || payload[0] != AF_INET {
            return None;
        }
        let mut attrs = &payload[8..];
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
            if len < 4 || len > attrs.len() {
                return None;
            }
            if kind == IFA_LOCAL && len == 8 {
                return Some(Ipv4Addr::new(attrs[4], attrs[5], attrs[6], attrs[7]));
            }
            attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
        }
        None
    }
}

mod drift {
    //! Drift repair of a deleted address, 100 trials.

    use super::netlink::{RTM_DELADDR, RTM_NEWADDR, RTMGRP_IPV4_IFADDR, Socket};
    use super::*;
    use nix::sched::{CloneFlags, setns};

    const TRIALS: usize = 100;
    const MANAGED: u8 = 5;
    /// Time for the agent to finish verifying (and the reconcile its own
    /// re-add triggers) before the next trial.
    const PAUSE: Duration = Duration::from_millis(200);

    fn ip(k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 210, 0, k)
    }

    /// Sockets in one namespace: one for requests, one subscribed to IPv4
    /// address events.
    struct Side {
        requests: Socket,
        events: Socket,
        index: u32,
    }

    impl Side {
        fn open(ns: &Netns) -> Result<Side> {
            let file = fs::File::open(ns.path())?;
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(Side {
                requests: Socket::open(0)?,
                events: Socket::open(RTMGRP_IPV4_IFADDR)?,
                index: ns.ifindex("eth0")?,
            })
        }

        /// Deletes `addr` and returns the instant just before the request
        /// went out (the kernel deletes it and sends the event inside that
        /// send call).
        fn delete(&mut self, addr: Ipv4Addr) -> Result<Instant> {
            self.events.drain()?;
            let start = Instant::now();
            self.requests
                .send_address(RTM_DELADDR, self.index, addr, 32)?;
            self.requests.ack()?;
            Ok(start)
        }

        fn back(&mut self, addr: Ipv4Addr, start: Instant) -> Result<Option<Duration>> {
            Ok(self
                .events
                .wait_event(RTM_NEWADDR, addr, Duration::from_secs(2))?
                .map(|at| at - start))
        }
    }

    fn summary(name: &str, samples: &mut [Duration], missed: usize) -> (Duration, Duration) {
        samples.sort();
        let p = |q| ms(quantile(samples, q));
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {missed} |",
            samples.len(),
            ms(samples[0]),
            p(0.5),
            p(0.9),
            p(0.99),
            ms(samples[samples.len() - 1]),
        );
        (quantile(samples, 0.5), quantile(samples, 0.99))
    }

    pub fn run() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let mut desired = String::from(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  addresses:\n",
        );
        for k in 1..=MANAGED {
            desired.push_str(&format!(
                "    - {{address: {}/32, interface: eth0}}\n",
                ip(k)
            ));
        }
        let ns = Netns::new("drift")?;
        let reference_ns = Netns::new("drift-ref")?;
        for k in 1..=MANAGED {
            reference_ns.ip(&["addr", "add", &format!("{}/32", ip(k)), "dev", "eth0"])?;
        }
        let agent = Agent::setup(d, &desired, 3600)?;
        let mut process = agent.start(&ns)?;
        let status = agent.wait_ready(&ns, &mut process, 1)?;
        let found = ns.ipv4_addresses()?;
        ensure!(
            found.len() == usize::from(MANAGED),
            "agent converged to {found:?}"
        );
        println!(
            "agent: {} addresses /32 on eth0, resync every 3600 s (so only the netlink monitor can trigger a repair); status: addresses {}",
            MANAGED, status["resources"]["addresses"]["condition"]["state"]
        );
        println!(
            "method: this program deletes the address with RTM_DELADDR on its own netlink socket in the agent's namespace and times from just before that send to the moment it reads the RTM_NEWADDR event of the same address on a second socket (RTMGRP_IPV4_IFADDR) in that namespace; {PAUSE:?} pause between trials"
        );
        println!(
            "references (in another namespace, interleaved with the agent trials): `ip addr add` spawned right after the deletion's ack; a bare RTM_NEWADDR sent by this program right after the ack (the kernel floor)"
        );

        let run_trials = || -> Result<[(Vec<Duration>, usize); 3]> {
            // This thread enters both namespaces; sockets stay in the one
            // they were opened in. It ends in the reference namespace, so
            // the `ip addr add` it spawns works there.
            let mut agent_side = Side::open(&ns)?;
            let mut reference = Side::open(&reference_ns)?;
            let mut results: [(Vec<Duration>, usize); 3] = Default::default();
            for trial in 0..TRIALS {
                let addr = ip((trial % usize::from(MANAGED)) as u8 + 1);
                // The agent.
                let start = agent_side.delete(addr)?;
                match agent_side.back(addr, start)? {
                    Some(took) => results[0].0.push(took),
                    None => results[0].1 += 1,
                }
                std::thread::sleep(PAUSE);
                // `ip addr add`, started as soon as the deletion is acknowledged.
                let start = reference.delete(addr)?;
                let status = Command::new("ip")
                    .args(["addr", "add", &format!("{addr}/32"), "dev", "eth0"])
                    .status()?;
                ensure!(status.success(), "ip addr add failed");
                match reference.back(addr, start)? {
                    Some(took) => results[1].0.push(took),
                    None => results[1].1 += 1,
                }
                // The bare netlink request.
                let start = reference.delete(addr)?;
                reference
                    .requests
                    .send_address(RTM_NEWADDR, reference.index, addr, 32)?;
                reference.requests.ack()?;
                match reference.back(addr, start)? {
                    Some(took) => results[2].0.push(took),
                    None => results[2].1 += 1,
                }
            }
            Ok(results)
        };
        let results = std::thread::scope(|s| s.spawn(run_trials).join())
            .map_err(|_| anyhow::anyhow!("the trial thread panicked"))??;
        process.ensure_running(&agent.log_path())?;

        let [mut agent_samples, mut ip_samples, mut floor_samples] = results;
        ensure!(
            !agent_samples.0.is_empty() && !ip_samples.0.is_empty() && !floor_samples.0.is_empty(),
            "no trial succeeded; agent log:\n{}",
            fs::read_to_string(agent.log_path()).unwrap_or_default()
        );
        println!();
        println!(
            "| deleted address back after (ms) | trials | min | p50 | p90 | p99 | max | not back within 2 s |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let (p50, p99) = summary(
            "mailctl agent (netlink monitor)",
            &mut agent_samples.0,
            agent_samples.1,
        );
        let (ip50, ip99) = summary("reference: `ip addr add`", &mut ip_samples.0, ip_samples.1);
        let (f50, _) = summary(
            "floor: bare RTM_NEWADDR",
            &mut floor_samples.0,
            floor_samples.1,
        );
        println!(
            "ratio agent / `ip addr add`: p50 {:.2}x, p99 {:.2}x; agent / floor p50 {:.1}x",
            p50.as_secs_f64() / ip50.as_secs_f64(),
            p99.as_secs_f64() / ip99.as_secs_f64(),
            p50.as_secs_f64() / f50.as_secs_f64(),
        );
        let status = agent.status(&ns)?.context("final status")?;
        let corrective = &status["resources"]["addresses"]["correctiveChanges"];
        println!("agent status: addresses correctiveChanges = {corrective} (expected {TRIALS})");
        println!(
            "target: p50 < 20 ms -> {}; p99 < 100 ms -> {}",
            if p50 < Duration::from_millis(20) {
                "met"
            } else {
                "NOT met"
            },
            if p99 < Duration::from_millis(100) && agent_samples.1 == 0 {
                "met"
            } else {
                "NOT met"
            }
        );
        Ok(())
    }
}

mod idle {
    //! The agent idling with 100 resources for 60 s.

    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);
    const ADDRESSES: usize = 60;
    const RULES: usize = 10;
    const FILES: usize = 80;
    const TASKS: usize = 15;
    const SERVICES: usize = 3;
    const RESYNC_SECONDS: u64 = 30;

    fn manifest(d: &Path) -> String {
        let d = d.display();
        let mut m = String::from(
            "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  addresses:\n",
        );
        for i in 1..=ADDRESSES {
            m.push_str(&format!(
                "    - {{address: 10.220.0.{i}/24, interface: eth0}}\n"
            ));
        }
        m.push_str("  firewall:\n    policy: accept\n    rules:\n");
        m.push_str("      - {name: ssh, protocol: tcp, ports: [22, 7443], action: accept}\n");
        for i in 1..RULES {
            m.push_str(&format!(
                "      - {{name: r{i}, protocol: tcp, ports: [{}], sources: [10.{}.0.0/16], action: accept}}\n",
                10000 + i,
                100 + i
            ));
        }
        m.push_str("  files:\n");
        for i in 0..FILES {
            m.push_str(&format!(
                "    - {{path: {d}/files/f{i}.conf, content: \"setting{i} = {i}\\n\", mode: \"0644\"}}\n"
            ));
        }
        m.push_str("  tasks:\n");
        for i in 0..TASKS {
            m.push_str(&format!(
                "    - {{name: t{i}, run: [touch, {d}/tasks/t{i}], creates: {d}/tasks/t{i}}}\n"
            ));
        }
        m.push_str("  services:\n");
        for i in 0..SERVICES {
            let pid = format!("{d}/svc{i}.pid");
            m.push_str(&format!(
                "    - name: svc{i}\n      state: running\n      driver: exec\n      exec:\n        start: [start-stop-daemon, --start, --background, --make-pidfile, --pidfile, {pid}, --exec, /bin/sleep, --, \"3600\"]\n        stop: [start-stop-daemon, --stop, --remove-pidfile, --pidfile, {pid}]\n        status: [start-stop-daemon, --status, --pidfile, {pid}]\n"
            ));
        }
        m
    }

    #[derive(Debug, Clone, Copy, Default)]
    struct Sample {
        ticks: u64,
        child_ticks: u64,
        rss_kib: u64,
        hwm_kib: u64,
        anon_kib: u64,
        file_kib: u64,
        threads: u64,
    }

    fn sample(pid: u32) -> Result<Sample> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): field 3 on.
        let after = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<u64> = after
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime, cstime are fields 14..=17 (1-based), i.e. 10..=13 here.
        let ticks = fields[10] + fields[11];
        let child_ticks = fields[12] + fields[13];
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Sample {
            ticks,
            child_ticks,
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
            threads: field("Threads:"),
        })
    }

    fn clock_ticks() -> u64 {
        super::run("getconf", &["CLK_TCK"])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100)
    }

    struct Measured {
        first: Sample,
        last: Sample,
        max_rss_kib: u64,
        /// The sample with the largest VmRSS.
        at_max: Sample,
        max_threads: u64,
        /// CPU ticks (own + children) per second of the window.
        per_second: Vec<u64>,
    }

    impl Measured {
        fn cpu_percent(&self, wall: Duration, hz: u64, children: bool) -> f64 {
            let mut ticks = self.last.ticks - self.first.ticks;
            if children {
                ticks += self.last.child_ticks - self.first.child_ticks;
            }
            ticks as f64 / hz as f64 / wall.as_secs_f64() * 100.0
        }
    }

    pub fn run() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        fs::create_dir_all(d.join("files"))?;
        fs::create_dir_all(d.join("tasks"))?;
        let _services = PidFiles(
            (0..SERVICES)
                .map(|i| d.join(format!("svc{i}.pid")))
                .collect(),
        );
        let ns = Netns::new("idle")?;
        let agent = Agent::setup(d, &manifest(d), RESYNC_SECONDS)?;
        let mut process = agent.start(&ns)?;
        let expected = 1 + 1 + FILES + TASKS + SERVICES;
        let status = agent.wait_ready(&ns, &mut process, expected)?;
        let comm = fs::read_to_string(format!("/proc/{}/comm", process.pid()))?;
        ensure!(
            comm.trim() == "mailctl",
            "PID {} is {comm:?}, not mailctl",
            process.pid()
        );
        let resources = status["resources"].as_object().context("resources")?;
        let count = |prefix: &str| resources.keys().filter(|k| k.starts_with(prefix)).count();
        println!(
            "agent resources in GET /v1/status: {} ({} addresses entry holding {ADDRESSES} addresses, {} firewall table with {RULES} rules, {} files, {} tasks, {} exec services), all ready",
            resources.len(),
            count("addresses"),
            count("firewall"),
            count("file "),
            count("task "),
            count("service "),
        );
        ensure!(
            ns.ipv4_addresses()?.len() == ADDRESSES,
            "addresses not converged"
        );
        println!(
            "resync_seconds = {RESYNC_SECONDS} (default 300): the window holds two full resyncs of all resources"
        );

        let monitor_log = d.join("monitor.log");
        let mut monitor_command = Command::new("ip");
        monitor_command.args(["-n", &ns.name, "monitor", "address"]);
        let mut monitor = Process::spawn(monitor_command, "ip monitor address", &monitor_log)?;
        // Let the reconciles triggered by the agent's own changes finish.
        std::thread::sleep(Duration::from_secs(3));
        process.ensure_running(&agent.log_path())?;
        monitor.ensure_running(&monitor_log)?;
        let hz = clock_ticks();
        let pids = [process.pid(), monitor.pid()];
        let mut measured: Vec<Measured> = Vec::new();
        for pid in pids {
            let s = sample(pid)?;
            measured.push(Measured {
                first: s,
                last: s,
                max_rss_kib: s.rss_kib,
                at_max: s,
                max_threads: s.threads,
                per_second: Vec::new(),
            });
        }
        println!(
            "measuring for {WINDOW:?} (samples of /proc/PID/stat and /proc/PID/status every second)..."
        );
        let start = Instant::now();
        while start.elapsed() < WINDOW {
            std::thread::sleep(Duration::from_secs(1).min(WINDOW.saturating_sub(start.elapsed())));
            for (pid, m) in pids.iter().zip(measured.iter_mut()) {
                let s = sample(*pid)?;
                m.per_second
                    .push((s.ticks + s.child_ticks) - (m.last.ticks + m.last.child_ticks));
                m.last = s;
                if s.rss_kib > m.max_rss_kib {
                    m.max_rss_kib = s.rss_kib;
                    m.at_max = s;
                }
                m.max_threads = m.max_threads.max(s.threads);
            }
        }
        let wall = start.elapsed();
        process.ensure_running(&agent.log_path())?;
        let status = agent.status(&ns)?.context("status after the window")?;
        let all_ready = status["resources"]
            .as_object()
            .is_some_and(|r| r.values().all(|v| v["condition"]["state"] == "ready"));

        let mib = |kib: u64| kib as f64 / 1024.0;
        let (a, m) = (&measured[0], &measured[1]);
        println!();
        println!(
            "| over {:.1} s | VmRSS start | VmRSS end | VmRSS max | RssAnon / RssFile at max | VmHWM | CPU (own) | CPU (+ children) | threads end / max |",
            wall.as_secs_f64()
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (name, x) in [("mailctl agent", a), ("reference: ip monitor address", m)] {
            println!(
                "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} / {:.1} MiB | {:.1} MiB | {:.3} % | {:.3} % | {} / {} |",
                mib(x.first.rss_kib),
                mib(x.last.rss_kib),
                mib(x.max_rss_kib),
                mib(x.at_max.anon_kib),
                mib(x.at_max.file_kib),
                mib(x.last.hwm_kib),
                x.cpu_percent(wall, hz, false),
                x.cpu_percent(wall, hz, true),
                x.last.threads,
                x.max_threads,
            );
        }
        println!(
            "ratio agent / ip monitor: RSS {:.1}x; CPU {:.3} vs {:.3} % (ticks of 1/{hz} s: agent {} own + {} children, ip monitor {})",
            a.max_rss_kib as f64 / m.max_rss_kib.max(1) as f64,
            a.cpu_percent(wall, hz, true),
            m.cpu_percent(wall, hz, true),
            a.last.ticks - a.first.ticks,
            a.last.child_ticks - a.first.child_ticks,
            m.last.ticks - m.first.ticks,
        );
        let busy: Vec<String> = a
            .per_second
            .iter()
            .enumerate()
            .filter(|(_, t)| **t > 0)
            .map(|(i, t)| format!("{}s:{t}", i + 1))
            .collect();
        println!(
            "agent CPU ticks by second of the window (seconds without any left out): {}",
            busy.join(" ")
        );
        println!("agent still reports every resource ready: {all_ready}");
        let rss_ok = mib(a.max_rss_kib) < 20.0;
        let cpu_ok = a.cpu_percent(wall, hz, true) < 0.5;
        println!(
            "target: RSS < 20 MiB -> {} (max VmRSS in the window; VmHWM since start {:.1} MiB); CPU < 0.5 % -> {} (own + children)",
            if rss_ok { "met" } else { "NOT met" },
            mib(a.last.hwm_kib),
            if cpu_ok { "met" } else { "NOT met" },
        );
        drop(monitor);
        drop(process);
        Ok(())
    }
}
