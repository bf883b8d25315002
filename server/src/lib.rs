//! The HTTPS listener of the agent's API and of the controller's, reachable
//! only with a client certificate signed by the mailctl CA (mutual TLS,
//! rustls). One crate for both, so both get the same defences; it serves a
//! router it is given and knows nothing of either.
//!
//! The handshake itself refuses a client without such a certificate (or
//! with a revoked one, or one not made for clients), before any HTTP is
//! read: an unauthenticated peer gets no answer at all, not even a 401 that
//! would tell it an agent listens here. Who may do what once in is the
//! router's business ([`mailctl_api::roles`]); [`serve`] hands it the [`Peer`]
//! of each connection.
//!
//! The listener must outlive strangers: the port is open to whoever can
//! reach the host, and one accept error used to end it for good (112 idle
//! connections under a 128-descriptor limit did it). So:
//! - accept errors (EMFILE and the like) are retried with backoff, never
//!   fatal;
//! - a TLS handshake has [`Limits::handshake_timeout`] to finish, and HTTP
//!   request headers (also the wait for the next request on a kept-alive
//!   connection) [`Limits::header_read_timeout`];
//! - at most [`Limits::max_connections`] connections are open, fitted
//!   under the descriptor limit. When full, a newcomer replaces the oldest
//!   connection still in its TLS handshake (a stranger cannot hold a slot
//!   against the controller by being slow); when every slot holds an
//!   authenticated connection, the newcomer is closed at once;
//! - trouble is logged, at most one line per kind every
//!   [`TROUBLE_LOG_INTERVAL`], with the count of what was not logged;
//! - [`supervise`] starts the listener again if it ever ends.
//!
//! HTTP/1.1 only: the API answers a few requests a minute, and hyper has no
//! header timeout for HTTP/2.

use std::collections::VecDeque;
use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use mailctl_api::roles::Peer;

pub use mailctl_api::tls::{TlsError, TlsFiles, client_config};
use mailctl_api::tls::{certificates, crl_error, private_key, provider, revocation_lists, roots};

/// A server configuration that requires a client certificate from
/// `files.ca`, made for clients and not revoked in `files.crl`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(files)?, provider())
        .with_crls(revocation_lists(files)?)
        .build()
        .map_err(|e| crl_error(files, e))?;
    let chain = certificates("agent certificate", &files.cert)?;
    let key = private_key("agent key", &files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a file looked like when last read: modification time, size, inode.
type Stamp = Vec<Option<(std::time::SystemTime, u64, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    [
        Some(&files.ca),
        Some(&files.cert),
        Some(&files.key),
        files.crl.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        let meta = fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len(), meta.ino()))
    })
    .collect()
}

/// An error with its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The server configuration, read again when one of its files
/// changes: a new revocation list (or a renewed certificate) takes effect
/// with the next connection, without a restart. A changed file that cannot
/// be used is logged and the configuration before it stays in force.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: Mutex<(Stamp, Arc<rustls::ServerConfig>)>,
}

impl ServerTls {
    /// Reads the files once; at start, unusable files are an error.
    pub fn load(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let before = stamp(&files);
        let config = server_config(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: Mutex::new((before, config)),
        }))
    }

    /// The configuration for a new connection.
    fn config(&self) -> Arc<rustls::ServerConfig> {
        let now = stamp(&self.files);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != now {
            match server_config(&self.files) {
                Ok(config) => {
                    tracing::info!(
                        "TLS files changed: certificate, CA and revocation list read again"
                    );
                    current.1 = config;
                }
                Err(e) => tracing::error!(
                    "TLS files changed but are not usable; the previous ones stay in force: {}",
                    error_chain(&e)
                ),
            }
            current.0 = now;
        }
        current.1.clone()
    }
}

/// How long the TLS handshake and the request headers may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one log line per kind of trouble this often.
pub const TROUBLE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Descriptors kept for everything else the agent opens (state files,
/// netlink, child processes' pipes) when fitting connections under the limit.
const RESERVED_DESCRIPTORS: u64 = 64;
const MAX_CONNECTIONS: usize = 1024;
const MIN_CONNECTIONS: usize = 8;
/// Retrying a failed accept: first wait, longest wait.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// What the listener allows each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The timeouts above, and as many connections as fit under this
    /// process's descriptor limit (`LimitNOFILE=`) after
    /// [`RESERVED_DESCRIPTORS`], between 8 and 1024.
    pub fn for_this_process() -> Limits {
        use nix::sys::resource::{Resource, getrlimit};
        let descriptors = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        let fit = usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS))
            .unwrap_or(MAX_CONNECTIONS);
        Limits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: fit.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
        }
    }
}

/// Logs one kind of trouble at most once per interval.
#[derive(Debug)]
struct Throttle {
    /// When the last line was logged, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may go out now; `n` were held back before it.
    fn ready(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < TROUBLE_LOG_INTERVAL => {
                state.1 += 1;
                None
            }
            _ => {
                let held_back = state.1;
                *state = (Some(now), 0);
                Some(held_back)
            }
        }
    }
}

/// The listener's trouble, one throttle per kind.
#[derive(Debug)]
struct Trouble {
    accept: Throttle,
    handshake: Throttle,
    full: Throttle,
}

/// Open connections, and those of them still in their TLS handshake
/// (oldest first), which a newcomer may replace when all slots are taken.
#[derive(Debug)]
struct Connections {
    limit: usize,
    table: Mutex<Table>,
    /// Signalled each time a connection lets go of its descriptor.
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Table {
    open: usize,
    next_id: u64,
    /// Dropping a sender tells that connection's task to give up.
    handshaking: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Table {
    fn forget(&mut self, id: u64) {
        if let Ok(at) = self.handshaking.binary_search_by_key(&id, |(i, _)| *i) {
            self.handshaking.remove(at);
        }
    }
}

/// Whether a new connection got a slot.
enum Admission {
    /// `replaced`: an unfinished handshake was cut to make room.
    Admitted {
        slot: Slot,
        cut: oneshot::Receiver<()>,
        replaced: bool,
    },
    /// Every slot holds an authenticated connection.
    Full,
}

/// One open connection's place; freed when dropped.
#[derive(Debug)]
struct Slot {
    connections: Arc<Connections>,
    id: u64,
}

/// How long the accept loop waits for cut connections to close.
const SETTLE_TIMEOUT: Duration = Duration::from_millis(200);

impl Connections {
    fn new(limit: usize) -> Arc<Connections> {
        Arc::new(Connections {
            limit,
            table: Mutex::new(Table::default()),
            freed: tokio::sync::Notify::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(self: &Arc<Self>) -> Admission {
        let mut table = self.table();
        let mut replaced = false;
        if table.open >= self.limit {
            // Dropping the sender ends that handshake; its slot is freed
            // when its task drops it, a moment later (see `settle`).
            if table.handshaking.pop_front().is_none() {
                return Admission::Full;
            }
            replaced = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        table.open += 1;
        let (tx, cut) = oneshot::channel();
        table.handshaking.push_back((id, tx));
        Admission::Admitted {
            slot: Slot {
                connections: self.clone(),
                id,
            },
            cut,
            replaced,
        }
    }

    /// Cuts the oldest unfinished handshake (to free a descriptor); the
    /// number of connections open before, or `None` when none was cut.
    fn cut_oldest(&self) -> Option<usize> {
        let mut table = self.table();
        table.handshaking.pop_front().map(|_| table.open)
    }

    /// Waits until at most `open` connections are open, or a moment
    /// passed: a cut connection's task closes its socket when it next
    /// runs, and the accept loop must not outrun that, or it is the one
    /// that runs out of descriptors.
    async fn settle(&self, open: usize) {
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, async {
            loop {
                let freed = self.freed.notified();
                if self.table().open <= open {
                    return;
                }
                freed.await;
            }
        })
        .await;
    }
}

impl Slot {
    /// The handshake finished: this connection can no longer be replaced.
    fn established(&self) {
        self.connections.table().forget(self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut table = self.connections.table();
            table.open -= 1;
            table.forget(self.id);
        }
        self.connections.freed.notify_waiters();
    }
}

/// Serve `router` over mutual TLS on `listener` until `shutdown` completes.
/// Each connection runs in its own task with its [`Peer`] in every
/// request's extensions. Never ends on its own: accept errors are retried.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(limits.max_connections);
    let trouble = Arc::new(Trouble {
        accept: Throttle::new(),
        handshake: Throttle::new(),
        full: Throttle::new(),
    });
    let service = TowerToHyperService::new(router);
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let (tcp, from) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF.0;
                accepted
            }
            Err(e) => {
                // Out of descriptors (or memory): shed a stranger still in
                // its handshake and try again at once; with none to shed,
                // wait, longer each time.
                let shed = connections.cut_oldest();
                if let Some(held_back) = trouble.accept.ready() {
                    let then = match shed {
                        Some(_) => "cut the oldest unfinished TLS handshake to free a descriptor"
                            .to_owned(),
                        None => format!("retrying in {} ms", backoff.as_millis()),
                    };
                    tracing::warn!(held_back, "cannot accept API connections: {e}; {then}");
                }
                match shed {
                    Some(open) => connections.settle(open - 1).await,
                    None => {
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut shutdown => return,
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    }
                }
                continue;
            }
        };
        let (slot, cut, replaced) = match connections.admit() {
            Admission::Admitted {
                slot,
                cut,
                replaced,
            } => (slot, cut, replaced),
            Admission::Full => {
                if let Some(held_back) = trouble.full.ready() {
                    tracing::warn!(
                        held_back,
                        %from,
                        limit = limits.max_connections,
                        "all API connection slots hold authenticated connections; closed a new one"
                    );
                }
                continue;
            }
        };
        if replaced && let Some(held_back) = trouble.full.ready() {
            tracing::warn!(
                held_back,
                %from,
                limit = limits.max_connections,
                "API connection limit reached: cut the oldest unfinished TLS handshake to admit a new connection"
            );
        }
        tokio::spawn(connection(
            tcp,
            from,
            TlsAcceptor::from(tls.config()),
            service.clone(),
            limits,
            (slot, cut),
            trouble.clone(),
        ));
        if replaced {
            connections.settle(limits.max_connections).await;
        }
    }
}

/// One connection: handshake (bounded in time, and cut when a newcomer
/// needs the slot), then HTTP/1.1 with the peer's identity on each request.
async fn connection(
    tcp: TcpStream,
    from: SocketAddr,
    acceptor: TlsAcceptor,
    service: TowerToHyperService<Router>,
    limits: Limits,
    (slot, cut): (Slot, oneshot::Receiver<()>),
    trouble: Arc<Trouble>,
) {
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let failure = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => {
                slot.established();
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map_or_else(Peer::anonymous, |leaf| Peer::from_certificate(leaf));
                let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    service.call(request)
                });
                // A client that stops mid-request or goes silent ends here;
                // nothing to report.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                return;
            }
            // A peer without a valid certificate fails here and is dropped.
            Ok(Err(e)) => format!("TLS handshake failed: {e}"),
            Err(_) => format!(
                "no TLS handshake within {} s",
                limits.handshake_timeout.as_secs()
            ),
        },
        _ = cut => return,
    };
    if let Some(held_back) = trouble.handshake.ready() {
        tracing::warn!(held_back, %from, "API connection refused: {failure}");
    }
}

/// [`serve`] for the daemon: if the listener ever ends before `shutdown`
/// (a bug: it does not end on errors), say so and start it again on
/// `listener`'s address, with backoff.
pub async fn supervise(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let address = listener.local_addr().ok();
    let mut listener = Some(listener);
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF.1;
    loop {
        let Some(current) = listener.take() else {
            let rebound = match address {
                Some(address) => TcpListener::bind(address).await.map_err(|e| e.to_string()),
                None => Err("its address is unknown".to_owned()),
            };
            match rebound {
                Ok(rebound) => listener = Some(rebound),
                Err(e) => {
                    tracing::error!("cannot listen again for the API: {e}; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            continue;
        };
        let mut stopped = stopped.clone();
        let mut task = tokio::spawn(serve(
            current,
            tls.clone(),
            router.clone(),
            limits,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
        let ended = tokio::select! {
            () = &mut shutdown => None,
            ended = &mut task => Some(ended),
        };
        match ended {
            None => {
                let _ = stop.send(true);
                let _ = task.await;
                return;
            }
            Some(ended) => {
                let why = match ended {
                    Ok(()) => "it returned".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::error!("the API listener ended ({why}); starting it again");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF.1) => {}
                    () = &mut shutdown => return,
                }
            }
        }
    }
}

/// How long a request's body may take to arrive once its headers did: a
/// client that announces a body and sends it slowly (or never) would
/// otherwise hold its connection slot for good.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {}s", BODY_READ_TIMEOUT.as_secs())]
    TimedOut,
    #[error("the body is not UTF-8 text")]
    NotText,
}

/// Reads a request body of at most `limit` bytes within
/// [`BODY_READ_TIMEOUT`], as text.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<String, BodyError> {
    let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| BodyError::TimedOut)?
        .map_err(|_| BodyError::TooLarge { limit })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| BodyError::NotText)
}
