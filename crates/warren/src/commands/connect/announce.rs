//! What `warren connect` tells a script: once every ingress is bound and every remote
//! listener confirmed, one line per forward on stdout (`-L 127.0.0.1:41873 -> db:5555`, or one
//! JSON object with `--json`), flushed, so that `read` or `subprocess` can wait for it
//! instead of sleeping; and, with `--exit-when-idle`, the end once no connection has been open
//! for that long after the first one; with `ExitOnForwardFailure`, the end (exit 1) when a
//! forward fails before all are up.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ForwardSpec;
use crate::control::ControlState;
use crate::forward::{ForwardRuntime, ForwardState};

/// How often the forwards are looked at (their own state has no watch of its own).
const POLL: Duration = Duration::from_millis(20);

/// One forward, as announced with `--json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    forward: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    /// The address as bound (the real port for port 0).
    listen: String,
    connect: Option<String>,
}

/// Where `f` listens now: its bound ingress, or the listener the server confirmed.
fn listening(f: &ForwardRuntime) -> Option<String> {
    match &f.config.spec {
        ForwardSpec::Remote { .. } | ForwardSpec::RemoteDynamic { .. } => {
            f.status().remote_listen.map(|l| l.to_string())
        }
        ForwardSpec::Local { .. } | ForwardSpec::Dynamic { .. } => {
            f.bound.as_ref().map(ToString::to_string)
        }
    }
}

/// Waits until every forward listens, then prints them to `out` and flushes.
pub async fn announce(
    state: watch::Receiver<ControlState>,
    json: bool,
    out: &mut (dyn Write + Send),
) {
    let forwards = loop {
        let forwards = state.borrow().forwards.clone();
        if forwards.iter().all(|f| listening(f).is_some()) {
            break forwards;
        }
        tokio::time::sleep(POLL).await;
    };
    for f in &forwards {
        let listen = listening(f).unwrap_or_default();
        let connect = if f.config.spec.is_dynamic() {
            None
        } else {
            Some(f.config.spec.connect_text())
        };
        let flag = match &f.config.spec {
            ForwardSpec::Local { .. } => "-L",
            ForwardSpec::Remote { .. } | ForwardSpec::RemoteDynamic { .. } => "-R",
            ForwardSpec::Dynamic { .. } => "-D",
        };
        let text = if json {
            let line = Line {
                forward: &f.config.name,
                kind: f.config.spec.kind_name(),
                listen,
                connect,
            };
            serde_json::to_string(&line).unwrap_or_default()
        } else {
            match connect {
                Some(c) => format!("{flag} {listen} -> {c}"),
                None => format!("{flag} {listen}"),
            }
        };
        let _ = writeln!(out, "{text}");
    }
    let _ = out.flush();
}

/// With `ExitOnForwardFailure`: resolves with the forward's name and error once a forward
/// fails before every forward has come up (a remote listener the server refused); after
/// that, failures are retried as by `warren run`.
pub async fn failure_at_start(state: watch::Receiver<ControlState>) -> (String, String) {
    loop {
        let forwards = state.borrow().forwards.clone();
        for f in &forwards {
            let status = f.status();
            if status.state == ForwardState::Failed {
                return (f.config.name.clone(), status.last_error.unwrap_or_default());
            }
        }
        if forwards.iter().all(|f| listening(f).is_some()) {
            return std::future::pending().await;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Resolves once connections have been made and none has been open for `idle`.
pub async fn idle_for(state: watch::Receiver<ControlState>, idle: Duration) {
    let mut quiet_since: Option<Instant> = None;
    let mut seen = 0;
    loop {
        let (total, active) = state.borrow().forwards.iter().fold((0, 0), |(t, a), f| {
            (
                t + f.counters.total.load(Ordering::Relaxed),
                a + f.counters.active.load(Ordering::Relaxed),
            )
        });
        // A connection that opened and closed between two polls moved `total`: it restarts
        // the clock as one still open would have.
        if total != seen {
            seen = total;
            quiet_since = None;
        }
        if total > 0 && active == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= idle {
                return;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(POLL).await;
    }
}
