//! The byte stream a session runs over: a TCP connection to the host (resolved again on every
//! attempt), a `direct-tcpip` channel of the previous hop's session (jump chains), or the
//! stdin/stdout of a ProxyCommand.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info_span};

use super::HostHandle;
use super::error::SessionError;
use crate::config::{AddressFamily, Endpoint, HostConfig, Route};

/// Any transport russh can run a session over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// A boxed transport.
pub type BoxedTransport = Pin<Box<dyn Transport>>;

/// Opens the transport for `host`; `upstream` is the previous hop for a jump chain.
pub async fn open(
    host: &HostConfig,
    upstream: Option<&HostHandle>,
) -> Result<BoxedTransport, SessionError> {
    match (&host.route, upstream) {
        (Route::Jump(_), Some(hop)) => {
            let target = Endpoint::Tcp {
                host: host.hostname.clone(),
                port: host.port,
            };
            // The originator of a hop's channel is this machine; OpenSSH's ssh -W sends the
            // same placeholder.
            // The lease keeps an on-demand hop's session while this host's runs through it.
            let (stream, _session, lease) =
                hop.open(&target, ("127.0.0.1", 0))
                    .await
                    .map_err(|e| SessionError::Hop {
                        hop: hop.config().name.clone(),
                        source: Box::new(e),
                    })?;
            let span = info_span!("jump", via = %hop.config().name);
            Ok(Box::pin(relay(stream, lease, span)))
        }
        (Route::Jump(_), None) => Err(SessionError::Config(
            "jump chain without a running first hop".into(),
        )),
        (Route::ProxyCommand(cmd), _) => {
            Ok(Box::pin(super::proxy_command::start(cmd, host).await?))
        }
        (Route::Direct, _) => {
            let stream = QuickAck(tcp(&host.hostname, host.port, host.address_family).await?);
            Ok(Box::pin(BufReader::with_capacity(READ_BUFFER, stream)))
        }
    }
}

/// Resolves `host` now (DNS may have changed since the last attempt) and connects to the
/// first address of `family` that answers, with TCP_NODELAY.
pub async fn tcp(host: &str, port: u16, family: AddressFamily) -> Result<TcpStream, SessionError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| SessionError::Resolve {
            host: host.to_string(),
            source,
        })?
        .filter(|a| family.admits(a))
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                debug!(%addr, "tcp connected");
                return Ok(stream);
            }
            Err(e) => last = Some((addr.to_string(), e)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| {
        (
            format!("{host}:{port}"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                match family {
                    AddressFamily::Any => "no addresses",
                    AddressFamily::Inet => "no IPv4 address (address_family = \"inet\")",
                    AddressFamily::Inet6 => "no IPv6 address (address_family = \"inet6\")",
                },
            ),
        )
    });
    Err(SessionError::Connect { addr, source })
}

/// Bytes read from the server's TCP connection at once. russh reads each packet with two
/// exact reads (its length, then the rest); through this buffer one system call brings in
/// several packets (or a 32 KiB data packet and the start of the next).
const READ_BUFFER: usize = 64 * 1024;

/// The TCP connection to the server, acknowledging what it reads at once (`TCP_QUICKACK`,
/// re-armed after every read because the kernel drops back to delayed ACKs).
///
/// sshd sets `TCP_NODELAY` only for sessions with a terminal, so its small packets (a
/// `forwarded-tcpip` CHANNEL_OPEN, a channel's last bytes, CHANNEL_EOF/CLOSE) are held by
/// Nagle's algorithm until its previous segment is acknowledged; with delayed ACKs here that
/// is ~40 ms per request through a remote forward (OpenSSH's own client has the same stall).
struct QuickAck(TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let _ = SockRef::from(&this.0).set_tcp_quickack(true);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// OpenSSH's ProxyCommand tokens: `%h` host, `%p` port, `%r` user, `%n` the name as written,
/// `%%` a percent sign. Unknown tokens stay as written.
pub fn expand_tokens(cmd: &str, host: &HostConfig) -> String {
    let mut out = String::with_capacity(cmd.len());
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&host.hostname),
            Some('p') => out.push_str(&host.port.to_string()),
            Some('r') => out.push_str(&host.user),
            Some('n') => out.push_str(&host.name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// How far a transport is read ahead of the session. russh does not read while it waits to
/// write, so over bare pipes (64 KiB) or a hop's channel a busy full-duplex session can
/// deadlock: it waits to write into the carrier, which waits to deliver its output, which
/// nobody reads. A TCP socket has megabytes of kernel buffer for this; the relay gives the
/// other transports the same.
const READ_AHEAD: usize = 8 * 1024 * 1024;

/// Relays `inner` through an in-memory pipe of [`READ_AHEAD`] bytes each way. `guard` (for
/// example the ProxyCommand's process group, killed on drop) lives exactly as long as the relay,
/// which ends when either side closes.
pub(super) fn relay<T, G>(inner: T, guard: G, span: tracing::Span) -> DuplexStream
where
    T: AsyncRead + AsyncWrite + Send + 'static,
    G: Send + 'static,
{
    let (session_side, relay_side) = tokio::io::duplex(READ_AHEAD);
    let (mut from_session, mut to_session) = tokio::io::split(relay_side);
    let (mut carrier_out, mut carrier_in) = tokio::io::split(inner);
    tokio::spawn(
        async move {
            let output = async {
                let _ = tokio::io::copy(&mut carrier_out, &mut to_session).await;
                let _ = to_session.shutdown().await;
            };
            let input = async {
                let _ = tokio::io::copy(&mut from_session, &mut carrier_in).await;
                let _ = carrier_in.shutdown().await;
            };
            tokio::select! {
                () = output => debug!("transport closed by the far side"),
                () = input => debug!("transport closed by the session"),
            }
            drop(guard);
        }
        .instrument(span),
    );
    session_side
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    #[test]
    fn proxy_command_tokens() {
        let cfg = Config::parse(
            "[hosts.db]\nhostname = \"10.0.0.5\"\nport = 2222\nuser = \"ops\"\n",
            std::path::Path::new("/w.toml"),
            &Env::from_process(),
        )
        .unwrap();
        let h = &cfg.hosts["db"];
        assert_eq!(expand_tokens("nc %h %p", h), "nc 10.0.0.5 2222");
        assert_eq!(expand_tokens("%r@%n %% %x %", h), "ops@db % %x %");
    }
}
