//! systemd's service protocol (sd_notify(3)): `READY=1`, `RELOADING=1`, `STOPPING=1`, a
//! one-line `STATUS=` and `WATCHDOG=1`. Each is a no-op when `$NOTIFY_SOCKET` is not set.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;

/// Every ingress is bound and the daemon serves (again, after a reload).
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// This process is the service's main process now (it took over in an upgrade; the unit
/// needs `NotifyAccess=all` for systemd to accept it from a process it did not start).
pub fn main_pid() {
    notify(&[NotifyState::MainPid(std::process::id())]);
}

/// A reload starts; `READY=1` ends it. With `MONOTONIC_USEC`, as `Type=notify-reload` needs.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    states.extend(NotifyState::monotonic_usec_now().ok());
    notify(&states);
}

/// The daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The one-line status `systemctl status` shows.
pub fn status(line: &str) {
    notify(&[NotifyState::Status(line)]);
}

fn notify(states: &[NotifyState<'_>]) {
    // Not being under systemd, or its socket being gone, is no reason to stop serving.
    let _ = sd_notify::notify(false, states);
}

/// `WATCHDOG=1` at half of `$WATCHDOG_USEC`, sent from the daemon's main loop (so that it
/// stops when the loop stalls).
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    /// The watchdog the environment asks for: as sd_watchdog_enabled(3), `$WATCHDOG_USEC`
    /// with `$WATCHDOG_PID` unset or equal to this process.
    pub fn from_env() -> Self {
        let usec: Option<u64> = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse().ok());
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
        let every = usec
            .filter(|u| for_us && *u > 0)
            .map(|u| Duration::from_micros(u / 2));
        Self {
            every,
            last: Instant::now(),
        }
    }

    /// How often the main loop should call [`Watchdog::tick`]: at most a second.
    pub fn tick_every(&self) -> Duration {
        self.every
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    /// Sends `WATCHDOG=1` when half the timeout has passed since the last one.
    pub fn tick(&mut self) {
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            notify(&[NotifyState::Watchdog]);
            self.last = Instant::now();
        }
    }
}
