//! The agent's API outlives strangers (issue 9, item 2): the real `mailctl
//! agent` under a 128-descriptor limit (`prlimit`, util-linux), 500 idle
//! TCP connections and a client that stalls in the middle of its TLS
//! handshake. Before, one EMFILE ended the listener for good while the
//! daemon ran on; now the controller's certificate gets `/v1/status`
//! within the handshake timeout plus a second, and the stalled client is
//! cut at the handshake timeout.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

const MAILCTL: &str = env!("CARGO_BIN_EXE_mailctl");
/// The agent's TLS handshake timeout (`mailctl_agent::api::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent process; killed (by its own pid) when the test ends.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `GET /v1/status` with the controller's certificate: the HTTP status (0:
/// no answer) and how long it took.
fn controller_status(tls: &Path, port: u16, max_time: u64) -> (u16, Duration) {
    let started = Instant::now();
    let folder = tls.join("controller");
    let path = |name: &str| folder.join(name).display().to_string();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(max_time.to_string())
        .arg("--resolve")
        .arg(format!("eve:{port}:127.0.0.1"))
        .args(["--cacert", &path("ca.pem")])
        .args(["--cert", &path("controller.pem")])
        .args(["--key", &path("controller.key")])
        .arg(format!("https://eve:{port}/v1/status"))
        .output()
        .expect("curl (apt-get install -y curl)");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, started.elapsed())
}

#[test]
fn the_controller_gets_through_idle_connections_and_a_stalled_handshake() {
    let found = Command::new("prlimit").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`prlimit` is missing: apt-get install -y util-linux"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let tls = d.join("tls");
    let certs = Command::new(MAILCTL)
        .args(["certs", "init", "--out"])
        .arg(&tls)
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
    let agent_tls = tls.join("agent-eve");
    fs::write(
        d.join("agent.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndesired_state = \"{}\"\nstate_dir = \"{}\"\nresync_seconds = 3600\nconfirm_timeout_seconds = 0\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n",
            d.join("desired.yaml").display(),
            d.join("state").display(),
            agent_tls.join("ca.pem").display(),
            agent_tls.join("agent.pem").display(),
            agent_tls.join("agent.key").display(),
            agent_tls.join("ca.crl").display(),
        ),
    )
    .expect("config");
    let log_path = d.join("agent.log");
    let _agent = Agent(
        Command::new("prlimit")
            .args(["--nofile=128", "--", MAILCTL, "agent", "--config"])
            .arg(d.join("agent.toml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path).expect("log"))
            .spawn()
            .expect("spawn the agent"),
    );
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    let up = Instant::now();
    while controller_status(&tls, port, 5).0 != 200 {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "the agent did not answer within 30 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 500 strangers connect and say nothing; one more starts a TLS
    // handshake (a ClientHello record header and a few bytes) and stalls.
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("idle connection"))
        .collect();
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).expect("stalled connection");
    stalled
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .expect("partial ClientHello");
    let stalled_at = Instant::now();

    let (code, took) = controller_status(&tls, port, 30);
    assert_eq!(code, 200, "no answer for the controller:\n{}", log());
    assert!(
        took <= HANDSHAKE_TIMEOUT + Duration::from_secs(1),
        "the controller waited {took:?}"
    );

    // The stalled handshake is cut at the timeout, not held for ever.
    stalled
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT * 2))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let read = stalled.read(&mut buf);
    let cut_after = stalled_at.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?} after {cut_after:?}"
    );
    assert!(
        cut_after >= HANDSHAKE_TIMEOUT - Duration::from_secs(1)
            && cut_after <= HANDSHAKE_TIMEOUT + Duration::from_secs(2),
        "the stalled handshake was cut after {cut_after:?}"
    );
    drop(idle);
    eprintln!(
        "the controller got its answer in {took:?}; the stalled handshake was cut after {cut_after:?}"
    );

    // Still serving, and the trouble was logged, rate-limited.
    assert_eq!(controller_status(&tls, port, 10).0, 200, "{}", log());
    let log = log();
    let limit_lines = log
        .lines()
        .filter(|l| l.contains("API connection limit reached"))
        .count();
    assert!(
        (1..=3).contains(&limit_lines),
        "{limit_lines} lines:\n{log}"
    );
    assert!(log.contains("held_back="), "{log}");
    eprintln!("{log}");
}
