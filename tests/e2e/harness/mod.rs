//! Test harness: throwaway OpenSSH servers, keys and agents, peers, a fault proxy and warren runners.
//!
//! Everything binds 127.0.0.1:0 (or a Unix socket in a tempdir) and hands out the
//! bound address; everything it starts is stopped when its handle is dropped.

// Each test uses only part of the harness.
#![allow(dead_code)]

mod agent;
mod ca;
mod http;
mod keys;
mod local_user;
mod notify;
mod openssh_client;
mod peers;
mod procs;
mod proxy;
mod sessions;
mod sshd;
mod sshd_auth;
mod sshd_config;
mod transfer;
mod util;
mod warren;

// Likewise for the re-exports.
#[allow(unused_imports)]
pub use {
    agent::SshAgent,
    ca::TestCa,
    http::HttpServer,
    keys::{KeyKind, UserKey, fingerprint},
    local_user::LocalUser,
    notify::NotifySocket,
    openssh_client::OpenSshClient,
    peers::{BoxStream, EchoServer, PeerAddr, PeerServer, SinkServer, SourceServer, Transport},
    procs::{adopt_orphans, tree as process_tree},
    proxy::{FaultMode, FaultProxy},
    sessions::SessionCounts,
    sshd::{HostKey, SshServer, SshServerBuilder},
    transfer::{
        Digest, MIB, Transfer, hex, push_through, push_through_split, random_digest, read_digest,
        write_random,
    },
    util::{
        NO_IPV6, bind_loopback, bind_loopback_v6, current_user, is_root, run_checked, tail,
        wait_for, wait_until, with_timeout, within,
    },
    warren::{WARREN, WarrenProcess, exit_code, launcher_command, run_warren, warren_command},
};
