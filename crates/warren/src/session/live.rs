//! An established, authenticated session: channels to egresses, listeners on the server,
//! and the signal that it has ended.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::Msg;
use russh::{ChannelStream, Disconnect};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::handler::ClientHandler;
use super::router::RouteKey;
use crate::config::Endpoint;

/// Sessions a forwarded connection's channel open is tried on when each ends before the
/// channel opens.
pub const OPEN_ATTEMPTS: u32 = 3;

/// What one successful attempt gives the supervisor.
pub struct Established {
    /// The session.
    pub session: Session,
    /// What it negotiated (filled by the handler during the key exchange).
    pub info: super::state::SessionInfo,
    /// Why it ended, when russh said (filled by the handler as the session task ends).
    pub end: Arc<Mutex<Option<super::counters::LossReason>>>,
    /// Resolves (with an error) when russh's session task has ended.
    pub dead: oneshot::Receiver<()>,
}

/// An established, authenticated session.
pub struct Session {
    link: Link,
    /// Cancelled when the session ends, so that its connections close at once instead of
    /// lingering half-dead.
    ended: CancellationToken,
}

/// What carries a session: russh's handle; in supervisor tests, nothing.
enum Link {
    Ssh(russh::client::Handle<ClientHandler>),
    #[cfg(test)]
    Fake,
}

/// Why a channel could not be opened for a forwarded connection.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No session came up within `connect_timeout`.
    #[error("no session to {host} within connect_timeout ({})", crate::config::format_duration(*.timeout))]
    NoSession {
        /// Host name.
        host: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The daemon is stopping.
    #[error("shutting down")]
    Cancelled,
    /// A jump hop is down, for this reason (an inner host's attempt outlived its wait).
    #[error("{host} is down: {why}")]
    Down {
        /// The hop's name.
        host: String,
        /// Its last error.
        why: String,
    },
    /// The server refused the channel (for example its connect to the egress failed).
    #[error("the server refused the channel: {0}")]
    Refused(russh::Error),
    /// Every session tried ended before the channel opened.
    #[error("the session ended before the channel opened ({OPEN_ATTEMPTS} sessions tried)")]
    SessionEnded,
    /// The server did not answer the channel request within `connect_timeout`.
    #[error("the server did not open the channel within connect_timeout")]
    Timeout,
}

impl Session {
    /// A session over russh's `handle`.
    pub fn new(handle: russh::client::Handle<ClientHandler>) -> Self {
        Self {
            link: Link::Ssh(handle),
            ended: CancellationToken::new(),
        }
    }

    /// A session that carries nothing (its opens fail), for supervisor tests.
    #[cfg(test)]
    pub fn fake() -> Self {
        Self {
            link: Link::Fake,
            ended: CancellationToken::new(),
        }
    }

    fn ssh(&self) -> Result<&russh::client::Handle<ClientHandler>, russh::Error> {
        match &self.link {
            Link::Ssh(handle) => Ok(handle),
            #[cfg(test)]
            Link::Fake => Err(russh::Error::Disconnect),
        }
    }

    /// Opens a `direct-tcpip` or `direct-streamlocal` channel to `target`.
    pub async fn open(
        &self,
        target: &Endpoint,
        originator: (&str, u16),
    ) -> Result<ChannelStream<Msg>, russh::Error> {
        let handle = self.ssh()?;
        let channel = match target {
            Endpoint::Tcp { host, port } => {
                handle
                    .channel_open_direct_tcpip(
                        host.as_str(),
                        u32::from(*port),
                        originator.0,
                        u32::from(originator.1),
                    )
                    .await?
            }
            Endpoint::Unix(path) => {
                handle
                    .channel_open_direct_streamlocal(path.to_string_lossy())
                    .await?
            }
        };
        Ok(channel.into_stream())
    }

    /// Ends the session: its connections close at once, and the server gets DISCONNECT
    /// (russh sends none when the handle is dropped).
    pub async fn end(&self, why: &str) {
        self.ended.cancel();
        if let Ok(handle) = self.ssh() {
            let sent = handle.disconnect(Disconnect::ByApplication, why, "en");
            let _ = tokio::time::timeout(Duration::from_secs(1), sent).await;
        }
    }

    /// A round trip to the server (`keepalive@openssh.com` with a reply). Bound it with a
    /// timeout: russh answers `Ok` when the session dies while it waits.
    pub async fn ping(&self) -> Result<(), russh::Error> {
        self.ssh()?.send_ping().await
    }

    /// Marks the session ended without a word to the server (it is gone already).
    pub fn lost(&self) {
        self.ended.cancel();
    }

    /// Asks the server to listen on `listen` (`tcpip-forward` or
    /// `streamlocal-forward@openssh.com`); returns the key its channels will carry.
    pub async fn request_remote(&self, listen: &Endpoint) -> Result<RouteKey, russh::Error> {
        let handle = self.ssh()?;
        match listen {
            Endpoint::Tcp { host, port } => {
                let allocated = handle
                    .tcpip_forward(host.as_str(), u32::from(*port))
                    .await?;
                // The server reports a port only when it picked one.
                let port = if *port == 0 {
                    allocated
                } else {
                    u32::from(*port)
                };
                Ok(RouteKey::Tcp(host.clone(), port))
            }
            Endpoint::Unix(path) => {
                let path = path.to_string_lossy().into_owned();
                handle.streamlocal_forward(path.as_str()).await?;
                Ok(RouteKey::Unix(path))
            }
        }
    }

    /// Cancels a remote listener (`cancel-tcpip-forward` / `cancel-streamlocal-forward`).
    pub async fn cancel_remote(&self, key: &RouteKey) -> Result<(), russh::Error> {
        let handle = self.ssh()?;
        match key {
            RouteKey::Tcp(host, port) => handle.cancel_tcpip_forward(host.as_str(), *port).await,
            RouteKey::Unix(path) => handle.cancel_streamlocal_forward(path.as_str()).await,
        }
    }

    /// Resolves when the session has ended (died, replaced or stopped).
    pub async fn ended(&self) {
        self.ended.cancelled().await;
    }

    /// True once the session has ended, or its task has.
    pub fn is_closed(&self) -> bool {
        self.ended.is_cancelled()
            || match &self.link {
                Link::Ssh(handle) => handle.is_closed(),
                #[cfg(test)]
                Link::Fake => false,
            }
    }
}
