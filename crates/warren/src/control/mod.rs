//! The control socket: a Unix socket (mode 0600) where `warren status` asks a running daemon
//! for its state and `warren reload` has it re-read its file. One JSON request line of at
//! most 4 KiB, read within 5 s; one JSON answer line.
//!
//! The messages are typed in [`protocol`]; the status document in [`status`].

pub mod protocol;
pub mod status;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use self::protocol::{Request, Response};
use crate::config::SocketGroup;
use crate::forward::ForwardRuntime;
use crate::session::HostHandle;

/// The largest request accepted.
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to take its answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once; more wait in the socket's backlog until one is done (each is done
/// within the timeouts).
const MAX_CLIENTS: usize = 64;

/// What the control socket answers about.
#[derive(Clone, Default)]
pub struct ControlState {
    /// Host supervisors by name.
    pub hosts: BTreeMap<String, HostHandle>,
    /// Running forwards.
    pub forwards: Vec<ForwardRuntime>,
}

/// The result of a reload: the changes applied, or the problems of the rejected file.
pub type ReloadOutcome = Result<Vec<String>, Vec<String>>;

/// The result of an upgrade: the new process's id, or why it did not take over.
pub type UpgradeOutcome = Result<u32, String>;

/// What the control socket asks of the daemon's main loop, which answers on the sender.
#[derive(Debug)]
pub enum DaemonRequest {
    /// Re-read the file and apply the difference.
    Reload(oneshot::Sender<ReloadOutcome>),
    /// Hand everything over to a new process.
    Upgrade(oneshot::Sender<UpgradeOutcome>),
}

/// A bound control socket; the file is removed on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` with mode 0600, or 0660 owned by `group` when given, from the first
    /// moment it exists; replaces a stale socket file from a crashed daemon but never a live
    /// daemon's, nor anything that is not a socket. The file work runs on a blocking thread
    /// (probing a stale socket connects to it).
    pub async fn bind(path: &Path, group: Option<&SocketGroup>) -> std::io::Result<Self> {
        let at = path.to_path_buf();
        let (mode, gid) = match group {
            Some(g) => (0o660, Some(g.gid)),
            None => (0o600, None),
        };
        let std = tokio::task::spawn_blocking(move || {
            if let Some(dir) = at.parent()
                && !dir.as_os_str().is_empty()
                && !dir.exists()
            {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            crate::forward::listener::bind_unix(&at, mode, gid)
        })
        .await
        .map_err(std::io::Error::other)??;
        std.set_nonblocking(true)?;
        Ok(Self {
            listener: UnixListener::from_std(std)?,
            path: path.to_path_buf(),
        })
    }

    /// Adopts the control socket `listener` at `path`, handed over by the process an upgrade
    /// replaces.
    pub fn adopt(listener: std::os::unix::net::UnixListener, path: &Path) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener: UnixListener::from_std(listener)?,
            path: path.to_path_buf(),
        })
    }

    /// A duplicate of the socket's descriptor, for an upgrade.
    pub fn handover_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }

    /// Answers requests until `stop` fires; each client is served in its own task. Status
    /// comes from `state` (replaced on every reload); reloads and upgrades go to `requests`
    /// when given.
    pub async fn serve(
        self,
        state: watch::Receiver<ControlState>,
        requests: Option<mpsc::Sender<DaemonRequest>>,
        stop: CancellationToken,
    ) {
        let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                r = async {
                    let permit = clients.clone().acquire_owned().await;
                    (permit, self.listener.accept().await)
                } => r,
            };
            match accepted {
                (Ok(permit), Ok((stream, _))) => {
                    let (state, requests) = (state.clone(), requests.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &state, requests.as_ref()).await {
                            debug!(error = %e, "control client dropped");
                        }
                        drop(permit);
                    });
                }
                (Err(_), _) => break,
                (_, Err(e)) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if crate::handover::handed_over() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(
    stream: UnixStream,
    state: &watch::Receiver<ControlState>,
    requests: Option<&mpsc::Sender<DaemonRequest>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    let reply = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::refused("request not received within 5s"),
        Ok(Err(e)) => Response::refused(format!("unreadable request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Response::refused("request too large"),
        Ok(Ok(_)) => handle(line.trim(), state, requests).await,
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    // A client that does not read its answer cannot hold this task and its socket.
    let sent = async {
        write.write_all(&out).await?;
        write.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, sent)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not read"))??;
    // Closing with unread input would reset the connection before the client reads the
    // answer: swallow a bounded remainder first.
    let mut rest = reader.into_inner().into_inner().take(64 * 1024);
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
    Ok(())
}

async fn handle(
    line: &str,
    state: &watch::Receiver<ControlState>,
    requests: Option<&mpsc::Sender<DaemonRequest>>,
) -> Response {
    let request = match Request::parse(line) {
        Ok(r) => r,
        Err(e) => return Response::refused(e),
    };
    match request {
        Request::Reload => {
            let Some(requests) = requests else {
                return Response::refused("this daemon has no file to reload");
            };
            let (tx, rx) = oneshot::channel();
            if requests.send(DaemonRequest::Reload(tx)).await.is_err() {
                return Response::refused("the daemon is stopping");
            }
            match rx.await {
                Ok(Ok(changes)) => Response {
                    changes: Some(changes),
                    ..Response::done()
                },
                Ok(Err(problems)) => Response {
                    problems: Some(problems),
                    ..Response::refused(
                        "the new configuration was rejected; the running one is kept",
                    )
                },
                Err(_) => Response::refused("the daemon is stopping"),
            }
        }
        Request::Upgrade => {
            let Some(requests) = requests else {
                return Response::refused("this daemon cannot be upgraded");
            };
            let (tx, rx) = oneshot::channel();
            if requests.send(DaemonRequest::Upgrade(tx)).await.is_err() {
                return Response::refused("the daemon is stopping");
            }
            match rx.await {
                Ok(Ok(pid)) => Response {
                    pid: Some(pid),
                    ..Response::done()
                },
                Ok(Err(why)) => Response::refused(why),
                Err(_) => Response::refused("the daemon is stopping"),
            }
        }
        Request::Status => {
            let state = state.borrow().clone();
            Response {
                status: Some(status::document(&state.hosts, &state.forwards)),
                ..Response::done()
            }
        }
        Request::Reconnect { host } => match state.borrow().hosts.get(&host) {
            Some(h) => {
                h.reconnect_now();
                Response::done()
            }
            None => Response::refused("unknown host"),
        },
    }
}

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens at the socket (exit 69).
    #[error("no daemon answers on {path}: {source}")]
    NoDaemon {
        /// The socket tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error("the daemon refused: {0}")]
    Refused(String),
}

/// Sends `request` to the daemon at `path` and returns its answer when it carried it out
/// (blocking; for the CLI).
pub fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let answer = exchange(path, request, Duration::from_secs(10))?;
    if answer.ok {
        Ok(answer)
    } else {
        Err(ClientError::Refused(
            answer.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}

/// Sends `request` and returns whatever the daemon answered, waiting up to `limit`.
pub fn exchange(path: &Path, request: &Request, limit: Duration) -> Result<Response, ClientError> {
    let no_daemon = |source| ClientError::NoDaemon {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(no_daemon)?;
    stream.set_read_timeout(Some(limit)).map_err(no_daemon)?;
    let mut line = serde_json::to_vec(request).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).map_err(no_daemon)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(no_daemon)?;
    serde_json::from_str(&answer).map_err(|e| no_daemon(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn socket_is_0600_and_refuses_bad_requests_without_harm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/warren.sock");
        let sock = ControlSocket::bind(&path, None).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(
            ControlSocket::bind(&path, None).await.is_err(),
            "a live daemon's socket is not replaced"
        );
        let stop = CancellationToken::new();
        let (_state, rx) = watch::channel(ControlState::default());
        let server = tokio::spawn(sock.serve(rx, None, stop.clone()));

        let p = path.clone();
        let status = tokio::task::spawn_blocking(move || request(&p, &Request::Status))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.status, Some(status::StatusDoc::default()));

        for bad in [
            &b"not json\n"[..],
            &[b'x'; 10_000][..],
            b"{\"request\":\"format c:\"}\n",
            b"{\"request\":\"reload\"}\n",
        ] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            let _ = s.write_all(bad).await;
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
                .await
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
            assert_eq!(v["ok"], serde_json::json!(false), "{answer}");
        }
        // Still serving.
        let p = path.clone();
        let again = tokio::task::spawn_blocking(move || request(&p, &Request::Status))
            .await
            .unwrap();
        assert!(again.is_ok());
        stop.cancel();
        server.await.unwrap();
        assert!(!path.exists(), "the socket file goes with the daemon");
        // A stale socket file is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(ControlSocket::bind(&path, None).await.is_ok());
        let err = request(dir.path().join("none.sock").as_path(), &Request::Status).unwrap_err();
        assert!(matches!(err, ClientError::NoDaemon { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_dropped_after_the_timeout_and_cannot_lock_others_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warren.sock");
        let sock = ControlSocket::bind(&path, None).await.unwrap();
        let stop = CancellationToken::new();
        let (_state, rx) = watch::channel(ControlState::default());
        let server = tokio::spawn(sock.serve(rx, None, stop.clone()));
        // More silent clients than are served at once: they connect and never send.
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS + 20 {
            silent.push(UnixStream::connect(&path).await.unwrap());
        }
        let started = tokio::time::Instant::now();
        // A real client behind them is answered once the first ones time out.
        let mut client = UnixStream::connect(&path).await.unwrap();
        client
            .write_all(b"{\"request\": \"status\"}\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.contains("\"ok\":true"), "{answer}");
        assert!(
            started.elapsed() <= READ_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
        // Each silent client was told why and its connection closed by the daemon.
        for mut s in silent {
            let mut text = String::new();
            s.read_to_string(&mut text).await.unwrap();
            assert!(text.contains("request not received"), "{text}");
        }
        stop.cancel();
        server.await.unwrap();
    }
}
