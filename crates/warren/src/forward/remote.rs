//! `remote` forwards (ssh -R) and the listener side of `remote-dynamic` ones: after every
//! (re)connect, ask the server to listen. For `remote`, each channel it opens is connected to
//! the egress here *before* it is accepted, so a refused egress is a rejected channel (a
//! prompt reset for the remote client), never a hang; a `remote-dynamic` channel is accepted
//! and answered as a proxy client (`remote_dynamic`).
//! A listener the server refuses (typically: the dead previous session still holds the port)
//! is retried for this forward alone, with its own backoff.

use std::sync::Arc;
use std::time::Duration;

use russh::ChannelOpenFailure;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::copy::{Ingress, splice};
use super::local::REFUSALS_ANSWERED;
use super::{ActiveGuard, Context, ForwardRuntime, ForwardState, remote_dynamic};
use crate::config::Endpoint;
use crate::session::{Backoff, Incoming, RouteKey, Session};

/// Channels waiting for their egress connect, per forward; more are rejected.
const QUEUE: usize = 256;

/// Where the channels of a listener on the server go.
#[derive(Debug, Clone)]
pub enum Egress {
    /// To this endpoint, from this machine (`remote`).
    Fixed(Arc<Endpoint>),
    /// Where each client asks, by SOCKS or HTTP CONNECT (`remote-dynamic`).
    Proxy,
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(to) => to.fmt(f),
            Self::Proxy => f.write_str("socks/http proxy"),
        }
    }
}

/// Keeps `listen` (on the server) requested on every session until the forward stops;
/// sends its channels to `egress`.
pub async fn serve(s: Context, listen: Endpoint, egress: Egress) {
    let (tx, mut rx) = mpsc::channel::<Incoming>(QUEUE);
    let mut sessions = s.host.watch_session();
    let answering = Arc::new(Semaphore::new(REFUSALS_ANSWERED));
    let cfg = s.host.config().clone();
    loop {
        let session = tokio::select! {
            () = s.stop.cancelled() => return,
            r = sessions.wait_for(|x| x.as_ref().is_some_and(|x| !x.is_closed())) => match r {
                Ok(x) => x.clone(),
                Err(_) => return,
            },
        };
        let Some(session) = session else { continue };
        let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        let mut last_error: Option<String> = None;
        // Request the listener on this session, retrying alone while the session lasts.
        let key = loop {
            match session.request_remote(&listen).await {
                Ok(key) => break Some(key),
                Err(e) => {
                    let msg = format!("the server refused to listen on {listen}: {e}");
                    if last_error.as_deref() != Some(&msg) {
                        warn!(error = %msg, "remote forward failed; retrying");
                    }
                    s.forward.set_status(|st| {
                        st.state = ForwardState::Failed;
                        st.last_error = Some(msg.clone());
                    });
                    last_error = Some(msg);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        () = s.stop.cancelled() => return,
                        _ = sessions.changed() => break None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let Some(key) = key else { continue };
        let bound = bound_endpoint(&key);
        info!(listen = %bound, connect = %egress, "remote listener up");
        s.host.route_remote(key.clone(), tx.clone());
        s.forward.set_status(|st| {
            st.state = ForwardState::Ready;
            st.last_error = None;
            st.remote_listen = Some(bound);
        });
        let stopped = loop {
            tokio::select! {
                () = s.stop.cancelled() => break true,
                _ = sessions.changed() => break false,
                Some(incoming) = rx.recv() => {
                    // Beyond max_connections the channel is refused (the remote client's
                    // connection is closed by the server), or, for a proxy, answered with
                    // its protocol's failure; counted and logged once a burst.
                    let Some(active) = s.forward.counters.admit(s.forward.config.max_connections) else {
                        let permit = match &egress {
                            Egress::Proxy => answering.clone().try_acquire_owned().ok(),
                            Egress::Fixed(_) => None,
                        };
                        match permit {
                            Some(permit) => {
                                s.connections.spawn(remote_dynamic::refuse(incoming, permit));
                            }
                            None => incoming.reply.reject(ChannelOpenFailure::ResourceShortage).await,
                        }
                        continue;
                    };
                    let span = info_span!("conn", peer = %incoming.originator);
                    let (forward, cut, session) = (s.forward.clone(), s.cut.clone(), session.clone());
                    match &egress {
                        Egress::Fixed(to) => {
                            let conn = connection(incoming, active, to.clone(), forward, cfg.connect_timeout, cut, session);
                            s.connections.spawn(conn.instrument(span));
                        }
                        Egress::Proxy => {
                            let conn = remote_dynamic::connection(incoming, active, forward, cfg.connect_timeout, cut, session);
                            s.connections.spawn(conn.instrument(span));
                        }
                    }
                }
            }
        };
        s.host.unroute_remote(&key);
        s.forward.set_status(|st| st.state = ForwardState::Waiting);
        if stopped {
            cancel(&session, &key).await;
            return;
        }
    }
}

async fn cancel(session: &Session, key: &RouteKey) {
    match tokio::time::timeout(Duration::from_secs(1), session.cancel_remote(key)).await {
        Ok(Ok(())) => debug!("remote listener cancelled"),
        Ok(Err(e)) => debug!(error = %e, "cancelling the remote listener failed"),
        Err(_) => debug!("cancelling the remote listener timed out"),
    }
}

fn bound_endpoint(key: &RouteKey) -> Endpoint {
    match key {
        RouteKey::Tcp(host, port) => Endpoint::Tcp {
            host: host.clone(),
            port: u16::try_from(*port).unwrap_or(0),
        },
        RouteKey::Unix(path) => Endpoint::Unix(path.into()),
    }
}

async fn connection(
    incoming: Incoming,
    _active: ActiveGuard,
    egress: Arc<Endpoint>,
    forward: ForwardRuntime,
    timeout: Duration,
    cut: CancellationToken,
    session: Arc<Session>,
) {
    let Incoming { channel, reply, .. } = incoming;
    let connected = tokio::time::timeout(timeout, connect_egress(&egress)).await;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            warn!(connect = %egress, error = %e, "egress refused; channel rejected");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
        Err(_) => {
            warn!(connect = %egress, "egress connect timed out; channel rejected");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    reply.accept().await;
    let channel = channel.into_stream();
    tokio::select! {
        () = cut.cancelled() => debug!("connection cut"),
        () = session.ended() => debug!("session ended; connection closed"),
        r = async {
            match stream {
                Connected::Tcp(s) => splice(s, channel, &forward.counters, Ingress::Channel).await,
                Connected::Unix(s) => splice(s, channel, &forward.counters, Ingress::Channel).await,
            }
        } => match r {
            Ok((i, o)) => debug!(bytes_in = i, bytes_out = o, "connection finished"),
            Err(e) => debug!(error = %e, "connection ended with an error"),
        },
    }
}

enum Connected {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn connect_egress(egress: &Endpoint) -> std::io::Result<Connected> {
    match egress {
        Endpoint::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            let _ = stream.set_nodelay(true);
            Ok(Connected::Tcp(stream))
        }
        Endpoint::Unix(path) => Ok(Connected::Unix(UnixStream::connect(path).await?)),
    }
}
