//! The byte stream a session runs over: a TCP connection to the host, resolved again on
//! every attempt. (Jump chains and ProxyCommand plug in here.)

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use super::error::SessionError;
use crate::config::{HostConfig, Route};

/// Any transport russh can run a session over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// A boxed transport.
pub type BoxedTransport = Pin<Box<dyn Transport>>;

/// Opens the transport for `host`.
pub async fn open(host: &HostConfig) -> Result<BoxedTransport, SessionError> {
    match &host.route {
        Route::Direct => Ok(Box::pin(tcp(&host.hostname, host.port).await?)),
        Route::Jump(_) => Err(SessionError::Config(
            "jump hosts are not supported by this build yet".into(),
        )),
        Route::ProxyCommand(_) => Err(SessionError::Config(
            "proxy_command is not supported by this build yet".into(),
        )),
    }
}

/// Resolves `host` now (DNS may have changed since the last attempt) and connects to the
/// first address that answers, with TCP_NODELAY.
pub async fn tcp(host: &str, port: u16) -> Result<TcpStream, SessionError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| SessionError::Resolve {
            host: host.to_string(),
            source,
        })?
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
            std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        )
    });
    Err(SessionError::Connect { addr, source })
}
