//! `FaultProxy`: a TCP relay on 127.0.0.1:0 in front of a server that can pass, black-hole, reject or reset.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::util::{bind_loopback, within};

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Relay bytes both ways.
    Pass,
    /// Stop relaying without closing anything: bytes in flight are held, new
    /// connections are accepted but not connected onwards, until `Pass` again.
    BlackHole,
    /// Accept new connections and reset them at once (RST); open ones keep passing.
    Reject,
}

/// One generation of connections: [`FaultProxy::reset_all`] cancels it as a whole.
struct Generation {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

struct Shared {
    target: SocketAddr,
    mode: watch::Sender<FaultMode>,
    root: CancellationToken,
    current: Mutex<Generation>,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A fault-injecting TCP proxy. Dropping it resets every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and relays each connection to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr().context("local address")?;
        let root = CancellationToken::new();
        let shared = Arc::new(Shared {
            target,
            mode: watch::Sender::new(FaultMode::Pass),
            current: Mutex::new(Generation {
                cancel: root.child_token(),
                tracker: TaskTracker::new(),
            }),
            root,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches mode; applies at once to open and new connections.
    pub fn set_mode(&self, mode: FaultMode) {
        self.shared.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.shared.mode.borrow()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Resets (RST) both sides of every open connection and waits until they are closed.
    /// Later connections are unaffected.
    pub async fn reset_all(&self) -> anyhow::Result<()> {
        let old = {
            let mut current = self
                .shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let fresh = Generation {
                cancel: self.shared.root.child_token(),
                tracker: TaskTracker::new(),
            };
            std::mem::replace(&mut *current, fresh)
        };
        old.cancel.cancel();
        old.tracker.close();
        within(
            Duration::from_secs(5),
            "reset connections to close",
            old.tracker.wait(),
        )
        .await
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.root.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if *shared.mode.borrow() == FaultMode::Reject {
            reset(&client);
            continue;
        }
        let (cancel, tracker) = {
            let current = shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (current.cancel.clone(), current.tracker.clone())
        };
        tracker.spawn(relay(client, shared.clone(), cancel));
    }
}

/// Makes dropping `stream` send RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let mut upstream: Option<TcpStream> = None;
    let reset_requested = {
        let work = async {
            wait_passing(shared.mode.subscribe()).await;
            let up = upstream.insert(TcpStream::connect(shared.target).await?);
            let (cr, cw) = client.split();
            let (ur, uw) = up.split();
            tokio::try_join!(
                pump(cr, uw, shared.mode.subscribe()),
                pump(ur, cw, shared.mode.subscribe())
            )
            .map(drop)
        };
        tokio::select! {
            _ = cancel.cancelled() => true,
            result = work => result.is_err(),
        }
    };
    // Reset on request, and also when one side failed, so the other side sees it.
    if reset_requested {
        reset(&client);
        if let Some(up) = &upstream {
            reset(up);
        }
    }
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

/// Returns once the mode lets bytes through.
async fn wait_passing(mut mode: watch::Receiver<FaultMode>) {
    let _ = mode.wait_for(|m| *m != FaultMode::BlackHole).await;
}

/// Copies one direction, holding bytes while black-holed; forwards EOF as a half-close.
async fn pump<R, W>(mut from: R, mut to: W, mode: watch::Receiver<FaultMode>) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_passing(mode.clone()).await;
        let n = from.read(&mut buf).await?;
        wait_passing(mode.clone()).await;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
