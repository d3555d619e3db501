//! `[user@]host[:port]`: the destination of `warren connect`, its `-J` hops and the ad-hoc
//! hops of a `jump` list, in one grammar (`ssh://[user@]host[:port]` and `[IPv6]:port`
//! included). The names it gives are checked later, with every other host and user name.

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The user before `@`.
    pub user: Option<String>,
    /// The host, without brackets.
    pub host: String,
    /// The port after `:`.
    pub port: Option<u16>,
}

impl Destination {
    /// Parses `[user@]host[:port]`, `[user@][v6]:port`, a bare IPv6 address, or any of these
    /// after `ssh://` (with an optional trailing `/`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = match text.strip_prefix("ssh://") {
            Some(url) => url.strip_suffix('/').unwrap_or(url),
            None => text,
        };
        let (user, rest) = match rest.rsplit_once('@') {
            Some(("", _)) => return Err(format!("{text}: empty user before '@'")),
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{text}: missing ']'"))?;
            match after {
                "" => (h, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("{text}: unexpected {after:?} after ']'")),
                },
            }
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
            (h, Some(p))
        } else {
            // No colon, or a bare IPv6 address (which has several).
            (rest, None)
        };
        if host.is_empty() {
            return Err(format!("{text}: no host"));
        }
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("{text}: bad port {p:?}"))
            })
            .transpose()?;
        Ok(Self {
            user,
            host: host.to_string(),
            port,
        })
    }

    /// Whether it says by itself that it is a host, not the name of a `[hosts.*]` table
    /// misspelt: it has a user or a port, or its host has a dot or is an IP address.
    pub fn is_explicit(&self) -> bool {
        self.user.is_some()
            || self.port.is_some()
            || self.host.contains('.')
            || self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(user: Option<&str>, host: &str, port: Option<u16>) -> Destination {
        Destination {
            user: user.map(String::from),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn every_form() {
        for (text, want) in [
            ("db", d(None, "db", None)),
            ("ops@db", d(Some("ops"), "db", None)),
            ("db:2222", d(None, "db", Some(2222))),
            (
                "ops@db.example:2222",
                d(Some("ops"), "db.example", Some(2222)),
            ),
            ("::1", d(None, "::1", None)),
            ("[::1]", d(None, "::1", None)),
            ("[::1]:2222", d(None, "::1", Some(2222))),
            ("me@[fe80::1]:22", d(Some("me"), "fe80::1", Some(22))),
            (
                "ssh://root@127.0.0.1:2222",
                d(Some("root"), "127.0.0.1", Some(2222)),
            ),
            ("ssh://db/", d(None, "db", None)),
            ("a@b@host", d(Some("a@b"), "host", None)),
        ] {
            assert_eq!(Destination::parse(text), Ok(want), "{text}");
        }
        for bad in [
            "", "@db", "db:", "db:x", "db:70000", "[::1", "[::1]x", "ops@", ":22",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
        assert!(!Destination::parse("bastoin").unwrap().is_explicit());
        for explicit in ["ops@b", "b:22", "b.example", "10.0.0.1", "::1"] {
            assert!(
                Destination::parse(explicit).unwrap().is_explicit(),
                "{explicit}"
            );
        }
    }
}
