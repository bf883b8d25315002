//! A client of an agent's API, with the controller's or an admin's
//! certificate (mutual TLS): what `mailctl sync run HOST JOB` and the
//! controller use.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
pub use hyper::Method;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::{self, TlsError, TlsFiles};
use crate::pki;
use crate::reconcile::DEFAULT_API_PORT;
use crate::roles::Role;

/// The TLS files a client finds in `dir` (`--tls-dir`, one folder that
/// `mailctl certs init` wrote, copied whole): an admin's `admin.pem` and
/// `admin.key` when there, else the controller's `controller.pem` and
/// `controller.key`; `ca.pem`; and `ca.crl` when there, so a revoked agent
/// is refused on this side too.
pub fn client_files(dir: &Path) -> TlsFiles {
    let admin = pki::cert_and_key(&Role::Admin(String::new()));
    let (cert, key) = if dir.join(admin.0).exists() {
        admin
    } else {
        pki::cert_and_key(&Role::Controller)
    };
    let crl = dir.join(pki::CRL);
    TlsFiles {
        ca: dir.join(pki::CA_CERT),
        cert: dir.join(cert),
        key: dir.join(key),
        crl: crl.exists().then_some(crl),
    }
}

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "agent address {url:?}: {detail} (expected https://HOST[:PORT], e.g. https://192.0.2.10:7443)"
    )]
    Url { url: String, detail: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the agent at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error(
        "TLS with the agent at {url} failed: {detail} (is its certificate from the same mailctl CA, and does it name this address?)"
    )]
    Handshake { url: String, detail: String },
    #[error(
        "the agent at {url} is not host {expected}: its certificate says {found}; check the address (--agent, or the host's entry in the Migration)"
    )]
    WrongAgent {
        url: String,
        expected: String,
        found: String,
    },
    #[error("the agent at {url} did not answer {method} {path}: {detail}")]
    Http {
        url: String,
        method: Method,
        path: String,
        detail: String,
    },
}

/// One agent, reached over mutual TLS.
#[derive(Debug, Clone)]
pub struct AgentClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// The host whose agent this must be (`agent HOST` in its certificate).
    expected: Option<String>,
}

/// An answer: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl AgentClient {
    /// `url` is `https://HOST[:PORT]` (port 7443 unless given); `tls` the
    /// CA and the client's own certificate and key.
    pub fn new(url: &str, tls: &TlsFiles) -> Result<AgentClient, ClientError> {
        let bad = |detail: &str| ClientError::Url {
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the agent speaks HTTPS only"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("give the address only, without a path"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.clone()).map_err(|_| bad("not a host name"))?,
        };
        Ok(AgentClient {
            url: format!("https://{}", uri.authority().map_or("", |a| a.as_str())),
            port: uri.port_u16().unwrap_or(DEFAULT_API_PORT),
            host,
            server_name,
            tls: api::client_config(tls)?,
            expected: None,
        })
    }

    /// Talk only to the agent of `host`: a certificate naming another host
    /// (a wrong address, a moved IP) is refused before any request is sent.
    pub fn expect_agent(mut self, host: &str) -> Self {
        self.expected = Some(host.to_owned());
        self
    }

    /// The agent's address, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request (a new connection each time: requests are rare).
    pub async fn request(&self, method: Method, path: &str) -> Result<Answer, ClientError> {
        let http = |detail: String| ClientError::Http {
            url: self.url.clone(),
            method: method.clone(),
            path: path.to_owned(),
            detail,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| ClientError::Connect {
            url: self.url.clone(),
            detail: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|e| ClientError::Connect {
            url: self.url.clone(),
            detail: e.to_string(),
        })?;
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(self.tls.clone()).connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ClientError::Handshake {
            url: self.url.clone(),
            detail: "no handshake within the time limit".into(),
        })?
        .map_err(|e| ClientError::Handshake {
            url: self.url.clone(),
            detail: e.to_string(),
        })?;
        if let Some(expected) = &self.expected {
            let found = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::roles::Peer::from_certificate(leaf).role);
            if found != Some(Some(Role::Agent(expected.clone()))) {
                return Err(ClientError::WrongAgent {
                    url: self.url.clone(),
                    expected: expected.clone(),
                    found: match found.flatten() {
                        Some(role) => role.to_string(),
                        None => "no role".into(),
                    },
                });
            }
        }
        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| http(e.to_string()))?;
            tokio::spawn(connection);
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, self.url.trim_start_matches("https://"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| http(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| http(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/controller.pem".into(),
            key: "/nonexistent/controller.key".into(),
            crl: None,
        }
    }

    #[test]
    fn bad_addresses_are_refused_before_any_file_is_read() {
        for (url, says) in [
            ("http://eve:7443", "HTTPS only"),
            ("eve:7443", "HTTPS only"),
            ("https://eve:7443/v1/status", "without a path"),
            ("not a url", "not a URL"),
        ] {
            let error = AgentClient::new(url, &files()).expect_err(url).to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
        // A good address gets as far as reading the certificates.
        let error = AgentClient::new("https://[2001:db8::1]", &files()).expect_err("no files");
        assert!(matches!(error, ClientError::Tls(_)), "{error}");
    }
}
