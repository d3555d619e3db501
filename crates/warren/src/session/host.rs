//! The supervisor of one host: a task that owns the host's session, publishes its state on a
//! `watch`, and reconnects with backoff. Forwards hold a [`HostHandle`] and open channels on
//! the current session themselves, so the supervisor never waits on any one of them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use russh::client::Msg;
use russh::{ChannelStream, Disconnect};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::backoff::Backoff;
use super::connect::{Established, establish, ssh_client_config};
use super::error::{FailureClass, SessionError};
use super::handler::ClientHandler;
use super::router::{Incoming, RemoteRouter, RouteKey, SharedRouter};
use crate::config::{Endpoint, HostConfig};

/// A session that stayed up this long resets the backoff (and earns another immediate
/// reconnect when it is lost).
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Sessions a forwarded connection's channel open is tried on when each ends before the
/// channel opens.
const OPEN_ATTEMPTS: u32 = 3;

/// The state of a host, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    /// An attempt is in progress.
    Connecting,
    /// The session is up.
    Up,
    /// Waiting before the next attempt, after a network failure.
    Backoff {
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
    /// The last attempt failed in a way that needs a human (host key, auth, config);
    /// still retried, at `reconnect_max`.
    Failed {
        /// When the next attempt starts.
        retry_at: SystemTime,
    },
}

/// The last error of a host, with its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// network, host-key, auth or config.
    pub class: FailureClass,
    /// The whole error chain, without secrets.
    pub message: String,
}

/// Everything status needs about one host.
#[derive(Debug, Clone)]
pub struct HostStatus {
    /// Current state.
    pub state: HostState,
    /// Since when the host has been up, or not up.
    pub since: SystemTime,
    /// The error that ended the last attempt or session, until a session is up again.
    pub last_error: Option<LastError>,
    /// Sessions lost or replaced so far.
    pub reconnects: u64,
}

/// An established, authenticated session.
pub struct Session {
    handle: russh::client::Handle<ClientHandler>,
    /// Cancelled when the session ends, so that its connections close at once instead of
    /// lingering half-dead.
    ended: CancellationToken,
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
    /// Opens a `direct-tcpip` or `direct-streamlocal` channel to `target`.
    pub async fn open(
        &self,
        target: &Endpoint,
        originator: (&str, u16),
    ) -> Result<ChannelStream<Msg>, russh::Error> {
        let channel = match target {
            Endpoint::Tcp { host, port } => {
                self.handle
                    .channel_open_direct_tcpip(
                        host.as_str(),
                        u32::from(*port),
                        originator.0,
                        u32::from(originator.1),
                    )
                    .await?
            }
            Endpoint::Unix(path) => {
                self.handle
                    .channel_open_direct_streamlocal(path.to_string_lossy())
                    .await?
            }
        };
        Ok(channel.into_stream())
    }

    /// Sends DISCONNECT (russh sends none when the handle is dropped).
    async fn disconnect(&self, why: &str) {
        let sent = self.handle.disconnect(Disconnect::ByApplication, why, "en");
        let _ = tokio::time::timeout(Duration::from_secs(1), sent).await;
    }

    /// Asks the server to listen on `listen` (`tcpip-forward` or
    /// `streamlocal-forward@openssh.com`); returns the key its channels will carry.
    pub async fn request_remote(&self, listen: &Endpoint) -> Result<RouteKey, russh::Error> {
        match listen {
            Endpoint::Tcp { host, port } => {
                let allocated = self
                    .handle
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
                self.handle.streamlocal_forward(path.as_str()).await?;
                Ok(RouteKey::Unix(path))
            }
        }
    }

    /// Cancels a remote listener (`cancel-tcpip-forward` / `cancel-streamlocal-forward`).
    pub async fn cancel_remote(&self, key: &RouteKey) -> Result<(), russh::Error> {
        match key {
            RouteKey::Tcp(host, port) => {
                self.handle.cancel_tcpip_forward(host.as_str(), *port).await
            }
            RouteKey::Unix(path) => self.handle.cancel_streamlocal_forward(path.as_str()).await,
        }
    }

    /// Resolves when the session has ended (died, replaced or stopped).
    pub async fn ended(&self) {
        self.ended.cancelled().await;
    }

    /// True once the session's task has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }
}

enum Command {
    ReconnectNow,
    /// New settings (and the previous hop to reach the host through): reconnect with them.
    Reconfigure(Arc<HostConfig>, Option<HostHandle>),
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
}

impl HostHandle {
    /// Starts the supervisor of `config` on `tracker`; it stops when `cancel` fires.
    pub fn spawn(
        config: Arc<HostConfig>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self::spawn_via(config, None, tracker, cancel)
    }

    /// Like [`HostHandle::spawn`], reaching the host through `upstream`'s session (the
    /// previous hop of a jump chain) when given.
    pub fn spawn_via(
        config: Arc<HostConfig>,
        upstream: Option<HostHandle>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let now = SystemTime::now();
        let (status_tx, status) = watch::channel(HostStatus {
            state: HostState::Connecting,
            since: now,
            last_error: None,
            reconnects: 0,
        });
        let (session_tx, session) = watch::channel(None);
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (config_tx, config_rx) = watch::channel(config.clone());
        let router: SharedRouter = Arc::new(RemoteRouter::default());
        let sup = Supervisor {
            upstream,
            router: router.clone(),
            config: config_tx,
            status: status_tx,
            session: session_tx,
            commands: cmd_rx,
            cancel: cancel.clone(),
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
        }
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

    /// Opens a channel to `target` on the session, waiting for a session if there is none.
    /// Returns the session too: its connections end with it.
    ///
    /// A session that ends while the open is pending (a frozen server found dead by the
    /// keepalives) has taken nothing from the connection, whose bytes still wait unread in
    /// its socket: the open moves to the next session, at most [`OPEN_ATTEMPTS`] times.
    pub async fn open(
        &self,
        target: &Endpoint,
        originator: (&str, u16),
    ) -> Result<(ChannelStream<Msg>, Arc<Session>), OpenError> {
        let mut attempt = 1;
        loop {
            let session = self.session().await?;
            let opened = tokio::select! {
                r = tokio::time::timeout(
                    self.config().connect_timeout,
                    session.open(target, originator),
                ) => Some(r),
                () = session.ended() => None,
            };
            let gone = session.is_closed() || session.ended.is_cancelled();
            return match opened {
                Some(Ok(Ok(stream))) => Ok((stream, session)),
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

struct Supervisor {
    upstream: Option<HostHandle>,
    router: SharedRouter,
    config: watch::Sender<Arc<HostConfig>>,
    status: watch::Sender<HostStatus>,
    session: watch::Sender<Option<Arc<Session>>>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
}

/// How a held session ended.
enum Ended {
    /// The daemon is stopping.
    Stopped,
    /// `reconnect_now` or a reconfiguration asked for a new session.
    Requested,
    /// It died; why.
    Lost(String),
}

/// How a wait ended.
enum Wake {
    Cancelled,
    Now,
    Elapsed,
}

/// What a command asks of the supervisor once applied.
enum Asked {
    /// A new session now.
    Reconnect,
    /// A new session now, with new settings.
    Reconfigured,
    /// Every handle is gone: stop.
    Stop,
}

impl Supervisor {
    async fn run(mut self) {
        let mut cfg = self.config.borrow().clone();
        let mut ssh_config = ssh_client_config(&cfg).await;
        let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        let mut last_logged: Option<String> = None;
        // The first attempt after a lost session starts at once (the host was reachable a
        // moment ago; autossh restarts at once too); later ones back off. Earned again by a
        // session that stays up for STABLE_AFTER, so a flapping host cannot spin.
        let mut quick_retry = true;
        loop {
            let latest = self.config.borrow().clone();
            if !Arc::ptr_eq(&cfg, &latest) {
                // Reconfigured: new settings start with a fresh backoff.
                cfg = latest;
                ssh_config = ssh_client_config(&cfg).await;
                backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
                last_logged = None;
                quick_retry = true;
            }
            self.set_state(HostState::Connecting, None);
            let upstream = self.upstream.clone();
            let attempt = tokio::time::timeout(
                cfg.connect_timeout,
                establish(
                    &cfg,
                    ssh_config.clone(),
                    self.router.clone(),
                    upstream.as_ref(),
                ),
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    r = &mut attempt => break Some(r.unwrap_or(Err(SessionError::Timeout(cfg.connect_timeout)))),
                    cmd = self.commands.recv() => match self.apply(cmd) {
                        Asked::Stop => return,
                        // New settings: this attempt is for the old ones.
                        Asked::Reconfigured => break None,
                        // A reconnect asked for while connecting is this attempt.
                        Asked::Reconnect => {}
                    },
                }
            };
            let Some(result) = result else { continue };
            let delay = match result {
                Ok(established) => {
                    last_logged = None;
                    let up_since = Instant::now();
                    let why = match self.hold(established).await {
                        Ended::Stopped => return,
                        Ended::Requested => {
                            // Asked for, not a failure: no backoff, no error, no warning.
                            info!("reconnecting on request");
                            self.set_state_replaced(HostState::Connecting, None);
                            continue;
                        }
                        Ended::Lost(why) => why,
                    };
                    if up_since.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                        quick_retry = true;
                    }
                    warn!(reason = %why, "session lost; reconnecting");
                    let lost = LastError {
                        class: FailureClass::Network,
                        message: why,
                    };
                    if std::mem::take(&mut quick_retry) {
                        self.set_state_replaced(HostState::Connecting, Some(lost));
                        continue;
                    }
                    let delay = backoff.next_delay();
                    self.set_state_replaced(backoff_state(delay, false), Some(lost));
                    delay
                }
                Err(e) => {
                    let class = e.class();
                    let message = format!("{e:#}");
                    let delay = if class.needs_human() {
                        cfg.reconnect_max
                    } else {
                        backoff.next_delay()
                    };
                    if last_logged.as_deref() == Some(message.as_str()) {
                        debug!(class = %class, error = %message, retry_in = ?delay, "connect failed again");
                    } else if class.needs_human() {
                        error!(class = %class, error = %message, retry_in = ?delay, "connect failed");
                    } else {
                        warn!(class = %class, error = %message, retry_in = ?delay, "connect failed");
                    }
                    last_logged = Some(message.clone());
                    self.set_state(
                        backoff_state(delay, class.needs_human()),
                        Some(LastError { class, message }),
                    );
                    delay
                }
            };
            if let Wake::Cancelled = self.wait(delay).await {
                return;
            }
        }
    }

    /// Publishes the session and holds it until it dies or is dropped; `None` on shutdown.
    async fn hold(&mut self, est: Established) -> Ended {
        let Established { handle, dead } = est;
        let session = Arc::new(Session {
            handle,
            ended: CancellationToken::new(),
        });
        // A reconnect asked for while this session was being set up is this session; new
        // settings are not.
        let mut reconfigured = false;
        while let Ok(cmd) = self.commands.try_recv() {
            reconfigured |= matches!(self.apply(Some(cmd)), Asked::Reconfigured);
        }
        if reconfigured {
            session.ended.cancel();
            session.disconnect("reconnecting with new settings").await;
            return Ended::Requested;
        }
        self.session.send_replace(Some(session.clone()));
        self.set_state(HostState::Up, None);
        info!("session up");
        let ended = tokio::select! {
            () = self.cancel.cancelled() => Ended::Stopped,
            _ = dead => Ended::Lost("connection closed".to_string()),
            // A closed command channel means every handle is gone: stop like on cancel.
            cmd = self.commands.recv() => match self.apply(cmd) {
                Asked::Stop => Ended::Stopped,
                Asked::Reconnect | Asked::Reconfigured => Ended::Requested,
            },
        };
        self.session.send_replace(None);
        session.ended.cancel();
        match ended {
            Ended::Stopped => session.disconnect("warren is stopping").await,
            Ended::Requested => session.disconnect("reconnecting").await,
            Ended::Lost(_) => {}
        }
        ended
    }

    async fn wait(&mut self, delay: Duration) -> Wake {
        tokio::select! {
            () = self.cancel.cancelled() => Wake::Cancelled,
            () = tokio::time::sleep(delay) => Wake::Elapsed,
            cmd = self.commands.recv() => match self.apply(cmd) {
                Asked::Stop => Wake::Cancelled,
                Asked::Reconnect | Asked::Reconfigured => Wake::Now,
            },
        }
    }

    /// Applies a command (`None`: every handle is gone); what it asks for.
    fn apply(&mut self, cmd: Option<Command>) -> Asked {
        match cmd {
            None => Asked::Stop,
            Some(Command::ReconnectNow) => Asked::Reconnect,
            Some(Command::Reconfigure(config, upstream)) => {
                info!("new settings; reconnecting");
                self.config.send_replace(config);
                self.upstream = upstream;
                Asked::Reconfigured
            }
        }
    }

    /// [`Self::set_state`] for a session that was lost or replaced, counted in the same
    /// change: a status reader never sees the new count while the old session still shows up.
    fn set_state_replaced(&self, state: HostState, error: Option<LastError>) {
        self.status.send_modify(|s| {
            apply_state(s, state, error);
            s.reconnects += 1;
        });
    }

    fn set_state(&self, state: HostState, error: Option<LastError>) {
        self.status.send_modify(|s| apply_state(s, state, error));
    }
}

fn apply_state(s: &mut HostStatus, state: HostState, error: Option<LastError>) {
    let was_up = s.state == HostState::Up;
    let is_up = state == HostState::Up;
    if was_up != is_up {
        s.since = SystemTime::now();
    }
    s.state = state;
    if is_up {
        s.last_error = None;
    } else if error.is_some() {
        s.last_error = error;
    }
}

fn backoff_state(delay: Duration, needs_human: bool) -> HostState {
    // Delays are at most 30 days (config::MAX_DURATION); checked all the same.
    let now = SystemTime::now();
    let retry_at = now.checked_add(delay).unwrap_or(now);
    if needs_human {
        HostState::Failed { retry_at }
    } else {
        HostState::Backoff { retry_at }
    }
}
