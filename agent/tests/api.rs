//! The API answers only clients that present a certificate from the mailctl
//! CA, and each only what its role may do. Real TLS on a loopback port, the
//! production daemon (`daemon::run`: its router, authorization and
//! listener), certificates made by `pki::init`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mailctl_agent::api::{self, TlsFiles};
use mailctl_agent::config::AgentConfig;
use mailctl_agent::daemon;
use mailctl_agent::pki::{self, AgentIdentity, Subject};
use mailctl_agent::roles::Role;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What the desired state keeps from everyone but the controller.
const SECRET: &str = "password = s3cret-7f3a";

/// Everything the agent logs, from every test of this binary (each test
/// looks for its own certificate's serial).
fn logged() -> String {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        log
    });
    String::from_utf8_lossy(&log.lock().expect("log")).into_owned()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn agent_subject(name: &str) -> Subject {
    Subject::Agent(AgentIdentity {
        name: name.into(),
        addresses: vec!["127.0.0.1".into()],
    })
}

/// A CA with the controller, admin alice and the agents eve and bob.
fn make_pki(dir: &Path) {
    pki::init(
        dir,
        &[
            Subject::Controller(vec!["127.0.0.1".into()]),
            Subject::Admin("alice".into()),
            agent_subject("eve"),
            agent_subject("bob"),
        ],
        pki::DEFAULT_DAYS,
    )
    .expect("pki");
}

/// The files of one role's folder, as `mailctl certs init` wrote them.
fn files(tls: &Path, role: &Role) -> TlsFiles {
    let folder = tls.join(pki::folder(role));
    let (cert, key) = pki::cert_and_key(role);
    TlsFiles {
        ca: folder.join(pki::CA_CERT),
        cert: folder.join(cert),
        key: folder.join(key),
        crl: Some(folder.join(pki::CRL)),
    }
}

fn client(tls: &Path, role: &Role) -> Arc<rustls::ClientConfig> {
    api::client_config(&files(tls, role)).expect("client config")
}

fn desired(dir: &Path, content: &str) -> String {
    format!(
        "apiVersion: mailctl/v1alpha1\nkind: Host\nmetadata: {{name: eve}}\nspec:\n  files:\n    - path: {}\n      content: \"{content}\\n\"\n      mode: \"0600\"\n",
        dir.join("secret.conf").display()
    )
}

/// The production daemon for host eve, on a free loopback port.
struct RunningAgent {
    addr: SocketAddr,
    desired_path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A CA ([`make_pki`]) in `DIR/tls` and the agent eve running with it.
struct Lab {
    dir: tempfile::TempDir,
    tls: PathBuf,
    agent: RunningAgent,
}

impl Lab {
    async fn start() -> Lab {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = dir.path().join("tls");
        make_pki(&tls);
        let agent = start_agent(dir.path()).await;
        Lab { dir, tls, agent }
    }
}

async fn start_agent(dir: &Path) -> RunningAgent {
    logged();
    let desired_path = dir.join("desired.yaml");
    std::fs::write(&desired_path, desired(dir, SECRET)).expect("desired");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tls = dir.join("tls");
    let config = AgentConfig {
        listen: addr,
        desired_state: desired_path.clone(),
        state_dir: dir.join("state"),
        resync_seconds: 3600,
        confirm_timeout_seconds: 0,
        tls: files(&tls, &Role::Agent("eve".into())),
        ..AgentConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        daemon::run(config, async {
            let _ = stopped.await;
        })
        .await
        .expect("agent runs");
    });
    let running = RunningAgent {
        addr,
        desired_path,
        stop: Some(stop),
        task,
    };
    let controller = client(&tls, &Role::Controller);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = request(addr, controller.clone(), "GET", "/v1/health", "").await {
            return running;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not answer within 30 s:\n{}",
            logged()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request over TLS with `config`: the status and body, or `None` when
/// no HTTP answer came (the handshake refused the client, or nothing listens yet).
async fn request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, String)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("eve").expect("name");
    let mut tls = TlsConnector::from(config).connect(name, tcp).await.ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: eve\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.ok()?;
    tls.write_all(body.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn client_without_certificate(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("ca");
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A client certificate signed by the CA in `tls` with whatever SANs and
/// usages an attacker (or a careless operator) might have got issued.
fn crafted(
    tls: &Path,
    name: &str,
    sans: Vec<rcgen::SanType>,
    usages: Vec<rcgen::ExtendedKeyUsagePurpose>,
) -> Arc<rustls::ClientConfig> {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca.key")).expect("key"))
            .expect("ca key");
    let ca_pem = std::fs::read_to_string(tls.join("ca.pem")).expect("ca");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.extended_key_usages = usages;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let folder = tls.join(format!("crafted-{name}"));
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(folder.join("key.pem"), key.serialize_pem()).expect("key");
    api::client_config(&TlsFiles {
        ca: tls.join("ca.pem"),
        cert: folder.join("cert.pem"),
        key: folder.join("key.pem"),
        crl: None,
    })
    .expect("client")
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_ca_get_an_answer() {
    let Lab {
        dir: _ours,
        tls,
        agent,
    } = Lab::start().await;
    let theirs = tempfile::tempdir().expect("tmp");
    make_pki(&theirs.path().join("tls"));

    // The controller's certificate, signed by our CA: answered.
    let answer = request(
        agent.addr,
        client(&tls, &Role::Controller),
        "GET",
        "/v1/health",
        "",
    )
    .await;
    assert_eq!(answer, Some((200, "ok".into())));

    // No certificate at all: no HTTP answer.
    let anonymous = client_without_certificate(&tls.join("ca.pem"));
    assert_eq!(
        request(agent.addr, anonymous, "GET", "/v1/health", "").await,
        None
    );

    // A certificate from another CA (trusting our server): no HTTP answer.
    let mut foreign = files(&theirs.path().join("tls"), &Role::Controller);
    foreign.ca = tls.join("ca.pem");
    foreign.crl = None;
    let foreign = api::client_config(&foreign).expect("client");
    assert_eq!(
        request(agent.addr, foreign, "GET", "/v1/health", "").await,
        None
    );

    // Plain HTTP on the TLS port: no HTTP answer either.
    let mut tcp = TcpStream::connect(agent.addr).await.expect("tcp");
    tcp.write_all(b"GET /v1/health HTTP/1.1\r\nHost: eve\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

/// The attack of issue 9: bob's agent certificate read eve's desired state
/// with its secrets (200) and replaced it (202), which runs tasks as root.
#[tokio::test]
async fn an_agent_certificate_cannot_read_or_replace_another_agents_desired_state() {
    let Lab { dir, tls, agent } = Lab::start().await;
    let before = std::fs::read_to_string(&agent.desired_path).expect("desired");
    let takeover = desired(dir.path(), "password = attacker");

    // Bob's own certificate, as `certs init` made it: a server certificate,
    // refused as a client at the handshake.
    let bob = Role::Agent("bob".into());
    for (method, body) in [("GET", ""), ("PUT", takeover.as_str())] {
        let answer = request(agent.addr, client(&tls, &bob), method, "/v1/desired", body).await;
        assert_eq!(
            answer, None,
            "{method} /v1/desired with bob's agent certificate"
        );
    }

    // An agent role on a certificate that may act as a client (a careless
    // operator's, or one from before roles), and one without any role (as
    // every certificate was before): 403, with the reason, and a log line
    // naming the certificate.
    use rcgen::{ExtendedKeyUsagePurpose::*, SanType};
    let agent_role = crafted(
        &tls,
        "agent bob",
        vec![SanType::URI(
            Role::Agent("bob".into()).uri().try_into().expect("uri"),
        )],
        vec![ServerAuth, ClientAuth],
    );
    let no_role = crafted(
        &tls,
        "eve",
        vec![SanType::DnsName("eve".try_into().expect("dns"))],
        vec![ServerAuth, ClientAuth],
    );
    for (config, says) in [
        (agent_role, "agent bob may not"),
        (no_role, "names no mailctl role"),
    ] {
        for (method, path, body) in [
            ("GET", "/v1/desired", ""),
            ("PUT", "/v1/desired", takeover.as_str()),
            ("GET", "/v1/status", ""),
            ("POST", "/v1/sync/final", ""),
            ("GET", "/no/such/route", ""),
        ] {
            let (status, answer) = request(agent.addr, config.clone(), method, path, body)
                .await
                .expect("an HTTP answer");
            assert_eq!(status, 403, "{method} {path}: {answer}");
            let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
            assert_eq!(answer["kind"], "forbidden");
            let reason = answer["message"].as_str().expect("message");
            assert!(reason.contains(says), "{reason}");
            assert!(!answer.to_string().contains("s3cret"), "{answer}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&agent.desired_path).expect("desired"),
        before
    );
    let controller = client(&tls, &Role::Controller);
    let (status, body) = request(agent.addr, controller, "GET", "/v1/desired", "")
        .await
        .expect("the agent still answers the controller");
    assert_eq!(status, 200);
    assert!(body.contains(SECRET), "{body}");
    let log = logged();
    let refused = log
        .lines()
        .find(|l| l.contains("refused an API request") && l.contains("subject=agent bob"))
        .unwrap_or_else(|| panic!("no log line names the certificate:\n{log}"));
    assert!(
        refused.contains("serial=") && refused.contains("role=agent bob"),
        "{refused}"
    );
    assert!(
        refused.contains("method=GET") || refused.contains("method=PUT"),
        "{refused}"
    );
}

#[tokio::test]
async fn admins_read_and_run_syncs_the_controller_does_everything() {
    let Lab { dir, tls, agent } = Lab::start().await;
    let admin = client(&tls, &Role::Admin("alice".into()));
    let controller = client(&tls, &Role::Controller);
    let replacement = desired(dir.path(), "password = rotated");

    let ask = |config: &Arc<rustls::ClientConfig>,
               method: &'static str,
               path: &'static str,
               body: String| {
        let config = config.clone();
        async move {
            request(agent.addr, config, method, path, &body)
                .await
                .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer"))
        }
    };
    // Reads, a sync run and a confirmation: what the handler says, not 403
    // (no job `final` is declared: 404; nothing awaits confirmation: 409).
    for (method, path, expected) in [
        ("GET", "/v1/health", 200),
        ("GET", "/v1/status", 200),
        ("GET", "/v1/plan", 200),
        ("GET", "/metrics", 200),
        ("GET", "/v1/sync/final", 404),
        ("POST", "/v1/sync/final", 404),
        ("POST", "/v1/confirm/1", 409),
        ("GET", "/no/such/route", 404),
    ] {
        let (status, body) = ask(&admin, method, path, String::new()).await;
        assert_eq!(status, expected, "admin {method} {path}: {body}");
        assert!(!body.contains("s3cret"), "admin {method} {path}: {body}");
    }
    // The desired state (secrets inlined) and the point of no return are
    // the controller's alone.
    for (method, path, body) in [
        ("GET", "/v1/desired", String::new()),
        ("PUT", "/v1/desired", replacement.clone()),
        ("POST", "/v1/point-of-no-return", String::new()),
    ] {
        let (status, answer) = ask(&admin, method, path, body).await;
        assert_eq!(status, 403, "admin {method} {path}: {answer}");
        assert!(answer.contains("only the controller may"), "{answer}");
        assert!(!answer.contains("s3cret"), "{answer}");
    }
    assert!(logged().contains("subject=admin alice"));

    let (status, body) = ask(&controller, "GET", "/v1/desired", String::new()).await;
    assert_eq!(status, 200);
    assert!(body.contains(SECRET), "{body}");
    let (status, body) = ask(&controller, "GET", "/v1/status", String::new()).await;
    assert_eq!(status, 200, "{body}");
    let watched = std::fs::read_to_string(&agent.desired_path).expect("desired");
    let (status, body) = ask(&controller, "PUT", "/v1/desired", replacement.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"generation\""), "{body}");
    // In force, and the admin's watched file untouched.
    let (_, now) = ask(&controller, "GET", "/v1/desired", String::new()).await;
    assert!(now.contains("password = rotated"), "{now}");
    assert_eq!(
        std::fs::read_to_string(&agent.desired_path).expect("desired"),
        watched
    );
    let (status, body) = ask(&controller, "POST", "/v1/point-of-no-return", String::new()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_revoked_certificate_fails_the_handshake_without_a_restart() {
    let Lab {
        dir: _dir,
        tls,
        agent,
    } = Lab::start().await;
    let admin = client(&tls, &Role::Admin("alice".into()));
    let controller = client(&tls, &Role::Controller);
    assert_eq!(
        request(agent.addr, admin.clone(), "GET", "/v1/status", "")
            .await
            .map(|a| a.0),
        Some(200)
    );

    // `certs revoke` refreshes the copy in eve's folder, the file the agent
    // reads ([tls] crl): the next connection already sees it.
    let revoked = pki::revoke(&tls, &Role::Admin("alice".into())).expect("revoke");
    assert!(
        revoked.crls.contains(&tls.join("agent-eve").join(pki::CRL)),
        "{revoked:?}"
    );
    assert_eq!(
        request(agent.addr, admin, "GET", "/v1/status", "").await,
        None
    );
    assert_eq!(
        request(agent.addr, controller, "GET", "/v1/status", "")
            .await
            .map(|a| a.0),
        Some(200)
    );
    assert!(logged().contains("TLS files changed"));

    // A revoked agent: clients that read ca.crl (the CLI's --tls-dir) refuse it.
    pki::revoke(&tls, &Role::Agent("eve".into())).expect("revoke eve");
    let controller =
        api::client_config(&mailctl_api::client::client_files(&tls.join("controller")))
            .expect("client");
    assert_eq!(
        request(agent.addr, controller, "GET", "/v1/status", "").await,
        None
    );
    // The name can be issued again.
    pki::add(&tls, &[agent_subject("eve")], 30).expect("a new certificate for eve");
}

#[tokio::test]
async fn a_silent_client_is_cut_after_the_header_timeout() {
    let Lab {
        dir: _dir,
        tls,
        agent,
    } = Lab::start().await;
    let tcp = TcpStream::connect(agent.addr).await.expect("tcp");
    let name = ServerName::try_from("eve").expect("name");
    let mut stream = TlsConnector::from(client(&tls, &Role::Controller))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("the agent closes a connection that sends no request");
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= api::HEADER_READ_TIMEOUT - Duration::from_secs(1)
            && waited <= api::HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "{waited:?}"
    );
}

#[test]
fn certificates_hold_one_role_each_and_are_valid_from_now() {
    use x509_parser::extensions::GeneralName;
    let dir = tempfile::tempdir().expect("tmp");
    let tls = dir.path().join("tls");
    #[allow(
        clippy::disallowed_methods,
        reason = "certificate dates are wall-clock time"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    pki::init(
        &tls,
        &[
            Subject::Controller(vec!["127.0.0.1".into()]),
            Subject::Admin("alice".into()),
            agent_subject("eve"),
        ],
        30,
    )
    .expect("init");
    pki::add(&tls, &[Subject::Admin("bob".into())], 7).expect("add");
    // (role, days, serves, is a client): the controller is both (a client
    // of the agents, the server of the admins' API); an agent only serves.
    for (role, days, server, client) in [
        (Role::Controller, 30, true, true),
        (Role::Admin("alice".into()), 30, false, true),
        (Role::Agent("eve".into()), 30, true, false),
        (Role::Admin("bob".into()), 7, false, true),
    ] {
        let pem = std::fs::read(files(&tls, &role).cert).expect("cert");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let validity = cert.validity();
        let from = validity.not_before.timestamp();
        assert!(
            (now - 5..=now + 5).contains(&from),
            "{role}: starts {from}, now {now}"
        );
        assert_eq!(
            validity.not_after.timestamp() - from,
            days * 86_400,
            "{role}"
        );
        let usage = cert.extended_key_usage().expect("eku").expect("eku").value;
        assert_eq!(
            (usage.server_auth, usage.client_auth),
            (server, client),
            "{role}"
        );
        let uris: Vec<&str> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("san")
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![role.uri()], "{role}");
    }
    let error = pki::add(&tls, &[Subject::Admin("carol".into())], 5000).expect_err("too long");
    assert!(
        error.to_string().contains("would outlast the CA"),
        "{error}"
    );
}

#[test]
fn init_and_add_refuse_to_overwrite_and_keep_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    make_pki(dir.path());
    for key in [
        "ca.key",
        "controller/controller.key",
        "admin-alice/admin.key",
        "agent-eve/agent.key",
    ] {
        let mode = std::fs::metadata(dir.path().join(key))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = pki::init(dir.path(), &[], 30);
    assert!(matches!(again, Err(pki::PkiError::Exists(_))), "{again:?}");
    let twice = pki::add(dir.path(), &[agent_subject("eve")], 30);
    assert!(
        matches!(twice, Err(pki::PkiError::FolderExists(_))),
        "{twice:?}"
    );
    let bad = pki::add(dir.path(), &[Subject::Admin("../x".into())], 30);
    assert!(matches!(bad, Err(pki::PkiError::BadName(_))), "{bad:?}");
    // The CLI side finds the admin's certificate in an admin's folder, the
    // controller's in the controller's.
    let admin = mailctl_api::client::client_files(&dir.path().join("admin-alice"));
    assert!(
        admin.cert.ends_with("admin.pem") && admin.crl.is_some(),
        "{admin:?}"
    );
    let controller = mailctl_api::client::client_files(&dir.path().join("controller"));
    assert!(
        controller.cert.ends_with("controller.pem"),
        "{controller:?}"
    );
}

/// The typed client of `mailctl-api`, as the CLI and the controller use it,
/// against the production daemon: every endpoint, and errors as kinds.
#[tokio::test]
async fn the_typed_client_reads_every_answer_and_every_refusal_as_a_kind() {
    use mailctl_api::{AgentClient, ClientError, ErrorKind, GenerationOutcome};
    let Lab { dir, tls, agent } = Lab::start().await;
    let url = format!("https://{}", agent.addr);
    let controller = AgentClient::new(&url, &files(&tls, &Role::Controller))
        .expect("client")
        .expect_agent("eve");
    let admin = AgentClient::new(&url, &files(&tls, &Role::Admin("alice".into())))
        .expect("client")
        .expect_agent("eve");

    controller.health().await.expect("health");
    let status = controller.status().await.expect("status");
    assert_eq!(status.host.as_deref(), Some("eve"));
    let in_force = controller
        .desired()
        .await
        .expect("desired")
        .expect("a state");
    assert_eq!(in_force.generation, status.generation);
    assert!(in_force.yaml.contains(SECRET));
    assert!(!format!("{in_force:?}").contains(SECRET), "{in_force:?}");
    let plan = controller.plan().await.expect("plan");
    assert_eq!(plan.generation, in_force.generation);
    let file = dir.path().join("secret.conf");
    let name = format!("file {}", file.display());
    assert!(
        plan.resources.iter().any(|r| r.resource == name),
        "{plan:?}"
    );
    assert!(!format!("{plan:?}").contains(SECRET));

    // A state that does not validate: Invalid, nothing stored.
    let invalid = controller
        .put_desired("kind: Host\nspec: [\n")
        .await
        .expect_err("invalid");
    assert_eq!(invalid.kind(), Some(ErrorKind::Invalid), "{invalid}");
    assert!(!invalid.retry_can_help());
    assert_eq!(
        controller.status().await.expect("status").generation,
        status.generation
    );
    // A new state: its generation; the same again: the same generation.
    let replacement = desired(dir.path(), "rotated");
    let generation = controller.put_desired(&replacement).await.expect("put");
    assert_eq!(generation, status.generation + 1);
    assert_eq!(
        controller.put_desired(&replacement).await.expect("again"),
        generation
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = controller
            .status()
            .await
            .expect("status")
            .outcome(generation);
        if outcome
            == (GenerationOutcome::Converged {
                awaiting_confirmation: false,
            })
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{outcome}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "rotated\n");
    // Nothing awaits confirmation (the timeout is 0): a conflict.
    let conflict = admin.confirm(generation).await.expect_err("conflict");
    assert_eq!(conflict.kind(), Some(ErrorKind::Conflict), "{conflict}");
    // Sync: no such job.
    assert!(admin.sync_status("final").await.expect("status").is_none());
    let missing = admin.sync_start("final").await.expect_err("no job");
    assert_eq!(missing.kind(), Some(ErrorKind::NotFound), "{missing}");
    assert!(
        missing
            .to_string()
            .contains("declares no sync job final (it declares none)"),
        "{missing}"
    );
    // The controller's alone.
    for refused in [
        admin
            .desired()
            .await
            .map(|_| ())
            .expect_err("admin desired"),
        admin
            .put_desired(&replacement)
            .await
            .map(|_| ())
            .expect_err("admin put"),
        admin.point_of_no_return().await.expect_err("admin pnr"),
    ] {
        assert_eq!(refused.kind(), Some(ErrorKind::Forbidden), "{refused}");
        assert!(
            refused.to_string().contains("only the controller may"),
            "{refused}"
        );
    }
    controller.point_of_no_return().await.expect("pnr");
    assert!(
        admin
            .metrics()
            .await
            .expect("metrics")
            .contains("mailctl_agent_desired_generation")
    );
    // The address leads to eve's agent: a client for bob refuses it.
    let wrong = AgentClient::new(&url, &files(&tls, &Role::Controller))
        .expect("client")
        .expect_agent("bob");
    let error = wrong.status().await.expect_err("not bob");
    assert!(matches!(error, ClientError::WrongAgent { .. }), "{error}");
}

/// An agent refuses to start with a certificate that is not its own, and
/// a second agent on the same state folder refuses to start.
#[tokio::test]
async fn an_agent_starts_only_with_its_own_certificate_and_state_folder() {
    let Lab { dir, tls, agent } = Lab::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let base = AgentConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        desired_state: agent.desired_path.clone(),
        state_dir: dir.path().join("other-state"),
        resync_seconds: 3600,
        confirm_timeout_seconds: 0,
        tls: files(&tls, &Role::Agent("eve".into())),
        ..AgentConfig::default()
    };
    let start = |config: AgentConfig| async move {
        daemon::run(config, async {})
            .await
            .expect_err("refused")
            .to_string()
    };
    // The admin's certificate.
    let said = start(AgentConfig {
        tls: files(&tls, &Role::Admin("alice".into())),
        ..base.clone()
    })
    .await;
    assert!(said.contains("is admin alice's, not an agent's"), "{said}");
    // Another host's.
    let said = start(AgentConfig {
        host: Some("bob".into()),
        ..base.clone()
    })
    .await;
    assert!(
        said.contains("is agent eve's, but agent.toml says host = \"bob\""),
        "{said}"
    );
    // The running agent's state folder.
    let said = start(AgentConfig {
        state_dir: dir.path().join("state"),
        ..base.clone()
    })
    .await;
    assert!(
        said.contains(&format!(
            "is in use by another agent (pid {})",
            std::process::id()
        )),
        "{said}"
    );
}

/// A client that announces a body and never sends it is answered, and its
/// connection freed, once the body-read timeout passes.
#[tokio::test]
async fn a_body_that_never_arrives_is_cut_after_the_body_timeout() {
    let Lab {
        dir: _dir,
        tls,
        agent,
    } = Lab::start().await;
    let tcp = TcpStream::connect(agent.addr).await.expect("connect");
    let name = ServerName::try_from("eve").expect("name");
    let mut stream = TlsConnector::from(client(&tls, &Role::Controller))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"PUT /v1/desired HTTP/1.1\r\nHost: eve\r\nContent-Length: 1000\r\n\r\nap")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        mailctl_server::BODY_READ_TIMEOUT + Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(read.is_ok(), "still open after {took:?}: {answer}");
    assert!(
        took >= mailctl_server::BODY_READ_TIMEOUT,
        "{took:?}: {answer}"
    );
    assert!(answer.contains("did not arrive within 30s"), "{answer}");
}
