//! Forward addresses: `HOST:PORT`, `[IPV6]:PORT`, a bare `PORT`, or an absolute Unix socket path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where a local or dynamic forward listens on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// A TCP listener on an IP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket at an absolute path.
    Unix(PathBuf),
}

impl BindAddr {
    /// True when only this machine can reach the ingress.
    pub fn is_local_only(&self) -> bool {
        match self {
            Self::Tcp(addr) => addr.ip().is_loopback(),
            Self::Unix(_) => true,
        }
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A `host:port` or Unix path named to the other side: an egress, or a remote ingress.
/// Host names stay unresolved so that they resolve where the connection is made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP host (name or IP literal, without brackets) and port.
    Tcp {
        /// Name or IP address.
        host: String,
        /// Port; 0 only for a remote ingress (the server picks).
        port: u16,
    },
    /// A Unix-domain socket at an absolute path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// An address as written, split but not yet checked against its role.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Port(u16),
    HostPort(String, u16),
    Path(PathBuf),
}

fn parse(text: &str, expand: &dyn Fn(&str) -> PathBuf) -> Result<Parsed, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("address is empty; expected HOST:PORT, [IPV6]:PORT, PORT or /path".into());
    }
    if s.starts_with('/') || s.starts_with("~/") {
        return Ok(Parsed::Path(expand(s)));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Parsed::Port(parse_port(s, text)?));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("\"{text}\": missing ']' after the IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("\"{text}\": expected :PORT after [{host}]"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{text}\": \"{host}\" is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!(
                "\"{text}\" has no port; expected HOST:PORT, [IPV6]:PORT, PORT or an absolute socket path"
            )
        })?;
        if host.contains(':') {
            return Err(format!(
                "\"{text}\": write an IPv6 address in brackets, for example \"[::1]:{port}\""
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("\"{text}\": the host before ':' is empty"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "\"{text}\": \"{host}\" is not a host name or address"
        ));
    }
    Ok(Parsed::HostPort(host.to_string(), parse_port(port, text)?))
}

fn parse_port(port: &str, text: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{text}\": port \"{port}\" is not a number"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("\"{text}\": port {port} is outside 0-65535"))
}

/// Parses the ingress of a local or dynamic forward: a bare port means `127.0.0.1:PORT`;
/// port 0 lets the kernel pick a free one (the bound address is shown in status).
pub fn parse_bind(text: &str, expand: &dyn Fn(&str) -> PathBuf) -> Result<BindAddr, String> {
    let addr = match parse(text, expand)? {
        Parsed::Path(path) => return Ok(BindAddr::Unix(path)),
        Parsed::Port(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Parsed::HostPort(host, port) => {
            let ip = match host.as_str() {
                "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                other => other.parse::<IpAddr>().map_err(|_| {
                    format!(
                        "\"{text}\": a local ingress binds an IP address, \"localhost\" or \"*\", not \"{other}\""
                    )
                })?,
            };
            SocketAddr::new(ip, port)
        }
    };
    Ok(BindAddr::Tcp(addr))
}

/// Parses an egress: a bare port means `localhost:PORT`; port 0 is refused.
pub fn parse_egress(text: &str, expand: &dyn Fn(&str) -> PathBuf) -> Result<Endpoint, String> {
    let endpoint = endpoint(parse(text, expand)?, "localhost");
    if let Endpoint::Tcp { port: 0, .. } = endpoint {
        return Err(format!(
            "\"{text}\": port 0 is not a port to connect to (it means \"any\" only for a listener)"
        ));
    }
    Ok(endpoint)
}

/// Parses the ingress of a remote forward (on the server): a bare port means
/// `127.0.0.1:PORT`, and port 0 lets the server pick.
pub fn parse_remote_bind(text: &str, expand: &dyn Fn(&str) -> PathBuf) -> Result<Endpoint, String> {
    Ok(endpoint(parse(text, expand)?, "127.0.0.1"))
}

fn endpoint(parsed: Parsed, bare_host: &str) -> Endpoint {
    match parsed {
        Parsed::Path(path) => Endpoint::Unix(path),
        Parsed::Port(port) => Endpoint::Tcp {
            host: bare_host.to_string(),
            port,
        },
        Parsed::HostPort(host, port) => Endpoint::Tcp { host, port },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(s: &str) -> PathBuf {
        match s.strip_prefix("~/") {
            Some(rest) => PathBuf::from("/home/u").join(rest),
            None => PathBuf::from(s),
        }
    }

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn bind_forms() {
        let b = |s| parse_bind(s, &expand);
        assert_eq!(
            b("5432"),
            Ok(BindAddr::Tcp("127.0.0.1:5432".parse().unwrap()))
        );
        assert_eq!(
            b("127.0.0.2:80"),
            Ok(BindAddr::Tcp("127.0.0.2:80".parse().unwrap()))
        );
        assert_eq!(
            b("[::1]:1080"),
            Ok(BindAddr::Tcp("[::1]:1080".parse().unwrap()))
        );
        assert_eq!(
            b("localhost:9"),
            Ok(BindAddr::Tcp("127.0.0.1:9".parse().unwrap()))
        );
        assert_eq!(b("*:9"), Ok(BindAddr::Tcp("0.0.0.0:9".parse().unwrap())));
        assert_eq!(b("/run/w.sock"), Ok(BindAddr::Unix("/run/w.sock".into())));
        assert_eq!(b("~/w.sock"), Ok(BindAddr::Unix("/home/u/w.sock".into())));
    }

    #[test]
    fn bind_refusals() {
        let e = |s| parse_bind(s, &expand).unwrap_err();
        assert_eq!(
            parse_bind("0", &|p| PathBuf::from(p)),
            Ok(BindAddr::Tcp("127.0.0.1:0".parse().unwrap())),
            "port 0: the kernel picks"
        );
        assert!(e("db.example.com:5432").contains("binds an IP address"));
        assert!(e("70000").contains("outside 0-65535"));
        assert!(e("::1:80").contains("brackets"));
        assert!(e("[::1]80").contains("expected :PORT"));
        assert!(e("[db]:80").contains("not an IPv6 address"));
        assert!(e("127.0.0.1:").contains("is not a number"));
        assert!(e("127.0.0.1:http").contains("is not a number"));
        assert!(e(":80").contains("host before ':' is empty"));
        assert!(e("").contains("empty"));
        assert!(e("sock").contains("has no port"));
        assert!(e("./w.sock").contains("has no port"));
    }

    #[test]
    fn egress_forms() {
        let e = |s| parse_egress(s, &expand);
        assert_eq!(e("5432"), Ok(tcp("localhost", 5432)));
        assert_eq!(e("db.internal:5432"), Ok(tcp("db.internal", 5432)));
        assert_eq!(e("10.0.0.5:22"), Ok(tcp("10.0.0.5", 22)));
        assert_eq!(e("[fd00::5]:22"), Ok(tcp("fd00::5", 22)));
        assert_eq!(
            e("/var/run/pg.sock"),
            Ok(Endpoint::Unix("/var/run/pg.sock".into()))
        );
        assert!(e("db:0").unwrap_err().contains("port 0"));
        assert!(e("db:65536").unwrap_err().contains("outside 0-65535"));
    }

    #[test]
    fn remote_bind_forms() {
        let r = |s| parse_remote_bind(s, &expand);
        assert_eq!(r("9000"), Ok(tcp("127.0.0.1", 9000)));
        assert_eq!(r("0"), Ok(tcp("127.0.0.1", 0)));
        assert_eq!(r("0.0.0.0:0"), Ok(tcp("0.0.0.0", 0)));
        assert_eq!(r("[::1]:9000"), Ok(tcp("::1", 9000)));
        assert_eq!(r("/tmp/r.sock"), Ok(Endpoint::Unix("/tmp/r.sock".into())));
    }

    #[test]
    fn display_brackets_ipv6() {
        assert_eq!(tcp("::1", 22).to_string(), "[::1]:22");
        assert_eq!(tcp("db", 22).to_string(), "db:22");
        assert!(BindAddr::Tcp("[::1]:22".parse().unwrap()).is_local_only());
        assert!(!BindAddr::Tcp("0.0.0.0:22".parse().unwrap()).is_local_only());
    }
}

#[cfg(test)]
#[path = "address_proptests.rs"]
mod proptests;
