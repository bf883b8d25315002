//! The agent's API listener: the shared mutual-TLS server of `mailctl-server`.

pub use mailctl_server::*;
