//! A small lab of network namespaces for tests on a real kernel (LAB.md).
//!
//! Each test makes its own namespaces, named `mctl-t<pid>-<n>`, so tests run
//! in parallel and never meet another test's interfaces. The reconciler under
//! test runs on a thread that entered the namespace with `setns`; what it did
//! is checked with the real `ip` and `nft` from outside. A namespace is
//! removed when its guard drops, also when the test fails.
//!
//! These tests need root and the `ip` and `nft` programs. Without them they
//! fail and say so: a test that cannot run must not pass.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use mailctl_agent::{Config, Reconciler};
use mailctl_schemas::model::HostSpec;
use nix::sched::{CloneFlags, setns};
use serde_json::Value;

const PREFIX: &str = "mctl-t";

static NEXT: AtomicUsize = AtomicUsize::new(0);
static PREFLIGHT: OnceLock<Result<(), String>> = OnceLock::new();

/// Fails the test unless it can run here; removes namespaces that crashed
/// earlier runs left behind. Every test fails with the same message.
fn preflight() {
    let verdict = PREFLIGHT.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("these tests create network namespaces and need root; \
                 run `cargo test -p mailctl-agent` as root (CI does)"
                .to_owned());
        }
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            let found = Command::new(program)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!(
                    "`{program}` is missing; install it with `apt-get install -y {package}`"
                ));
            }
        }
        remove_stale_namespaces();
        Ok(())
    });
    if let Err(reason) = verdict {
        panic!("{reason}");
    }
}

/// Namespaces of ours whose test process is gone (killed before its guards
/// ran).
fn remove_stale_namespaces() {
    let listing = run("ip", &["netns", "list"]);
    for name in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs a program and returns its stdout; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    check(program, args, output)
}

fn check(program: &str, args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Netns {
        preflight();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -j -n NAME ARGS...`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j prints JSON")
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `nft -j list ruleset` inside the namespace, parsed.
    pub fn nft_ruleset(&self) -> Value {
        serde_json::from_str(&self.exec("nft", &["-j", "list", "ruleset"]))
            .expect("nft -j prints JSON")
    }

    /// Runs `test` with a reconciler living in this namespace, on a thread of
    /// its own that entered the namespace first.
    pub fn reconcile<T, F, Fut>(&self, test: F) -> T
    where
        T: Send,
        F: FnOnce(Reconciler) -> Fut + Send,
        Fut: Future<Output = T>,
    {
        self.reconcile_with(Config::default(), test)
    }

    /// [`reconcile`](Self::reconcile) with a reconciler made from `config`.
    pub fn reconcile_with<T, F, Fut>(&self, config: Config, test: F) -> T
    where
        T: Send,
        F: FnOnce(Reconciler) -> Fut + Send,
        Fut: Future<Output = T>,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let netns =
                        File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
                    setns(&netns, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    runtime.block_on(async move {
                        let reconciler = Reconciler::connect(config).expect("netlink socket");
                        test(reconciler).await
                    })
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The MAC address of an interface.
    pub fn mac(&self, interface: &str) -> String {
        let link = self.ip_json(&["link", "show", "dev", interface]);
        link[0]["address"]
            .as_str()
            .expect("link address")
            .to_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let result = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !result.is_ok_and(|o| o.status.success()) {
            eprintln!("could not remove network namespace {}", self.name);
        }
    }
}

/// The spec of the one `Host` in a manifest, read through the real loader.
/// [`host_spec`] of a Host named eve whose `spec:` holds `body` (indented
/// by two spaces, as under `spec:`).
pub fn eve_spec(body: &str) -> HostSpec {
    host_spec(&format!(
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n{}",
        body.trim_start_matches('\n')
    ))
}

pub fn host_spec(yaml: &str) -> HostSpec {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temporary manifest");
    std::io::Write::write_all(&mut file, yaml.as_bytes()).expect("write manifest");
    let set = mailctl_schemas::load::load_paths(&[file.path()])
        .unwrap_or_else(|diags| panic!("invalid test manifest:\n{diags}"));
    assert_eq!(set.hosts.len(), 1, "one Host in the test manifest");
    set.hosts
        .into_iter()
        .next()
        .map(|h| h.spec)
        .unwrap_or_default()
}

/// The addresses on an interface as `ADDRESS/PREFIX` with their label
/// (IPv4) from `ip -j addr`, leaving out IPv6 link-local ones.
pub fn addresses(netns: &Netns, interface: &str) -> Vec<(String, Option<String>)> {
    let listing = netns.ip_json(&["addr", "show", "dev", interface]);
    let mut found = Vec::new();
    for info in listing[0]["addr_info"].as_array().expect("addr_info") {
        if info["scope"] == "link" {
            continue;
        }
        let address = format!(
            "{}/{}",
            info["local"].as_str().expect("local"),
            info["prefixlen"]
        );
        found.push((address, info["label"].as_str().map(str::to_owned)));
    }
    found
}
