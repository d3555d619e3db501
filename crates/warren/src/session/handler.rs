//! The russh client `Handler` of every session: host key verification, the hand-off of
//! `forwarded-*` channels to their remote forward, the refusal of every other channel the
//! server opens, and the signal that the session task has ended (its drop, which russh does
//! even when it skips `disconnected`).

use std::sync::{Arc, Mutex};

use russh::client::{ChannelOpenHandle, Handler, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::counters::LossReason;
use super::router::{Incoming, RouteKey, SharedRouter, Unrouted};
use super::state::SessionInfo;
use crate::config::HostConfig;
use crate::hostkey::{self, Accepted, Fingerprint, HostKeyCheck, HostKeyError};

/// Errors a handler callback can end the session with.
#[derive(Debug)]
pub enum HandlerError {
    /// From the SSH layer.
    Ssh(russh::Error),
    /// The host key was refused; kept whole so that the supervisor can report why.
    HostKey(HostKeyError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e)
    }
}

impl From<HandlerError> for super::SessionError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::Ssh(e) => Self::from(e),
            HandlerError::HostKey(e) => Self::HostKey(e),
        }
    }
}

/// The handler of one session.
pub struct ClientHandler {
    check: HostKeyCheck,
    /// The host's name in the configuration, for logs.
    name: String,
    hostname: String,
    port: u16,
    router: SharedRouter,
    /// What the key exchange negotiated, for status; read once the session is up.
    negotiated: Arc<Mutex<SessionInfo>>,
    /// Why the session ended, when russh tells (it may not: see `disconnected`).
    end: Arc<Mutex<Option<LossReason>>>,
    /// A channel the server opened unasked was refused (and logged) in this session.
    refused_logged: bool,
    /// A channel was rejected for a saturated remote forward (and logged) in this session.
    saturated_logged: bool,
    /// Dropped with the handler, when russh's session task ends: the supervisor's
    /// "session dead" signal.
    _alive: oneshot::Sender<()>,
}

impl ClientHandler {
    /// A handler for `host`, verifying keys for its `hostname:port`; `alive` is dropped when
    /// the session ends.
    pub fn new(
        check: HostKeyCheck,
        host: &HostConfig,
        router: SharedRouter,
        negotiated: Arc<Mutex<SessionInfo>>,
        end: Arc<Mutex<Option<LossReason>>>,
        alive: oneshot::Sender<()>,
    ) -> Self {
        Self {
            check,
            name: host.name.clone(),
            hostname: host.hostname.clone(),
            port: host.port,
            router,
            negotiated,
            end,
            refused_logged: false,
            saturated_logged: false,
            _alive: alive,
        }
    }
}

impl Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // known_hosts is read (and perhaps written) from disk: keep it off the async threads.
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, hash_alg } => {
                PublicKeyOrCertificate::PublicKey {
                    key: key.clone(),
                    hash_alg: *hash_alg,
                }
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                PublicKeyOrCertificate::Certificate(cert.clone())
            }
        };
        let shown = match &key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                format!("{} {}", key.algorithm(), Fingerprint::of(key.key_data()))
            }
            PublicKeyOrCertificate::Certificate(cert) => format!(
                "{} {}",
                cert.algorithm().to_certificate_type(),
                Fingerprint::of(cert.public_key())
            ),
        };
        self.info().host_key = shown;
        let (check, hostname, port) = (self.check.clone(), self.hostname.clone(), self.port);
        let verdict =
            tokio::task::spawn_blocking(move || hostkey::verify(&check, &hostname, port, &key))
                .await
                .map_err(|_| HandlerError::Ssh(russh::Error::UnknownKey))?;
        match verdict {
            Ok(Accepted::Learned(at)) => {
                info!(host = %self.name, known_hosts = %at, "new host key recorded (accept-new)");
                Ok(true)
            }
            Ok(how) => {
                debug!(host = %self.name, accepted = ?how, "host key verified");
                Ok(true)
            }
            Err(e) => Err(HandlerError::HostKey(e)),
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let key = RouteKey::Tcp(connected_address.to_string(), connected_port);
        let originator = format!("{originator_address}:{originator_port}");
        self.hand_off("forwarded-tcpip", key, channel, reply, originator)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let key = RouteKey::Unix(socket_path.to_string());
        let originator = socket_path.to_string();
        self.hand_off(
            "forwarded-streamlocal@openssh.com",
            key,
            channel,
            reply,
            originator,
        )
        .await;
        Ok(())
    }

    /// russh calls this as its session task ends, with the error that ended it — unless
    /// shutting the transport down failed first (then the supervisor decides, from the hop's
    /// state, between `hop` and `closed`).
    async fn disconnected(
        &mut self,
        reason: russh::client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            russh::client::DisconnectReason::Error(HandlerError::Ssh(
                russh::Error::KeepaliveTimeout,
            )) => LossReason::Keepalive,
            russh::client::DisconnectReason::Error(HandlerError::Ssh(
                russh::Error::InactivityTimeout,
            )) => LossReason::WriteStall,
            _ => LossReason::Closed,
        };
        *self
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        match reason {
            russh::client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            russh::client::DisconnectReason::Error(e) => Err(e),
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let mut info = self.info();
        info.kex = names.kex.as_ref().to_string();
        info.cipher = names.cipher.as_ref().to_string();
        info.mac = if names.cipher.as_ref().contains("gcm")
            || names.cipher.as_ref().contains("poly1305")
        {
            "implicit".into()
        } else {
            names.client_mac.as_ref().to_string()
        };
        info.server_version = String::from_utf8_lossy(session.remote_sshid())
            .trim()
            .to_string();
        Ok(())
    }

    // Channel types warren never asks for. russh's defaults accept them and drop the channel,
    // leaving it open on the server with nobody reading; each is refused instead
    // (`SSH_OPEN_ADMINISTRATIVELY_PROHIBITED`, what dropping the reply sends).

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("session", reply);
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("x11", reply);
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("auth-agent@openssh.com", reply);
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("direct-tcpip", reply);
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("direct-streamlocal@openssh.com", reply);
        Ok(())
    }
}

impl ClientHandler {
    fn info(&self) -> std::sync::MutexGuard<'_, SessionInfo> {
        self.negotiated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a `forwarded-*` channel to the remote forward whose listener it came from,
    /// without waiting (this runs inside the session loop). One for a listener warren never
    /// requested is refused; one for a forward with too many channels waiting is rejected
    /// for lack of resources, logged at warn once per session.
    async fn hand_off(
        &mut self,
        kind: &'static str,
        key: RouteKey,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        originator: String,
    ) {
        let incoming = Incoming {
            channel,
            reply,
            originator,
        };
        match self.router.route(&key, incoming) {
            Ok(()) => {}
            Err(Unrouted::NoRoute(incoming)) => self.refuse(kind, incoming.reply),
            Err(Unrouted::Saturated(incoming)) => {
                if std::mem::replace(&mut self.saturated_logged, true) {
                    debug!(host = %self.name, route = ?key, "remote forward saturated; channel rejected");
                } else {
                    warn!(host = %self.name, route = ?key, "remote forward is saturated; channels rejected (further ones at debug)");
                }
                incoming
                    .reply
                    .reject(ChannelOpenFailure::ResourceShortage)
                    .await;
            }
        }
    }

    /// Refuses a channel the server opened that warren did not ask for: logged at warn once
    /// per session (a server could open thousands), then at debug.
    fn refuse(&mut self, kind: &'static str, reply: ChannelOpenHandle) {
        if std::mem::replace(&mut self.refused_logged, true) {
            debug!(host = %self.name, channel_type = kind, "unrequested channel refused");
        } else {
            warn!(
                host = %self.name,
                channel_type = kind,
                "server opened a channel warren did not ask for; refused (further ones at debug)"
            );
        }
        drop(reply);
    }
}
