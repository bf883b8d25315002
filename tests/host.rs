//! The agent side of mailctl end to end, through the `mailctl` binary, on a
//! real kernel: `apply --local` inside a network namespace, the daemon
//! repairing drift, and magic rollback. Needs root (CI runs as root); without
//! it every test fails and says why.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "these tests create network namespaces and need root: run `bash scripts/test.sh` as root"
    );
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("curl", "curl")] {
        let found = Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{program}` is missing: apt-get install -y {package}"
        );
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A network namespace with an `eth0` (one end of a veth pair), removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        require_root();
        let name = format!(
            "mctl-e{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ]);
        ns.ip(&["link", "set", "eth0p", "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn addresses(&self) -> Vec<String> {
        let json: Value =
            serde_json::from_str(&self.ip(&["-j", "addr", "show", "dev", "eth0"])).expect("json");
        json[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["scope"] != "link")
                    .map(|i| {
                        format!(
                            "{}/{}",
                            i["local"].as_str().unwrap_or_default(),
                            i["prefixlen"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `mailctl ARGS` inside the namespace.
    fn mailctl(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_mailctl")])
            .args(args)
            .output()
            .expect("spawn mailctl")
    }

    fn spawn_mailctl(&self, args: &[&str], log: &Path) -> Child {
        let log = fs::File::create(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_mailctl")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mailctl agent")
    }

    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("spawn")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Poll `condition` until it holds or `limit` passes; returns how long it took.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The acceptance host: 2 addresses (one IPv6), 5 firewall rules, an exec
/// service, 2 files with onChange handlers and a task.
fn acceptance_host(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: mailctl/v1alpha1
kind: Host
metadata: {{name: eve}}
spec:
  addresses:
    - {{address: 10.77.1.25/24, interface: eth0, label: "eth0:mail", exclusive: true}}
    - {{address: "fd77:1::25/64", interface: eth0, exclusive: true}}
  firewall:
    policy: drop
    rules:
      - {{name: ssh, protocol: tcp, ports: [22], action: accept}}
      # Open to all: `mailctl apply` has no admin_sources to narrow it to.
      - {{name: agent, protocol: tcp, ports: [7443], action: accept}}
      - {{name: smtp, protocol: tcp, ports: [25, 465, 587], action: accept}}
      - {{name: imap, protocol: tcp, ports: [143, 993], sources: [10.77.1.0/24, "fd77:1::/64"], action: accept}}
      - {{name: pop3, protocol: tcp, ports: [110, 995], action: reject}}
  services:
    - name: mailsim
      state: running
      driver: exec
      exec:
        start: [start-stop-daemon, --start, --background, --make-pidfile, --pidfile, {d}/mailsim.pid, --exec, /bin/sleep, --, "3600"]
        stop: [start-stop-daemon, --stop, --remove-pidfile, --pidfile, {d}/mailsim.pid]
        status: [start-stop-daemon, --status, --pidfile, {d}/mailsim.pid]
        reload: [touch, {d}/mailsim.reloaded]
      reloadOn: [{d}/etc/main.cf]
  files:
    - path: {d}/etc/main.cf
      content: "myhostname = eve.example.test\n"
      mode: "0644"
      onChange: [{{run: [sh, -c, "echo main.cf >> {d}/handlers.log"]}}, {{reload: mailsim}}]
    - path: {d}/etc/virtual
      content: "postmaster@example.test root\n"
      mode: "0640"
      onChange: [{{run: [sh, -c, "echo virtual >> {d}/handlers.log"]}}]
  tasks:
    - name: make-spool
      run: [mkdir, -p, {d}/spool/converted]
      creates: {d}/spool/converted
"#
    )
}

#[test]
fn apply_local_converges_a_host_and_a_second_plan_has_nothing_to_do() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    fs::create_dir_all(d.join("etc")).expect("etc");
    let manifest = d.join("host.yaml");
    fs::write(&manifest, acceptance_host(d)).expect("manifest");
    let state = d.join("state");
    let m = manifest.to_str().expect("utf-8");
    let s = state.to_str().expect("utf-8");

    let plan = ns.mailctl(&["plan", "-f", m, "--state-dir", s]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "changes pending:\n{}",
        text(&plan)
    );
    assert!(
        text(&plan).contains("+ address 10.77.1.25/24 on eth0"),
        "{}",
        text(&plan)
    );
    assert!(!d.join("etc/main.cf").exists(), "plan changes nothing");

    let apply = ns.mailctl(&["apply", "--local", "-f", m, "--state-dir", s]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(text(&apply).contains("verified:"), "{}", text(&apply));

    // Addresses, as the kernel has them.
    let mut addresses = ns.addresses();
    addresses.sort();
    assert_eq!(addresses, ["10.77.1.25/24", "fd77:1::25/64"]);
    let labels = ns.ip(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(labels.contains("eth0:mail"), "{labels}");
    // Firewall, as nftables has it.
    let table = ns.exec("nft", &["list", "table", "inet", "mailctl"]);
    let table = text(&table);
    for needle in [
        "policy drop",
        "tcp dport 22 accept",
        "dport { 25, 465, 587 } accept",
        "dport { 110, 995 } reject",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    // A closed host still talks to itself and gets replies to its own connections.
    for needle in [
        "iifname \"lo\" accept",
        "ct state established,related accept",
        "ipv6-icmp",
    ] {
        assert!(table.contains(needle), "{needle} in\n{table}");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let url = format!("http://127.0.0.1:{port}/");
    let reached = wait_for(Duration::from_secs(10), || {
        ns.exec("curl", &["-s", "-o", "/dev/null", "--max-time", "1", &url])
            .status
            .success()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        reached.is_some(),
        "loopback traffic passes the policy-drop table"
    );
    // The service, by its own status command.
    let status = Command::new("start-stop-daemon")
        .args(["--status", "--pidfile"])
        .arg(d.join("mailsim.pid"))
        .status()
        .expect("status");
    assert!(status.success(), "mailsim runs");
    // Files, handlers (once per file), task.
    assert_eq!(
        fs::read_to_string(d.join("etc/main.cf")).expect("main.cf"),
        "myhostname = eve.example.test\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(d.join("etc/virtual"))
        .expect("virtual")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let mut log: Vec<String> = fs::read_to_string(d.join("handlers.log"))
        .expect("handlers ran")
        .lines()
        .map(str::to_owned)
        .collect();
    log.sort();
    assert_eq!(log, ["main.cf", "virtual"]);
    assert!(d.join("spool/converted").is_dir(), "task ran");

    let again = ns.mailctl(&["plan", "-f", m, "--state-dir", s]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "nothing left to do:\n{}",
        text(&again)
    );
    let again = ns.mailctl(&["apply", "--local", "-f", m, "--state-dir", s]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let log = fs::read_to_string(d.join("handlers.log")).expect("log");
    assert_eq!(
        log.lines().count(),
        2,
        "handlers run once per change, not per apply"
    );

    // Leave nothing running.
    let _ = Command::new("start-stop-daemon")
        .args(["--stop", "--pidfile"])
        .arg(d.join("mailsim.pid"))
        .status();
}

/// TLS material and config for an agent inside `ns`.
struct AgentSetup {
    dir: tempfile::TempDir,
    port: u16,
}

impl AgentSetup {
    fn new(desired: &str, confirm_timeout: u64) -> AgentSetup {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let certs = Command::new(env!("CARGO_BIN_EXE_mailctl"))
            .args(["certs", "init", "--out"])
            .arg(d.join("tls"))
            .args(["--agent", "eve=127.0.0.1"])
            .output()
            .expect("certs");
        assert!(certs.status.success(), "{}", text(&certs));
        fs::write(d.join("desired.yaml"), desired).expect("desired");
        // A free port number (the agent binds it inside its own namespace).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\ndesired_state = \"{}\"\nstate_dir = \"{}\"\nresync_seconds = 3600\nconfirm_timeout_seconds = {confirm_timeout}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            d.join("desired.yaml").display(),
            d.join("state").display(),
            d.join("tls/agent-eve/ca.pem").display(),
            d.join("tls/agent-eve/agent.pem").display(),
            d.join("tls/agent-eve/agent.key").display(),
        );
        fs::write(d.join("agent.toml"), config).expect("config");
        AgentSetup { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self, ns: &Netns) -> AgentProcess {
        let child = ns.spawn_mailctl(
            &[
                "agent",
                "--config",
                self.path("agent.toml").to_str().expect("utf-8"),
            ],
            &self.path("agent.log"),
        );
        AgentProcess { child }
    }

    /// `curl` with the controller's certificate, inside the namespace; the
    /// request must succeed.
    fn curl(&self, ns: &Netns, method: &str, route: &str) -> String {
        let (code, body) = self.request(ns, method, route, None);
        assert!(
            (200..300).contains(&code),
            "curl {method} {route}: HTTP {code}: {body}"
        );
        body
    }

    /// One request with the controller's certificate, inside the namespace:
    /// the HTTP status (0 when there was no answer) and the body. `body` is
    /// the path of a file to send.
    fn request(&self, ns: &Netns, method: &str, route: &str, body: Option<&Path>) -> (u16, String) {
        self.request_as(ns, "controller", method, route, body)
    }

    /// One request as `who`: `controller`, or `admin` (the admin certificate
    /// `certs init` makes).
    fn request_as(
        &self,
        ns: &Netns,
        who: &str,
        method: &str,
        route: &str,
        body: Option<&Path>,
    ) -> (u16, String) {
        let url = format!("https://eve:{}{route}", self.port);
        let resolve = format!("eve:{}:127.0.0.1", self.port);
        let data = body.map(|b| format!("@{}", b.display()));
        let folder = if who == "controller" {
            "controller"
        } else {
            "admin-admin"
        };
        let (ca, cert, key) = (
            self.path(&format!("tls/{folder}/ca.pem")),
            self.path(&format!("tls/{folder}/{who}.pem")),
            self.path(&format!("tls/{folder}/{who}.key")),
        );
        let mut args = vec![
            "-sS",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--resolve",
            &resolve,
            "--cacert",
            ca.to_str().expect("utf-8"),
            "--cert",
            cert.to_str().expect("utf-8"),
            "--key",
            key.to_str().expect("utf-8"),
        ];
        if let Some(data) = &data {
            args.extend(["--data-binary", data.as_str()]);
        }
        args.push(&url);
        let out = ns.exec("curl", &args);
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (answer, code) = all.rsplit_once('\n').unwrap_or(("", &all));
        (code.trim().parse().unwrap_or(0), answer.to_owned())
    }

    fn status(&self, ns: &Netns) -> Value {
        serde_json::from_str(&self.curl(ns, "GET", "/v1/status")).expect("status JSON")
    }

    /// Polls the agent's status until `until` holds or `limit` passes;
    /// returns the status that satisfied it.
    fn wait_for_status(
        &self,
        ns: &Netns,
        limit: Duration,
        mut until: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let status = self.status(ns);
            if until(&status) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }
}

struct AgentProcess {
    child: Child,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_address_host(addresses: &[&str]) -> String {
    let mut text = String::from(
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec:\n  addresses:\n",
    );
    for a in addresses {
        text.push_str(&format!("    - {{address: \"{a}\", interface: eth0}}\n"));
    }
    text
}

#[test]
fn the_running_agent_repairs_a_deleted_address_from_the_kernel_event() {
    let ns = Netns::new();
    let agent = AgentSetup::new(&one_address_host(&["10.77.2.25/24"]), 0);
    let _process = agent.start(&ns);
    let up = wait_for(Duration::from_secs(20), || {
        ns.addresses().contains(&"10.77.2.25/24".to_owned())
    });
    assert!(
        up.is_some(),
        "agent added the address; log:\n{}",
        agent.log()
    );

    let status = || -> Value {
        serde_json::from_str(&agent.curl(&ns, "GET", "/v1/status")).expect("status JSON")
    };
    let ready = wait_for(Duration::from_secs(10), || {
        status()["resources"]["addresses"]["condition"]["state"] == "ready"
    });
    assert!(ready.is_some(), "converged: {}", agent.log());

    // Delete it by hand: the netlink monitor, not the (1 h) resync, repairs it.
    for round in 1..=3 {
        ns.ip(&["addr", "del", "10.77.2.25/24", "dev", "eth0"]);
        let repaired = wait_for(Duration::from_secs(2), || {
            ns.addresses().contains(&"10.77.2.25/24".to_owned())
        });
        assert!(
            repaired.is_some(),
            "repaired without a resync tick; log:\n{}",
            agent.log()
        );
        let counted = wait_for(Duration::from_secs(5), || {
            status()["resources"]["addresses"]["correctiveChanges"] == round
        });
        assert!(
            counted.is_some(),
            "counted as corrective: {}\n{}",
            status(),
            agent.log()
        );
    }
    let status = status();
    let addresses = &status["resources"]["addresses"];
    assert_eq!(addresses["condition"]["state"], "ready", "{status}");
    assert_eq!(addresses["intentionalChanges"], 1, "{status}");
    let metrics = agent.curl(&ns, "GET", "/metrics");
    assert!(
        metrics.contains("mailctl_agent_changes_total{cause=\"corrective\"} 3"),
        "{metrics}"
    );
}

/// One address and one managed file (world-readable, so its diff may be shown).
fn address_and_file_host(address: &str, file: &Path, content: &str) -> String {
    one_address_host(&[address])
        + &format!(
            "  files:\n    - {{path: {}, content: \"{content}\", mode: \"0644\"}}\n",
            file.display()
        )
}

#[test]
fn a_new_address_state_is_rolled_back_unless_confirmed_and_kept_when_confirmed() {
    let ns = Netns::new();
    let work = tempfile::tempdir().expect("tmp");
    let file = work.path().join("main.cf");
    let agent = AgentSetup::new(&address_and_file_host("10.77.3.25/24", &file, "one"), 2);
    let process = agent.start(&ns);
    let has = |a: &str| ns.addresses().contains(&a.to_owned());
    let content = || fs::read_to_string(&file).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || has("10.77.3.25/24")
            && content() == "one")
        .is_some(),
        "{}",
        agent.log()
    );
    let agent_url = format!("https://127.0.0.1:{}", agent.port);
    let admin_tls = agent.path("tls/admin-admin");
    let confirm = |args: &[&str]| {
        let mut argv = vec!["confirm", "eve"];
        argv.extend_from_slice(args);
        argv.extend([
            "--agent",
            &agent_url,
            "--tls-dir",
            admin_tls.to_str().expect("utf-8"),
        ]);
        let out = ns.mailctl(&argv);
        (out.status.code(), text(&out))
    };

    // Generation 2 moves the service IP and edits the file, and is never
    // confirmed: rolled back in full, the file too (README, "Magic rollback").
    fs::write(
        agent.path("desired.yaml"),
        address_and_file_host("10.77.3.26/24", &file, "two"),
    )
    .expect("write");
    assert!(
        wait_for(Duration::from_secs(10), || has("10.77.3.26/24")
            && content() == "two")
        .is_some(),
        "{}",
        agent.log()
    );
    let back = wait_for(Duration::from_secs(10), || {
        has("10.77.3.25/24") && !has("10.77.3.26/24") && content() == "one"
    });
    assert!(
        back.is_some(),
        "rolled back after the deadline; log:\n{}",
        agent.log()
    );
    let status = agent.wait_for_status(&ns, Duration::from_secs(10), |status| {
        status["effectiveGeneration"] == 1
    });
    let status = status.unwrap_or_else(|| panic!("status never said generation 1 is in force"));
    assert_eq!(status["rolledBack"], serde_json::json!([2]), "{status}");
    assert_eq!(status["awaitingConfirmation"], Value::Null, "{status}");
    assert_eq!(status["rollback"]["generation"], 2, "{status}");
    assert_eq!(status["rollback"]["to"], 1, "{status}");
    let metrics = agent.curl(&ns, "GET", "/metrics");
    assert!(
        metrics.contains("mailctl_agent_rollbacks_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mailctl_agent_rolled_back 1"), "{metrics}");
    // Too late to keep it: exit 3, never a success, and nothing changes.
    let (code, said) = confirm(&["2"]);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("generation 2 was already rolled back to generation 1"),
        "{said}"
    );
    let (code, said) = confirm(&[]);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("generation 2 was rolled back to generation 1"),
        "{said}"
    );
    assert!(has("10.77.3.25/24") && content() == "one");

    // Generation 3, confirmed in time by an admin with `mailctl confirm`,
    // stays — also across an agent restart.
    // (Moving an IP means declaring the old one absent: mailctl leaves undeclared addresses alone.)
    let moved = one_address_host(&["10.77.3.27/24"])
        + "    - {address: \"10.77.3.25/24\", interface: eth0, state: absent}\n"
        + &format!(
            "  files:\n    - {{path: {}, content: \"three\", mode: \"0644\"}}\n",
            file.display()
        );
    fs::write(agent.path("desired.yaml"), moved).expect("write");
    assert!(
        wait_for(Duration::from_secs(10), || has("10.77.3.27/24")
            && agent.status(&ns)["awaitingConfirmation"] == 3)
        .is_some(),
        "{}",
        agent.log()
    );
    let (code, said) = confirm(&[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("generation 3 confirmed"), "{said}");
    // Until the agent has handled generation 3's deadline (2 s after it was
    // accepted; the log says when), every status it answers shows the
    // confirmed generation in force and nothing more rolled back.
    let kept = agent.wait_for_status(&ns, Duration::from_secs(10), |status| {
        assert_eq!(status["effectiveGeneration"], 3, "{status}");
        assert_eq!(status["awaitingConfirmation"], Value::Null, "{status}");
        assert_eq!(status["rolledBack"], serde_json::json!([2]), "{status}");
        agent.log().contains("confirmation deadline passed")
    });
    assert!(
        kept.is_some(),
        "the deadline never passed; log:\n{}",
        agent.log()
    );
    assert!(
        has("10.77.3.27/24") && !has("10.77.3.25/24") && content() == "three",
        "confirmed state kept"
    );
    let status = agent.status(&ns);
    assert!(status.get("rollback").is_none(), "{status}");
    let metrics = agent.curl(&ns, "GET", "/metrics");
    assert!(metrics.contains("mailctl_agent_rolled_back 0"), "{metrics}");
    let (code, said) = confirm(&[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("nothing awaits confirmation (generation 3 is in force)"),
        "{said}"
    );
    drop(process);
    ns.ip(&["addr", "del", "10.77.3.27/24", "dev", "eth0"]);
    let _again = agent.start(&ns);
    assert!(
        wait_for(Duration::from_secs(20), || has("10.77.3.27/24")).is_some(),
        "a restarted agent converges to its persisted state; log:\n{}",
        agent.log()
    );
}

#[test]
fn the_running_agent_restores_a_flushed_table_and_a_stopped_service_on_resync() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tmp");
    let pid = dir.path().join("mailsim.pid");
    let p = pid.display();
    let desired = format!(
        r#"apiVersion: mailctl/v1alpha1
kind: Host
metadata: {{name: eve}}
spec:
  firewall:
    rules:
      - {{name: smtp, protocol: tcp, ports: [25], action: accept}}
  services:
    - name: mailsim
      state: running
      driver: exec
      exec:
        start: [start-stop-daemon, --start, --background, --make-pidfile, --pidfile, {p}, --exec, /bin/sleep, --, "3600"]
        stop: [start-stop-daemon, --stop, --remove-pidfile, --pidfile, {p}]
        status: [start-stop-daemon, --status, --pidfile, {p}]
"#
    );
    let agent = AgentSetup::new(&desired, 0);
    let config = fs::read_to_string(agent.path("agent.toml")).expect("config");
    fs::write(
        agent.path("agent.toml"),
        config.replace("resync_seconds = 3600", "resync_seconds = 1"),
    )
    .expect("config");
    let _process = agent.start(&ns);
    let table_present = || {
        ns.exec("nft", &["list", "table", "inet", "mailctl"])
            .status
            .success()
    };
    let service_running = || {
        Command::new("start-stop-daemon")
            .args(["--status", "--pidfile"])
            .arg(&pid)
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        wait_for(Duration::from_secs(20), || table_present()
            && service_running())
        .is_some(),
        "{}",
        agent.log()
    );
    let status = || -> Value {
        serde_json::from_str(&agent.curl(&ns, "GET", "/v1/status")).expect("status JSON")
    };
    let table = "firewall table inet mailctl";
    let ready = |s: &Value, name: &str| s["resources"][name]["condition"]["state"] == "ready";
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = status();
            ready(&s, table) && ready(&s, "service mailsim")
        })
        .is_some(),
        "converged before the drift: {}",
        agent.log()
    );

    let flushed = ns.exec("nft", &["delete", "table", "inet", "mailctl"]);
    assert!(flushed.status.success(), "{}", text(&flushed));
    assert!(!table_present());
    assert!(
        wait_for(Duration::from_secs(10), table_present).is_some(),
        "table restored; log:\n{}",
        agent.log()
    );

    let stopped = Command::new("start-stop-daemon")
        .args(["--stop", "--remove-pidfile", "--pidfile"])
        .arg(&pid)
        .status()
        .expect("stop");
    assert!(stopped.success());
    assert!(
        wait_for(Duration::from_secs(10), service_running).is_some(),
        "service restarted; log:\n{}",
        agent.log()
    );

    let corrective = |name: &str| {
        status()["resources"][name]["correctiveChanges"]
            .as_u64()
            .unwrap_or_default()
    };
    assert!(
        wait_for(Duration::from_secs(5), || corrective(table) >= 1
            && corrective("service mailsim") >= 1)
        .is_some(),
        "both repairs counted as corrective: {}",
        status()
    );
    let _ = Command::new("start-stop-daemon")
        .args(["--stop", "--pidfile"])
        .arg(&pid)
        .status();
}

#[test]
fn the_agent_runs_sync_jobs_on_request_and_on_schedule() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("source");
    let destination = dir.path().join("destination");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(source.join(sub)).expect("maildir");
    }
    fs::create_dir_all(&destination).expect("destination");
    fs::write(
        source.join("cur/1700000000.M1P1.old:2,S"),
        "Subject: one\n\nfirst\n",
    )
    .expect("mail");
    fs::write(
        source.join("new/1700000001.M2P2.old"),
        "Subject: two\n\nsecond\n",
    )
    .expect("mail");
    let desired = format!(
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n  syncJobs:\n    - {{name: final, source: \"{s}/\", destination: \"{d}/\", maildir: true}}\n    - {{name: regular, source: \"{s}/\", destination: \"{d}/\", maildir: true, every: 1s}}\n",
        s = source.display(),
        d = destination.display()
    );
    let agent = AgentSetup::new(&desired, 0);
    let _process = agent.start(&ns);
    let status = |job: &str| -> Option<Value> {
        let out = ns.exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "--resolve",
                &format!("eve:{}:127.0.0.1", agent.port),
                "--cacert",
                agent.path("tls/controller/ca.pem").to_str().expect("utf-8"),
                "--cert",
                agent
                    .path("tls/controller/controller.pem")
                    .to_str()
                    .expect("utf-8"),
                "--key",
                agent
                    .path("tls/controller/controller.key")
                    .to_str()
                    .expect("utf-8"),
                &format!("https://eve:{}/v1/sync/{job}", agent.port),
            ],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("JSON"))
    };

    // A one-shot run (a controller's final sync), asked for over the API.
    let api_up = wait_for(Duration::from_secs(20), || {
        ns.exec(
            "curl",
            &[
                "-sk",
                "-o",
                "/dev/null",
                &format!("https://127.0.0.1:{}/", agent.port),
            ],
        )
        .status
        .code()
            != Some(7)
    });
    assert!(api_up.is_some(), "{}", agent.log());
    agent.curl(&ns, "POST", "/v1/sync/final");
    let done = wait_for(Duration::from_secs(30), || {
        status("final").is_some_and(|s| s["verified"] == true)
    });
    assert!(
        done.is_some(),
        "final sync verified: {:?}\n{}",
        status("final"),
        agent.log()
    );
    assert!(destination.join("cur/1700000000.M1P1.old:2,S").is_file());
    assert!(destination.join("new/1700000001.M2P2.old").is_file());

    // The same through the CLI: `mailctl sync run HOST JOB` asks the agent,
    // follows the run it started and exits 0 once it verified.
    let agent_url = format!("https://127.0.0.1:{}", agent.port);
    let tls_dir = agent.path("tls/admin-admin");
    let tls_dir = tls_dir.to_str().expect("utf-8");
    let sync_run_on = |host: &str, job: &str, tls_dir: &str| {
        let argv = [
            "sync",
            "run",
            host,
            job,
            "--agent",
            &agent_url,
            "--tls-dir",
            tls_dir,
        ];
        ns.mailctl(&argv)
    };
    let sync_run = |job: &str, tls_dir: &str| sync_run_on("eve", job, tls_dir);
    // The address leads to eve's agent, not bob's: nothing is started.
    let cli = sync_run_on("bob", "final", tls_dir);
    let said = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert_eq!(cli.status.code(), Some(1), "{said}");
    assert!(
        said.contains("is not host bob: its certificate says agent eve"),
        "{said}"
    );
    let cli = sync_run("final", tls_dir);
    let said =
        String::from_utf8_lossy(&cli.stdout).into_owned() + &String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(0), "{said}");
    assert!(said.contains("sync final on eve: run 2 started"), "{said}");
    assert!(said.contains("verified: 2 messages in 1 folder"), "{said}");
    let after = status("final").expect("status");
    assert_eq!(
        (after["run"].as_u64(), after["verified"].as_bool()),
        (Some(2), Some(true)),
        "{after}"
    );
    // A job the host does not declare, and a client the agent's CA did not sign.
    let cli = sync_run("nosuch", tls_dir);
    let said = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert_eq!(cli.status.code(), Some(1), "{said}");
    // Said once, with the jobs the host does declare.
    assert!(
        said.contains("declares no sync job nosuch (it declares final, regular)"),
        "{said}"
    );
    assert_eq!(said.matches("nosuch").count(), 1, "{said}");
    let stranger = tempfile::tempdir().expect("tmp");
    let certs = ns.mailctl(&[
        "certs",
        "init",
        "--out",
        stranger.path().to_str().expect("utf-8"),
        "--agent",
        "eve=127.0.0.1",
    ]);
    assert!(certs.status.success());
    let stranger_tls = stranger.path().join("admin-admin");
    let cli = sync_run("final", stranger_tls.to_str().expect("utf-8"));
    let said = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert_eq!(cli.status.code(), Some(1), "{said}");
    assert!(
        said.contains("TLS with the agent at https://127.0.0.1"),
        "{said}"
    );

    // The scheduled job picks up new mail by itself.
    fs::write(
        source.join("new/1700000002.M3P3.old"),
        "Subject: three\n\nthird\n",
    )
    .expect("mail");
    let arrived = wait_for(Duration::from_secs(30), || {
        destination.join("new/1700000002.M3P3.old").is_file()
    });
    assert!(
        arrived.is_some(),
        "every: 1s ran; {:?}\n{}",
        status("regular"),
        agent.log()
    );
    let regular = status("regular").expect("regular ran");
    assert!(regular["lagSeconds"].as_u64().is_some(), "{regular}");
}

/// A Host named eve managing one world-readable file under `dir`.
fn one_file_host(dir: &Path, content: &str) -> String {
    format!(
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n  files:\n    - {{path: {}/etc/put.txt, content: \"{content}\", mode: \"0644\"}}\n",
        dir.display()
    )
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn concurrent_puts_are_each_validated_alone_and_never_touch_the_watched_manifest() {
    let ns = Netns::new();
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    fs::create_dir_all(w.join("etc")).expect("etc");
    let agent = AgentSetup::new(
        &format!(
            "# the admin's own file, with a comment\n{}",
            one_file_host(w, "from the file")
        ),
        0,
    );
    let watched = agent.path("desired.yaml");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&watched, fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let before = fs::read(&watched).expect("watched manifest");
    let _process = agent.start(&ns);
    assert!(
        wait_for(Duration::from_secs(20), || {
            fs::read_to_string(w.join("etc/put.txt")).is_ok_and(|t| t == "from the file")
        })
        .is_some(),
        "{}",
        agent.log()
    );

    // 4 clients, 150 rounds each; every third body is invalid (port 70000).
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 150;
    let results: Vec<Vec<(bool, u16, String)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (agent, ns) = (&agent, &ns);
                scope.spawn(move || {
                    let body = w.join(format!("body-{client}.yaml"));
                    (0..ROUNDS)
                        .map(|round| {
                            let valid = round % 3 != 0;
                            let mut text = one_file_host(w, &format!("client {client} round {round}"));
                            if !valid {
                                text.push_str("  firewall:\n    rules:\n      - {name: smtp, protocol: tcp, ports: [70000], action: accept}\n");
                            }
                            fs::write(&body, text).expect("body");
                            let (code, answer) = agent.request(ns, "PUT", "/v1/desired", Some(&body));
                            (valid, code, answer)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });

    let wrong: Vec<String> = results
        .iter()
        .flatten()
        .filter(|(valid, code, _)| *code != if *valid { 202 } else { 422 })
        .map(|(valid, code, answer)| format!("valid={valid} -> {code} {}", answer.trim()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers wrong, e.g. {:?}",
        wrong.len(),
        CLIENTS * ROUNDS,
        &wrong[..wrong.len().min(3)]
    );
    let mut generations = Vec::new();
    for (valid, code, answer) in results.iter().flatten() {
        if *valid {
            assert_eq!(*code, 202, "a valid body is accepted: {answer}");
            let json: Value = serde_json::from_str(answer).expect("answer is JSON");
            generations.push(json["generation"].as_u64().expect("generation"));
        } else {
            assert_eq!(*code, 422, "an invalid body is refused: {answer}");
            assert!(answer.contains("70000"), "{answer}");
        }
    }
    let accepted = generations.len();
    assert_eq!(accepted, CLIENTS * (ROUNDS - ROUNDS / 3));
    generations.sort_unstable();
    generations.dedup();
    assert_eq!(
        generations.len(),
        accepted,
        "every accepted PUT got its own generation"
    );
    assert_eq!(
        generations.first(),
        Some(&2),
        "generation 1 came from the file"
    );
    assert_eq!(generations.last(), Some(&(accepted as u64 + 1)));

    // The admin's file is as it was: bytes, comment and mode; no scratch files beside it.
    assert_eq!(fs::read(&watched).expect("watched"), before);
    assert_eq!(mode_of(&watched), 0o640);
    let beside: Vec<String> = fs::read_dir(agent.path(""))
        .expect("list")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // The newest PUT is in force, and a resent state is not a new generation.
    let status = agent.status(&ns);
    assert_eq!(status["generation"], accepted as u64 + 1, "{status}");
    assert_eq!(
        status["effectiveGeneration"],
        accepted as u64 + 1,
        "{status}"
    );
    let body = w.join("again.yaml");
    let newest = agent.curl(&ns, "GET", "/v1/desired");
    fs::write(&body, &newest).expect("body");
    let (code, answer) = agent.request(&ns, "PUT", "/v1/desired", Some(&body));
    assert_eq!(
        (code, answer.trim()),
        (202, format!("{{\"generation\":{}}}", accepted + 1).as_str())
    );

    // An edit of the watched file is newer than the PUTs and takes over.
    fs::write(&watched, one_file_host(w, "edited by hand")).expect("edit");
    assert!(
        wait_for(Duration::from_secs(10), || {
            fs::read_to_string(w.join("etc/put.txt")).is_ok_and(|t| t == "edited by hand")
        })
        .is_some(),
        "{}",
        agent.log()
    );
}

#[test]
fn a_damaged_state_folder_is_moved_aside_and_the_agent_starts_from_the_watched_manifest() {
    let ns = Netns::new();
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    fs::create_dir_all(w.join("etc")).expect("etc");
    let agent = AgentSetup::new(&one_file_host(w, "v1"), 0);
    let state = agent.path("state");
    let converged = |generation: u64| {
        wait_for(Duration::from_secs(20), || {
            let (code, body) = agent.request(&ns, "GET", "/v1/status", None);
            code == 200
                && serde_json::from_str::<Value>(&body).is_ok_and(|s| {
                    s["effectiveGeneration"] == generation
                        && s["resources"]
                            .as_object()
                            .is_some_and(|r| r.values().all(|v| v["condition"]["state"] == "ready"))
                })
        })
        .is_some()
    };
    {
        let _process = agent.start(&ns);
        assert!(converged(1), "{}", agent.log());
    }
    let damaged = |name: &str| -> Vec<String> {
        let dir = state.join(name).parent().expect("parent").to_path_buf();
        let stem = Path::new(name)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&format!("{stem}.damaged-")))
            .collect()
    };

    // A ledger cut short, and one unreadable sync job state beside a good one.
    let ledger = fs::read_to_string(state.join("ledger.json")).expect("ledger");
    fs::write(state.join("ledger.json"), &ledger[..ledger.len() / 2]).expect("truncate");
    fs::create_dir_all(state.join("sync")).expect("sync dir");
    fs::write(state.join("sync/sync-maildirs.json"), "").expect("empty job state");
    fs::write(w.join("etc/put.txt"), "drifted").expect("drift");
    {
        let _process = agent.start(&ns);
        assert!(
            converged(2),
            "starts, numbered above the stored generation 1:\n{}",
            agent.log()
        );
        let status = agent.status(&ns);
        let warnings = status["stateWarnings"].to_string();
        assert!(warnings.contains("ledger.json"), "{status}");
        assert!(warnings.contains("moved aside"), "{status}");
        assert!(warnings.contains("sync job maildirs"), "{status}");
        assert_eq!(damaged("ledger.json").len(), 1);
        assert_eq!(damaged("sync/sync-maildirs.json").len(), 1);
        assert_eq!(
            fs::read_to_string(w.join("etc/put.txt")).expect("file"),
            "v1"
        );
        assert!(
            agent.log().contains("damaged agent state"),
            "{}",
            agent.log()
        );
    }

    // An empty ledger; then a ledger naming a generation whose file is gone.
    fs::write(state.join("ledger.json"), "").expect("empty");
    {
        let _process = agent.start(&ns);
        assert!(converged(3), "{}", agent.log());
    }
    fs::write(
        state.join("ledger.json"),
        r#"{"generation": 9, "effective": 9, "awaitingConfirmation": null, "rolledBack": []}"#,
    )
    .expect("ledger");
    {
        let _process = agent.start(&ns);
        assert!(converged(10), "{}", agent.log());
        let status = agent.status(&ns);
        assert!(
            status["stateWarnings"]
                .to_string()
                .contains("0000000009.yaml"),
            "{status}"
        );
    }
}

/// eve with a secret from a `source:` file (0600), an inline secret (0640)
/// and a public file; `extra` is appended to the spec.
fn secret_host(work: &Path, address: &str, inline: &str, extra: &str) -> String {
    let w = work.display();
    format!(
        r#"apiVersion: mailctl/v1alpha1
kind: Host
metadata: {{name: eve}}
spec:
  addresses:
    - {{address: {address}, interface: eth0}}
  files:
    - {{path: {w}/etc/sasl_passwd, source: secret.txt, mode: "0600"}}
    - {{path: {w}/etc/db.cf, content: "password = {inline}\n", mode: "0640"}}
    - {{path: {w}/etc/public.cf, content: "public\n", mode: "0644"}}
    - {{path: {w}/private/app.conf, content: "password = changed\n", mode: "0644"}}
{extra}"#
    )
}

#[test]
fn secrets_never_reach_plans_status_logs_errors_or_api_answers() {
    const MARK: &str = "SECRET-";
    let ns = Netns::new();
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    fs::create_dir_all(w.join("etc")).expect("etc");
    let plant = |dir: &Path, value: &str| {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join("secret.txt");
        fs::write(&file, format!("smtp.example.test user:{value}\n")).expect("secret");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    // A world-readable file in a folder only root may enter is private too.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(w.join("private")).expect("private");
        fs::set_permissions(w.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::write(
            w.join("private/app.conf"),
            "password = SECRET-privdir-9c1\n",
        )
        .expect("app.conf");
    }

    // plan and apply --local, then a plan of a changed secret.
    let local = w.join("local");
    fs::create_dir_all(&local).expect("local");
    plant(&local, "SECRET-source-1f3a");
    let manifest = local.join("host.yaml");
    fs::write(
        &manifest,
        secret_host(w, "10.77.9.24/24", "SECRET-inline-77c2", ""),
    )
    .expect("manifest");
    let m = manifest.to_str().expect("utf-8");
    let s = local.join("state");
    let s = s.to_str().expect("utf-8");
    for args in [
        vec!["plan", "-f", m, "--state-dir", s],
        vec!["apply", "--local", "-f", m, "--state-dir", s],
    ] {
        let out = ns.mailctl(&args);
        seen.push((args.join(" "), text(&out)));
    }
    assert_eq!(
        fs::read_to_string(w.join("etc/sasl_passwd")).expect("applied"),
        "smtp.example.test user:SECRET-source-1f3a\n"
    );
    plant(&local, "SECRET-source-2b9e");
    fs::write(
        &manifest,
        secret_host(w, "10.77.9.24/24", "SECRET-inline-8d01", ""),
    )
    .expect("manifest");
    let out = ns.mailctl(&["plan", "-f", m, "--state-dir", s]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not world-readable"), "{}", text(&out));
    seen.push(("plan of changed secrets".into(), text(&out)));

    // The agent: status, plan, metrics; a failing state; an invalid one; a rollback.
    let agent = AgentSetup::new(
        &secret_host(w, "10.77.9.25/24", "SECRET-inline-0a9b", ""),
        2,
    );
    plant(agent.path("").as_path(), "SECRET-source-5c6d");
    let _process = agent.start(&ns);
    let ready = || {
        // No answer yet while the agent starts.
        let (code, body) = agent.request(&ns, "GET", "/v1/status", None);
        code == 200
            && serde_json::from_str::<Value>(&body).is_ok_and(|s| {
                s["resources"].as_object().is_some_and(|r| {
                    !r.is_empty() && r.values().all(|v| v["condition"]["state"] == "ready")
                })
            })
    };
    assert!(
        wait_for(Duration::from_secs(20), ready).is_some(),
        "{}",
        agent.log()
    );
    let desired = agent.curl(&ns, "GET", "/v1/desired");
    assert!(
        desired.contains("SECRET-source-5c6d"),
        "the controller reads the whole state"
    );
    let (code, answer) = agent.request_as(&ns, "admin", "GET", "/v1/desired", None);
    assert_eq!(
        code, 403,
        "an admin does not read the desired state: {answer}"
    );
    seen.push(("GET /v1/desired as admin".into(), answer));
    for who in ["controller", "admin"] {
        for route in ["/v1/status", "/v1/plan", "/metrics", "/v1/sync/none"] {
            let (code, body) = agent.request_as(&ns, who, "GET", route, None);
            seen.push((format!("GET {route} as {who} ({code})"), body));
        }
    }

    // Failing: the secret file's folder is a regular file.
    let failing = secret_host(
        w,
        "10.77.9.25/24",
        "SECRET-inline-0a9b",
        &format!(
            "    - {{path: {}/etc/public.cf/inner, content: \"SECRET-fail-3e4f\", mode: \"0600\"}}\n",
            w.display()
        ),
    )
    .replace("source: secret.txt", "content: \"SECRET-put-aa11\"");
    let body = w.join("body.yaml");
    fs::write(&body, &failing).expect("body");
    let (code, answer) = agent.request(&ns, "PUT", "/v1/desired", Some(&body));
    assert_eq!(code, 202, "{answer}");
    seen.push(("PUT failing".into(), answer));
    let failed = wait_for(Duration::from_secs(20), || {
        agent.status(&ns)["resources"]
            .as_object()
            .is_some_and(|r| r.values().any(|v| v["condition"]["state"] == "failed"))
    });
    assert!(failed.is_some(), "{}", agent.log());
    seen.push((
        "status after a failing apply".into(),
        agent.status(&ns).to_string(),
    ));
    seen.push((
        "plan after a failing apply".into(),
        agent.request(&ns, "GET", "/v1/plan", None).1,
    ));

    // Invalid: refused with located errors, none quoting a secret.
    let invalid = failing.replace(
        "mode: \"0600\"}",
        "mode: \"0600\", owner: \"SECRET-owner\"}",
    ) + "  firewall:\n    rules:\n      - {name: smtp, protocol: tcp, ports: [70000], action: accept}\n";
    fs::write(&body, invalid.replace("SECRET-owner", "root")).expect("body");
    let (code, answer) = agent.request(&ns, "PUT", "/v1/desired", Some(&body));
    assert_eq!(code, 422, "{answer}");
    seen.push(("PUT invalid".into(), answer));

    // Rolled back: a new address and new secrets, never confirmed.
    let moved = secret_host(w, "10.77.9.26/24", "SECRET-inline-rb77", "")
        .replace("source: secret.txt", "content: \"SECRET-put-rb88\"");
    fs::write(&body, moved).expect("body");
    let (code, answer) = agent.request(&ns, "PUT", "/v1/desired", Some(&body));
    assert_eq!(code, 202, "{answer}");
    let rolled = wait_for(Duration::from_secs(20), || {
        agent.status(&ns)["rolledBack"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(rolled.is_some(), "{}", agent.log());
    seen.push((
        "status after rollback".into(),
        agent.status(&ns).to_string(),
    ));
    seen.push((
        "plan after rollback".into(),
        agent.request(&ns, "GET", "/v1/plan", None).1,
    ));
    seen.push(("agent log".into(), agent.log()));

    let leaks: Vec<String> = seen
        .iter()
        .flat_map(|(what, text)| {
            text.lines()
                .filter(|l| l.contains(MARK))
                .map(move |l| format!("{what}: {l}"))
        })
        .collect();
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert!(
        seen.iter().map(|(_, t)| t.len()).sum::<usize>() > 1000,
        "something was looked at"
    );
}

/// eve with a `main.cf` whose handler builds `main.db` slowly (a postmap),
/// and a service that reads `main.db` when it starts.
fn postmap_host(work: &Path, content: &str, service: &str) -> String {
    let w = work.display();
    format!(
        r#"apiVersion: mailctl/v1alpha1
kind: Host
metadata: {{name: eve}}
spec:
  files:
    - path: {w}/etc/main.cf
      content: "{content}"
      mode: "0644"
      onChange: [{{run: [sh, -c, "sleep 1; cp {w}/etc/main.cf {w}/etc/main.db"]}}]
  services:
    - name: mailsim
      state: {service}
      driver: exec
      exec:
        start: [sh, -c, "cp {w}/etc/main.db {w}/seen.new && mv {w}/seen.new {w}/seen && start-stop-daemon --start --background --make-pidfile --pidfile {w}/mailsim.pid --exec /bin/sleep -- 3600"]
        stop: [start-stop-daemon, --stop, --remove-pidfile, --pidfile, {w}/mailsim.pid]
        status: [start-stop-daemon, --status, --pidfile, {w}/mailsim.pid]
"#
    )
}

#[test]
fn the_daemon_starts_a_service_only_after_its_new_configuration_and_handlers() {
    let ns = Netns::new();
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    fs::create_dir_all(w.join("etc")).expect("etc");
    let agent = AgentSetup::new(&postmap_host(w, "v1", "stopped"), 0);
    let _process = agent.start(&ns);
    assert!(
        wait_for(Duration::from_secs(20), || {
            fs::read_to_string(w.join("etc/main.db")).is_ok_and(|t| t == "v1")
        })
        .is_some(),
        "{}",
        agent.log()
    );
    assert!(!w.join("seen").exists());

    // One new state: new main.cf (its handler takes a second) and the service up.
    fs::write(agent.path("desired.yaml"), postmap_host(w, "v2", "running")).expect("edit");
    assert!(
        wait_for(Duration::from_secs(20), || w.join("seen").exists()).is_some(),
        "{}",
        agent.log()
    );
    assert_eq!(
        fs::read_to_string(w.join("seen")).expect("seen"),
        "v2",
        "the service started on the new configuration; log:\n{}",
        agent.log()
    );
    let _ = Command::new("start-stop-daemon")
        .args(["--stop", "--pidfile"])
        .arg(w.join("mailsim.pid"))
        .status();
}

#[test]
fn plan_reads_a_phase_with_its_migration_from_the_example_folder() {
    let ns = Netns::new();
    let state = tempfile::tempdir().expect("tmp");
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/askja");
    let out = ns.mailctl(&[
        "plan",
        "-f",
        folder.to_str().expect("utf-8"),
        "--phase",
        "cutover",
        "--host",
        "eve",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    let shown = text(&out);
    // 2: changes pending; 1 when a file's folder (/etc/exim4) is missing on this machine.
    assert!(matches!(out.status.code(), Some(1 | 2)), "{shown}");
    assert!(shown.starts_with("host eve:\n"), "{shown}");
    assert!(
        shown.contains("+ address 192.0.2.25/24 on eth0 (label eth0:mail)"),
        "{shown}"
    );
    assert!(
        shown.contains("+ rule webmail-test"),
        "the cutover phase's own rules: {shown}"
    );
}
