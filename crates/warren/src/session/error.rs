//! Why a session attempt failed, and the failure class that decides how to retry it.

use std::fmt;
use std::time::Duration;

use crate::hostkey::HostKeyError;

/// The failure classes shown in status (README, "Failure classes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Refused, unreachable, timeout, reset: retried with backoff.
    Network,
    /// Unknown, changed or revoked host key: needs a human; retried at `reconnect_max`.
    HostKey,
    /// Every authentication method rejected: needs a human; retried at `reconnect_max`.
    Auth,
    /// Something in the configuration or on disk is unusable (for example an unreadable key).
    Config,
}

impl FailureClass {
    /// The name status and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::HostKey => "host-key",
            Self::Auth => "auth",
            Self::Config => "config",
        }
    }

    /// True when retrying soon cannot help: a person must change something first.
    pub fn needs_human(self) -> bool {
        !matches!(self, Self::Network)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed attempt to bring a session up, or the end of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// DNS gave nothing usable.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name looked up.
        host: String,
        /// Resolver error.
        source: std::io::Error,
    },
    /// TCP connect failed (on every address the name resolved to).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address (or `name:port`) tried last.
        addr: String,
        /// Socket error.
        source: std::io::Error,
    },
    /// Connect, handshake and authentication took longer than `connect_timeout`.
    #[error("no session within connect_timeout ({})", crate::config::format_duration(*.0))]
    Timeout(Duration),
    /// The SSH protocol layer failed.
    #[error("ssh: {0}")]
    Ssh(russh::Error),
    /// The server and warren have no algorithm of one kind in common (a human must widen
    /// the list, deliberately).
    #[error(
        "no {what} in common with the server: it offers {theirs}; warren offers {ours} \
         (add one with {key} = \"+NAME\" if it is acceptable)"
    )]
    NoCommonAlgorithm {
        /// What kind of algorithm, in words.
        what: &'static str,
        /// The setting that chooses them.
        key: &'static str,
        /// The server's list.
        theirs: String,
        /// Warren's list.
        ours: String,
    },
    /// The server's host key was not accepted.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// The server rejected every credential offered.
    #[error("authentication failed for user {user}: {detail}")]
    Auth {
        /// Login user.
        user: String,
        /// What was offered and what went wrong, without secrets.
        detail: String,
    },
    /// A credential or setting on this machine is unusable (never a secret in the text).
    #[error("{0}")]
    Config(String),
    /// The previous hop of the jump chain could not carry the connection.
    #[error("via jump host {hop}: {source}")]
    Hop {
        /// The hop's name.
        hop: String,
        /// Why its channel could not be opened.
        source: Box<super::OpenError>,
    },
    /// The ProxyCommand could not be started.
    #[error("proxy_command: {0}")]
    ProxyCommand(std::io::Error),
    /// The transport ended (closed by the server, reset, or dead).
    #[error("session closed: {0}")]
    Closed(String),
}

impl From<russh::Error> for SessionError {
    fn from(e: russh::Error) -> Self {
        use russh::AlgorithmKind as K;
        match e {
            russh::Error::NoCommonAlgo { kind, ours, theirs } => {
                let (what, key) = match kind {
                    K::Kex => ("key exchange method", "kex_algorithms"),
                    K::Key => ("host key algorithm", "host_key_algorithms"),
                    K::Cipher => ("cipher", "ciphers"),
                    K::Mac => ("MAC", "macs"),
                    K::Compression => ("compression", "compression"),
                };
                // The markers for strict kex and extensions are not algorithms to choose.
                let list = |v: Vec<String>| {
                    v.into_iter()
                        .filter(|n| !n.starts_with("ext-info") && !n.starts_with("kex-strict"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                Self::NoCommonAlgorithm {
                    what,
                    key,
                    theirs: list(theirs),
                    ours: list(ours),
                }
            }
            e => Self::Ssh(e),
        }
    }
}

impl SessionError {
    /// The class, decided by the error's type, never by its text.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Resolve { .. }
            | Self::Connect { .. }
            | Self::Timeout(_)
            | Self::Closed(_)
            | Self::Hop { .. }
            | Self::ProxyCommand(_) => FailureClass::Network,
            Self::Ssh(e) => ssh_class(e),
            Self::HostKey(_) => FailureClass::HostKey,
            Self::Auth { .. } => FailureClass::Auth,
            Self::Config(_) | Self::NoCommonAlgorithm { .. } => FailureClass::Config,
        }
    }
}

fn ssh_class(e: &russh::Error) -> FailureClass {
    match e {
        russh::Error::UnknownKey | russh::Error::WrongServerSig => FailureClass::HostKey,
        russh::Error::NotAuthenticated | russh::Error::NoAuthMethod => FailureClass::Auth,
        _ => FailureClass::Network,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_come_from_the_type() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let net = SessionError::Connect {
            addr: "127.0.0.1:22".into(),
            source: io(),
        };
        assert_eq!(net.class(), FailureClass::Network);
        assert!(!net.class().needs_human());
        assert_eq!(
            SessionError::Timeout(Duration::from_secs(1)).class(),
            FailureClass::Network
        );
        assert_eq!(
            SessionError::Ssh(russh::Error::UnknownKey).class(),
            FailureClass::HostKey
        );
        assert_eq!(
            SessionError::Ssh(russh::Error::Disconnect).class(),
            FailureClass::Network
        );
        let auth = SessionError::Auth {
            user: "u".into(),
            detail: "x".into(),
        };
        assert_eq!(auth.class(), FailureClass::Auth);
        assert!(auth.class().needs_human());
        assert_eq!(
            SessionError::Config("bad key".into()).class(),
            FailureClass::Config
        );
        assert_eq!(FailureClass::HostKey.to_string(), "host-key");
    }
}
