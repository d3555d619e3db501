//! Upgrade in place (`SIGUSR2`, `warren upgrade`): start the binary at the path this process
//! was started from, with the same arguments, handing it every ingress listener, the control
//! socket and the metrics listener (fds from 3, described by `WARREN_UPGRADE`; see
//! [`crate::handover`]), and wait for it to say "ready" on a socket pair. The caller then
//! stops accepting and drains; if the new process exits or is not ready in time, it is
//! stopped and this one keeps serving.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{info, warn};

use crate::daemon::Daemon;
use crate::handover::{Role, UPGRADE_ENV};
use crate::session::{HostHandle, HostState};

/// The binary this process was started from, read at start (before it may be replaced).
static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// How long a new process that was asked to stop may take before it is killed.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// What the new process may take to start, beyond its sessions' `connect_timeout`.
const MARGIN: Duration = Duration::from_secs(10);

/// Remembers the path of the running binary; call it at start.
pub fn remember_exe() {
    EXE.get_or_init(|| std::env::current_exe().ok());
}

/// The sockets to hand over, each with what it is.
#[derive(Debug, Default)]
struct Handoff {
    sockets: Vec<(Role, OwnedFd)>,
}

impl Handoff {
    fn push(&mut self, role: Role, fd: OwnedFd) {
        self.sockets.push((role, fd));
    }
}

/// The new process, ready.
#[derive(Debug)]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
}

/// Starts the new process with every ingress of `daemon` and the `others` (control socket,
/// metrics listener) and waits for it to be ready, up to the longest `connect_timeout` of the
/// hosts and [`MARGIN`] more (its start-up before the sessions).
pub async fn hand_over(daemon: &Daemon, others: &[(Role, OwnedFd)]) -> Result<Successor, String> {
    let mut handoff = Handoff::default();
    for (role, fd) in others {
        let fd = fd
            .try_clone()
            .map_err(|e| format!("duplicating a socket: {e}"))?;
        handoff.push(role.clone(), fd);
    }
    for (name, h) in daemon.handover_fds() {
        handoff.push(
            Role::Forward {
                name,
                owned: h.owned,
                path: h.path,
            },
            h.fd,
        );
    }
    start_successor(handoff, connect_limit(daemon) + MARGIN).await
}

/// The longest `connect_timeout` of the daemon's hosts.
fn connect_limit(daemon: &Daemon) -> Duration {
    daemon
        .hosts()
        .values()
        .map(|h| h.config().connect_timeout)
        .max()
        .unwrap_or(Duration::from_secs(15))
}

/// In the new process: waits until every host's first attempt has ended (up, or failed and
/// backing off), within the longest `connect_timeout`, so that the old process stops
/// accepting only once sessions are there to carry what this one accepts.
pub async fn settle(daemon: &Daemon) {
    let limit = connect_limit(daemon);
    let mut watches: Vec<_> = daemon
        .hosts()
        .values()
        .map(HostHandle::watch_status)
        .collect();
    let settled = async {
        for w in &mut watches {
            let _ = w.wait_for(|s| s.state != HostState::Connecting).await;
        }
    };
    if tokio::time::timeout(limit, settled).await.is_err() {
        warn!(limit = ?limit, "upgrade: taking over before every session is up");
    }
}

/// In the new process: tells the old one that this one serves now.
pub fn say_ready(mut predecessor: std::os::unix::net::UnixStream) {
    use std::io::Write;
    if let Err(e) = predecessor.write_all(b"ready\n") {
        warn!(error = %e, "upgrade: cannot tell the old process that this one is ready");
    }
}

/// Starts the new process with `handoff` and waits up to `limit` for it to be ready.
async fn start_successor(handoff: Handoff, limit: Duration) -> Result<Successor, String> {
    let exe = EXE
        .get()
        .cloned()
        .flatten()
        .ok_or("the path of the running binary is unknown")?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let mut roles = Vec::new();
    let mut mappings = Vec::new();
    let sockets = handoff
        .sockets
        .into_iter()
        .chain(std::iter::once((Role::Ready, OwnedFd::from(theirs))));
    for (i, (role, fd)) in sockets.enumerate() {
        roles.push(role);
        let child_fd = i32::try_from(i + 3).map_err(|_| "too many sockets to hand over")?;
        mappings.push(FdMapping {
            parent_fd: fd,
            child_fd,
        });
    }
    let described = serde_json::to_string(&roles).map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .args(std::env::args_os().skip(1))
        .env(UPGRADE_ENV, described)
        .env("LISTEN_FDS", roles.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .kill_on_drop(false);
    command
        .fd_mappings(mappings)
        .map_err(|e| format!("handing over the sockets: {e}"))?;
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // The parent's copies of the handed-over sockets close with the command.
    drop(command);
    let pid = child.id().ok_or("the new process ended at once")?;
    info!(pid, exe = %exe.display(), "upgrade: new process started");
    ours.set_nonblocking(true)
        .map_err(|e| format!("socket pair: {e}"))?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(|e| format!("socket pair: {e}"))?;
    let mut line = String::new();
    let mut said = BufReader::new(ours);
    let failure = tokio::select! {
        read = said.read_line(&mut line) => match read {
            Ok(_) if line.trim() == "ready" => return Ok(Successor { pid }),
            // The channel closes when the process exits: report how it exited.
            Ok(_) => match tokio::time::timeout(KILL_AFTER, child.wait()).await {
                Ok(Ok(s)) => return Err(format!("the new process exited ({s}) before it was ready")),
                _ => "the new process closed the hand-over channel without saying ready".to_string(),
            },
            Err(e) => format!("the hand-over channel failed: {e}"),
        },
        status = child.wait() => match status {
            Ok(s) => return Err(format!("the new process exited ({s}) before it was ready")),
            Err(e) => format!("cannot wait for the new process: {e}"),
        },
        () = tokio::time::sleep(limit) => format!("the new process was not ready within {limit:?}"),
    };
    stop(&mut child, pid).await;
    Err(failure)
}

/// Stops a new process that failed: SIGTERM, then SIGKILL after [`KILL_AFTER`].
async fn stop(child: &mut tokio::process::Child, pid: u32) {
    use nix::sys::signal::{Signal, kill};
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(KILL_AFTER, child.wait()).await {
        Ok(Ok(status)) => info!(pid, %status, "upgrade: the new process stopped"),
        _ => {
            warn!(pid, "upgrade: the new process did not stop; killing it");
            let _ = child.kill().await;
        }
    }
}
