//! Certificates for mutual TLS between the controller, admins and agents.
//!
//! One private CA signs everything; nothing else is trusted on either side.
//! Every certificate names exactly one role in a SAN URI ([`crate::roles`]):
//!
//! - `mailctl:role:controller`: the controller, a client of the agents and
//!   the server of the admins' API (ClientAuth and ServerAuth, with the
//!   addresses admins dial, `certs init --controller`);
//! - `mailctl:role:admin:NAME`: a person with `mailctl sync run`, a client
//!   (ClientAuth only);
//! - `mailctl:role:agent:HOST`: the agent on HOST, a server (ServerAuth
//!   only, plus HOST and its addresses as DNS/IP names the controller dials).
//!   It cannot even complete a handshake as a client: a compromised or
//!   decommissioned host cannot drive another.
//!
//! Validity starts when the certificate is made and lasts `days` (365 by
//! default); the CA lasts [`CA_DAYS`]. Hosts need roughly correct clocks
//! (NTP), as mail servers do anyway.
//!
//! What [`init`] and [`add`] write, under `DIR` (one folder per machine, to
//! be copied whole to that machine's `/etc/mailctl/tls/`):
//!
//! ```text
//! DIR/ca.pem  DIR/ca.key  DIR/ca.crl      the CA; ca.key stays here (offline)
//! DIR/controller/{ca.pem,ca.crl,controller.pem,controller.key}
//! DIR/admin-NAME/{ca.pem,ca.crl,admin.pem,admin.key}
//! DIR/agent-HOST/{ca.pem,ca.crl,agent.pem,agent.key}   (dist/agent.toml's paths)
//! ```
//!
//! Revocation is a CRL signed by the CA (`DIR/ca.crl`, empty at first).
//! [`revoke`] adds a certificate's serial to it, refreshes the copies in
//! every folder and moves the revoked folder to `DIR/revoked/`. Agents read
//! the CRL named by `[tls] crl` in agent.toml; clients (`mailctl sync run`)
//! read `ca.crl` beside their certificate. A revoked certificate fails the
//! TLS handshake, without a new CA.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use time::{Duration, OffsetDateTime};

use crate::roles::{self, Role};

/// The CA certificate (beside the CA key and in every folder) and the
/// revocation list (beside the CA and in every folder).
pub use mailctl_api::tls::{CA_CERT, CRL, cert_and_key};
/// The CA's private key: only in `DIR`, never copied to a host.
pub const CA_KEY: &str = "ca.key";
/// Where revoked folders are moved to.
pub const REVOKED: &str = "revoked";
/// How long the CA is valid.
pub const CA_DAYS: u32 = 3650;
/// How long a controller, admin or agent certificate is valid unless told.
pub const DEFAULT_DAYS: u32 = 365;

const CA_NAME: &str = "mailctl CA";

/// A host (agent) that gets a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Host name as the Migration names it (`eve`).
    pub name: String,
    /// Addresses and DNS names the controller uses to reach it.
    pub addresses: Vec<String>,
}

/// What to issue: one role, and for an agent the names it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The controller, with the addresses and DNS names admins dial for its
    /// API (its certificate is a client's towards agents and a server's
    /// towards admins).
    Controller(Vec<String>),
    Admin(String),
    Agent(AgentIdentity),
}

impl Subject {
    pub fn role(&self) -> Role {
        match self {
            Subject::Controller(_) => Role::Controller,
            Subject::Admin(name) => Role::Admin(name.clone()),
            Subject::Agent(agent) => Role::Agent(agent.name.clone()),
        }
    }
}

/// The folder of one role under `DIR`: `controller`, `admin-NAME`, `agent-HOST`.
pub fn folder(role: &Role) -> String {
    match role {
        Role::Controller => "controller".into(),
        Role::Admin(name) => format!("admin-{name}"),
        Role::Agent(host) => format!("agent-{host}"),
    }
}

/// One folder written: which role it holds and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub role: Role,
    pub folder: PathBuf,
}

impl Bundle {
    /// Where this folder's files belong, for the operator.
    pub fn destination(&self) -> String {
        match &self.role {
            Role::Controller => "the controller's host, /etc/mailctl/tls/".into(),
            Role::Admin(name) => format!(
                "admin {name}'s machine, /etc/mailctl/tls/ (or any folder given to --tls-dir)"
            ),
            Role::Agent(host) => format!("{host}:/etc/mailctl/tls/"),
        }
    }
}

/// What `init` or `add` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub bundles: Vec<Bundle>,
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The revoked certificate's serial (hex).
    pub serial: String,
    /// The new revocation list, and the copies refreshed in the folders.
    pub crls: Vec<PathBuf>,
    /// Where the revoked folder went.
    pub moved_to: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{0} already exists; refusing to replace a CA (every agent trusts it). Use another --out folder, or `mailctl certs add` to extend this one"
    )]
    Exists(PathBuf),
    #[error(
        "{0} already exists; refusing to overwrite it. Revoke it first (`mailctl certs revoke`), or pick another name"
    )]
    FolderExists(PathBuf),
    #[error("cannot read {what} {path} (is --out the folder `mailctl certs init` wrote?)")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {detail}")]
    Unusable {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the certificate for {subject}")]
    Generate {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "\"{0}\" is not a valid name for a certificate: use 1 to 63 letters, digits, '-' and '_', starting with a letter or digit"
    )]
    BadName(String),
    #[error("\"{address}\" (agent {agent}) is neither an IP address nor a DNS name")]
    BadAddress { agent: String, address: String },
    #[error("{0} is named twice")]
    Duplicate(String),
    #[error("--days {days}: give at least 1")]
    NoDays { days: u32 },
    #[error("--days {days} would outlast the CA, which ends on {ca_end}; give at most {left} days")]
    OutlastsCa {
        days: u32,
        ca_end: String,
        left: i64,
    },
    #[error("the system clock is not usable for certificate dates")]
    Clock,
}

#[allow(
    clippy::disallowed_methods,
    reason = "certificate validity dates are wall-clock time"
)]
fn now() -> Result<OffsetDateTime, PkiError> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| PkiError::Clock)?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).map_err(|_| PkiError::Clock)?)
        .map_err(|_| PkiError::Clock)
}

fn params(subject: &str, sans: Vec<SanType>, from: OffsetDateTime, days: u32) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.not_before = from;
    params.not_after = from + Duration::days(i64::from(days));
    params.use_authority_key_identifier_extension = true;
    params
}

fn san(agent: &str, text: &str) -> Result<SanType, PkiError> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => text
            .to_owned()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| PkiError::BadAddress {
                agent: agent.to_owned(),
                address: text.to_owned(),
            }),
    }
}

fn uri(role: &Role) -> Result<SanType, PkiError> {
    role.uri()
        .try_into()
        .map(SanType::URI)
        .map_err(|_| PkiError::BadName(role.to_string()))
}

/// Names, addresses and duplicates, all checked before anything is written.
fn check(subjects: &[Subject], days: u32) -> Result<(), PkiError> {
    if days == 0 {
        return Err(PkiError::NoDays { days });
    }
    let mut seen = std::collections::HashSet::new();
    for subject in subjects {
        match subject {
            Subject::Controller(addresses) => {
                for address in addresses {
                    san("controller", address)?;
                }
            }
            Subject::Admin(name) if !roles::valid_name(name) => {
                return Err(PkiError::BadName(name.clone()));
            }
            Subject::Admin(_) => {}
            Subject::Agent(agent) => {
                if !roles::valid_name(&agent.name) {
                    return Err(PkiError::BadName(agent.name.clone()));
                }
                for address in &agent.addresses {
                    san(&agent.name, address)?;
                }
            }
        }
        let role = subject.role();
        if !seen.insert(role.clone()) {
            return Err(PkiError::Duplicate(role.to_string()));
        }
    }
    Ok(())
}

/// The CA, as read back from `DIR` (or just made).
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
    end: OffsetDateTime,
}

impl Ca {
    fn open(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert = read_certificate("CA certificate", &cert_path)?;
        let key_pem = read_text("CA key", &key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Unusable {
            what: "CA key",
            path: key_path,
            detail: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert.der, key).map_err(|e| PkiError::Unusable {
            what: "CA certificate",
            path: cert_path,
            detail: e.to_string(),
        })?;
        Ok(Ca {
            pem: cert.pem,
            issuer,
            end: cert.not_after,
        })
    }

    fn create(dir: &Path, from: OffsetDateTime, written: &mut Written) -> Result<Ca, PkiError> {
        let key = generate(CA_NAME, KeyPair::generate())?;
        let mut ca_params = params(CA_NAME, Vec::new(), from, CA_DAYS);
        ca_params.use_authority_key_identifier_extension = false;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = generate(CA_NAME, ca_params.self_signed(&key))?;
        write(&dir.join(CA_CERT), &cert.pem(), false, written)?;
        write(&dir.join(CA_KEY), &key.serialize_pem(), true, written)?;
        let end = ca_params.not_after;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(ca_params, key),
            end,
        })
    }

    /// A leaf certificate for `subject`, valid `days` from `from`.
    fn issue(
        &self,
        subject: &Subject,
        from: OffsetDateTime,
        days: u32,
    ) -> Result<(String, String), PkiError> {
        let role = subject.role();
        let mut sans = vec![uri(&role)?];
        let usage = match subject {
            Subject::Controller(addresses) => {
                for address in addresses {
                    sans.push(san("controller", address)?);
                }
                vec![
                    ExtendedKeyUsagePurpose::ClientAuth,
                    ExtendedKeyUsagePurpose::ServerAuth,
                ]
            }
            Subject::Admin(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Subject::Agent(agent) => {
                sans.push(san(&agent.name, &agent.name)?);
                for address in &agent.addresses {
                    sans.push(san(&agent.name, address)?);
                }
                vec![ExtendedKeyUsagePurpose::ServerAuth]
            }
        };
        let name = role.to_string();
        let key = generate(&name, KeyPair::generate())?;
        let mut p = params(&name, sans, from, days);
        p.extended_key_usages = usage;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = generate(&name, p.signed_by(&key, &self.issuer))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn check_days(&self, from: OffsetDateTime, days: u32) -> Result<(), PkiError> {
        let end = from + Duration::days(i64::from(days));
        if end > self.end {
            return Err(PkiError::OutlastsCa {
                days,
                ca_end: self.end.date().to_string(),
                left: (self.end - from).whole_days(),
            });
        }
        Ok(())
    }
}

/// A new CA in `dir`, an empty revocation list, and a folder for each of
/// `subjects` (the CLI passes the controller, one admin and the agents).
/// Private keys are created mode 0600; nothing existing is overwritten.
pub fn init(dir: &Path, subjects: &[Subject], days: u32) -> Result<Written, PkiError> {
    check(subjects, days)?;
    let ca_key_path = dir.join(CA_KEY);
    if ca_key_path.exists() {
        return Err(PkiError::Exists(ca_key_path));
    }
    for subject in subjects {
        refuse_existing(&dir.join(folder(&subject.role())))?;
    }
    let from = now()?;
    if days > CA_DAYS {
        return Err(PkiError::OutlastsCa {
            days,
            ca_end: (from + Duration::days(i64::from(CA_DAYS)))
                .date()
                .to_string(),
            left: i64::from(CA_DAYS),
        });
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Written {
        files: Vec::new(),
        bundles: Vec::new(),
    };
    let ca = Ca::create(dir, from, &mut written)?;
    let crl = sign_crl(&ca, &[], 1, from)?;
    write(&dir.join(CRL), &crl, false, &mut written)?;
    for subject in subjects {
        bundle(dir, &ca, &crl, subject, from, days, &mut written)?;
    }
    Ok(written)
}

/// More certificates from the CA in `dir` (`mailctl certs add`).
pub fn add(dir: &Path, subjects: &[Subject], days: u32) -> Result<Written, PkiError> {
    check(subjects, days)?;
    let ca = Ca::open(dir)?;
    for subject in subjects {
        refuse_existing(&dir.join(folder(&subject.role())))?;
    }
    let from = now()?;
    ca.check_days(from, days)?;
    let crl = match fs::read_to_string(dir.join(CRL)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => sign_crl(&ca, &[], 1, from)?,
        Err(source) => {
            return Err(PkiError::Read {
                what: "revocation list",
                path: dir.join(CRL),
                source,
            });
        }
    };
    let mut written = Written {
        files: Vec::new(),
        bundles: Vec::new(),
    };
    if !dir.join(CRL).exists() {
        write(&dir.join(CRL), &crl, false, &mut written)?;
    }
    for subject in subjects {
        bundle(dir, &ca, &crl, subject, from, days, &mut written)?;
    }
    Ok(written)
}

fn refuse_existing(path: &Path) -> Result<(), PkiError> {
    if path.exists() {
        return Err(PkiError::FolderExists(path.to_path_buf()));
    }
    Ok(())
}

/// One role's folder: its certificate and key, and copies of the CA and CRL.
fn bundle(
    dir: &Path,
    ca: &Ca,
    crl: &str,
    subject: &Subject,
    from: OffsetDateTime,
    days: u32,
    written: &mut Written,
) -> Result<(), PkiError> {
    let role = subject.role();
    let folder = dir.join(folder(&role));
    DirBuilder::new()
        .mode(0o700)
        .create(&folder)
        .map_err(|source| PkiError::Write {
            path: folder.clone(),
            source,
        })?;
    let (cert, key) = ca.issue(subject, from, days)?;
    let (cert_name, key_name) = cert_and_key(&role);
    write(&folder.join(CA_CERT), &ca.pem, false, written)?;
    write(&folder.join(CRL), crl, false, written)?;
    write(&folder.join(cert_name), &cert, false, written)?;
    write(&folder.join(key_name), &key, true, written)?;
    written.bundles.push(Bundle { role, folder });
    Ok(())
}

/// A revoked serial as the CRL keeps it.
#[derive(Debug, Clone)]
struct RevokedEntry {
    serial: Vec<u8>,
    at: OffsetDateTime,
}

fn sign_crl(
    ca: &Ca,
    revoked: &[RevokedEntry],
    number: u64,
    at: OffsetDateTime,
) -> Result<String, PkiError> {
    let params = CertificateRevocationListParams {
        this_update: at,
        // Agents do not enforce the next update (nobody republishes on a
        // schedule here); it must lie after this one, so: the CA's end.
        next_update: ca.end.max(at + Duration::days(1)),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: r.at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = generate("the revocation list", params.signed_by(&ca.issuer))?;
    generate("the revocation list", crl.pem())
}

/// Revokes `role`'s certificate from the CA in `dir`: its serial joins
/// `DIR/ca.crl` (and the copies in every folder), and its folder moves to
/// `DIR/revoked/FOLDER-SERIAL`, so the name can be issued again.
pub fn revoke(dir: &Path, role: &Role) -> Result<Revoked, PkiError> {
    let ca = Ca::open(dir)?;
    let folder_path = dir.join(folder(role));
    let serial = read_certificate("certificate", &folder_path.join(cert_and_key(role).0))?.serial;
    let serial_hex = hex(&serial);

    let crl_path = dir.join(CRL);
    let (mut revoked, number) = read_crl(&crl_path)?;
    let at = now()?;
    if !revoked.iter().any(|r| r.serial == serial) {
        revoked.push(RevokedEntry {
            serial: serial.clone(),
            at,
        });
    }
    let crl = sign_crl(&ca, &revoked, number + 1, at)?;
    replace(&crl_path, &crl)?;
    let mut crls = vec![crl_path];
    let entries = fs::read_dir(dir).map_err(|source| PkiError::Read {
        what: "folder",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let copy = entry.path().join(CRL);
        if copy.is_file() {
            replace(&copy, &crl)?;
            crls.push(copy);
        }
    }
    let graveyard = dir.join(REVOKED);
    fs::create_dir_all(&graveyard).map_err(|source| PkiError::Write {
        path: graveyard.clone(),
        source,
    })?;
    let moved_to = graveyard.join(format!("{}-{serial_hex}", folder(role)));
    fs::rename(&folder_path, &moved_to).map_err(|source| PkiError::Write {
        path: moved_to.clone(),
        source,
    })?;
    Ok(Revoked {
        serial: serial_hex,
        crls,
        moved_to,
    })
}

/// The entries and number of an existing CRL (none and 0 when there is none yet).
fn read_crl(path: &Path) -> Result<(Vec<RevokedEntry>, u64), PkiError> {
    let pem = match fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => {
            return Err(PkiError::Read {
                what: "revocation list",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let unusable = |detail: String| PkiError::Unusable {
        what: "revocation list",
        path: path.to_path_buf(),
        detail,
    };
    let der =
        CertificateRevocationListDer::from_pem_slice(&pem).map_err(|e| unusable(e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| unusable(e.to_string()))?;
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default();
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedEntry {
            serial: r.raw_serial().to_vec(),
            at: r.revocation_date.to_datetime(),
        })
        .collect();
    Ok((revoked, number))
}

/// A certificate file, and what this module needs of it.
struct CertificateFile {
    pem: String,
    der: CertificateDer<'static>,
    serial: Vec<u8>,
    not_after: OffsetDateTime,
}

fn read_certificate(what: &'static str, path: &Path) -> Result<CertificateFile, PkiError> {
    let pem = read_text(what, path)?;
    let unusable = |detail: String| PkiError::Unusable {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| unusable(e.to_string()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| unusable(e.to_string()))?;
    let serial = cert.raw_serial().to_vec();
    let not_after = cert.validity().not_after.to_datetime();
    Ok(CertificateFile {
        pem,
        der,
        serial,
        not_after,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_text(what: &'static str, path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn generate<T>(subject: &str, result: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    result.map_err(|source| PkiError::Generate {
        subject: subject.to_owned(),
        source,
    })
}

/// A new file (never an existing one), `secret` ones mode 0600.
fn write(path: &Path, text: &str, secret: bool, written: &mut Written) -> Result<(), PkiError> {
    create(path, text, secret)?;
    written.files.push(path.to_path_buf());
    Ok(())
}

fn create(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let fail = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Replaces a public file whole (rename), so a reader never sees half a CRL.
fn replace(path: &Path, text: &str) -> Result<(), PkiError> {
    let scratch = path.with_extension("crl.new");
    let _ = fs::remove_file(&scratch);
    create(&scratch, text, false)?;
    fs::rename(&scratch, path).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}
