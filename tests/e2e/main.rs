//! End-to-end tests: warren against the real OpenSSH `sshd` on loopback.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config_files;
mod harness;
mod harness_selftest;
mod support;
mod local_forward;
mod hostkeys;
mod auth;
mod lifecycle;
mod remote_forward;
mod socks;
