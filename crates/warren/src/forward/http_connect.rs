//! HTTP `CONNECT host:port` on a dynamic ingress, for tools that only speak HTTP proxies.
//!
//! The request head is parsed by `httparse` (a well-worn parser) and bounded like a SOCKS
//! handshake: at most [`MAX_HEAD`] bytes, within the caller's deadline. Only `CONNECT` to an
//! authority (`host:port`, `[v6]:port`) is served; any other method is answered `405`, a
//! malformed head `400`, an oversized one `431`, and the connection is closed. Names are
//! passed on unresolved, as SOCKS names are.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::socks::{Reply, Target};

/// The most a request head may take, request line and header fields included.
pub const MAX_HEAD: usize = 8 * 1024;

/// Header fields parsed; more is refused like an oversized head.
const MAX_FIELDS: usize = 64;

/// How long an error answer may take to be written and the client's leftovers drained.
const FAREWELL: Duration = Duration::from_secs(1);

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// A method other than `CONNECT`.
    #[error("method {0:?} is not CONNECT")]
    Method(String),
    /// No complete head within [`MAX_HEAD`] bytes, or more than [`MAX_FIELDS`] fields.
    #[error("request head larger than {MAX_HEAD} bytes or {MAX_FIELDS} fields")]
    TooLarge,
    /// The head is not HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    /// The `CONNECT` target is not `host:port`.
    #[error("bad CONNECT target {0:?}: {1}")]
    BadTarget(String, &'static str),
    /// The client closed (or failed) before its head was complete.
    #[error("client closed during the request")]
    Truncated,
}

/// Parses a request head; `Ok(None)` while incomplete, else the target and the head's length
/// (bytes after it belong to the tunnel).
pub fn parse(buf: &[u8]) -> Result<Option<(Target, usize)>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e)),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(HttpError::Malformed(httparse::Error::Token));
    };
    if method != "CONNECT" {
        return Err(HttpError::Method(method.to_string()));
    }
    let target = authority(path).map_err(|why| HttpError::BadTarget(path.to_string(), why))?;
    Ok(Some((target, len)))
}

/// Parses `host:port` or `[IPv6]:port` (RFC 9110's authority-form, without user info).
pub fn authority(s: &str) -> Result<Target, &'static str> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest
                .split_once(']')
                .ok_or("no closing ] after the IPv6 address")?;
            let port = after
                .strip_prefix(':')
                .ok_or("no :port after the address")?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| "not an IPv6 address in brackets")?;
            return Ok(Target::Addr(SocketAddr::new(ip.into(), port_of(port)?)));
        }
        None => s.rsplit_once(':').ok_or("no :port")?,
    };
    let port = port_of(port)?;
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err("an IPv6 address needs brackets");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    let name_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
    if host.is_empty() || host.len() > 255 || !host.bytes().all(name_char) {
        return Err("not a host name");
    }
    Ok(Target::Name(host.to_string(), port))
}

fn port_of(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number");
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port is outside 1-65535"),
        Ok(p) => Ok(p),
    }
}

/// Reads the rest of a request whose first bytes are in `buf` up to a complete `CONNECT`
/// head; anything else is answered (405, 400, 431) before the error returns. Bytes sent
/// after the head are returned too, to be forwarded. The caller bounds the time.
pub async fn handshake<S>(s: &mut S, mut buf: Vec<u8>) -> Result<(Target, Vec<u8>), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match parse(&buf) {
            Ok(Some((target, len))) => return Ok((target, buf.split_off(len))),
            Ok(None) => more(s, &mut buf).await?,
            Err(e) => {
                let (code, body) = match &e {
                    HttpError::Method(_) => (405, "only CONNECT is served on this proxy port"),
                    HttpError::TooLarge => (431, "the request head is larger than 8 KiB"),
                    _ => (400, "expected a request for CONNECT host:port"),
                };
                farewell(s, &status(code, body)).await;
                return Err(e);
            }
        }
    }
}

/// The answer to a `CONNECT` whose outcome is `reply`: `200` then the tunnel, else `504` for
/// a destination that did not answer in time and `502` for every other failure.
pub fn reply_bytes(reply: Reply) -> Vec<u8> {
    let body = match reply {
        Reply::Succeeded => return b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
        Reply::HostUnreachable => return status(504, "the destination did not answer in time"),
        Reply::ConnectionRefused => "the destination refused the connection",
        Reply::NetworkUnreachable => "the tunnel is down",
        Reply::NotAllowed => "the connection is not allowed",
        _ => "the connection to the destination failed",
    };
    status(502, body)
}

/// A complete error response with a one-line body; the connection closes after it.
pub fn status(code: u16, body: &str) -> Vec<u8> {
    let reason = match code {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let allow = if code == 405 {
        "Allow: CONNECT\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\n{allow}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\nwarren: {body}\n",
        body.len() + "warren: \n".len()
    )
    .into_bytes()
}

/// Writes `response`, ends the stream and takes what the client still sends (bounded in
/// size and time): closing with unread input would reset the connection, and the client
/// might lose the answer.
pub async fn farewell<S>(s: &mut S, response: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(FAREWELL, async {
        if s.write_all(response).await.is_ok() && s.shutdown().await.is_ok() {
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                if !matches!(s.read(&mut sink).await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
    })
    .await;
}

/// Reads at least one more byte into `buf`, never past [`MAX_HEAD`].
async fn more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<(), HttpError> {
    let room = MAX_HEAD.saturating_sub(buf.len()).min(2048);
    if room == 0 {
        return Err(HttpError::TooLarge);
    }
    let mut chunk = [0u8; 2048];
    match s.read(&mut chunk[..room]).await {
        Ok(0) | Err(_) => Err(HttpError::Truncated),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "http_connect_tests.rs"]
mod tests;
