//! The supervisor's timing under paused time, with a scripted connector: backoff between
//! failed attempts, `reconnect_max` for failures that need a human, the immediate first
//! reconnect after a lost session, the reset after a minute up, and reconnect requests.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::*;
use crate::config::{Config, Env};

/// What one scripted attempt does.
enum Outcome {
    /// Fails at once with this error.
    Fail(fn() -> SessionError),
    /// Comes up and stays up this long, then the connection is lost.
    Up(Duration),
}

fn network() -> SessionError {
    SessionError::Connect {
        addr: "10.0.0.5:22".into(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    }
}

fn auth() -> SessionError {
    SessionError::Auth {
        user: "ops".into(),
        detail: "the server rejected key id".into(),
    }
}

/// A connector playing `outcomes` in order; once they are used up, attempts never finish.
/// Records when each attempt started.
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    started: watch::Sender<Vec<Instant>>,
}

impl Connector for Script {
    fn connect<'a>(
        &'a self,
        _host: &'a HostConfig,
        _upstream: Option<&'a HostHandle>,
        _router: SharedRouter,
    ) -> Attempt<'a> {
        self.started.send_modify(|s| s.push(Instant::now()));
        let next = self
            .outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        Box::pin(async move {
            match next {
                None => std::future::pending().await,
                Some(Outcome::Fail(e)) => Err(e()),
                Some(Outcome::Up(lasts)) => {
                    let (alive, dead) = oneshot::channel::<()>();
                    tokio::spawn(async move {
                        tokio::time::sleep(lasts).await;
                        drop(alive);
                    });
                    Ok(Established {
                        session: Session::fake(),
                        info: crate::session::state::SessionInfo::default(),
                        end: Arc::default(),
                        dead,
                    })
                }
            }
        })
    }
}

fn host(settings: &str) -> Arc<HostConfig> {
    let cfg = Config::parse(
        &format!("[hosts.h]\nhostname = \"10.0.0.5\"\n{settings}"),
        std::path::Path::new("/w.toml"),
        &Env::from_process(),
    )
    .unwrap();
    cfg.hosts["h"].clone()
}

/// Runs a supervisor over `outcomes` until every one was played and the next attempt began;
/// returns when each attempt started (relative to the first) and the handle.
async fn play(settings: &str, outcomes: Vec<Outcome>) -> (Vec<Duration>, HostHandle) {
    let n = outcomes.len();
    let (started, mut seen) = watch::channel(Vec::new());
    let script = Arc::new(Script {
        outcomes: Mutex::new(outcomes.into()),
        started,
    });
    let tracker = TaskTracker::new();
    let handle = HostHandle::spawn_with(
        script,
        host(settings),
        None,
        &tracker,
        CancellationToken::new(),
    );
    let times = seen.wait_for(|s| s.len() > n).await.unwrap().clone();
    let first = times[0];
    (times.iter().map(|t| *t - first).collect(), handle)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn network_failures_back_off_doubling_with_jitter_up_to_reconnect_max() {
    let settings = "reconnect_min = \"1s\"\nreconnect_max = \"8s\"\n";
    let (at, handle) = play(settings, (0..7).map(|_| Outcome::Fail(network)).collect()).await;
    // Delay k is drawn from the upper half of its step: 1, 2, 4, 8, 8, 8, 8 s.
    let steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0];
    for (k, step) in steps.iter().enumerate() {
        let gap = at[k + 1] - at[k];
        assert!(
            gap >= secs(step / 2.0) && gap <= secs(*step),
            "delay {k} was {gap:?}, not within [{}, {step}] s",
            step / 2.0
        );
    }
    let s = handle.status();
    assert!(matches!(
        s.state,
        HostState::Connecting | HostState::Backoff { .. }
    ));
    assert_eq!(
        s.last_error.map(|e| e.class),
        Some(FailureClass::Network),
        "the error is kept while retrying"
    );
    assert_eq!(s.reconnects, 0, "failed attempts are not lost sessions");
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_needs_a_human_waits_reconnect_max_each_time() {
    let settings = "reconnect_min = \"1s\"\nreconnect_max = \"45s\"\n";
    let (started, mut seen) = watch::channel(Vec::new());
    let script = Arc::new(Script {
        outcomes: Mutex::new(vec![Outcome::Fail(auth), Outcome::Fail(auth)].into()),
        started,
    });
    let handle = HostHandle::spawn_with(
        script,
        host(settings),
        None,
        &TaskTracker::new(),
        CancellationToken::new(),
    );
    // Between the attempts, status says failed (not backoff), with the auth error.
    let mut status = handle.watch_status();
    let failed = status
        .wait_for(|s| matches!(s.state, HostState::Failed { .. }))
        .await
        .unwrap()
        .clone();
    assert_eq!(failed.last_error.map(|e| e.class), Some(FailureClass::Auth));
    let at = seen.wait_for(|s| s.len() > 2).await.unwrap().clone();
    assert_eq!(at[1] - at[0], secs(45.0));
    assert_eq!(at[2] - at[1], secs(45.0));
}

#[tokio::test(start_paused = true)]
async fn a_lost_session_is_replaced_at_once_once_then_backs_off_until_a_minute_up() {
    let settings = "reconnect_min = \"2s\"\nreconnect_max = \"60s\"\n";
    let lives = [5.0, 5.0, 5.0, 61.0, 5.0];
    let outcomes = lives.iter().map(|l| Outcome::Up(secs(*l))).collect();
    let (at, handle) = play(settings, outcomes).await;
    // The wait between each loss (start + life) and the next attempt.
    let waits: Vec<Duration> = (0..lives.len())
        .map(|k| at[k + 1] - at[k] - secs(lives[k]))
        .collect();
    assert_eq!(
        waits[0],
        Duration::ZERO,
        "the first loss is replaced at once"
    );
    assert!(
        waits[1] >= secs(1.0) && waits[1] <= secs(2.0),
        "then backoff: {:?}",
        waits[1]
    );
    assert!(
        waits[2] >= secs(2.0) && waits[2] <= secs(4.0),
        "doubling: {:?}",
        waits[2]
    );
    assert_eq!(
        waits[3],
        Duration::ZERO,
        "a session up for a minute earns the immediate reconnect again"
    );
    assert!(
        waits[4] >= secs(1.0) && waits[4] <= secs(2.0),
        "and the backoff starts over: {:?}",
        waits[4]
    );
    assert_eq!(handle.status().reconnects, 5);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_request_skips_the_backoff() {
    let settings = "reconnect_min = \"30s\"\nreconnect_max = \"60s\"\n";
    let (started, mut seen) = watch::channel(Vec::new());
    let script = Arc::new(Script {
        outcomes: Mutex::new(vec![Outcome::Fail(network)].into()),
        started,
    });
    let handle = HostHandle::spawn_with(
        script,
        host(settings),
        None,
        &TaskTracker::new(),
        CancellationToken::new(),
    );
    let mut status = handle.watch_status();
    status
        .wait_for(|s| matches!(s.state, HostState::Backoff { .. }))
        .await
        .unwrap();
    let asked = Instant::now();
    handle.reconnect_now();
    let at = seen.wait_for(|s| s.len() > 1).await.unwrap().clone();
    assert_eq!(
        at[1], asked,
        "the next attempt starts at once, not after 15-30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_through_a_hop_that_is_down_says_why_the_hop_is_down() {
    let tracker = TaskTracker::new();
    let (started, _) = watch::channel(Vec::new());
    let hop = HostHandle::spawn_with(
        Arc::new(Script {
            outcomes: Mutex::new(vec![Outcome::Fail(auth)].into()),
            started,
        }),
        host("connect_timeout = \"2s\"\n"),
        None,
        &tracker,
        CancellationToken::new(),
    );
    // The inner host's attempts wait for the hop's session, which never comes.
    let (started, _) = watch::channel(Vec::new());
    let inner = HostHandle::spawn_with(
        Arc::new(Script {
            outcomes: Mutex::new(VecDeque::new()),
            started,
        }),
        host("connect_timeout = \"2s\"\n"),
        Some(hop),
        &tracker,
        CancellationToken::new(),
    );
    let mut status = inner.watch_status();
    let s = status
        .wait_for(|s| s.last_error.is_some())
        .await
        .unwrap()
        .clone();
    let message = s.last_error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.starts_with("via jump host h: h is down: authentication failed"),
        "{message}"
    );
}

/// A supervisor over `outcomes` for an on-demand host; the attempts' start times and the
/// handle.
fn on_demand(outcomes: Vec<Outcome>) -> (watch::Receiver<Vec<Instant>>, HostHandle) {
    let settings = "on_demand = true\nidle_timeout = \"30s\"\nreconnect_min = \"1s\"\n";
    let (started, seen) = watch::channel(Vec::new());
    let script = Arc::new(Script {
        outcomes: Mutex::new(outcomes.into()),
        started,
    });
    let handle = HostHandle::spawn_with(
        script,
        host(settings),
        None,
        &TaskTracker::new(),
        CancellationToken::new(),
    );
    (seen, handle)
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_host_connects_for_a_connection_and_closes_idle_timeout_after_the_last() {
    let hour = Duration::from_secs(3600);
    let (seen, handle) = on_demand(vec![Outcome::Up(hour), Outcome::Up(hour)]);
    let mut status = handle.watch_status();
    status
        .wait_for(|s| s.state == HostState::Idle)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        seen.borrow().is_empty(),
        "no session before a connection wants one"
    );
    assert_eq!(handle.status().state, HostState::Idle);

    let lease = handle.lease();
    status.wait_for(|s| s.state == HostState::Up).await.unwrap();
    assert_eq!(seen.borrow().len(), 1);
    // Used for ten minutes: the session stays however long that is.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(handle.status().state, HostState::Up);
    let released = Instant::now();
    drop(lease);
    status
        .wait_for(|s| s.state == HostState::Idle)
        .await
        .unwrap();
    assert_eq!(
        released.elapsed(),
        Duration::from_secs(30),
        "idle_timeout after the last"
    );
    assert!(handle.watch_session().borrow().is_none());
    assert_eq!(
        handle.status().reconnects,
        0,
        "going idle is not a lost session"
    );

    // A connection that comes and goes within idle_timeout keeps the session.
    let _again = handle.lease();
    status.wait_for(|s| s.state == HostState::Up).await.unwrap();
    assert_eq!(seen.borrow().len(), 2);
    let brief = handle.lease();
    drop(brief);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        handle.status().state,
        HostState::Up,
        "a lease is still held"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_on_demand_host_goes_idle_once_no_connection_waits() {
    let (seen, handle) = on_demand((0..3).map(|_| Outcome::Fail(network)).collect());
    let mut status = handle.watch_status();
    let lease = handle.lease();
    status
        .wait_for(|s| matches!(s.state, HostState::Backoff { .. }))
        .await
        .unwrap();
    drop(lease);
    status
        .wait_for(|s| s.state == HostState::Idle)
        .await
        .unwrap();
    let attempts = seen.borrow().len();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        seen.borrow().len(),
        attempts,
        "no attempts without a connection"
    );
    let idle = handle.status();
    assert_eq!(idle.state, HostState::Idle);
    assert!(
        idle.last_error.is_some(),
        "the last failure stays in status while idle"
    );
}
