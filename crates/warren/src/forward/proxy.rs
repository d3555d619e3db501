//! The front door of a dynamic ingress, on this machine (`dynamic`) or on the server
//! (`remote-dynamic`): SOCKS4/4a/5 or HTTP `CONNECT`, told apart by the client's first byte
//! (4 or 5: SOCKS; an ASCII letter: HTTP). Either ends in a target to connect to and an answer
//! to give once the connection is made or has failed; both kinds share one deadline.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::http_connect::{self, HttpError};
use super::socks::{self, Reply, SocksError, Target, Version};

/// A client must complete its SOCKS handshake or HTTP request head within this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol a client spoke (the answers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SOCKS, in this version.
    Socks(Version),
    /// HTTP `CONNECT`.
    Http,
}

impl Protocol {
    /// The answer telling the client how its connection went.
    pub fn reply(self, reply: Reply) -> Vec<u8> {
        match self {
            Self::Socks(v) => socks::reply_bytes(v, reply),
            Self::Http => http_connect::reply_bytes(reply),
        }
    }
}

/// A client's complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// How to answer it.
    pub protocol: Protocol,
    /// Where it wants to go.
    pub target: Target,
    /// Bytes it sent after its request, to be forwarded first.
    pub early: Vec<u8>,
}

/// Why a client got no connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A SOCKS protocol failure (answered already where SOCKS has an answer).
    #[error(transparent)]
    Socks(#[from] SocksError),
    /// An HTTP failure (answered already).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The first byte is neither SOCKS nor an HTTP method.
    #[error("neither a SOCKS nor an HTTP client (first byte {0:#04x})")]
    Unknown(u8),
    /// Not complete within the limit.
    #[error("handshake not complete within {0:?}")]
    Timeout(Duration),
}

/// Reads a SOCKS or HTTP `CONNECT` request from `s` within `limit`. A slow HTTP client is
/// answered `408`; other failures are answered as their protocol says (see
/// [`socks::handshake`], [`http_connect::handshake`]).
pub async fn handshake<S>(s: &mut S, limit: Duration) -> Result<Request, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + limit;
    let late = || HandshakeError::Timeout(limit);
    let mut first = vec![0u8; 512];
    let n = match tokio::time::timeout_at(deadline, s.read(&mut first)).await {
        Err(_) => return Err(late()),
        Ok(Ok(0) | Err(_)) => return Err(SocksError::Truncated.into()),
        Ok(Ok(n)) => n,
    };
    first.truncate(n);
    match first[0] {
        4 | 5 => {
            let (parsed, early) =
                tokio::time::timeout_at(deadline, socks::handshake_from(s, first))
                    .await
                    .map_err(|_| late())??;
            Ok(Request {
                protocol: Protocol::Socks(parsed.version),
                target: parsed.target,
                early,
            })
        }
        b if b.is_ascii_alphabetic() => {
            match tokio::time::timeout_at(deadline, http_connect::handshake(s, first)).await {
                Ok(r) => {
                    let (target, early) = r?;
                    Ok(Request {
                        protocol: Protocol::Http,
                        target,
                        early,
                    })
                }
                Err(_) => {
                    let body = "the request head did not arrive in time";
                    http_connect::farewell(s, &http_connect::status(408, body)).await;
                    Err(late())
                }
            }
        }
        b => Err(HandshakeError::Unknown(b)),
    }
}

/// Turns a client away before its handshake (its forward is full): SOCKS5 is told no method
/// is acceptable, SOCKS4 that its request is rejected, HTTP `503`, after the first byte; the
/// caller bounds the time.
pub async fn refuse<S>(s: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut first = [0u8; 1];
    let reply: Vec<u8> = match s.read(&mut first).await {
        Ok(1) if first[0] == 5 => vec![5, 0xff],
        Ok(1) if first[0] == 4 => vec![0, 0x5b, 0, 0, 0, 0, 0, 0],
        Ok(1) if first[0].is_ascii_alphabetic() => {
            http_connect::status(503, "too many connections on this proxy port")
        }
        _ => return,
    };
    let _ = s.write_all(&reply).await;
    let _ = s.shutdown().await;
    // Closing with unread input would reset the connection before the client reads the
    // answer: take what it sent (bounded; the caller bounds the time).
    let mut rest = [0u8; http_connect::MAX_HEAD];
    let _ = s.read(&mut rest).await;
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
