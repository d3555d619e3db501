//! `dynamic` forwards (ssh -D): a SOCKS4/4a/5 and HTTP CONNECT proxy on this machine; each
//! request becomes a `direct-tcpip` channel to the named target, resolved on the SSH server's
//! side.

use std::sync::Arc;

use russh::ChannelOpenFailure;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::copy::{Ingress, splice};
use super::listener::Listener;
use super::listener::Stream;
use super::local::{Refusal, accept_loop};
pub use super::proxy::HANDSHAKE_TIMEOUT;
use super::proxy::{self, Request};
use super::socks::Reply;
use super::{ActiveGuard, Context, Counters};
use crate::config::Endpoint;
use crate::session::{HostHandle, OpenError};

/// Accepts on `listener` until the forward stops; each client runs in its own task.
pub async fn serve(cx: Context, listener: Listener) {
    let (host, counters, cut) = (cx.host.clone(), cx.forward.counters.clone(), cx.cut.clone());
    accept_loop(&cx, &listener, Refusal::Proxy, |stream, peer, active| {
        client(
            stream,
            peer,
            active,
            host.clone(),
            counters.clone(),
            cut.clone(),
        )
    })
    .await;
}

async fn client(
    mut stream: Stream,
    peer: (String, u16),
    _active: ActiveGuard,
    host: HostHandle,
    counters: Arc<Counters>,
    cut: CancellationToken,
) {
    let handshake = tokio::select! {
        () = cut.cancelled() => return,
        r = proxy::handshake(&mut stream, HANDSHAKE_TIMEOUT) => r,
    };
    let Request {
        protocol,
        target: wanted,
        early,
    } = match handshake {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "proxy handshake refused");
            return;
        }
    };
    let (target_host, target_port) = wanted.host_port();
    let target = Endpoint::Tcp {
        host: target_host,
        port: target_port,
    };
    let opened = tokio::select! {
        () = cut.cancelled() => return,
        r = host.open(&target, (&peer.0, peer.1)) => r,
    };
    let (channel, session, _lease) = match opened {
        Ok(c) => c,
        Err(e) => {
            debug!(target = %target, error = %e, "proxy connect failed");
            // Written, shut, and what the client sent meanwhile read away (bounded), so that
            // a reset does not destroy the answer before the client reads it.
            super::http_connect::farewell(&mut stream, &protocol.reply(reply_for(&e))).await;
            return;
        }
    };
    if stream
        .write_all(&protocol.reply(Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    let mut channel = channel;
    if !early.is_empty() && channel.write_all(&early).await.is_err() {
        return;
    }
    tokio::select! {
        () = cut.cancelled() => debug!("connection cut"),
        () = session.ended() => debug!("session ended; connection closed"),
        r = splice(stream, channel, &counters, Ingress::Local) => match r {
            Ok((i, o)) => debug!(target = %target, bytes_in = i, bytes_out = o, "connection finished"),
            Err(e) => debug!(error = %e, "connection ended with an error"),
        },
    }
}

/// The answer (SOCKS code, or HTTP 502/504) for a channel that could not be opened.
fn reply_for(e: &OpenError) -> Reply {
    match e {
        OpenError::Refused(russh::Error::ChannelOpenFailure(f)) => match f {
            ChannelOpenFailure::ConnectFailed => Reply::ConnectionRefused,
            ChannelOpenFailure::AdministrativelyProhibited => Reply::NotAllowed,
            _ => Reply::GeneralFailure,
        },
        OpenError::Timeout => Reply::HostUnreachable,
        OpenError::NoSession { .. } | OpenError::SessionEnded => Reply::NetworkUnreachable,
        _ => Reply::GeneralFailure,
    }
}
