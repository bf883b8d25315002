//! A typed client of an agent's API, with the controller's or an admin's
//! certificate (mutual TLS): what the CLI (`mailctl sync run`, `mailctl
//! confirm`) and the controller use. One method per endpoint; an answer
//! that is not a success is [`ClientError::Api`] with the agent's
//! [`ApiError`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ApiError, ErrorKind};
use crate::roles::{Peer, Role};
use crate::status::AgentStatus;
use crate::sync::{JobStatus, Progress, RunState, SyncStarted};
use crate::tls::{self, TlsError, TlsFiles};
use crate::{
    DEFAULT_PORT, DesiredState, GENERATION_HEADER, Generation, Plan, PointOfNoReturn, route,
};

pub use crate::tls::client_files;

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
    #[error(
        "the server at {url} is not the {expected}: its certificate says {found}; check the address (--controller)"
    )]
    WrongServer {
        url: String,
        expected: Role,
        found: String,
    },
    #[error("the agent at {url} did not answer {method} {path}: {detail}")]
    Http {
        url: String,
        method: Method,
        path: String,
        detail: String,
    },
    #[error("the agent at {url} refused {method} {path} ({status}): {error}")]
    Api {
        url: String,
        method: Method,
        path: String,
        status: u16,
        error: ApiError,
    },
    #[error(
        "the agent at {url} answered {method} {path} with a body mailctl cannot read ({detail}); is it a different mailctl version?"
    )]
    Decode {
        url: String,
        method: Method,
        path: String,
        detail: String,
    },
}

impl ClientError {
    /// The agent's error kind, when it answered with one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api { error, .. } => Some(error.kind),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the agent was not
    /// reached or not in a state to answer, rather than refusing it.
    pub fn retry_can_help(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Http { .. } => true,
            ClientError::Api { error, .. } => error.kind.retry_can_help(),
            _ => false,
        }
    }
}

/// One agent, reached over mutual TLS.
#[derive(Debug, Clone)]
pub struct AgentClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// The role the server's certificate must name (`agent HOST`, or the
    /// controller).
    expected: Option<Role>,
}

/// An answer: status, body text and the generation header when sent.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub generation: Option<u64>,
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
            port: uri.port_u16().unwrap_or(DEFAULT_PORT),
            host,
            server_name,
            tls: tls::client_config(tls)?,
            expected: None,
        })
    }

    /// Talk only to the agent of `host`: a certificate naming another host
    /// (a wrong address, a moved IP) is refused before any request is sent.
    pub fn expect_agent(mut self, host: &str) -> Self {
        self.expected = Some(Role::Agent(host.to_owned()));
        self
    }

    /// Talk only to a server whose certificate names `role` (the
    /// controller's API: [`Role::Controller`]).
    pub fn expect_role(mut self, role: Role) -> Self {
        self.expected = Some(role);
        self
    }

    /// The agent's address, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request (a new connection each time: requests are rare)
    /// and returns the answer whatever its status.
    pub async fn request(&self, method: Method, path: &str) -> Result<Answer, ClientError> {
        self.send(method, path, None).await
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, String)>,
    ) -> Result<Answer, ClientError> {
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
                .and_then(|leaf| Peer::from_certificate(leaf).role);
            if found.as_ref() != Some(expected) {
                let found = match found {
                    Some(role) => role.to_string(),
                    None => "no role".into(),
                };
                return Err(match expected {
                    Role::Agent(host) => ClientError::WrongAgent {
                        url: self.url.clone(),
                        expected: host.clone(),
                        found,
                    },
                    other => ClientError::WrongServer {
                        url: self.url.clone(),
                        expected: other.clone(),
                        found,
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
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, self.url.trim_start_matches("https://"));
            let content = match body {
                Some((content_type, text)) => {
                    request = request.header(hyper::header::CONTENT_TYPE, content_type);
                    Bytes::from(text)
                }
                None => Bytes::new(),
            };
            let request = request
                .body(Full::new(content))
                .map_err(|e| http(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = response.status();
            let generation = response
                .headers()
                .get(GENERATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
                generation,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| http(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))?
    }

    /// Sends a request and reads a success as `T`; anything else is
    /// [`ClientError::Api`].
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, String)>,
    ) -> Result<T, ClientError> {
        let answer = self.send(method.clone(), path, body).await?;
        self.success(&method, path, &answer)?;
        serde_json::from_str(&answer.body).map_err(|e| ClientError::Decode {
            url: self.url.clone(),
            method,
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    pub(crate) fn success(
        &self,
        method: &Method,
        path: &str,
        answer: &Answer,
    ) -> Result<(), ClientError> {
        if answer.status.is_success() {
            return Ok(());
        }
        Err(ClientError::Api {
            url: self.url.clone(),
            method: method.clone(),
            path: path.to_owned(),
            status: answer.status.as_u16(),
            error: ApiError::from_answer(answer.status.as_u16(), &answer.body),
        })
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<(), ClientError> {
        let answer = self.send(Method::GET, route::HEALTH, None).await?;
        self.success(&Method::GET, route::HEALTH, &answer)
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<AgentStatus, ClientError> {
        self.call(Method::GET, route::STATUS, None).await
    }

    /// `GET /v1/desired`: the state in force with its generation (`None`:
    /// the agent has none yet). The controller's alone: it holds secrets.
    pub async fn desired(&self) -> Result<Option<DesiredState>, ClientError> {
        let answer = self.send(Method::GET, route::DESIRED, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.success(&Method::GET, route::DESIRED, &answer)?;
        let generation = answer.generation.ok_or_else(|| ClientError::Decode {
            url: self.url.clone(),
            method: Method::GET,
            path: route::DESIRED.to_owned(),
            detail: format!("no {GENERATION_HEADER} header"),
        })?;
        Ok(Some(DesiredState {
            generation,
            yaml: answer.body,
        }))
    }

    /// `PUT /v1/desired`: hands over a Host manifest (YAML); the answer is
    /// the generation the agent assigned it (the one in force when the
    /// same state is sent again). An invalid state is
    /// [`ErrorKind::Invalid`] and changes nothing.
    pub async fn put_desired(&self, yaml: &str) -> Result<u64, ClientError> {
        let answer: Generation = self
            .call(
                Method::PUT,
                route::DESIRED,
                Some(("application/yaml", yaml.to_owned())),
            )
            .await?;
        Ok(answer.generation)
    }

    /// `POST /v1/confirm/{generation}`: keeps a generation that changed
    /// addresses or firewall (magic rollback). Too late is
    /// [`ErrorKind::RolledBack`].
    pub async fn confirm(&self, generation: u64) -> Result<u64, ClientError> {
        let answer: Generation = self
            .call(Method::POST, &route::confirm(generation), None)
            .await?;
        Ok(answer.generation)
    }

    /// `GET /v1/plan`: what converging the state in force would change.
    pub async fn plan(&self) -> Result<Plan, ClientError> {
        self.call(Method::GET, route::PLAN, None).await
    }

    /// `POST /v1/sync/{job}`: starts one run of a declared job.
    pub async fn sync_start(&self, job: &str) -> Result<SyncStarted, ClientError> {
        self.call(Method::POST, &route::sync(job), None).await
    }

    /// `GET /v1/sync/{job}`: the job's latest run (`None`: it never ran).
    pub async fn sync_status(&self, job: &str) -> Result<Option<JobStatus>, ClientError> {
        match self.call(Method::GET, &route::sync(job), None).await {
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Starts a run of `job` and follows it until it ends: `on_start` gets
    /// the run number, `on_progress` each progress seen (read every
    /// `poll`). The answer is the run's final status, whether it verified
    /// or not ([`JobStatus::verified`]); a run that another one replaced
    /// before its outcome was read is an error, since its outcome is lost.
    /// The controller's final-sync step and `mailctl sync run` both call it.
    pub async fn sync_run(
        &self,
        job: &str,
        poll: Duration,
        on_start: impl FnOnce(u64),
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<JobStatus, SyncFollowError> {
        let started = self.sync_start(job).await?;
        let run = started.run;
        on_start(run);
        let mut ticks = tokio::time::interval(poll);
        loop {
            ticks.tick().await;
            let Some(status) = self.sync_status(job).await? else {
                return Err(SyncFollowError::Vanished {
                    job: job.to_owned(),
                    run,
                });
            };
            if status.run > run {
                return Err(SyncFollowError::Overtaken {
                    job: job.to_owned(),
                    run,
                    newer: status.run,
                });
            }
            if status.run == run && status.state != RunState::Running {
                return Ok(status);
            }
            if let Some(progress) = &status.progress {
                on_progress(progress);
            }
        }
    }

    /// `POST /v1/point-of-no-return`: from now on the agent refuses syncs
    /// that delete (new mail lands on this host). The controller's alone.
    pub async fn point_of_no_return(&self) -> Result<(), ClientError> {
        let _: PointOfNoReturn = self
            .call(Method::POST, route::POINT_OF_NO_RETURN, None)
            .await?;
        Ok(())
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let answer = self.send(Method::GET, route::METRICS, None).await?;
        self.success(&Method::GET, route::METRICS, &answer)?;
        Ok(answer.body)
    }
}

/// Why [`AgentClient::sync_run`] could not report a run's outcome.
#[derive(Debug, thiserror::Error)]
pub enum SyncFollowError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("sync {job}: run {run} started, but the agent no longer knows the job")]
    Vanished { job: String, run: u64 },
    #[error(
        "sync {job}: run {run} finished, but run {newer} began before its outcome was read; see `GET /v1/sync/{job}` or the agent's log"
    )]
    Overtaken { job: String, run: u64, newer: u64 },
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
