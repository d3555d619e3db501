//! End-to-end tests: warren against the real OpenSSH `sshd` on loopback.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod algorithms;
mod auth;
mod config_files;
mod connect;
mod connect_cli;
mod docs;
mod flow_control;
mod handover;
mod harness;
mod harness_selftest;
mod hostile_server;
mod hostkeys;
mod http_connect;
mod ipv6;
mod jump;
mod kbd_interactive;
mod leaks;
mod lifecycle;
mod limits;
mod liveness;
mod local_forward;
mod logs;
mod metrics;
mod names_and_sockets;
mod netns;
mod on_demand;
mod openssh_forwarding;
mod reload;
mod remote_forward;
mod reverse_socks;
mod runtime;
mod scripts;
mod slow_peers;
mod socks;
mod status;
mod support;
mod trust;
