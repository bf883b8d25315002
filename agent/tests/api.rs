//! The API answers only clients that present a certificate from the mailctl
//! CA. Real TLS on a loopback port; certificates made by `pki::init`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mailctl_agent::api::{self, TlsFiles};
use mailctl_agent::pki::{self, AgentIdentity};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn files(dir: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

fn make_pki(dir: &Path) {
    pki::init(
        dir,
        &[AgentIdentity {
            name: "eve".into(),
            addresses: vec!["127.0.0.1".into()],
        }],
    )
    .expect("pki");
}

async fn start_agent(dir: &Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = api::server_config(&files(dir, "eve")).expect("server config");
    let router = Router::new().route("/v1/health", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, tls, router, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Connect with `config`, send a GET and return whatever bytes came back
/// (empty when the server refused the handshake).
async fn get_health(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::try_from("eve").expect("name");
    let Ok(mut tls) = TlsConnector::from(config).connect(name, tcp).await else {
        return Vec::new();
    };
    let request = b"GET /v1/health HTTP/1.1\r\nHost: eve\r\nConnection: close\r\n\r\n";
    if tls.write_all(request).await.is_err() {
        return Vec::new();
    }
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    answer
}

fn client_without_certificate(ca_dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_dir.join("ca.pem")).expect("ca");
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

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_ca_get_an_answer() {
    let ours = tempfile::tempdir().expect("tmp");
    let theirs = tempfile::tempdir().expect("tmp");
    make_pki(ours.path());
    make_pki(theirs.path());
    let (addr, _stop) = start_agent(ours.path()).await;

    // The controller's certificate, signed by our CA: answered.
    let controller = api::client_config(&files(ours.path(), "controller")).expect("client");
    let answer = String::from_utf8(get_health(addr, controller).await).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // No certificate at all: no HTTP answer.
    let anonymous = client_without_certificate(ours.path());
    assert_eq!(get_health(addr, anonymous).await, b"");

    // A certificate from another CA (trusting our server): no HTTP answer.
    let mut foreign = files(theirs.path(), "controller");
    foreign.ca = ours.path().join("ca.pem");
    let foreign = api::client_config(&foreign).expect("client");
    assert_eq!(get_health(addr, foreign).await, b"");

    // Plain HTTP on the TLS port: no HTTP answer either.
    let mut tcp = TcpStream::connect(addr).await.expect("tcp");
    tcp.write_all(b"GET /v1/health HTTP/1.1\r\nHost: eve\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

#[test]
fn init_refuses_to_replace_an_existing_ca_and_keeps_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    make_pki(dir.path());
    for key in ["ca.key", "controller.key", "eve.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = pki::init(dir.path(), &[]);
    assert!(matches!(again, Err(pki::PkiError::Exists(_))), "{again:?}");
}
