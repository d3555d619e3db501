//! Forwarding egress peers on TCP 127.0.0.1:0 or a Unix socket: echo, sink (digest back) and source (N bytes out).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::transfer::{Digest, random_digest, read_digest, write_random};
use super::util::{bind_loopback, bind_loopback_v6, rebind_loopback, within};

/// Any byte stream a peer can serve.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Which kind of socket a peer listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP on 127.0.0.1 with a kernel-chosen port.
    Tcp,
    /// A Unix-domain socket in a tempdir.
    Unix,
}

/// Where a peer listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl PeerAddr {
    /// Connects to the peer.
    pub async fn connect(&self) -> anyhow::Result<BoxStream> {
        Ok(match self {
            PeerAddr::Tcp(addr) => Box::new(
                TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connect to {addr}"))?,
            ),
            PeerAddr::Unix(path) => Box::new(
                UnixStream::connect(path)
                    .await
                    .with_context(|| format!("connect to {}", path.display()))?,
            ),
        })
    }

    /// The TCP address; an error for a Unix peer.
    pub fn tcp(&self) -> anyhow::Result<SocketAddr> {
        match self {
            PeerAddr::Tcp(addr) => Ok(*addr),
            PeerAddr::Unix(path) => anyhow::bail!("{} is not a TCP peer", path.display()),
        }
    }

    /// The TCP port (0 for a Unix socket).
    pub fn port(&self) -> u16 {
        match self {
            PeerAddr::Tcp(addr) => addr.port(),
            PeerAddr::Unix(_) => 0,
        }
    }

    /// The socket path of a Unix peer.
    pub fn path(&self) -> Option<&Path> {
        match self {
            PeerAddr::Tcp(_) => None,
            PeerAddr::Unix(path) => Some(path),
        }
    }
}

impl fmt::Display for PeerAddr {
    /// `127.0.0.1:PORT` or the socket path: the form warren's config and `ssh -W` take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<BoxStream> {
        Ok(match self {
            Listener::Tcp(l) => Box::new(l.accept().await?.0),
            Listener::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// The listener and accept task shared by every peer; dropping it aborts all of its tasks.
pub struct PeerServer {
    addr: PeerAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _dir: Option<TempDir>,
}

impl PeerServer {
    /// Listens on `transport` and runs `handler` on a task per connection.
    pub async fn start<F, Fut>(transport: Transport, handler: F) -> anyhow::Result<Self>
    where
        F: Fn(BoxStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (listener, addr, dir) = match transport {
            Transport::Tcp => {
                let l = bind_loopback().await?;
                let addr = l.local_addr().context("local address")?;
                (Listener::Tcp(l), PeerAddr::Tcp(addr), None)
            }
            Transport::Unix => {
                let dir = tempfile::tempdir().context("create a tempdir for a Unix peer")?;
                let path = dir.path().join("peer.sock");
                let l = UnixListener::bind(&path)
                    .with_context(|| format!("bind {}", path.display()))?;
                (Listener::Unix(l), PeerAddr::Unix(path), Some(dir))
            }
        };
        Ok(Self::serve(listener, addr, dir, handler))
    }

    /// Like [`PeerServer::start`] with TCP on `[::1]:0` (fails where there is no IPv6
    /// loopback).
    pub async fn start_ipv6<F, Fut>(handler: F) -> anyhow::Result<Self>
    where
        F: Fn(BoxStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let l = bind_loopback_v6().await?;
        let addr = l.local_addr().context("local address")?;
        Ok(Self::serve(
            Listener::Tcp(l),
            PeerAddr::Tcp(addr),
            None,
            handler,
        ))
    }

    /// Like [`PeerServer::start`] on `127.0.0.1:port` again, a port an earlier peer of this
    /// test was given (its listener must be gone: dropping a peer closes it shortly after).
    pub fn start_at<F, Fut>(port: u16, handler: F) -> anyhow::Result<Self>
    where
        F: Fn(BoxStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let l = rebind_loopback(port)?;
        let addr = l.local_addr().context("local address")?;
        Ok(Self::serve(
            Listener::Tcp(l),
            PeerAddr::Tcp(addr),
            None,
            handler,
        ))
    }

    fn serve<F, Fut>(listener: Listener, addr: PeerAddr, dir: Option<TempDir>, handler: F) -> Self
    where
        F: Fn(BoxStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set, so aborting the accept task aborts them too.
            let mut tasks = JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tasks.spawn(handler(stream));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
                while tasks.try_join_next().is_some() {}
            }
        });
        PeerServer {
            addr,
            connections,
            task,
            _dir: dir,
        }
    }

    /// Where the peer listens.
    pub fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes every byte back; on EOF from the client it closes its write side (half-close kept).
pub struct EchoServer(PeerServer);

impl EchoServer {
    /// Starts an echo server.
    pub async fn start(transport: Transport) -> anyhow::Result<Self> {
        PeerServer::start(transport, echo).await.map(EchoServer)
    }

    /// Starts an echo server on `[::1]:0` (fails where there is no IPv6 loopback).
    pub async fn start_ipv6() -> anyhow::Result<Self> {
        PeerServer::start_ipv6(echo).await.map(EchoServer)
    }

    /// Starts an echo server on `127.0.0.1:port` again, after an earlier one of this test
    /// that had that port was dropped (see [`PeerServer::start_at`]).
    pub fn start_at(port: u16) -> anyhow::Result<Self> {
        PeerServer::start_at(port, echo).map(EchoServer)
    }
}

/// What an echo server does with a connection.
async fn echo(stream: BoxStream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
        let _ = writer.shutdown().await;
    }
}

impl std::ops::Deref for EchoServer {
    type Target = PeerServer;
    fn deref(&self) -> &PeerServer {
        &self.0
    }
}

/// Reads each connection to EOF, then answers with the 32-byte SHA-256 of what it
/// read and closes. Each result is also queued for [`SinkServer::next_result`].
pub struct SinkServer {
    server: PeerServer,
    results: Mutex<mpsc::Receiver<(u64, Digest)>>,
}

impl SinkServer {
    /// Starts a sink.
    pub async fn start(transport: Transport) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let server = PeerServer::start(transport, move |mut stream| {
            let tx = tx.clone();
            async move {
                let Ok((len, digest)) = read_digest(&mut stream).await else {
                    return;
                };
                let _ = stream.write_all(&digest).await;
                let _ = stream.shutdown().await;
                // A test that never asks for results must not block the sink.
                let _ = tx.try_send((len, digest));
            }
        })
        .await?;
        Ok(SinkServer {
            server,
            results: Mutex::new(rx),
        })
    }

    /// The byte count and digest of the next connection that reached EOF.
    pub async fn next_result(&self, limit: Duration) -> anyhow::Result<(u64, Digest)> {
        let mut rx = self.results.lock().await;
        within(limit, "a sink connection to finish", rx.recv())
            .await?
            .context("the sink stopped")
    }
}

impl std::ops::Deref for SinkServer {
    type Target = PeerServer;
    fn deref(&self) -> &PeerServer {
        &self.server
    }
}

/// Sends `len` pseudo-random bytes (the same for every connection) and closes its
/// write side, draining whatever the client sends meanwhile.
pub struct SourceServer {
    server: PeerServer,
    len: u64,
    seed: u64,
}

impl SourceServer {
    /// Starts a source of `len` bytes.
    pub async fn start(transport: Transport, len: u64) -> anyhow::Result<Self> {
        let seed: u64 = rand::random();
        let server = PeerServer::start(transport, move |stream| async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            let send = async {
                if write_random(&mut writer, len, seed).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            };
            let drain = async {
                let _ = read_digest(&mut reader).await;
            };
            tokio::join!(send, drain);
        })
        .await?;
        Ok(SourceServer { server, len, seed })
    }

    /// How many bytes each connection gets.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The digest of the bytes each connection gets.
    pub fn expected_digest(&self) -> Digest {
        random_digest(self.len, self.seed)
    }
}

impl std::ops::Deref for SourceServer {
    type Target = PeerServer;
    fn deref(&self) -> &PeerServer {
        &self.server
    }
}
