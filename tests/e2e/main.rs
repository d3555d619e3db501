//! End-to-end tests: warren against the real OpenSSH `sshd` on loopback.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config_files;
mod harness;
mod harness_selftest;
