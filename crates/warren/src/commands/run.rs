//! `warren run`: the daemon in the foreground until SIGTERM or SIGINT; SIGHUP and
//! `warren reload` re-read the file and apply the difference.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{RunArgs, exit};
use crate::config::{BindAddr, Config, Env};
use crate::control::{ControlSocket, ReloadOutcome};
use crate::daemon::Daemon;
use crate::metrics::http::MetricsServer;
use crate::systemd;
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
    serve_blocking(config, Mode::File(env.clone()))
}

/// How the daemon was started.
pub enum Mode {
    /// `warren run` from a file, re-read in this environment on reload; it also answers on
    /// the control socket.
    File(Env),
    /// `warren connect`: no file, no control socket; it announces its forwards on stdout.
    Connect {
        /// One JSON object per forward instead of a line of text.
        json: bool,
        /// End once no connection has been open for this long after the first one.
        exit_when_idle: Option<Duration>,
    },
}

/// Runs the daemon for `config` on a new runtime until a stop signal; the exit code.
pub fn serve_blocking(config: Config, mode: Mode) -> u8 {
    raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(worker_threads());
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return exit::FAILURE;
        }
    };
    runtime.block_on(serve(config, mode))
}

/// Raises the soft limit on open files to the hard limit: every forwarded connection costs
/// two descriptors, and the usual soft limit of 1024 would cap a daemon at ~500 connections
/// while the hard limit (often 524288, or `LimitNOFILE=` in the unit) allows far more.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok((soft, _)) => info!(limit = soft, "open files limit"),
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
}

async fn serve(config: Config, mode: Mode) -> u8 {
    let file_env = match &mode {
        Mode::File(env) => Some(env.clone()),
        Mode::Connect { .. } => None,
    };
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
    // The control socket is bound before anything starts, like the ingresses: a path that
    // cannot be used fails start-up before a session (or a ProxyCommand) is started.
    let control = match file_env.is_some() {
        false => None,
        true => {
            let path = &config.daemon.control_socket;
            match ControlSocket::bind(path, config.daemon.control_socket_group.as_ref()).await {
                Ok(c) => Some(c),
                Err(e) => {
                    let e = format!("cannot create the control socket {}: {e}", path.display());
                    error!(error = %e, "start-up failed");
                    eprintln!("warren: {e}");
                    return exit::FAILURE;
                }
            }
        }
    };
    let metrics = match &config.daemon.metrics_listen {
        None => None,
        Some(addr) => match bind_metrics(addr, &config).await {
            Ok(m) => Some(m),
            Err(e) => {
                let e = format!("cannot listen for metrics on {addr}: {e}");
                error!(error = %e, "start-up failed");
                eprintln!("warren: {e}");
                return exit::FAILURE;
            }
        },
    };
    let mut daemon = match Daemon::start(&config).await {
        Ok(d) => d,
        Err(e) => {
            error!(error = %e, "start-up failed");
            eprintln!("warren: {e}");
            return exit::FAILURE;
        }
    };
    let stop_control = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let control_task = control.map(|c| {
        tokio::spawn(c.serve(
            daemon.watch_control_state(),
            Some(reload_tx),
            stop_control.clone(),
        ))
    });
    let metrics_task =
        metrics.map(|m| tokio::spawn(m.serve(daemon.watch_control_state(), stop_control.clone())));
    systemd::ready();
    info!(
        config = %config.path.display(),
        hosts = daemon.hosts().len(),
        forwards = daemon.forwards().len(),
        "ready"
    );
    let mut idle: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    if let Mode::Connect {
        json,
        exit_when_idle,
    } = mode
    {
        let state = daemon.watch_control_state();
        tokio::spawn(async move {
            super::connect::announce(state, json, &mut std::io::stdout()).await;
        });
        if let Some(after) = exit_when_idle {
            idle = Box::pin(super::connect::idle_for(
                daemon.watch_control_state(),
                after,
            ));
        }
    }
    // WATCHDOG=1 from this loop (it stops if the loop stalls), and a one-line STATUS=
    // whenever the summary changes.
    let mut watchdog = systemd::Watchdog::from_env();
    let mut ticks = tokio::time::interval(watchdog.tick_every());
    let mut last_summary = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break }
            () = &mut idle => { info!("no connection open for --exit-when-idle; stopping"); break }
            _ = hup.recv() => {
                info!(signal = "SIGHUP", "reloading");
                let _ = reload(&mut daemon, file_env.as_ref()).await;
            }
            Some(reply) = reload_rx.recv() => {
                info!("reloading on request");
                let _ = reply.send(reload(&mut daemon, file_env.as_ref()).await);
            }
            _ = ticks.tick() => {
                watchdog.tick();
                let summary = daemon.summary();
                if summary != last_summary {
                    systemd::status(&summary);
                    last_summary = summary;
                }
            }
        }
    }
    systemd::stopping();
    stop_control.cancel();
    if let Some(task) = control_task {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let grace = daemon.config().daemon.shutdown_grace;
    daemon.shutdown(grace).await;
    info!("stopped");
    exit::OK
}

/// Binds `[daemon] metrics_listen`; a Unix socket gets the control socket's mode and group.
async fn bind_metrics(addr: &BindAddr, config: &Config) -> std::io::Result<MetricsServer> {
    let group = config.daemon.control_socket_group.as_ref();
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    let server = MetricsServer::bind(addr, mode, group.map(|g| g.gid)).await?;
    info!(listen = %server.local_addr()?, "serving metrics at /metrics");
    Ok(server)
}

/// Re-reads the running file and applies the difference (warren.toml(5), RELOAD), between
/// `RELOADING=1` and `READY=1`. A file that does not validate changes nothing.
async fn reload(daemon: &mut Daemon, env: Option<&Env>) -> ReloadOutcome {
    let Some(env) = env else {
        warn!("nothing to reload: this daemon runs from the command line, not a file");
        return Err(vec![
            "this daemon runs from the command line, not a file".into(),
        ]);
    };
    systemd::reloading();
    let path = daemon.config().path.clone();
    // The file and the ssh_config it names are read on a blocking thread.
    let (at, file_env) = (path.clone(), env.clone());
    let loaded = tokio::task::spawn_blocking(move || Config::load_with(&at, &file_env)).await;
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            error!(error = %e, "reading the configuration failed; the running one is kept");
            systemd::ready();
            return Err(vec![format!("reading the configuration failed: {e}")]);
        }
    };
    let outcome = match loaded {
        Err(e) => {
            let problems = e.lines();
            for p in &problems {
                warn!(problem = %p, "reload");
            }
            error!(config = %path.display(), problems = problems.len(), "new configuration rejected; the running one is kept");
            Err(problems)
        }
        Ok(new) => {
            let plan = daemon.reload(new).await;
            for change in plan.lines() {
                info!(change = %change, "reload");
            }
            info!(config = %path.display(), "reloaded");
            Ok(plan.lines())
        }
    };
    systemd::ready();
    outcome
}

/// Worker threads: one fewer than the CPUs, at least one. The other CPU is left to the
/// kernel's TCP work and to the peers on this machine; moving each connection between two
/// busy workers cost more than it gave (bench/: on 2 CPUs one worker was faster in every
/// throughput and latency figure). `TOKIO_WORKER_THREADS` overrides it.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .saturating_sub(1)
        .max(1)
}
