//! Bounded input through the agent: every adversarial manifest of
//! `tests/bounded.rs`, sent as the body of `PUT /v1/desired`, is refused
//! with 422 and a bounded answer, and the agent's peak resident size over
//! the whole run stays within 256 MiB (a long key over a list once grew it
//! from 16 MB to 2 GB).
//!
//! The agent runs inside its own network namespace (it owns addresses and a
//! firewall table; here its desired state is an empty host). Its peak is
//! read from the kernel's accounting of this test's children
//! (`getrusage(RUSAGE_CHILDREN)`) after it has ended; it is the only large
//! child of this test binary. Needs root, like the other namespace tests.

use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

mod bounded_inputs;

use bounded_inputs::{PEAK_LIMIT_KIB, REPORT_LIMIT, children_peak_kib, inputs};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A network namespace with only `lo`, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("mctl-bounded-{}", std::process::id());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {} (needs root): {}",
                args.join(" "),
                text(&out)
            );
        }
        Netns(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The agent process, ended (and waited for) on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_refuses_every_adversarial_body_within_256_mib() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let d = dir.path();
    let certs = Command::new(env!("CARGO_BIN_EXE_mailctl"))
        .args(["certs", "init", "--out"])
        .arg(d.join("tls"))
        .args(["--agent", "eve=127.0.0.1"])
        .output()
        .expect("certs");
    assert!(certs.status.success(), "{}", text(&certs));
    fs::write(
        d.join("desired.yaml"),
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {name: eve}\nspec: {}\n",
    )
    .expect("desired");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    fs::write(
        d.join("agent.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndesired_state = \"{}\"\nstate_dir = \"{}\"\nresync_seconds = 3600\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            d.join("desired.yaml").display(),
            d.join("state").display(),
            d.join("tls/agent-eve/ca.pem").display(),
            d.join("tls/agent-eve/agent.pem").display(),
            d.join("tls/agent-eve/agent.key").display(),
        ),
    )
    .expect("config");

    let ns = Netns::new();
    let before = children_peak_kib();
    let mut agent = Agent(
        // Under a 4 GiB address-space limit: a version that does not bound
        // its input fails here instead of taking the machine's memory.
        ns.command("sh")
            .arg("-c")
            .arg("ulimit -v 4194304 && exec \"$0\" agent --config \"$1\"")
            .arg(env!("CARGO_BIN_EXE_mailctl"))
            .arg(d.join("agent.toml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("agent.log")).expect("log"))
            .spawn()
            .expect("agent"),
    );
    let curl = |args: &[&str], route: &str| -> Output {
        ns.command("curl")
            .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--resolve")
            .arg(format!("eve:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(d.join("tls/controller/ca.pem"))
            .arg("--cert")
            .arg(d.join("tls/controller/controller.pem"))
            .arg("--key")
            .arg(d.join("tls/controller/controller.key"))
            .args(args)
            .arg(format!("https://eve:{port}{route}"))
            .output()
            .expect("curl")
    };
    let started = Instant::now();
    while !String::from_utf8_lossy(&curl(&[], "/v1/health").stdout).ends_with("\n200") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent answers; log:\n{}",
            fs::read_to_string(d.join("agent.log")).unwrap_or_default()
        );
        std::thread::yield_now();
    }

    // Problems are gathered, so the peak is measured and shown in any case.
    let mut wrong = Vec::new();
    let body = d.join("body.yaml");
    for (name, input, _) in inputs() {
        fs::write(&body, &input).expect("body");
        let sent = Instant::now();
        let out = curl(
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", body.display()),
            ],
            "/v1/desired",
        );
        let answer = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "{name}: {} bytes, answered in {:.2} s",
            input.len(),
            sent.elapsed().as_secs_f64()
        );
        if !answer.ends_with("\n422") {
            wrong.push(format!(
                "{name}: not refused as invalid:\n{}{}",
                answer.chars().take(2000).collect::<String>(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if out.stdout.len() > REPORT_LIMIT {
            wrong.push(format!("{name}: a {} byte answer", out.stdout.len()));
        }
    }
    // Still serving.
    let status = curl(&[], "/v1/status");
    if !String::from_utf8_lossy(&status.stdout).ends_with("\n200") {
        wrong.push(format!("no status after the inputs: {}", text(&status)));
    }

    let _ = agent.0.kill();
    let ended = agent.0.wait().expect("agent ends");
    let peak = children_peak_kib();
    eprintln!("agent peak {} MiB ({ended})", peak / 1024);
    assert!(before < PEAK_LIMIT_KIB);
    assert!(
        peak <= PEAK_LIMIT_KIB && wrong.is_empty(),
        "the agent peaked at {} MiB (limit 256 MiB); {}",
        peak / 1024,
        wrong.join("\n")
    );
}
