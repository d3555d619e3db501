//! `remote-dynamic` forwards (ssh -R [BIND:]PORT): a SOCKS4/4a/5 and HTTP CONNECT proxy on
//! the server whose connections leave from this machine. The listener is a remote forward's
//! (`remote::serve`); each channel it brings is accepted, its client's request read over the
//! channel with the same limits as a `dynamic` ingress, and the destination connected here
//! (names resolved here) within the host's `connect_timeout`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::copy::{Ingress, splice};
use super::local::REFUSAL_TIMEOUT;
use super::proxy::{self, HANDSHAKE_TIMEOUT, Request};
use super::socks::{Reply, Target};
use super::{ActiveGuard, ForwardRuntime};
use crate::session::{Incoming, Session};

/// Serves one channel of a remote-dynamic listener until either side closes, the forward is
/// cut or the session ends.
pub async fn connection(
    incoming: Incoming,
    _active: ActiveGuard,
    forward: ForwardRuntime,
    connect_timeout: Duration,
    cut: CancellationToken,
    session: Arc<Session>,
) {
    let Incoming { channel, reply, .. } = incoming;
    reply.accept().await;
    let mut channel = channel.into_stream();
    tokio::select! {
        () = cut.cancelled() => debug!("connection cut"),
        () = session.ended() => debug!("session ended; connection closed"),
        () = async {
            let Some((tcp, request)) = open(&mut channel, connect_timeout).await else {
                return;
            };
            match splice(tcp, channel, &forward.counters, Ingress::Channel).await {
                Ok((i, o)) => debug!(target = ?request.target, bytes_in = i, bytes_out = o, "connection finished"),
                Err(e) => debug!(error = %e, "connection ended with an error"),
            }
        } => {}
    }
}

/// Answers the client of one channel beyond the forward's `max_connections` with its
/// protocol's failure (see [`proxy::refuse`]), within [`REFUSAL_TIMEOUT`].
pub async fn refuse(incoming: Incoming, _permit: OwnedSemaphorePermit) {
    let Incoming { channel, reply, .. } = incoming;
    reply.accept().await;
    let mut channel = channel.into_stream();
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, proxy::refuse(&mut channel)).await;
}

/// Reads the client's request from `channel`, connects its destination and answers; the
/// connection when it was made (with the client's early bytes already sent on).
async fn open<S>(channel: &mut S, limit: Duration) -> Option<(TcpStream, Request)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = match proxy::handshake(channel, HANDSHAKE_TIMEOUT).await {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "proxy handshake refused");
            return None;
        }
    };
    let connected = match tokio::time::timeout(limit, connect(&request.target)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(reply_for(&e)),
        Err(_) => Err(Reply::HostUnreachable),
    };
    let mut tcp = match connected {
        Ok(s) => s,
        Err(reply) => {
            debug!(target = ?request.target, reply = ?reply, "proxy connect failed");
            let _ = channel.write_all(&request.protocol.reply(reply)).await;
            let _ = channel.shutdown().await;
            return None;
        }
    };
    if channel
        .write_all(&request.protocol.reply(Reply::Succeeded))
        .await
        .is_err()
    {
        return None;
    }
    if !request.early.is_empty() && tcp.write_all(&request.early).await.is_err() {
        return None;
    }
    Some((tcp, request))
}

async fn connect(target: &Target) -> io::Result<TcpStream> {
    let stream = match target {
        Target::Addr(a) => TcpStream::connect(*a).await?,
        Target::Name(name, port) => TcpStream::connect((name.as_str(), *port)).await?,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The SOCKS answer for a destination that could not be connected.
fn reply_for(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => Reply::HostUnreachable,
        io::ErrorKind::PermissionDenied => Reply::NotAllowed,
        _ => Reply::GeneralFailure,
    }
}
