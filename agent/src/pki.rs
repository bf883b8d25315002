//! Certificates for mutual TLS between the controller and the agents.
//!
//! `mailctl certs init` makes one private CA, a client certificate for the
//! controller, and a server certificate per agent, named after the host and
//! valid for its addresses. An agent accepts only clients whose certificate
//! this CA signed; the controller accepts only agents this CA signed. There is
//! no other way in: the agent has no password login and no "run a command" API.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A host (agent) that gets a server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Host name as the Migration names it (`eve`).
    pub name: String,
    /// Addresses and DNS names the controller uses to reach it.
    pub addresses: Vec<String>,
}

/// What `init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "{0} already exists; refusing to replace a CA (every agent trusts it). Use another --out folder"
    )]
    Exists(PathBuf),
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
    #[error("\"{0}\" is not a valid host name for a certificate")]
    BadName(String),
}

const CA_NAME: &str = "mailctl CA";

fn params(subject: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    let now = rcgen::date_time_ymd(2024, 1, 1);
    params.not_before = now;
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    params
}

fn san(text: &str) -> Result<SanType, PkiError> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => text
            .to_owned()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| PkiError::BadName(text.to_owned())),
    }
}

/// Write a new CA, the controller's client certificate and one server
/// certificate per agent into `dir`. Private keys are created mode 0600.
pub fn init(dir: &Path, agents: &[AgentIdentity]) -> Result<Written, PkiError> {
    let ca_key_path = dir.join("ca.key");
    if ca_key_path.exists() {
        return Err(PkiError::Exists(ca_key_path));
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = generate(CA_NAME, KeyPair::generate())?;
    let mut ca_params = params(CA_NAME, Vec::new());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = generate(CA_NAME, ca_params.self_signed(&ca_key))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut written = Written { files: Vec::new() };
    write(dir, "ca.pem", &ca_cert.pem(), false, &mut written)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), true, &mut written)?;

    let mut leaf = |name: &str, sans: Vec<SanType>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = generate(name, KeyPair::generate())?;
        let mut p = params(name, sans);
        p.extended_key_usages = usages;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = generate(name, p.signed_by(&key, &issuer))?;
        write(
            dir,
            &format!("{name}.pem"),
            &cert.pem(),
            false,
            &mut written,
        )?;
        write(
            dir,
            &format!("{name}.key"),
            &key.serialize_pem(),
            true,
            &mut written,
        )
    };
    leaf(
        "controller",
        vec![san("controller")?],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    for agent in agents {
        if agent.name.is_empty() || agent.name.contains(['/', '.']) || agent.name == "controller" {
            return Err(PkiError::BadName(agent.name.clone()));
        }
        let mut sans = vec![san(&agent.name)?];
        for a in &agent.addresses {
            sans.push(san(a)?);
        }
        leaf(
            &agent.name,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
    }
    Ok(written)
}

fn generate<T>(subject: &str, result: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    result.map_err(|source| PkiError::Generate {
        subject: subject.to_owned(),
        source,
    })
}

fn write(
    dir: &Path,
    name: &str,
    text: &str,
    secret: bool,
    written: &mut Written,
) -> Result<(), PkiError> {
    let path = dir.join(name);
    let fail = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    written.files.push(path);
    Ok(())
}
