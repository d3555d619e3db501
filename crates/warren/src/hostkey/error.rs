//! Why a server's host key was refused: one variant per case a caller reacts to differently.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use super::cert::CertRejection;
use super::fingerprint::Fingerprint;
use super::known_hosts::Location;

/// A refused host key, or a known_hosts file that could not be used.
///
/// `host` fields hold `host:port` as shown to people; fingerprints are of public keys only.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// No known_hosts line has a key of this algorithm for the host (policy strict,
    /// or accept-new refusing because keys of other algorithms are known).
    #[error(
        "host key for {host} ({fingerprint}) is not in any known_hosts file{}",
        others(other_keys)
    )]
    Unknown {
        /// The host as `host:port`.
        host: String,
        /// The presented key.
        fingerprint: Fingerprint,
        /// Lines holding keys of other algorithms for this host (OpenSSH's "other keys known").
        other_keys: Vec<Location>,
    },
    /// A known_hosts line holds a different key of the same algorithm for this host.
    #[error("host key for {host} changed ({fingerprint}); the old key is at {old}")]
    Changed {
        /// The host as `host:port`.
        host: String,
        /// The presented key.
        fingerprint: Fingerprint,
        /// The line holding the old key.
        old: Location,
    },
    /// The key, or the CA that signed the certificate, is on a `@revoked` line.
    #[error("host key for {host} is revoked: {fingerprint} is marked @revoked at {location}")]
    Revoked {
        /// The host as `host:port`.
        host: String,
        /// The revoked key: the host key, or the certificate's CA.
        fingerprint: Fingerprint,
        /// The `@revoked` line.
        location: Location,
    },
    /// A host certificate that is not trusted, and whose key is not known either.
    #[error("host certificate for {host} ({fingerprint}) rejected: {reason}")]
    CertRejected {
        /// The host as `host:port`.
        host: String,
        /// The key inside the certificate.
        fingerprint: Fingerprint,
        /// What is wrong with the certificate.
        reason: CertRejection,
    },
    /// Fingerprints are pinned and the key matches none of them.
    #[error("host key for {host} ({fingerprint}) matches none of the pinned fingerprints")]
    PinMismatch {
        /// The host as `host:port`.
        host: String,
        /// The presented key.
        fingerprint: Fingerprint,
    },
    /// A known_hosts file exists but could not be read, or accept-new could not write it.
    #[error("cannot {action} known_hosts file {}", file.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The "other keys known" suffix of [`HostKeyError::Unknown`].
fn others(other_keys: &[Location]) -> String {
    let mut text = String::new();
    for (i, location) in other_keys.iter().enumerate() {
        let lead = if i == 0 {
            "; keys of other types are known for it at "
        } else {
            ", "
        };
        let _ = write!(text, "{lead}{location}");
    }
    text
}
