//! Egress probes (`probe_interval`): a local forward opens a `direct-tcpip` channel to its
//! egress and closes it; a remote forward connects to its egress from this machine. The state
//! goes to status, the metrics and systemd's `STATUS=`; a change is logged once.

use std::time::{Duration, SystemTime};

use tokio::net::{TcpStream, UnixStream};
use tracing::{info, warn};

use super::{Context, ProbeState, ProbeStatus};
use crate::config::{Endpoint, ForwardSpec};

/// Probes `cx`'s egress at once and then every `every` until the forward stops. A local
/// forward whose host has no session is probed as soon as one comes up.
pub async fn run(cx: Context, every: Duration) {
    let mut sessions = cx.host.watch_session();
    loop {
        let next = match probe(&cx).await {
            Some(result) => {
                record(&cx, result);
                None
            }
            // Nothing to learn about the egress without a session: wait for one.
            None => Some(()),
        };
        tokio::select! {
            () = cx.stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
            Ok(()) = sessions.changed(), if next.is_some() => {}
        }
    }
}

/// One probe: `None` when it cannot be made now.
async fn probe(cx: &Context) -> Option<Result<(), String>> {
    let limit = cx.host.config().connect_timeout;
    match &cx.forward.config.spec {
        ForwardSpec::Local { connect, .. } => {
            let session = cx.host.watch_session().borrow().clone()?;
            if session.is_closed() {
                return None;
            }
            let opened = tokio::time::timeout(limit, session.open(connect, ("127.0.0.1", 0))).await;
            if session.is_closed() {
                // The session ended meanwhile; that says nothing about the egress.
                return None;
            }
            Some(match opened {
                // Dropping the channel closes it.
                Ok(Ok(_channel)) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "the server could not open a channel to {connect}: {e}"
                )),
                Err(_) => Err(format!("no channel to {connect} within connect_timeout")),
            })
        }
        ForwardSpec::Remote { connect, .. } => {
            let connected = tokio::time::timeout(limit, connect_here(connect)).await;
            Some(match connected {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("cannot connect to {connect}: {e}")),
                Err(_) => Err(format!("no connection to {connect} within connect_timeout")),
            })
        }
        ForwardSpec::Dynamic { .. } | ForwardSpec::RemoteDynamic { .. } => None,
    }
}

async fn connect_here(egress: &Endpoint) -> std::io::Result<()> {
    match egress {
        Endpoint::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.map(drop),
        Endpoint::Unix(path) => UnixStream::connect(path).await.map(drop),
    }
}

/// Keeps the result in the forward's status; a change of state is logged once.
fn record(cx: &Context, result: Result<(), String>) {
    let state = match result {
        Ok(()) => ProbeState::Ok,
        Err(_) => ProbeState::Failing,
    };
    let before = cx.forward.status().probe.map(|p| p.state);
    match (&result, before) {
        (Err(e), Some(ProbeState::Ok) | None) => warn!(error = %e, "egress probe failing"),
        (Ok(()), Some(ProbeState::Failing)) => info!("egress probe ok again"),
        _ => {}
    }
    cx.forward.set_status(|st| {
        let since = match &st.probe {
            Some(p) if p.state == state => p.since,
            _ => SystemTime::now(),
        };
        st.probe = Some(ProbeStatus {
            state,
            since,
            last_error: result.err(),
        });
    });
}
