//! `warren run`: the daemon in the foreground until SIGTERM or SIGINT.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::cli::{RunArgs, exit};
use crate::config::{Config, Env};
use crate::control::ControlSocket;
use crate::daemon::Daemon;
use tokio_util::sync::CancellationToken;

/// Runs the daemon; returns the exit code.
pub fn run(args: &RunArgs, env: &Env) -> u8 {
    crate::logging::init(&args.log);
    let path = super::config_path(&args.config, env);
    let config = match Config::load_with(&path, env) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            error!(config = %path.display(), "configuration rejected; nothing started");
            return exit::CONFIG;
        }
    };
    serve_blocking(config, true)
}

/// Runs the daemon for `config` on a new runtime until a stop signal; the exit code.
/// `control`: whether to answer on the control socket (ad-hoc `connect` does not).
pub fn serve_blocking(config: Config, control: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return exit::FAILURE;
        }
    };
    runtime.block_on(serve(config, control))
}

async fn serve(config: Config, with_control: bool) -> u8 {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            error!("cannot install signal handlers");
            return exit::FAILURE;
        }
    };
    let daemon = match Daemon::start(&config).await {
        Ok(d) => d,
        Err(e) => {
            error!(error = %e, "start-up failed");
            eprintln!("warren: {e}");
            return exit::FAILURE;
        }
    };
    let socket_path = &config.daemon.control_socket;
    let control = match with_control
        .then(|| ControlSocket::bind(socket_path))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            let e = format!(
                "cannot create the control socket {}: {e}",
                socket_path.display()
            );
            error!(error = %e, "start-up failed");
            eprintln!("warren: {e}");
            daemon.shutdown(std::time::Duration::ZERO).await;
            return exit::FAILURE;
        }
    };
    let stop_control = CancellationToken::new();
    let control_task =
        control.map(|c| tokio::spawn(c.serve(daemon.control_state(), stop_control.clone())));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(
        config = %config.path.display(),
        hosts = daemon.hosts().len(),
        forwards = daemon.forwards().len(),
        "ready"
    );
    // WATCHDOG=1 at half of WATCHDOG_USEC from this loop (it stops if the loop stalls), and
    // a one-line STATUS= whenever the summary changes. Nothing is sent without NOTIFY_SOCKET.
    let watchdog = watchdog_interval();
    let mut ticks = tokio::time::interval(
        watchdog
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1)),
    );
    let mut last_watchdog = tokio::time::Instant::now();
    let mut last_summary = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break }
            _ = hup.recv() => warn!("reload is not supported by this build yet; keeping the running configuration"),
            _ = ticks.tick() => {
                if let Some(every) = watchdog
                    && last_watchdog.elapsed() >= every
                {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    last_watchdog = tokio::time::Instant::now();
                }
                let summary = summary(&daemon);
                if summary != last_summary {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&summary)]);
                    last_summary = summary;
                }
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stop_control.cancel();
    if let Some(task) = control_task {
        let _ = task.await;
    }
    daemon.shutdown(config.daemon.shutdown_grace).await;
    info!("stopped");
    exit::OK
}

/// `3/3 hosts up, 7/7 forwards ready`, as SPEC section 3 shows it.
fn summary(daemon: &Daemon) -> String {
    let hosts = daemon.hosts();
    let up = hosts
        .values()
        .filter(|h| h.status().state == crate::session::HostState::Up)
        .count();
    let forwards = daemon.forwards();
    let ready = forwards
        .iter()
        .filter(|f| {
            let host_up = hosts
                .get(&f.config.host)
                .is_some_and(|h| h.status().state == crate::session::HostState::Up);
            let own = f.status().state;
            match f.config.spec {
                crate::config::ForwardSpec::Remote { .. } => {
                    host_up && own == crate::forward::ForwardState::Ready
                }
                _ => host_up && own != crate::forward::ForwardState::Failed,
            }
        })
        .count();
    format!(
        "{up}/{} hosts up, {ready}/{} forwards ready",
        hosts.len(),
        forwards.len()
    )
}

/// Half of `$WATCHDOG_USEC` when the watchdog is meant for this process: as
/// sd_watchdog_enabled(3), `$WATCHDOG_PID` unset or equal to our pid.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}
