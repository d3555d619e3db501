//! A SOCKS4, SOCKS4a and SOCKS5 server handshake (no authentication, CONNECT only).
//!
//! Written here rather than taken from a crate: warren needs exact control over the reply
//! each failure gets (an SSH channel-open failure must become the right SOCKS code), a hard
//! bound on what a client may send, a deadline set by the caller, and names passed on
//! unresolved so that DNS happens on the SSH server's side. The parsers are pure functions
//! over bytes (fuzzed by `fuzz/`); the async driver only reads, parses and answers.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a handshake may send before its request is complete (a SOCKS4a request with a
/// 255-byte user id and a 255-byte name is the longest legal one).
pub const MAX_HANDSHAKE: usize = 1024;

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An address literal.
    Addr(SocketAddr),
    /// A name, left for the SSH server to resolve.
    Name(String, u16),
}

impl Target {
    /// Host text and port, as sent in a `direct-tcpip` request.
    pub fn host_port(&self) -> (String, u16) {
        match self {
            Self::Addr(a) => (a.ip().to_string(), a.port()),
            Self::Name(n, p) => (n.clone(), *p),
        }
    }
}

/// The protocol the client spoke (replies differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS4 or SOCKS4a.
    V4,
    /// SOCKS5.
    V5,
}

/// The outcome sent back for a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Connected.
    Succeeded,
    /// Anything else went wrong.
    GeneralFailure,
    /// The SSH server refused by policy.
    NotAllowed,
    /// No SSH session (the tunnel's network is unreachable).
    NetworkUnreachable,
    /// The target did not answer in time.
    HostUnreachable,
    /// The target refused the connection.
    ConnectionRefused,
    /// BIND, UDP ASSOCIATE or anything but CONNECT.
    CommandNotSupported,
    /// An address type other than IPv4, IPv6 or a name.
    AddressTypeNotSupported,
}

/// Why a handshake ended without a request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    /// The first byte is neither 4 nor 5.
    #[error("not a SOCKS client (version byte {0:#04x})")]
    BadVersion(u8),
    /// SOCKS5 without the no-authentication method.
    #[error("no acceptable authentication method offered")]
    NoAcceptableAuth,
    /// Not CONNECT.
    #[error("unsupported command {0:#04x}")]
    UnsupportedCommand(u8),
    /// Unknown SOCKS5 address type.
    #[error("unsupported address type {0:#04x}")]
    BadAddressType(u8),
    /// The bytes break the protocol.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_HANDSHAKE`] bytes without a complete request.
    #[error("handshake too long")]
    TooLong,
    /// The client closed before the request was complete.
    #[error("client closed during the handshake")]
    Truncated,
}

/// A complete request: target, version, and how many bytes of the buffer it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Version spoken.
    pub version: Version,
    /// Destination.
    pub target: Target,
    /// Bytes consumed.
    pub len: usize,
}

/// Parses a SOCKS5 greeting; `Ok(Some(len))` when complete and no-auth is offered.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<usize>, SocksError> {
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    let len = 2 + usize::from(n);
    let Some(methods) = buf.get(2..len) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(SocksError::Malformed("greeting lists no methods"));
    }
    if methods.contains(&0) {
        Ok(Some(len))
    } else {
        Err(SocksError::NoAcceptableAuth)
    }
}

/// Parses a SOCKS5 request (after the greeting); `Ok(None)` while incomplete.
pub fn parse_request_v5(buf: &[u8]) -> Result<Option<Parsed>, SocksError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    if head[0] != 5 {
        return Err(SocksError::Malformed("request version is not 5"));
    }
    if head[2] != 0 {
        return Err(SocksError::Malformed("reserved byte is not zero"));
    }
    let (addr_len, start) = match head[3] {
        1 => (4, 4),
        4 => (16, 4),
        3 => match buf.get(4) {
            None => return Ok(None),
            Some(0) => return Err(SocksError::Malformed("empty domain name")),
            Some(&n) => (usize::from(n), 5),
        },
        other => return Err(SocksError::BadAddressType(other)),
    };
    let end = start + addr_len + 2;
    let Some(body) = buf.get(start..end) else {
        return Ok(None);
    };
    if head[1] != 1 {
        return Err(SocksError::UnsupportedCommand(head[1]));
    }
    let port = u16::from_be_bytes([body[addr_len], body[addr_len + 1]]);
    let addr = &body[..addr_len];
    let target = match head[3] {
        1 => Target::Addr(SocketAddr::new(ipv4(addr).into(), port)),
        4 => Target::Addr(SocketAddr::new(ipv6(addr).into(), port)),
        _ => Target::Name(name(addr)?, port),
    };
    Ok(Some(Parsed {
        version: Version::V5,
        target,
        len: end,
    }))
}

/// Parses a SOCKS4 or SOCKS4a request; `Ok(None)` while incomplete.
pub fn parse_request_v4(buf: &[u8]) -> Result<Option<Parsed>, SocksError> {
    let Some(head) = buf.get(..8) else {
        return Ok(None);
    };
    let user_end = match buf[8..].iter().position(|&b| b == 0) {
        Some(i) if i > 255 => return Err(SocksError::Malformed("user id too long")),
        Some(i) => 8 + i,
        None if buf.len() - 8 > 255 => return Err(SocksError::Malformed("user id too long")),
        None => return Ok(None),
    };
    let port = u16::from_be_bytes([head[2], head[3]]);
    let ip = ipv4(&head[4..8]);
    let (target, len) = if ip.octets()[..3] == [0, 0, 0] && ip.octets()[3] != 0 {
        // SOCKS4a: the name follows the user id.
        let rest = &buf[user_end + 1..];
        let Some(i) = rest.iter().position(|&b| b == 0) else {
            if rest.len() > 255 {
                return Err(SocksError::Malformed("domain name too long"));
            }
            return Ok(None);
        };
        if i > 255 {
            return Err(SocksError::Malformed("domain name too long"));
        }
        if i == 0 {
            return Err(SocksError::Malformed("empty domain name"));
        }
        (Target::Name(name(&rest[..i])?, port), user_end + 1 + i + 1)
    } else {
        (Target::Addr(SocketAddr::new(ip.into(), port)), user_end + 1)
    };
    if head[1] != 1 {
        return Err(SocksError::UnsupportedCommand(head[1]));
    }
    Ok(Some(Parsed {
        version: Version::V4,
        target,
        len,
    }))
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

fn name(b: &[u8]) -> Result<String, SocksError> {
    let s = std::str::from_utf8(b).map_err(|_| SocksError::Malformed("domain name is not text"))?;
    if s.bytes().any(|c| c.is_ascii_control() || c == b' ') {
        return Err(SocksError::Malformed("domain name has control characters"));
    }
    Ok(s.to_string())
}

/// The reply bytes for `reply` in `version`.
pub fn reply_bytes(version: Version, reply: Reply) -> Vec<u8> {
    match version {
        Version::V5 => {
            let code = match reply {
                Reply::Succeeded => 0,
                Reply::GeneralFailure => 1,
                Reply::NotAllowed => 2,
                Reply::NetworkUnreachable => 3,
                Reply::HostUnreachable => 4,
                Reply::ConnectionRefused => 5,
                Reply::CommandNotSupported => 7,
                Reply::AddressTypeNotSupported => 8,
            };
            vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
        }
        Version::V4 => {
            let code = if reply == Reply::Succeeded {
                0x5a
            } else {
                0x5b
            };
            vec![0, code, 0, 0, 0, 0, 0, 0]
        }
    }
}

/// Runs the server side of the handshake up to a complete CONNECT request. Protocol errors
/// are answered here (method 0xFF, command or address type not supported, SOCKS4 rejected)
/// before returning the error. Bytes the client sent after its request are returned too, to
/// be forwarded. The caller bounds the whole call with a deadline.
pub async fn handshake<S>(s: &mut S) -> Result<(Parsed, Vec<u8>), SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(64);
    more(s, &mut buf).await?;
    handshake_from(s, buf).await
}

/// [`handshake`] for a client whose first bytes were read already (into `buf`, at most
/// [`MAX_HANDSHAKE`] of them).
pub async fn handshake_from<S>(s: &mut S, mut buf: Vec<u8>) -> Result<(Parsed, Vec<u8>), SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(&first) = buf.first() else {
        return Err(SocksError::Truncated);
    };
    let parsed = match first {
        5 => {
            let greeting = loop {
                match parse_greeting(&buf) {
                    Ok(Some(len)) => break len,
                    Ok(None) => more(s, &mut buf).await?,
                    Err(e) => {
                        if e == SocksError::NoAcceptableAuth {
                            let _ = s.write_all(&[5, 0xff]).await;
                        }
                        return Err(e);
                    }
                }
            };
            s.write_all(&[5, 0])
                .await
                .map_err(|_| SocksError::Truncated)?;
            buf.drain(..greeting);
            loop {
                match parse_request_v5(&buf) {
                    Ok(Some(p)) => break p,
                    Ok(None) => more(s, &mut buf).await?,
                    Err(e) => return Err(answer(s, Version::V5, e).await),
                }
            }
        }
        4 => loop {
            match parse_request_v4(&buf) {
                Ok(Some(p)) => break p,
                Ok(None) => more(s, &mut buf).await?,
                Err(e) => return Err(answer(s, Version::V4, e).await),
            }
        },
        v => return Err(SocksError::BadVersion(v)),
    };
    let rest = buf.split_off(parsed.len);
    Ok((parsed, rest))
}

async fn answer<S: AsyncWrite + Unpin>(s: &mut S, version: Version, e: SocksError) -> SocksError {
    let reply = match e {
        SocksError::UnsupportedCommand(_) => Reply::CommandNotSupported,
        SocksError::BadAddressType(_) => Reply::AddressTypeNotSupported,
        _ => Reply::GeneralFailure,
    };
    let _ = s.write_all(&reply_bytes(version, reply)).await;
    e
}

/// Reads at least one more byte into `buf`, refusing to grow past [`MAX_HANDSHAKE`].
async fn more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<(), SocksError> {
    if buf.len() >= MAX_HANDSHAKE {
        return Err(SocksError::TooLong);
    }
    let mut chunk = [0u8; 512];
    let room = (MAX_HANDSHAKE - buf.len()).min(chunk.len());
    let n = s
        .read(&mut chunk[..room])
        .await
        .map_err(|_| SocksError::Truncated)?;
    if n == 0 {
        return Err(SocksError::Truncated);
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
#[path = "socks_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "socks_proptests.rs"]
mod proptests;
