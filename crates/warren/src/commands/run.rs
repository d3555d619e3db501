//! `warren run`: the daemon in the foreground until SIGTERM or SIGINT; SIGHUP and
//! `warren reload` re-read the file and apply the difference.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{RunArgs, exit};
use crate::config::{BindAddr, Config, Env};
use crate::control::{ControlSocket, DaemonRequest, ReloadOutcome, UpgradeOutcome};
use crate::daemon::Daemon;
use crate::handover::{Passed, Role};
use crate::metrics::http::MetricsServer;
use crate::systemd;
use crate::upgrade;
use tokio_util::sync::CancellationToken;

/// Runs the daemon; returns the exit code.
pub fn run(args: &RunArgs, env: &Env) -> u8 {
    crate::logging::init(&args.log);
    crate::upgrade::remember_exe();
    // Before any thread starts: taking the passed sockets removes their variables.
    let passed = match Passed::from_env() {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot take the passed sockets; nothing started");
            eprintln!("warren: cannot take the passed sockets: {e}");
            return exit::FAILURE;
        }
    };
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
    serve_blocking(config, Mode::File(env.clone()), passed)
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
        /// `ExitOnForwardFailure`: end (exit 1) if a forward fails before every forward is up.
        exit_on_forward_failure: bool,
    },
}

/// Runs the daemon for `config` on a new runtime until a stop signal, adopting the `passed`
/// sockets; the exit code.
pub fn serve_blocking(config: Config, mode: Mode, passed: Passed) -> u8 {
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
    runtime.block_on(serve(config, mode, passed))
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

/// What start-up bound and started.
struct Started {
    daemon: Daemon,
    control: Option<ControlSocket>,
    metrics: Option<MetricsServer>,
    /// Duplicates of the control and metrics sockets, for an upgrade.
    handoff: Vec<(Role, OwnedFd)>,
}

/// Binds (or adopts) the control socket, the metrics listener and every ingress, then starts
/// the daemon: a path or address that cannot be used fails start-up before any session (or
/// ProxyCommand) starts.
async fn start(config: &Config, with_control: bool, passed: Passed) -> Result<Started, String> {
    let mut handoff = Vec::new();
    let control =
        match (with_control, passed.control) {
            (false, _) => None,
            (true, Some(l)) => Some(
                ControlSocket::adopt(l, &config.daemon.control_socket)
                    .map_err(|e| format!("cannot adopt the control socket: {e}"))?,
            ),
            (true, None) => {
                let path = &config.daemon.control_socket;
                let group = config.daemon.control_socket_group.as_ref();
                Some(ControlSocket::bind(path, group).await.map_err(|e| {
                    format!("cannot create the control socket {}: {e}", path.display())
                })?)
            }
        };
    if let Some(fd) = control.as_ref().and_then(|c| c.handover_fd().ok()) {
        handoff.push((Role::Control, fd));
    }
    let metrics = match (&config.daemon.metrics_listen, passed.metrics) {
        (None, _) => None,
        (Some(_), Some(l)) => Some(
            MetricsServer::adopt(l)
                .map_err(|e| format!("cannot adopt the metrics listener: {e}"))?,
        ),
        (Some(addr), None) => Some(
            bind_metrics(addr, config)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?,
        ),
    };
    if let Some(h) = metrics.as_ref().and_then(|m| m.handover_fd().ok()) {
        let role = Role::Metrics {
            owned: h.owned,
            path: h.path,
        };
        handoff.push((role, h.fd));
    }
    let daemon = Daemon::start_with(config, passed.inherited)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Started {
        daemon,
        control,
        metrics,
        handoff,
    })
}

async fn serve(config: Config, mode: Mode, mut passed: Passed) -> u8 {
    let file_env = match &mode {
        Mode::File(env) => Some(env.clone()),
        Mode::Connect { .. } => None,
    };
    let (mut term, mut int, mut hup, mut usr2) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(t), Ok(i), Ok(h), Ok(u)) => (t, i, h, u),
        _ => {
            error!("cannot install signal handlers");
            return exit::FAILURE;
        }
    };
    let predecessor = passed.ready.take();
    let Started {
        mut daemon,
        control,
        metrics,
        handoff,
    } = match start(&config, file_env.is_some(), passed).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "start-up failed");
            eprintln!("warren: {e}");
            return exit::FAILURE;
        }
    };
    let stop_control = CancellationToken::new();
    let (requests_tx, mut requests) = mpsc::channel(4);
    let control_task = control.map(|c| {
        tokio::spawn(c.serve(
            daemon.watch_control_state(),
            Some(requests_tx),
            stop_control.clone(),
        ))
    });
    let metrics_task =
        metrics.map(|m| tokio::spawn(m.serve(daemon.watch_control_state(), stop_control.clone())));
    if predecessor.is_some() {
        upgrade::settle(&daemon).await;
        systemd::main_pid();
    }
    systemd::ready();
    if let Some(predecessor) = predecessor {
        upgrade::say_ready(predecessor);
    }
    info!(
        config = %config.path.display(),
        hosts = daemon.hosts().len(),
        forwards = daemon.forwards().len(),
        pid = std::process::id(),
        "ready"
    );
    let mut idle: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(std::future::pending());
    let mut failed: std::pin::Pin<Box<dyn std::future::Future<Output = (String, String)> + Send>> =
        Box::pin(std::future::pending());
    let mut code = exit::OK;
    if let Mode::Connect {
        json,
        exit_when_idle,
        exit_on_forward_failure,
    } = mode
    {
        if exit_on_forward_failure {
            failed = Box::pin(super::connect::failure_at_start(
                daemon.watch_control_state(),
            ));
        }
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
    let mut handed_over = false;
    loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break }
            () = &mut idle => { info!("no connection open for --exit-when-idle; stopping"); break }
            (forward, error) = &mut failed => {
                error!(%forward, %error, "forward failed and ExitOnForwardFailure is set; stopping");
                code = exit::FAILURE;
                break
            }
            _ = hup.recv() => {
                info!(signal = "SIGHUP", "reloading");
                let _ = reload(&mut daemon, file_env.as_ref()).await;
            }
            _ = usr2.recv() => {
                info!(signal = "SIGUSR2", "upgrading");
                if upgrade(&daemon, &handoff, file_env.is_some()).await.is_ok() {
                    handed_over = true;
                    break;
                }
            }
            Some(request) = requests.recv() => match request {
                DaemonRequest::Reload(reply) => {
                    info!("reloading on request");
                    let _ = reply.send(reload(&mut daemon, file_env.as_ref()).await);
                }
                DaemonRequest::Upgrade(reply) => {
                    info!("upgrading on request");
                    let outcome = upgrade(&daemon, &handoff, file_env.is_some()).await;
                    handed_over = outcome.is_ok();
                    let _ = reply.send(outcome);
                    if handed_over {
                        break;
                    }
                }
            },
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
    if handed_over {
        // The new process serves the sockets now: none is removed, systemd is not told.
        crate::handover::mark_handed_over();
        info!("handed over to the new process; draining");
    } else {
        systemd::stopping();
    }
    drop(handoff);
    stop_control.cancel();
    if let Some(task) = control_task {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let grace = daemon.config().daemon.shutdown_grace;
    daemon.shutdown(grace).await;
    info!(pid = std::process::id(), "stopped");
    code
}

/// Starts a new process of the binary with every socket; `Ok(pid)` once it is ready (this
/// one then drains), else why not (this one keeps serving).
async fn upgrade(daemon: &Daemon, handoff: &[(Role, OwnedFd)], from_file: bool) -> UpgradeOutcome {
    if !from_file {
        warn!("an upgrade needs `warren run`: `warren connect` has no file to start from");
        return Err("an upgrade needs `warren run`".into());
    }
    match upgrade::hand_over(daemon, handoff).await {
        Ok(successor) => {
            info!(pid = successor.pid, "upgrade: the new process is ready");
            Ok(successor.pid)
        }
        Err(e) => {
            error!(error = %e, "upgrade failed; this process keeps serving");
            Err(e)
        }
    }
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
