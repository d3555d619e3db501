//! The supervisor of one host: a task that owns the host's session, publishes its state on a
//! `watch`, and reconnects with backoff. How a session is brought up is its [`Connector`]
//! (the network in the daemon, a script in the tests below, which run in paused time).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::backoff::Backoff;
use super::connect::{establish, ssh_client_config};
use super::counters::{HostCounters, LossReason};
use super::error::{FailureClass, SessionError};
use super::handle::{Command, HostHandle};
use super::live::{Established, OpenError, Session};
use super::router::SharedRouter;
use super::state::{HostState, HostStatus, LastError};
use crate::config::HostConfig;

/// A session that stayed up this long resets the backoff (and earns another immediate
/// reconnect when it is lost).
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One attempt's future.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<Established, SessionError>> + Send + 'a>>;

/// Brings up one session of a host (the supervisor bounds each attempt with
/// `connect_timeout`).
pub trait Connector: Send + Sync + 'static {
    /// One attempt for `host`, through `upstream` (the previous hop) when given; channels the
    /// server opens go to `router`.
    fn connect<'a>(
        &'a self,
        host: &'a HostConfig,
        upstream: Option<&'a HostHandle>,
        router: SharedRouter,
    ) -> Attempt<'a>;
}

/// The daemon's connector: transport, SSH handshake with the host key check,
/// authentication.
pub struct SshConnector;

impl Connector for SshConnector {
    fn connect<'a>(
        &'a self,
        host: &'a HostConfig,
        upstream: Option<&'a HostHandle>,
        router: SharedRouter,
    ) -> Attempt<'a> {
        Box::pin(async move {
            // Read on every attempt: a known_hosts file that gained a @cert-authority line
            // asks for host certificates from the next session on.
            let config = ssh_client_config(host).await;
            establish(host, config, router, upstream).await
        })
    }
}

/// The task that owns one host's session.
pub(super) struct Supervisor {
    /// How many connections want the session ([`super::handle::Lease`]s held).
    pub(super) demand: watch::Receiver<usize>,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) upstream: Option<HostHandle>,
    pub(super) router: SharedRouter,
    pub(super) config: watch::Sender<Arc<HostConfig>>,
    pub(super) status: watch::Sender<HostStatus>,
    pub(super) session: watch::Sender<Option<Arc<Session>>>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) cancel: CancellationToken,
    /// What the metrics endpoint reads about this host.
    pub(super) counters: Arc<HostCounters>,
    /// A session without a post-quantum key exchange was logged once already.
    pub(super) warned_not_post_quantum: bool,
}

/// How a held session ended.
enum Ended {
    /// The daemon is stopping.
    Stopped,
    /// `reconnect_now` or a reconfiguration asked for a new session.
    Requested,
    /// An on-demand host's session had no connection for `idle_timeout`.
    Idle,
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
    pub(super) async fn run(mut self) {
        let mut cfg = self.config.borrow().clone();
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
                backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
                last_logged = None;
                quick_retry = true;
            }
            if cfg.on_demand.is_some() && *self.demand.borrow() == 0 {
                match self.idle().await {
                    None => return,
                    Some(true) => {}
                    // New settings: look again (still idle without a connection).
                    Some(false) => continue,
                }
            }
            self.set_state(HostState::Connecting, None);
            let (connector, upstream) = (self.connector.clone(), self.upstream.clone());
            let attempt = tokio::time::timeout(
                cfg.connect_timeout,
                connector.connect(&cfg, upstream.as_ref(), self.router.clone()),
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    r = &mut attempt => break Some(r.unwrap_or_else(|_| Err(self.timed_out(&cfg)))),
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
                        Ended::Idle => {
                            info!("no connection for idle_timeout; session closed until one comes");
                            backoff.reset();
                            quick_retry = true;
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
                    self.set_state_replaced(HostState::waiting(delay, false), Some(lost));
                    delay
                }
                Err(e) => {
                    let class = e.class();
                    self.counters.connect_failed(class);
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
                        HostState::waiting(delay, class.needs_human()),
                        Some(LastError { class, message }),
                    );
                    delay
                }
            };
            if let Wake::Cancelled = self.wait(delay, cfg.on_demand.is_some()).await {
                return;
            }
        }
    }

    /// Publishes the session and holds it until it dies or is dropped; `None` on shutdown.
    async fn hold(&mut self, est: Established) -> Ended {
        let Established {
            session,
            info,
            end,
            dead,
        } = est;
        let session = Arc::new(session);
        // A reconnect asked for while this session was being set up is this session; new
        // settings are not.
        let mut reconfigured = false;
        while let Ok(cmd) = self.commands.try_recv() {
            reconfigured |= matches!(self.apply(Some(cmd)), Asked::Reconfigured);
        }
        if reconfigured {
            session.end("reconnecting with new settings").await;
            return Ended::Requested;
        }
        self.session.send_replace(Some(session.clone()));
        if !info.post_quantum() && !std::mem::replace(&mut self.warned_not_post_quantum, true) {
            info!(kex = %info.kex, "the key exchange is not post-quantum: a future quantum computer could decrypt this session (the server offers no ML-KEM hybrid)");
        }
        self.status.send_modify(|s| {
            s.enter(HostState::Up, None);
            s.session = Some(info);
        });
        info!("session up");
        tokio::spawn(measure_round_trips(
            session.clone(),
            self.counters.clone(),
            self.config.borrow().keepalive_interval,
        ));
        let on_demand = self.config.borrow().on_demand;
        let idle = idle_for(self.demand.clone(), on_demand);
        let ended = tokio::select! {
            () = self.cancel.cancelled() => Ended::Stopped,
            () = idle => Ended::Idle,
            _ = dead => {
                let reason = end
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .filter(|r| *r != LossReason::Closed || !self.hop_down())
                    .unwrap_or_else(|| if self.hop_down() { LossReason::Hop } else { LossReason::Closed });
                self.counters.session_lost(reason);
                Ended::Lost(loss_message(reason).to_string())
            }
            // A closed command channel means every handle is gone: stop like on cancel.
            cmd = self.commands.recv() => match self.apply(cmd) {
                Asked::Stop => Ended::Stopped,
                Asked::Reconnect | Asked::Reconfigured => Ended::Requested,
            },
        };
        self.session.send_replace(None);
        match ended {
            Ended::Stopped => session.end("warren is stopping").await,
            Ended::Requested => session.end("reconnecting").await,
            Ended::Idle => session.end("idle").await,
            Ended::Lost(_) => session.lost(),
        }
        ended
    }

    /// An on-demand host without a session: idle until a connection wants one. `Some(true)`:
    /// connect now (a connection came, or a reconnect was asked for); `Some(false)`: new
    /// settings; `None`: stop.
    async fn idle(&mut self) -> Option<bool> {
        let error = self.status.borrow().last_error.clone();
        self.set_state(HostState::Idle, error);
        let mut demand = self.demand.clone();
        tokio::select! {
            () = self.cancel.cancelled() => None,
            wanted = demand.wait_for(|n| *n > 0) => wanted.is_ok().then_some(true),
            cmd = self.commands.recv() => match self.apply(cmd) {
                Asked::Stop => None,
                Asked::Reconnect => Some(true),
                Asked::Reconfigured => Some(false),
            },
        }
    }

    /// Waits `delay` before the next attempt; an on-demand host stops waiting (to go idle)
    /// when no connection wants a session any more.
    async fn wait(&mut self, delay: Duration, on_demand: bool) -> Wake {
        let mut demand = self.demand.clone();
        let unwanted = async move {
            let gone = demand.wait_for(|n| *n == 0).await.is_ok();
            if !(gone && on_demand) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = self.cancel.cancelled() => Wake::Cancelled,
            () = tokio::time::sleep(delay) => Wake::Elapsed,
            () = unwanted => Wake::Now,
            cmd = self.commands.recv() => match self.apply(cmd) {
                Asked::Stop => Wake::Cancelled,
                Asked::Reconnect | Asked::Reconfigured => Wake::Now,
            },
        }
    }

    /// Whether the jump hop this host is reached through is down (or going).
    fn hop_down(&self) -> bool {
        self.upstream
            .as_ref()
            .is_some_and(|hop| hop.status().state != HostState::Up)
    }

    /// Why an attempt ran out of `connect_timeout`: the hop it goes through, when that is
    /// down (its own error says why, so the inner host's status names it), else the timeout.
    fn timed_out(&self, cfg: &HostConfig) -> SessionError {
        match &self.upstream {
            Some(hop) if hop.status().state != HostState::Up => SessionError::Hop {
                hop: hop.config().name.clone(),
                source: Box::new(OpenError::Down {
                    host: hop.config().name.clone(),
                    why: hop
                        .status()
                        .last_error
                        .map_or_else(|| "no session yet".to_string(), |e| e.message),
                }),
            },
            _ => SessionError::Timeout(cfg.connect_timeout),
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
            s.enter(state, error);
            s.reconnects += 1;
        });
    }

    fn set_state(&self, state: HostState, error: Option<LastError>) {
        self.status.send_modify(|s| s.enter(state, error));
    }
}

/// Resolves once no connection has wanted the session for the idle timeout of an on-demand
/// host (`on_demand`); never for an always-on one.
async fn idle_for(mut demand: watch::Receiver<usize>, on_demand: Option<Duration>) {
    let Some(after) = on_demand else {
        return std::future::pending().await;
    };
    loop {
        if demand.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(after) => return,
            _ = demand.wait_for(|n| *n > 0) => {}
        }
    }
}

/// What a lost session's status says.
fn loss_message(reason: LossReason) -> &'static str {
    match reason {
        LossReason::Keepalive => "keepalives unanswered",
        LossReason::WriteStall => "nothing could be written to the server (write stalled)",
        LossReason::Closed => "connection closed",
        LossReason::Hop => "the jump host's session ended",
    }
}

/// Measures a keepalive round trip every `every` while `session` lasts (for status and the
/// metrics). russh's own keepalives decide when the session is dead; these only time it.
async fn measure_round_trips(session: Arc<Session>, counters: Arc<HostCounters>, every: Duration) {
    loop {
        tokio::select! {
            () = session.ended() => return,
            () = tokio::time::sleep(every) => {}
        }
        let started = Instant::now();
        let answered = tokio::time::timeout(every, session.ping()).await;
        // russh answers Ok when the session died while it waited: count only live ones.
        if matches!(answered, Ok(Ok(()))) && !session.is_closed() {
            counters.round_trip(started.elapsed());
        }
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
