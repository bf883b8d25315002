//! The controller end to end, through the `mailctl` binary: two real agents
//! in two network namespaces (real netlink), a real controller in the root
//! namespace reaching them over veth links, and an admin using `apply`,
//! `status`, `approve` and `history`. A watcher samples both namespaces'
//! addresses every 10 ms for the whole run and fails the test if the
//! service IP is ever on both hosts. Needs root (CI runs as root).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

const SERVICE_IP: &str = "192.0.2.25";

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

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn require_root() {
    let uid = run("id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "this test creates network namespaces and needs root: run `bash scripts/test.sh` as root"
    );
}

/// A namespace `name` with `eth0`, linked to the root namespace by a veth
/// pair: the root side has 10.98.N.1/30, the namespace 10.98.N.2/30.
struct Host {
    ns: String,
    link: String,
    address: String,
}

impl Host {
    fn new(tag: &str, n: u8) -> Host {
        let ns = format!("mctl-c{}-{tag}", std::process::id());
        let link = format!("mc{}{tag}", std::process::id() % 100_000);
        run("ip", &["netns", "add", &ns]);
        let host = Host {
            ns: ns.clone(),
            link: link.clone(),
            address: format!("10.98.{n}.2"),
        };
        run(
            "ip",
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("10.98.{n}.1/30"), "dev", &link],
        );
        run("ip", &["link", "set", &link, "up"]);
        host.ip(&["link", "set", "lo", "up"]);
        host.ip(&["addr", "add", &format!("10.98.{n}.2/30"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn holds(ns: &str, ip: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", ns, "-j", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        json[0]["addr_info"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["local"] == ip))
    }

    fn spawn(&self, args: &[&str], log: &Path) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_mailctl")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn migration(dir: &Path, bob: &Host, eve: &Host, approval: bool) -> String {
    let file = |host: &str| dir.join(host).join("main.cf").display().to_string();
    let address = format!("{{address: {SERVICE_IP}/24, interface: eth0, exclusive: true}}");
    format!(
        r#"apiVersion: mailctl/v1alpha1
kind: Migration
metadata: {{name: bob-to-eve}}
spec:
  hosts:
    bob: {{agent: "https://{bob_addr}:7443"}}
    eve: {{agent: "https://{eve_addr}:7443"}}
  phases: [prepare, cutover, live]
  targetPhase: live
  pointOfNoReturn: live
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {{name: prepare, migration: bob-to-eve}}
spec:
  hosts:
    bob:
      addresses: [{address}]
      files: [{{path: {bob_file}, content: "relay\n", mode: "0644"}}]
    eve:
      files: [{{path: {eve_file}, content: "held\n", mode: "0644"}}]
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {{name: cutover, migration: bob-to-eve}}
spec:
  hosts:
    bob:
      files: [{{path: {bob_file}, content: "relay to eve\n", mode: "0644"}}]
    eve:
      addresses: [{address}]
      files: [{{path: {eve_file}, content: "accepting\n", mode: "0644"}}]
{gates}
---
apiVersion: mailctl/v1alpha1
kind: Phase
metadata: {{name: live, migration: bob-to-eve}}
spec:
  hosts:
    eve:
      addresses: [{address}]
      files: [{{path: {eve_file}, content: "delivering\n", mode: "0644"}}]
  gates:
    - {{name: settle, soak: {{duration: 2s}}}}
"#,
        bob_addr = bob.address,
        eve_addr = eve.address,
        bob_file = file("bob"),
        eve_file = file("eve"),
        gates = if approval {
            "  gates:\n    - {name: go-ahead, approval: {}}"
        } else {
            ""
        },
    )
}

#[test]
fn a_migration_between_two_real_agents_moves_the_service_ip_break_before_make() {
    let lab = Lab::new("m", 1);
    let w = lab.work.path();
    let (bob, eve) = (&lab.bob, &lab.eve);

    // The watcher: both namespaces, every 10 ms, from now to the end.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, samples) = (stop.clone(), samples.clone());
        let (b, e) = (bob.ns.clone(), eve.ns.clone());
        thread::spawn(move || {
            let mut both = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let on_bob = Host::holds(&b, SERVICE_IP);
                let on_eve = Host::holds(&e, SERVICE_IP);
                if on_bob && on_eve {
                    both.push(samples.load(Ordering::Relaxed));
                }
                samples.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
            both
        })
    };

    let controller = lab.controller();
    let url = format!("https://127.0.0.1:{}", lab.port);
    let admin = w.join("tls/admin-admin");
    let mailctl = |args: &[&str]| lab.mailctl(args);
    let logs = || lab.logs();
    assert!(
        wait_for(Duration::from_secs(20), || mailctl(&["status"])
            .status
            .success()),
        "the controller answers: {}",
        logs()
    );
    // A second controller on the same state folder is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .args(["controller", "--config"])
        .arg(w.join("controller.toml"))
        .output()
        .expect("second");
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        text(&second).contains("is in use by another controller"),
        "{}",
        text(&second)
    );

    let manifests = w.join("manifests");
    fs::create_dir_all(&manifests).expect("dir");
    fs::write(
        manifests.join("migration.yaml"),
        migration(w, bob, eve, true),
    )
    .expect("manifests");
    let applied = mailctl(&["apply", "-f", manifests.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{}\n{}", text(&applied), logs());
    assert!(
        text(&applied).contains("migration bob-to-eve: target live"),
        "{}",
        text(&applied)
    );

    // prepare is reached, then cutover waits for its approval: the service
    // IP moved to eve, bob's relay file says so.
    let status_text = || text(&mailctl(&["status", "bob-to-eve"]));
    assert!(
        wait_for(Duration::from_secs(60), || status_text()
            .contains("waiting for approval of cutover")),
        "{}\n{}",
        status_text(),
        logs()
    );
    assert!(Host::holds(&eve.ns, SERVICE_IP) && !Host::holds(&bob.ns, SERVICE_IP));
    assert_eq!(
        fs::read_to_string(w.join("bob/main.cf")).expect("bob"),
        "relay to eve\n"
    );
    let status = status_text();
    assert!(status.contains("[prepare]"), "{status}");
    assert!(
        status.contains("gate go-ahead (run 1): running"),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "host eve (https://{}:7443): generation",
            eve.address
        )),
        "{status}"
    );

    // The admin changes their mind: rollback, break-before-make too — eve
    // lets the service IP go before bob takes it back (the watcher runs).
    let rolled = mailctl(&["rollback", "bob-to-eve"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(
        wait_for(Duration::from_secs(60), || status_text()
            .contains("reached prepare")),
        "{}\n{}",
        status_text(),
        logs()
    );
    assert!(Host::holds(&bob.ns, SERVICE_IP) && !Host::holds(&eve.ns, SERVICE_IP));
    assert_eq!(
        fs::read_to_string(w.join("bob/main.cf")).expect("bob"),
        "relay\n"
    );
    // Applying the manifests again sets the target back to live.
    let applied = mailctl(&["apply", "-f", manifests.to_str().expect("utf-8")]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(
        wait_for(Duration::from_secs(60), || status_text()
            .contains("waiting for approval of cutover")),
        "{}\n{}",
        status_text(),
        logs()
    );
    let approved = mailctl(&["approve", "bob-to-eve"]);
    assert!(approved.status.success(), "{}", text(&approved));
    // Approving again waits for nothing: said, nothing changes.
    assert!(
        wait_for(Duration::from_secs(60), || status_text()
            .contains("reached live")),
        "{}\n{}",
        status_text(),
        logs()
    );
    let again = mailctl(&["approve", "bob-to-eve"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("waits for no approval (reached live)"),
        "{}",
        text(&again)
    );
    assert_eq!(
        fs::read_to_string(w.join("eve/main.cf")).expect("eve"),
        "delivering\n"
    );

    let history = text(&mailctl(&["history", "bob-to-eve"]));
    if std::env::var_os("SHOW_CONTROLLER_RUN").is_some() {
        eprintln!("{status}\n{history}\n{}", status_text());
    }
    for line in [
        "moving from the hosts as they are to prepare",
        "reached prepare",
        "cutover: release done",
        "admin rolled back bob-to-eve from cutover to prepare",
        "admin approved cutover",
        "point of no return: live (agents told)",
        "gate settle (run 1): passed: soaked 2s",
        "reached live",
    ] {
        assert!(history.contains(line), "{line:?} missing from\n{history}");
    }
    let json: Value =
        serde_json::from_slice(&mailctl(&["status", "-o", "json"]).stdout).expect("json");
    assert_eq!(json[0]["phase"], "live", "{json}");
    let phases = text(&mailctl(&["get", "phases"]));
    assert!(
        phases.contains("bob-to-eve  3  live     reached, target, point of no return"),
        "{phases}"
    );
    assert!(
        phases.contains("bob-to-eve  1  prepare  passed"),
        "{phases}"
    );
    let hosts = text(&mailctl(&["get", "hosts", "-o", "json"]));
    let hosts: Value = serde_json::from_str(&hosts).expect("json");
    assert_eq!(hosts.as_array().map(Vec::len), Some(2), "{hosts}");
    let described = text(&mailctl(&["describe", "migration", "bob-to-eve"]));
    assert!(
        described.contains("migration bob-to-eve: reached live"),
        "{described}"
    );
    assert!(described.contains("recent history:"), "{described}");
    assert!(described.contains("reached live"), "{described}");
    // The controller's metrics, for an admin: the phase (3 of 3), the
    // steps' durations, the gates' outcomes, the agents reachable.
    let metrics = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(admin.join("ca.pem"))
        .arg("--cert")
        .arg(admin.join("admin.pem"))
        .arg("--key")
        .arg(admin.join("admin.key"))
        .arg(format!("{url}/metrics"))
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    for line in [
        "mailctl_controller_phase{migration=\"bob-to-eve\"} 3",
        "mailctl_controller_paused{migration=\"bob-to-eve\"} 0",
        "mailctl_controller_gate_runs_total{migration=\"bob-to-eve\",gate=\"go-ahead\",outcome=\"passed\"} 1",
        "mailctl_controller_agent_reachable{migration=\"bob-to-eve\",host=\"eve\"} 1",
        "mailctl_controller_step_duration_seconds_count{migration=\"bob-to-eve\",step=\"acquire\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    stop.store(true, Ordering::Relaxed);
    let both = watcher.join().expect("watcher");
    let taken = samples.load(Ordering::Relaxed);
    assert!(taken > 100, "only {taken} samples");
    assert!(
        both.is_empty(),
        "the service IP was on both hosts at samples {both:?} of {taken}\n{}",
        logs()
    );
    drop(controller);
}

/// Two hosts with their agents, certificates, and a controller's
/// configuration, in `work`: one migration lab.
struct Lab {
    work: tempfile::TempDir,
    bob: Host,
    eve: Host,
    _agents: Vec<Killed>,
    port: u16,
}

impl Lab {
    fn new(tag: &str, subnet: u8) -> Lab {
        require_root();
        let work = tempfile::tempdir().expect("tmp");
        let w = work.path();
        let bob = Host::new(&format!("{tag}b"), subnet);
        let eve = Host::new(&format!("{tag}e"), subnet + 1);
        let tls = w.join("tls");
        let certs = Command::new(env!("CARGO_BIN_EXE_mailctl"))
            .args(["certs", "init", "--out"])
            .arg(&tls)
            .args(["--agent", &format!("bob={}", bob.address)])
            .args(["--agent", &format!("eve={}", eve.address)])
            .output()
            .expect("certs");
        assert!(certs.status.success(), "{}", text(&certs));
        let mut agents = Vec::new();
        for (name, host) in [("bob", &bob), ("eve", &eve)] {
            let d = w.join(name);
            fs::create_dir_all(&d).expect("dir");
            fs::write(
                d.join("desired.yaml"),
                format!("apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: {name}}}\nspec: {{}}\n"),
            )
            .expect("desired");
            let folder = tls.join(format!("agent-{name}"));
            fs::write(
                d.join("agent.toml"),
                format!(
                    "listen = \"{}:7443\"\nhost = \"{name}\"\ndesired_state = \"{}\"\nstate_dir = \"{}\"\nresync_seconds = 3600\nconfirm_timeout_seconds = 60\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    host.address,
                    d.join("desired.yaml").display(),
                    d.join("state").display(),
                    folder.join("ca.pem").display(),
                    folder.join("agent.pem").display(),
                    folder.join("agent.key").display(),
                ),
            )
            .expect("config");
            agents.push(Killed(host.spawn(
                &[
                    "agent",
                    "--config",
                    d.join("agent.toml").to_str().expect("utf-8"),
                ],
                &d.join("agent.log"),
            )));
        }
        let port = free_port();
        let cdir = tls.join("controller");
        fs::write(
            w.join("controller.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                w.join("controller-state").display(),
                cdir.join("ca.pem").display(),
                cdir.join("controller.pem").display(),
                cdir.join("controller.key").display(),
            ),
        )
        .expect("controller config");
        let manifests = w.join("manifests");
        fs::create_dir_all(&manifests).expect("dir");
        fs::write(
            manifests.join("migration.yaml"),
            migration(w, &bob, &eve, false),
        )
        .expect("manifests");
        Lab {
            work,
            bob,
            eve,
            _agents: agents,
            port,
        }
    }

    fn controller(&self) -> Killed {
        let w = self.work.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(w.join("controller.log"))
            .expect("log");
        Killed(
            Command::new(env!("CARGO_BIN_EXE_mailctl"))
                .args(["controller", "--config"])
                .arg(w.join("controller.toml"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("controller"),
        )
    }

    fn mailctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailctl"))
            .args(args)
            .args([
                "--controller",
                &format!("https://127.0.0.1:{}", self.port),
                "--tls-dir",
            ])
            .arg(self.work.path().join("tls/admin-admin"))
            .output()
            .expect("mailctl")
    }

    fn status(&self) -> Option<Value> {
        let out = self.mailctl(&["status", "bob-to-eve", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
            .flatten()
            .map(|v| v[0].clone())
    }

    fn history_len(&self) -> Option<usize> {
        let out = self.mailctl(&["history", "bob-to-eve", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
            .flatten()
            .and_then(|v| v.as_array().map(Vec::len))
    }

    fn reached_live(&self) -> bool {
        self.status()
            .is_some_and(|s| s["phase"] == "live" && s.get("transition").is_none())
    }

    /// What a finished migration leaves: where the service IP is, the files.
    fn outcome(&self) -> (bool, bool, String, String) {
        let w = self.work.path();
        (
            Host::holds(&self.bob.ns, SERVICE_IP),
            Host::holds(&self.eve.ns, SERVICE_IP),
            fs::read_to_string(w.join("bob/main.cf")).unwrap_or_default(),
            fs::read_to_string(w.join("eve/main.cf")).unwrap_or_default(),
        )
    }

    fn logs(&self) -> String {
        ["bob/agent.log", "eve/agent.log", "controller.log"]
            .iter()
            .map(|l| {
                format!(
                    "--- {l}\n{}",
                    fs::read_to_string(self.work.path().join(l)).unwrap_or_default()
                )
            })
            .collect()
    }

    fn apply(&self) {
        let manifests = self.work.path().join("manifests");
        let out = self.mailctl(&["apply", "-f", manifests.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}\n{}", text(&out), self.logs());
    }
}

#[test]
fn a_controller_killed_at_every_step_boundary_ends_like_an_uninterrupted_run() {
    // The uninterrupted run: its outcome, and how many history lines (one
    // per step boundary, roughly) it writes.
    let lab = Lab::new("u", 11);
    let controller = lab.controller();
    assert!(wait_for(Duration::from_secs(20), || lab.status().is_some()
        || lab.mailctl(&["status"]).status.success()));
    lab.apply();
    assert!(
        wait_for(Duration::from_secs(60), || lab.reached_live()),
        "{:?}\n{}",
        lab.status(),
        lab.logs()
    );
    let expected = lab.outcome();
    assert_eq!((expected.0, expected.1), (false, true), "{}", lab.logs());
    let boundaries = lab.history_len().expect("history");
    drop(controller);
    drop(lab);

    for cut in 1..boundaries {
        let lab = Lab::new("k", 13);
        let first = lab.controller();
        assert!(wait_for(Duration::from_secs(20), || lab
            .mailctl(&["status"])
            .status
            .success()));
        lab.apply();
        // Killed (SIGKILL) as soon as the history has `cut` lines.
        assert!(
            wait_for(Duration::from_secs(60), || lab
                .history_len()
                .is_some_and(|n| n >= cut)),
            "cut {cut}: {}",
            lab.logs()
        );
        drop(first);
        let _second = lab.controller();
        assert!(
            wait_for(Duration::from_secs(60), || lab.reached_live()),
            "cut {cut}: {:?}\n{}",
            lab.status(),
            lab.logs()
        );
        assert_eq!(lab.outcome(), expected, "cut {cut}\n{}", lab.logs());
    }
}

#[test]
fn uploads_that_would_break_the_rules_are_refused_and_change_nothing() {
    let lab = Lab::new("r", 15);
    let w = lab.work.path();
    let _controller = lab.controller();
    assert!(wait_for(Duration::from_secs(20), || lab
        .mailctl(&["status"])
        .status
        .success()));
    let manifests = w.join("manifests");
    let upload = |text: &str| {
        fs::write(manifests.join("migration.yaml"), text).expect("manifests");
        let out = lab.mailctl(&["apply", "-f", manifests.to_str().expect("utf-8")]);
        (out.status.code(), text_of(&out))
    };
    let good = migration(w, &lab.bob, &lab.eve, true);
    // A second migration over the same agents: each would keep the
    // service-IP rule only within itself.
    let twice = format!(
        "{good}---\n{}",
        good.replace("name: bob-to-eve", "name: again")
            .replace("migration: bob-to-eve", "migration: again")
    );
    let (code, said) = upload(&twice);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("are the same agent"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    assert!(lab.mailctl(&["status", "again"]).status.code() == Some(1));
    // The real one, up to its approval gate in cutover.
    let (code, said) = upload(&good);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        wait_for(Duration::from_secs(60), || text_of(
            &lab.mailctl(&["status", "bob-to-eve"])
        )
        .contains("waiting for approval of cutover")),
        "{}",
        lab.logs()
    );
    // Dropping it while it moves: refused.
    let other = good
        .replace("name: bob-to-eve", "name: other")
        .replace("migration: bob-to-eve", "migration: other");
    let (code, said) = upload(&other);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("the new manifests drop migration bob-to-eve, which is moving to cutover"),
        "{said}"
    );
    // Approve, reach live (the point of no return); then a target back is refused.
    let approved = lab.mailctl(&["approve", "bob-to-eve"]);
    assert!(approved.status.success(), "{}", text_of(&approved));
    assert!(
        wait_for(Duration::from_secs(60), || lab.reached_live()),
        "{}",
        lab.logs()
    );
    let (code, said) = upload(&good.replace("targetPhase: live", "targetPhase: prepare"));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("at or past its point of no return (live)"),
        "{said}"
    );
    let (code, said) = upload(&good.replace("pointOfNoReturn: live", "pointOfNoReturn: cutover"));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("has passed its point of no return (live); it cannot be moved"),
        "{said}"
    );
    assert!(lab.reached_live());
    assert!(lab.outcome().1, "the service IP stays on eve");
}

fn text_of(out: &Output) -> String {
    text(out)
}
