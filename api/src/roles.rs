//! Who may do what on an agent's API: the roles the mailctl CA writes into
//! its certificates, and the one permission table the API enforces.
//!
//! A certificate from the mailctl CA proves only that the CA issued it;
//! before roles, every one of them was a full client, and an agent's own
//! certificate could read another agent's secrets and hand it a task to run
//! as root. So every certificate now names exactly one role, as a URI in its
//! subject alternative names (`mailctl certs` issues them):
//!
//! | URI                          | role                                        |
//! |------------------------------|---------------------------------------------|
//! | `mailctl:role:controller`    | the controller: drives migrations           |
//! | `mailctl:role:admin:NAME`    | a person at a terminal (`mailctl sync run`) |
//! | `mailctl:role:agent:HOST`    | the agent on HOST: a server, never a client |
//!
//! A URI, not the subject's common name, because a name is free text that
//! other tools also read and write, while a SAN URI in the `mailctl:` scheme
//! means one thing only; a certificate with no role URI, or with more than
//! one, has no role and is refused everything.
//!
//! [`PERMISSIONS`] is the table, [`allowed`] looks a request up in it: the
//! API's authorization layer and anything else that speaks this API (a typed
//! client, the docs) use the same function.

use std::fmt;

use crate::route;

/// The URI scheme and prefix of every role name.
pub const ROLE_URI_PREFIX: &str = "mailctl:role:";

/// The role a certificate proves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// The controller: may do everything.
    Controller,
    /// A person (`admin NAME`): reads, `sync run` and confirm.
    Admin(String),
    /// The agent on a host: serves the API, may not call any other agent.
    Agent(String),
}

/// A role without its name, as the permission table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleKind {
    Controller,
    Admin,
    Agent,
}

impl Role {
    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Controller => RoleKind::Controller,
            Role::Admin(_) => RoleKind::Admin,
            Role::Agent(_) => RoleKind::Agent,
        }
    }

    /// The SAN URI that names this role in a certificate.
    pub fn uri(&self) -> String {
        match self {
            Role::Controller => format!("{ROLE_URI_PREFIX}controller"),
            Role::Admin(name) => format!("{ROLE_URI_PREFIX}admin:{name}"),
            Role::Agent(host) => format!("{ROLE_URI_PREFIX}agent:{host}"),
        }
    }

    /// Reads a SAN URI; `None` when it names no role this version knows,
    /// or a name that [`valid_name`] refuses.
    pub fn from_uri(uri: &str) -> Option<Role> {
        let rest = uri.strip_prefix(ROLE_URI_PREFIX)?;
        match rest.split_once(':') {
            None if rest == "controller" => Some(Role::Controller),
            Some(("admin", name)) if valid_name(name) => Some(Role::Admin(name.to_owned())),
            Some(("agent", host)) if valid_name(host) => Some(Role::Agent(host.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Controller => f.write_str("controller"),
            Role::Admin(name) => write!(f, "admin {name}"),
            Role::Agent(host) => write!(f, "agent {host}"),
        }
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleKind::Controller => "the controller",
            RoleKind::Admin => "admins",
            RoleKind::Agent => "agents",
        })
    }
}

/// A name for an admin or an agent: 1 to 63 letters, digits, `-` and `_`,
/// starting with a letter or digit. It becomes a folder name and part of a
/// URI, so nothing that needs quoting in either.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Who is on the other end of a connection, as its certificate says. Built
/// once per connection after the handshake (which already checked the CA's
/// signature, the validity dates, the revocation list and that the
/// certificate may be used by a client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The subject's common name (`CN=`), for logs.
    pub subject: String,
    /// The serial number in hex, for logs and for `mailctl certs revoke`.
    pub serial: String,
    /// `None`: no role URI, several, or one this version does not know.
    pub role: Option<Role>,
}

impl Peer {
    /// Reads the leaf certificate a client presented (DER).
    pub fn from_certificate(der: &[u8]) -> Peer {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Peer {
                subject: "(unreadable certificate)".into(),
                serial: String::new(),
                role: None,
            };
        };
        let subject = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let mut roles = role_uris(&cert).filter_map(Role::from_uri);
        let role = match (roles.next(), roles.next()) {
            (Some(role), None) => Some(role),
            _ => None,
        };
        Peer {
            subject,
            serial: cert.raw_serial_as_string().replace(':', ""),
            role,
        }
    }

    /// A peer that presented no certificate (never reaches the router:
    /// the handshake requires one; kept so a missing one is refused, not assumed).
    pub fn anonymous() -> Peer {
        Peer {
            subject: "(no certificate)".into(),
            serial: String::new(),
            role: None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate CN={} serial {} ", self.subject, self.serial)?;
        match &self.role {
            Some(role) => write!(f, "(role {role})"),
            None => f.write_str("(no mailctl role)"),
        }
    }
}

/// The `mailctl:role:` URIs among a certificate's subject alternative names.
fn role_uris<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'a>,
) -> impl Iterator<Item = &'a str> {
    use x509_parser::extensions::GeneralName;
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(ROLE_URI_PREFIX) => Some(*uri),
            _ => None,
        })
}

const CONTROLLER: &[RoleKind] = &[RoleKind::Controller];
const CONTROLLER_AND_ADMINS: &[RoleKind] = &[RoleKind::Controller, RoleKind::Admin];

/// Method, route, and who may call it. Agents appear nowhere: an agent
/// never drives another. Anything not listed is the controller's alone.
///
/// - `GET /v1/desired` carries the desired state with its secrets inlined
///   (file contents that are not world-readable): only the controller,
///   which sent it, may read it back.
/// - `PUT /v1/desired` and the point of no return change what the host
///   does for good: the controller's, which runs the migration.
/// - Admins read (status, plan, sync progress, metrics), start a declared
///   sync job (`mailctl sync run`) and confirm a generation (keeping a
///   change the controller made, which a person at the console may have to
///   do when the controller is gone).
pub const PERMISSIONS: &[(&str, &str, &[RoleKind])] = &[
    ("GET", route::HEALTH, CONTROLLER_AND_ADMINS),
    ("GET", route::STATUS, CONTROLLER_AND_ADMINS),
    ("GET", route::DESIRED, CONTROLLER),
    ("PUT", route::DESIRED, CONTROLLER),
    ("POST", route::CONFIRM, CONTROLLER_AND_ADMINS),
    ("GET", route::PLAN, CONTROLLER_AND_ADMINS),
    ("GET", route::SYNC, CONTROLLER_AND_ADMINS),
    ("POST", route::SYNC, CONTROLLER_AND_ADMINS),
    ("POST", route::POINT_OF_NO_RETURN, CONTROLLER),
    ("GET", route::METRICS, CONTROLLER_AND_ADMINS),
];

/// Who may send `method` to `route` (`None`: no route matched, and the
/// answer will be 404 to whoever may see that). HEAD is GET without a body.
pub fn allowed(method: &str, route: Option<&str>) -> &'static [RoleKind] {
    let Some(route) = route else {
        return CONTROLLER_AND_ADMINS;
    };
    let method = if method == "HEAD" { "GET" } else { method };
    PERMISSIONS
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map_or(CONTROLLER, |(_, _, roles)| roles)
}

/// Whether `peer` may send `method` to `route`; `Err` says why not.
pub fn authorize(peer: &Peer, method: &str, route: Option<&str>) -> Result<(), String> {
    let roles = allowed(method, route);
    match &peer.role {
        Some(role) if roles.contains(&role.kind()) => Ok(()),
        Some(role) => Err(format!(
            "{role} may not {method} {}: only {} may",
            route.unwrap_or("this path"),
            roles
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
        None => Err(format!(
            "this certificate names no mailctl role (a SAN URI {ROLE_URI_PREFIX}...); \
             issue one with `mailctl certs add admin NAME`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_uris_round_trip_and_odd_ones_are_no_role() {
        for role in [
            Role::Controller,
            Role::Admin("alice".into()),
            Role::Agent("eve".into()),
        ] {
            assert_eq!(Role::from_uri(&role.uri()), Some(role));
        }
        for odd in [
            "mailctl:role:",
            "mailctl:role:root",
            "mailctl:role:controller:x",
            "mailctl:role:admin:",
            "mailctl:role:admin:a/b",
            "mailctl:role:agent:-eve",
            "https://mailctl/role/controller",
        ] {
            assert_eq!(Role::from_uri(odd), None, "{odd}");
        }
    }

    #[test]
    fn the_table_keeps_secrets_and_irreversible_steps_to_the_controller() {
        use RoleKind::*;
        assert_eq!(allowed("GET", Some(route::DESIRED)), &[Controller]);
        assert_eq!(allowed("PUT", Some(route::DESIRED)), &[Controller]);
        assert_eq!(
            allowed("POST", Some(route::POINT_OF_NO_RETURN)),
            &[Controller]
        );
        assert_eq!(allowed("HEAD", Some(route::STATUS)), &[Controller, Admin]);
        assert_eq!(allowed("POST", Some(route::SYNC)), &[Controller, Admin]);
        assert_eq!(allowed("DELETE", Some(route::SYNC)), &[Controller]);
        assert!(
            PERMISSIONS
                .iter()
                .all(|(_, _, roles)| !roles.contains(&Agent))
        );
        let agent = Peer {
            subject: "eve".into(),
            serial: "01".into(),
            role: Some(Role::Agent("eve".into())),
        };
        let why = authorize(&agent, "GET", Some(route::STATUS)).expect_err("agent");
        assert_eq!(
            why,
            "agent eve may not GET /v1/status: only the controller and admins may"
        );
        let nobody = Peer {
            role: None,
            ..agent
        };
        assert!(authorize(&nobody, "GET", None).is_err());
    }

    #[test]
    fn names_are_plain() {
        for good in ["eve", "a", "mail-01", "x_y", "E9"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "-eve", "eve.example.org", "a/b", "a b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
