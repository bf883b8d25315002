//! TLS on the client's side of the agent API, and the PEM reading the
//! agent's server side shares: the mailctl CA is the only trust anchor,
//! revocation lists are honoured, and each side presents its own
//! certificate (mutual TLS).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::roles::Role;

/// The CA certificate's file name, in every folder `mailctl certs` writes.
pub const CA_CERT: &str = "ca.pem";
/// The revocation list's file name, beside the CA and in every folder.
pub const CRL: &str = "ca.crl";

/// Where TLS material lives (the agent's, in agent.toml's `[tls]`; a
/// client's, from `--tls-dir`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA whose signature the other side's certificate must carry.
    pub ca: PathBuf,
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM). Never logged.
    pub key: PathBuf,
    /// The CA's revocation list (PEM, `mailctl certs revoke` writes it):
    /// certificates on it fail the handshake. The agent reads it again
    /// when it changes (looked at for every new connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the TLS configuration is not usable: {0}")]
    Config(String),
}

pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

pub fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        expected: "private key",
    })
}

/// The revocation lists of `files.crl` (none when not configured).
pub fn revocation_lists(
    files: &TlsFiles,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let Some(path) = &files.crl else {
        return Ok(Vec::new());
    };
    let pem = read("revocation list", path)?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if crls.is_empty() {
        return Err(TlsError::Pem {
            what: "revocation list",
            path: path.clone(),
            expected: "X509 CRL",
        });
    }
    Ok(crls)
}

/// The mailctl CA: the only trust anchor on either side.
pub fn roots(files: &TlsFiles) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates("CA certificate", &files.ca)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Config(format!("CA {}: {e}", files.ca.display())))?;
    }
    Ok(Arc::new(roots))
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn crl_error(files: &TlsFiles, e: impl std::fmt::Display) -> TlsError {
    let crl = files.crl.as_deref().unwrap_or(Path::new("(none)"));
    TlsError::Config(format!("revocation list {}: {e}", crl.display()))
}

/// A client configuration (the controller's and the CLI's side): trusts
/// only the mailctl CA, refuses agents revoked in `files.crl`, and presents
/// `cert`/`key`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let chain = certificates("client certificate", &files.cert)?;
    let key = private_key("client key", &files.key)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(files)?, provider())
        .with_crls(revocation_lists(files)?)
        .build()
        .map_err(|e| crl_error(files, e))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The certificate and key file names in a role's folder.
pub fn cert_and_key(role: &Role) -> (&'static str, &'static str) {
    match role {
        Role::Controller => ("controller.pem", "controller.key"),
        Role::Admin(_) => ("admin.pem", "admin.key"),
        Role::Agent(_) => ("agent.pem", "agent.key"),
    }
}

/// The TLS files a client finds in `dir` (`--tls-dir`, one folder that
/// `mailctl certs init` wrote, copied whole): an admin's `admin.pem` and
/// `admin.key` when there, else the controller's `controller.pem` and
/// `controller.key`; `ca.pem`; and `ca.crl` when there, so a revoked agent
/// is refused on this side too.
pub fn client_files(dir: &Path) -> TlsFiles {
    let admin = cert_and_key(&Role::Admin(String::new()));
    let (cert, key) = if dir.join(admin.0).exists() {
        admin
    } else {
        cert_and_key(&Role::Controller)
    };
    let crl = dir.join(CRL);
    TlsFiles {
        ca: dir.join(CA_CERT),
        cert: dir.join(cert),
        key: dir.join(key),
        crl: crl.exists().then_some(crl),
    }
}
