//! Host key verification: OpenSSH known_hosts files, host certificates and pinned fingerprints.
//!
//! [`verify`] is what the session's `check_server_key` calls. It decides the way
//! OpenSSH's `ssh` does, with three deliberate differences, each stricter:
//! a `@revoked` line revokes its key for every host (OpenSSH applies it only to
//! the hosts it names); accept-new does not learn a key when keys of other
//! algorithms are already known for the host; and a rejected certificate whose
//! plain key is unknown is refused rather than learned under accept-new.
mod cert;
mod error;
mod fingerprint;
mod known_hosts;
mod pattern;
#[cfg(test)]
mod testutil;
mod verify;

use std::path::PathBuf;

pub use cert::CertRejection;
pub use error::HostKeyError;
pub use fingerprint::{Fingerprint, FingerprintError, fingerprint_sha256};
pub use known_hosts::{Location, known_hosts_line_matches};
pub use verify::verify;

/// What to do with a host key that no known_hosts line mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse it (`StrictHostKeyChecking yes`).
    #[default]
    Strict,
    /// Record it in the first known_hosts file and accept it (`StrictHostKeyChecking accept-new`).
    AcceptNew,
}

/// The host key settings of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostKeyCheck {
    /// known_hosts files, searched in order; accept-new writes to the first.
    pub known_hosts: Vec<PathBuf>,
    /// What to do with an unknown host.
    pub policy: Policy,
    /// When non-empty, exactly the keys with these fingerprints are accepted (unless revoked),
    /// without consulting known_hosts; for a certificate, the key inside it is compared.
    pub pins: Vec<Fingerprint>,
}

/// Why a host key was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A known_hosts line holds this key.
    KnownHost(Location),
    /// A valid host certificate signed by the CA on this `@cert-authority` line.
    CertAuthority(Location),
    /// The key matches this pinned fingerprint.
    Pinned(Fingerprint),
    /// The host was unknown and accept-new recorded the key on this line.
    Learned(Location),
}
