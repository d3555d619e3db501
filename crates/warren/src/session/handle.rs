//! The handle on a host's supervisor that forwards and the daemon hold: the host's settings,
//! status and current session, channel opens that wait for a session, remote-forward
//! routing, and the commands (reconnect, new settings, stop).

use std::sync::Arc;

use russh::ChannelStream;
use russh::client::Msg;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};

use super::counters::{HostCounters, OpenFailure};
use super::live::{OPEN_ATTEMPTS, OpenError, Session};
use super::router::{Incoming, RemoteRouter, RouteKey, SharedRouter};
use super::state::HostStatus;
use super::supervisor::{Connector, SshConnector, Supervisor};
use crate::config::{Endpoint, HostConfig};

/// What a handle asks of its supervisor.
pub(super) enum Command {
    /// Drop the session (or skip the wait) and connect now.
    ReconnectNow,
    /// New settings (and the previous hop to reach the host through): reconnect with them.
    Reconfigure(Arc<HostConfig>, Option<HostHandle>),
}

/// A connection's claim on its host's session, held while the connection lasts: an on-demand
/// host opens its session while any is held and closes it once none has been for
/// `idle_timeout`. (Always-on hosts count them too, to no effect.)
#[derive(Debug)]
pub struct Lease {
    demand: Arc<watch::Sender<usize>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.demand.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The handle forwards and the daemon hold on a host's supervisor.
#[derive(Clone)]
pub struct HostHandle {
    config: watch::Receiver<Arc<HostConfig>>,
    status: watch::Receiver<HostStatus>,
    session: watch::Receiver<Option<Arc<Session>>>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    router: SharedRouter,
    counters: Arc<HostCounters>,
    demand: Arc<watch::Sender<usize>>,
}

impl HostHandle {
    /// Starts the supervisor of `config` on `tracker`, reaching the host through
    /// `upstream`'s session (the previous hop of a jump chain) when given; it stops when
    /// `cancel` fires.
    pub fn spawn(
        config: Arc<HostConfig>,
        upstream: Option<HostHandle>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self::spawn_with(Arc::new(SshConnector), config, upstream, tracker, cancel)
    }

    /// Like [`HostHandle::spawn`], bringing sessions up with `connector`.
    pub fn spawn_with(
        connector: Arc<dyn Connector>,
        config: Arc<HostConfig>,
        upstream: Option<HostHandle>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (status_tx, status) = watch::channel(HostStatus::connecting());
        let counters = Arc::new(HostCounters::default());
        let (session_tx, session) = watch::channel(None);
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (config_tx, config_rx) = watch::channel(config.clone());
        let router: SharedRouter = Arc::new(RemoteRouter::default());
        let (demand, demand_rx) = watch::channel(0);
        let sup = Supervisor {
            demand: demand_rx,
            connector,
            upstream,
            router: router.clone(),
            config: config_tx,
            status: status_tx,
            session: session_tx,
            commands: cmd_rx,
            cancel: cancel.clone(),
            counters: counters.clone(),
            warned_not_post_quantum: false,
        };
        let span = info_span!("host", host = %config.name);
        tracker.spawn(sup.run().instrument(span));
        Self {
            config: config_rx,
            status,
            session,
            commands: cmd_tx,
            cancel,
            router,
            counters,
            demand: Arc::new(demand),
        }
    }

    /// A claim on the host's session for one connection (see [`Lease`]).
    pub fn lease(&self) -> Lease {
        self.demand.send_modify(|n| *n += 1);
        Lease {
            demand: self.demand.clone(),
        }
    }

    /// What this host has counted (for the metrics endpoint and status).
    pub fn counters(&self) -> &Arc<HostCounters> {
        &self.counters
    }

    /// A receiver of the current session (`None` while down).
    pub fn watch_session(&self) -> watch::Receiver<Option<Arc<Session>>> {
        self.session.clone()
    }

    /// Routes server-opened channels for `key` to `queue`.
    pub fn route_remote(&self, key: RouteKey, queue: mpsc::Sender<Incoming>) {
        self.router.register(key, queue);
    }

    /// Stops routing `key`.
    pub fn unroute_remote(&self, key: &RouteKey) {
        self.router.unregister(key);
    }

    /// The host's settings (the latest, after a reload).
    pub fn config(&self) -> Arc<HostConfig> {
        self.config.borrow().clone()
    }

    /// True when both handles are the same supervisor.
    pub fn same(&self, other: &HostHandle) -> bool {
        Arc::ptr_eq(&self.router, &other.router)
    }

    /// Replaces the host's settings and the hop it is reached through, and reconnects with
    /// them: the session is replaced, the supervisor and its forwards stay.
    pub async fn reconfigure(&self, config: Arc<HostConfig>, upstream: Option<HostHandle>) {
        let _ = self
            .commands
            .send(Command::Reconfigure(config, upstream))
            .await;
    }

    /// Stops the supervisor: its session is disconnected and it is not restarted.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// The current status.
    pub fn status(&self) -> HostStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<HostStatus> {
        self.status.clone()
    }

    /// Skips the backoff wait and reconnects now (dropping a live session).
    pub fn reconnect_now(&self) {
        let _ = self.commands.try_send(Command::ReconnectNow);
    }

    /// The current session, waiting for one up to `connect_timeout`.
    pub async fn session(&self) -> Result<Arc<Session>, OpenError> {
        let mut rx = self.session.clone();
        let wait = rx.wait_for(|s| s.as_ref().is_some_and(|s| !s.is_closed()));
        let timeout = self.config().connect_timeout;
        tokio::select! {
            () = self.cancel.cancelled() => Err(OpenError::Cancelled),
            r = tokio::time::timeout(timeout, wait) => match r {
                Ok(Ok(s)) => s.clone().ok_or(OpenError::Cancelled),
                Ok(Err(_)) => Err(OpenError::Cancelled),
                Err(_) => Err(OpenError::NoSession { host: self.config().name.clone(), timeout }),
            },
        }
    }

    /// Opens a channel to `target` on the session, waiting for a session if there is none
    /// (an idle on-demand host opens one). Returns the session too (its connections end with
    /// it) and the connection's [`Lease`], to hold while the channel is in use.
    ///
    /// A session that ends while the open is pending (a frozen server found dead by the
    /// keepalives) has taken nothing from the connection, whose bytes still wait unread in
    /// its socket: the open moves to the next session, at most [`OPEN_ATTEMPTS`] times.
    pub async fn open(
        &self,
        target: &Endpoint,
        originator: (&str, u16),
    ) -> Result<(ChannelStream<Msg>, Arc<Session>, Lease), OpenError> {
        let lease = self.lease();
        let opened = self.open_on_a_session(target, originator).await;
        let failure = match opened {
            Ok((stream, session)) => return Ok((stream, session, lease)),
            Err(e) => e,
        };
        let counted = match &failure {
            OpenError::NoSession { .. } => Some(OpenFailure::NoSession),
            OpenError::Refused(_) => Some(OpenFailure::Refused),
            OpenError::Timeout => Some(OpenFailure::Timeout),
            OpenError::SessionEnded => Some(OpenFailure::SessionEnded),
            OpenError::Cancelled | OpenError::Down { .. } => None,
        };
        if let Some(reason) = counted {
            self.counters.open_failed(reason);
        }
        Err(failure)
    }

    async fn open_on_a_session(
        &self,
        target: &Endpoint,
        originator: (&str, u16),
    ) -> Result<(ChannelStream<Msg>, Arc<Session>), OpenError> {
        let mut attempt = 1;
        loop {
            let session = self.session().await?;
            let started = tokio::time::Instant::now();
            let opened = tokio::select! {
                r = tokio::time::timeout(
                    self.config().connect_timeout,
                    session.open(target, originator),
                ) => Some(r),
                () = session.ended() => None,
            };
            let gone = session.is_closed();
            return match opened {
                Some(Ok(Ok(stream))) => {
                    self.counters.channel_open.observe(started.elapsed());
                    Ok((stream, session))
                }
                _ if gone && attempt < OPEN_ATTEMPTS => {
                    debug!(
                        attempt,
                        "the session ended before the channel opened; next session"
                    );
                    attempt += 1;
                    continue;
                }
                Some(Ok(Err(e))) => Err(OpenError::Refused(e)),
                Some(Err(_)) => Err(OpenError::Timeout),
                None => Err(OpenError::SessionEnded),
            };
        }
    }
}
