//! End-to-end tests: warren against the real OpenSSH `sshd` on loopback.

mod config_files;
mod harness;
