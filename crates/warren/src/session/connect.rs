//! One attempt at a session: transport, SSH handshake with host key check, authentication.

use std::sync::Arc;

use russh::client;
use tokio::sync::oneshot;

use super::auth;
use super::error::SessionError;
use super::handler::ClientHandler;
use super::live::{Established, Session};
use super::router::SharedRouter;
use super::state::SessionInfo;
use super::transport;
use crate::config::{HostConfig, HostKeyPolicy};
use crate::hostkey::{Fingerprint, HostKeyCheck, Policy};

/// The receive window of each channel: what the server may send before warren has passed
/// it on. Throughput over a link is at most window / round-trip time: with OpenSSH's 2 MiB,
/// 0.7 Gbit/s at 20 ms; with 8 MiB, 2.3 Gbit/s (bench/, `--only rtt`). It is also what one
/// channel whose local reader stalls can hold, whatever the packet sizes (vendor/README.md:
/// small packets are gathered, data beyond the window is dropped).
const WINDOW: u32 = 8 * 1024 * 1024;

/// The largest channel data packet the server may send (OpenSSH offers 32 KiB). sshd is
/// what limits a download on one machine, and larger packets cost it less per byte: `-L`
/// down 6.0–7.3 Gbit/s with 32 KiB, 7.6–8.1 with 64 KiB, 8.1–8.4 with 128 KiB (bench/).
/// russh reads packets of up to 256 KiB.
const MAX_PACKET: u32 = 128 * 1024;

/// The russh settings for `host`: keepalives with replies required, and an inactivity
/// timeout of the same length so that a write stalled on a dead peer also ends the session.
/// Host certificates are asked for when `host_key_algorithms` says so, else when a
/// known_hosts file names a certificate authority (read on a blocking thread).
pub async fn ssh_client_config(host: &HostConfig) -> Arc<client::Config> {
    let certificates = host.host_key_algorithms_set || {
        let files = host.known_hosts.clone();
        tokio::task::spawn_blocking(move || wants_host_certificates(&files))
            .await
            .unwrap_or(false)
    };
    let dead_after = host
        .keepalive_interval
        .saturating_mul(host.keepalive_count_max.saturating_add(1));
    Arc::new(client::Config {
        keepalive_interval: Some(host.keepalive_interval),
        keepalive_max: host.keepalive_count_max as usize,
        inactivity_timeout: Some(dead_after),
        nodelay: true,
        window_size: WINDOW,
        maximum_packet_size: MAX_PACKET,
        preferred: super::algorithms::preferred(&host.algorithms, certificates),
        ..client::Config::default()
    })
}

/// The host key settings of `host`.
pub fn host_key_check(host: &HostConfig) -> HostKeyCheck {
    HostKeyCheck {
        known_hosts: host.known_hosts.clone(),
        policy: match host.host_key_policy {
            HostKeyPolicy::Strict => Policy::Strict,
            HostKeyPolicy::AcceptNew => Policy::AcceptNew,
        },
        // Validation parsed every pin already; one that fails here would be a bug, and
        // dropping it silently could turn "pinned" into "trust known_hosts".
        pins: host
            .host_key_fingerprints
            .iter()
            .map(|f| f.parse::<Fingerprint>())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|_| vec![Fingerprint::of(&impossible_key())]),
    }
}

/// A key nobody has, pinned in place of an unparsable pin so that nothing matches.
fn impossible_key() -> russh::keys::ssh_key::public::KeyData {
    russh::keys::ssh_key::public::KeyData::Ed25519(russh::keys::ssh_key::public::Ed25519PublicKey(
        [0; 32],
    ))
}

/// Host certificates are asked for only when a known_hosts file names a certificate
/// authority, as OpenSSH does; otherwise a server's certificate would hide its plain key.
fn wants_host_certificates(known_hosts: &[std::path::PathBuf]) -> bool {
    known_hosts.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|text| {
            text.lines()
                .any(|l| l.trim_start().starts_with("@cert-authority"))
        })
    })
}

/// Brings one session up (the caller bounds it with `connect_timeout`).
pub async fn establish(
    host: &HostConfig,
    config: Arc<client::Config>,
    router: SharedRouter,
    upstream: Option<&super::HostHandle>,
) -> Result<Established, SessionError> {
    let (alive, dead) = oneshot::channel();
    let check = host_key_check(host);
    let negotiated = Arc::new(std::sync::Mutex::new(SessionInfo::default()));
    let end = Arc::new(std::sync::Mutex::new(None));
    let handler = ClientHandler::new(check, host, router, negotiated.clone(), end.clone(), alive);
    let stream = transport::open(host, upstream).await?;
    let mut handle = client::connect_stream(config, stream, handler).await?;
    auth::authenticate(&mut handle, host).await?;
    let info = negotiated
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Established {
        session: Session::new(handle),
        info,
        end,
        dead,
    })
}
