//! Host key verification: OpenSSH known_hosts files and pinned fingerprints.
pub mod known_hosts;
