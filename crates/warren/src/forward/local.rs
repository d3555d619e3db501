//! `local` forwards (ssh -L): accept on this machine, open a `direct-tcpip` (or
//! `direct-streamlocal`) channel on the host's session per connection, copy both ways.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use super::copy::{Ingress, splice};
use super::listener::{Listener, Stream};
use super::{ActiveGuard, Context, Counters, proxy};
use crate::config::Endpoint;
use crate::session::HostHandle;

/// Accepts on `listener` until the forward stops; each connection runs in its own task.
pub async fn serve(cx: Context, listener: Listener, egress: Endpoint) {
    let egress = Arc::new(egress);
    let (host, counters, cut) = (cx.host.clone(), cx.forward.counters.clone(), cx.cut.clone());
    accept_loop(&cx, &listener, Refusal::Close, |stream, peer, active| {
        connection(
            stream,
            peer,
            active,
            host.clone(),
            egress.clone(),
            counters.clone(),
            cut.clone(),
        )
    })
    .await;
}

/// What a connection beyond the forward's `max_connections` gets.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Closed at once (a local forward).
    Close,
    /// A SOCKS or HTTP failure answer first (a dynamic forward), within [`REFUSAL_TIMEOUT`].
    Proxy,
}

/// How long a refused SOCKS or HTTP client has to send its first byte, to be answered.
pub(super) const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Refused clients answered at once per forward; beyond, a refused connection is just closed.
pub(super) const REFUSALS_ANSWERED: usize = 64;

/// The accept loop of every ingress on this machine (local and dynamic forwards): spawn
/// first, do the handshake inside the task, never I/O in the loop. A connection beyond
/// `max_connections` is refused (and counted) instead.
pub async fn accept_loop<F, Fut>(cx: &Context, listener: &Listener, refusal: Refusal, mut handle: F)
where
    F: FnMut(Stream, (String, u16), ActiveGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let answering = Arc::new(Semaphore::new(REFUSALS_ANSWERED));
    let limit = cx.forward.config.max_connections;
    loop {
        let accepted = tokio::select! {
            () = cx.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(active) = cx.forward.counters.admit(limit) else {
                    refuse(stream, refusal, &answering, &cx.connections);
                    continue;
                };
                let span = info_span!("conn", peer = %format!("{}:{}", peer.0, peer.1));
                cx.connections
                    .spawn(handle(stream, peer, active).instrument(span));
            }
            Err(e) => {
                // Out of descriptors, most likely: pause instead of spinning on the error.
                warn!(error = %e, "accept failed");
                tokio::select! {
                    () = cx.stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Turns away a connection beyond the limit, as `refusal` says, without I/O in the loop.
fn refuse(mut stream: Stream, refusal: Refusal, answering: &Arc<Semaphore>, tasks: &TaskTracker) {
    let Refusal::Proxy = refusal else {
        return;
    };
    let Ok(permit) = answering.clone().try_acquire_owned() else {
        return;
    };
    tasks.spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, proxy::refuse(&mut stream)).await;
        drop(permit);
    });
}

async fn connection(
    stream: Stream,
    peer: (String, u16),
    _active: ActiveGuard,
    host: HostHandle,
    egress: Arc<Endpoint>,
    counters: Arc<Counters>,
    cut: CancellationToken,
) {
    let channel = tokio::select! {
        () = cut.cancelled() => return,
        r = host.open(&egress, (&peer.0, peer.1)) => r,
    };
    let (channel, session, _lease) = match channel {
        Ok(c) => c,
        Err(e) => {
            warn!(target = %egress, error = %e, "connection closed: no channel");
            return;
        }
    };
    tokio::select! {
        () = cut.cancelled() => debug!("connection cut"),
        () = session.ended() => debug!("session ended; connection closed"),
        r = splice(stream, channel, &counters, Ingress::Local) => match r {
            Ok((i, o)) => debug!(bytes_in = i, bytes_out = o, "connection finished"),
            Err(e) => debug!(error = %e, "connection ended with an error"),
        },
    }
}
